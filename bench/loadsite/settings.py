"""Settings of the load benchmark: the example project's, made fit for several gunicorn workers.

Needs ``example_project/`` on ``sys.path`` (``bench/load.py`` passes ``--pythonpath``). Read
from the environment (``bench/load.py`` sets them):

- ``LOAD_DATABASE``: a throw-away SQLite file (WAL mode, ``BEGIN IMMEDIATE``, a long busy
  timeout: several worker processes write to it at once without "database is locked").
- ``LOAD_REDIS_URL``: the Redis holding the cache, and with it the rate-limit counters
  (``RATELIMIT_STORE = "cache"``) every worker shares.
- ``LOAD_EMULATOR_URL``: the TextFlow emulator's API root.

Not a production configuration (the secret key is public); the caps are set so that every
rule is checked on every request and none trips.
"""

from __future__ import annotations

import os

from demo.settings import *  # noqa: F403
from demo.settings import INSTALLED_APPS

from textflow_django.testing import EMULATOR_API_KEY

SECRET_KEY = "bench-load-not-secret"  # noqa: S105 - a throw-away benchmark site
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

ROOT_URLCONF = "bench.loadsite.urls"
WSGI_APPLICATION = "bench.loadsite.wsgi.application"

# The schema views are not measured; fewer apps, same middleware as the example.
INSTALLED_APPS = [a for a in INSTALLED_APPS if not a.startswith("drf_spectacular")]
HAS_SPECTACULAR = False
HAS_SPECTACULAR_SIDECAR = False

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("LOAD_DATABASE", "/tmp/textflow-load.sqlite3"),  # noqa: S108
        # Kept open by each worker thread, as a production site would with CONN_MAX_AGE.
        "CONN_MAX_AGE": None,
        "OPTIONS": {
            # Take the write lock at BEGIN: no deadlock-prone lock upgrade between workers.
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }
}

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
    "VERIFY_MODE": "textflow",
    # Every number is sent to once, so the 30 s cooldown is claimed on every send (one
    # Redis round trip) and never refuses one.
    "RESEND_COOLDOWN": 30,
    # All the load comes from 127.0.0.1: the per-IP caps must be out of reach; the per-number
    # ones too, since verify-code checks the same numbers again and again.
    "SEND_LIMITS": {"number": _HIGH, "ip": _HIGH},
    "FAILED_CHECK_LIMITS": {"number": _HIGH, "ip": _HIGH},
    "MAX_ATTEMPTS": 1_000_000_000,
    "RATELIMIT_STORE": "cache",
    "RATELIMIT_CACHE": "default",
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
