"""`sweep.pack`: a study's trials trained in packs give the records of the same study run one trial at a time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lstm_odyssey.config import load_config
from lstm_odyssey.sweep.packs import check_setting, plan

TINY = [
    "data.length=10", "data.n_train=64", "data.n_val=32", "data.n_test=32", "trainer.epochs=3", "trainer.patience=2",
    "sweep.params.model.hidden_size.low=4", "sweep.params.model.hidden_size.high=12", "sweep.report=false",
    "sweep.n_trials=4", "cell=vanilla,gru", "hydra/launcher=basic",
]
TIMING = {"wall_seconds", "trial_seconds", "run_dir", "overrides", "pack", "backend", "config", "git_commit", "traceback"}


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


def job_config(*overrides: str) -> dict:
    """A job's resolved config (as the sweeper stores it): vanilla on the adding task, Adam at lr 0.01, CPU."""
    return load_config(["cell=vanilla", "data=adding", "optim=adam", "optim.lr=0.01", "trainer.device=cpu", *overrides])


def test_jobs_share_a_pack_only_within_a_grid_point_and_by_size():
    configs = [job_config(f"model.hidden_size={h}", "trainer.batch_size=8") for h in (100, 30, 20, 150)]
    configs.append(job_config("cell=gru", "model.hidden_size=20", "trainer.batch_size=8"))
    labels = ["a/vanilla"] * 4 + ["a/gru"]
    # sorted by size (20, 30, 100, 150), two at a time; the gru job never joins a vanilla pack
    assert plan(configs, labels, 2) == [[0, 3], [2, 1], [4]]
    # auto, the cheapest cut under packed/plan.py's cost model: at batch 8 the 150-unit trial runs alone (padding
    # the others to 150 would cost more than it saves); at batch 1 the per-op costs dominate and all four share
    assert plan(configs, labels, "auto") == [[2, 1, 0], [3], [4]]
    batch_one = [{**c, "trainer": {**c["trainer"], "batch_size": 1}} for c in configs]
    assert plan(batch_one, labels, "auto") == [[2, 1, 0, 3], [4]]
    assert check_setting("auto") is None and check_setting(3) is None
    assert "sweep.pack=0" in check_setting(0) and check_setting("two")


def test_trials_with_output_dropout_run_alone_under_auto_and_are_refused_a_width():
    """A packed trial's dropout mask would not be its single run's, so such trials never share a pack."""
    configs = [job_config(f"model.hidden_size={h}", "model.output_dropout=0.3", "trainer.batch_size=1") for h in (30, 20, 40)]
    assert plan(configs, ["a/vanilla"] * 3, "auto") == [[0], [1], [2]]
    assert plan(configs, ["a/vanilla"] * 3, 1) == [[0], [1], [2]]
    with pytest.raises(ValueError, match="use model.output_dropout=0 or sweep.pack=1"):
        plan(configs, ["a/vanilla"] * 3, 2)
    without = [{**c, "model": {**c["model"], "output_dropout": 0.0}} for c in configs]
    assert plan(without, ["a/vanilla"] * 3, "auto") == [[1, 0, 2]]  # the same trials pack without it


@pytest.mark.slow
@pytest.mark.parametrize("study", ["odyssey_jsb", "odyssey_jsb_adam"])
def test_the_reproduction_studies_compose_and_run_a_tiny_pack(tmp_path, study):
    """Both protocols of the reproduction (docs/equations.md, Study protocol) run one pack of two paired trials."""
    import os

    data = os.environ.get("LSTM_ODYSSEY_DATA")
    if not data or not (Path(data) / "jsb_chorales").is_dir():
        pytest.skip("needs the JSB Chorales copy under $LSTM_ODYSSEY_DATA (CI sets it)")
    env = {"WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "LSTM_ODYSSEY_DATA": data,
           "LSTM_ODYSSEY_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "lstm_odyssey.cli", "-m", f"+sweep={study}", f"hydra.sweep.dir={tmp_path}",
                           "cell=vanilla", "sweep.n_trials=2", "sweep.pack=2", "sweep.report=false", "data.max_chorales=3",
                           "trainer.epochs=1", "sweep.params.model.hidden_size.high=24", "hydra/launcher=basic"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in sorted(tmp_path.rglob("result.json"))]
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert {r["pack"]["width"] for r in records} == {2} and len({r["pack"]["id"] for r in records}) == 1
    assert records[0]["config"]["optim"]["name"] == ("sgd" if study == "odyssey_jsb" else "adam")
    assert records[0]["config"]["trainer"]["min_improvement"] == 0.001
    # the study benchmark times the same trials: trial k's hyperparameters as this sweep drew them
    from benchmarks.study import paired_samples, study_config

    cfg = study_config(study, "vanilla", ["sweep.params.model.hidden_size.high=24"])
    drawn = paired_samples(cfg, 2)
    for record, sample in zip(sorted(records, key=lambda r: r["trial"]), drawn):
        assert {key: record["hparams"][key] for key in sample} == pytest.approx(sample)



