"""URLs of the allauth tests: allauth's own views under /accounts/, and a home page."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.test import override_settings
from django.urls import include, path

from tests.allauth_settings import ALLAUTH_SETTINGS

# allauth decides at import which URLs exist (phone verification, login by code) from the
# settings of that moment: import them under the settings the tests use.
with override_settings(**ALLAUTH_SETTINGS):
    import allauth.urls  # noqa: F401


def home(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"home of {request.user}")


urlpatterns = [
    path("accounts/", include("allauth.urls")),
    path("", home, name="home"),
]
