"""The example project's URLs plus the two comparison views of the load benchmark."""

from demo.urls import urlpatterns as example_urlpatterns
from django.urls import path

from . import views

urlpatterns = [
    path("bench/hello/", views.HelloView.as_view(), name="bench-hello"),
    path("bench/naive-send/", views.NaiveSendView.as_view(), name="bench-naive-send"),
    *example_urlpatterns,
]
