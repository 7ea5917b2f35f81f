"""Studies end to end: real `lstm-odyssey-train -m` sweeps into temporary directories (tiny tasks, 1 epoch)."""

from __future__ import annotations

import json
import subprocess

import optuna
import pandas as pd
import pytest
from helpers import env, records, run_sweep, sweep_cmd, trials
from omegaconf import OmegaConf

from lstm_odyssey.cli import register
from lstm_odyssey.config import study_names
from lstm_odyssey.sweep.collect import summary_table
from lstm_odyssey.sweep.jobs import job_key, launcher_width
from lstm_odyssey.sweep.space import SearchSpaceError, parse_space, to_values

# ------------------------------------------------------------------------------------------- units


def test_search_space_types_and_the_papers_momentum():
    space = parse_space({
        "optim": {"lr": {"type": "loguniform", "low": 1e-6, "high": 1e-2},
                  "momentum": {"type": "one_minus_loguniform", "low": 0.01, "high": 1.0}},
        "model": {"hidden_size": {"type": "int", "low": 20, "high": 200, "log": True}},
        "cell": {"peepholes": {"type": "choice", "choices": [True, False]}},
    })
    assert [p.key for p in space] == ["optim.lr", "optim.momentum", "model.hidden_size", "cell.peepholes"]
    assert [p.optuna_name for p in space][1] == "1-optim.momentum"
    values = to_values(space, {"optim.lr": 1e-3, "1-optim.momentum": 0.01, "model.hidden_size": 50, "cell.peepholes": False})
    assert values == {"optim.lr": 1e-3, "optim.momentum": 0.99, "model.hidden_size": 50, "cell.peepholes": False}
    with pytest.raises(SearchSpaceError, match="sweep.params.optim.lr.type"):
        parse_space({"optim": {"lr": {"type": "gaussian", "low": 0, "high": 1}}})
    with pytest.raises(SearchSpaceError, match="low must be > 0"):
        parse_space({"optim": {"lr": {"type": "loguniform", "low": 0, "high": 1}}})


def test_job_key_ignores_bookkeeping_and_order():
    a = ["cell=vanilla", "optim.lr=0.01", "+sweep=quick", "sweep.n_trials=5"]
    b = ["optim.lr=0.01", "cell=vanilla", "+sweep=quick", "sweep.n_trials=9", "logger=wandb"]
    assert job_key(a) == job_key(b)
    assert job_key(a) != job_key(["cell=vanilla", "optim.lr=0.02"])
    assert launcher_width({"n_jobs": 3}) == 3 and launcher_width({"array_parallelism": 8}) == 8 and launcher_width({}) == 1


RENAMED = {"modern_first_look": "modern"}  # a study that keeps the name in its committed journal and pair keys


@pytest.mark.slow
def test_every_study_composes():
    from hydra import compose, initialize_config_module

    register()
    names = study_names()
    assert {"quick", "odyssey_jsb", "tune"} <= set(names)
    with initialize_config_module("lstm_odyssey.conf", version_base="1.3"):
        for name in names:
            try:
                cfg = compose("train", overrides=[f"+sweep={name}"], return_hydra_config=True)
            except Exception as err:  # a study of a task whose data config is missing
                pytest.fail(f"study {name} does not compose: {err}")
            assert cfg.hydra.sweeper._target_.startswith("hydra_plugins.odyssey_sweeper")
            assert cfg.sweep.name == RENAMED.get(name, name) or name == "odyssey"
            parse_space(OmegaConf.to_container(cfg.sweep.params) if cfg.sweep.get("params") else {})
        jsb = compose("train", overrides=["+sweep=odyssey_jsb"])
    assert list(jsb.sweep.grid.cell) == ["vanilla", "nig", "nfg", "nog", "niaf", "noaf", "cifg", "np", "fgr"]
    assert jsb.sweep.n_trials == 200 and jsb.optim.name == "sgd" and jsb.sweep.sampler == "random"
    assert dict(jsb.sweep.params.optim.lr) == {"type": "loguniform", "low": 1e-6, "high": 1e-2}


