"""`sweep.seeds` (every job repeated over trainer.seed = 0 .. K-1) and `sweep.sampler: listed` (trial k runs
`sweep.configs[k]`): real `lstm-odyssey-train -m` sweeps of tiny tasks (one subprocess per test at most; the
sweeps that several tests read run once per module), the refusals in-process, and the study that uses both,
`odyssey_jsb_seeds`, against the committed records it copies its configurations from."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf

from lstm_odyssey.schema import SweepConfig
from lstm_odyssey.sweep.space import parse_space
from lstm_odyssey.sweep.study import (
    StudyConfigError,
    listed_configs,
    point_configs,
    sample_label,
    seed_axis,
    study_config,
)

ROOT = Path(__file__).resolve().parents[1]
ADAM = ROOT / "results" / "odyssey_jsb" / "adam" / "jsb_chorales"
TINY = [
    "data.length=10", "data.n_train=64", "data.n_val=32", "data.n_test=32", "trainer.epochs=1",
    "sweep.params.model.hidden_size.low=4", "sweep.params.model.hidden_size.high=8", "sweep.report=false",
    "hydra/launcher=basic",
]
SEEDED = ["cell=vanilla,nfg", "sweep.n_trials=2", "sweep.seeds=2"]  # quick is paired
LR_0 = 0.012345678901234567  # full precision, to see it reach the run unrounded
LISTED = ["cell=vanilla,nfg", "sweep.sampler=listed", "sweep.n_trials=null", "sweep.seeds=2", "sweep.pack=auto",
          f"sweep.configs=[{{optim.lr:{LR_0!r},model.hidden_size:5}},{{optim:{{lr:0.02}},model:{{hidden_size:8}}}}]"]


BY_CELL = ["cell=vanilla,nfg", "sweep.sampler=listed", "sweep.n_trials=null", "sweep.paired=false", "sweep.seeds=2",
           "sweep.pack=auto", "sweep.configs={vanilla:[{optim.lr:0.011,model.hidden_size:5},{optim.lr:0.012,model.hidden_size:6}],"
           "nfg:[{optim.lr:0.021,model.hidden_size:7},{optim.lr:0.022,model.hidden_size:8}]}"]


def sweep(sweep_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "lstm_odyssey.cli", "-m", "+sweep=quick", f"hydra.sweep.dir={sweep_dir}", *TINY]
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env, timeout=300)


def ran(sweep_dir: Path, *args: str) -> subprocess.CompletedProcess:
    proc = sweep(sweep_dir, *args)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def records(sweep_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) | {"_path": p} for p in sorted(sweep_dir.rglob("result.json"))]


def stamps(sweep_dir: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in sweep_dir.rglob("result.json")}


def optuna_trials(sweep_dir: Path) -> dict[str, list[optuna.trial.FrozenTrial]]:
    storage = f"sqlite:///{sweep_dir / 'optuna.db'}"
    return {s.study_name: optuna.load_study(study_name=s.study_name, storage=storage).get_trials()
            for s in optuna.get_all_study_summaries(storage)}


def swept(tmp_path_factory, name: str, args: list[str]) -> Path:
    sweep_dir = tmp_path_factory.mktemp(name)
    proc = ran(sweep_dir, *args)
    assert "8 jobs: ok 8, diverged 0, failed 0 (8 ran now, 0 done before)" in proc.stdout
    return sweep_dir


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> Path:
    """quick (paired random search) on two cells, 2 trials, sweep.seeds=2: 8 jobs."""
    return swept(tmp_path_factory, "seeded", SEEDED)


@pytest.fixture(scope="module")
def listed(tmp_path_factory) -> Path:
    """Two listed configurations (one with dotted keys, one nested) on two cells over two seeds, packed: 8 jobs."""
    return swept(tmp_path_factory, "listed", LISTED)


def study(**sweep_keys) -> dict:
    """A study's checked `sweep` block: SweepConfig's defaults, quick's search space, `sweep_keys`."""
    params = {"optim": {"lr": {"type": "loguniform", "low": 1e-3, "high": 1e-1}},
              "model": {"hidden_size": {"type": "int", "low": 4, "high": 8}}}
    block = {**dataclasses.asdict(SweepConfig()), "params": params, **sweep_keys}
    return study_config(OmegaConf.create({"sweep": block}))


