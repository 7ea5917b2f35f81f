"""The study you can watch: one progress line for the whole sweep.

    [sweep] quick: 17/39 jobs done (ok 15, diverged 1, failed 1), 4 running, 6 queued, 2m13s elapsed, ETA 2m41s

On a terminal the line is redrawn in place every second (the jobs' own per-epoch lines go to their log files);
elsewhere (a pipe, CI, a SLURM log) it is printed as a plain line after every launch and every `every` seconds.
The ETA extrapolates the jobs finished by this run of the command (not those done before). Of the launched jobs
not yet ended, those whose running marker a live process holds are "running", the others (waiting for a pool
worker or in a SLURM queue) "queued".
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from ..results import STATUSES


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """Counts of a sweep's jobs and the line that shows them (thread-safe: a ticker thread redraws it)."""

    def __init__(self, name: str, total: int, stream: TextIO | None = None, every: float = 60.0,
                 read: Callable[[Path], dict | None] | None = None,
                 is_running: Callable[[Path], bool] | None = None) -> None:
        self.name = name
        self.total = total
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.every = every
        self.counts: Counter = Counter()
        self.ran = 0  # finished by this run of the command
        self.in_flight: list[Path] = []  # run directories of the batch being launched
        self.read = read  # a run directory's record, to count jobs of a batch as they end
        self.is_running = is_running  # whether a live process trains the job of a run directory now
        self.elsewhere = 0  # claimed by another sweep process
        self.started = time.monotonic()
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, name="progress", daemon=True)

    def done(self, status: str, before: bool = False) -> None:
        with self._mutex:
            self.counts[status] += 1
            self.ran += not before

    def line(self) -> str:
        counts = Counter(self.counts)
        records = [self.read(d) for d in self.in_flight] if self.read else [None] * len(self.in_flight)
        ended = [r for r in records if r is not None]
        counts.update(r.get("status") for r in ended)  # jobs of the running batch that have ended
        waiting = [d for d, r in zip(self.in_flight, records) if r is None]
        running = sum(map(self.is_running, waiting)) if self.is_running else len(waiting)
        done = sum(counts.values())
        ran = self.ran + len(ended)
        by_status = ", ".join(f"{s} {counts.get(s, 0)}" for s in STATUSES)
        elapsed = time.monotonic() - self.started
        left = self.total - done - self.elsewhere
        eta = _duration(elapsed / ran * left) if ran and left else ("0s" if not left else "?")
        parts = [f"[sweep] {self.name}: {done}/{self.total} jobs done ({by_status})"]
        if running:
            parts.append(f"{running} running")
        if len(waiting) > running:
            parts.append(f"{len(waiting) - running} queued")
        if self.elsewhere:
            parts.append(f"{self.elsewhere} in other sweeps")
        parts += [f"{_duration(elapsed)} elapsed", f"ETA {eta}"]
        return ", ".join(parts)

    def show(self) -> None:
        """Redraw the line (terminal) or print it as a plain line."""
        with self._mutex:
            text = self.line()
            if self.tty:
                self.stream.write("\r\x1b[2K" + text)
            else:
                self.stream.write(text + "\n")
            self.stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(1.0 if self.tty else self.every):
            self.show()

    def __enter__(self) -> Progress:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self.tty:
            self.show()
            self.stream.write("\n")
            self.stream.flush()
