"""pytest fixtures for projects using textflow-django (registered through ``pytest11``).

- ``textflow_emulator``: a running :class:`TextFlowEmulator`, reset for each test; its bulk
  jobs wait for ``deliver_bulk()`` (``bulk_rate=0``) unless the test sets a rate.
- ``textflow_live``: ``settings.TEXTFLOW`` pointed at that emulator with the real TextFlow
  backend, so the whole HTTP path runs; yields the emulator.
- ``sms_outbox``: the locmem backend switched on; yields its (empty) outbox.

The locmem outbox is also emptied before every test, used or not, like ``mail.outbox``.
Nothing here touches Django until a fixture that needs it is requested.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest

from ._emulator import EMULATOR_API_KEY, TextFlowEmulator

if TYPE_CHECKING:
    from ..backends._emulated import SMSMessage

_LOCMEM = "textflow_django.backends.locmem"


def _reset_breakers() -> None:
    """Forget what the process remembers between requests: the circuit breakers, and the
    Fraud Guard's memory of which countries are known (a test's store is not the last's)."""
    backend = sys.modules.get("textflow_django.backends.textflow")
    if backend is not None:
        backend.reset_breakers()
    fraud = sys.modules.get("textflow_django.fraud")
    if fraud is not None:
        fraud.forget()


@pytest.fixture(scope="session")
def textflow_emulator_server() -> Iterator[TextFlowEmulator]:
    """One emulator for the whole session (tests get it reset via ``textflow_emulator``).

    Its bulk jobs do not drain by themselves (``bulk_rate=0``), so a test reads the exact
    count it left: ``deliver_bulk()`` delivers, or set ``bulk_rate`` and ``advance_clock()``
    (``reset()`` puts the rate back to 0 for the next test)."""
    with TextFlowEmulator(bulk_rate=0) as emulator:
        yield emulator


@pytest.fixture
def textflow_emulator(textflow_emulator_server: TextFlowEmulator) -> Iterator[TextFlowEmulator]:
    """The session's emulator, with its records, codes, faults and delay cleared, and the
    process's circuit breakers closed (one test's outage must not fail the next fast)."""
    _reset_breakers()
    textflow_emulator_server.reset()
    textflow_emulator_server.delay = 0.0
    yield textflow_emulator_server
    _reset_breakers()
    textflow_emulator_server.reset()
    textflow_emulator_server.delay = 0.0


@contextmanager
def _textflow_settings(request: pytest.FixtureRequest, **overrides: Any) -> Iterator[None]:
    """Merge ``overrides`` into ``settings.TEXTFLOW`` for the test.

    With pytest-django, this goes through its ``settings`` fixture, so a test that also
    changes settings through that fixture unwinds both in the right order (two separate
    override stacks undone out of order would leak settings into later tests).
    """
    from django.conf import settings as django_settings
    from django.test import override_settings

    current = getattr(django_settings, "TEXTFLOW", None)
    merged = dict(current) if isinstance(current, dict) else {}
    merged.update(overrides)
    try:
        settings_fixture = request.getfixturevalue("settings")
    except pytest.FixtureLookupError:
        with override_settings(TEXTFLOW=merged):
            yield
    else:
        settings_fixture.TEXTFLOW = merged
        yield


@pytest.fixture
def textflow_live(
    request: pytest.FixtureRequest, textflow_emulator: TextFlowEmulator
) -> Iterator[TextFlowEmulator]:
    """Point ``TEXTFLOW`` at the emulator through the real TextFlow backend."""
    with _textflow_settings(
        request,
        BACKEND="textflow_django.backends.textflow.TextFlowBackend",
        API_KEY=EMULATOR_API_KEY,
        BASE_URL=textflow_emulator.url,
    ):
        yield textflow_emulator


@pytest.fixture
def sms_outbox(request: pytest.FixtureRequest) -> Iterator[list[SMSMessage]]:
    """Use the locmem backend for this test and return its outbox."""
    from ..backends import locmem

    locmem.reset()
    with _textflow_settings(request, BACKEND="textflow_django.backends.locmem.LocMemBackend"):
        yield locmem.outbox


@pytest.fixture(autouse=True)
def _textflow_clear_outbox() -> None:
    # Only if the project's code has loaded the locmem backend: importing it here would
    # drag Django into every test session that merely has this package installed.
    locmem = sys.modules.get(_LOCMEM)
    if locmem is not None:
        locmem.reset()
