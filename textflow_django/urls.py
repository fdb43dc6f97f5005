"""``path("api/phone/", include("textflow_django.urls"))`` gives ``textflow:send-code``,
``textflow:verify-code`` and ``textflow:replies`` (the webhook TextFlow forwards incoming SMS
to; off, 404, until ``TEXTFLOW["REPLY_SECRET"]`` is set)."""

from django.urls import path

from .views import RepliesView, SendCodeView, VerifyCodeView

app_name = "textflow"

urlpatterns = [
    path("send-code/", SendCodeView.as_view(), name="send-code"),
    path("verify-code/", VerifyCodeView.as_view(), name="verify-code"),
    path("replies/", RepliesView.as_view(), name="replies"),
]
