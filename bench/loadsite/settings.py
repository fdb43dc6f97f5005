"""Settings of the load benchmark: the example project's, made fit for several gunicorn workers,
with django-phone-verify (the peer) mounted beside the app.

Needs ``example_project/`` on ``sys.path`` (``bench/load.py`` puts it on ``PYTHONPATH``). Read
from the environment (``bench/load.py`` sets them):

- ``LOAD_DB_ENGINE``: ``sqlite`` (the default) or ``postgres``.
- ``LOAD_DATABASE``: the SQLite file (WAL mode, ``BEGIN IMMEDIATE``, a long busy timeout:
  several worker processes write to it at once without "database is locked"), or the name of
  the throw-away PostgreSQL database (reached with the usual ``PGHOST``/``PGPORT``/``PGUSER``/
  ``PGPASSWORD``).
- ``LOAD_STORE``: where the app's rate-limit counters live: ``database`` (the default store,
  ``RATELIMIT_STORE = "database"``: the main comparison) or ``redis`` (``RATELIMIT_STORE =
  "cache"`` on Django's ``RedisCache``).
- ``LOAD_VERIFY_MODE``: the app's ``VERIFY_MODE``, ``local`` (the default) or ``textflow``.
- ``LOAD_REDIS_URL``: the Redis of the cache (and so of the counters with ``LOAD_STORE=redis``).
- ``LOAD_EMULATOR_URL``: the TextFlow emulator's API root.

Both apps share the database, the middleware and the DRF defaults; each speaks to the emulator
as TextFlow (the peer through ``bench.loadsite.peer.TextFlowPeerBackend``).

Not a production configuration (the secret key is public). Every rule of the app is on with
its default value, except the caps and the Fraud Guard's thresholds: set so high that none
trips, yet every default scope (number, ip, network and the global and country budgets for
sends; ip and network for failed checks) is counted on every request. ``NUM_PROXIES = 1``:
the load generator gives each request its client address in ``X-Forwarded-For`` (one address
for all, or one per request); without that header the address is ``REMOTE_ADDR``, 127.0.0.1.
"""

from __future__ import annotations

import os
from typing import Any

from demo.settings import *  # noqa: F403
from demo.settings import INSTALLED_APPS

from textflow_django.conf import DEFAULTS as TEXTFLOW_DEFAULTS
from textflow_django.testing import EMULATOR_API_KEY

SECRET_KEY = "bench-load-not-secret"  # noqa: S105 - a throw-away benchmark site
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

ROOT_URLCONF = "bench.loadsite.urls"
WSGI_APPLICATION = "bench.loadsite.wsgi.application"

# The schema views are not measured; fewer apps, same middleware as the example. The peer's
# app (its model, migrations and admin) is added.
INSTALLED_APPS = [a for a in INSTALLED_APPS if not a.startswith("drf_spectacular")]
INSTALLED_APPS.append("phone_verify")
HAS_SPECTACULAR = False
HAS_SPECTACULAR_SIDECAR = False

LOAD_DB_ENGINE = os.environ.get("LOAD_DB_ENGINE", "sqlite")
LOAD_STORE = os.environ.get("LOAD_STORE", "database")
LOAD_VERIFY_MODE = os.environ.get("LOAD_VERIFY_MODE", "local")
if LOAD_DB_ENGINE not in {"sqlite", "postgres"}:
    raise ValueError(f"LOAD_DB_ENGINE must be sqlite or postgres, not {LOAD_DB_ENGINE!r}")
if LOAD_STORE not in {"database", "redis"}:
    raise ValueError(f"LOAD_STORE must be database or redis, not {LOAD_STORE!r}")
if LOAD_VERIFY_MODE not in {"local", "textflow"}:
    raise ValueError(f"LOAD_VERIFY_MODE must be local or textflow, not {LOAD_VERIFY_MODE!r}")

