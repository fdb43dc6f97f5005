"""The README's Quick start, followed as a newcomer follows it, from the README's own text.

Nothing of the Quick start is copied here: the snippets, the commands and the requests are
read from README.md's "Try it without an account" and "Go live with TextFlow" sections each
run, so a change to the README is a change to what this test does.

- Each ``python`` block whose first line is ``# mysite/<file>: at the end`` is appended to
  that file of a project made by ``django-admin startproject mysite``.
- The ``sh`` block of commands is run: the emulator in the background (on a free port in
  place of the README's 8025), ``migrate``, and ``runserver`` (on a free port in place of
  8000, without the auto-reloader).
- Each ``curl`` of the requests block is made with ``requests``, and its answer compared with
  the ``# <status> <json>`` comment under it: the status, the keys, and every value shown,
  except ``"..."`` placeholders and example values the README reuses in a later request
  (the verification id, the code), which take the value the site really answered.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
#: The ports the README's commands and snippets name (the emulator's, the dev server's).
README_EMULATOR_PORT = "8025"
README_SITE_PORT = "8000"

pytestmark = pytest.mark.timeout(180)


def section(title: str) -> str:
    """The text of the README's ``### <title>`` section, up to the next heading."""
    match = re.search(rf"^### {re.escape(title)}\n(.*?)(?=^#{{2,3}} )", README, re.M | re.S)
    assert match, f"README.md has no '### {title}' section"
    return match.group(1)


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.M | re.S)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ports(text: str, site: int, emulator: int) -> str:
    """``text`` with the README's ports replaced by this run's free ones."""
    text = re.sub(rf"\b{README_EMULATOR_PORT}\b", str(emulator), text)
    return re.sub(rf"\b{README_SITE_PORT}\b", str(site), text)


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "TEXTFLOW_"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _argv(command: str) -> list[str]:
    """A README command line as argv, run with this interpreter (the venv's)."""
    words = shlex.split(command, comments=True)
    assert words[0] == "python", f"the Quick start runs commands with python: {command!r}"
    return [sys.executable, *words[1:]]


class Output:
    """A background process's output, read as it comes by a thread."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.process = process
        self._reader = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._reader.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.append(line)

    def wait_for(self, text: str, seconds: float = 60) -> None:
        """Until ``text`` is in the output; fails if the process stops or time runs out."""
        deadline = time.monotonic() + seconds
        while text not in "".join(self.lines):
            stopped = self.process.poll() is not None
            assert not stopped, f"{self.process.args!r} stopped:\n{''.join(self.lines)}"
            assert time.monotonic() < deadline, f"no {text!r} in {seconds} s: {self.lines}"
            time.sleep(0.05)


@contextmanager
def background(argv: list[str], cwd: Path, ready: str) -> Iterator[Output]:
    """Run ``argv`` until the block ends, once ``ready`` is in its output."""
    process = subprocess.Popen(
        argv,
        cwd=cwd,
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output = Output(process)
    try:
        output.wait_for(ready)
        yield output
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have stopped by itself
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=_environment(), capture_output=True, text=True, timeout=120
    )


def startproject(tmp_path: Path) -> Path:
    done = _run([sys.executable, "-m", "django", "startproject", "mysite", str(tmp_path)], ROOT)
    assert done.returncode == 0, done.stderr
    return tmp_path


def apply_snippets(project: Path, text: str) -> list[str]:
    """Append each ``# mysite/<file>: at the end`` snippet of ``text`` to its file."""
    applied = []
    for block in blocks(text, "python"):
        first = block.splitlines()[0]
        match = re.fullmatch(r"# (mysite/[\w/]+\.py): at the end", first)
        if match is None:
            continue
        target = project / match.group(1)
        assert target.exists(), f"the README names {match.group(1)}, which startproject lacks"
        target.write_text(target.read_text() + "\n\n" + block)
        applied.append(match.group(1))
    return applied


def curl_requests(text: str) -> list[tuple[list[str], int, dict[str, Any]]]:
    """Each ``curl`` command of ``text`` (continuation lines joined) with the status and
    JSON of the ``# <status> <json>`` comment that follows it."""
    found = []
    for block in blocks(text, "sh"):
        joined = block.replace("\\\n", " ")
        lines = joined.splitlines()
        for i, line in enumerate(lines):
            if not line.startswith("curl "):
                continue
            answer = re.fullmatch(r"# (\d{3}) (\{.*\})", lines[i + 1].strip())
            assert answer, f"no '# <status> <json>' answer under {line!r}"
            found.append((shlex.split(line), int(answer.group(1)), json.loads(answer.group(2))))
    return found


