"""django-allauth's phone login and verification through textflow-django.

In settings (the full list is in the README)::

    INSTALLED_APPS += ["allauth", "allauth.account", "textflow_django.contrib.allauth"]
    ACCOUNT_ADAPTER = "textflow_django.contrib.allauth.adapter.AccountAdapter"
    ACCOUNT_LOGIN_METHODS = {"phone"}
    ACCOUNT_SIGNUP_FIELDS = ["phone*"]

The adapter (:mod:`.adapter`: ``TextFlowPhoneAdapterMixin`` for a project's own adapter,
``AccountAdapter`` ready made) implements what allauth asks of a site for phone numbers:
it sends allauth's codes and its "unknown account" and "account already exists" texts
through :func:`textflow_django.verification.send_code`, so every SMS is held to the site's
cooldown, send caps and Fraud Guard, and it keeps numbers in E.164 on :class:`.models.
PhoneNumber` (or on a field of the user model, ``TEXTFLOW["ALLAUTH_PHONE_FIELD"]``).
allauth makes and checks the codes; a verified number is reported with
:func:`~textflow_django.verification.confirm`, so the Fraud Guard counts the conversion.

The names below are loaded on first use (``__getattr__``): this package is imported while
Django loads its apps, before models (and allauth's adapter) can be.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .adapter import AccountAdapter, TextFlowPhoneAdapterMixin

__all__ = ["AccountAdapter", "TextFlowPhoneAdapterMixin"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import adapter

        return getattr(adapter, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