def test_summary_table_counts_and_statistics():
    df = pd.DataFrame([
        {"task": "t", "cell": "gru", "status": "ok", "objective": 3.0, "metric": "nll"},
        {"task": "t", "cell": "vanilla", "status": "ok", "objective": 1.0, "metric": "nll"},
        {"task": "t", "cell": "vanilla", "status": "ok", "objective": 2.0, "metric": "nll"},
        {"task": "t", "cell": "vanilla", "status": "diverged", "objective": None, "metric": "nll"},
        {"task": "t", "cell": "vanilla", "status": "failed", "objective": None, "metric": None},
    ])
    table = summary_table(df)
    assert list(table["cell"]) == ["vanilla", "gru"]  # preset order
    row = table.iloc[0]
    assert (row["ok"], row["diverged"], row["failed"], row["median"], row["best"]) == (2, 1, 1, 1.5, 1.0)


# ------------------------------------------------------------------------------------------- sweeps


@pytest.mark.slow
def test_quick_study_basic_launcher_paired_and_stored(tmp_path):
    proc = run_sweep(tmp_path, "cell=vanilla,gru,nfg", "sweep.n_trials=2", "hydra/launcher=basic")
    recs = records(tmp_path)
    assert len(recs) == 6 and all(r["status"] == "ok" for r in recs)
    assert {r["study"] for r in recs} == {"quick"} and sorted(r["trial"] for r in recs) == [0, 0, 0, 1, 1, 1]
    # paired: trial k has the same sample in every cell, and different trials differ
    by_trial: dict[int, set] = {}
    for r in recs:
        by_trial.setdefault(r["trial"], set()).add((r["hparams"]["optim.lr"], r["hparams"]["model.hidden_size"]))
    assert all(len(s) == 1 for s in by_trial.values()) and by_trial[0] != by_trial[1]
    # the run directories read task/cell/trial_key
    assert {r["_path"].parent.relative_to(tmp_path).parts[:2] for r in recs} == {("adding", c) for c in ("vanilla", "gru", "nfg")}
    # the SQLite study reloads with every trial, told with each record's objective
    studies = trials(tmp_path)
    assert len(studies) == 3
    objective = {(r["cell"], r["trial"]): r["objective"] for r in recs}
    for name, ts in studies.items():
        cell = name.split("/")[2].split("@")[0]
        assert [t.state for t in ts] == [optuna.trial.TrialState.COMPLETE] * 2
        assert [t.value for t in ts] == [objective[(cell, t.user_attrs["k"])] for t in ts]
    # the end-of-sweep collection
    runs = pd.read_parquet(tmp_path / "runs.parquet")
    assert len(runs) == 6 and set(runs["cell"]) == {"vanilla", "gru", "nfg"}
    assert "6 jobs: ok 6, diverged 0, failed 0" in proc.stdout
    table = [line.split() for line in proc.stdout.splitlines() if line.startswith("adding ")]
    assert [row[1] for row in table] == ["vanilla", "nfg", "gru"] and all(row[3] == "2" for row in table)
    # the seed makes the study reproducible: another sweep (other dir, other cell) draws the same samples
    run_sweep(tmp_path / "again", "cell=rnn", "sweep.n_trials=2", "hydra/launcher=basic")
    again = {r["trial"]: (r["hparams"]["optim.lr"], r["hparams"]["model.hidden_size"]) for r in records(tmp_path / "again")}
    assert {k: {v} for k, v in again.items()} == by_trial


@pytest.mark.slow
def test_joblib_launcher_fills_batches_and_unpaired_samples_differ(tmp_path):
    proc = run_sweep(
        tmp_path, "cell=vanilla,np", "sweep.n_trials=2", "sweep.paired=false",
        "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
    )
    recs = records(tmp_path)
    assert len(recs) == 4 and all(r["status"] == "ok" for r in recs)
    assert "batches of 2" in proc.stdout + proc.stderr
    lr = {(r["cell"], r["trial"]): r["hparams"]["optim.lr"] for r in recs}
    assert lr[("vanilla", 0)] != lr[("np", 0)] and lr[("vanilla", 1)] != lr[("np", 1)]


@pytest.mark.slow
def test_submitit_local_launcher_with_tpe(tmp_path):
    run_sweep(
        tmp_path, "cell=gru", "sweep.n_trials=2", "sweep.sampler=tpe", "sweep.paired=false", "sweep.batch_size=2",
        "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5",
    )
    recs = records(tmp_path)
    assert len(recs) == 2 and all(r["status"] == "ok" for r in recs)
    assert len(list((tmp_path / ".submitit").glob("*/*_result.pkl"))) == 2  # both ran as submitit jobs
    (ts,) = trials(tmp_path).values()
    assert len(ts) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in ts)
    assert len({t.params["optim.lr"] for t in ts}) == 2


