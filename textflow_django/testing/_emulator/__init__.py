"""The fake TextFlow server, as a package (being split by job; see ``_server``)."""

from ._server import EMULATOR_API_KEY, Fault, RecordedRequest, SentSMS, TextFlowEmulator

__all__ = ["EMULATOR_API_KEY", "Fault", "RecordedRequest", "SentSMS", "TextFlowEmulator"]
