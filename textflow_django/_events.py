"""Operator events: one stable name per thing that happened, logged as one greppable line
and handed to the listeners (the Prometheus integration counts them). No Django here: the
client reports its calls through it too.

A line is the event's name, then ``key=value`` pairs in the order given::

    textflow.send_code.refused reason=rate_limited number=+1********43 scopes=number

Contract:

- Names are ``textflow.<area>.<what>``, lowercase, stable across releases: operators grep
  for them and alert on them. :data:`EVENTS` lists every name and its log level; emitting
  a name not listed is a ``ValueError`` (a typo would otherwise be a silent new event).
- Values are written with ``str()``; one that contains a space or ``=`` is quoted with
  ``repr()``, so a line always splits back into its pairs. A number must be passed masked
  (``phone.mask``): this module cannot tell a number from any other value. A field named
  like a secret (:data:`FORBIDDEN_FIELDS`) is a ``ValueError``: the key and the codes never
  reach a log line.
- Listeners are called after the line is logged, in registration order, with the name and
  the fields; a listener that raises is logged and does not stop the others or the caller.
  With no listener registered an event costs a dict and a disabled-logger check.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Final, TypeAlias

__all__ = ["EVENTS", "FORBIDDEN_FIELDS", "Listener", "add_listener", "emit", "remove_listener"]

logger = logging.getLogger("textflow_django")

#: What a listener is called with: the event's name and its fields.
Listener: TypeAlias = Callable[[str, Mapping[str, object]], None]

#: Every event and the level its line is logged at.
#: Grouped by area. An event is added here before anything emits it.
EVENTS: Final[Mapping[str, int]] = {
    # Verification (send-code, verify-code, and the integrations through them).
    "textflow.send_code.sent": logging.INFO,
    "textflow.send_code.refused": logging.INFO,
    "textflow.verify_code.verified": logging.INFO,
    "textflow.verify_code.failed": logging.INFO,
    # Calls to TextFlow (the client) and the circuit breaker.
    "textflow.api.call": logging.DEBUG,
    "textflow.api.failed": logging.WARNING,
    "textflow.breaker.opened": logging.WARNING,
    "textflow.breaker.closed": logging.INFO,
    # The Fraud Guard and the rate-limit store.
    "textflow.fraud.blocked": logging.WARNING,
    "textflow.store.failed": logging.ERROR,
    # Bulk jobs.
    "textflow.bulk.batch_sent": logging.INFO,
    "textflow.bulk.batch_failed": logging.WARNING,
    "textflow.bulk.batch_uncertain": logging.WARNING,
    "textflow.bulk.job_finished": logging.INFO,
    # Retention and erasure.
    "textflow.cleanup.deleted": logging.INFO,
    "textflow.privacy.erased": logging.INFO,
    # Replies and the opt-out list.
    "textflow.reply.received": logging.INFO,
    "textflow.reply.rejected": logging.WARNING,
    "textflow.optout.added": logging.INFO,
    "textflow.optout.removed": logging.INFO,
    "textflow.send_sms.opted_out": logging.INFO,
    # Deployment problems seen at run time.
    "textflow.deploy.proxy_header_ignored": logging.WARNING,
}

#: Field names no event may carry: the API key and verification codes are never logged.
FORBIDDEN_FIELDS: Final = frozenset({"code", "api_key", "key", "secret", "token", "password"})

_listeners: tuple[Listener, ...] = ()
_lock = threading.Lock()


def add_listener(listener: Listener) -> None:
    """Call ``listener(name, fields)`` for every event from now on (once, however often
    it is added)."""
    global _listeners
    with _lock:
        if listener not in _listeners:
            _listeners = (*_listeners, listener)


def remove_listener(listener: Listener) -> None:
    """Stop calling ``listener``; no error if it was not registered."""
    global _listeners
    with _lock:
        _listeners = tuple(each for each in _listeners if each != listener)


def _value(value: object) -> str:
    text = str(value)
    return repr(text) if (not text or " " in text or "=" in text) else text


def emit(event: str, /, **fields: object) -> None:
    """Log ``event`` with ``fields`` as one line at its level, then tell the listeners."""
    level = EVENTS.get(event)
    if level is None:
        raise ValueError(f"unknown event {event!r}: add it to _events.EVENTS")
    forbidden = FORBIDDEN_FIELDS.intersection(fields)
    if forbidden:
        raise ValueError(f"event {event!r} may not carry {sorted(forbidden)}")
    if logger.isEnabledFor(level):
        pairs = " ".join(f"{name}={_value(value)}" for name, value in fields.items())
        logger.log(level, "%s %s", event, pairs) if pairs else logger.log(level, "%s", event)
    for listener in _listeners:
        try:
            listener(event, fields)
        except Exception:
            logger.exception("textflow.events.listener_failed listener=%r", listener)
