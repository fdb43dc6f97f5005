"""The real backend: TextFlow's HTTP API through ``TextFlowClient``."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .._breaker import CircuitBreaker
from ..client import (
    BalanceResult,
    BulkCountResult,
    BulkResult,
    ClientConfigurationError,
    CodeResult,
    SMSResult,
    TextFlowClient,
    VerifyResult,
)
from ..conf import conf
from ..exceptions import TextFlowConfigurationError
from .base import BaseBackend

_T = TypeVar("_T")

__all__ = ["TextFlowBackend", "breaker_for", "reset_breakers"]


_breakers: dict[tuple[str, int, float], CircuitBreaker] = {}
_breakers_lock = threading.Lock()


def breaker_for(base_url: str, threshold: int, reset_after: float) -> CircuitBreaker | None:
    """The process-wide breaker for one TextFlow (shared by every thread's backend), or None
    when ``threshold`` is 0."""
    if threshold <= 0:
        return None
    key = (base_url, threshold, reset_after)
    with _breakers_lock:
        breaker = _breakers.get(key)
        if breaker is None:
            breaker = _breakers[key] = CircuitBreaker(threshold, reset_after)
        return breaker


def reset_breakers() -> None:
    """Forget every breaker's state (tests: one test's outage must not open the next's)."""
    with _breakers_lock:
        _breakers.clear()


class TextFlowBackend(BaseBackend):
    """Calls TextFlow. Options ``api_key``, ``base_url`` and ``timeout`` override settings.

    The client (and with it the pooled connections) is kept while the settings it was built
    from stay the same, and rebuilt as soon as they change, so ``override_settings`` works
    without giving up connection reuse.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._client: TextFlowClient | None = None
        self._client_config: tuple[str, str, float, int, float] | None = None

    @property
    def client(self) -> TextFlowClient:
        """The client for the current settings. Raises ``TextFlowConfigurationError``."""
        return self._call(lambda client: client)

    def _current_client(self) -> TextFlowClient:
        config = (
            str(self.options.get("api_key") or conf.API_KEY),
            str(self.options.get("base_url") or conf.BASE_URL),
            float(self.options.get("timeout") or conf.TIMEOUT),
            conf.BREAKER_THRESHOLD,
            conf.BREAKER_RESET,
        )
        if self._client is None or config != self._client_config:
            if self._client is not None:
                self._client.close()
            self._client = TextFlowClient(
                config[0],
                base_url=config[1],
                timeout=config[2],
                breaker=breaker_for(config[1], config[3], config[4]),
            )
            self._client_config = config
        return self._client

    def _call(self, operation: Callable[[TextFlowClient], _T]) -> _T:
        """``operation`` on the current client, with the client's ``ClientConfigurationError``
        (a ``ValueError``: it knows no Django) turned into the ``TextFlowConfigurationError``
        a Django project expects (an ``ImproperlyConfigured``)."""
        try:
            return operation(self._current_client())
        except ClientConfigurationError as err:
            problem = str(err)
        # Raised outside the except clause, unchained: the message is the whole story (it
        # never holds the key), and the client's own error may have withheld a cause that did.
        raise TextFlowConfigurationError(problem)

    def _send_sms(self, phone_number: str, text: str) -> SMSResult:
        return self._call(lambda client: client.send_sms(phone_number, text))

    def send_code(
        self, phone_number: str, service_name: str | None = None, seconds: int | None = None
    ) -> CodeResult:
        return self._call(
            lambda client: client.send_code(
                phone_number, service_name=service_name, seconds=seconds
            )
        )

    def verify_code(self, phone_number: str, code: str) -> VerifyResult:
        return self._call(lambda client: client.verify_code(phone_number, code))

    def _bulk_sms(self, phone_numbers: Sequence[str], text: str) -> BulkResult:
        return self._call(lambda client: client.bulk_sms(phone_numbers, text))

    def bulk_count(self) -> BulkCountResult:
        return self._call(lambda client: client.bulk_count())

    def balance(self) -> BalanceResult:
        return self._call(lambda client: client.balance())
