"""Load benchmark: the app's send-code and verify-code under gunicorn, against its peer
django-phone-verify 3.3 on the same site, a bare DRF view and a naive one.

gunicorn (gthread workers) serves ``bench/loadsite`` (the example project's settings and URLs,
two comparison views, and django-phone-verify's ``/api/phone/register`` and
``/api/phone/verify`` with a TextFlow backend of the bench's own, ``bench/loadsite/peer.py``)
on loopback. The bundled TextFlow emulator (its own process) is TextFlow; a private Redis holds
the cache; the database is a throw-away PostgreSQL database (``textflow_load_<pid>``, dropped
at the end) when the ``PG*`` variables are set (CI's services), a throw-away SQLite file (WAL)
otherwise, or as ``--database`` says. Both apps share the site, the database, the middleware
and the emulator. ``wrk`` (Debian's) drives each endpoint for a fixed time with keep-alive
connections:

- hello:    ``POST /bench/hello/``: DRF parses the body and answers: the ceiling.
- naive:    ``POST /bench/naive-send/``: one ``requests.post`` to TextFlow's ``/send-code`` per
  request (a new connection each time), no validation, no limits, no record.
- send:     ``POST /api/phone/send-code/``: the app's full work: normalise and classify the
  number, claim the resend cooldown and count the send against every default cap (number,
  IP, network, the global and country budgets, the Fraud Guard's counters), make the code,
  send it through TextFlow (pooled connection), record the verification, fire the signal.
- register: ``POST /api/phone/register``: the peer's send (its code and session token stored,
  the SMS posted to TextFlow's ``/send-sms``; no limits).
- verify:   ``POST /api/phone/verify-code/`` with the right code and its ``verification_id``;
  pverify: ``POST /api/phone/verify`` with the right ``security_code`` and ``session_token``.
  Before each verify run a pool of codes is sent (wrk, untimed; the emulator records the
  SMS, which carry the codes), and the run verifies each once; the expected answer is 200.
  A run that outruns its pool is redone with a larger one.

Every send-like request carries a distinct valid number and, in ``X-Forwarded-For`` (the site
has ``NUM_PROXIES = 1``), a client address (and /24) of its own. The caps (and the Fraud
Guard's thresholds) are set high, so every rule is checked and none trips: anything but the
expected answer (a 429 included) is an error.

Sections, each a gunicorn run of the site with its settings (``LOAD_STORE``,
``LOAD_VERIFY_MODE``) and a flushed database; app and peer are measured in alternating rounds
(the order flips each round), and the median round is kept:

1. database store, local mode (the defaults: the main comparison): hello, naive, send,
   register, verify, pverify; then send-code from one client address against one per request
   (a per-IP counter row every request updates: the hot row); then, with ``--old-rows``
   (100,000) old verifications stored in both apps' tables (``bench/loadsite/oldrows.py``),
   send, register, verify and pverify again.
2. Redis store (``RATELIMIT_STORE = "cache"`` on Django's RedisCache), local mode.
3. textflow mode (database store): the app's verify pays a round trip to TextFlow.
4. TextFlow made slow (emulator delay 200 ms), app send-code: with the default threads (each
   send holds a thread for 200 ms, so the rate falls to threads / 0.2 s) and with threads
   sized for the latency from the rate measured (threads ~ rate x latency; on PostgreSQL no
   more than its ``max_connections`` allow, a connection per thread).

By default gunicorn runs 2 gthread workers x 4 threads, 8 connections each (16 in all), the
same for both apps: threads overlap each request's round trips to the database and TextFlow,
as in issue 12's setup (2 x 8 threads, 32 connections: ``--threads 8``), with half its
connections, so that p99 measures the service rather than the queue in front of it (with a
closed-loop generator, latency ~ connections / rate). gunicorn's gthread worker accepts every
connection it can, so with keep-alive one worker would take nearly all of wrk's connections:
each worker is capped at ``--conns`` connections (``--worker-connections``) and wrk opens
exactly workers x conns. The CPU time of every process involved (gunicorn, PostgreSQL, the
emulator, Redis, wrk) is read from /proc and printed per served request: on a shared 2-core
machine it explains the rates.

Targets (full mode, medians): send-code >= 1.2x the peer's register with the database store,
>= 1.5x with the Redis store, and with the old rows stored the ratio holds (>= 1.2x, and at
least 90 % of the ratio without them: the rest is noise); verify-code >= 1.2x the peer's
verify in local mode (with the old rows too), >= 0.9x in textflow mode; send-code >= 1.0x
naive and >= 12 % of hello, p99 < 100 ms; zero errors everywhere (pool sends and slow runs
included). ``--short`` (CI) runs every section once, briefly, with 2,000 old rows, and checks
only for zero errors. ``--tls`` serves TextFlow over HTTPS, as the real one is (the targets
stay those measured over plain HTTP). Exit code 0 when every check passes, 1 otherwise.
Needs wrk and redis-server (Debian), gunicorn and django-phone-verify (the ``bench`` extra),
PostgreSQL for the figures the targets speak of; ``--profile DIR`` also needs py-spy.

    python bench/load.py [--duration 5] [--rounds 4] [--database sqlite|postgres]
                         [--workers 2] [--threads 4] [--old-rows 100000] [--tls]
                         [--sections db,hot,old,redis,textflow,slow]
    python bench/load.py --short
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import re
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._emulator_proc import emulator_process  # noqa: E402

LUA = ROOT / "bench" / "loadsite" / "load.lua"
SEND_VS_NAIVE = 1.0
SEND_VS_HELLO = 0.12
P99_MS = 100.0
#: The peer ratios (app / django-phone-verify) of issue 12.
SEND_VS_PEER_DATABASE = 1.2
SEND_VS_PEER_REDIS = 1.5
VERIFY_VS_PEER_LOCAL = 1.2
VERIFY_VS_PEER_TEXTFLOW = 0.9
#: With the old rows stored, a ratio "holds" if it keeps this share of its value without
#: them (the rest is the noise of a shared machine) and still meets its target.
OLD_ROWS_HOLD = 0.9
SLOW_DELAY = 0.2
#: Every wrk run gets its own block of number indices, so no number is ever sent twice
#: (load.lua has 48,000,000 numbers: 240 runs).
BLOCK = 200_000
#: A verify run's pool is sent for (verify seconds x estimated verify/send rate ratio x this);
#: a run that outruns its pool anyway is redone with a pool twice as large.
POOL_MARGIN = 1.3
#: The first estimate of verify rate / pool send rate, before one is measured.
FIRST_RATIO = {"verify": 1.5, "pverify": 3.0}
CODE = re.compile(r"(\d{4,10})")


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
    #: CPU seconds used during the run, by process group ("site", "textflow", "redis", ...).
    cpu: dict[str, float] = field(default_factory=dict)
    #: verify runs: requests past the end of their pool (answered as a used code).
    overrun: int = 0

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


def _stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (empty once it is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (0 once it is gone)."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / _TICK if fields else 0.0


def with_children(pid: int) -> list[int]:
    """``pid`` and its direct children (gunicorn's master and its workers, PostgreSQL's
    postmaster and its backends)."""
    pids = [pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                pids.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return pids


def postmaster() -> int | None:
    """The pid of the local PostgreSQL server's postmaster (to meter it), if one runs here."""
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() != "postgres":
                continue
            parent = _stat(int(comm.parent.name))[1]
            if Path(f"/proc/{parent}/comm").read_text().strip() != "postgres":
                return int(comm.parent.name)
        except (OSError, IndexError, ValueError):
            continue
    return None


