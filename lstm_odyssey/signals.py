"""SIGTERM as an interrupt: kill, scancel or a closed terminal stop a sweep the way Ctrl-C does, so its
workers are stopped (joblib does that for KeyboardInterrupt) and the command line can say how to resume."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


class Interrupted(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt; `signum` gives the exit code."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


def exit_code(err: KeyboardInterrupt) -> int:
    """128 + the signal: 130 for Ctrl-C (SIGINT), 143 for SIGTERM."""
    return 128 + (err.signum if isinstance(err, Interrupted) else signal.SIGINT)


_received: int | None = None


def _raise(signum: int, frame: Any) -> None:
    global _received
    _received = signum
    raise Interrupted(signum)


def received() -> int | None:
    """The signal that interrupted this process, if one did. A library that calls back into Python (torch's
    C++ core, a pickler) may turn the Interrupted raised there into an exception of its own; code that catches
    `Exception` asks this so that an interrupted run is reported as interrupted, never as failed."""
    return _received


def reraise_if_interrupted(err: BaseException) -> None:
    """Raise Interrupted instead of `err` when a signal arrived: the run stops to be resumed, not failed."""
    if _received is not None and not isinstance(err, KeyboardInterrupt):
        raise Interrupted(_received) from err


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within the block, SIGTERM raises Interrupted in the main thread (elsewhere it does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    global _received
    _received = None
    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
