"""Load benchmark: the app's send-code under gunicorn vs. a bare DRF view and a naive one.

gunicorn (gthread workers) serves the example project (``bench/loadsite``: its settings and
URLs plus two comparison views) on loopback, with the bundled TextFlow emulator (its own
process) as TextFlow, a private Redis holding the cache and so the rate-limit counters every
worker shares, and a throw-away SQLite file (WAL) as the database. ``wrk`` (Debian's) drives
each endpoint for a fixed time with keep-alive connections, in the same run:

- hello:  ``POST /bench/hello/``: DRF parses the body and answers: the ceiling.
- naive:  ``POST /bench/naive-send/``: one ``requests.post`` to TextFlow's ``/send-code`` per
  request (a new connection each time), no validation, no limits, no record.
- send:   ``POST /api/phone/send-code/``: the app's full work: normalise and classify the
  number, claim the resend cooldown and count the send against the per-number and per-IP
  caps in Redis, call TextFlow (pooled connection), record the verification, fire the signal.
- verify: ``POST /api/phone/verify-code/`` with a wrong code for numbers the send run left
  pending: the load generator cannot know the real codes (TextFlow holds them), so it measures
  the full work of a failed check (failed-check caps peeked, row locked, TextFlow's
  ``/verify-code`` asked, the attempt counted, the caps hit), and the expected answer is
  400 ``invalid_code``.

Every request carries a distinct valid number; the caps are set high, so every rule is checked
and none trips: anything but the expected answer (a 429 included) is an error.

gunicorn's gthread worker accepts every connection it can, so with keep-alive one worker
would take nearly all of wrk's connections: each worker is capped at ``--conns`` connections
(``--worker-connections``) and wrk opens exactly workers x conns, the same number on each.
The CPU time of every process involved (gunicorn, emulator, Redis, wrk) is read from /proc
and printed per served request: on a shared 2-core machine it explains the rates.

Then TextFlow is made slow (emulator delay 200 ms) and send-code is run again: with the
default threads (each send holds a thread for 200 ms, so the rate falls to threads / 0.2 s),
and with threads sized for the latency from the rate just measured (threads ~ rate x latency).
Full mode also runs verify-code on that site, for information (not gated).

Targets (full mode): send-code >= 0.9x the naive rate and >= 12% of the hello rate, with zero
errors and p99 < 100 ms; zero errors everywhere, the slow send-code runs included. ``--short``
(CI) runs each endpoint for 3 s and the sized slow run only, and checks only for zero errors.
``--tls`` serves TextFlow over HTTPS, as the real one is (the targets stay those measured
over plain HTTP: the default run). Exit code 0 when every check passes, 1 otherwise. Needs
wrk and redis-server (Debian) and gunicorn (the ``bench`` extra); ``--profile DIR`` also
needs py-spy.

    python bench/load.py [--duration 20] [--workers 4] [--threads 1] [--tls] [--profile DIR]
    python bench/load.py --short
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._emulator_proc import emulator_process  # noqa: E402

LUA = ROOT / "bench" / "loadsite" / "load.lua"
SEND_VS_NAIVE = 0.9
SEND_VS_HELLO = 0.12
P99_MS = 100.0
SLOW_DELAY = 0.2
#: Numbers the verify run cycles through (each gets a wrong code every few seconds).
VERIFY_POOL = 5000
#: Every wrk run gets its own block of number indices, so no number is ever sent twice.
BLOCK = 1_000_000


@dataclass
class Result:
    name: str
    requests: int
    expected: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    socket_errors: int
    unexpected: dict[str, int] = field(default_factory=dict)
    #: CPU seconds used during the run, by process group ("site", "textflow", "redis", "wrk").
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Served requests per second (expected answers only: a 429 is not served)."""
        return self.expected / self.seconds if self.seconds else 0.0

    @property
    def errors(self) -> int:
        return self.socket_errors + sum(self.unexpected.values())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f} s")


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def with_children(pid: int) -> list[int]:
    """``pid`` and its direct children (gunicorn's master and its workers)."""
    pids = [pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                pids.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return pids


class CPUMeter:
    """CPU seconds our own processes spend, by group, across a measurement."""

    def __init__(self) -> None:
        self.groups: dict[str, int] = {}  # name -> root pid (with its children)

    def snapshot(self) -> dict[str, float]:
        snap = {
            name: sum(cpu_seconds(p) for p in with_children(pid))
            for name, pid in self.groups.items()
        }
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, once waited for
        snap["wrk"] = usage.ru_utime + usage.ru_stime
        return snap


METER = CPUMeter()


def stop(proc: subprocess.Popen[Any], timeout: float = 15) -> None:
    """SIGTERM the process we started (gunicorn's master stops its workers), then SIGKILL."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


@contextmanager
def emulator(*extra: str) -> Iterator[str]:
    """The TextFlow emulator in a process of its own, its CPU metered; yields its API root."""
    pid: list[int] = []

    def metered(started: int) -> None:
        pid.append(started)
        METER.groups["textflow"] = started

    try:
        with emulator_process(*extra, started=metered) as url:
            yield url
    finally:
        if pid and METER.groups.get("textflow") == pid[0]:
            METER.groups.pop("textflow")


@contextmanager
def redis_server(tmp: Path) -> Iterator[str]:
    """A private Redis on a free loopback port (no persistence), or ``LOAD_REDIS_URL``."""
    if os.environ.get("LOAD_REDIS_URL"):
        yield os.environ["LOAD_REDIS_URL"]
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("bench/load.py needs redis-server (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--dir", str(tmp), "--loglevel", "warning"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:

        def ping() -> bool:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")

        wait_until(ping, 15, "redis-server")
        METER.groups["redis"] = proc.pid
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        METER.groups.pop("redis", None)
        stop(proc)


def tls_files(tmp: Path) -> tuple[list[str], Path]:
    """A throw-away CA and a certificate for 127.0.0.1: the emulator's arguments to serve
    HTTPS with it, and the CA bundle for the site to trust."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    chain, key, bundle = tmp / "tls-cert.pem", tmp / "tls-key.pem", tmp / "tls-ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(chain))
    cert.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(bundle))
    return ["--certfile", str(chain), "--keyfile", str(key)], bundle


