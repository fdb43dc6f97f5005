"""Operator events: one stable name per thing that happened, logged as one greppable line
and handed to the listeners (the Prometheus integration counts them). No Django here: the
client reports its calls through it too.

A line is the event's name, then ``key=value`` pairs in the order given::

    textflow.send_code.refused reason=rate_limited number=+1********43 scopes=number

Contract:

- Names are ``textflow.<area>.<what>``, lowercase, stable across releases: operators grep
  for them and alert on them. :data:`EVENTS` lists every name and its log level; emitting
  a name not listed is a ``ValueError`` (a typo would otherwise be a silent new event).
- Values are written with ``str()`` (a list, tuple or set as its items joined by ``,``, a
  float with three decimals); one that is empty or holds a space, ``=``, a quote or a
  character that is not printable (a line break) is quoted with ``repr()``, so a line is
  always one line and splits back into its pairs. A number must be passed masked
  (``phone.mask``): this module cannot tell a number from any other value. A field named
  like a secret (:data:`FORBIDDEN_FIELDS`) is a ``ValueError``: the key and the codes never
  reach a log line.
- Listeners are called after the line is logged, in registration order, with the name and
  the fields as given; a listener that raises is logged (``textflow.events.listener_failed``,
  with its traceback) and does not stop the others or the caller. With no listener
  registered an event costs a dict and a disabled-logger check.
- The lines go to the ``textflow_django`` logger, the ``bulk`` area's to
  ``textflow_django.bulk`` (where they were before events existed: handlers configured for
  it keep their records).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Final, TypeAlias

__all__ = [
    "EVENTS",
    "FORBIDDEN_FIELDS",
    "Listener",
    "add_listener",
    "emit",
    "line",
    "remove_listener",
]

logger = logging.getLogger("textflow_django")
#: The bulk area's logger, named as the bulk package's logger was before events.
_bulk_logger = logging.getLogger("textflow_django.bulk")

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
    # The integrations (textflow_django.contrib).
    "textflow.two_factor.confirm_failed": logging.WARNING,
    # Bulk jobs.
    "textflow.bulk.batch_sent": logging.INFO,
    "textflow.bulk.batch_failed": logging.WARNING,
    "textflow.bulk.batch_uncertain": logging.WARNING,
    "textflow.bulk.numbers_dropped": logging.WARNING,
    "textflow.bulk.job_finished": logging.INFO,
    "textflow.bulk.opted_out": logging.INFO,
    "textflow.bulk.sending_found": logging.WARNING,
    "textflow.bulk.claim_lost": logging.WARNING,
    # Retention and erasure.
    "textflow.cleanup.deleted": logging.INFO,
    "textflow.privacy.erased": logging.INFO,
    # Replies and the opt-out list.
    "textflow.reply.received": logging.INFO,
    "textflow.reply.rejected": logging.WARNING,
    "textflow.reply.confirmed": logging.INFO,
    "textflow.reply.confirm_failed": logging.WARNING,
    "textflow.optout.added": logging.INFO,
    "textflow.optout.removed": logging.INFO,
    "textflow.send_sms.opted_out": logging.INFO,
    # Deployment problems seen at run time.
    "textflow.deploy.proxy_header_ignored": logging.WARNING,
    # This module's own: a listener raised (logged directly, never handed to listeners).
    "textflow.events.listener_failed": logging.ERROR,
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


#: Characters that make a value quoted: it would not split back into its pair otherwise.
_QUOTED = frozenset(" =\"'")


def _value(value: object) -> str:
    """One value as the line writes it (see the module's contract)."""
    if isinstance(value, float):
        text = f"{value:.3f}"
    elif isinstance(value, set | frozenset):
        text = ",".join(sorted(map(str, value)))
    elif isinstance(value, list | tuple):
        text = ",".join(map(str, value))
    else:
        text = str(value)
    if not text or not text.isprintable() or not _QUOTED.isdisjoint(text):
        return repr(text)
    return text


def line(event: str, /, **fields: object) -> str:
    """The line :func:`emit` logs for ``event`` and ``fields`` (no check of either)."""
    pairs = " ".join(f"{name}={_value(value)}" for name, value in fields.items())
    return f"{event} {pairs}" if pairs else event


def emit(event: str, /, **fields: object) -> None:
    """Log ``event`` with ``fields`` as one line at its level, then tell the listeners.

    Raises ``ValueError`` for a name not in :data:`EVENTS` or a field in
    :data:`FORBIDDEN_FIELDS`, before anything is logged or any listener called.
    """
    level = EVENTS.get(event)
    if level is None:
        raise ValueError(f"unknown event {event!r}: add it to _events.EVENTS")
    forbidden = FORBIDDEN_FIELDS.intersection(fields)
    if forbidden:
        raise ValueError(f"event {event!r} may not carry {sorted(forbidden)}")
    log = _bulk_logger if event.startswith("textflow.bulk.") else logger
    if log.isEnabledFor(level):
        log.log(level, "%s", line(event, **fields))
    for listener in _listeners:
        try:
            listener(event, fields)
        except Exception:
            # Not through emit: a listener failing on this event must not loop.
            logger.exception("%s", line("textflow.events.listener_failed", listener=listener))
