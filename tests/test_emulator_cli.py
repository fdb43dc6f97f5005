"""The emulator as a process: ``python -m textflow_django.testing`` and the ``main()`` behind it.

Two kinds of test. The subprocess ones check what only a real process shows: the one line on
stdout, the exit code after SIGTERM, a key that is never printed. The in-process ones call
``main()`` in the test's own (main) thread, since only the main thread may install signal
handlers, while a helper thread plays the client over loopback and then signals the main
thread as Ctrl-C or ``kill`` would; so each option's effect is asserted (and measured by
``coverage run``, which does not follow subprocesses). No Django here.
"""

from __future__ import annotations

import io
import os
import re
import runpy
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from textflow_django.testing import __main__ as cli
from textflow_django.testing._emulator import EMULATOR_API_KEY, TextFlowEmulator

NUMBER = "+381690156360"
SMS = {"phone_number": NUMBER, "text": "x"}
AUTH = {"Authorization": f"Bearer {EMULATOR_API_KEY}"}
LINE_RE = r"TextFlow emulator listening on ({scheme}://127\.0\.0\.1:\d+/api)\n"


# -- helpers ------------------------------------------------------------------------------


class _LineSink(io.StringIO):
    """A stand-in for ``sys.stdout`` that says when a whole line has been written."""

    def __init__(self) -> None:
        super().__init__()
        self.line_written = threading.Event()

    def write(self, text: str) -> int:
        written = super().write(text)
        if "\n" in text:
            self.line_written.set()
        return written