class CPUMeter:
    """CPU seconds the processes involved spend, by group, across a measurement."""

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
GROUPS = ("site", "database", "textflow", "redis", "wrk")


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


class Control:
    """The emulator's control endpoints (``/_emulator/...``): reset it, read its SMS."""

    def __init__(self, api_url: str, ca_bundle: Path | None) -> None:
        self.url = api_url.rstrip("/") + "/_emulator"
        self.context = ssl.create_default_context(cafile=str(ca_bundle)) if ca_bundle else None

    def call(self, path: str, method: str = "GET") -> Any:
        data = b"{}" if method == "POST" else None
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method)  # noqa: S310
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=60, context=self.context) as answer:  # noqa: S310
            return json.loads(answer.read())

    def reset(self) -> None:
        """Forget every SMS (and TextFlow-held code): a pool's SMS are then all there is."""
        self.call("/reset", "POST")

    def codes(self) -> dict[str, str]:
        """The code of every SMS recorded since the last reset, by number (the last one)."""
        found: dict[str, str] = {}
        for message in self.call("/messages")["messages"]:
            match = CODE.search(message["text"])
            if match:
                found[message["phone_number"]] = match.group(1)
        return found


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


@dataclass
class Database:
    """The throw-away database both apps share: ``engine`` ``sqlite`` or ``postgres``."""

    engine: str
    #: The SQLite file, or the PostgreSQL database's name.
    name: str
    #: What to print: "PostgreSQL 15.4 (database textflow_load_123)", "SQLite (WAL) ...".
    label: str
    #: PostgreSQL's max_connections (a worker thread holds one), None for SQLite.
    max_connections: int | None = None


def _pg_connect(dbname: str) -> Any:
    import psycopg

    return psycopg.connect(
        dbname=dbname,
        host=os.environ.get("PGHOST", "127.0.0.1"),
        port=os.environ.get("PGPORT", "5432"),
        user=os.environ.get("PGUSER", "postgres"),
        password=os.environ.get("PGPASSWORD", ""),
        autocommit=True,
    )