# ------------------------------------------------------------------------------------------- sweep.seeds


@pytest.mark.slow
def test_seeds_repeat_every_paired_trial_under_each_seed(seeded):
    recs = records(seeded)
    assert len(recs) == 8 and {r["status"] for r in recs} == {"ok"}
    # every (cell, trial, seed) ran once, in its own run directory under the seed's grid axis
    assert sorted((r["cell"], r["trial"], r["hparams"]["trainer.seed"]) for r in recs) == sorted(
        (c, k, s) for c in ("vanilla", "nfg") for k in (0, 1) for s in (0, 1))
    assert len({r["_path"].parent for r in recs}) == 8
    for r in recs:
        assert r["_path"].parent.parent.name == f"trainer.seed-{r['hparams']['trainer.seed']}"
        assert r["seed"] == r["hparams"]["trainer.seed"] == r["config"]["trainer"]["seed"]
    # trial k: one configuration for both cells and both seeds; the two trials differ
    sample = defaultdict(set)
    for r in recs:
        sample[r["trial"]].add(tuple(r["hparams"][key] for key in ("optim.lr", "model.hidden_size")))
    assert all(len(s) == 1 for s in sample.values()) and sample[0] != sample[1]
    # one Optuna study per (cell, seed), each with its two trials told
    studies = optuna_trials(seeded)
    assert sorted(name.split("/", 2)[2].split("@")[0] for name in studies) == [
        f"{c}/trainer.seed-{s}" for c in ("nfg", "vanilla") for s in (0, 1)]
    for ts in studies.values():
        assert sorted(t.user_attrs["k"] for t in ts) == [0, 1]
        assert {t.state for t in ts} == {optuna.trial.TrialState.COMPLETE}


@pytest.mark.slow
@pytest.mark.parametrize("which", ["seeded", "listed"])
def test_a_rerun_trains_nothing_and_asks_nothing(which, request, tmp_path):
    sweep_dir = tmp_path / "copy"
    shutil.copytree(request.getfixturevalue(which), sweep_dir)
    before = stamps(sweep_dir)
    proc = ran(sweep_dir, *(SEEDED if which == "seeded" else LISTED))
    assert "8 jobs: ok 8, diverged 0, failed 0 (0 ran now, 8 done before)" in proc.stdout
    assert stamps(sweep_dir) == before
    assert all(len(ts) == 2 for ts in optuna_trials(sweep_dir).values())  # no trial asked again


def test_unpaired_seeds_still_share_trial_ks_sample():
    """A seed repeats a job: the random sample of trial k is drawn for the grid point less its seed axis."""
    seeded = study(seeds=3, paired=False)
    point = (("data", "adding"), ("cell", "vanilla"), ("trainer.seed", "2"))
    assert sample_label(point, seeded) == "adding/vanilla"
    assert sample_label(point, study()) == "adding/vanilla/trainer.seed-2"  # a grid axis of its own: as before
    assert seed_axis(seeded, {"data": ["adding"]}, [], [])["trainer.seed"] == ["0", "1", "2"]
    assert seed_axis(study(), {"data": ["adding"]}, [], []) == {"data": ["adding"]}


@pytest.mark.parametrize("where", ["grid", "command line", "params", "study"])
def test_seeds_with_trainer_seed_set_elsewhere_is_one_line(where):
    seeds = study(seeds=2)
    grid, fixed, space = {"cell": ["vanilla"]}, ["data.length=10"], parse_space(seeds["params"])
    configured = 5 if where == "study" else 0
    if where == "grid":
        grid["trainer.seed"] = ["0", "1"]
    elif where == "command line":
        fixed.append("trainer.seed=3")
    elif where == "params":
        space += parse_space({"trainer": {"seed": {"type": "int", "low": 0, "high": 9}}})
    with pytest.raises(StudyConfigError) as err:
        seed_axis(seeds, grid, fixed, space, configured)
    message = str(err.value)
    assert "\n" not in message and "sweep.seeds=2" in message and "sweep.seeds=1" in message
    said = {"grid": "a grid axis", "command line": "set on the command line", "params": "a searched parameter",
            "study": "set to 5 by the study"}[where]
    assert f"trainer.seed is also {said}" in message


