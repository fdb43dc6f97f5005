"""Settings of the example project: a laptop demo, NOT a production configuration.

Every line that would be unsafe in production says so. Without ``TEXTFLOW_API_KEY`` in the
environment the project talks to the bundled TextFlow emulator (``make demo`` starts one) over
real HTTP; with it, to TextFlow itself, and real SMS cost real credit.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from textflow_django.testing import EMULATOR_API_KEY

BASE_DIR = Path(__file__).resolve().parent.parent  # example_project/

# UNSAFE for production: the fallback key is public (it is in this file). Set
# DJANGO_SECRET_KEY to a long random value anywhere the site is reachable by others.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-project-insecure-dev-key-do-not-deploy")


def _env_flag(name: str, default: bool) -> bool:
    """An on/off setting from the environment: 1/true/yes/on or 0/false/no/off (any case);
    ``default`` when unset. Anything else is an error, not a guess."""
    value = os.environ.get(name)
    if value is None:
        return default
    word = value.strip().lower()
    if word in {"1", "true", "yes", "on"}:
        return True
    if word in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={value!r}: use 1/true/yes/on or 0/false/no/off.")


# On by default, for the demo; DJANGO_DEBUG=0 (or false, no, off) turns it off, e.g.
# `DJANGO_DEBUG=0 make demo`. With it off the dev inbox answers 404 (it exists only while
# DEBUG is on), errors show Django's plain pages, and runserver no longer serves the admin's
# CSS and JavaScript (`runserver --insecure` would).
# UNSAFE for production: debug pages show settings, SQL and source code to anyone.
DEBUG = _env_flag("DJANGO_DEBUG", default=True)

# The dev server listens on loopback only; a deployed site lists its real host names.
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

# NUM_PROXIES (in TEXTFLOW below) stays 0, right for the dev server, which the browser reaches
# directly. UNSAFE for production behind a reverse proxy: every client would then count as
# the proxy's address and share one set of per-IP caps; a real site sets NUM_PROXIES.

# UNSAFE for production as it stands: the dev server speaks plain http, so no HTTPS settings
# (SECURE_SSL_REDIRECT, SESSION_COOKIE_SECURE, CSRF_COOKIE_SECURE, SECURE_HSTS_SECONDS) are
# set. A real site sets all of them.

INSTALLED_APPS = [
    # First: its runserver (a longer listen queue) overrides the staticfiles app's.
    "accounts",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "textflow_django",
]

#: The OpenAPI schema and its browsable page, when drf-spectacular is installed; the page's
#: JavaScript comes from drf-spectacular-sidecar (no CDN) when that is installed too.
HAS_SPECTACULAR = importlib.util.find_spec("drf_spectacular") is not None
HAS_SPECTACULAR_SIDECAR = (
    HAS_SPECTACULAR and importlib.util.find_spec("drf_spectacular_sidecar") is not None
)
if HAS_SPECTACULAR:
    INSTALLED_APPS.append("drf_spectacular")
if HAS_SPECTACULAR_SIDECAR:
    INSTALLED_APPS.append("drf_spectacular_sidecar")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "demo.urls"
WSGI_APPLICATION = "demo.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "accounts.views.site_context",
            ]
        },
    }
]

# SQLite next to this file (git-ignored); DEMO_DATABASE points elsewhere (the browser test
# uses a throw-away file). Fine for a demo; not for production, where SQLite's one writer at a
# time serialises every send and check: a production site uses PostgreSQL or similar.
#
# Set up for a web server, whose threads write at once (Django 5.1+): with SQLite's defaults,
# a transaction that reads and then writes is refused at once with "database is locked" (a
# 500) when another one writes, without waiting. IMMEDIATE takes the write lock when the
# transaction begins, so it waits its turn instead; "timeout" is how long it waits (seconds);
# WAL lets readers read while a writer writes (the journal mode is kept in the file).
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DEMO_DATABASE") or BASE_DIR / "db.sqlite3",
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL;",
        },
    }
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "profile"
LOGOUT_REDIRECT_URL = "home"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# The dev server serves static files (the admin's) itself because DEBUG is on; a deployed
# site runs collectstatic and serves STATIC_ROOT from its web server.
STATIC_URL = "static/"

REST_FRAMEWORK: dict[str, object] = {}
if HAS_SPECTACULAR:
    REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"] = "drf_spectacular.openapi.AutoSchema"
    SPECTACULAR_SETTINGS = {
        "TITLE": "textflow-django example API",
        "DESCRIPTION": (
            "Verify a phone number (send-code, verify-code), then create an account with the "
            "token verify-code answers (signup)."
        ),
        "VERSION": "1",
        "SERVE_INCLUDE_SCHEMA": False,
        # A request and its answer described apart: the answer shows no password or token.
        "COMPONENT_SPLIT_REQUEST": True,
        # The docs page's text in the system's fonts: Redoc's own (Montserrat, Roboto) would
        # be fetched from Google's CDN, and the page is meant to work offline.
        "REDOC_UI_SETTINGS": {
            "theme": {
                "typography": {
                    "fontFamily": "system-ui, -apple-system, 'Segoe UI', sans-serif",
                    "headings": {"fontFamily": "system-ui, -apple-system, 'Segoe UI', sans-serif"},
                    "code": {"fontFamily": "ui-monospace, monospace"},
                }
            }
        },
    }
    if HAS_SPECTACULAR_SIDECAR:
        SPECTACULAR_SETTINGS.update(
            SWAGGER_UI_DIST="SIDECAR", SWAGGER_UI_FAVICON_HREF="SIDECAR", REDOC_DIST="SIDECAR"
        )

# -- TextFlow ------------------------------------------------------------------------------

TEXTFLOW_API_KEY = os.environ.get("TEXTFLOW_API_KEY", "")

#: True when the project talks to the bundled emulator rather than to TextFlow. The dev
#: inbox (/dev/inbox/, which shows every code sent) exists only then, and only while DEBUG
#: is on (accounts.views.dev_inbox_enabled).
#: UNSAFE for production: True turns that page on, and a page showing the codes lets anyone
#: verify any number. It follows the key, so a deployment with TEXTFLOW_API_KEY set is False.
DEMO_USES_EMULATOR = not TEXTFLOW_API_KEY

#: The secret the emulator's replies carry and the site's reply webhook checks
#: (``/api/phone/replies/``, TEXTFLOW["REPLY_SECRET"]): `make demo` starts the emulator with
#: ``--reply-secret`` read from here and ``--reply-url`` at that webhook, so "Reply as this
#: number" on the dev inbox reaches the site as TextFlow's forwarded replies would.
#: UNSAFE for production: this fallback is public (it is in this file). A real site sets
#: REPLY_SECRET from the environment to a long random value, and gives TextFlow the same.
DEMO_REPLY_SECRET = (
    os.environ.get("DEMO_REPLY_SECRET") or "demo-reply-secret-PUBLIC-do-not-deploy-5f7c9e2a"
)

# VERIFY_MODE is left at its default, "local", on purpose: the demo shows what a new project
# gets. textflow-django makes each code itself (CODE_LENGTH, 6 digits), texts it as a plain
# SMS through TextFlow's /send-sms ("Your verification code for Demo is: 123456", which the
# dev inbox shows) and checks it here, keeping only a hash: a check never calls TextFlow.
# "textflow" would have TextFlow make and check the codes (/send-code, /verify-code): its
# 4-digit codes are easier to guess, and the system check warns about that mode.
_TEXTFLOW_COMMON = {
    "SERVICE_NAME": "Demo",
    # The host a phone opens the site at (e.g. a tunnel's): the code SMS then ends with
    # "@<host> #<code>" and Chrome on Android offers the code to the code page (WebOTP).
    "WEBOTP_DOMAIN": os.environ.get("DEMO_WEBOTP_DOMAIN") or None,
    "TIMEOUT": 5.0,
    "MAX_ATTEMPTS": 5,
    "RESEND_COOLDOWN": 30,
    # Tiny, so that a demo job to a handful of users still goes out in several batches and
    # the staff page has progress to show. Real sites keep the default (500).
    "BULK_BATCH_SIZE": 2,
}

if DEMO_USES_EMULATOR:
    TEXTFLOW = {
        # The real backend, client and HTTP path, pointed at the emulator `make demo` starts.
        "BACKEND": "textflow_django.backends.textflow.TextFlowBackend",
        # UNSAFE for production: the emulator's built-in key is public (it is in the
        # package), and worthless against TextFlow anyway.
        "API_KEY": EMULATOR_API_KEY,
        # UNSAFE for production: plain http, so the key and every number travel unencrypted.
        # Tolerable only to loopback (system check textflow.W003 warns about any other host).
        "BASE_URL": os.environ.get("TEXTFLOW_EMULATOR_URL", "http://127.0.0.1:8025/api"),
        "REPLY_SECRET": DEMO_REPLY_SECRET,
        **_TEXTFLOW_COMMON,
    }
else:
    TEXTFLOW = {"API_KEY": TEXTFLOW_API_KEY, **_TEXTFLOW_COMMON}

#: Run a bulk job in a background thread so the staff page can show it progressing. A
#: stand-in for a task queue: a real site hands jobs to workers (textflow_django.tasks has
#: enqueue_bulk_job for that). The example's tests set it to False and send inline.
#: UNSAFE for production: the thread dies with its web process (a deploy, a worker restart,
#: a server timeout), stopping the job mid-way with a batch possibly left "uncertain", and
#: nothing resumes it; every start also adds a thread to a process meant to serve requests.
DEMO_BULK_IN_BACKGROUND = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    # textflow-django logs TextFlow failures (never keys or codes): show them in the terminal.
    "loggers": {"textflow_django": {"handlers": ["console"], "level": "INFO"}},
}
