"""Shared fixtures. The package's own pytest plugin (textflow_django.testing.pytest_plugin)
is loaded through its ``pytest11`` entry point, exactly as in a user's project."""

from __future__ import annotations

import os
import re

import pytest

from textflow_django.client import TextFlowClient
from textflow_django.testing import EMULATOR_API_KEY, TextFlowEmulator


@pytest.fixture(autouse=True)
def _fresh_process_memory() -> None:
    """Every test starts with no country known to the Fraud Guard's process memory: the
    store of one test is not the next one's."""
    from textflow_django import fraud

    fraud.forget()


@pytest.fixture
def client_for(textflow_emulator: TextFlowEmulator):  # type: ignore[no-untyped-def]
    """Build TextFlowClients against the emulator; closes them afterwards."""
    made: list[TextFlowClient] = []

    def make(**kwargs: object) -> TextFlowClient:
        kwargs.setdefault("base_url", textflow_emulator.url)
        kwargs.setdefault("timeout", 5.0)
        api_key = kwargs.pop("api_key", EMULATOR_API_KEY)
        client = TextFlowClient(api_key, **kwargs)  # type: ignore[arg-type]
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def tf_client(client_for):  # type: ignore[no-untyped-def]
    return client_for()


REQUIRES_SERVICES = os.environ.get("TEXTFLOW_REQUIRE_SERVICES") == "1"


def pytest_configure(config):  # type: ignore[no-untyped-def]
    """CI (TEXTFLOW_REQUIRE_SERVICES=1) must prove the PostgreSQL and Redis paths: refuse to
    run at all, rather than skip those tests, when either is not configured."""
    if REQUIRES_SERVICES and (
        os.environ.get("TEST_DATABASE") != "postgres" or not os.environ.get("REDIS_URL")
    ):
        raise pytest.UsageError(
            "TEXTFLOW_REQUIRE_SERVICES=1 needs TEST_DATABASE=postgres and REDIS_URL"
        )


requires_postgres = pytest.mark.skipif(
    os.environ.get("TEST_DATABASE") != "postgres",
    reason="needs PostgreSQL (TEST_DATABASE=postgres; .ci/run starts one)",
)


def pytest_collection_modifyitems(config, items):  # type: ignore[no-untyped-def]
    """CI's SQLite leg (TEXTFLOW_SQLITE_LEG=1) reruns files the PostgreSQL leg ran whole: it
    deselects their PostgreSQL-only tests, so that any skip left there is a real one."""
    if os.environ.get("TEXTFLOW_SQLITE_LEG") != "1":
        return
    postgres_only = [
        item
        for item in items
        if any(
            str(mark.kwargs.get("reason", "")).startswith("needs PostgreSQL")
            for mark in item.iter_markers("skipif")
        )
    ]
    if postgres_only:
        config.hook.pytest_deselected(items=postgres_only)
        items[:] = [item for item in items if item not in postgres_only]


requires_redis = pytest.mark.skipif(
    not os.environ.get("REDIS_URL"), reason="needs Redis (REDIS_URL; .ci/run starts one)"
)


@pytest.fixture
def no_secrets_in_logs(request, caplog):  # type: ignore[no-untyped-def]
    """Capture every log record of the test (DEBUG and up, every logger) and fail if any
    contains the API key or a verification code the test's SMS carried, whether they went
    out through the locmem backend or through the emulator (the real HTTP path)."""
    import logging

    from textflow_django.backends import locmem

    # Set up before the test's own fixtures, so the emulator's records outlive the test.
    emulator = (
        request.getfixturevalue("textflow_emulator")
        if "textflow_emulator" in request.fixturenames
        else None
    )
    caplog.set_level(logging.DEBUG)
    codes: set[str] = set()
    yield codes  # tests may add codes they know about
    texts = [m.text for m in locmem.outbox]
    texts += [m.text for m in emulator.messages] if emulator is not None else []
    codes.update(m.code for m in locmem.outbox if m.code)
    # A code SMS ends with its code (TextFlow's and "local" mode's texts alike).
    codes.update(found[0] for text in texts if (found := re.findall(r"(\d{4,10})$", text)))
    # Every phase's records: at teardown, caplog.records holds the teardown's alone.
    records = [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records]
    texts = []
    for record in records:
        texts.append(record.getMessage())
        if record.exc_info and record.exc_info[1] is not None:
            texts.append(repr(record.exc_info[1]))
    for text in texts:
        assert EMULATOR_API_KEY not in text
        for code in codes:
            assert not re.search(rf"(?<!\d){re.escape(code)}(?!\d)", text), (
                "a code reached the logs"
            )


def race(target, n: int = 20) -> list:  # type: ignore[no-untyped-def, type-arg]
    """Run ``target`` in ``n`` threads released at the same instant; return each result or
    the exception it raised. Each thread closes its database connection."""
    import threading

    from django.db import connection

    results: list = [None] * n  # type: ignore[type-arg]
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = target()
        except Exception as err:  # noqa: BLE001 - collected and asserted on
            results[i] = err
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def tf(settings, **overrides):  # type: ignore[no-untyped-def]
    """Merge ``overrides`` into ``settings.TEXTFLOW`` through pytest-django's fixture."""
    settings.TEXTFLOW = {**settings.TEXTFLOW, **overrides}


class BrokenCache:
    """A Django cache whose every call fails, as a cache server that went away would."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def close(self, **kwargs: object) -> None:  # Django closes caches between requests
        pass

    def __getattr__(self, name: str):
        def fail(*args: object, **kwargs: object):
            raise ConnectionError("cache server went away")

        return fail


@pytest.fixture
def finished_signals():  # type: ignore[no-untyped-def]
    """The pk of every job ``bulk_job_finished`` announces, in order (the bulk tests')."""
    from textflow_django import signals

    finished: list[int] = []
    signals.bulk_job_finished.connect(
        lambda sender, job, **kw: finished.append(job.pk), weak=False, dispatch_uid="finished"
    )
    yield finished
    signals.bulk_job_finished.disconnect(dispatch_uid="finished")
