"""The backend contract: the TextFlow API surface as an object.

A backend is what the rest of the app talks to instead of TextFlow itself. The real one
(``textflow.TextFlowBackend``) calls the API through ``TextFlowClient``; the emulating ones
(``console``, ``locmem``, ``dummy``) answer in-process so a project runs and tests with no
account and no network.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

from ..client import BalanceResult, BulkCountResult, BulkResult, CodeResult, SMSResult, VerifyResult

__all__ = ["BaseBackend"]


class BaseBackend(abc.ABC):
    """Subclasses implement the five TextFlow operations (and may implement ``balance``).

    Contract for every implementation, checked by the shared contract test suite:

    - Numbers arrive in E.164; one TextFlow would reject raises ``TextFlowRejectedNumber``.
    - ``send_code`` issues a new code that *replaces* the number's previous one, valid for
      ``seconds``; ``verify_code`` answers ``valid=False`` for a wrong or expired code and
      never raises for it.
    - Failures raise ``TextFlowError`` subclasses, with ``maybe_sent`` set honestly.
    - Backends are created per thread by ``get_backend()`` and must read settings at call
      time rather than keeping copies that ``override_settings`` could not change.
    """

    def __init__(self, **options: Any) -> None:
        self.options = options

    @abc.abstractmethod
    def send_sms(self, phone_number: str, text: str) -> SMSResult:
        """Send one SMS."""

    @abc.abstractmethod
    def send_code(
        self, phone_number: str, service_name: str | None = None, seconds: int | None = None
    ) -> CodeResult:
        """Generate a verification code, text it, and remember it for ``seconds``."""

    @abc.abstractmethod
    def verify_code(self, phone_number: str, code: str) -> VerifyResult:
        """Tell whether ``code`` is the live code of ``phone_number``."""

    @abc.abstractmethod
    def bulk_sms(self, phone_numbers: Sequence[str], text: str) -> BulkResult:
        """Start delivery of ``text`` to every number of one batch."""

    @abc.abstractmethod
    def bulk_count(self) -> BulkCountResult:
        """How many bulk recipients are still waiting for their SMS."""

    def balance(self) -> BalanceResult:
        """The account's credit. Optional: the default says the backend cannot tell."""
        raise NotImplementedError(f"{type(self).__name__} does not report a balance")
