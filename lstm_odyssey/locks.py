"""How a file is held by one live process: a sweep directory's lock, and a job's claim and running marker
(where those two lie is jobstate's).

Each is a small JSON file that names its holder (host, PID, the process's start, when it was taken, a
heartbeat). It is created exclusively: the content goes to a temporary file that is then hard-linked to the
name, which fails when the name exists (atomic on local disks and on NFS, unlike O_EXCL before NFSv3), so a
reader never sees half a file. The holder rewrites the heartbeat every HEARTBEAT_S seconds.

A file is stale, and another process may take it over (with a warning), when its holder is gone: on this
host, when the PID no longer runs, or runs another process (PID reused); from another host, whose PIDs cannot
be checked, when the heartbeat is older than STALE_S (ten missed heartbeats). A takeover renames the stale file
away first, so of two processes taking over at once exactly one wins.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .files import atomic_write_text

log = logging.getLogger("lstm_odyssey.sweep")

HEARTBEAT_S = 30.0
STALE_S = 300.0
LOCK_NAME = ".sweep.lock"


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (Linux), None elsewhere or when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def _process_start(pid: int) -> str | None:
    """The kernel's start time of process `pid`, which tells a reused PID from the original."""
    fields = _stat(pid)
    return fields[19] if fields else None  # field 22 of stat


def runs(pid: int) -> bool:
    """Whether `pid` is a running process of this host. A zombie is not: a killed sweep's workers may wait
    unreaped under an init that does not reap (containers)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    fields = _stat(pid)
    return not (fields and fields[0] in ("Z", "X"))


@dataclass
class Holder:
    """The process that holds a file."""

    host: str
    pid: int
    started: float
    heartbeat: float
    what: str = ""
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    proc_start: str | None = None

    @classmethod
    def me(cls, what: str) -> Holder:
        now = time.time()
        return cls(socket.gethostname(), os.getpid(), now, now, what, proc_start=_process_start(os.getpid()))

    def is_live(self, stale_after: float = STALE_S) -> bool:
        if self.host == socket.gethostname():
            if not runs(self.pid):
                return False
            now_start = _process_start(self.pid)
            return not (self.proc_start and now_start and now_start != self.proc_start)
        return time.time() - self.heartbeat < stale_after

    def describe(self) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"PID {self.pid} on {self.host}, since {started}, last heartbeat {time.time() - self.heartbeat:.0f} s ago"


def read_holder(path: Path) -> tuple[Holder | None, str | None]:
    """(the holder, the file's text); (None, None) when there is no file, (None, text) when it is unreadable."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None, None
    except OSError:
        return None, ""
    try:
        return Holder(**json.loads(text)), text
    except (ValueError, TypeError):
        return None, text


def _unique(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.{tag}")


def _create(path: Path, holder: Holder) -> bool:
    """Make `path` hold `holder` unless it exists; atomic (a complete temporary file is hard-linked)."""
    tmp = _unique(path, "new")
    atomic_write_text(tmp, json.dumps(asdict(holder)))
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def _take_over(path: Path, seen: str) -> None:
    """Remove the stale `path` whose text was `seen`; put it back if it changed meanwhile (its holder
    came back, or another process took it over first)."""
    moved = _unique(path, "stale")
    try:
        os.rename(path, moved)
    except FileNotFoundError:
        return
    try:
        if moved.read_text() != seen:
            try:
                os.link(moved, path)
            except FileExistsError:
                pass
    finally:
        moved.unlink(missing_ok=True)


class Held:
    """A file this process holds."""

    def __init__(self, path: Path, holder: Holder) -> None:
        self.path = path
        self.holder = holder

    def beat(self) -> bool:
        """Refresh the heartbeat; False when the file was taken over by another process."""
        current, _ = read_holder(self.path)
        if current is None:
            return _create(self.path, self.holder)
        if current.token != self.holder.token:
            return False
        self.holder.heartbeat = time.time()
        atomic_write_text(self.path, json.dumps(asdict(self.holder)))
        return True

    def release(self) -> None:
        current, _ = read_holder(self.path)
        if current is not None and current.token == self.holder.token:
            self.path.unlink(missing_ok=True)


def acquire(path: str | Path, what: str, stale_after: float = STALE_S) -> Held | Holder:
    """Hold `path` (taking it over when stale), or return the live Holder that keeps it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(20):
        if _create(path, holder := Holder.me(what)):
            return Held(path, holder)
        current, text = read_holder(path)
        if text is None:  # released meanwhile
            continue
        if current is not None and current.is_live(stale_after):
            return current
        why = "unreadable" if current is None else f"its holder is gone: {current.describe()}"
        log.warning("taking over the stale %s %s (%s)", what, path, why)
        _take_over(path, text)
    raise RuntimeError(f"could not take {path}: it changes hands too often; remove it if no process uses it")


class Holdings:
    """The files one process holds, their heartbeats refreshed by a background thread."""

    def __init__(self, interval: float = HEARTBEAT_S) -> None:
        self.interval = interval
        self.lost: list[Held] = []
        self._held: dict[Path, Held] = {}
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def add(self, held: Held) -> Held:
        with self._mutex:
            self._held[held.path] = held
        return held

    def release(self, held: Held) -> None:
        with self._mutex:
            self._held.pop(held.path, None)
        held.release()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._mutex:
                held = list(self._held.values())
            for item in held:
                try:
                    if not item.beat():
                        log.error("lost %s to another process; its job may run twice", item.path)
                        self.lost.append(item)
                        with self._mutex:
                            self._held.pop(item.path, None)
                except OSError as err:  # a shared filesystem's hiccup: try again at the next beat
                    log.warning("could not refresh %s: %s", item.path, err)

    def __enter__(self) -> Holdings:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with self._mutex:
            held, self._held = list(self._held.values()), {}
        for item in held:
            item.release()