_DATABASE: dict[str, Any]
if LOAD_DB_ENGINE == "postgres":
    _DATABASE = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("LOAD_DATABASE", "textflow_load"),
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
        "USER": os.environ.get("PGUSER", "postgres"),
        "PASSWORD": os.environ.get("PGPASSWORD", ""),
    }
else:
    _DATABASE = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("LOAD_DATABASE", "/tmp/textflow-load.sqlite3"),  # noqa: S108
        "OPTIONS": {
            # Take the write lock at BEGIN: no deadlock-prone lock upgrade between workers.
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }
# Kept open by each worker thread, as a production site would with CONN_MAX_AGE.
_DATABASE["CONN_MAX_AGE"] = None
DATABASES = {"default": _DATABASE}

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": os.environ.get("LOAD_REDIS_URL", "redis://127.0.0.1:6379/14"),
    }
}

_HIGH = ("1000000000/h", "1000000000/d")

TEXTFLOW = {
    "BACKEND": "textflow_django.backends.textflow.TextFlowBackend",
    "API_KEY": EMULATOR_API_KEY,
    "BASE_URL": os.environ.get("LOAD_EMULATOR_URL", "http://127.0.0.1:8025/api"),
    "TIMEOUT": 10.0,
    "SERVICE_NAME": "Demo",
    "VERIFY_MODE": LOAD_VERIFY_MODE,
    # The default cooldown: every number is sent to once, so it is claimed on every send and
    # never refuses one.
    "RESEND_COOLDOWN": 30,
    # Every default scope (number, ip, network, and the global and country budgets), each out
    # of reach: all the load comes from one site, and the "one address" run from one IP. A
    # SEND_LIMITS dict replaces the defaults' scopes, so they are all listed, from the defaults.
    "SEND_LIMITS": {scope: _HIGH for scope in TEXTFLOW_DEFAULTS["SEND_LIMITS"]},
    "FAILED_CHECK_LIMITS": {scope: _HIGH for scope in TEXTFLOW_DEFAULTS["FAILED_CHECK_LIMITS"]},
    "RATELIMIT_STORE": "cache" if LOAD_STORE == "redis" else "database",
    "RATELIMIT_CACHE": "default",
    # The load generator's X-Forwarded-For is the one proxy's view of the client.
    "NUM_PROXIES": 1,
}

# The Fraud Guard stays on, its thresholds out of reach like the caps: the send runs never
# verify their codes (a conversion of 0 that the guard would block at once), and every prefix
# gets thousands of codes in seconds. Only keys the guard knows are given (E016 refuses others).
_GUARD = {"MIN_SENDS": 1_000_000, "NEW_COUNTRY_LIMIT": "1000000000/h"}
if "FRAUD_GUARD" in TEXTFLOW_DEFAULTS:
    TEXTFLOW["FRAUD_GUARD"] = {
        k: v for k, v in _GUARD.items() if k in TEXTFLOW_DEFAULTS["FRAUD_GUARD"]
    }

# The peer: django-phone-verify 3.3 with a TextFlow backend of the bench's own; its defaults
# otherwise (6-digit codes, 10 minutes, each code verifies once).
PHONE_VERIFICATION = {
    "BACKEND": "bench.loadsite.peer.TextFlowPeerBackend",
    "OPTIONS": {"BASE_URL": TEXTFLOW["BASE_URL"], "API_KEY": EMULATOR_API_KEY, "TIMEOUT": 10.0},
    "TOKEN_LENGTH": 6,
    "MESSAGE": "Welcome to {app}, use session code {security_code} for authentication.",
    "APP_NAME": "Demo",
    "SECURITY_CODE_EXPIRATION_SECONDS": 600,
    "VERIFY_SECURITY_CODE_ONLY_ONCE": True,
}

# Quiet: gunicorn's error log carries warnings and errors only.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}

# The comparison views (bench/loadsite/views.py) read these.
LOAD_TEXTFLOW_URL = TEXTFLOW["BASE_URL"]
LOAD_TEXTFLOW_KEY = EMULATOR_API_KEY
