"""WSGI entry point of the load-benchmark site (``gunicorn bench.loadsite.wsgi``).

The example project's receiver of ``phone_verified`` (``accounts.receivers``: a
``VerifiedNumber`` row per verification, for a signup to claim) is disconnected: it is the
project's own work, which the peer's verify does not do, so measuring it would charge the
app for the example's signup flow.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.loadsite.settings")

application = get_wsgi_application()

from textflow_django.signals import phone_verified  # noqa: E402  (after setup)

phone_verified.disconnect(dispatch_uid="accounts.record_verified_number")
