"""The metrics page, for a site without django-prometheus (whose ``/metrics`` shows the same
registry). Include it in a URLconf only your Prometheus can reach (an internal host, a
network policy, your proxy's allow list): the page has no authentication of its own, and
its figures (codes sent per country, refusals) are the site's business, not the public's.

    from textflow_django.contrib.prometheus.views import metrics

    urlpatterns = [..., path("internal/metrics", metrics)]
"""

from __future__ import annotations

import os

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_safe
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)

__all__ = ["metrics"]


@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    """Every metric of ``prometheus_client``'s default registry (textflow-django's among
    them) in Prometheus's text format. Under ``PROMETHEUS_MULTIPROC_DIR`` (several worker
    processes: gunicorn, uWSGI), the sum of every process's, as prometheus_client and
    django-prometheus read them."""
    registry = REGISTRY
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
