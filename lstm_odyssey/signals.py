"""SIGTERM as an interrupt: kill, scancel or a closed terminal stop a sweep the way Ctrl-C does, so its
workers are stopped (joblib does that for KeyboardInterrupt) and the command line can say how to resume. Both
signals are remembered (`received`), so that an interrupt a library turned into an error of its own still stops
the run or the sweep instead of failing a job."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT, raised in the main thread as Ctrl-C's KeyboardInterrupt; `signum` gives the exit code."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


def exit_code(err: KeyboardInterrupt) -> int:
    """128 + the signal: 130 for Ctrl-C (SIGINT), 143 for SIGTERM."""
    return 128 + (err.signum if isinstance(err, Interrupted) else signal.SIGINT)


_received: int | None = None
_depth = 0  # how many `interrupts` blocks the main thread is in


def _raise(signum: int, frame: Any) -> None:
    global _received
    _received = signum
    raise Interrupted(signum)


def received() -> int | None:
    """The signal that interrupted the `interrupts` block this process is in, if one did. A library that calls back into Python (torch's
    C++ core, a pickler) may turn the Interrupted raised there into an exception of its own; code that catches
    `Exception` asks this so that an interrupted run is reported as interrupted, never as failed."""
    return _received


def reraise_if_interrupted(err: BaseException) -> None:
    """Raise Interrupted instead of `err` when a signal arrived: the run stops to be resumed, not failed."""
    if _received is not None and not isinstance(err, KeyboardInterrupt):
        raise Interrupted(_received) from err


@contextlib.contextmanager
def interrupts() -> Iterator[None]:
    """Within the block, SIGTERM, and SIGINT where Python's Ctrl-C handler has it, raise Interrupted in the main
    thread (elsewhere this does nothing). A SIGINT that the process was started with ignored (a background job of
    a shell script) stays ignored, as the shell meant. The outermost block forgets the signal when it ends, so
    that no later error (a bad config in the same notebook or test process) is mistaken for an interrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    global _received, _depth
    if _depth == 0:
        _received = None
    _depth += 1
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _raise)}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, _raise)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _depth -= 1
        if _depth == 0:
            _received = None