@contextmanager
def database(engine: str, tmp: Path) -> Iterator[Database]:
    """A new SQLite file in ``tmp``, or a new PostgreSQL database dropped on the way out."""
    if engine == "sqlite":
        path = tmp / "load.sqlite3"
        yield Database("sqlite", str(path), "SQLite (WAL, BEGIN IMMEDIATE), a throw-away file")
        return
    name = f"textflow_load_{os.getpid()}"
    with _pg_connect("postgres") as conn:
        version = conn.execute("SHOW server_version").fetchone()[0].split()[0]
        limit = int(conn.execute("SHOW max_connections").fetchone()[0])
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    pid = (
        postmaster()
        if os.environ.get("PGHOST", "127.0.0.1") in {"127.0.0.1", "localhost", ""}
        else None
    )
    if pid is not None:
        METER.groups["database"] = pid
    try:
        yield Database(
            "postgres", name, f"PostgreSQL {version} (database {name}, dropped after)", limit
        )
    finally:
        METER.groups.pop("database", None)
        with _pg_connect("postgres") as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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
    db: Database,
    redis_url: str,
    emulator_url: str,
    settings: str,
    *,
    store: str = "database",
    verify_mode: str = "local",
    ca_bundle: Path | None = None,
) -> dict[str, str]:
    env = dict(os.environ)
    if ca_bundle is not None:
        # Read by requests (the naive view, the peer's backend) and by the app's client.
        env["REQUESTS_CA_BUNDLE"] = str(ca_bundle)
    paths = [str(ROOT), str(ROOT / "example_project"), env.get("PYTHONPATH", "")]
    env.update(
        DJANGO_SETTINGS_MODULE=settings,
        PYTHONPATH=os.pathsep.join(p for p in paths if p),
        LOAD_DB_ENGINE=db.engine,
        LOAD_DATABASE=db.name,
        LOAD_REDIS_URL=redis_url,
        LOAD_EMULATOR_URL=emulator_url,
        LOAD_STORE=store,
        LOAD_VERIFY_MODE=verify_mode,
    )
    env.pop("TEXTFLOW_API_KEY", None)
    return env


def manage(env: dict[str, str], *args: str) -> str:
    """``python -m django <args>`` with the site's settings (``python -m <module> ...`` when
    ``args`` start with ``-m``); returns what it printed."""
    cmd = [sys.executable, *args] if args[0] == "-m" else [sys.executable, "-m", "django", *args]
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {out.stdout}\n{out.stderr}")
    return out.stdout


@contextmanager
def gunicorn(
    env: dict[str, str], workers: int, threads: int, conns: int, log: Path
) -> Iterator[str]:
    """gthread workers holding at most ``conns`` connections each.

    With keep-alive, a gthread worker accepts every connection it can: without the cap one
    worker would take nearly all of wrk's connections. Driving exactly ``workers * conns``
    connections puts the same number on every worker.
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
    *,
    numbers: Path | None = None,
    record: Path | None = None,
    xff: str = "many",
) -> Result:
    """One wrk run of ``mode`` (see load.lua) for ``seconds``."""
    env = dict(os.environ, LOAD_MODE=mode, LOAD_OFFSET=str(offset), LOAD_THREADS="1",
               LOAD_XFF=xff)  # fmt: skip
    if numbers is not None:
        env["LOAD_NUMBERS"] = str(numbers)
    if record is not None:
        env["LOAD_RECORD"] = str(record)
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
        overrun=data["overrun"],
    )


def _jwt_number(token: str) -> str:
    """The phone number inside one of the peer's session tokens (a JWT it signs)."""
    payload = token.split(".")[1]
    return str(
        json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["phone_number"]
    )


def row(label: str, result: Result) -> str:
    detail = ""
    if result.errors:
        detail = f"  ({result.socket_errors} socket errors, unexpected answers {result.unexpected})"
    return (
        f"  {label:<44} {result.rate:8.0f} req/s   p50 {result.p50_ms:7.1f} ms   "
        f"p99 {result.p99_ms:7.1f} ms   errors {result.errors}{detail}"
    )


def cpu_row(label: str, result: Result) -> str:
    """CPU milliseconds per served request, by process group."""
    served = max(1, result.expected)
    parts = [f"{name} {result.cpu.get(name, 0.0) * 1000 / served:5.2f}"
             for name in GROUPS if name in result.cpu]  # fmt: skip
    total = sum(result.cpu.values()) * 1000 / served
    return f"  {label:<44} {total:6.2f} ms = " + " + ".join(parts)


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


def ratio(a: Result, b: Result) -> float:
    return a.rate / b.rate if b.rate else 0.0


