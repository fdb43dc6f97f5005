"""Prove bulk sending scales out: N ``db_worker`` processes share one job, on PostgreSQL,
and every recipient reaches TextFlow (the emulator) exactly once.

    eval "$(bash .ci/services.sh)"
    python bench/workers/prove.py [--recipients 100000] [--workers 2] [--timeout 600]

What it does, on a dedicated database (``TEXTFLOW_WORKERS_DB``, default
``textflow_workers``, dropped and recreated first so runs are independent):

1. Serves the TextFlow emulator on a free loopback port, recording every request and SMS.
   It runs in a thread of this process (otherwise idle, so it has a core of its own): that
   gives the checks the body of every ``/bulk-sms`` call, which the emulator's HTTP
   control API does not expose.
2. Writes ``--recipients`` distinct valid E.164 numbers to a file, plus a few duplicates
   and invalid lines (which must be skipped), and runs the real command in a child process:
   ``python -m django textflow_bulk_sms --file F --text T --no-input --enqueue``.
3. Queues ``--duplicates`` batches once more, at the back of the queue (they run after
   the original copy is done).
4. Starts ``--workers`` ``db_worker --batch`` processes (each exits once the queue is
   empty) and waits for them, up to ``--timeout`` seconds. As soon as every worker is
   taking tasks, queues ``--duplicates`` other batches twice more, back to back, at the
   front of the queue, and has the emulator answer slowly (``TWIN_DELAY``) until those
   copies have run: one worker sends the first copy while another picks up the second, a
   duplicate delivered mid-flight.
5. Checks: the job is finished with every recipient sent; each number reached the
   emulator exactly once and no other number did; no ``/bulk-sms`` call carried more than
   the batch size; each batch was sent by exactly one task, duplicates included; every
   worker process sent batches (from the ``worker_ids`` and return value ``django-tasks-db``
   stores on each task result).

Prints a short report; exits 0 when every check holds, 1 with the reasons otherwise, 2 on
a setup error. Every child process is stopped on the way out, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from textflow_django.testing import TextFlowEmulator  # noqa: E402

SETTINGS = "bench.workers.settings"
BATCH_SIZE = 500  # TEXTFLOW["BULK_BATCH_SIZE"] in bench/workers/settings.py
TEXT = "Scale-out proof: one SMS to every recipient, once."
EXTRA_DUPLICATES = 10  # lines repeating a number already in the file
INVALID_LINES = ("not-a-number", "+1", "12345")
#: Seconds TextFlow takes to answer while the twin copies run (see ``_run``).
TWIN_DELAY = 0.25


class Failed(Exception):
    """The run could not be set up (exit 2); failed checks are collected, not raised."""


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--duplicates",
        type=int,
        default=5,
        help="batches queued again at the back, and as many queued twice more at the front",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for the workers")
    args = parser.parse_args(argv)
    if not 1 <= args.recipients <= 8_000_000:
        parser.error("--recipients must be between 1 and 8,000,000")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.duplicates < 0:
        parser.error("--duplicates must not be negative")
    return args


def number(i: int) -> str:
    """The ``i``-th recipient: +1 212 2000000 upwards, valid NANP numbers, all distinct."""
    return f"+1212{2_000_000 + i:07d}"


def _recreate_database(name: str) -> None:
    """Drop and create the proof's database, connecting to the server's ``postgres`` one."""
    import psycopg
    from psycopg import sql

    params: dict[str, Any] = {
        "host": os.environ.get("PGHOST", "127.0.0.1"),
        "port": os.environ.get("PGPORT", "5432"),
        "user": os.environ.get("PGUSER", "postgres"),
        "password": os.environ.get("PGPASSWORD", ""),
        "dbname": "postgres",
        "connect_timeout": 10,
    }
    try:
        with psycopg.connect(**params, autocommit=True) as conn:
            ident = sql.Identifier(name)
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    except psycopg.Error as err:
        raise Failed(
            f"PostgreSQL at {params['host']}:{params['port']} as {params['user']}: {err}"
            ' (start it with: eval "$(bash .ci/services.sh)")'
        ) from err


def _stop(proc: subprocess.Popen[Any], name: str) -> None:
    """Stop a child if it is still running: SIGTERM (a worker finishes its task), then kill."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        print(f"prove: {name} ignored SIGTERM; killing it", file=sys.stderr)
        proc.kill()
        proc.wait(timeout=10)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:]) or "    (empty)"


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through every ``finally``, which stops the children


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    db_name = os.environ.setdefault("TEXTFLOW_WORKERS_DB", "textflow_workers")
    procs: list[tuple[str, subprocess.Popen[Any]]] = []
    emulator = TextFlowEmulator(credits=1e12)
    tmp = Path(tempfile.mkdtemp(prefix="textflow-workers-"))
    try:
        return _run(args, db_name, tmp, emulator, procs)
    except Failed as err:
        print(f"prove: FAILED to set up: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prove: interrupted; stopping the children", file=sys.stderr)
        return 130
    finally:
        # A second Ctrl-C or SIGTERM must not cut the clean-up short (it is bounded anyway).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for name, proc in procs:
            _stop(proc, name)
        emulator.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        if "django" in sys.modules:
            from django.db import connections

            connections.close_all()