def test_seeds_with_tpe_is_refused():
    with pytest.raises(StudyConfigError, match="TPE"):
        study(seeds=2, sampler="tpe")
    with pytest.raises(StudyConfigError, match="sweep.seeds=0"):
        study(seeds=0)


@pytest.mark.slow
def test_a_trainer_seed_grid_axis_with_seeds_is_refused_by_the_command_in_one_line(tmp_path):
    proc = sweep(tmp_path, "sweep.seeds=2", "trainer.seed=0,1")
    assert proc.returncode != 0
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "trainer.seed is also a grid axis" in lines[0], lines
    assert not list(tmp_path.rglob("result.json"))


# ------------------------------------------------------------------------------------------- sampler listed


def test_listed_configs_run_exactly_the_listed_values(listed):
    recs = records(listed)
    assert len(recs) == 8 and {r["status"] for r in recs} == {"ok"}
    want = {0: (LR_0, 5), 1: (0.02, 8)}
    for r in recs:
        assert (r["hparams"]["optim.lr"], r["hparams"]["model.hidden_size"]) == want[r["trial"]]
        assert (f"optim.lr={LR_0!r}" if r["trial"] == 0 else "optim.lr=0.02") in r["overrides"]
    assert sorted((r["cell"], r["trial"], r["hparams"]["trainer.seed"]) for r in recs) == sorted(
        (c, k, s) for c in ("vanilla", "nfg") for k in (0, 1) for s in (0, 1))
    for ts in optuna_trials(listed).values():  # asked through Optuna like sampled trials, and told
        assert {t.user_attrs["k"]: (t.params["optim.lr"], t.params["model.hidden_size"]) for t in ts} == want
        assert {t.state for t in ts} == {optuna.trial.TrialState.COMPLETE}


@pytest.mark.slow
def test_a_listed_sweep_rerun_with_an_edited_config_is_refused(listed, tmp_path):
    sweep_dir = tmp_path / "copy"
    shutil.copytree(listed, sweep_dir)
    edited = [*LISTED[:-1], "sweep.configs=[{optim.lr:0.03,model.hidden_size:5},{optim.lr:0.02,model.hidden_size:8}]"]
    proc = sweep(sweep_dir, *edited)
    assert proc.returncode != 0
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "trial 0 ran with optim.lr=" in lines[0] and "sweep.configs[0] gives 0.03" in lines[0]
    assert len(records(sweep_dir)) == 8


@pytest.mark.parametrize(("keys", "message"), [
    ({"configs": [{"optim.lr": 0.01, "model.hidden_size": 5}, {"optim.lr": 0.01}]},
     "sweep.configs[1] (trial 1) lacks model.hidden_size"),
    ({"configs": [{"optim.lr": 0.01, "model.hidden_size": 5, "model.dropout": 0.1}]},
     "sweep.configs[0] (trial 0) gives model.dropout, which sweep.params does not declare"),
    ({"configs": [{"optim.lr": 0.01, "model.hidden_size": 5}], "n_trials": 3},
     "sweep.n_trials=3 but sweep.configs lists 1 configurations"),
    ({"configs": [{"optim.lr": 0.01, "model.hidden_size": 5}, {"optim.lr": 0.5, "model.hidden_size": 5}]},
     "sweep.configs[1] (trial 1): optim.lr=0.5 is outside its range"),
    ({"configs": [{"optim.lr": 0.01, "model.hidden_size": 5.5}]},
     "sweep.configs[0] (trial 0): model.hidden_size=5.5 is not an integer"),
    ({"configs": []}, "sweep.configs, which is empty"),
    ({"configs": [{"optim.lr": 0.01, "model.hidden_size": 5}], "sampler": "random"},
     "read by sweep.sampler=listed only"),
])
def test_bad_listed_configs_are_one_line_naming_trial_and_key(keys, message):
    keys = {"sampler": "listed", **keys}
    with pytest.raises(StudyConfigError) as err:
        checked = study(**keys)
        listed_configs(checked, parse_space(checked["params"]))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_listed_n_trials_defaults_to_the_number_of_configs():
    configs = [{"optim.lr": 0.01, "model.hidden_size": 5}, {"optim": {"lr": 0.02}, "model": {"hidden_size": 6}}]
    for n_trials in (None, 2):
        checked = study(sampler="listed", configs=configs, n_trials=n_trials)
        assert checked["n_trials"] == 2
    assert listed_configs(checked, parse_space(checked["params"])) == [
        {"optim.lr": 0.01, "model.hidden_size": 5}, {"optim.lr": 0.02, "model.hidden_size": 6}]
    assert study()["n_trials"] == 1 and study(n_trials=4)["n_trials"] == 4  # null means 1 for the other samplers


