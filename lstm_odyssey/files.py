"""Atomic file writes: the one helper every record, checkpoint, download and table goes through.

A reader (a sweep collecting records, a rerun resuming a checkpoint) sees either the old file or the
complete new one, never half of it: the content goes to a temporary file in the same folder, is flushed
to disk, and is renamed over the target. The temporary name is unique per process and call (PID plus a
random suffix), so two writers of one path never collide on the temporary file; the last rename wins.
The file gets the usual permissions (0666 minus the umask), not the owner-only mode of a temp file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None], suffix: str = ".tmp") -> Path:
    """Call `write(fh)` on a fresh binary file and move it to `path` when it returns; on any error
    (including KeyboardInterrupt) the temporary file is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=suffix)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """`atomic_write` for UTF-8 text."""
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))
