"""URLs of the two-factor tests (tests/test_contrib_two_factor.py): the suite's, and
django-two-factor-auth's as a project includes them."""

from django.urls import include, path
from two_factor.urls import urlpatterns as two_factor_urlpatterns  # type: ignore[import-untyped, unused-ignore]

from tests.urls import urlpatterns as base_urlpatterns

urlpatterns = [*base_urlpatterns, path("", include(two_factor_urlpatterns))]
