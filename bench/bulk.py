"""Benchmark: textflow_bulk_sms on 1,000,000 recipients vs. the naive way, in one run.

Each measurement runs in a fresh child process (so peak RSS is its own) against the bundled
emulator (its own process, on loopback), on a SQLite file holding the recipients in a model
table (``tests.testapp.Contact.phone``, a ``PhoneNumberField``):

- app:   ``manage.py textflow_bulk_sms --model testapp.Contact --field phone``
- naive: load every number into a list, normalise each with ``phonenumbers``, post the
  batches of 500 with ``requests.post``.
- app at 10,000 recipients: the same command, for the flat-memory comparison.
- app with opt-outs: the same command on a copy of the 1,000,000 contacts with 100,000 of
  them (every tenth) on the opt-out list, which the ingest leaves out inside the database
  (issue 17).

Targets (2 cores): >= 100,000 recipients/s; peak RSS < 150 MB and within 20% of the
10,000-recipient peak; >= 2x the naive rate. With opt-outs: >= 100,000 recipients/s, both
read (1,000,000) and sent (900,000), per second of the whole run; peak RSS within 20% of
the run without opt-outs; exactly the 900,000 others reach the emulator (its count).

    python bench/bulk.py [--n 1000000] [--optouts 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._emulator_proc import emulator_process  # noqa: E402

BATCH = 500


def _setup_django(db: str, url: str) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    os.environ["TEXTFLOW_TEST_SQLITE"] = db
    os.environ["TEXTFLOW_TEST_EMULATOR_URL"] = url
    os.environ.pop("TEST_DATABASE", None)
    import django

    django.setup()


_AREAS = (202, 212, 305, 312, 415, 617, 713, 206)


def _number(i: int) -> str:
    """The i-th of 8 * 600 * 10,000 distinct valid US numbers."""
    line = i % 10_000
    exchange = 300 + (i // 10_000) % 600  # 300..899: ordinary exchanges
    area = _AREAS[(i // 6_000_000) % len(_AREAS)]
    return f"+1{area}{exchange}{line:04d}"


def _fill(db: str, url: str, n: int) -> None:
    """Create the schema and ``n`` distinct contacts (not timed)."""
    _setup_django(db, url)
    from django.core.management import call_command
    from django.db import connection, transaction

    call_command("migrate", verbosity=0)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM testapp_contact")
        # Real, valid US numbers (the naive baseline validates with phonenumbers too).
        rows = ((_number(i), "", "", "") for i in range(n))
        cursor.executemany(
            "INSERT INTO testapp_contact (phone, landline, uk_phone, guarded_phone) "
            "VALUES (%s, %s, %s, %s)",
            rows,
        )


def _fill_optouts(db: str, url: str, n: int, k: int) -> None:
    """Put ``k`` of the ``n`` contacts on the opt-out list, spread evenly (not timed)."""
    _setup_django(db, url)
    from textflow_django.models import OptOut

    step = n // k
    OptOut.objects.bulk_create(
        (OptOut(phone_number=_number(i), source="import") for i in range(0, step * k, step)),
        batch_size=5000,
    )


def _run_python(call: str) -> None:
    """Run ``bench.bulk.<call>`` in a fresh interpreter (Django is set up there, not here)."""
    subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys; sys.path.insert(0, {str(ROOT)!r}); from bench import bulk; bulk.{call}",
        ],
        check=True,
        cwd=ROOT,
    )


def _child_app(db: str, url: str) -> dict[str, float]:
    _setup_django(db, url)
    from django.core.management import call_command

    started = time.perf_counter()
    call_command(
        "textflow_bulk_sms",
        "--model",
        "testapp.Contact",
        "--field",
        "phone",
        "--text",
        "Our sale starts today",
        "--no-input",
        stdout=open(os.devnull, "w"),  # noqa: SIM115
        stderr=open(os.devnull, "w"),  # noqa: SIM115
    )
    return {"seconds": time.perf_counter() - started}


def _child_naive(db: str, url: str) -> dict[str, float]:
    _setup_django(db, url)
    import phonenumbers
    import requests

    from tests.testapp.models import Contact
    from textflow_django.testing import EMULATOR_API_KEY

    started = time.perf_counter()
    numbers = list(Contact.objects.values_list("phone", flat=True))
    clean = []
    for value in numbers:
        parsed = phonenumbers.parse(value, None)
        if phonenumbers.is_valid_number(parsed):
            clean.append(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))
    clean = list(dict.fromkeys(clean))
    headers = {"Authorization": f"Bearer {EMULATOR_API_KEY}"}
    for i in range(0, len(clean), BATCH):
        response = requests.post(  # noqa: S113 - the naive way
            f"{url}/bulk-sms",
            json={"phone_numbers": clean[i : i + BATCH], "text": "Our sale starts today"},
            headers=headers,
        )
        response.raise_for_status()
    return {"seconds": time.perf_counter() - started}


def _child(kind: str, db: str, url: str) -> None:
    result = _child_app(db, url) if kind == "app" else _child_naive(db, url)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def _emulator_sent(url: str) -> int:
    with urllib.request.urlopen(f"{url}/_emulator/state") as response:  # noqa: S310 - loopback
        state = json.load(response)
    return int(state.get("message_count", state.get("messages", 0)))


def _measure(kind: str, db: str, url: str) -> dict[str, float]:
    before = _emulator_sent(url)
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--db", db, "--url", url],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["delivered"] = _emulator_sent(url) - before
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="recipients in the big run")
    parser.add_argument("--small", type=int, default=10_000, help="recipients in the small run")
    parser.add_argument(
        "--optouts", type=int, default=100_000, help="opted-out contacts in the opt-out run"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 0 <= args.optouts < args.n:
        parser.error("--optouts must be from 0 (no opt-out run) to less than --n")
    if args.child:
        _child(args.child, args.db, args.url)
        return 0

    with (
        tempfile.TemporaryDirectory() as tmp,
        emulator_process(
            "--credits", "1e15", "--no-record-messages", "--no-record-requests"
        ) as url,
    ):
        small_db, big_db = f"{tmp}/small.sqlite3", f"{tmp}/big.sqlite3"
        print(f"bench/bulk.py: filling {args.small:,} and {args.n:,} contacts (not timed)...")
        for db, n in ((small_db, args.small), (big_db, args.n)):
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    f"import sys; sys.path.insert(0, {str(ROOT)!r}); from bench.bulk import _fill; "
                    f"_fill({db!r}, {url!r}, {n})",
                ],
                check=True,
                cwd=ROOT,
            )
        optout_db = f"{tmp}/optouts.sqlite3"
        if args.optouts:
            # The same contacts, before any job touched them, and the opt-out list.
            shutil.copyfile(big_db, optout_db)
            _run_python(f"_fill_optouts({optout_db!r}, {url!r}, {args.n}, {args.optouts})")
        small = _measure("app", small_db, url)
        app = _measure("app", big_db, url)
        optout = _measure("app", optout_db, url) if args.optouts else None
        naive = _measure("naive", big_db, url)

    app_rate = args.n / app["seconds"]
    naive_rate = args.n / naive["seconds"]
    growth = app["peak_rss_mb"] / small["peak_rss_mb"]
    checks = {
        "rate >= 100,000/s": app_rate >= 100_000,
        "peak RSS < 150 MB": app["peak_rss_mb"] < 150,
        f"RSS within 20% of the {args.small:,} run": growth <= 1.2,
        "rate >= 2x naive": app_rate / naive_rate >= 2,
        "every recipient delivered": app["delivered"] == args.n and naive["delivered"] == args.n,
    }
    print(
        f"  textflow_bulk_sms {args.n:>9,}: {app['seconds']:6.1f}s {app_rate:9,.0f}/s "
        f"peak RSS {app['peak_rss_mb']:5.1f} MB (delivered {app['delivered']:,})"
    )
    print(
        f"  textflow_bulk_sms {args.small:>9,}: {small['seconds']:6.1f}s "
        f"{args.small / small['seconds']:9,.0f}/s peak RSS {small['peak_rss_mb']:5.1f} MB"
    )
    print(
        f"  naive             {args.n:>9,}: {naive['seconds']:6.1f}s {naive_rate:9,.0f}/s "
        f"peak RSS {naive['peak_rss_mb']:5.1f} MB (delivered {naive['delivered']:,})"
    )
    print(
        f"  ratio app/naive {app_rate / naive_rate:.2f}x; "
        f"RSS {args.n:,}/{args.small:,} {growth:.2f}x"
    )
    if optout is not None:
        others = args.n - args.optouts
        read_rate = args.n / optout["seconds"]
        sent_rate = others / optout["seconds"]
        optout_growth = optout["peak_rss_mb"] / app["peak_rss_mb"]
        print(
            f"  with {args.optouts:,} opted out: {optout['seconds']:6.1f}s "
            f"{read_rate:9,.0f}/s read, {sent_rate:9,.0f}/s sent; peak RSS "
            f"{optout['peak_rss_mb']:5.1f} MB ({optout_growth:.2f}x the run without); "
            f"delivered {optout['delivered']:,}"
        )
        checks.update(
            {
                "opt-outs: rate >= 100,000/s (read and sent)": min(read_rate, sent_rate) >= 100_000,
                "opt-outs: RSS within 20% of the run without": optout_growth <= 1.2,
                f"opt-outs: exactly the {others:,} others delivered": optout["delivered"] == others,
            }
        )
    for name, ok in checks.items():
        print(f"  {'PASS' if ok else 'MISS'} {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
