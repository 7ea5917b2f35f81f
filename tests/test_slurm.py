"""Studies on a real SLURM cluster: the one-node cluster `.ci/slurm-local.sh` starts from Debian's packages (CI runs
it before the tests). Without a cluster that answers `sinfo` these tests skip with the reason."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def cluster() -> str | None:
    """Why there is no cluster to test against, or None when `sinfo` answers with an idle node."""
    if shutil.which("sinfo") is None:
        return "no SLURM client (sinfo) on this machine; .ci/slurm-local.sh installs and starts a one-node cluster"
    proc = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    states = proc.stdout.split()
    if proc.returncode != 0 or not any(s.rstrip("*").startswith(("idle", "mix", "alloc")) for s in states):
        return f"no SLURM node is up (sinfo: {proc.stderr.strip() or ' '.join(states) or 'nothing'})"
    return None


needs_slurm = pytest.mark.skipif(cluster() is not None, reason=str(cluster()))
TINY = ["data.length=10", "data.n_train=64", "data.n_val=32", "data.n_test=32", "trainer.epochs=2",
        "sweep.params.model.hidden_size.low=4", "sweep.params.model.hidden_size.high=8", "sweep.report=false"]
ON_THIS_NODE = ["hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.gpus_per_node=0",
                "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10"]


@pytest.mark.slow
@needs_slurm
def test_a_study_through_the_slurm_launcher_ends_with_one_ok_record_per_job(tmp_path):
    """The README's cluster command on a real cluster: 2 cells x 2 paired trials go out as SLURM array tasks and
    end as 4 ok records, one per job, with the Optuna journal (the storage a shared file system needs)."""
    env = dict(os.environ, WANDB_MODE="disabled", MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "lstm_odyssey.cli", "-m", "+sweep=quick", f"hydra.sweep.dir={tmp_path}",
         "cell=vanilla,gru", "sweep.n_trials=2", *TINY, *ON_THIS_NODE],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in Path(tmp_path).rglob("result.json")]
    assert sorted((r["cell"], r["trial"], r["status"]) for r in records) == [
        (c, k, "ok") for c in ("gru", "vanilla") for k in (0, 1)]
    assert (tmp_path / "optuna.journal").is_file() and not (tmp_path / "optuna.db").exists()
    assert "4 jobs: ok 4, diverged 0, failed 0 (4 ran now, 0 done before)" in proc.stdout
    assert list(tmp_path.rglob("*_submitted.pkl")), "the jobs did not go through submitit's SLURM executor"

