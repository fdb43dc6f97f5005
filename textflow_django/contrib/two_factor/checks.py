"""System checks of the two-factor integration (registered by the app's ``ready()``).

ID ledger of ``textflow_django.contrib.two_factor`` (the IDs from textflow.W120 to W129 are
this app's; an ID is never reused, even when its check is removed):

- ``textflow.W120``: two-factor's phone-call method is on (``TWO_FACTOR_CALL_GATEWAY``) and
  TextFlow's gateway is its call gateway (TextFlow has no voice: every call fails) or its
  SMS gateway (the calls go around the send caps and the Fraud Guard).
- ``textflow.W121``: TextFlow's gateway sends two-factor's SMS, but two-factor's
  ``ThreadLocals`` middleware is not in ``MIDDLEWARE``: the gateway sees no request, so no
  per-address cap applies and a refused send is a server error on the login page.
- ``textflow.W122``: TextFlow's gateway sends two-factor's SMS, but ``MessageMiddleware``
  is not in ``MIDDLEWARE``: a refused send cannot be told to the user, so it is a server
  error on the login page.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig, apps
from django.conf import settings
from django.core.checks import CheckMessage, Tags, Warning, register
from django.utils.module_loading import import_string

from .gateway import TextFlowGateway

__all__ = ["check_two_factor"]

THREAD_LOCALS = "two_factor.middleware.threadlocals.ThreadLocals"
MESSAGES = "django.contrib.messages.middleware.MessageMiddleware"
PHONE_PLUGIN = "two_factor.plugins.phonenumber"


@register(Tags.compatibility)
def check_two_factor(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Warn about two-factor settings that TextFlow's gateway cannot serve."""
    if not apps.is_installed(PHONE_PLUGIN):
        return []  # two-factor offers no phone methods: no gateway is ever used
    sms_is_ours = _is_ours(getattr(settings, "TWO_FACTOR_SMS_GATEWAY", None))
    call_gateway = getattr(settings, "TWO_FACTOR_CALL_GATEWAY", None)
    found: list[CheckMessage] = []
    if call_gateway and _is_ours(call_gateway):
        found.append(
            Warning(
                "TWO_FACTOR_CALL_GATEWAY is TextFlow's gateway, which cannot make phone "
                "calls: every phone-call challenge of two-factor fails with an error.",
                hint="TextFlow sends SMS only. Remove TWO_FACTOR_CALL_GATEWAY (two-factor "
                "then offers text messages only) or name a gateway that can call.",
                id="textflow.W120",
            )
        )
    elif call_gateway and sms_is_ours:
        found.append(
            Warning(
                "Two-factor's phone-call method is on (TWO_FACTOR_CALL_GATEWAY) beside "
                "TextFlow's SMS gateway: the calls go through another gateway, outside "
                "textflow-django's send caps and Fraud Guard.",
                hint="Remove TWO_FACTOR_CALL_GATEWAY to offer text messages only, or "
                "silence textflow.W120 if the calls are meant and capped elsewhere.",
                id="textflow.W120",
            )
        )
    if sms_is_ours:
        middleware = list(getattr(settings, "MIDDLEWARE", None) or ())
        if THREAD_LOCALS not in middleware:
            found.append(
                Warning(
                    "TextFlow's two-factor gateway cannot see the request: two-factor's "
                    "ThreadLocals middleware is not in MIDDLEWARE.",
                    hint=f"Add {THREAD_LOCALS!r} to MIDDLEWARE. Without it no per-address "
                    "send cap applies to two-factor's SMS, and a refused send (a cap, the "
                    "Fraud Guard) is a server error on the login page instead of a message.",
                    id="textflow.W121",
                )
            )
        if MESSAGES not in middleware:
            found.append(
                Warning(
                    "TextFlow's two-factor gateway cannot tell the user why no SMS was sent: "
                    "MessageMiddleware is not in MIDDLEWARE.",
                    hint=f"Add {MESSAGES!r} to MIDDLEWARE (and show the messages in your "
                    "two_factor/_base.html). Without it a refused send is a server error "
                    "on the login page.",
                    id="textflow.W122",
                )
            )
    return found


def _is_ours(path: object) -> bool:
    """Whether the gateway setting ``path`` names TextFlow's gateway or a subclass of it.
    A path that does not import is two-factor's problem, not this check's."""
    if not isinstance(path, str) or not path:
        return False
    try:
        gateway = import_string(path)
    except ImportError:
        return False
    return isinstance(gateway, type) and issubclass(gateway, TextFlowGateway)