def site_env(
    db: Path, redis_url: str, emulator_url: str, settings: str, ca_bundle: Path | None = None
) -> dict[str, str]:
    env = dict(os.environ)
    if ca_bundle is not None:
        # Read by requests (the naive view) and by the app's client, when it is made.
        env["REQUESTS_CA_BUNDLE"] = str(ca_bundle)
    paths = [str(ROOT), str(ROOT / "example_project"), env.get("PYTHONPATH", "")]
    env.update(
        DJANGO_SETTINGS_MODULE=settings,
        PYTHONPATH=os.pathsep.join(p for p in paths if p),
        LOAD_DATABASE=str(db),
        LOAD_REDIS_URL=redis_url,
        LOAD_EMULATOR_URL=emulator_url,
    )
    env.pop("TEXTFLOW_API_KEY", None)
    return env


def migrate(env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "django", "migrate", "--verbosity", "0"],
        env=env,
        cwd=ROOT,
        check=True,
    )


@contextmanager
def gunicorn(
    env: dict[str, str], workers: int, threads: int, conns: int, log: Path
) -> Iterator[str]:
    """gthread workers holding at most ``conns`` connections each.

    With keep-alive, a gthread worker accepts every connection it can: without the cap one
    worker would take nearly all of wrk's connections and serve alone. Driving exactly
    ``workers * conns`` connections puts the same number on every worker.
    """
    port = free_port()
    cmd = [
        sys.executable, "-m", "gunicorn",
        "--workers", str(workers), "--worker-class", "gthread", "--threads", str(threads),
        "--worker-connections", str(conns),
        "--bind", f"127.0.0.1:{port}", "--backlog", "2048", "--keep-alive", "5",
        "--graceful-timeout", "5", "--timeout", "60",
        "--log-level", "warning", "--error-logfile", str(log),
        "bench.loadsite.wsgi:application",
    ]  # fmt: skip
    with log.open("ab") as sink:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=sink, stderr=sink)
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited {proc.returncode}: {log.read_text()[-2000:]}")
            with urllib.request.urlopen(f"{url}/bench/hello/", timeout=2) as answer:  # noqa: S310
                return bool(answer.status == 200)

        wait_until(up, 60, "gunicorn")
        METER.groups["site"] = proc.pid
        yield url
    finally:
        METER.groups.pop("site", None)
        stop(proc)


