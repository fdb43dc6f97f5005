"""Test kit for projects using textflow-django: a fake TextFlow server and pytest fixtures.

``TextFlowEmulator`` is a real HTTP server on loopback that answers the TextFlow API the way
``textflow-api.md`` describes, records every request, can inject faults, and forwards a
phone's replies to the site as TextFlow does. The pytest plugin
(``textflow_django.testing.pytest_plugin``, registered automatically) exposes it as fixtures.
"""

from ._emulator import (
    EMULATOR_API_KEY,
    Fault,
    Outage,
    RecordedRequest,
    Reply,
    SentSMS,
    TextFlowEmulator,
)

__all__ = [
    "EMULATOR_API_KEY",
    "Fault",
    "Outage",
    "RecordedRequest",
    "Reply",
    "SentSMS",
    "TextFlowEmulator",
]
