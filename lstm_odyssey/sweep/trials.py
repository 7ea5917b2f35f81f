"""The Optuna side of a study: its storage, one Optuna study per grid point, trial k's sample, and the
objective of each record told back.

Random sampling draws trial k from a generator seeded by (seed, grid point, k), or by (seed, k) when
`paired: true`, so a study is reproducible and resumable and paired cells share their samples (the seed
axis of `sweep.seeds` is left out of the grid point: every seed of trial k runs its sample). `sampler: listed`
asks trial k with the values of `sweep.configs[k]`. A trial records its index k (user attribute `k`); a job that
runs again gets a new trial with the same parameters.
"""

from __future__ import annotations

import fcntl
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna

from ..locks import STALE_S
from ..results import FAILED, OK
from .jobs import derive_seed
from .space import Param, distributions


def study_storage(setting: str | None, launcher_cfg: Mapping | None, sweep_dir: Path) -> Any:
    """The Optuna storage of a sweep. null: a journal file (`optuna.journal`, Optuna's JournalStorage with
    link-based file locks, safe on NFS) when the launcher is SLURM, whose array jobs share the sweep
    directory over a network filesystem; SQLite (`optuna.db`) for a local launcher. `journal` and `sqlite`
    pick one; anything else is a database URL (`postgresql://...`)."""
    if setting is None:
        target = str((launcher_cfg or {}).get("_target_", ""))
        setting = "journal" if "Slurm" in target else "sqlite"
    if setting == "sqlite":
        return sqlite_storage(sweep_dir)
    if setting == "journal":
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

        path = str((sweep_dir / "optuna.journal").resolve())
        return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileSymlinkLock(path)))
    return setting


def sqlite_storage(sweep_dir: Path) -> optuna.storages.RDBStorage:
    """The sweep's SQLite storage, its tables made under an exclusive lock: cooperating sweeps that start
    together would otherwise both create them, and one dies of an IntegrityError (or "table exists")."""
    url = f"sqlite:///{(sweep_dir / 'optuna.db').resolve()}"
    with open(sweep_dir / "optuna.db.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        return optuna.storages.RDBStorage(url)


def storage_name(storage: Any, sweep_dir: Path) -> str:
    if isinstance(storage, optuna.storages.RDBStorage):
        return storage.url
    return f"journal {sweep_dir / 'optuna.journal'}" if not isinstance(storage, str) else storage


def open_study(study_name: str, label: str, storage: Any, study_cfg: Mapping, exclusive: bool) -> optuna.Study:
    """The Optuna study of one grid point (made, or loaded to resume), its half-made trials failed."""
    tpe = _tpe(study_cfg, label) if study_cfg.get("sampler") == "tpe" else None
    study = optuna.create_study(study_name=study_name, storage=storage, load_if_exists=True, direction="minimize",
                                sampler=tpe or optuna.samplers.RandomSampler())
    fail_orphans(study, exclusive)
    return study


def fail_orphans(study: optuna.Study, exclusive: bool) -> None:
    """Trials a killed sweep left half-made (asked, but no trial index k yet; or waiting) are failed, so
    that they neither sit RUNNING forever nor mislead the sampler. Sweeps sharing a directory leave
    each other's fresh ones alone."""
    now = time.time()
    for trial in study.get_trials(deepcopy=False):
        unfinished = trial.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
        age = now - trial.datetime_start.timestamp() if trial.datetime_start else math.inf
        if unfinished and "k" not in trial.user_attrs and (exclusive or age > STALE_S):
            study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)


def latest_trial(study: optuna.Study, k: int, space: Sequence[Param] = ()) -> optuna.trial.FrozenTrial | None:
    """The newest trial of index k that has all its parameters (a cooperating sweep, or one killed while
    asking, can leave a trial whose parameters are not all stored yet)."""
    earlier = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("k") == k
               and t.state != optuna.trial.TrialState.WAITING and all(p.optuna_name in t.params for p in space)]
    return earlier[-1] if earlier else None


