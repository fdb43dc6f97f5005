"""TEMPORARY (phone/fields work): tests.settings plus tests.testapp. Delete when the lead adds it."""

from tests.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "tests.testapp"]  # noqa: F405
