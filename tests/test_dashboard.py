"""A study's Optuna storage is what optuna-dashboard shows: read a real small sweep's `optuna.db` through optuna's
storage API and through the dashboard's own web API, and check both against the runs' records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import optuna
import pytest

# 2 cells x 2 lengths x 2 paired trials; data.length=1 fails inside training: 4 ok jobs, 4 failed ones
OVERRIDES = [
    "+sweep=quick", "data.n_train=64", "data.n_val=32", "data.n_test=32", "trainer.epochs=1",
    "sweep.params.model.hidden_size.low=4", "sweep.params.model.hidden_size.high=8", "sweep.report=false",
    "cell=vanilla,gru", "data.length=10,1", "sweep.n_trials=2", "hydra/launcher=basic",
]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("dashboard")
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "lstm_odyssey.cli", "-m", f"hydra.sweep.dir={root}", *OVERRIDES],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in sorted(root.rglob("result.json"))]
    assert sorted(r["status"] for r in records) == ["failed"] * 4 + ["ok"] * 4
    return root, records


def storage_url(root: Path) -> str:
    return f"sqlite:///{root / 'optuna.db'}"  # what `optuna-dashboard sqlite:///<sweep_dir>/optuna.db` opens


@pytest.mark.slow
def test_the_storage_api_sees_every_job_as_its_record_says(sweep):
    root, records = sweep
    summaries = optuna.get_all_study_summaries(storage_url(root))
    # one study per grid point (task, cell, length), each with its 2 trials
    labels = {s.study_name.split("@")[0] for s in summaries}
    assert labels == {f"quick/adding/{c}/data.length-{n}" for c in ("vanilla", "gru") for n in (10, 1)}
    assert all(s.n_trials == 2 and s.direction == optuna.study.StudyDirection.MINIMIZE for s in summaries)
    storage = optuna.storages.RDBStorage(storage_url(root))
    trials = {t.user_attrs["run_dir"]: t for s in storage.get_all_studies() for t in storage.get_all_trials(s._study_id)}
    assert len(trials) == len(records) == 8
    for record in records:
        trial = trials[record["run_dir"]]
        assert trial.user_attrs["k"] == record["trial"] and trial.user_attrs["status"] == record["status"]
        assert trial.params == {k: record["hparams"][k] for k in ("optim.lr", "model.hidden_size")}
        if record["status"] == "ok":
            assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == record["objective"]
        else:
            assert trial.state == optuna.trial.TrialState.FAIL and trial.value is None


def dashboard_get(app, path: str) -> dict:
    """One GET of the dashboard's web API, as its browser front end makes it."""
    environ: dict = {}
    setup_testing_defaults(environ)
    environ["PATH_INFO"] = path
    status = []
    body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
    assert status == ["200 OK"], (path, status, body[:300])
    return json.loads(body)


def test_optuna_dashboard_serves_the_same_trials(sweep):
    dashboard = pytest.importorskip("optuna_dashboard")
    root, records = sweep
    app = dashboard.wsgi(storage_url(root))
    studies = dashboard_get(app, "/api/studies")["study_summaries"]
    assert len(studies) == 4
    by_run = {r["run_dir"]: r for r in records}
    seen = 0
    for study in studies:
        detail = dashboard_get(app, f"/api/studies/{study['study_id']}")
        for trial in detail["trials"]:
            attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
            record = by_run[attrs["run_dir"]]
            assert trial["state"] == ("Complete" if record["status"] == "ok" else "Fail")
            assert trial.get("values") == ([record["objective"]] if record["status"] == "ok" else None)
            params = {p["name"]: p["param_external_value"] for p in trial["params"]}
            assert params == {k: str(record["hparams"][k]) for k in ("optim.lr", "model.hidden_size")}
            seen += 1
    assert seen == len(records)