def _run(
    args: argparse.Namespace,
    db_name: str,
    tmp: Path,
    emulator: TextFlowEmulator,
    procs: list[tuple[str, subprocess.Popen[Any]]],
) -> int:
    started = time.monotonic()
    n = args.recipients
    _recreate_database(db_name)
    emulator.start()
    os.environ["TEXTFLOW_EMULATOR_URL"] = emulator.url
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    env = dict(os.environ)

    import django

    django.setup()
    from django.core.management import call_command
    from django_tasks_db.compat import TaskResultStatus
    from django_tasks_db.models import DBTaskResult

    from textflow_django.models import BulkBatch, BulkSMSJob
    from textflow_django.tasks import send_bulk_batch

    call_command("migrate", verbosity=0)

    # -- the recipients, and the real command queuing them ----------------------------------
    numbers_file = tmp / "numbers.txt"
    with numbers_file.open("w") as out:
        out.writelines(number(i) + "\n" for i in range(n))
        out.writelines(number(i * 7 % n) + "\n" for i in range(EXTRA_DUPLICATES))
        out.writelines(line + "\n" for line in INVALID_LINES)
    command = [
        sys.executable, "-m", "django", "textflow_bulk_sms",
        "--file", str(numbers_file), "--text", TEXT, "--no-input", "--enqueue",
    ]  # fmt: skip
    t_enqueue = time.monotonic()
    enqueue = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    procs.append(("textflow_bulk_sms", enqueue))
    try:
        output, _ = enqueue.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        raise Failed(f"textflow_bulk_sms --enqueue did not finish in {args.timeout:.0f}s") from None
    enqueue_seconds = time.monotonic() - t_enqueue
    if enqueue.returncode != 0:
        raise Failed(f"textflow_bulk_sms --enqueue exited {enqueue.returncode}:\n{output}")
    job = BulkSMSJob.objects.get()
    batch_ids = list(
        BulkBatch.objects.filter(job=job).order_by("index").values_list("id", flat=True)
    )
    queued_by_command = DBTaskResult.objects.count()

    # -- duplicate deliveries, on purpose (1) -------------------------------------------------
    picks = _spread(batch_ids, 2 * args.duplicates)
    back, front = picks[0::2], picks[1::2]
    for batch_id in back:  # again at the back: runs after the original is done
        send_bulk_batch.enqueue(batch_id)

    # -- the workers --------------------------------------------------------------------------
    worker_ids = [f"worker-{i + 1}" for i in range(args.workers)]
    logs = {wid: tmp / f"{wid}.log" for wid in worker_ids}
    t_workers = time.monotonic()
    for wid in worker_ids:
        with logs[wid].open("w") as log:
            worker_command = [
                sys.executable, "-m", "django", "db_worker", "--batch", "--no-reload",
                "--no-startup-delay", "--interval", "0.1", "--worker-id", wid,
            ]  # fmt: skip
            proc = subprocess.Popen(
                worker_command,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        procs.append((wid, proc))
    workers = procs[-args.workers :]

    # -- duplicate deliveries, on purpose (2) -------------------------------------------------
    # Once every worker is taking tasks, ``front`` batches are queued twice more, back to
    # back, ahead of the rest. TextFlow answers slowly meanwhile, so while one worker sends
    # the first copy the other picks the second: a duplicate delivered mid-flight.
    raced: list[tuple[str, str]] = []
    twins = "waiting" if front and args.workers > 1 else "skipped"
    slow_since, slow_seconds = 0.0, 0.0
    urgent = send_bulk_batch.using(priority=10)
    finished_states = [TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED]

    deadline = t_workers + args.timeout
    while any(proc.poll() is None for _, proc in workers):
        if time.monotonic() > deadline:
            job.refresh_from_db()
            for wid in worker_ids:
                print(f"--- {wid} log (tail):\n{_tail(logs[wid])}", file=sys.stderr)
            print(
                f"prove: FAILED: the workers did not finish in {args.timeout:.0f}s "
                f"(job {job.status}, {job.sent:,}/{job.total:,} sent)",
                file=sys.stderr,
            )
            return 1
        if twins == "waiting":
            all_started = all(
                DBTaskResult.objects.filter(worker_ids__contains=[wid]).exists()
                for wid in worker_ids
            )
            alive = all(proc.poll() is None for _, proc in workers)
            if not alive or DBTaskResult.objects.ready().count() < 4 * args.workers:
                twins = "skipped"  # the queue is nearly empty: the workers may be leaving
            elif all_started:
                emulator.delay, slow_since = TWIN_DELAY, time.monotonic()
                for batch_id in front:
                    first, second = urgent.enqueue(batch_id), urgent.enqueue(batch_id)
                    raced.append((str(first.id), str(second.id)))
                twins = "running"
        elif twins == "running":
            ids = [task_id for pair in raced for task_id in pair]
            done = DBTaskResult.objects.filter(id__in=ids, status__in=finished_states).count()
            if done == len(ids):
                emulator.delay, slow_seconds = 0.0, time.monotonic() - slow_since
                twins = "done"
        time.sleep(0.05)
    emulator.delay = 0.0
    duplicate_tasks = len(back) + 2 * len(raced)
    workers_seconds = time.monotonic() - t_workers

    # -- the checks ---------------------------------------------------------------------------
    failures: list[str] = []
    for wid, proc in workers:
        if proc.returncode != 0:
            failures.append(f"{wid} exited {proc.returncode}:\n{_tail(logs[wid])}")

    job.refresh_from_db()
    expected = {
        "status": BulkSMSJob.Status.FINISHED,
        "total": n,
        "sent": n,
        "uncertain": 0,
        "invalid": len(INVALID_LINES),
        "duplicates": EXTRA_DUPLICATES,
        "batches_total": -(-n // BATCH_SIZE),
        "batches_sent": -(-n // BATCH_SIZE),
    }
    for field, want in expected.items():
        if getattr(job, field) != want:
            failures.append(f"job.{field} is {getattr(job, field)!r}, expected {want!r}")
    batches = BulkBatch.objects.filter(job=job)
    not_accepted = batches.exclude(status=BulkBatch.Status.ACCEPTED).count()
    if not_accepted:
        failures.append(f"{not_accepted} batches are not accepted")
    oversized = batches.filter(size__gt=BATCH_SIZE).count()
    if oversized:
        failures.append(f"{oversized} batches hold more than {BATCH_SIZE} recipients")

    # Tasks: each batch sent by exactly one task (a duplicate returns False), by whom.
    results = list(
        DBTaskResult.objects.values_list("args_kwargs", "status", "return_value", "worker_ids")
    )
    tasks_expected = queued_by_command + duplicate_tasks
    if len(results) != tasks_expected:
        failures.append(f"{len(results)} task results, expected {tasks_expected}")
    if queued_by_command != len(batch_ids):
        failures.append(f"the command queued {queued_by_command} tasks, {len(batch_ids)} batches")
    senders: dict[int, list[str]] = {batch_id: [] for batch_id in batch_ids}
    per_worker_sent: Counter[str] = Counter()
    per_worker_tasks: Counter[str] = Counter()
    for args_kwargs, status, returned, ran_on in results:
        batch_id = args_kwargs["args"][0]
        if status != TaskResultStatus.SUCCESSFUL:
            failures.append(f"the task for batch {batch_id} is {status}")
        if len(ran_on) != 1:
            failures.append(f"the task for batch {batch_id} ran on {ran_on}")
        worker = ran_on[-1] if ran_on else "?"
        per_worker_tasks[worker] += 1
        if returned is True:
            senders.setdefault(batch_id, []).append(worker)
            per_worker_sent[worker] += 1
    for batch_id, sent_by in senders.items():
        if len(sent_by) != 1:
            failures.append(f"batch {batch_id} was sent by {len(sent_by)} tasks ({sent_by})")

    # The twin copies at the front: did two workers run them at the same moment?
    spans = {
        str(pk): (ran_on, begin, end)
        for pk, ran_on, begin, end in DBTaskResult.objects.values_list(
            "id", "worker_ids", "started_at", "finished_at"
        )
    }
    overlapping = 0
    for copy_a, copy_b in raced:
        (on_a, begin_a, end_a), (on_b, begin_b, end_b) = spans[copy_a], spans[copy_b]
        if None in (begin_a, end_a, begin_b, end_b):
            continue  # did not run: reported above
        if on_a != on_b and begin_a < end_b and begin_b < end_a:
            overlapping += 1

    if twins == "skipped" and front and args.workers > 1:
        print("prove: note: the queue ran dry before every worker started; no twin copies")
    elif raced and not overlapping:
        failures.append("no twin copies ran on two workers at once: no duplicate mid-flight")
    idle = [wid for wid in worker_ids if not per_worker_sent[wid]]
    if idle:
        failures.append(f"worker processes that sent no batch: {', '.join(idle)}")

    # The emulator: every /bulk-sms call, every number, exactly once, nothing else.
    calls = emulator.calls("/bulk-sms")
    other = {path: c for path, c in emulator.request_counts.items() if path != "/bulk-sms"}
    if other:
        failures.append(f"unexpected TextFlow calls: {other}")
    if len(calls) != len(batch_ids):
        failures.append(f"{len(calls)} /bulk-sms calls for {len(batch_ids)} batches")
    call_sizes = [len((c.json or {}).get("phone_numbers") or ()) for c in calls]
    too_big = [size for size in call_sizes if size > BATCH_SIZE]
    if too_big:
        failures.append(f"{len(too_big)} /bulk-sms calls carried more than {BATCH_SIZE} numbers")
    # The job's text: TEXT with the opt-out footer (BULK_OPT_OUT_FOOTER) the command adds.
    if not job.text.startswith(TEXT):
        failures.append(f"the job's text is not the command's: {job.text!r}")
    if any(c.fault for c in calls) or any((c.json or {}).get("text") != job.text for c in calls):
        failures.append("a /bulk-sms call was faulted or carried another text")
    received = Counter(m.phone_number for m in emulator.messages)
    wanted = {number(i) for i in range(n)}
    twice = sum(1 for count in received.values() if count > 1)
    missing = len(wanted - received.keys())
    strangers = len(received.keys() - wanted)
    if twice or missing or strangers or emulator.message_count != n:
        failures.append(
            f"the emulator received {emulator.message_count:,} SMS: {missing:,} recipients "
            f"missing, {twice:,} received more than once, {strangers:,} unknown numbers"
        )

    # -- the report ---------------------------------------------------------------------------
    starts = DBTaskResult.objects.order_by("started_at").values_list("started_at", flat=True)
    first_start = starts.first()
    send_seconds = (
        (job.finished_at - first_start).total_seconds() if job.finished_at and first_start else 0.0
    )
    rate = n / send_seconds if send_seconds > 0 else 0.0
    print(
        f"recipients   {n:,} distinct ({len(INVALID_LINES)} invalid and {EXTRA_DUPLICATES} "
        "duplicate lines skipped)"
    )
    print(
        f"batches      {len(batch_ids):,} of <= {BATCH_SIZE}; /bulk-sms calls {len(calls):,}, "
        f"largest {max(call_sizes, default=0)} numbers"
    )
    print(
        f"tasks        {len(results):,} = {queued_by_command:,} queued by the command + "
        f"{duplicate_tasks} duplicates ({len(back)} batches again later, {len(raced)} twice "
        f"more at once: {overlapping} of those pairs ran on two workers at the same time); "
        "each batch sent by exactly one task"
    )
    for wid in worker_ids:
        sent, ran = per_worker_sent[wid], per_worker_tasks[wid]
        print(f"  {wid}     {sent:,} batches sent, {ran:,} tasks run")
    print(
        f"emulator     {emulator.message_count:,} SMS to {len(received):,} numbers; "
        f"each recipient exactly once: {'yes' if not (twice or missing or strangers) else 'NO'}"
    )
    print(
        f"job          {job.pk} {job.status}: sent {job.sent:,}/{job.total:,}, "
        f"uncertain {job.uncertain}"
    )
    print(
        f"elapsed      ingest+enqueue {enqueue_seconds:.1f}s; {args.workers} workers "
        f"{workers_seconds:.1f}s wall (send phase {send_seconds:.1f}s, {rate:,.0f} recipients/s, "
        f"{slow_seconds:.1f}s of it with TextFlow slowed for the twins); "
        f"total {time.monotonic() - started:.1f}s"
    )
    if failures:
        print("\nprove: FAILED:", file=sys.stderr)
        for failure in failures:
            print(f"  - {failure}", file=sys.stderr)
        return 1
    print(f"OK: {n:,} recipients, each sent exactly once, by {args.workers} worker processes")
    return 0


def _spread(items: list[int], k: int) -> list[int]:
    """``k`` distinct items spread evenly over ``items`` (all of them if there are fewer)."""
    if k >= len(items):
        return list(items)
    step = len(items) / k
    return [items[int(i * step)] for i in range(k)]


if __name__ == "__main__":
    sys.exit(main())