class Bench:
    """The state of one run: where things are, the number blocks, and every result."""

    def __init__(self, args: argparse.Namespace, tmp: Path, control: Control) -> None:
        self.args = args
        self.tmp = tmp
        self.control = control
        self.offset = 0
        self.url = ""
        self.connections = args.workers * args.conns
        #: (section, endpoint) -> the results of its rounds, in order.
        self.results: dict[tuple[str, str], list[Result]] = {}
        #: Runs that count for errors only: warm-ups and the sends that fill a pool.
        self.side: list[Result] = []
        #: Estimated verify rate / pool send rate, per (section, endpoint).
        self.pool_ratio: dict[tuple[str, str], float] = {}

    def block(self) -> int:
        self.offset += BLOCK
        return self.offset

    def run(
        self, section: str, mode: str, seconds: float, xff: str = "many", key: str = ""
    ) -> Result:
        """One measured run of ``mode``, kept as ``(section, key or mode)``."""
        result = wrk(self.url, mode, seconds, self.connections, self.block(), xff=xff)
        self.results.setdefault((section, key or mode), []).append(result)
        return result

    def pool(self, send_mode: str, seconds: float) -> tuple[Path, Result]:
        """Send codes for ``seconds`` (untimed) and write the pool file of ``number, handle,
        code`` lines they make: the app's ``verification_id`` or the peer's session token,
        and the code from the SMS the emulator recorded."""
        self.control.reset()
        record = self.tmp / f"record-{self.offset}"
        sent = wrk(self.url, send_mode, seconds, self.connections, self.block(), record=record)
        self.side.append(sent)
        codes = self.control.codes()
        lines = []
        for path in self.tmp.glob(f"{record.name}.*"):
            for body in path.read_text().splitlines():
                answer = json.loads(body)
                if send_mode == "send":
                    number, handle = answer["phone_number"], answer["verification_id"]
                else:
                    handle = answer["session_token"]
                    number = _jwt_number(handle)
                if number in codes:
                    lines.append(f"{number}\t{handle}\t{codes[number]}\n")
            path.unlink()
        pool = self.tmp / "pool.txt"
        pool.write_text("".join(lines))
        if not lines:
            raise RuntimeError(
                f"no codes to verify after {send_mode}: {sent.expected} answered 200, "
                f"{sent.socket_errors} socket errors, unexpected answers {sent.unexpected}"
            )
        return pool, sent

    def verify(self, section: str, mode: str, seconds: float, warmup: bool = False) -> Result:
        """One verify run with a fresh pool of right codes, redone with a larger pool if it
        outran this one."""
        send_mode = "send" if mode == "verify" else "register"
        key = (section, mode)
        for _attempt in range(3):
            estimate = self.pool_ratio.get(key, self.pool_ratio.get(("", mode), FIRST_RATIO[mode]))
            pool, sent = self.pool(send_mode, math.ceil(seconds * estimate * POOL_MARGIN))
            result = wrk(self.url, mode, seconds, self.connections, 0, numbers=pool)
            if sent.rate:
                self.pool_ratio[key] = self.pool_ratio[("", mode)] = result.rate / sent.rate
            # Past its pool, a run's requests reuse codes and are refused: if every error can
            # be one of those, the pool was too small: a larger one, again. More errors than
            # that are the site's, and are kept.
            if not (result.overrun and 0 < result.errors <= result.overrun):
                break
            self.pool_ratio[key] = max(self.pool_ratio.get(key, 0.0), estimate) * 2
        if warmup:
            self.side.append(result)
        else:
            self.results.setdefault(key, []).append(result)
        return result

    def warm(self, modes: list[str], seconds: float) -> None:
        """Imports, metadata, connection pools, first queries: each endpoint once, untimed."""
        for mode in modes:
            if mode in {"verify", "pverify"}:
                # A pool and a 1 s run; --short (errors only) skips it, for time.
                if not self.args.short:
                    self.verify("", mode, 1.0, warmup=True)
            else:
                self.side.append(wrk(self.url, mode, seconds, self.connections, self.block()))

    def rounds(self, section: str, pairs: list[tuple[str, str]], rounds: int, seconds: float,
               solo: tuple[str, ...] = ()) -> None:  # fmt: skip
        """``rounds`` alternating rounds: each of ``solo``, then each (app, peer) pair, the
        pair's order flipped every other round so neither always runs on the fresher site."""
        for r in range(rounds):
            for mode in solo:
                self.run(section, mode, seconds)
            for pair in pairs:
                for mode in pair if r % 2 == 0 else reversed(pair):
                    if mode in {"verify", "pverify"}:
                        self.verify(section, mode, seconds)
                    else:
                        self.run(section, mode, seconds)

    def median(self, section: str, mode: str) -> Result | None:
        found = self.results.get((section, mode))
        return median_result(found) if found else None

    def all_results(self) -> list[Result]:
        return [r for rs in self.results.values() for r in rs] + self.side


