"""The real backend: TextFlow's HTTP API through ``TextFlowClient``.

Its circuit breaker (``BREAKER_THRESHOLD``, ``BREAKER_RESET``) keeps its state where the
rate-limit store keeps the counters when that store is shared by every process (the
database, Redis, Memcached: :attr:`RateLimitStore.shared <textflow_django.ratelimit.
RateLimitStore.shared>`), so the whole site opens and closes it together; with a
per-process store (a local-memory, dummy or file cache) each process has its own.
:func:`breaker_scope` says which is in force. The store is asked at each call, so a
change of settings takes effect at once.

Inside a transaction, the breaker is the process's: a call made while the database store's
connection is in an atomic block (``ATOMIC_REQUESTS``, the caller's ``atomic()``) keeps its
breaker state in the process, as with a per-process store. Written in that transaction,
the state would be the caller's: a trial taken there would hold its row until the request
ends (every other worker waiting on it instead of failing fast), a store error would leave
the caller's transaction aborted, and a rollback would take the failures it counted with it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from django.db import connections

from .. import phone, ratelimit
from .._breaker import BreakerState, CircuitBreaker, StoreState
from .._events import emit
from ..client import (
    BalanceResult,
    BulkCountResult,
    BulkResult,
    ClientConfigurationError,
    CodeResult,
    SMSResult,
    TextFlowClient,
    VerifyResult,
    longest_call,
)
from ..conf import conf
from ..exceptions import TextFlowConfigurationError
from .base import BaseBackend

_T = TypeVar("_T")

__all__ = ["TextFlowBackend", "breaker_for", "breaker_scope", "new_breaker", "reset_breakers"]


_breakers: dict[tuple[str, int, float, float], CircuitBreaker] = {}
_breakers_lock = threading.Lock()


def breaker_scope() -> str:
    """Which circuit breaker the settings put in force now: ``"shared"`` (its state in the
    rate-limit store, shared by every process) or ``"process"`` (each process its own).
    (With the database store, a call inside a transaction uses the process's all the same:
    see the module docstring.)"""
    return "shared" if ratelimit.get_store().shared else "process"


def _shared_state(base_url: str) -> BreakerState | None:
    """The breaker state in the rate-limit store configured now, or None (the breaker then
    keeps it in the process) when that store is per process, or is the database and this
    call is made inside a transaction on it."""
    store = ratelimit.get_store()
    if not store.shared:
        return None
    if isinstance(store, ratelimit.DatabaseStore) and _in_transaction(store.using):
        return None  # the process's, for this call: see the module docstring
    return StoreState(store, base_url)


def _in_transaction(alias: str) -> bool:
    """Whether a statement on ``alias`` now would join a transaction of the caller's: an
    atomic block, or autocommit turned off by hand.

    The atomic blocks of Django's ``TestCase`` (and so of pytest-django's ``db`` fixture)
    are not counted, as Django's own ``durable`` check does not count them: they stand for
    the autocommit of production, so a test sees the breaker production would (its writes
    go with the test's rollback).

    All the breaker's store statements for a call run on the thread that asked ``allow()``
    (:class:`CircuitBreaker` reports to the state that allowed the call), and the client
    runs none of the caller's code between the two: a call judged outside a transaction
    here reports outside it too, so no statement of the breaker's runs in one."""
    connection = connections[alias]
    if connection.in_atomic_block:
        return any(
            not getattr(block, "_from_testcase", False) for block in connection.atomic_blocks
        )
    return connection.connection is not None and not connection.get_autocommit()


def _store_failed(err: BaseException) -> None:
    """The rate-limit store failed under the breaker: the call goes on with the process's
    breaker; operators hear of it. (A store error's text may name a key: numbers masked.)"""
    emit(
        "textflow.store.failed",
        error=type(err).__name__,
        detail=phone.mask_numbers(str(err)),
        part="breaker",
    )


def new_breaker(
    base_url: str, threshold: int, reset_after: float, *, timeout: float = 0.0
) -> CircuitBreaker:
    """A breaker for the TextFlow at ``base_url``: its state in the rate-limit store while
    that store is shared (:func:`breaker_scope`), else in the breaker. ``timeout``: the
    calls' timeout, the least time a shared trial slot is kept for a worker that never
    reports (killed mid-call), which must outlast the longest call (its connection retries
    included: :func:`~textflow_django.client.longest_call`), else a second trial would go
    out while the first is in flight."""
    return CircuitBreaker(
        threshold,
        reset_after,
        shared=lambda: _shared_state(base_url),
        on_shared_error=_store_failed,
        trial_ttl=max(reset_after, longest_call(timeout)) + 1,
    )


def breaker_for(
    base_url: str, threshold: int, reset_after: float, *, timeout: float = 0.0
) -> CircuitBreaker | None:
    """The process-wide breaker for one TextFlow (shared by every thread's backend), or None
    when ``threshold`` is 0. (With a shared store its state is the whole site's.) One per
    ``timeout`` too: its trial slot's time-to-live follows it."""
    if threshold <= 0:
        return None
    key = (base_url, threshold, reset_after, timeout)
    with _breakers_lock:
        breaker = _breakers.get(key)
        if breaker is None:
            breaker = _breakers[key] = new_breaker(
                base_url, threshold, reset_after, timeout=timeout
            )
        return breaker


def reset_breakers() -> None:
    """Forget every breaker's state (tests: one test's outage must not open the next's):
    this process's, and, where the store in force is shared and reachable now, the shared
    state of every TextFlow this process has a breaker for (a cache outlives a test; the
    database's rows go with the test's transaction anyway). A store that cannot be reached
    (no database access in this test), or the database store from inside a transaction of
    the caller's (the breaker keeps no state there then), is left alone, silently."""
    with _breakers_lock:
        urls = {base_url for base_url, *_settings in _breakers}
        _breakers.clear()
    for base_url in urls:
        try:
            state = _shared_state(base_url)
            if isinstance(state, StoreState):
                state.clear()
        except Exception:  # noqa: BLE001, S112 - best effort: a test's store may be off limits
            continue


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
                breaker=breaker_for(config[1], config[3], config[4], timeout=config[2]),
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
