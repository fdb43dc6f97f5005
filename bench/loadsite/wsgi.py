"""WSGI entry point of the load-benchmark site (``gunicorn bench.loadsite.wsgi``)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.loadsite.settings")

application = get_wsgi_application()