SECTIONS = ("db", "hot", "old", "redis", "textflow", "slow")
SECTION_TITLES = {
    "db": 'database store (RATELIMIT_STORE "database"), local mode: the defaults',
    "hot": "one client address vs one per request (a hot per-IP row?), app send-code",
    "old": "{old} old verifications in both apps' tables, database store, local mode",
    "redis": 'Redis store (RATELIMIT_STORE "cache", Django\'s RedisCache), local mode',
    "textflow": "textflow mode (TextFlow makes and checks the codes), database store",
}
LABELS = {
    "hello": "hello (bare DRF view)",
    "naive": "naive send (requests.post)",
    "send": "app send-code",
    "register": "peer register",
    "verify": "app verify-code (right code)",
    "pverify": "peer verify (right code)",
    "one": "app send-code, one address",
    "many": "app send-code, an address per request",
}


def parse_args() -> Plan:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="CI mode: brief runs, errors only")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds per measurement (default 5; --short 2)")  # fmt: skip
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="alternating rounds, median kept (default 4; --short 1)",
    )
    parser.add_argument("--database", choices=("sqlite", "postgres"), default=None,
                        help="default: postgres when PGHOST is set, else sqlite")  # fmt: skip
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker (default 4)")
    parser.add_argument(
        "--conns",
        type=int,
        default=None,
        help="keep-alive connections per worker (default 2 x threads); wrk drives workers x conns",
    )
    parser.add_argument("--old-rows", type=int, default=None,
                        help="old verifications stored in each app's table for the old-rows "
                        "section (default 100000; --short 2000; 0 skips it)")  # fmt: skip
    parser.add_argument(
        "--slow-threads",
        type=int,
        default=None,
        help="threads per worker with slow TextFlow (default: sized from the measured send rate)",
    )
    parser.add_argument("--no-slow", action="store_true", help="skip the slow-TextFlow runs")
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"the sections to run, comma-separated (default all: {','.join(SECTIONS)}); the "
        "checks of the others are left out",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="TextFlow over HTTPS, as the real one (a throw-away CA from trustme): the naive "
        "view then pays a TLS handshake per request, the pooled clients do not",
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
        help="after the database-store section, profile a send-code run with py-spy into DIR",
    )
    args = parser.parse_args()
    args.conns = args.conns or 2 * args.threads
    sections = {name.strip() for name in args.sections.split(",") if name.strip()}
    if sections - set(SECTIONS):
        parser.error(f"--sections: unknown {', '.join(sorted(sections - set(SECTIONS)))}")
    old_rows = args.old_rows if args.old_rows is not None else (2000 if args.short else 100_000)
    if args.no_slow:
        sections.discard("slow")
    if not old_rows:
        sections.discard("old")
    return Plan(
        args=args,
        rounds=args.rounds or (1 if args.short else 4),
        duration=args.duration or (2.0 if args.short else 5.0),
        warmup=1.0 if args.short else 2.0,
        old_rows=old_rows,
        engine=args.database or ("postgres" if os.environ.get("PGHOST") else "sqlite"),
        sections=sections,
    )


@dataclass
class Plan:
    """What to run, from the command line."""

    args: argparse.Namespace
    rounds: int
    duration: float
    warmup: float
    old_rows: int
    engine: str
    sections: set[str]

    @property
    def short(self) -> bool:
        return bool(self.args.short)

    def want(self, section: str) -> bool:
        return section in self.sections


@dataclass
class SlowRun:
    """A send-code run with TextFlow slowed: ``threads`` per worker, ``connections`` in all."""

    threads: int
    connections: int
    result: Result


@dataclass
class Outcome:
    """Everything the runs produced, for the report."""

    bench: Bench
    db: Database
    slow: list[SlowRun] = field(default_factory=list)
    #: Threads per worker of the sized slow run, the send rate they were sized for, and why
    #: fewer ("" unless PostgreSQL's max_connections capped them).
    slow_threads: int = 0
    slow_rate: float = 0.0
    slow_note: str = ""
    profile: list[str] = field(default_factory=list)
    #: What bench/loadsite/oldrows.py printed.
    old_line: str = ""
    #: Seconds each part took (the CI stage has a time limit).
    took: dict[str, float] = field(default_factory=dict)
    gunicorn_log: str = ""
    _mark: float = field(default_factory=time.monotonic, repr=False)

    def lap(self, name: str) -> None:
        """Record the seconds since the previous lap as ``name``'s."""
        now = time.monotonic()
        self.took[name] = now - self._mark
        self._mark = now


