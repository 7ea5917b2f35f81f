"""A sweep's job in its worker process: die with the sweep, and mark the job as running.

The sweeper puts `<host>:<pid>` of the sweeping process in $LSTM_ODYSSEY_SWEEP before it launches jobs. A job
that runs in a direct child of that process (a joblib/loky worker, a submitit-local job) asks the kernel to
kill it when its parent dies: prctl(PR_SET_PDEATHSIG, SIGKILL) on Linux. The kernel does it at once, also while
the worker is deep in a C++ kernel or a CUDA call, which a watchdog thread polling the parent PID could not
promise (it needs the GIL and wakes up only every so often); the watchdog is the fallback elsewhere. A
SLURM job is no child of the sweep and outlives it on purpose: its `.running` marker tells a rerun to wait.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from .. import jobstate
from ..locks import Held, Holder, Holdings, runs

SWEEP_ENV = "LSTM_ODYSSEY_SWEEP"
PR_SET_PDEATHSIG = 1


class AlreadyRunning(RuntimeError):
    """Another process runs this job right now."""


def sweep_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _sweep_parent() -> int | None:
    """The PID of the local sweep that launched this process as its direct child, else None. A child whose
    sweep died before it got here (a queued task read after the parent's death) exits at once."""
    host, _, pid = os.environ.get(SWEEP_ENV, "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return None  # no sweep, another host's, or the job runs in the sweeping process itself
    if os.getppid() != int(pid):
        if not runs(int(pid)):
            os._exit(1)  # orphaned: the sweep is gone, and a rerun will train this job
        return None  # a child of something else (a SLURM step): the claims and markers protect it
    return int(pid)


def die_with_parent() -> None:
    """In a local worker of a sweep: get killed when the sweeping process dies, and leave Ctrl-C to it
    (it stops its workers itself). Does nothing in the sweeping process itself or in a SLURM job."""
    parent = _sweep_parent()
    if parent is None:
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    else:
        def watch() -> None:
            while os.getppid() == parent:
                threading.Event().wait(1.0)
            os._exit(1)

        threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()
    if os.getppid() != parent:  # the sweep died before the kernel was told
        os._exit(1)


@contextlib.contextmanager
def local_pool() -> Iterator[None]:
    """While a sweep launches: joblib's loky pool starts every worker with `die_with_parent`, so that a worker that
    never got a job (an idle one) dies with the sweep too, instead of living on until loky's idle timeout (300 s)
    with the sweep's stdout and stderr open. Hydra's joblib launcher names the backend "loky" itself, so the name
    is bound, for the launch, to loky with that initializer."""
    from joblib import parallel, register_parallel_backend
    from joblib._parallel_backends import LokyBackend

    def loky(nesting_level: int | None = None, **kwargs) -> LokyBackend:
        return LokyBackend(nesting_level=nesting_level, initializer=die_with_parent, **kwargs)

    plain = parallel.BACKENDS["loky"]
    register_parallel_backend("loky", loky)
    try:
        yield
    finally:
        register_parallel_backend("loky", plain)


@contextlib.contextmanager
def running(run_dir: Path) -> Iterator[Held]:
    """Hold the job's `.running` marker (heartbeat included) while it trains; AlreadyRunning when another
    live process holds it (the sweep then waits for that one instead)."""
    held = jobstate.hold_running(run_dir)
    if isinstance(held, Holder):
        raise AlreadyRunning(f"{run_dir} is being trained by {held.describe()}")
    with Holdings() as holdings:
        holdings.add(held)
        yield held