def _parse_curl(words: list[str]) -> tuple[str, str, dict[str, str], str | None]:
    method, url, headers, data = "GET", "", {}, None
    rest = iter(words[1:])
    for word in rest:
        if word == "-X":
            method = next(rest)
        elif word == "-H":
            name, _, value = next(rest).partition(":")
            headers[name.strip()] = value.strip()
        elif word == "-d":
            data = next(rest)
            method = "POST" if method == "GET" else method
        elif word == "-s":
            continue
        else:
            assert not word.startswith("-"), f"the test does not know curl's {word}"
            url = word
    return method, "http://" + url.replace("localhost", "127.0.0.1", 1), headers, data


def _reused_examples(answers: list[dict[str, Any]], requests_text: list[str]) -> dict[str, str]:
    """Example values an answer shows that a later request carries: each maps to the key
    it was shown under (its real value is taken from the real answer)."""
    reused = {}
    for i, answer in enumerate(answers):
        for key, value in answer.items():
            if isinstance(value, str) and any(
                json.dumps(value) in later for later in requests_text[i + 1 :]
            ):
                reused[value] = key
    return reused


def test_the_quick_start_runs_as_written(tmp_path: Path) -> None:
    site_port, emulator_port = _free_port(), _free_port()
    text = _ports(section("Try it without an account"), site_port, emulator_port)
    project = startproject(tmp_path)
    assert apply_snippets(project, text) == ["mysite/settings.py", "mysite/urls.py"]

    [commands] = [b for b in blocks(text, "sh") if "manage.py" in b]
    commands_run = [c for c in commands.splitlines() if c.strip()]
    emulator_command, *manage_commands = commands_run
    assert "textflow_django.testing" in emulator_command
    argv = _argv(emulator_command)
    if "--port" not in argv:  # the README's default (8025) is this run's free port
        argv += ["--port", str(emulator_port)]
    with background(argv, project, "listening on") as emulator:
        for command in manage_commands:
            if "runserver" in command:
                continue
            done = _run(_argv(command), project)
            assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
            assert "Traceback" not in done.stdout + done.stderr
        [runserver] = [c for c in manage_commands if "runserver" in c]
        server_argv = [*_argv(runserver), "--noreload", f"127.0.0.1:{site_port}"]
        with background(server_argv, project, "Quit the server with"):
            calls = curl_requests(text)
            bodies = [" ".join(words) for words, _, _ in calls]
            reused = _reused_examples([shown for _, _, shown in calls], bodies)
            assert reused, "the README's requests reuse nothing an answer showed"
            real: dict[str, Any] = {}
            for words, status, shown in calls:
                method, url, headers, data = _parse_curl(words)
                if data is not None:
                    for example, key in reused.items():
                        if json.dumps(example) in data:
                            data = data.replace(json.dumps(example), json.dumps(real[key]))
                response = requests.request(method, url, headers=headers, data=data, timeout=30)
                assert response.status_code == status, (url, response.text)
                answer = response.json()
                assert set(answer) == set(shown), (url, answer)
                for key, value in shown.items():
                    if value == "..." or value in reused:
                        continue
                    assert answer[key] == value, (url, key, answer)
                real.update(answer)
        # The last answer verified the number with the code the emulator really received.
        assert real["verified"] is True and real["token"]
        # --print-messages printed that SMS, code included, in the emulator's terminal.
        emulator.wait_for(real["code"])


def test_going_live_without_the_key_is_a_check_error_not_a_traceback(tmp_path: Path) -> None:
    project = startproject(tmp_path)
    text = section("Try it without an account")
    apply_snippets(project, text)
    live_blocks = blocks(section("Go live with TextFlow"), "python")
    [live] = [b for b in live_blocks if b.startswith("# mysite/settings.py\n")]
    settings = project / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + "\n\n" + live)
    done = _run([sys.executable, "manage.py", "migrate"], project)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "textflow.E002" in output and "KeyError" not in output
    assert "Traceback" not in output
