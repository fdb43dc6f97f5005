"""Store old verifications in both apps' tables, as a site that has run for a while has them.

    DJANGO_SETTINGS_MODULE=bench.loadsite.settings python -m bench.loadsite.oldrows 100000

Writes ``count`` rows into the app's ``PhoneVerification`` and ``count`` into the peer's
``SMSVerification``, all for numbers the load generator never uses (area code 718), created
over the past 30 days and long expired, then runs ``ANALYZE`` so the planner knows the tables
as a site that has run for a while would. What the rows are:

- the app: ``count / 4`` numbers with 4 rows each (a verified one whose token was used, two
  superseded ones, one pending whose code expired), with random digests where the app keeps
  digests;
- the peer: one row per number (its send deletes a number's older rows), half of them
  verified, its code and session token in clear as it keeps them.

Prints one line: how many rows each table now holds and how long the insert took.
"""

from __future__ import annotations

import random
import secrets
import string
import sys
import time
from datetime import timedelta
from typing import Any

import django
from django.db.models import F

BATCH = 5000
#: An area code the load generator (load.lua) never uses.
OLD_PREFIX = "+1718"


def old_number(i: int) -> str:
    """The i-th old number: +1 718 NXX XXXX, exchange from 300 to 899 (valid NANP numbers)."""
    return f"{OLD_PREFIX}{300 + (i // 10000) % 600}{i % 10000:04d}"


def _hex() -> str:
    return secrets.token_hex(32)


def app_rows(count: int, now: Any) -> int:
    """``count`` old ``PhoneVerification`` rows, 4 per number; returns how many were written."""
    from textflow_django.models import PhoneVerification as PV

    fields = {f.name for f in PV._meta.get_fields()}
    rng = random.Random(12)
    written = 0
    kinds = ("verified", "superseded", "superseded", "expired")
    while written < count:
        batch: list[Any] = []
        for i in range(written, min(count, written + BATCH)):
            created = now - timedelta(seconds=rng.randint(3600, 30 * 86400))
            kind = kinds[i % 4]
            values: dict[str, Any] = {
                "phone_number": old_number(i // 4),
                "status": {
                    "verified": PV.Status.VERIFIED,
                    "superseded": PV.Status.SUPERSEDED,
                    "expired": PV.Status.PENDING,
                }[kind],
                "mode": PV.Mode.LOCAL,
                "code_hash": _hex(),
                "client_ip": f"198.51.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                "handle_hash": _hex()[:64],
                "expires_at": created + timedelta(seconds=600),
            }
            if kind == "verified":
                values.update(
                    verified_at=created + timedelta(seconds=40),
                    token_hash=_hex()[:64],
                    token_used_at=created + timedelta(seconds=90),
                )
            batch.append(PV(**{k: v for k, v in values.items() if k in fields}))
        PV.objects.bulk_create(batch)
        written += len(batch)
    # created_at is auto_now_add (bulk_create stamped it now): one statement sets the old one.
    PV.objects.filter(phone_number__startswith=OLD_PREFIX).update(
        created_at=F("expires_at") - timedelta(seconds=600)
    )
    return written


def peer_rows(count: int) -> int:
    """``count`` old ``SMSVerification`` rows, one per number; returns how many were written."""
    from phone_verify.models import SMSVerification as SV  # type: ignore[import-untyped]

    rng = random.Random(13)
    alphabet = string.ascii_letters + string.digits + "-_"
    written = 0
    while written < count:
        batch: list[Any] = []
        for i in range(written, min(count, written + BATCH)):
            batch.append(
                SV(
                    phone_number=old_number(i),
                    security_code=f"{rng.randrange(10**6):06d}",
                    # A JWT of the peer's is about 130 characters of base64url and dots.
                    session_token="".join(rng.choice(alphabet) for _ in range(130)),
                    is_verified=i % 2 == 0,
                    failed_attempts=0,
                )
            )
        SV.objects.bulk_create(batch)
        written += len(batch)
    # created_at is auto_now_add and modified_at auto_now (bulk_create stamped them now): one
    # statement makes them old, days apart (the peer's old rows are never read for their age).
    SV.objects.filter(phone_number__startswith=OLD_PREFIX).update(
        created_at=F("created_at") - timedelta(days=20),
        modified_at=F("modified_at") - timedelta(days=20),
    )
    return written


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    django.setup()
    from django.db import connection
    from django.utils import timezone
    from phone_verify.models import SMSVerification

    from textflow_django.models import PhoneVerification

    started = time.monotonic()
    now = timezone.now()
    app_rows(count, now)
    peer_rows(count)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    print(
        f"old rows: PhoneVerification {PhoneVerification.objects.count()}, "
        f"SMSVerification {SMSVerification.objects.count()} "
        f"({time.monotonic() - started:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
