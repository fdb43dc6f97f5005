"""Run the TextFlow emulator as a process: ``python -m textflow_django.testing``.

Prints one line, ``TextFlow emulator listening on http://HOST:PORT/api`` (``https`` with
``--certfile``), once the port is bound (so a parent process can read the URL, ``--port 0``
included), then serves until SIGINT or SIGTERM and exits 0. With ``--print-messages`` it
also prints one line per SMS it accepts, ``SMS to +381690156360: Your verification code is:
4045`` (``Bulk SMS to ...`` for a bulk job's recipients), flushed at once, so the code
"sent" to a phone can be read in the terminal; nothing else is ever printed on stdout. The
API key is never printed: pass ``--api-key`` or use the built-in ``EMULATOR_API_KEY``.
``--reply-url`` (and ``--reply-secret``, never printed either) is where a phone's replies
go, as TextFlow forwards them (``POST /_emulator/reply`` makes one). Exits 1 if the address
cannot be bound or an option is wrong.
"""

from __future__ import annotations

import argparse
import signal
import ssl
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType

from ._emulator import EMULATOR_API_KEY, SentSMS, TextFlowEmulator

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m textflow_django.testing",
        description="Serve a fake TextFlow API on loopback for tests, benchmarks and demos.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8025, help="port to bind; 0 picks a free one (default 8025)"
    )
    parser.add_argument(
        "--api-key",
        default=EMULATOR_API_KEY,
        help="bearer key to accept (default: textflow_django.testing.EMULATOR_API_KEY)",
    )
    parser.add_argument(
        "--delay",
        type=float,
        default=0.0,
        help="seconds to sleep before answering each API request (default 0)",
    )
    parser.add_argument(
        "--code-length", type=int, default=4, help="digits per verification code (default 4)"
    )
    parser.add_argument(
        "--credits", type=float, default=1000.0, help="starting balance (default 1000)"
    )
    parser.add_argument("--price", type=float, default=0.05, help="price of one SMS (default 0.05)")
    parser.add_argument(
        "--no-record-messages",
        action="store_true",
        help="count SMS but do not keep them (for long benchmarks)",
    )
    parser.add_argument(
        "--no-record-requests",
        action="store_true",
        help="count requests but do not keep them (for long benchmarks)",
    )
    parser.add_argument(
        "--certfile",
        help="serve HTTPS with this PEM certificate chain (and --keyfile, unless it holds the key)",
    )
    parser.add_argument("--keyfile", help="the PEM private key of --certfile")
    parser.add_argument(
        "--bulk-rate",
        type=float,
        default=5.0,
        help="bulk recipients delivered per second, so /bulk-count drops by itself; "
        "0: only by POST /_emulator/deliver-bulk (default 5)",
    )
    parser.add_argument(
        "--reply-url",
        help="the site's webhook for replies: POST /_emulator/reply forwards a phone's reply "
        "there, as TextFlow does (default: none)",
    )
    parser.add_argument(
        "--reply-secret",
        default="",
        help="the secret each reply carries (the site's REPLY_SECRET; never printed)",
    )
    parser.add_argument(
        "--print-messages",
        action="store_true",
        help="print every SMS received, one line each (number and text: codes included)",
    )
    return parser


def _printer() -> Callable[[SentSMS], None]:
    """Print each SMS as one line on stdout, flushed; safe from the server's threads."""
    lock = threading.Lock()

    def show(sms: SentSMS) -> None:
        # One SMS, one line: a line break in the text would pass for another message.
        text = sms.text.replace("\r", "\\r").replace("\n", "\\n")
        who = "Bulk SMS" if sms.kind == "bulk" else "SMS"
        with lock:
            sys.stdout.write(f"{who} to {sms.phone_number}: {text}\n")
            sys.stdout.flush()

    return show


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator until SIGINT/SIGTERM; return the process exit code."""
    args = _parser().parse_args(argv)
    stopping = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    # Installed before binding, so a signal sent right after the URL line is never lost.
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    try:
        context = None
        if args.certfile:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(args.certfile, args.keyfile)
        elif args.keyfile:
            raise ValueError("--keyfile needs --certfile")
        if args.reply_secret and not args.reply_url:
            raise ValueError("--reply-secret needs --reply-url")
        emulator = TextFlowEmulator(
            host=args.host,
            port=args.port,
            api_key=args.api_key,
            delay=args.delay,
            code_length=args.code_length,
            credits=args.credits,
            price=args.price,
            record_messages=not args.no_record_messages,
            record_requests=not args.no_record_requests,
            ssl_context=context,
            bulk_rate=args.bulk_rate,
            on_message=_printer() if args.print_messages else None,
            reply_url=args.reply_url,
            reply_secret=args.reply_secret,
        ).start()
    except (OSError, ValueError) as exc:
        print(f"textflow emulator: {exc}", file=sys.stderr)
        return 1
    print(f"TextFlow emulator listening on {emulator.url}", flush=True)
    try:
        # A timed wait: the signal handler's set() wakes it at once, the timeout is a backstop.
        while not stopping.wait(1.0):
            pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