def measure(plan: Plan, tmp: Path, stack: ExitStack) -> Outcome:
    """Every section of ``plan``, in order, on processes ``stack`` stops."""
    args = plan.args
    db = stack.enter_context(database(plan.engine, tmp))
    redis_url = stack.enter_context(redis_server(tmp))
    # SMS are recorded (each pool's codes are read from them; the emulator is reset before each
    # pool, so they never pile up); requests are only counted.
    emu_args = ["--credits", "1e15", "--no-record-requests"]
    ca_bundle = None
    if args.tls:
        tls_args, ca_bundle = tls_files(tmp)
        emu_args += tls_args
    emulator_url = stack.enter_context(emulator(*emu_args))
    bench = Bench(args, tmp, Control(emulator_url, ca_bundle))
    out = Outcome(bench, db)
    rounds, duration, warmup, want = plan.rounds, plan.duration, plan.warmup, plan.want

    def env_for(store: str = "database", verify_mode: str = "local") -> dict[str, str]:
        return site_env(db, redis_url, emulator_url, args.settings, store=store,
                        verify_mode=verify_mode, ca_bundle=ca_bundle)  # fmt: skip

    def serve(env: dict[str, str], name: str) -> AbstractContextManager[str]:
        return gunicorn(env, args.workers, args.threads, args.conns, tmp / f"gunicorn-{name}.log")

    base_env = env_for()
    manage(base_env, "migrate", "--verbosity", "0")
    pairs = [("send", "register"), ("verify", "pverify")]
    out.lap("setup")

    # 1. The defaults: database store, local mode; one address vs many; old rows.
    if want("db") or want("hot") or want("old"):
        with serve(base_env, "db") as bench.url:
            if want("db"):
                bench.warm(["hello", "naive", "send", "register", "verify", "pverify"], warmup)
                bench.rounds("db", pairs, rounds, duration, solo=("hello", "naive"))
            else:
                bench.warm(["send"], warmup)
            if want("hot"):
                for r in range(1 if plan.short else max(1, rounds // 2)):
                    for xff in ("one", "many") if r % 2 == 0 else ("many", "one"):
                        bench.run("hot", "send", duration, xff=xff, key=xff)
            out.lap("defaults")
            if args.profile is not None:
                args.profile.mkdir(parents=True, exist_ok=True)
                master = METER.groups["site"]
                out.profile = profile_send(bench, master, duration, args.profile)
            if want("old"):
                manage(base_env, "flush", "--no-input")
                out.old_line = manage(base_env, "-m", "bench.loadsite.oldrows", str(plan.old_rows))
                bench.warm(["send", "register"], warmup)
                bench.rounds("old", pairs, rounds, duration)
                out.lap("old rows")

    # 2. The Redis store; 3. textflow mode.
    for name, env in (("redis", env_for(store="redis")),
                      ("textflow", env_for(verify_mode="textflow"))):  # fmt: skip
        if want(name):
            manage(base_env, "flush", "--no-input")
            with serve(env, name) as bench.url:
                bench.warm(["send", "register", "verify", "pverify"], warmup)
                bench.rounds(name, pairs, rounds, duration)
            out.lap(name)

    # 4. TextFlow made slow: every send holds a worker thread for 200 ms more. Threads needed
    # ~ rate x latency: sized for the rate measured (25 % headroom), within what PostgreSQL's
    # max_connections allows (a connection per thread, 10 kept spare).
    send = bench.median("db", "send")
    out.slow_rate = send.rate if send is not None else 400.0  # a guess, when db was not run
    sized = math.ceil(out.slow_rate * SLOW_DELAY * 1.25 / args.workers)
    if db.max_connections is not None and sized * args.workers > db.max_connections - 10:
        sized = (db.max_connections - 10) // args.workers
        out.slow_note = f", capped by PostgreSQL's max_connections {db.max_connections}"
    out.slow_threads = args.slow_threads or max(args.threads + 1, sized)
    runs = [out.slow_threads] if plan.short else [args.threads, out.slow_threads]
    if want("slow"):
        slow_url = stack.enter_context(emulator(*emu_args, "--delay", str(SLOW_DELAY)))
        slow_env = site_env(db, redis_url, slow_url, args.settings, ca_bundle=ca_bundle)
        for threads in runs:
            # Every worker holds threads + 1 connections, so every thread always has work.
            log = tmp / f"gunicorn-slow-{threads}.log"
            total = args.workers * (threads + 1)
            with gunicorn(slow_env, args.workers, threads, threads + 1, log) as url:
                bench.side.append(wrk(url, "send", warmup, total, bench.block()))
                result = wrk(url, "send", duration * rounds, total, bench.block())
                out.slow.append(SlowRun(threads, total, result))
        out.lap("slow")
    return out


def main() -> int:
    plan = parse_args()
    if shutil.which("wrk") is None:
        print("bench/load.py needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="textflow-load-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            with ExitStack() as stack:
                out = measure(plan, tmp, stack)
        except (RuntimeError, subprocess.SubprocessError) as exc:
            # A site that does not answer as it should (a half-done change, say): say what
            # broke and what gunicorn logged, rather than a bare traceback.
            print(f"bench/load.py stopped: {exc}", file=sys.stderr)
            for log in sorted(tmp.glob("gunicorn-*.log")):
                text = log.read_text().strip()
                if text:
                    print(f"{log.name} (tail):\n{text[-3000:]}", file=sys.stderr)
            return 1
        out.gunicorn_log = "".join(log.read_text() for log in sorted(tmp.glob("gunicorn-*.log")))
    out.lap("teardown")

    report = Report(plan, out)
    report.header()
    report.sections()
    report.slow()
    checks = report.checks()
    for text, ok in checks:
        print(f"  {'PASS' if ok else 'MISS'}  {text}")
    parts = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in out.took.items())
    print(f"(bench/load.py took {time.monotonic() - started:.0f} s: {parts})")
    for line in out.profile:
        print(line)
    if any(r.errors for r in report.gated()) and out.gunicorn_log.strip():
        print("gunicorn error log (tail):\n" + out.gunicorn_log[-3000:])
    return 0 if all(ok for _text, ok in checks) else 1


class Report:
    """What is printed after the runs: figures, ratios, CPU, and the checks."""

    def __init__(self, plan: Plan, out: Outcome) -> None:
        self.plan = plan
        self.out = out
        self.bench = out.bench

    def m(self, section: str, mode: str) -> Result | None:
        return self.bench.median(section, mode)

    def gated(self) -> list[Result]:
        """Every run whose errors count: the measured ones, warm-ups, pools, slow runs."""
        return self.bench.all_results() + [run.result for run in self.out.slow]

    def header(self) -> None:
        args, plan = self.plan.args, self.plan
        mode_name = "short: errors only" if plan.short else "full"
        print(
            f"bench/load.py [{mode_name}]: gunicorn {args.workers} gthread workers x "
            f"{args.threads} threads ({args.conns} connections each), wrk "
            f"{self.bench.connections} keep-alive connections, {plan.duration:.0f} s per run"
            f"{f' x {plan.rounds} alternating rounds (median)' if plan.rounds > 1 else ''}; "
            f"{self.out.db.label}; Redis and the TextFlow emulator"
            f"{' over HTTPS' if args.tls else ''} on loopback; {os.cpu_count()} cores for "
            "everything. Every request from a client address of its own (X-Forwarded-For, "
            "NUM_PROXIES = 1) unless said; every cap of the app (and the Fraud Guard's "
            "thresholds) counted, none reached."
        )

    def sections(self) -> None:
        cpu: list[tuple[str, Result]] = []
        for section in ("db", "hot", "old", "redis", "textflow"):
            modes = ("one", "many") if section == "hot" else tuple(LABELS)[:6]
            found = [(mode, self.m(section, mode)) for mode in modes]
            shown = [(mode, r) for mode, r in found if r is not None]
            if not shown:
                continue
            print(SECTION_TITLES[section].format(old=f"{self.plan.old_rows:,}") + ":")
            if section == "old" and self.out.old_line:
                print(f"  ({self.out.old_line.strip()})")
            for mode, result in shown:
                print(row(LABELS[mode], result))
                cpu.append((f"{section}: {LABELS[mode]}", result))
            print("  " + "   ".join(self.ratios(section)))
        if cpu:
            print("CPU per served request, ms, by process (site = gunicorn master and workers):")
        for label, result in cpu:
            print(cpu_row(label, result))

    def slow(self) -> None:
        out, workers = self.out, self.plan.args.workers
        if not out.slow:
            return
        print(
            f"TextFlow slow (emulator delay {SLOW_DELAY * 1000:.0f} ms), app send-code; "
            f"threads sized: {out.slow_threads}/worker ~ {out.slow_rate:.0f} req/s x "
            f"{SLOW_DELAY} s x 1.25 / {workers} workers{out.slow_note}"
        )
        for run in out.slow:
            label = f"{workers}x{run.threads} threads, {run.connections} conns"
            ceiling = run.threads * workers / SLOW_DELAY
            print(row(label, run.result) + f"   (threads / latency = {ceiling:.0f} req/s)")

    def ratios(self, section: str) -> list[str]:
        m = self.m
        out = []
        if section == "hot":
            one, many = m("hot", "one"), m("hot", "many")
            if one and many:
                out.append(f"one address / many: {ratio(one, many):.2f}x")
            return out
        send, register = m(section, "send"), m(section, "register")
        verify, pverify = m(section, "verify"), m(section, "pverify")
        if send and register:
            out.append(f"send-code / peer register {ratio(send, register):.2f}x")
        if verify and pverify:
            out.append(f"verify-code / peer verify {ratio(verify, pverify):.2f}x")
        hello, naive = m(section, "hello"), m(section, "naive")
        if send and naive:
            out.append(f"send/naive {ratio(send, naive):.2f}x")
        if send and hello:
            out.append(f"send/hello {ratio(send, hello):.1%}")
        if section == "old":
            base_send, base_register = m("db", "send"), m("db", "register")
            base_verify, base_pverify = m("db", "verify"), m("db", "pverify")
            if base_send and base_register and base_verify and base_pverify:
                out.append(
                    f"(without the old rows: {ratio(base_send, base_register):.2f}x and "
                    f"{ratio(base_verify, base_pverify):.2f}x)"
                )
        return ["ratios:"] + out if out else []

    def checks(self) -> list[tuple[str, bool]]:
        errors = sum(r.errors for r in self.gated())
        checks = [(f"zero errors on every run, pool sends, warm-ups and slow TextFlow included "
                   f"({errors} errors)", errors == 0)]  # fmt: skip
        if self.plan.short:
            return checks
        m = self.m

        def target(text: str, a: Result | None, b: Result | None, floor: float) -> None:
            if a is None or b is None:
                # A section left out by --sections has no check; one that ran must have it.
                if self.plan.want(text.split(":", 1)[0]):
                    checks.append((f"{text} (not measured)", False))
                return
            value = ratio(a, b)
            checks.append((f"{text} >= {floor}x ({value:.2f}x)", value >= floor))

        target("db: send-code vs peer register, database store", m("db", "send"),
               m("db", "register"), SEND_VS_PEER_DATABASE)  # fmt: skip
        target("redis: send-code vs peer register, Redis store", m("redis", "send"),
               m("redis", "register"), SEND_VS_PEER_REDIS)  # fmt: skip
        target("db: verify-code vs peer verify, local mode", m("db", "verify"),
               m("db", "pverify"), VERIFY_VS_PEER_LOCAL)  # fmt: skip
        target("textflow: verify-code vs peer verify, textflow mode", m("textflow", "verify"),
               m("textflow", "pverify"), VERIFY_VS_PEER_TEXTFLOW)  # fmt: skip
        old_rows = self.plan.old_rows
        if self.plan.want("old") and self.plan.want("db"):
            for app, peer, floor in (("send", "register", SEND_VS_PEER_DATABASE),
                                     ("verify", "pverify", VERIFY_VS_PEER_LOCAL)):  # fmt: skip
                a, b = m("old", app), m("old", peer)
                base_a, base_b = m("db", app), m("db", peer)
                if not (a and b and base_a and base_b):
                    text = f"old: {app} ratio with {old_rows:,} old rows (not measured)"
                    checks.append((text, False))
                    continue
                value, base = ratio(a, b), ratio(base_a, base_b)
                hold = max(floor, OLD_ROWS_HOLD * base)
                checks.append((
                    f"old: {app} vs peer with {old_rows:,} old rows holds: >= {floor}x and >= "
                    f"{OLD_ROWS_HOLD:.0%} of {base:.2f}x ({value:.2f}x)", value >= hold,
                ))  # fmt: skip
        send, naive, hello = m("db", "send"), m("db", "naive"), m("db", "hello")
        target("db: send-code vs naive", send, naive, SEND_VS_NAIVE)
        if send and hello:
            value = ratio(send, hello)
            checks.append((f"db: send-code >= {SEND_VS_HELLO:.0%} of hello ({value:.1%})",
                           value >= SEND_VS_HELLO))  # fmt: skip
        if send:
            checks.append((f"db: send-code p99 < {P99_MS:.0f} ms ({send.p99_ms:.1f} ms)",
                           send.p99_ms < P99_MS))  # fmt: skip
        return checks


def profile_send(bench: Bench, master: int, seconds: float, out: Path) -> list[str]:
    """Record the workers with py-spy during a send-code run; say where the time goes.

    ``--gil``: only samples where a worker holds the GIL, i.e. runs Python, so waits on
    TextFlow, the database or a socket do not count as time spent."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    raw = out / "send-code.pyspy.txt"
    cmd = [
        spy, "record", "--pid", str(master), "--subprocesses", "--rate", "200",
        "--duration", str(int(seconds)), "--format", "raw", "--nonblocking", "--gil",
        "-o", str(raw),
    ]  # fmt: skip
    recorder = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        bench.side.append(wrk(bench.url, "send", seconds, bench.connections, bench.block()))
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


if __name__ == "__main__":
    raise SystemExit(main())
