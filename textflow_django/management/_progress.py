"""Progress display shared by the bulk commands: a bar on a terminal, plain lines elsewhere."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def rate_text(rate: float) -> str:
    """A rate (things a second) as the commands show it: a whole number a second
    (``1,234/s``), else a minute (``30/min``), else an hour (``2/h``); never a ``0/s`` that
    reads as stalled while things move, nor ``2.8e-05/s``."""
    if rate <= 0:
        return "0/s"
    for seconds, unit in ((1, "s"), (60, "min"), (3600, "h")):
        if rate * seconds >= 1:
            return f"{rate * seconds:,.0f}/{unit}"
    return "<1/h"


class Progress:
    """Reports ``done`` of ``total``: a redrawn bar when ``stream`` is a terminal, else a
    plain line at most every ``interval`` seconds (logs and cron mail stay readable).
    ``unit`` names the total, counted (``_words.recipients``): ``10/30 recipients``.

    A plain line is printed only when ``done`` moved since the last one (forced or not):
    a log gets no repeated line. Nothing is shown while ``total`` is 0 (there is no share
    of nothing to show; ``total`` may be raised later).

    The rate is measured from the first update on (so work done before it, like the part
    of a resumed job sent earlier, does not count); until a second update brings a rate,
    the rate and ETA show ``--`` (the ETA ``0:00`` once everything is done).
    """

    def __init__(
        self,
        stream: TextIO,
        total: int,
        *,
        unit: Callable[[int], str],
        interval: float = 5.0,
    ) -> None:
        self.stream = stream
        self.total = total
        self.unit = unit
        self.interval = interval
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.first: tuple[float, int] | None = None  # (when, done) of the first update
        self.last_print = 0.0
        self.last_done: int | None = None  # done as last shown
        self.drawn = False  # a bar is on the terminal's line (close() ends it)

    def update(self, done: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = (now, done)
        if self.total <= 0:
            return
        if not self.tty and done == self.last_done:
            return
        if not force and now - self.last_print < (0.1 if self.tty else self.interval):
            return
        self.last_print = now
        self.last_done = done
        since, done_then = self.first
        rate = (done - done_then) / (now - since) if now > since and done > done_then else 0.0
        if rate > 0:
            speed = f"{rate_text(rate)} ETA {_duration((self.total - done) / rate)}"
        else:  # no rate yet: an ETA of 0:00 would be a guess
            speed = f"--/s ETA {'0:00' if done >= self.total else '--'}"
        share = done / self.total
        figures = f"{done:,}/{self.unit(self.total)} {speed}"
        if self.tty:
            width = 30
            filled = int(width * min(share, 1.0))
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\r[{bar}] {share:6.1%} {figures}")
            self.drawn = True
        else:
            self.stream.write(f"{share:6.1%} {figures}\n")
        self.stream.flush()

    def close(self) -> None:
        """End the bar's line on a terminal (if a bar was drawn)."""
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False
