"""Benchmark: ``manage.py textflow_cleanup`` of 1,000,000 bulk recipients on PostgreSQL while
the site serves send-code, against the naive one-statement delete, in one run.

A throw-away PostgreSQL database (``textflow_load_<pid>``, dropped at the end; the ``PG*``
variables say where) holds the load site of ``bench/load.py`` (``bench/loadsite``, under
gunicorn: 2 gthread workers x 4 threads) and finished bulk jobs, filled by ``generate_series``
(not timed): a job's recipients, its batches of 500, finished 60 days ago (the default
``RETENTION`` keeps them 30). The TextFlow emulator runs in its own process.

1. small: a job of 10,000 recipients; ``textflow_cleanup`` in a fresh process (its peak RSS
   is its own).
2. big: a job of 1,000,000. wrk drives send-code (a distinct number and client address per
   request, the caps out of reach) for ``--seconds`` alone (the baseline), then all through
   ``textflow_cleanup`` in a fresh process (stopped when it ends). A sampler reads, every
   20 ms, how long the cleanup's current transaction has been open (``pg_stat_activity``):
   the longest is the longest its row locks were held.
3. naive: the same 1,000,000 again, deleted as ``BulkRecipient.objects.filter(job=job)
   .delete()`` does it, one ``DELETE ... WHERE job_id = %s``: one transaction locking every
   row until it commits; the same wrk load and sampler.

Printed: each run's time, rows/s and peak RSS (the two cleanups' ratio), the longest
transaction, send-code's requests, errors, rate, p50 and p99 alone and during each delete
(and the ratios). Targets (PASS/MISS; exit 1 on a miss): every recipient deleted (and the
command says so); the 1,000,000-row cleanup's peak RSS within 20 % of the 10,000-row one's;
no send-code error during the cleanup; no cleanup transaction open 1 s or more. The
cleanup's time is printed, not a target: wrk keeps the site saturated (a closed loop of 16
connections), so the cleanup gets the CPU the site leaves; the 10,000-row run, without load,
shows its own pace. About 1.5 to 3 minutes on 2 cores.

    python bench/cleanup.py [--n 1000000] [--small 10000] [--seconds 5]

Needs PostgreSQL (the ``PG*`` variables), wrk and redis-server (Debian), gunicorn (the
``bench`` extra).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.load import (  # noqa: E402
    LUA,
    Database,
    Result,
    _pg_connect,
    database,
    emulator,
    gunicorn,
    manage,
    redis_server,
    site_env,
)

#: The cleanup's and the naive delete's connections, found by name in pg_stat_activity.
APP_NAME = "textflow_bench_cleanup"
#: The longest a cleanup transaction may stay open (its row locks with it).
MAX_TRANSACTION_S = 1.0
RSS_GROWTH = 1.2
BATCH = 500


# -- in the child processes (Django set up from the load site's environment) -----------------


def _child_fill(n: int) -> None:
    """A bulk job finished 60 days ago with ``n`` recipients and their batches; prints its id."""
    import django

    django.setup()
    import datetime as dt

    from django.db import connection, transaction
    from django.utils import timezone

    from textflow_django.models import BulkBatch, BulkRecipient, BulkSMSJob

    batches = -(-n // BATCH)
    with transaction.atomic():
        job = BulkSMSJob.objects.create(
            text="Our sale starts today",
            batch_size=BATCH,
            status=BulkSMSJob.Status.FINISHED,
            total=n,
            sent=n,
            batches_total=batches,
            batches_sent=batches,
            started_at=timezone.now() - dt.timedelta(days=60, hours=1),
            finished_at=timezone.now() - dt.timedelta(days=60),
        )
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {BulkRecipient._meta.db_table} (job_id, phone_number, batch) "  # noqa: S608
                "SELECT %s, '+1202' || lpad(i::text, 7, '0'), i / %s "
                "FROM generate_series(0, %s - 1) AS i",
                [job.pk, BATCH, n],
            )
            cursor.execute(
                f"INSERT INTO {BulkBatch._meta.db_table} "  # noqa: S608
                '(job_id, "index", size, status, sent_at, error, claimed_at, claimed_by) '
                "SELECT %s, b, LEAST(%s, %s - b * %s), 'accepted', now(), '', now(), '' "
                "FROM generate_series(0, %s - 1) AS b",
                [job.pk, BATCH, n, BATCH, batches],
            )
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {BulkRecipient._meta.db_table}")
        cursor.execute(f"VACUUM ANALYZE {BulkBatch._meta.db_table}")
    print(json.dumps({"job": job.pk}))


def _child_cleanup() -> None:
    """``manage.py textflow_cleanup``, as cron runs it; prints seconds, peak RSS and output."""
    import django

    django.setup()
    from django.core.management import call_command

    from textflow_django.retention import DEFAULT_BATCH_SIZE

    out = io.StringIO()
    started = time.perf_counter()
    call_command("textflow_cleanup", stdout=out)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"seconds": seconds, "peak_rss_mb": peak, "output": out.getvalue()}
    print(json.dumps({**result, "batch_size": DEFAULT_BATCH_SIZE}))


# -- in the parent -------------------------------------------------------------------------


@dataclass
class Deletion:
    seconds: float
    rows_left: int
    longest_transaction_s: float
    peak_rss_mb: float | None = None
    output: str = ""
    batch_size: int = 0
    load: Result | None = None


class TransactionSampler:
    """Every 20 ms, how long the transaction of the connection named ``APP_NAME`` has been
    open; ``longest`` is the longest seen."""

    def __init__(self, dbname: str) -> None:
        self.dbname = dbname
        self.longest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with _pg_connect(self.dbname) as conn:
            while not self._stop.is_set():
                row = conn.execute(
                    "SELECT COALESCE(MAX(EXTRACT(EPOCH FROM clock_timestamp() - xact_start)), 0) "
                    "FROM pg_stat_activity WHERE application_name = %s",
                    [APP_NAME],
                ).fetchone()
                self.longest = max(self.longest, float(row[0]))
                self._stop.wait(0.02)

    def __enter__(self) -> TransactionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


class Load:
    """wrk driving send-code from ``start()`` until ``stop()`` (SIGINT: wrk then reports)."""

    def __init__(self, url: str, offset: int, connections: int) -> None:
        self.url, self.offset, self.connections = url, offset, connections
        self.proc: subprocess.Popen[str] | None = None

    def start(self, seconds: float = 3600) -> Load:
        env = dict(os.environ, LOAD_MODE="send", LOAD_OFFSET=str(self.offset),
                   LOAD_THREADS="1", LOAD_XFF="many")  # fmt: skip
        cmd = ["wrk", "-t", "1", "-c", str(self.connections), "-d", f"{max(1, round(seconds))}s",
               "--timeout", "15s", "-s", str(LUA), self.url]  # fmt: skip
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
        return self

    def stop(self, early: bool = True) -> Result:
        assert self.proc is not None
        if early:
            self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=60)
        line = next((ln for ln in out.splitlines() if ln.startswith("LOADJSON ")), None)
        if line is None:
            raise RuntimeError(f"wrk failed ({self.proc.returncode}): {out}")
        data = json.loads(line.split(" ", 1)[1])
        return Result(
            name="send",
            requests=data["requests"],
            expected=data["expected"],
            seconds=data["duration_us"] / 1e6,
            p50_ms=data["p50_us"] / 1000,
            p99_ms=data["p99_us"] / 1000,
            max_ms=data["max_us"] / 1000,
            socket_errors=data["connect"] + data["read"] + data["write"] + data["timeout"],
            unexpected=data["unexpected"],
        )


def _child(env: dict[str, str], *args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"child {args} failed: {out.stdout}\n{out.stderr}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _rows_left(db: Database, job: int) -> int:
    with _pg_connect(db.name) as conn:
        row = conn.execute("SELECT count(*) FROM textflow_bulkrecipient WHERE job_id = %s", [job])
        return int(row.fetchone()[0])


def _cleanup(env: dict[str, str], db: Database, job: int, load: Load | None) -> Deletion:
    with TransactionSampler(db.name) as sampler:
        if load is not None:
            load.start()
        try:
            result = _child(dict(env, PGAPPNAME=APP_NAME), "cleanup")
        finally:
            served = load.stop() if load is not None else None
    return Deletion(
        seconds=result["seconds"],
        rows_left=_rows_left(db, job),
        longest_transaction_s=sampler.longest,
        peak_rss_mb=result["peak_rss_mb"],
        output=result["output"],
        batch_size=result["batch_size"],
        load=served,
    )


def _naive(db: Database, job: int, load: Load) -> Deletion:
    import psycopg

    with (
        TransactionSampler(db.name) as sampler,
        psycopg.connect(
            dbname=db.name,
            host=os.environ.get("PGHOST", "127.0.0.1"),
            port=os.environ.get("PGPORT", "5432"),
            user=os.environ.get("PGUSER", "postgres"),
            password=os.environ.get("PGPASSWORD", ""),
            application_name=APP_NAME,
            autocommit=True,
        ) as conn,
    ):
        load.start()
        try:
            started = time.perf_counter()
            conn.execute("DELETE FROM textflow_bulkrecipient WHERE job_id = %s", [job])
            seconds = time.perf_counter() - started
            conn.execute("DELETE FROM textflow_bulkbatch WHERE job_id = %s", [job])
        finally:
            served = load.stop()
    return Deletion(
        seconds=seconds,
        rows_left=_rows_left(db, job),
        longest_transaction_s=sampler.longest,
        load=served,
    )


def _load_line(label: str, result: Result | None) -> str:
    if result is None:
        return f"  send-code {label}: no run"
    return (
        f"  send-code {label:<22} {result.requests:>6,} requests {result.errors:>3} errors "
        f"{result.rate:7.1f}/s  p50 {result.p50_ms:6.1f} ms  p99 {result.p99_ms:7.1f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="recipients of the big job")
    parser.add_argument("--small", type=int, default=10_000, help="recipients of the small job")
    parser.add_argument("--seconds", type=float, default=5, help="the baseline load run's length")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child[0] == "fill":
            _child_fill(int(args.child[1]))
        else:
            _child_cleanup()
        return 0
    if not os.environ.get("PGHOST"):
        print("  MISS bench/cleanup.py needs PostgreSQL: set PGHOST (and PGUSER, PGPASSWORD)")
        return 1

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        db = stack.enter_context(database("postgres", tmp))
        redis_url = stack.enter_context(redis_server(tmp))
        api = stack.enter_context(
            emulator("--credits", "1e15", "--no-record-messages", "--no-record-requests")
        )
        env = site_env(db, redis_url, api, "bench.loadsite.settings")
        print(f"bench/cleanup.py: {db.label}")
        manage(env, "migrate", "--verbosity", "0")

        started = time.perf_counter()
        small_job = _child(env, "fill", str(args.small))["job"]
        small = _cleanup(env, db, small_job, None)
        big_job = _child(env, "fill", str(args.n))["job"]
        print(f"  filled {args.small:,} and {args.n:,} recipients in "
              f"{time.perf_counter() - started:.1f} s (not timed)")  # fmt: skip

        url = stack.enter_context(gunicorn(env, 2, 4, 8, tmp / "gunicorn.log"))
        Load(url, 0, 16).start(2).stop(early=False)  # warm-up
        alone = Load(url, 1_000_000, 16).start(args.seconds).stop(early=False)
        big = _cleanup(env, db, big_job, Load(url, 2_000_000, 16))
        naive_job = _child(env, "fill", str(args.n))["job"]
        naive = _naive(db, naive_job, Load(url, 3_000_000, 16))

    assert small.peak_rss_mb is not None and big.peak_rss_mb is not None
    growth = big.peak_rss_mb / small.peak_rss_mb
    said = f"{args.n:,} bulk recipients"
    print(
        f"  textflow_cleanup {args.n:>9,}: {big.seconds:6.1f} s "
        f"{args.n / big.seconds:9,.0f} rows/s peak RSS {big.peak_rss_mb:5.1f} MB, "
        f"transactions of {big.batch_size:,} rows, the longest "
        f"{big.longest_transaction_s:.3f} s (sampled)"
    )
    print(
        f"  textflow_cleanup {args.small:>9,}: {small.seconds:6.1f} s "
        f"{args.small / small.seconds:9,.0f} rows/s peak RSS {small.peak_rss_mb:5.1f} MB"
    )
    print(
        f"  naive DELETE     {args.n:>9,}: {naive.seconds:6.1f} s {args.n / naive.seconds:9,.0f} "
        f"rows/s, one transaction locking {args.n:,} rows for "
        f"{naive.longest_transaction_s:.3f} s (sampled)"
    )
    print(
        f"  ratios: RSS {args.n:,}/{args.small:,} {growth:.2f}x; time cleanup/naive "
        f"{big.seconds / naive.seconds:.1f}x; longest lock naive/cleanup "
        f"{naive.longest_transaction_s / max(big.longest_transaction_s, 0.001):.1f}x"
    )
    print(_load_line("alone", alone))
    print(_load_line("during the cleanup", big.load))
    print(_load_line("during the naive DELETE", naive.load))
    if big.load is not None and alone.rate:
        print(
            f"  send-code during the cleanup / alone: rate {big.load.rate / alone.rate:.2f}x, "
            f"p99 {big.load.p99_ms / alone.p99_ms:.2f}x"
        )
    checks = {
        "every recipient deleted": big.rows_left == 0 and small.rows_left == 0,
        "the command says so": said in big.output,
        f"peak RSS within {RSS_GROWTH - 1:.0%} of the {args.small:,} run": growth <= RSS_GROWTH,
        "no send-code error during the cleanup": big.load is not None
        and big.load.errors == 0
        and big.load.expected > 0,
        f"no cleanup transaction open {MAX_TRANSACTION_S:g} s": big.longest_transaction_s
        < MAX_TRANSACTION_S,
    }
    for name, ok in checks.items():
        print(f"  {'PASS' if ok else 'MISS'} {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
