"""``path("internal/", include("textflow_django.contrib.prometheus.urls"))`` serves the
metrics at ``internal/metrics`` (:func:`.views.metrics`: keep it internal)."""

from django.urls import path

from .views import metrics

__all__ = ["urlpatterns"]

urlpatterns = [path("metrics", metrics, name="textflow-metrics")]
