"""Prometheus metrics for textflow-django (the ``prometheus`` extra: ``prometheus_client``).

Nothing to install or configure: with ``prometheus_client`` importable and
``TEXTFLOW["METRICS"]`` true (the default), the app's ``ready()`` calls :func:`install`,
which makes the metrics in ``prometheus_client``'s default registry and counts the app's
events (:mod:`textflow_django._events`) into them. With django-prometheus, its ``/metrics``
shows them; without it, include :func:`views.metrics` in an internal URLconf. Without
``prometheus_client`` this package is never imported, and nothing is counted.

Only this package imports ``prometheus_client`` (import-linter checks it).
"""

from ._metrics import METRIC_NAMES, Metrics, install, uninstall

__all__ = ["METRIC_NAMES", "Metrics", "install", "uninstall"]
