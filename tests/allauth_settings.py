"""django-allauth's settings for tests/test_contrib_allauth.py (and its browser test),
applied over tests.settings per test: a phone-only site as the README's allauth section
sets it up (no password, no email; signup, login by code, verification with resend and
change of number).

allauth's own rate limits are off: textflow-django's caps are what the tests watch.
"""

from __future__ import annotations

from typing import Any

ALLAUTH_SETTINGS: dict[str, Any] = {
    "ROOT_URLCONF": "tests.allauth_urls",
    "ACCOUNT_ADAPTER": "textflow_django.contrib.allauth.adapter.AccountAdapter",
    "ACCOUNT_LOGIN_METHODS": {"phone"},
    "ACCOUNT_SIGNUP_FIELDS": ["phone*"],
    "ACCOUNT_EMAIL_VERIFICATION": "none",
    "ACCOUNT_LOGIN_BY_CODE_ENABLED": True,
    "ACCOUNT_PHONE_VERIFICATION_SUPPORTS_RESEND": True,
    "ACCOUNT_PHONE_VERIFICATION_SUPPORTS_CHANGE": True,
    # Six digits, as the README advises for SMS: typed on a phone's keypad, and what the
    # WebOTP line hands the browser.
    "ACCOUNT_PHONE_VERIFICATION_CODE_FORMAT": {"numeric": True, "length": 6, "dashed": False},
    "ACCOUNT_RATE_LIMITS": False,
    "AUTHENTICATION_BACKENDS": [
        "django.contrib.auth.backends.ModelBackend",
        "allauth.account.auth_backends.AuthenticationBackend",
    ],
    "LOGIN_REDIRECT_URL": "/",
}