@pytest.mark.slow
def test_failed_diverged_and_killed_jobs_are_records_and_the_sweep_goes_on(tmp_path):
    # data.length=1 raises inside training, lr=1e30 diverges, data.length=3 kills its worker at the start.
    proc = run_sweep(
        tmp_path, "cell=vanilla", "sweep.n_trials=1", "~sweep.params", "data.length=10,1,3", "optim.lr=0.01,1e30",
        "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",  # batches of 2: the two length-3 jobs die together
        "+hydra.callbacks.kill._target_=helpers.KillJob", "+hydra.callbacks.kill.length=3",
    )
    recs = {(r["_path"].parent.parent.parts[-2], r["_path"].parent.parent.name): r for r in records(tmp_path)}
    assert len(recs) == 6
    status = {key: r["status"] for key, r in recs.items()}
    assert status == {
        ("data.length-10", "optim.lr-0.01"): "ok", ("data.length-10", "optim.lr-1e+30"): "diverged",
        ("data.length-1", "optim.lr-0.01"): "failed", ("data.length-1", "optim.lr-1e+30"): "failed",
        ("data.length-3", "optim.lr-0.01"): "failed", ("data.length-3", "optim.lr-1e+30"): "failed",
    }
    assert "length >= 2" in recs[("data.length-1", "optim.lr-0.01")]["error"]
    assert "without writing a record" in recs[("data.length-3", "optim.lr-0.01")]["error"]
    assert recs[("data.length-3", "optim.lr-0.01")]["cell"] == "vanilla"
    assert "6 jobs: ok 1, diverged 1, failed 4" in proc.stdout
    states = [t.state for ts in trials(tmp_path).values() for t in ts]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 1 and states.count(optuna.trial.TrialState.FAIL) == 5


@pytest.mark.slow
def test_exit_code_when_every_job_fails_or_the_config_is_wrong(tmp_path):
    proc = run_sweep(tmp_path / "a", "cell=vanilla", "sweep.n_trials=1", "data.length=1", "hydra/launcher=basic", ok=False)
    assert proc.returncode != 0 and "every job of study quick failed" in proc.stdout + proc.stderr
    assert [r["status"] for r in records(tmp_path / "a")] == ["failed"]
    assert (tmp_path / "a" / "runs.parquet").exists()
    proc = run_sweep(tmp_path / "b", "cell=vanilla,nosuchcell", ok=False)
    assert proc.returncode != 0 and "nosuchcell" in proc.stdout + proc.stderr
    assert not list((tmp_path / "b").rglob("result.json"))
    proc = run_sweep(tmp_path / "c", "sweep.params.optim.lr.type=normal", ok=False)
    assert proc.returncode != 0 and "sweep.params.optim.lr.type" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_killed_sweep_resumes_without_rerunning_finished_jobs(tmp_path):
    args = ["cell=vanilla,gru,rnn", "sweep.n_trials=2", "hydra/launcher=basic"]
    sweep = subprocess.Popen(sweep_cmd(tmp_path, *args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env())
    finished = 0
    try:
        for line in sweep.stdout:  # stop it as soon as two jobs have written their records
            finished += " - record: " in line
            if finished == 2:
                sweep.terminate()
                break
    finally:
        sweep.wait(timeout=60)
        sweep.stdout.close()
    assert finished == 2 and sweep.returncode != 0
    before = {r["_path"]: (r["_path"].stat().st_mtime_ns, r["wall_seconds"]) for r in records(tmp_path)}
    assert 2 <= len(before) < 6

    proc = run_sweep(tmp_path, *args)
    recs = records(tmp_path)
    assert len(recs) == 6 and all(r["status"] == "ok" for r in recs)
    for path, (mtime, wall) in before.items():  # finished jobs were skipped, not run again
        assert (path.stat().st_mtime_ns, json.loads(path.read_text())["wall_seconds"]) == (mtime, wall)
    assert f"{len(before)} done before" in proc.stdout
    # one run directory per job and one Optuna trial per (cell, k): nothing duplicated
    assert len({r["_path"].parent for r in recs}) == 6
    for ts in trials(tmp_path).values():
        assert sorted(t.user_attrs["k"] for t in ts) == [0, 1]
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in ts)
    # a third run has nothing left to do
    again = run_sweep(tmp_path, *args)
    assert "(0 ran now, 6 done before)" in again.stdout