@pytest.fixture
def restore_signals() -> Iterator[None]:
    """``main()`` installs SIGINT/SIGTERM handlers for good; put pytest's back afterwards."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[TextFlowEmulator]:
    """The emulators ``main()`` builds, so a test can also look at them through the Python API."""
    built: list[TextFlowEmulator] = []

    class Recorded(TextFlowEmulator):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            built.append(self)

    monkeypatch.setattr(cli, "TextFlowEmulator", Recorded)
    return built


def run_main(
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    client: Callable[[str], None],
    *,
    scheme: str = "http",
    stop: signal.Signals = signal.SIGINT,
) -> tuple[int, str]:
    """Run ``main(argv)`` here; once it prints its URL, run ``client(url)`` in a helper thread,
    then send ``stop`` to this (the main) thread. Returns main's exit code and its stdout.

    The signal is sent whatever ``client`` does, so a failing client cannot leave ``main()``
    serving forever; the client's failure is raised here after ``main()`` returns.
    """
    sink = _LineSink()
    monkeypatch.setattr(sys, "stdout", sink)
    main_thread = threading.main_thread().ident
    assert main_thread is not None
    failures: list[BaseException] = []
    returned = threading.Event()

    def play() -> None:
        try:
            # Wakes when the line is written or when main() returns without writing it.
            for _ in range(100):
                if sink.line_written.wait(0.1) or returned.is_set():
                    break
            if not sink.line_written.is_set():
                return  # main() gave up (or never printed): nothing to talk to
            match = re.fullmatch(LINE_RE.format(scheme=scheme), sink.getvalue())
            assert match, sink.getvalue()
            client(match.group(1))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            failures.append(exc)
        finally:
            if not returned.is_set():
                signal.pthread_kill(main_thread, stop)

    helper = threading.Thread(target=play, name="cli-client", daemon=True)
    helper.start()
    try:
        code = cli.main(argv)
    finally:
        returned.set()
        helper.join(10)
    assert not helper.is_alive(), "the client thread did not finish within 10 s"
    if failures:
        raise failures[0]
    return code, sink.getvalue()


def control(url: str, path: str) -> Any:
    r = requests.get(url.removesuffix("/api") + "/_emulator" + path, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def _write_cert(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a 127.0.0.1 certificate: (cert.pem, key.pem, ca.pem)."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    paths = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(paths[0]))
    cert.private_key_pem.write_to_path(str(paths[1]))
    ca.cert_pem.write_to_path(str(paths[2]))
    return paths


# -- main(), in process -------------------------------------------------------------------


def test_main_passes_every_option_to_the_emulator(
    monkeypatch: pytest.MonkeyPatch, restore_signals: None, made: list[TextFlowEmulator]
) -> None:
    key = "k" * 64
    argv = ["--port", "0", "--api-key", key, "--code-length", "6", "--credits", "1",
            "--price", "0.25", "--delay", "0.01", "--no-record-messages",
            "--no-record-requests"]  # fmt: skip
    seen: dict[str, Any] = {}

    def client(url: str) -> None:
        with requests.Session() as api:
            # --api-key: the built-in key is refused, the given one accepted.
            r = api.get(url + "/balance", headers=AUTH, timeout=5)
            assert (r.status_code, r.json()["message"]) == (404, "API key not found")
            api.headers["Authorization"] = f"Bearer {key}"
            assert api.get(url + "/balance", timeout=5).json()["credits"] == "1.00000"
            # --code-length 6 and --price 0.25, taken from --credits 1.
            data = api.post(url + "/send-code", json={"phone_number": NUMBER}, timeout=5).json()
            assert re.fullmatch(r"[0-9]{6}", data["data"]["verification_code"])
            sms = api.post(url + "/send-sms", json=SMS, timeout=5).json()
            assert sms["data"]["price"] == 0.25
            assert api.get(url + "/balance", timeout=5).json()["credits"] == "0.50000"
        # --no-record-messages: counted, not kept.
        seen["messages"] = control(url, "/messages")
        seen["requests"] = control(url, "/requests")

    code, out = run_main(monkeypatch, argv, client)
    assert code == 0
    assert seen["messages"] == {"messages": [], "total": 2}
    assert seen["requests"]["total"] == 5
    (emulator,) = made
    assert emulator.delay == 0.01  # --delay
    assert emulator.requests == [] and emulator.request_counts["/balance"] == 3  # not kept
    assert out == f"TextFlow emulator listening on {emulator.url}\n"  # one line, no key
    assert key not in out


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_main_stops_cleanly_on_ctrl_c_and_sigterm(
    monkeypatch: pytest.MonkeyPatch,
    restore_signals: None,
    made: list[TextFlowEmulator],
    stop: signal.Signals,
) -> None:
    def client(url: str) -> None:
        r = requests.post(url + "/send-sms", json=SMS, headers=AUTH, timeout=5)
        assert r.status_code == 200 and r.json()["data"]["to"] == NUMBER

    code, _ = run_main(monkeypatch, ["--port", "0"], client, stop=stop)
    assert code == 0
    (emulator,) = made
    assert emulator.message_count == 1
    # Stopped: the port no longer accepts connections.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", emulator.port), timeout=5).close()


def test_main_keeps_serving_when_its_backstop_wait_times_out(
    monkeypatch: pytest.MonkeyPatch, restore_signals: None, made: list[TextFlowEmulator]
) -> None:
    """main() waits for the stop signal with a timeout (a backstop); a timeout is no stop.

    The wait's first three calls time out at once here instead of after a second each.
    """
    timeouts = threading.Semaphore(3)
    timed_out = threading.Event()

    class BackstopEvent(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            if timeouts.acquire(blocking=False):
                return False
            timed_out.set()
            return super().wait(timeout)

    # Only main()'s own Event: the server and the helpers keep the real one.
    monkeypatch.setattr(cli, "threading", types.SimpleNamespace(Event=BackstopEvent))

    def client(url: str) -> None:
        assert timed_out.wait(10), "main() did not wait again after its timeouts"
        r = requests.post(url + "/send-sms", json=SMS, headers=AUTH, timeout=5)
        assert r.status_code == 200

    code, _ = run_main(monkeypatch, ["--port", "0"], client)
    assert code == 0
    (emulator,) = made
    assert emulator.message_count == 1


@pytest.mark.parametrize("key_in_certfile", [False, True], ids=["keyfile", "key-in-certfile"])
def test_main_serves_https(
    monkeypatch: pytest.MonkeyPatch,
    restore_signals: None,
    tmp_path: Path,
    key_in_certfile: bool,
) -> None:
    cert, key, ca = _write_cert(tmp_path)
    if key_in_certfile:
        # "--keyfile, unless it holds the key": one PEM with the chain and the key.
        both = tmp_path / "both.pem"
        both.write_bytes(cert.read_bytes() + key.read_bytes())
        argv = ["--port", "0", "--certfile", str(both)]
    else:
        argv = ["--port", "0", "--certfile", str(cert), "--keyfile", str(key)]

    def client(url: str) -> None:
        r = requests.post(url + "/send-sms", json=SMS, headers=AUTH, timeout=5, verify=str(ca))
        assert r.status_code == 200 and r.json()["data"]["to"] == NUMBER
        with pytest.raises(requests.exceptions.SSLError):  # not a publicly trusted certificate
            requests.get(url + "/balance", headers=AUTH, timeout=5, verify=True)

    code, _ = run_main(monkeypatch, argv, client, scheme="https")
    assert code == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--code-length", "0"], "code_length must be between 1 and 18"),
        (["--code-length", "19"], "code_length must be between 1 and 18"),
        (["--delay", "-1"], "delay must not be negative"),
        (["--price", "-0.01"], "price must not be negative"),
        (["--bulk-rate", "-1"], "bulk_rate must be a finite number >= 0"),
        (["--bulk-rate", "inf"], "bulk_rate must be a finite number >= 0"),
        (["--keyfile", "key.pem"], "--keyfile needs --certfile"),
        (["--certfile", "missing.pem"], "No such file or directory"),
    ],
)
def test_main_refuses_bad_options_with_exit_1(
    restore_signals: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--port", "0", *argv]) == 1
    out, err = capsys.readouterr()
    assert out == ""  # no URL line: a parent reading it sees the process end instead
    assert err.startswith("textflow emulator: ") and message in err


def test_main_refuses_a_certfile_that_is_no_certificate(
    restore_signals: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate\n")
    assert cli.main(["--port", "0", "--certfile", str(bogus)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("textflow emulator: ")
    # ssl.SSLError is an OSError: the same "cannot start" exit, not a traceback.
    assert "Traceback" not in err


def test_main_exits_1_when_the_port_is_taken(
    restore_signals: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.main(["--port", str(port)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("textflow emulator: ") and "in use" in err


def test_python_m_exits_with_mains_code(
    restore_signals: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Run the module as ``python -m`` runs it (run_name "__main__"), afresh: a copy imported
    # by another test would make runpy warn.
    monkeypatch.delitem(sys.modules, "textflow_django.testing.__main__", raising=False)
    # pytest's assertion rewriter claims the package's modules (it is a pytest11 plugin's
    # distribution) but cannot hand runpy their code: let the ordinary finder load it.
    finders = [f for f in sys.meta_path if type(f).__name__ != "AssertionRewritingHook"]
    monkeypatch.setattr(sys, "meta_path", finders)
    monkeypatch.setattr(sys, "argv", ["textflow_django.testing", "--code-length", "0"])
    with pytest.raises(SystemExit) as exited:
        runpy.run_module("textflow_django.testing", run_name="__main__", alter_sys=True)
    assert exited.value.code == 1
    assert "code_length must be between 1 and 18" in capsys.readouterr().err


def test_main_bulk_rate_drains_jobs_by_itself_and_defaults_to_five(
    monkeypatch: pytest.MonkeyPatch, restore_signals: None, made: list[TextFlowEmulator]
) -> None:
    seen: dict[str, Any] = {}

    def client(url: str) -> None:
        (emulator,) = made
        numbers = [f"+1202555{i:04d}" for i in range(10)]
        r = requests.post(
            url + "/bulk-sms", json={"phone_numbers": numbers, "text": "x"}, headers=AUTH, timeout=5
        )
        assert r.ok
        emulator.advance_clock(4)  # 4 s at --bulk-rate 2: 8 of the 10 reached
        seen["state"] = control(url, "/state")

    code, _ = run_main(monkeypatch, ["--port", "0", "--bulk-rate", "2"], client)
    assert code == 0
    assert (seen["state"]["bulk_pending"], seen["state"]["bulk_rate"]) == (2, 2.0)
    assert cli._parser().parse_args([]).bulk_rate == 5.0  # 10 recipients in 2 s


def test_main_print_messages_prints_each_sms_on_one_line(
    monkeypatch: pytest.MonkeyPatch, restore_signals: None, made: list[TextFlowEmulator]
) -> None:
    def client(url: str) -> None:
        with requests.Session() as api:
            api.headers.update(AUTH)
            code = api.post(
                url + "/send-code",
                json={"phone_number": NUMBER, "service_name": "Acme"},
                timeout=5,
            ).json()["data"]["verification_code"]
            seen["code"] = code
            api.post(url + "/send-sms", json={"phone_number": NUMBER, "text": "a\nb\r"}, timeout=5)
            api.post(
                url + "/bulk-sms",
                json={"phone_numbers": ["+447700900123", NUMBER], "text": "Sale"},
                timeout=5,
            )
            api.post(url + "/send-sms", json={"phone_number": "bad", "text": "x"}, timeout=5)

    seen: dict[str, str] = {}
    code, out = run_main(monkeypatch, ["--port", "0", "--print-messages"], client)
    assert code == 0
    (emulator,) = made
    assert out.splitlines() == [
        f"TextFlow emulator listening on {emulator.url}",
        f"SMS to {NUMBER}: Your verification code for Acme is: {seen['code']}",
        f"SMS to {NUMBER}: a\\nb\\r",  # one SMS, one line, whatever its text holds
        "Bulk SMS to +447700900123: Sale",
        f"Bulk SMS to {NUMBER}: Sale",
    ]
    assert EMULATOR_API_KEY not in out


def test_main_prints_no_messages_unless_asked(
    monkeypatch: pytest.MonkeyPatch, restore_signals: None, made: list[TextFlowEmulator]
) -> None:
    def client(url: str) -> None:
        assert requests.post(url + "/send-sms", json=SMS, headers=AUTH, timeout=5).ok

    code, out = run_main(monkeypatch, ["--port", "0"], client)
    assert code == 0 and len(out.splitlines()) == 1


# -- python -m textflow_django.testing, a real process -----------------------------------


def _listening_url(proc: subprocess.Popen[bytes], scheme: str) -> str:
    """The URL from the one line ``python -m textflow_django.testing`` prints on start."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 10)
    assert ready, "the emulator printed nothing within 10 s"
    line = proc.stdout.readline().decode()
    match = re.fullmatch(LINE_RE.format(scheme=scheme), line)
    assert match, line
    return match.group(1)