@pytest.fixture(scope="module")
def by_cell(tmp_path_factory) -> Path:
    """Two listed configurations per cell, each cell its own (sweep.configs by cell), over two seeds: 8 jobs."""
    return swept(tmp_path_factory, "by_cell", BY_CELL)


@pytest.mark.slow
def test_configs_listed_by_cell_run_each_cells_own_values_under_every_seed(by_cell):
    """A seed study of each cell's own best configurations: trial k of a cell runs that cell's configs[k] under
    each seed, and the analysis reads the study as unpaired (trial k differs between the cells)."""
    from lstm_odyssey.analysis.frame import design, load, prepare

    recs = records(by_cell)
    assert len(recs) == 8 and {r["status"] for r in recs} == {"ok"}
    want = {("vanilla", 0): (0.011, 5), ("vanilla", 1): (0.012, 6), ("nfg", 0): (0.021, 7), ("nfg", 1): (0.022, 8)}
    assert sorted((r["cell"], r["trial"], r["hparams"]["trainer.seed"]) for r in recs) == sorted(
        (c, k, s) for c in ("vanilla", "nfg") for k in (0, 1) for s in (0, 1))
    for r in recs:
        assert (r["hparams"]["optim.lr"], r["hparams"]["model.hidden_size"]) == want[r["cell"], r["trial"]]
    paired, why = design(prepare(load(by_cell)))
    assert not paired and "different hyperparameters" in why


def test_configs_by_cell_give_each_grid_point_its_cells_list():
    configs = {"vanilla": [{"optim.lr": 0.01, "model.hidden_size": 5}],
               "nfg": [{"optim": {"lr": 0.02}, "model": {"hidden_size": 6}}], "gru": [{"bad": 1}]}
    checked = study(sampler="listed", configs=configs, paired=False)
    assert checked["n_trials"] == 1
    listed = listed_configs(checked, parse_space(checked["params"]), ["vanilla", "nfg"])  # gru is not in the grid
    assert listed == {"vanilla": [{"optim.lr": 0.01, "model.hidden_size": 5}],
                      "nfg": [{"optim.lr": 0.02, "model.hidden_size": 6}]}
    point = (("data", "adding"), ("cell", "nfg"), ("trainer.seed", "1"))
    assert point_configs(listed, point) == [{"optim.lr": 0.02, "model.hidden_size": 6}]
    shared = [{"optim.lr": 0.01, "model.hidden_size": 5}]
    assert point_configs(shared, point) is shared and point_configs(None, point) is None


ONE = {"optim.lr": 0.01, "model.hidden_size": 5}


@pytest.mark.parametrize(("keys", "cells", "message"), [
    ({"configs": {"vanilla": [ONE]}, "paired": True}, ["vanilla"],
     "cannot pair them; set sweep.paired=false"),
    ({"configs": {"vanilla": [ONE], "nfg": [ONE, ONE]}}, ["vanilla", "nfg"],
     "not as many for every cell (vanilla: 1, nfg: 2)"),
    ({"configs": {"vanilla": [ONE], "nfg": ONE}}, ["vanilla", "nfg"], "not as many for every cell"),
    ({"configs": {"vanilla": [ONE]}}, ["vanilla", "nfg"], "none for nfg; add them"),
    ({"configs": {"vanilla": [ONE]}}, [], "the study has no cell axis"),
    ({"configs": {"vanilla": [ONE], "nfg": [{"optim.lr": 0.01}]}}, ["vanilla", "nfg"],
     "sweep.configs.nfg[0] (trial 0) lacks model.hidden_size"),
    ({"configs": {"vanilla": [ONE]}, "n_trials": 2}, ["vanilla"], "lists 1 configurations per cell"),
    ({"configs": "vanilla"}, ["vanilla"], "must be a list of configurations, or a mapping from cell"),
])
def test_bad_configs_by_cell_are_one_line(keys, cells, message):
    keys = {"sampler": "listed", "paired": False, **keys}
    with pytest.raises(StudyConfigError) as err:
        checked = study(**keys)
        listed_configs(checked, parse_space(checked["params"]), cells)
    assert message in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------- the study


