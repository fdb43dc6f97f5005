"""Settings for ``bench/workers/prove.py``: PostgreSQL, the database task backend of
``django-tasks-db``, and the real TextFlow backend pointed at the emulator.

Read from the environment: ``PGHOST``/``PGPORT``/``PGUSER``/``PGPASSWORD`` (the server),
``TEXTFLOW_WORKERS_DB`` (the database, default ``textflow_workers``; the script drops and
recreates it) and ``TEXTFLOW_EMULATOR_URL`` (the emulator's base URL). Not for production.
"""

import os

import django

from textflow_django.testing import EMULATOR_API_KEY

SECRET_KEY = "bench-workers-not-secret"  # noqa: S105 - a throwaway benchmark database
DEBUG = False
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "rest_framework",
    "textflow_django",
    # Django 6 has ``django.tasks`` built in; 5.2 needs the backport as an app.
    *(["django_tasks"] if django.VERSION < (6, 0) else []),
    "django_tasks_db",
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("TEXTFLOW_WORKERS_DB", "textflow_workers"),
        "USER": os.environ.get("PGUSER", "postgres"),
        "PASSWORD": os.environ.get("PGPASSWORD", ""),
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
    }
}

TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}

TEXTFLOW = {
    "BACKEND": "textflow_django.backends.textflow.TextFlowBackend",
    "API_KEY": EMULATOR_API_KEY,
    "BASE_URL": os.environ.get("TEXTFLOW_EMULATOR_URL", "http://127.0.0.1:8025/api"),
    "BULK_BATCH_SIZE": 500,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"textflow_django": {"handlers": ["console"], "level": "WARNING"}},
}