def test_main_subprocess_serves_and_exits_cleanly_on_sigterm() -> None:
    key = "s" * 64
    env = {**os.environ, "PYTHONUNBUFFERED": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "textflow_django.testing", "--port", "0", "--api-key", key],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        url = _listening_url(proc, "http")
        auth = {"Authorization": f"Bearer {key}"}
        r = requests.post(url + "/send-sms", json=SMS, headers=auth, timeout=5)
        assert r.status_code == 200 and r.json()["data"]["to"] == NUMBER
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.read() == b""  # exactly one line
        assert key.encode() not in proc.stderr.read()  # the key is never printed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_main_subprocess_prints_each_message_as_it_arrives() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "textflow_django.testing", "--port", "0", "--print-messages"],
        stdout=subprocess.PIPE,
    )
    try:
        url = _listening_url(proc, "http")
        assert proc.stdout is not None
        for text in ("Your verification code for Acme is: 123456", "second"):
            sms = {"phone_number": NUMBER, "text": text}
            assert requests.post(url + "/send-sms", json=sms, headers=AUTH, timeout=5).ok
            # Flushed at once: the line is there while the emulator still runs.
            ready, _, _ = select.select([proc.stdout], [], [], 10)
            assert ready, "no line within 10 s"
            assert proc.stdout.readline().decode() == f"SMS to {NUMBER}: {text}\n"
    finally:
        proc.terminate()
        code = proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()
    assert code == 0


def test_main_subprocess_serves_https_with_certfile_and_keyfile(tmp_path: Path) -> None:
    cert, key, ca = _write_cert(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "textflow_django.testing", "--port", "0",
         "--certfile", str(cert), "--keyfile", str(key)],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        url = _listening_url(proc, "https")
        r = requests.post(url + "/send-sms", json=SMS, headers=AUTH, timeout=5, verify=str(ca))
        assert r.status_code == 200 and r.json()["data"]["to"] == NUMBER
        context = ssl.create_default_context(cafile=str(ca))
        port = int(url.rsplit(":", 1)[1].removesuffix("/api"))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                assert tls.version() is not None  # a real TLS session, not plain HTTP
    finally:
        proc.terminate()
        code = proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()
    assert code == 0  # after the try: a failure above is not hidden by this one