def best_adam_trials(n: int) -> list[int]:
    """The committed Adam study's n best trials by the mean validation NLL over the cells of each trial."""
    objectives = defaultdict(list)
    for path in ADAM.glob("*/*/result.json"):
        record = json.loads(path.read_text())
        if record["status"] == "ok":
            objectives[record["trial"]].append(record["objective"])
    complete = {k: sum(v) / len(v) for k, v in objectives.items() if len(v) == 9}
    return sorted(complete, key=complete.get)[:n]


@pytest.mark.skipif(not ADAM.is_dir(), reason="needs the committed records of odyssey_jsb_adam")
def test_the_seeds_study_reruns_the_five_best_committed_adam_trials_exactly():
    from hydra import compose, initialize_config_module

    from lstm_odyssey.cli import register

    register()
    with initialize_config_module("lstm_odyssey.conf", version_base="1.3"):
        cfg = compose("train", overrides=["+sweep=odyssey_jsb_seeds"], return_hydra_config=True)
    checked = study_config(cfg)
    assert (checked["sampler"], checked["seeds"], checked["paired"], checked["pack"], checked["storage"]) == (
        "listed", 3, True, "auto", "journal")
    assert checked["n_trials"] == 5 and checked["grid"]["cell"] == [
        "vanilla", "nig", "nfg", "nog", "niaf", "noaf", "cifg", "np", "fgr"]
    assert cfg.hydra.sweep.dir.endswith("odyssey_jsb/seeds") and cfg.optim.name == "adam"
    assert (cfg.trainer.batch_size, cfg.trainer.clip, cfg.trainer.epochs) == (8, 1.0, 300)  # odyssey_jsb_adam's
    configs = listed_configs(checked, parse_space(checked["params"]))
    best = best_adam_trials(5)
    assert best == [41, 15, 38, 6, 25]
    for k, config in zip(best, configs, strict=True):
        for path in ADAM.glob(f"*/{k:03d}_*/result.json"):  # the same in every cell: the study was paired
            hparams = json.loads(path.read_text())["hparams"]
            assert config == {key: hparams[key] for key in config}, (k, path)  # equal floats: bit for bit
            assert hparams["trainer.seed"] == 0


@pytest.mark.slow
def test_the_seeds_study_runs_a_tiny_version_on_jsb(tmp_path):
    data = os.environ.get("LSTM_ODYSSEY_DATA")
    if not data or not (Path(data) / "jsb_chorales").is_dir():
        pytest.skip("needs the JSB Chorales copy under $LSTM_ODYSSEY_DATA (CI sets it)")
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1", LSTM_ODYSSEY_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-m", "lstm_odyssey.cli", "-m", "+sweep=odyssey_jsb_seeds",
                           f"hydra.sweep.dir={tmp_path}", "cell=vanilla", "sweep.seeds=2", "sweep.report=false",
                           "data.max_chorales=3", "trainer.epochs=1", "hydra/launcher=basic"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = records(tmp_path)
    assert len(recs) == 10 and {r["status"] for r in recs} == {"ok"}
    trials = sorted((r["trial"], r["hparams"]["trainer.seed"]) for r in recs)
    assert trials == [(k, s) for k in range(5) for s in (0, 1)]
    assert {r["trial"]: r["hparams"]["model.hidden_size"] for r in recs} == {0: 179, 1: 165, 2: 123, 3: 83, 4: 62}
    assert (tmp_path / "optuna.journal").exists()