@pytest.mark.slow
@pytest.mark.parametrize("study", ["odyssey_jsb_tune", "odyssey_jsb_tune_dropout"])
def test_the_tuned_best_study_composes_and_runs_tpe_trials_of_the_chosen_cell(tmp_path, study):
    """`odyssey_jsb_tune`: TPE on the cell given on the command line, with the modern protocol's training;
    `odyssey_jsb_tune_dropout` searches the output dropout as well."""
    import os

    data = os.environ.get("LSTM_ODYSSEY_DATA")
    if not data or not (Path(data) / "jsb_chorales").is_dir():
        pytest.skip("needs the JSB Chorales copy under $LSTM_ODYSSEY_DATA (CI sets it)")
    env = {"WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "LSTM_ODYSSEY_DATA": data,
           "LSTM_ODYSSEY_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "lstm_odyssey.cli", "-m", f"+sweep={study}", f"hydra.sweep.dir={tmp_path}",
                           "cell=cifg", "sweep.n_trials=2", "sweep.report=false", "data.max_chorales=3", "trainer.epochs=1",
                           "hydra/launcher=basic"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in sorted(tmp_path.rglob("result.json"))]
    assert [(r["status"], r["cell"]) for r in records] == [("ok", "cifg"), ("ok", "cifg")]
    for r in records:
        cfg = r["config"]
        assert (cfg["optim"]["name"], cfg["trainer"]["batch_size"], cfg["trainer"]["clip"]) == ("adam", 8, 1.0)
        assert 64 <= r["hparams"]["model.hidden_size"] <= 384 and 3e-4 <= r["hparams"]["optim.lr"] <= 1e-2
        assert "pack" not in r  # TPE's trials run one at a time
        dropout = r["config"]["model"]["output_dropout"]
        assert 0 < dropout <= 0.5 if study.endswith("dropout") else dropout == 0.0
    assert (tmp_path / "optuna.journal").exists()

