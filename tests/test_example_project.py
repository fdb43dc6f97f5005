"""The example project's views, in the normal suite, and the example as a web server.

The example is its own Django project (its own settings, apps and models), so its tests
(``example_project/accounts/tests.py``, Django's test client against the TextFlow emulator)
cannot run inside this suite's ``tests.settings``. They run once, in a subprocess with the
example's settings and an in-memory database; each of them is reported here as a test of its
own, failing with the subprocess's failure text.

The rest runs the example as a person does: its dev server (:func:`run_example_site`, which
the browser test uses too) on its own SQLite file, hit by many requests at once.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from textflow_django.testing import TextFlowEmulator

EXAMPLE = Path(__file__).resolve().parent.parent / "example_project"
EXAMPLE_TESTS = EXAMPLE / "accounts" / "tests.py"


def _test_names() -> list[str]:
    tree = ast.parse(EXAMPLE_TESTS.read_text())
    return [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    ]


@dataclass(frozen=True)
class Outcome:
    name: str
    status: str  # "passed", "failed", "skipped"
    detail: str


@dataclass(frozen=True, repr=False)
class Run:
    outcomes: list[Outcome]
    output: str

    def __repr__(self) -> str:  # pytest prints fixtures in tracebacks: keep it short
        return f"<Run of {len(self.outcomes)} example tests>"


@pytest.fixture(scope="module")
def example_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    report = tmp_path_factory.mktemp("example") / "junit.xml"
    env = dict(os.environ)
    # The example's own settings, against the emulator: never a real TextFlow key, never
    # the settings module of this suite (which pytest-django put in the environment).
    env["DJANGO_SETTINGS_MODULE"] = "demo.settings"
    for name in ("TEXTFLOW_API_KEY", "TEXTFLOW_EMULATOR_URL", "DEMO_DATABASE"):
        env.pop(name, None)
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junitxml={report}",
            "-o",
            "junit_family=xunit2",
            str(EXAMPLE_TESTS.relative_to(EXAMPLE)),
        ],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = process.stdout + process.stderr
    if not report.exists():
        pytest.fail(f"the example's tests did not run (exit {process.returncode}):\n{output}")
    outcomes = []
    for case in ET.parse(report).getroot().iter("testcase"):  # noqa: S314 - pytest wrote it
        status, detail = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                status, detail = "failed", f"{child.get('message', '')}\n{child.text or ''}"
            elif child.tag == "skipped":
                status, detail = "skipped", child.get("message", "")
        outcomes.append(Outcome(case.get("name", ""), status, detail))
    return Run(outcomes, output)


def test_the_example_suite_ran_every_test(example_run: Run) -> None:
    ran = {o.name.partition("[")[0] for o in example_run.outcomes}
    assert ran == set(_test_names()), example_run.output
    assert not [o for o in example_run.outcomes if o.name == ""], example_run.output


@pytest.mark.parametrize("name", _test_names())
def test_example(example_run: Run, name: str) -> None:
    mine = [o for o in example_run.outcomes if o.name.partition("[")[0] == name]
    assert mine, f"{name} did not run:\n{example_run.output}"
    failed = [o for o in mine if o.status == "failed"]
    assert not failed, "\n\n".join(f"{o.name}:\n{o.detail}" for o in failed)
    if all(o.status == "skipped" for o in mine):
        pytest.skip(mine[0].detail)


# -- the example as a web server -----------------------------------------------------------


@dataclass(frozen=True)
class ExampleSite:
    url: str
    #: The environment the site runs in (its settings and database), for manage.py commands.
    env: dict[str, str]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def run_example_site(
    tmp: Path, emulator_url: str, env: Mapping[str, str] | None = None
) -> Iterator[ExampleSite]:
    """The example's dev server (threaded, as ``make demo`` runs it) on a free port, with its
    own SQLite file in ``tmp``, talking to the emulator at ``emulator_url``; stopped on exit.

    ``env`` adds to (or overrides) the server's environment, e.g. ``{"DJANGO_DEBUG": "0"}``.
    """
    site_env = dict(os.environ)
    site_env.update(
        DJANGO_SETTINGS_MODULE="demo.settings",  # not this suite's, which is in os.environ
        DEMO_DATABASE=str(tmp / "db.sqlite3"),
        TEXTFLOW_EMULATOR_URL=emulator_url,
        PYTHONUNBUFFERED="1",
    )
    site_env.pop("TEXTFLOW_API_KEY", None)  # the emulator, never TextFlow
    site_env.update(env or {})
    manage = [sys.executable, "manage.py"]
    subprocess.run(
        [*manage, "migrate", "--noinput", "--verbosity", "0"],
        cwd=EXAMPLE,
        env=site_env,
        check=True,
        timeout=120,
    )
    port = _free_port()
    log_path = tmp / "runserver.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [*manage, "runserver", "--noreload", f"127.0.0.1:{port}"],
            cwd=EXAMPLE,
            env=site_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if server.poll() is not None:
                pytest.fail(f"the example's server exited:\n{log_path.read_text()}")
            try:
                urllib.request.urlopen(url + "/", timeout=1).close()  # noqa: S310 - loopback
                break
            except urllib.error.HTTPError:
                break  # it answers (a 4xx/5xx is for the test to judge)
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("the example's server did not answer in 30 s")
                time.sleep(0.1)
        yield ExampleSite(url, site_env)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@dataclass(frozen=True)
class Answer:
    status: int
    body: str

    def json(self) -> Any:
        return json.loads(self.body)


def _post_json(url: str, data: Mapping[str, str]) -> Answer:
    request = urllib.request.Request(  # noqa: S310 - loopback
        url,
        data=json.dumps(data).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - loopback
            return Answer(response.status, response.read().decode())
    except urllib.error.HTTPError as err:
        return Answer(err.code, err.read().decode(errors="replace"))
    except OSError as err:  # the dev server drops the connection after some of its 500s
        return Answer(0, f"no answer: {err!r}")


def _all_at_once(url: str, bodies: list[dict[str, str]]) -> list[Answer]:
    """POST every body to ``url``, each from its own thread, released together."""
    start = threading.Barrier(len(bodies))

    def one(data: dict[str, str]) -> Answer:
        start.wait(timeout=30)
        return _post_json(url, data)

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(one, bodies))


def _server_errors(answers: list[Answer]) -> list[str]:
    """The answers that are server errors (or none at all), for an assertion message: a
    debug page by its title ("OperationalError at /api/signup/")."""
    errors = []
    for answer in answers:
        if not 200 <= answer.status < 500:
            title = re.search(r"<title>\s*(.*?)\s*</title>", answer.body, re.DOTALL)
            errors.append(f"{answer.status}: {title.group(1) if title else answer.body[:300]}")
    return errors


@pytest.mark.slow
def test_the_example_on_sqlite_answers_many_requests_at_once(tmp_path: Path) -> None:
    """The demo on its default SQLite, as a web server: 30 verify-codes, then 10 signups, each
    batch sent at once, are all answered (200/400, then 201), none with a 500 "database is
    locked" (seen before SQLite was set up for it: 10 of 30, and 9 of 10), nor a connection
    reset (seen when runserver's listen queue was Django's 10)."""
    numbers = [f"+1202555{n:04d}" for n in range(160, 170)]
    with TextFlowEmulator() as emulator, run_example_site(tmp_path, emulator.url) as site:
        sent = [
            _post_json(f"{site.url}/api/phone/send-code/", {"phone_number": n}) for n in numbers
        ]
        assert [a.status for a in sent] == [200] * len(numbers), [a.body for a in sent]
        handles = {n: a.json()["verification_id"] for n, a in zip(numbers, sent, strict=True)}
        codes = {m.phone_number: m.text.rsplit(" ", 1)[-1] for m in emulator.messages}

        # Per number: the right code and two wrong ones (a wrong guess is a write too).
        checks = []
        for number in numbers:
            right = codes[number]
            for guess in (right, *(f"{(int(right) + d) % 10**6:06d}" for d in (1, 2))):
                checks.append(
                    {"phone_number": number, "code": guess, "verification_id": handles[number]}
                )
        answers = _all_at_once(f"{site.url}/api/phone/verify-code/", checks)
        assert not _server_errors(answers), _server_errors(answers)
        tokens = [a.json()["token"] for a in answers if a.status == 200]
        assert len(tokens) == len(numbers), [a.body for a in answers]
        assert sorted({a.status for a in answers}) == [200, 400]

        signups = [
            {"username": f"user{i}", "password": "correct-horse-battery-9", "token": token}
            for i, token in enumerate(tokens)
        ]
        answers = _all_at_once(f"{site.url}/api/signup/", signups)
        assert not _server_errors(answers), _server_errors(answers)
        assert [a.status for a in answers] == [201] * len(signups), [a.body for a in answers]
    # Readers do not wait for writers: the file is in WAL mode (kept in the file itself).
    with contextlib.closing(sqlite3.connect(tmp_path / "db.sqlite3")) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
