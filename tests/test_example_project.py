"""The example project's views, in the normal suite.

The example is its own Django project (its own settings, apps and models), so its tests
(``example_project/accounts/tests.py``, Django's test client against the TextFlow emulator)
cannot run inside this suite's ``tests.settings``. They run once, in a subprocess with the
example's settings and an in-memory database; each of them is reported here as a test of its
own, failing with the subprocess's failure text.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

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
