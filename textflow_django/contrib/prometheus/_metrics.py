"""The metrics: a listener of textflow-django's events (:mod:`textflow_django._events`) that
counts them in a ``prometheus_client`` registry.

Every metric moves only on an event, so what a metric counts is exactly what the log lines
say (one rule, one home: the event is the fact; the log line and the metric are two views of
it). Label values are the events' own small vocabularies (regions, refusal codes,
operations, outcome classes): never a number, a user or anything unbounded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Final

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from ... import _events

__all__ = ["METRIC_NAMES", "Metrics", "install", "uninstall"]

#: Every metric's name as Prometheus shows it (counters with their ``_total``).
METRIC_NAMES: Final = (
    "textflow_codes_sent_total",
    "textflow_codes_verified_total",
    "textflow_codes_refused_total",
    "textflow_code_checks_failed_total",
    "textflow_api_calls_total",
    "textflow_api_call_seconds",
    "textflow_breaker_open",
    "textflow_bulk_recipients_sent_total",
    "textflow_fraud_blocks_total",
    "textflow_store_failures_total",
)

# Where a registry keeps the Metrics made in it. On the registry itself, not in a dict of
# this module: a registry refuses a metric name twice, and a reload of this module (a test,
# a development server's autoreload in one process) must find the metrics it made before.
_ATTRIBUTE = "_textflow_django_metrics"
_lock = threading.Lock()


class Metrics:
    """textflow-django's metrics in one registry, and the listener that moves them (the
    instance is called with each event's name and fields)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        self.codes_sent = counter(
            "textflow_codes_sent", "Verification codes sent, by destination region.", ("country",)
        )
        self.codes_verified = counter(
            "textflow_codes_verified",
            "Verification codes verified (checked or confirmed), by destination region.",
            ("country",),
        )
        self.codes_refused = counter(
            "textflow_codes_refused",
            "Sends of a verification code refused, by reason (the API's error code).",
            ("reason",),
        )
        self.checks_failed = counter(
            "textflow_code_checks_failed",
            "Checks of a code that did not verify it, by reason (the API's error code).",
            ("reason",),
        )
        self.api_calls = counter(
            "textflow_api_calls",
            "Calls to the TextFlow API, by operation and outcome class.",
            ("operation", "outcome"),
        )
        self.api_seconds = Histogram(
            "textflow_api_call_seconds",
            "Seconds a call to the TextFlow API took, by operation (calls the circuit "
            "breaker did not let through are not observed).",
            ("operation",),
            registry=registry,
        )
        # In multiprocess mode, the highest value of the live processes: open anywhere.
        self.breaker_open = Gauge(
            "textflow_breaker_open",
            "1 while this process's circuit breaker to TextFlow is open, else 0.",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.bulk_recipients_sent = counter(
            "textflow_bulk_recipients_sent",
            "Bulk SMS recipients TextFlow accepted.",
        )
        self.fraud_blocks = counter(
            "textflow_fraud_blocks",
            "Destinations the Fraud Guard blocked, by scope (prefix or country).",
            ("scope",),
        )
        self.store_failures = counter(
            "textflow_store_failures", "Failed calls to the rate-limit store."
        )
        self._handlers: Mapping[str, Callable[[Mapping[str, object]], None]] = {
            "textflow.send_code.sent": self._sent,
            "textflow.send_code.refused": self._refused,
            "textflow.verify_code.verified": self._verified,
            "textflow.verify_code.failed": self._failed,
            "textflow.api.call": self._api_call,
            "textflow.breaker.opened": lambda fields: self.breaker_open.set(1),
            "textflow.breaker.closed": lambda fields: self.breaker_open.set(0),
            "textflow.bulk.batch_sent": self._batch_sent,
            "textflow.fraud.blocked": self._blocked,
            "textflow.store.failed": lambda fields: self.store_failures.inc(),
        }

    def __call__(self, event: str, fields: Mapping[str, object]) -> None:
        """The listener: move the metric ``event`` concerns, if any."""
        handler = self._handlers.get(event)
        if handler is not None:
            handler(fields)

    def _sent(self, fields: Mapping[str, object]) -> None:
        self.codes_sent.labels(country=str(fields.get("country") or "")).inc()

    def _verified(self, fields: Mapping[str, object]) -> None:
        self.codes_verified.labels(country=str(fields.get("country") or "")).inc()

    def _refused(self, fields: Mapping[str, object]) -> None:
        self.codes_refused.labels(reason=str(fields.get("reason"))).inc()

    def _failed(self, fields: Mapping[str, object]) -> None:
        self.checks_failed.labels(reason=str(fields.get("reason"))).inc()

    def _api_call(self, fields: Mapping[str, object]) -> None:
        operation, outcome = str(fields.get("operation")), str(fields.get("outcome"))
        self.api_calls.labels(operation=operation, outcome=outcome).inc()
        if outcome == "circuit_open":
            # Not tried: no latency to observe, and proof the breaker is open here (with a
            # shared breaker another process may have opened it).
            self.breaker_open.set(1)
            return
        seconds = fields.get("seconds")
        if isinstance(seconds, int | float):
            self.api_seconds.labels(operation=operation).observe(seconds)
        if outcome not in _NO_ANSWER:
            # An answer, even a refusal, closes the breaker (the breaker's success()); a
            # failed call may be the one that opened it: its "opened" event came first, so
            # only an answer clears the gauge. With a shared breaker only the process whose
            # trial succeeded hears "closed": the others' gauges fall with their next answer.
            self.breaker_open.set(0)

    def _batch_sent(self, fields: Mapping[str, object]) -> None:
        recipients = fields.get("recipients")
        if isinstance(recipients, int) and recipients > 0:
            self.bulk_recipients_sent.inc(recipients)

    def _blocked(self, fields: Mapping[str, object]) -> None:
        self.fraud_blocks.labels(scope=str(fields.get("scope"))).inc()


#: The outcomes of a call TextFlow did not answer (client/_report.py): the breaker counts
#: them as failures; every other outcome is an answer.
_NO_ANSWER = frozenset(
    {"circuit_open", "timeout", "server_error", "bad_response", "unavailable", "error"}
)


def install(registry: CollectorRegistry | None = None) -> Metrics:
    """Make textflow-django's metrics in ``registry`` (``prometheus_client.REGISTRY``, the
    one django-prometheus and :func:`~textflow_django.contrib.prometheus.views.metrics`
    export, by default) and start counting events into them. Idempotent: the metrics of a
    registry are made once, and listen once."""
    registry = REGISTRY if registry is None else registry
    with _lock:
        metrics = getattr(registry, _ATTRIBUTE, None)
        if metrics is None:  # not isinstance: after a reload it is the old module's class
            metrics = Metrics(registry)
            setattr(registry, _ATTRIBUTE, metrics)
        _events.add_listener(metrics)
    return metrics


def uninstall(registry: CollectorRegistry | None = None) -> None:
    """Stop counting events into ``registry``'s metrics (they stay registered, with their
    values)."""
    metrics = getattr(REGISTRY if registry is None else registry, _ATTRIBUTE, None)
    if metrics is not None:
        _events.remove_listener(metrics)