def wrk(
    url: str,
    mode: str,
    seconds: float,
    connections: int,
    offset: int,
    numbers: Path | None = None,
) -> Result:
    env = dict(os.environ, LOAD_MODE=mode, LOAD_OFFSET=str(offset), LOAD_THREADS="1")
    if numbers is not None:
        env["LOAD_NUMBERS"] = str(numbers)
    cmd = [
        "wrk", "-t", "1", "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
        "--timeout", "15s", "-s", str(LUA), url,
    ]  # fmt: skip
    before = METER.snapshot()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    after = METER.snapshot()
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("LOADJSON ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout}\n{out.stderr}")
    data = json.loads(line.split(" ", 1)[1])
    return Result(
        name=mode,
        requests=data["requests"],
        expected=data["expected"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        socket_errors=data["connect"] + data["read"] + data["write"] + data["timeout"],
        unexpected=data["unexpected"],
        cpu={k: after[k] - before.get(k, 0.0) for k in after},
    )


def pending_numbers(env: dict[str, str], limit: int) -> list[str]:
    """Numbers with a pending verification (left by the send runs), newest first."""
    code = (
        "import django; django.setup()\n"
        "from textflow_django.models import PhoneVerification as P\n"
        "rows = P.objects.filter(status=P.Status.PENDING).order_by('-id')\n"
        f"print('\\n'.join(rows.values_list('phone_number', flat=True)[:{limit}]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    )
    return out.stdout.split()


def row(label: str, result: Result) -> str:
    detail = ""
    if result.errors:
        detail = f"  ({result.socket_errors} socket errors, unexpected answers {result.unexpected})"
    return (
        f"  {label:<34} {result.rate:8.0f} req/s   p50 {result.p50_ms:7.1f} ms   "
        f"p99 {result.p99_ms:7.1f} ms   errors {result.errors}{detail}"
    )


def cpu_row(label: str, result: Result) -> str:
    """CPU milliseconds per served request, by process group."""
    served = max(1, result.expected)
    parts = [f"{name} {result.cpu.get(name, 0.0) * 1000 / served:5.2f}"
             for name in ("site", "textflow", "redis", "wrk")]  # fmt: skip
    total = sum(result.cpu.values()) * 1000 / served
    return f"  {label:<34} {total:6.2f} ms = " + " + ".join(parts)


def median_result(results: list[Result]) -> Result:
    """The round with the median rate (its latencies come with it); errors summed."""
    ordered = sorted(results, key=lambda r: r.rate)
    mid = ordered[(len(ordered) - 1) // 2]
    merged: dict[str, int] = {}
    for r in results:
        for k, v in r.unexpected.items():
            merged[k] = merged.get(k, 0) + v
    return Result(
        mid.name,
        mid.requests,
        mid.expected,
        mid.seconds,
        mid.p50_ms,
        mid.p99_ms,
        mid.max_ms,
        sum(r.socket_errors for r in results),
        merged,
        mid.cpu,
    )


def profile_send(url: str, master: int, seconds: float, out: Path, offset: int) -> list[str]:
    """Record the workers with py-spy during a send-code run; say where the time goes.

    ``--gil``: only samples where a worker holds the GIL, i.e. runs Python, so waits on
    TextFlow, Redis or a socket do not count as time spent."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    raw = out / "send-code.pyspy.txt"
    cmd = [
        spy, "record", "--pid", str(master), "--subprocesses", "--rate", "200",
        "--duration", str(int(seconds)), "--format", "raw", "--nonblocking", "--gil",
        "-o", str(raw),
    ]  # fmt: skip
    recorder = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wrk(url, "send", seconds, 8, offset)
    finally:
        recorder.wait(timeout=seconds + 30)
    inclusive: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if "SendCodeView.post" not in stack:
            continue
        total += int(count)
        for frame in set(stack.split(";")):
            inclusive[frame] = inclusive.get(frame, 0) + int(count)
    lines = [f"py-spy profile of send-code ({total} samples in requests; stacks in {raw}):"]
    ranked = sorted(inclusive.items(), key=lambda kv: -kv[1])
    # Frames below the view (the server and framework above it are in every sample).
    below = [(f, n) for f, n in ranked if n < 0.97 * total and not f.startswith("process ")]
    lines += [f"  {n / max(1, total):6.1%}  {frame}" for frame, n in below[:25]]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="CI mode: brief runs, errors only")
    parser.add_argument("--duration", type=float, default=None, help="seconds per measurement")
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="alternating rounds, median kept (default 5: the machine is shared and noisy)",
    )
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers (default 4)")
    parser.add_argument("--threads", type=int, default=1, help="threads per worker (default 1)")
    parser.add_argument(
        "--conns",
        type=int,
        default=None,
        help="keep-alive connections per worker (default 2 x threads); wrk drives workers x conns",
    )
    parser.add_argument(
        "--slow-threads",
        type=int,
        default=None,
        help="threads per worker with slow TextFlow (default: sized from the measured send rate)",
    )
    parser.add_argument("--no-slow", action="store_true", help="skip the slow-TextFlow runs")
    parser.add_argument(
        "--tls",
        action="store_true",
        help="TextFlow over HTTPS, as the real one (a throw-away CA from trustme): the naive "
        "view then pays a TLS handshake per request, the app's pooled client does not",
    )
    parser.add_argument(
        "--settings",
        default="bench.loadsite.settings",
        help="the site's settings module (to try a change; default bench.loadsite.settings)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="after the measurements, profile a send-code run with py-spy into DIR",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("bench/load.py needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    rounds = args.rounds or (1 if args.short else 5)
    duration = args.duration or (3.0 if args.short else 7.0)
    warmup = 1.0 if args.short else 3.0
    conns = args.conns or 2 * args.threads
    connections = args.workers * conns
    offset = 0

    def next_block() -> int:
        nonlocal offset
        offset += BLOCK
        return offset

    results: dict[str, list[Result]] = {"hello": [], "naive": [], "send": []}
    slow: list[tuple[str, Result]] = []
    slow_verify: Result | None = None
    slow_threads = 0
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="textflow-load-")))
        db = tmp / "load.sqlite3"
        redis_url = stack.enter_context(redis_server(tmp))
        emu_args = ["--credits", "1e15", "--no-record-messages", "--no-record-requests"]
        ca_bundle = None
        if args.tls:
            tls_args, ca_bundle = tls_files(tmp)
            emu_args += tls_args
        emulator_url = stack.enter_context(emulator(*emu_args))
        env = site_env(db, redis_url, emulator_url, args.settings, ca_bundle)
        migrate(env)
        with gunicorn(env, args.workers, args.threads, conns, tmp / "gunicorn.log") as url:
            for mode in ("hello", "naive", "send"):  # imports, metadata, connection pools
                wrk(url, mode, warmup, connections, next_block())
            for _ in range(rounds):
                for mode in ("hello", "naive", "send"):
                    results[mode].append(wrk(url, mode, duration, connections, next_block()))
            pool = tmp / "numbers.txt"
            pool.write_text("\n".join(pending_numbers(env, VERIFY_POOL)) + "\n")
            verify = wrk(url, "verify", duration * rounds, connections, 0, pool)
            profile: list[str] = []
            if args.profile is not None:
                args.profile.mkdir(parents=True, exist_ok=True)
                master = METER.groups["site"]
                profile = profile_send(url, master, duration, args.profile, next_block())
        gunicorn_log = (tmp / "gunicorn.log").read_text()
        send = median_result(results["send"])

        # TextFlow made slow: every send holds a worker thread for 200 ms more. Threads needed
        # ~ rate x latency: size them for the rate just measured (25% headroom).
        slow_threads = args.slow_threads or max(
            args.threads + 1, math.ceil(send.rate * SLOW_DELAY * 1.25 / args.workers)
        )
        runs = [args.threads, slow_threads] if not args.short else [slow_threads]
        if args.no_slow:
            runs = []
        if runs:
            slow_url = stack.enter_context(emulator(*emu_args, "--delay", str(SLOW_DELAY)))
            slow_env = site_env(db, redis_url, slow_url, args.settings, ca_bundle)
        for threads in runs:
            # Every worker holds threads + 1 connections, so every thread always has work.
            log = tmp / f"gunicorn-slow-{threads}.log"
            total = args.workers * (threads + 1)
            with gunicorn(slow_env, args.workers, threads, threads + 1, log) as url:
                wrk(url, "send", warmup, total, next_block())
                label = f"{args.workers}x{threads} threads, {total} conns"
                slow.append((label, wrk(url, "send", duration * rounds, total, next_block())))
                if threads == slow_threads and not args.short:
                    slow_verify = wrk(url, "verify", duration * rounds, total, 0, pool)
            gunicorn_log += log.read_text()

    hello, naive = median_result(results["hello"]), median_result(results["naive"])
    gated = [hello, naive, send, verify] + [r for _label, r in slow]
    mode_name = "short: errors only" if args.short else "full"
    print(
        f"bench/load.py [{mode_name}]: gunicorn {args.workers} gthread workers x {args.threads} "
        f"thread(s), wrk {connections} keep-alive connections, {duration:.0f} s per endpoint"
        f"{f' x {rounds} alternating rounds (median)' if rounds > 1 else ''}; TextFlow emulator"
        f"{' over HTTPS' if args.tls else ''}, "
        f"Redis and SQLite (WAL) on loopback; {os.cpu_count()} cores for everything"
    )
    print(row("hello (bare DRF view)", hello))
    print(row("naive send (requests.post)", naive))
    print(row("app send-code", send))
    print(row("app verify-code (wrong code: 400)", verify))
    send_naive = send.rate / naive.rate if naive.rate else 0.0
    send_hello = send.rate / hello.rate if hello.rate else 0.0
    print(f"  ratios: send/naive {send_naive:.2f}x   send/hello {send_hello:.1%}")
    print("CPU per served request, ms, by process (site = gunicorn master and workers):")
    print(cpu_row("hello", hello))
    print(cpu_row("naive send", naive))
    print(cpu_row("app send-code", send))
    print(cpu_row("app verify-code", verify))
    if slow:
        print(
            f"TextFlow slow (emulator delay {SLOW_DELAY * 1000:.0f} ms), app send-code; "
            f"threads sized: {slow_threads}/worker ~ {send.rate:.0f} req/s x {SLOW_DELAY} s x 1.25"
        )
    for label, result in slow:
        threads = int(label.split("x", 1)[1].split(" ", 1)[0]) * args.workers
        print(row(label, result) + f"   (threads / latency = {threads / SLOW_DELAY:.0f} req/s)")
    if slow_verify is not None:
        print(row("verify-code, same site (not gated)", slow_verify))

    checks: list[tuple[str, bool]] = [
        (f"zero errors on every endpoint{', slow TextFlow included' if slow else ''} "
         f"({sum(r.errors for r in gated)} errors)", all(r.errors == 0 for r in gated)),
    ]  # fmt: skip
    if not args.short:
        checks += [
            (f"send-code >= {SEND_VS_NAIVE}x naive ({send_naive:.2f}x)",
             send_naive >= SEND_VS_NAIVE),
            (f"send-code >= {SEND_VS_HELLO:.0%} of hello ({send_hello:.1%})",
             send_hello >= SEND_VS_HELLO),
            (f"send-code p99 < {P99_MS:.0f} ms ({send.p99_ms:.1f} ms)", send.p99_ms < P99_MS),
        ]  # fmt: skip
    for text, ok in checks:
        print(f"  {'PASS' if ok else 'MISS'}  {text}")
    for line in profile:
        print(line)
    if any(r.errors for r in gated) and gunicorn_log.strip():
        print("gunicorn error log (tail):\n" + gunicorn_log[-3000:])
    return 0 if all(ok for _text, ok in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
