"""Settings for the test suite. Not for production: fixed secret key, DEBUG-style backends."""

import os
from typing import Any

SECRET_KEY = "tests-only-not-secret"  # noqa: S105 - test settings
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
ROOT_URLCONF = "tests.urls"
STATIC_URL = "/static/"  # live_server's static-files handler needs it
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "rest_framework",
    "drf_spectacular",
    "textflow_django",
    "tests.testapp",
    # django-two-factor-auth and its integration (tests/test_contrib_two_factor.py).
    "django_otp",
    "django_otp.plugins.otp_static",
    "django_otp.plugins.otp_totp",
    "two_factor",
    "two_factor.plugins.phonenumber",
    "textflow_django.contrib.two_factor",
    # django-allauth and its integration (tests/test_contrib_allauth.py): installed at
    # start-up for their models; allauth's settings and URLs are that module's.
    "allauth",
    "allauth.account",
    "textflow_django.contrib.allauth",
]
# two-factor's ready() would patch every AdminSite's login to redirect to LOGIN_URL, for
# every test; its own tests use two-factor's login view.
TWO_FACTOR_PATCH_ADMIN = False

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # allauth.account refuses to start without it; it does nothing outside allauth's views.
    "allauth.account.middleware.AccountMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# As a project using drf-spectacular sets it (the endpoints then describe themselves).
REST_FRAMEWORK = {"DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema"}

# TEST_DATABASE=postgres runs the suite on PostgreSQL (CI does); SQLite otherwise.
DATABASES: dict[str, dict[str, Any]]
if os.environ.get("TEST_DATABASE") == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("PGDATABASE", "textflow"),
            "USER": os.environ.get("PGUSER", "postgres"),
            "PASSWORD": os.environ.get("PGPASSWORD", ""),
            "HOST": os.environ.get("PGHOST", "127.0.0.1"),
            "PORT": os.environ.get("PGPORT", "5432"),
        }
    }
elif os.environ.get("TEXTFLOW_TEST_SQLITE"):
    # A file database shared with subprocesses (the bulk crash test, the benchmark). WAL
    # with synchronous=NORMAL: a commit survives the process being killed (what those
    # need), not a power cut; the usual production SQLite set-up.
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ["TEXTFLOW_TEST_SQLITE"],
            "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL"},
        }
    }
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}

# A Redis server for the rate-limit tests of the cache store (CI starts one; REDIS_URL).
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
}
if os.environ.get("REDIS_URL"):
    CACHES["redis"] = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": os.environ["REDIS_URL"],
        "KEY_PREFIX": "textflow-tests",
    }

TEXTFLOW = {
    "BACKEND": "textflow_django.backends.locmem.LocMemBackend",
    "SERVICE_NAME": "Tests",
    # The bulk tests count the text they give; tests/test_optouts.py tests the footer (on by
    # default) and turns it on where it counts.
    "BULK_OPT_OUT_FOOTER": None,
}

# Subprocesses of the tests talk to the test's emulator through the real backend.
if os.environ.get("TEXTFLOW_TEST_EMULATOR_URL"):
    from textflow_django.testing import EMULATOR_API_KEY

    TEXTFLOW = {
        **TEXTFLOW,
        "BACKEND": "textflow_django.backends.textflow.TextFlowBackend",
        "API_KEY": EMULATOR_API_KEY,
        "BASE_URL": os.environ["TEXTFLOW_TEST_EMULATOR_URL"],
    }
