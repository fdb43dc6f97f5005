"""django-two-factor-auth's SMS through textflow-django: ``TextFlowGateway``.

In settings (the full list is in the README)::

    INSTALLED_APPS += ["textflow_django.contrib.two_factor"]
    TWO_FACTOR_SMS_GATEWAY = "textflow_django.contrib.two_factor.TextFlowGateway"
    MIDDLEWARE += ["two_factor.middleware.threadlocals.ThreadLocals"]

Every token SMS goes through :func:`textflow_django.verification.send_code`, so it is held
to the same cooldown, send caps and Fraud Guard as the site's own codes; a token that logs a
user in (or completes a phone's setup) is reported with
:func:`~textflow_django.verification.confirm`, so the Fraud Guard counts the conversion.
The app (``apps.py``) adds the system checks of :mod:`.checks` and the receivers that
confirm; ``gateway`` is where the class lives (``...two_factor.gateway.TextFlowGateway`` is
the same class).

The names below are loaded on first use (``__getattr__``): this package is imported while
Django loads its apps, before models can be, and the gateway needs the models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .gateway import TextFlowGateway, VoiceCallsUnsupported

__all__ = ["TextFlowGateway", "VoiceCallsUnsupported"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import gateway

        return getattr(gateway, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
