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
    plain line at most every ``interval`` seconds (logs and cron mail stay readable).

    The rate is measured from the first update on (so work done before it, like the part
    of a resumed job sent earlier, does not count); until a second update brings a rate,
    the rate and ETA show ``--`` (the ETA ``0:00`` once everything is done).
    """

    def __init__(self, stream: TextIO, total: int, *, label: str, interval: float = 5.0) -> None:
        self.stream = stream
        self.total = total
        self.label = label
        self.interval = interval
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.first: tuple[float, int] | None = None  # (when, done) of the first update
        self.last_print = 0.0

    def update(self, done: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = (now, done)
        if not force and now - self.last_print < (0.1 if self.tty else self.interval):
            return
        self.last_print = now
        since, done_then = self.first
        rate = (done - done_then) / (now - since) if now > since and done > done_then else 0.0
        if rate > 0:
            speed = f"{rate:,.0f}/s ETA {_duration((self.total - done) / rate)}"
        else:  # no rate yet: an ETA of 0:00 would be a guess
            speed = f"--/s ETA {'0:00' if done >= self.total else '--'}"
        share = done / self.total if self.total else 1.0
        figures = f"{done:,}/{self.total:,} {self.label} {speed}"
        if self.tty:
            width = 30
            filled = int(width * min(share, 1.0))
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\r[{bar}] {share:6.1%} {figures}")
        else:
            self.stream.write(f"{share:6.1%} {figures}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
