"""The example project's URLs, the load benchmark's two comparison views, and the peer
(django-phone-verify's ``/api/phone/register`` and ``/api/phone/verify``).

The peer's routes come before the example's, so that when the two differ in URL resolution
it is the app that pays the extra pattern tests, not the peer.
"""

from demo.urls import urlpatterns as example_urlpatterns
from django.urls import include, path

from . import views

urlpatterns = [
    path("bench/hello/", views.HelloView.as_view(), name="bench-hello"),
    path("bench/naive-send/", views.NaiveSendView.as_view(), name="bench-naive-send"),
    path("api/", include("phone_verify.urls")),
    *example_urlpatterns,
]
