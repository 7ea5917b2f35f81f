"""A job's state on disk, owned here: its record (`result.json`), its checkpoint (`checkpoints/last.pt`) and
a pack's checkpoint (`pack.pt`), the running marker of the process that trains it (`.running`) and the claim of
the sweep that runs it (`.claim-<k>` in its grid point's folder). The engine writes the record and checkpoints;
the sweeper, the pack jobs and the command line ask this module (done? resumable? start afresh? held by whom?)
instead of reading, deleting or naming the files themselves. How a marker or claim is held (atomically, with a
heartbeat, taken over when its holder is gone) is locks.py's.

What a record means for a job:

* none: the job runs (resuming from its checkpoint, if it has one);
* ``ok`` or ``diverged``: done, kept (``sweep.rerun_failed=true`` starts a diverged job afresh);
* ``failed``: resumed from its checkpoint when it has one, run again when it was killed before writing one
  (`stopped_by` ``killed``), else kept unless ``sweep.rerun_failed=true``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .checkpoints import CHECKPOINT_DIR, LAST, load_checkpoint
from .locks import Held, Holder, acquire, read_holder
from .results import DIVERGED, OK, RECORD_NAME, read_record

KILLED = "killed"  # a record's stopped_by when its job ended without writing one
PACK_CHECKPOINT = "pack.pt"
RUNNING_MARKER = ".running"


def last_checkpoint(run_dir: Path) -> Path:
    """Where a run's resumable state lives."""
    return Path(run_dir) / CHECKPOINT_DIR / LAST


def record(run_dir: Path) -> dict | None:
    """The record in a run directory, or None when there is none (or it is unreadable)."""
    try:
        found = read_record(Path(run_dir) / RECORD_NAME)
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def finished(run_dir: Path) -> bool:
    """Whether the run ended (ok or diverged): its record stays, and a resumed pack does not train it again."""
    return (record(run_dir) or {}).get("status") in (OK, DIVERGED)


def done(run_dir: Path) -> dict | None:
    """The record of a run that ended ok, else None."""
    found = record(run_dir)
    return found if found and found.get("status") == OK else None


def needs_run(found: dict | None, run_dir: Path, rerun_failed: bool) -> bool:
    """Whether a job with record `found` must run (again); see the module docstring."""
    if found is None:
        return True
    status = found.get("status")
    if status == OK:
        return False
    if rerun_failed:
        return True
    if status == DIVERGED:
        return False
    return last_checkpoint(run_dir).exists() or found.get("stopped_by") == KILLED


def restart(run_dir: Path, rerun_failed: bool) -> None:
    """Make a job that must run again look unstarted: its record goes (the new attempt writes its own; no
    record means "not done"), and its checkpoint too when it starts afresh (`rerun_failed`, or none to resume)."""
    checkpoint = last_checkpoint(run_dir)
    if rerun_failed or not checkpoint.exists():
        checkpoint.unlink(missing_ok=True)
    (Path(run_dir) / RECORD_NAME).unlink(missing_ok=True)


def hold_running(run_dir: Path) -> Held | Holder:
    """Take the job's running marker for this process, or the live Holder of it when another process trains it."""
    return acquire(Path(run_dir) / RUNNING_MARKER, "running job")


def running_elsewhere(run_dir: Path) -> Holder | None:
    """The live process (of this sweep or another) that trains the job in `run_dir`, if any."""
    holder, _ = read_holder(Path(run_dir) / RUNNING_MARKER)
    return holder if holder is not None and holder.is_live() else None


def claim(point_dir: Path, k: int) -> Held | Holder:
    """Claim trial k of the grid point whose jobs live in `point_dir` for this sweep, or the live Holder of the
    claim when another sweep has it."""
    return acquire(Path(point_dir) / f".claim-{k:03d}", "job claim")


@dataclass
class SavedPack:
    """What a pack's checkpoint says of its members: the run directories still training at its last epoch,
    those that had left, and the epochs the training ones had run."""

    active: list[str]
    left: list[str]
    epochs: int


def saved_pack(pack_dir: Path, run_dirs: list[str]) -> SavedPack | None:
    """The state of the pack of `run_dirs` in `pack_dir`, when its checkpoint is of exactly these members;
    None otherwise. A member in the checkpoint whose run has ended (it stopped at that epoch) has left."""
    path = Path(pack_dir) / PACK_CHECKPOINT
    if not path.exists():
        return None
    ckpt = load_checkpoint(path, "cpu")
    if ckpt["run_dirs"] != run_dirs:
        return None
    saved = {run_dirs[k] for k in ckpt["active"]}
    training = [d for d in run_dirs if d in saved and not finished(Path(d))]
    return SavedPack(training, [d for d in run_dirs if d not in training], sum(int(loop["epoch"]) for loop in ckpt["loops"]))
