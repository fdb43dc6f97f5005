"""Run the TextFlow emulator in a child process for benchmarks (so it has a core of its own)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def emulator_process(*extra: str, started: Callable[[int], None] | None = None) -> Iterator[str]:
    """Start ``python -m textflow_django.testing --port 0``; yield its base URL.

    ``started`` is called with the process id once it listens (to meter its CPU, say).
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "textflow_django.testing", "--port", "0", *extra],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "http://" not in line and "https://" not in line:
            raise RuntimeError(f"emulator did not start: {line!r}")
        if started is not None:
            started(proc.pid)
        yield line.rsplit(" ", 1)[-1].strip()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
