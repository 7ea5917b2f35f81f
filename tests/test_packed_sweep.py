"""`sweep.pack`: a study's trials trained in packs give the records of the same study run one trial at a time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lstm_odyssey.sweep.packs import check_setting, plan

TINY = [
    "data.length=10", "data.n_train=64", "data.n_val=32", "data.n_test=32", "trainer.epochs=3", "trainer.patience=2",
    "sweep.params.model.hidden_size.low=4", "sweep.params.model.hidden_size.high=12", "sweep.report=false",
    "sweep.n_trials=4", "cell=vanilla,gru", "hydra/launcher=basic",
]
TIMING = {"wall_seconds", "run_dir", "overrides", "pack", "backend", "config", "git_commit", "traceback"}


def sweep(sweep_dir: Path, *args: str) -> dict[str, dict]:
    env = {"WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "lstm_odyssey.cli", "-m", "+sweep=quick", f"hydra.sweep.dir={sweep_dir}",
                           *TINY, *args], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = {}
    for path in sorted(sweep_dir.rglob("result.json")):
        record = json.loads(path.read_text())
        records[str(path.parent.relative_to(sweep_dir))] = record
    return records


@pytest.mark.slow
def test_a_packed_study_gives_the_records_of_the_unpacked_one(tmp_path):
    alone = sweep(tmp_path / "alone", "sweep.pack=1")
    packed = sweep(tmp_path / "packed", "sweep.pack=4")
    assert sorted(alone) == sorted(packed) and len(alone) == 8  # same jobs in the same directories
    widths = sorted({r["pack"]["width"] for r in packed.values()})
    assert widths == [4] and all("pack" not in r for r in alone.values())
    for job, one in alone.items():
        other = packed[job]
        assert {k for k in one if k not in TIMING} == {k for k in other if k not in TIMING}
        for key in ("status", "stopped_by", "best_epoch", "epochs_run", "cell", "task", "hparams", "trial"):
            assert one[key] == other[key], (job, key)
        assert other["objective"] == pytest.approx(one["objective"], rel=1e-4)
        for a, b in zip(one["history"], other["history"], strict=True):
            assert b["val_mse"] == pytest.approx(a["val_mse"], rel=1e-4)
            assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)


def test_jobs_share_a_pack_only_within_a_grid_point_and_by_size():
    base = {"cell": {"name": "vanilla"}, "data": {"name": "adding"}, "optim": {"name": "adam", "lr": 0.01},
            "trainer": {"device": "cpu", "seed": 0, "batch_size": 8}}
    configs = [{**base, "model": {"hidden_size": h}} for h in (100, 30, 20, 150)]
    configs.append({**base, "cell": {"name": "gru"}, "model": {"hidden_size": 20}})
    labels = ["a/vanilla"] * 4 + ["a/gru"]
    # sorted by size (20, 30, 100, 150), two at a time; the gru job never joins a vanilla pack
    assert plan(configs, labels, 2) == [[0, 3], [2, 1], [4]]
    # auto, the measured CPU rule: 20, 30 and 100 fit one pack (its largest, 100, allows 16); 150 runs alone
    assert plan(configs, labels, "auto") == [[2, 1, 0], [3], [4]]
    assert check_setting("auto") is None and check_setting(3) is None
    assert "sweep.pack=0" in check_setting(0) and check_setting("two")