def test_a_pack_stopped_after_a_member_left_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    """A study stopped while a pack trains, after one of its trials had left: the rerun's plan relaunches that
    pack's manifest (not a new pack of the trials still pending), which resumes from its last epoch to the
    records of an uninterrupted pack, keeping its id, width and the departed trial's record."""
    from helpers import VARIANTS, trial_cfgs

    from lstm_odyssey.engine import Engine
    from lstm_odyssey.packed.fit import fit_pack
    from lstm_odyssey.sweep.packs import launch_plan, run_pack, write_manifest

    cfgs = trial_cfgs("cell=gru", "optim=adam", "trainer.deterministic=true", "trainer.resume=true", variants=VARIANTS[:3])
    straight = fit_pack([(cfg, tmp_path / f"straight{k}") for k, cfg in enumerate(cfgs)])
    sweep_dir = tmp_path / "sweep"
    dirs = [str(sweep_dir / "point" / f"{k:03d}") for k in range(4)]
    manifest = write_manifest(sweep_dir, [(cfg, Path(d)) for cfg, d in zip(cfgs, dirs)])

    real_epoch, calls = Engine.train_epoch, {"n": 0, "kill_at": 3}

    def killed(self):
        calls["n"] += 1
        if calls["n"] == calls["kill_at"]:
            raise KeyboardInterrupt  # the study is stopped during this epoch
        return real_epoch(self)

    monkeypatch.setattr(Engine, "train_epoch", killed)
    with pytest.raises(KeyboardInterrupt):
        run_pack(manifest)  # trial 2 stops early at epoch 2, the others are killed in epoch 3
    departed = (Path(dirs[2]) / "result.json").read_text()
    assert json.loads(departed)["stopped_by"] == "early_stopping"
    # the old code's rerun: the two pending trials as a new pack, stopped after one epoch of its own
    calls.update(n=0, kill_at=2)
    newer = write_manifest(sweep_dir, [(cfgs[0], Path(dirs[0])), (cfgs[1], Path(dirs[1]))])
    with pytest.raises(KeyboardInterrupt):
        run_pack(newer)
    monkeypatch.setattr(Engine, "train_epoch", real_epoch)

    extra = cfgs[2]  # a new pending job of the same grid point, planned with the rest
    configs, labels = [cfgs[1], extra, cfgs[0]], ["point"] * 3
    units = launch_plan(sweep_dir, [dirs[1], dirs[3], dirs[0]], configs, labels, 4)
    assert units == [([2, 0], manifest), ([1], None)]  # the pack with more trained epochs, then the rest
    # a manifest written by a release before `model.output_dropout` existed: the key at its default is no change
    spec = json.loads(manifest.read_text())
    for member in spec["members"]:
        del member["config"]["model"]["output_dropout"]
    manifest.write_text(json.dumps(spec))
    assert launch_plan(sweep_dir, [dirs[1], dirs[3], dirs[0]], configs, labels, 4) == units
    # a trial of the old pack that is not pending (another sweep holds it): neither checkpoint applies
    (fresh_members, fresh_manifest), = launch_plan(sweep_dir, [dirs[0], dirs[3]], [cfgs[0], extra], ["point"] * 2, 4)
    assert sorted(fresh_members) == [0, 1] and fresh_manifest not in (manifest, newer)
    # the command changed a training setting of a trial still in the pack: not resumed with the old config, but
    # planned afresh with the new one (what rerunning the same pending trials did before)
    longer = {**cfgs[1], "trainer": {**cfgs[1]["trainer"], "epochs": cfgs[1]["trainer"]["epochs"] + 1}}
    ((members, planned),) = launch_plan(sweep_dir, [dirs[0], dirs[1]], [cfgs[0], longer], ["point"] * 2, 4)
    stored = {m["run_dir"]: m["config"] for m in json.loads(planned.read_text())["members"]}
    assert sorted(members) == [0, 1] and planned != manifest and stored[dirs[1]]["trainer"]["epochs"] == longer["trainer"]["epochs"]

    resumed = run_pack(manifest)
    assert (Path(dirs[2]) / "result.json").read_text() == departed
    for a, b in zip(straight, resumed, strict=True):
        assert a["history"] == b["history"] and (a["objective"], a["test"]) == (b["objective"], b["test"])
        assert (a["status"], a["stopped_by"], a["epochs_run"]) == (b["status"], b["stopped_by"], b["epochs_run"])
        assert b["pack"]["id"] == json.loads(manifest.read_text())["id"] and b["pack"]["width"] == 3
    assert [r["resumed_from_epoch"] for r in resumed] == [2, 2, None]


def test_a_stored_config_is_unchanged_only_by_keys_added_at_their_defaults():
    from lstm_odyssey.schema import ModelConfig
    from lstm_odyssey.sweep.packs import unchanged

    stored = {"model": {"hidden_size": 20, "dropout": 0.0}, "optim": {"name": "adam", "lr": 0.01}}
    assert unchanged(stored, stored)
    assert ModelConfig().output_dropout == 0.0
    assert unchanged({**stored, "model": {**stored["model"], "output_dropout": 0.0}}, stored)
    assert not unchanged({**stored, "model": {**stored["model"], "output_dropout": 0.2}}, stored)  # a new setting
    assert not unchanged({**stored, "model": {**stored["model"], "foo": 0.0}}, stored)  # no schema default
    assert not unchanged({**stored, "model": {"hidden_size": 20}}, stored)  # a key removed
    assert not unchanged({**stored, "optim": {"name": "adam", "lr": 0.02}}, stored)
