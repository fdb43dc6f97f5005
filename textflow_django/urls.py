"""``path("api/phone/", include("textflow_django.urls"))`` gives ``textflow:send-code`` and
``textflow:verify-code``."""

from django.urls import path

from .views import SendCodeView, VerifyCodeView

app_name = "textflow"

urlpatterns = [
    path("send-code/", SendCodeView.as_view(), name="send-code"),
    path("verify-code/", VerifyCodeView.as_view(), name="verify-code"),
]
