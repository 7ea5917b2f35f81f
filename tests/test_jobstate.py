"""jobstate.py, the one owner of a job's files: what a record means (keep, resume, run again), starting a job
afresh, and what a pack's checkpoint says of its members."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lstm_odyssey import checkpoints, jobstate
from lstm_odyssey.results import write_record


def job(tmp_path: Path, name: str, status: str | None, checkpoint: bool = False, stopped_by: str | None = None) -> Path:
    run_dir = tmp_path / name
    run_dir.mkdir()
    if status is not None:
        write_record(run_dir, {"status": status, "stopped_by": stopped_by})
    if checkpoint:
        jobstate.last_checkpoint(run_dir).parent.mkdir()
        jobstate.last_checkpoint(run_dir).write_bytes(b"state")
    return run_dir


@pytest.mark.parametrize(("status", "checkpoint", "stopped_by", "again", "with_rerun_failed"), [
    (None, False, None, True, True),  # never ran
    (None, True, None, True, True),  # killed before its record: resumes
    ("ok", True, "epoch_cap", False, False),  # done, whatever else
    ("diverged", False, "diverged", False, True),  # done, unless rerun_failed starts it afresh
    ("failed", True, None, True, True),  # resumes from its checkpoint
    ("failed", False, "killed", True, True),  # killed before its first checkpoint: runs again
    ("failed", False, None, False, True),  # a real failure stays failed unless rerun_failed
])
def test_what_a_record_means(tmp_path, status, checkpoint, stopped_by, again, with_rerun_failed):
    run_dir = job(tmp_path, "j", status, checkpoint, stopped_by)
    found = jobstate.record(run_dir)
    assert (found is None) == (status is None)
    assert jobstate.needs_run(found, run_dir, rerun_failed=False) is again
    assert jobstate.needs_run(found, run_dir, rerun_failed=True) is with_rerun_failed
    assert jobstate.finished(run_dir) is (status in ("ok", "diverged"))
    assert (jobstate.done(run_dir) is not None) is (status == "ok")


def test_an_unreadable_record_counts_as_none(tmp_path):
    run_dir = job(tmp_path, "j", None)
    (run_dir / "result.json").write_text("{ half a rec")
    assert jobstate.record(run_dir) is None and not jobstate.finished(run_dir)


def test_restart_keeps_the_checkpoint_only_to_resume(tmp_path):
    resumed = job(tmp_path, "resumed", "failed", checkpoint=True)
    jobstate.restart(resumed, rerun_failed=False)
    assert jobstate.record(resumed) is None and jobstate.last_checkpoint(resumed).exists()
    afresh = job(tmp_path, "afresh", "failed", checkpoint=True)
    jobstate.restart(afresh, rerun_failed=True)
    assert jobstate.record(afresh) is None and not jobstate.last_checkpoint(afresh).exists()


def test_a_pack_checkpoint_names_its_training_members(tmp_path):
    dirs = [str(job(tmp_path, f"m{k}", status)) for k, status in enumerate([None, "ok", None, "failed"])]
    pack_dir = tmp_path / "pack"
    loops = [{"epoch": e} for e in (5, 5, 5)]
    checkpoints.save({"run_dirs": dirs, "active": [0, 1, 3], "model": {"w": torch.zeros(3)}, "optimizer": {},
                      "loops": loops, "hparams": [None] * 3}, pack_dir / jobstate.PACK_CHECKPOINT)
    saved = jobstate.saved_pack(pack_dir, dirs)
    # m1 was in the checkpoint but its run ended at that epoch: it left; m2 had left before
    assert (saved.active, saved.left, saved.epochs) == ([dirs[0], dirs[3]], [dirs[1], dirs[2]], 15)
    assert jobstate.saved_pack(pack_dir, dirs[:3]) is None  # another set of members: not theirs
    assert jobstate.saved_pack(tmp_path / "none", dirs) is None
