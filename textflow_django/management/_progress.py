"""Progress display shared by the bulk commands: a bar on a terminal, plain lines elsewhere."""

from __future__ import annotations

import time
from typing import TextIO


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Reports ``done`` of ``total``: a redrawn bar when ``stream`` is a terminal, else a
    plain line at most every ``interval`` seconds (logs and cron mail stay readable)."""

    def __init__(self, stream: TextIO, total: int, *, label: str, interval: float = 5.0) -> None:
        self.stream = stream
        self.total = total
        self.label = label
        self.interval = interval
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.start = time.monotonic()
        self.first_done: int | None = None
        self.last_print = 0.0

    def update(self, done: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if self.first_done is None:
            self.first_done = done
        if not force and not self.tty and now - self.last_print < self.interval:
            return
        if not force and self.tty and now - self.last_print < 0.1:
            return
        self.last_print = now
        elapsed = now - self.start
        rate = (done - self.first_done) / elapsed if elapsed > 0 else 0.0
        left = (self.total - done) / rate if rate > 0 else 0.0
        share = done / self.total if self.total else 1.0
        figures = f"{done:,}/{self.total:,} {self.label} {rate:,.0f}/s ETA {_duration(left)}"
        if self.tty:
            width = 30
            filled = int(width * share)
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\r[{bar}] {share:6.1%} {figures}")
        else:
            self.stream.write(f"{share:6.1%} {figures}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