def ask(study: optuna.Study, space: list[Param], study_cfg: Mapping, label: str, k: int,
        listed: Sequence[Mapping[str, Any]] | None = None) -> optuna.Trial:
    """A new trial of index k with its sample (`label`: the grid point's, less the seed axis of sweep.seeds);
    with sampler listed, the values of `listed[k]` (the grid point's configurations, checked in sweep/study.py)."""
    if study_cfg["sampler"] == "listed":
        assert listed is not None, "sampler listed asks with the grid point's configurations"
        study.sampler = ListedSampler({p.optuna_name: p.optuna_value(listed[k][p.key]) for p in space})
    elif study_cfg["sampler"] == "random":
        # Trial k's sample depends on (seed, point, k) only: reproducible, resumable, and shared when paired.
        seed = study_cfg["seed"]
        trial_seed = None if seed is None else derive_seed(seed, "paired" if study_cfg["paired"] else label, k)
        study.sampler = optuna.samplers.RandomSampler(seed=trial_seed)
    elif study_cfg["sampler"] == "tpe":
        # Seeded per k, not once per sweep: the fresh sampler of a resumed sweep would replay the first session's
        # draws and ask again for the parameters of a trial already run.
        study.sampler = _tpe(study_cfg, label, k)
    trial = study.ask(distributions(space))
    trial.set_user_attr("k", k)
    return trial


class ListedSampler(optuna.samplers.BaseSampler):
    """Samples a given value for every parameter: trial k of `sweep.sampler=listed` asks through it, so that its
    trials are made, stored, told and resumed like sampled ones (no waiting trials, unlike enqueue_trial, that a
    cooperating sweep's ask could take for another k)."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.params = dict(params)

    def infer_relative_search_space(self, study: optuna.Study, trial: Any) -> dict:
        return {}

    def sample_relative(self, study: optuna.Study, trial: Any, search_space: Mapping) -> dict:
        return {}

    def sample_independent(self, study: optuna.Study, trial: Any, param_name: str, param_distribution: Any) -> Any:
        return self.params[param_name]


def listed_mismatch(study: optuna.Study, space: Sequence[Param], configs: Sequence[Mapping]) -> str | None:
    """Where the stored trials of a listed study ran other values than sweep.configs gives now (the list was
    edited between runs of the same command): one line naming the trial and the key; None when none did."""
    for trial in study.get_trials(deepcopy=False):
        k = trial.user_attrs.get("k")
        if not isinstance(k, int) or k >= len(configs):
            continue
        for p in space:
            stored = trial.params.get(p.optuna_name)
            if p.optuna_name in trial.params and stored != p.optuna_value(configs[k][p.key]):
                ran = p.value(stored)
                return (f"trial {k} ran with {p.key}={ran!r} in this sweep directory, but sweep.configs[{k}] gives "
                        f"{configs[k][p.key]!r}; restore sweep.configs, or run it in another hydra.sweep.dir")
    return None


def _tpe(study_cfg: Mapping, *parts: Any) -> optuna.samplers.TPESampler:
    """Optuna's TPE, seeded from the study's seed and `parts` (the grid point; trial k when asking)."""
    return optuna.samplers.TPESampler(seed=derive_seed(study_cfg["seed"], *parts), constant_liar=True)


def retry_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, k: int) -> int:
    """A new running trial with a finished trial's parameters (its job runs again), made in one step."""
    template = optuna.trial.create_trial(
        state=optuna.trial.TrialState.RUNNING, params=trial.params, distributions=trial.distributions,
        user_attrs={"k": k},
    )
    trial_id = study._storage.create_new_trial(study._study_id, template_trial=template)
    return study._storage.get_trial_number_from_id(trial_id)


def tell(study: optuna.Study, number: int, record: dict, run_dir: Path) -> None:
    """Tell trial `number` (when still running) how its job ended: the objective of an ok record, else failed."""
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    if study._storage.get_trial(trial_id).state.is_finished():
        return
    status = record.get("status", FAILED)
    objective = record.get("objective")
    trial = optuna.trial.Trial(study, trial_id)
    try:
        trial.set_user_attr("status", status)
        trial.set_user_attr("run_dir", str(run_dir))
        if record.get("error"):
            trial.set_user_attr("error", str(record["error"])[:500])
        if status == OK and isinstance(objective, (int, float)) and math.isfinite(objective):
            study.tell(number, float(objective))
        else:
            study.tell(number, state=optuna.trial.TrialState.FAIL)
    except (ValueError, optuna.exceptions.UpdateFinishedTrialError):  # told meanwhile by a cooperating sweep
        pass
