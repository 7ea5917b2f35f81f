"""The study sweeper: Optuna's ask/tell API behind Hydra's Sweeper interface.

A study (`+sweep=<name>`, see sweeps/) declares a grid (`sweep.grid`: cell, task, any key) and a search space
(`sweep.params`); every grid point gets `sweep.n_trials` trials and its own Optuna study in one storage
(see `study_storage`). Jobs go to whatever launcher Hydra is configured with, in batches as wide as the
launcher runs at once.

Each job is trial k of a grid point. Its run directory is `<grid point>/<k>_<key>`, where the key hashes
the job's overrides (minus bookkeeping), so the same command on the same sweep directory finds its
earlier jobs: an `ok` or `diverged` record is kept; a failed job is resumed from its last checkpoint when it
has one (or run again when it was killed before its first), else kept unless `sweep.rerun_failed=true`
(which starts failed and diverged jobs afresh); a job without a record is run, resuming from its checkpoint.
Random sampling draws trial k from a generator seeded by (seed, grid point, k), or by (seed, k) when
`paired: true`, so a study is reproducible and resumable and paired cells share their samples.

Several processes never train one job twice: the sweep directory has a lock (one sweep at a time, unless
`sweep.cooperate=true`), every job a claim held by the sweep that runs it, and a running job a marker
(lstm_odyssey/sweep/lock.py). A worker that dies takes down only what it ran: the unfinished jobs of its batch
are run again, resuming from their checkpoints; a job that kills its worker when it runs alone is recorded
as failed (killed), and the next run of the command resumes it.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from ..results import DIVERGED, FAILED, OK, RECORD_NAME, STATUSES, hparams_of, read_record, write_record
from ..schema import ConfigError, SweepConfig, check_group, settings_of, validate
from ..signals import sigterm_interrupts
from . import packs
from .lock import LOCK_NAME, RUNNING_NAME, STALE_S, Held, Holder, Holdings, acquire, read_holder
from .progress import Progress
from .space import Param, SearchSpaceError, distributions, format_value, parse_space, to_values
from .worker import SWEEP_ENV, sweep_owner

log = logging.getLogger("lstm_odyssey.sweep")

SAMPLERS = ("random", "tpe")
# Overrides that never change what a job computes, so they stay out of its key.
UNKEYED_PREFIXES = ("sweep.", "+sweep", "++sweep", "hydra.", "logger", "+logger", "paths.", "trainer.device",
                    "trainer.progress", "trainer.resume")
GRID_FIRST = ("data", "cell")  # the run directory reads task/cell/...
CHECKPOINT = Path("checkpoints") / "last.pt"
KILLED = "killed"  # a record's stopped_by when its job ended without writing one
WAIT_POLL_S = 5.0  # how often to look at a job that another process is running
LAUNCHER_LOGGERS = ("hydra_plugins.hydra_joblib_launcher", "hydra_plugins.hydra_submitit_launcher",
                    "hydra._internal.core_plugins.basic_launcher")  # their per-batch banners


class StudyConfigError(CompactHydraException):
    """The study configuration is wrong; raised before any job runs (Hydra prints just the message)."""


class StudyFailed(CompactHydraException):
    """Every job of the study failed: the sweep exits non-zero."""


class SweepBusy(CompactHydraException):
    """Another live sweep holds the sweep directory's lock."""


@dataclass
class Job:
    """Trial k of one grid point."""

    point: tuple[tuple[str, str], ...]
    k: int
    study: optuna.Study
    trial_number: int | None = None
    values: dict[str, Any] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    subdir: str = ""
    claim: Held | None = None
    members: list[Job] = field(default_factory=list)  # a pack job: the trials it trains (sweep/packs.py)

    @property
    def trials(self) -> list[Job]:
        """The jobs whose records this launch writes: the pack's members, or the job itself."""
        return self.members or [self]

    @property
    def label(self) -> str:
        return point_label(self.point)


def derive_seed(*parts: Any) -> int:
    """A stable 31-bit seed from anything printable (hash() is salted per process)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-") or "_"


def point_label(point: Sequence[tuple[str, str]]) -> str:
    """`adding/vanilla` for the default axes; other axes read `key-value`."""
    parts = [_safe(v) if k in GRID_FIRST else _safe(f"{k}-{v}") for k, v in point]
    return "/".join(parts) or "all"


def job_key(overrides: Sequence[str]) -> str:
    """A stable key of what a job computes: a hash of its sorted overrides minus bookkeeping ones."""
    keyed = sorted(o for o in overrides if not o.startswith(UNKEYED_PREFIXES))
    return hashlib.sha1("\n".join(keyed).encode()).hexdigest()[:10]


def _as_list(value: Any) -> list[str]:
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, (list, tuple)):
        return [format_value(v) for v in value]
    if isinstance(value, str) and "," in value:
        return [v.strip() for v in value.split(",") if v.strip()]
    return [format_value(value)]


def launcher_width(launcher_cfg: Mapping | None) -> int:
    """How many jobs the launcher runs at once: joblib n_jobs, submitit array_parallelism, else 1."""
    cfg = launcher_cfg or {}
    n_jobs = cfg.get("n_jobs")
    if n_jobs is not None:
        n_jobs = int(n_jobs)
        return max(1, (os.cpu_count() or 1) + 1 + n_jobs if n_jobs < 0 else n_jobs)
    if cfg.get("array_parallelism"):
        return max(1, int(cfg["array_parallelism"]))
    return 1


def study_storage(setting: str | None, launcher_cfg: Mapping | None, sweep_dir: Path) -> Any:
    """The Optuna storage of a sweep. null: a journal file (`optuna.journal`, Optuna's JournalStorage with
    link-based file locks, safe on NFS) when the launcher is SLURM, whose array jobs share the sweep
    directory over a network filesystem; SQLite (`optuna.db`) for a local launcher. `journal` and `sqlite`
    pick one; anything else is a database URL (`postgresql://...`)."""
    if setting is None:
        target = str((launcher_cfg or {}).get("_target_", ""))
        setting = "journal" if "Slurm" in target else "sqlite"
    if setting == "sqlite":
        return f"sqlite:///{(sweep_dir / 'optuna.db').resolve()}"
    if setting == "journal":
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

        path = str((sweep_dir / "optuna.journal").resolve())
        return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileSymlinkLock(path)))
    return setting


def _storage_name(storage: Any, sweep_dir: Path) -> str:
    return f"journal {sweep_dir / 'optuna.journal'}" if not isinstance(storage, str) else storage


def record_status(path: Path) -> dict | None:
    """The record in a run directory, or None when there is none (or it is unreadable)."""
    try:
        record = read_record(path / RECORD_NAME)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def needs_run(record: dict | None, run_dir: Path, rerun_failed: bool) -> bool:
    """Whether a job must run (again): no record; a failure that can resume from its checkpoint, or whose
    job was killed before writing a checkpoint; any failed or diverged job with `rerun_failed`."""
    if record is None:
        return True
    status = record.get("status")
    if status == OK:
        return False
    if rerun_failed:
        return True
    if status == DIVERGED:
        return False
    return (run_dir / CHECKPOINT).exists() or record.get("stopped_by") == KILLED


def _running_elsewhere(run_dir: Path) -> Holder | None:
    holder, _ = read_holder(run_dir / RUNNING_NAME)
    return holder if holder is not None and holder.is_live() else None


class StudySweeper(Sweeper):
    """Hydra sweeper over `sweep.*` (see module doc). Registered as `hydra/sweeper=odyssey`."""

    def __init__(self, **_: Any) -> None:
        super().__init__()
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher = None
        self.holdings: Holdings | None = None
        self.progress: Progress | None = None
        self.waiting: list[Job] = []
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # ----------------------------------------------------------------- configuration
    def _study_config(self) -> dict:
        assert self.config is not None
        if "sweep" not in self.config or self.config.sweep is None:
            raise StudyConfigError("hydra/sweeper=odyssey needs a study: add +sweep=<name> (see sweeps/, e.g. +sweep=quick)")
        study = OmegaConf.to_container(self.config.sweep, resolve=True)
        assert isinstance(study, dict)
        try:
            check_group("sweep", study, settings_of(SweepConfig))
        except ConfigError as err:
            raise StudyConfigError(str(err)) from None
        problem = packs.check_setting(study.get("pack", 1))
        if problem:
            raise StudyConfigError(problem)
        if study.get("pack", 1) != 1 and study.get("sampler", "random") != "random":
            raise StudyConfigError("sweep.pack packs trials known up front; use sweep.sampler=random with it, or sweep.pack=1")
        if study.get("paired") and study.get("sampler", "random") != "random":
            raise StudyConfigError("sweep.paired=true shares random samples across cells; use sweep.sampler=random with it")
        if "batch_size" in study:  # renamed: it read like trainer.batch_size, the minibatch
            old = study.pop("batch_size")
            if study.get("jobs_per_launch") is None:
                study["jobs_per_launch"] = old
            if old is not None:
                log.warning("sweep.batch_size is deprecated and read until 0.3; use sweep.jobs_per_launch")
        return study

    def _split_arguments(self, arguments: list[str], grid_cfg: Mapping) -> tuple[dict[str, list[str]], list[str]]:
        """Command-line sweeps (`cell=a,b`) become grid axes; a plain override of a grid key pins that axis."""
        assert self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        grid: dict[str, list[str]] = {str(k): _as_list(v) for k, v in (grid_cfg or {}).items()}
        fixed: list[str] = []
        for override in parser.parse_overrides(arguments):
            key = override.get_key_element()
            if override.is_sweep_override():
                if not override.is_discrete_sweep():
                    raise StudyConfigError(
                        f"{override.input_line}: continuous ranges go in the study's sweep.params, not on the command line"
                    )
                grid[key] = list(override.sweep_string_iterator())
            elif key in grid:
                grid[key] = [override.get_value_element_as_str()]
            else:
                fixed.append(override.input_line)
        for key, values in grid.items():
            if not values:
                raise StudyConfigError(f"sweep.grid.{key} is empty; give it at least one value")
        order = [k for k in GRID_FIRST if k in grid] + [k for k in grid if k not in GRID_FIRST]
        return {k: grid[k] for k in order}, fixed

    # ----------------------------------------------------------------- the sweep
    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study_cfg = self._study_config()
        grid, fixed = self._split_arguments(list(arguments), study_cfg.get("grid") or {})
        try:
            space = parse_space(study_cfg.get("params"))
        except SearchSpaceError as err:
            raise StudyConfigError(str(err)) from None
        clash = {p.key for p in space} & set(grid)
        if clash:
            raise StudyConfigError(f"{', '.join(sorted(clash))} is both a grid axis and a searched parameter; keep one")

        sweep_dir = Path(self.config.hydra.sweep.dir)
        name = study_cfg.get("name") or "study"
        n_trials = int(study_cfg.get("n_trials", 1))
        width = int(study_cfg.get("jobs_per_launch") or launcher_width(self.config.hydra.get("launcher")))
        cooperate = bool(study_cfg.get("cooperate"))
        fixed_key = job_key(fixed)
        suffix = "" if fixed_key == job_key([]) else f"@{fixed_key[:6]}"
        points = [tuple(zip(grid, values)) for values in itertools.product(*grid.values())]
        self._validate(points, fixed, space)

        sweep_dir.mkdir(parents=True, exist_ok=True)
        with Holdings() as holdings:
            self.holdings = holdings
            if not cooperate:
                self._lock(sweep_dir)
            OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
            storage = study_storage(study_cfg.get("storage"), self.config.hydra.get("launcher"), sweep_dir)
            studies = {}
            for point in points:
                label = point_label(point)
                seed = derive_seed(study_cfg.get("seed"), label)
                tpe = optuna.samplers.TPESampler(seed=seed, constant_liar=True) if study_cfg.get("sampler") == "tpe" else None
                studies[point] = optuna.create_study(
                    study_name=f"{name}/{label}{suffix}", storage=storage, load_if_exists=True, direction="minimize",
                    sampler=tpe or optuna.samplers.RandomSampler(),
                )
                self._fail_orphans(studies[point], exclusive=not cooperate)
            log.info(
                "study %s: %d grid points x %d trials (%s%s), %s, batches of %d, storage %s",
                name, len(points), n_trials, study_cfg.get("sampler", "random"),
                ", paired" if study_cfg.get("paired") else "", sweep_dir, width, _storage_name(storage, sweep_dir),
            )
            os.environ[SWEEP_ENV] = sweep_owner()  # local workers die with this process (sweep/worker.py)
            for logger in LAUNCHER_LOGGERS:
                logging.getLogger(logger).setLevel(logging.WARNING)

            slots = [(k, point) for k in range(n_trials) for point in points]
            self.progress = Progress(name, len(slots), read=record_status)
            pending: list[Job] = []
            with sigterm_interrupts(), self.progress:  # a cancelled sweep stops its local workers; a rerun resumes
                packing = study_cfg.get("pack", 1) != 1
                for i, (k, point) in enumerate(slots):
                    job = self._prepare(point, k, studies[point], space, fixed, sweep_dir, study_cfg)
                    if job is not None:
                        pending.append(job)
                    if not packing and pending and (len(pending) >= width or i == len(slots) - 1):
                        self._launch(pending, sweep_dir)
                        pending = []
                if packing:  # every job is known up front: pack them, then hand the launcher the packs
                    units = self._pack(pending, sweep_dir, study_cfg["pack"])
                    for start in range(0, len(units), width):
                        self._launch(units[start : start + width], sweep_dir)
                self._wait_for_others(sweep_dir)
            progress = self.progress

        total = sum(progress.counts.values())
        summary = ", ".join(f"{s} {progress.counts.get(s, 0)}" for s in STATUSES)
        before = total - progress.ran
        elsewhere = f"; {progress.elsewhere} claimed by other sweeps" if progress.elsewhere else ""
        log.info("study %s: %d jobs: %s (%d ran now, %d done before)%s", name, total, summary, progress.ran, before, elsewhere)
        print(f"[sweep] {name}: {total} jobs: {summary} ({progress.ran} ran now, {before} done before){elsewhere}; {sweep_dir}")
        if total and progress.counts.get(OK, 0) == 0 and not progress.elsewhere:
            from .collect import collect

            collect(sweep_dir)
            raise StudyFailed(f"every job of study {name} failed; read the errors in the result.json files under {sweep_dir}")
        return []

    def _lock(self, sweep_dir: Path) -> None:
        """Hold the sweep directory's lock, or refuse with one line that names the sweep holding it."""
        assert self.holdings is not None
        held = acquire(sweep_dir / LOCK_NAME, "sweep lock")
        if isinstance(held, Holder):
            raise SweepBusy(
                f"{sweep_dir} is in use by another sweep ({held.describe()}); wait for it or stop it, then rerun "
                "(sweep.cooperate=true lets several sweep processes share a directory)"
            )
        self.holdings.add(held)

    def _validate(self, points: list, fixed: list[str], space: list[Param]) -> None:
        """Compose and check one job per grid point before anything runs: a wrong config fails fast."""
        assert self.hydra_context is not None and self.config is not None
        sample = {}
        for p in space:
            dist = p.distribution
            sample[p.key] = p.value(dist.choices[0] if hasattr(dist, "choices") else dist.low)  # type: ignore[attr-defined]
        for point in points:
            overrides = self._overrides(point, sample, fixed)
            try:
                cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
                validate(_job_container(cfg))
            except ConfigError as err:
                raise StudyConfigError(f"grid point {point_label(point)}: {err}") from None
            except Exception as err:  # composition errors come in several types
                from ..schema import one_line

                raise StudyConfigError(f"grid point {point_label(point)}: {one_line(err)}") from None

    @staticmethod
    def _overrides(point, values: Mapping[str, Any], fixed: list[str]) -> list[str]:
        return [*fixed, *(f"{k}={v}" for k, v in point), *(f"{k}={format_value(v)}" for k, v in values.items())]

    # ----------------------------------------------------------------- one job
    @staticmethod
    def _latest_trial(study: optuna.Study, k: int, space: Sequence[Param] = ()) -> optuna.trial.FrozenTrial | None:
        """The newest trial of index k that has all its parameters (a cooperating sweep, or one killed while
        asking, can leave a trial whose parameters are not all stored yet)."""
        earlier = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("k") == k
                   and t.state != optuna.trial.TrialState.WAITING and all(p.optuna_name in t.params for p in space)]
        return earlier[-1] if earlier else None

    def _place(self, job: Job, values: dict[str, Any], fixed: list[str], sweep_dir: Path) -> Path:
        job.values = values
        job.overrides = self._overrides(job.point, values, fixed)
        job.subdir = f"{job.label}/{job.k:03d}_{job_key(job.overrides)}"
        return sweep_dir / job.subdir

    def _prepare(self, point, k: int, study: optuna.Study, space: list[Param], fixed: list[str], sweep_dir: Path,
                 study_cfg: Mapping) -> Job | None:
        """Claim trial k of this grid point and make its job; None when there is nothing to run (it is done,
        another sweep holds it, or a process from an earlier sweep still trains it: then this sweep waits)."""
        assert self.holdings is not None and self.progress is not None
        job = Job(point=point, k=k, study=study)
        rerun_failed = bool(study_cfg.get("rerun_failed"))
        trial = self._latest_trial(study, k, space)
        if trial is not None:  # the common case on a rerun: a finished job needs no claim
            run_dir = self._place(job, to_values(space, trial.params) if space else {}, fixed, sweep_dir)
            record = record_status(run_dir)
            if not needs_run(record, run_dir, rerun_failed):
                self._finish(job, trial.number, record, run_dir, before=True)  # type: ignore[arg-type]
                return None
        claim = acquire(sweep_dir / job.label / f".claim-{k:03d}", "job claim")
        if isinstance(claim, Holder):
            log.info("trial %d of %s is claimed by another sweep (%s)", k, job.label, claim.describe())
            self.progress.elsewhere += 1
            return None
        job.claim = self.holdings.add(claim)
        trial = self._latest_trial(study, k, space)  # read again under the claim: another sweep may have moved on
        if trial is None:
            live = self._ask(study, space, study_cfg, job.label, k)
            number, params = live.number, live.params
        else:
            number, params = trial.number, trial.params
        run_dir = self._place(job, to_values(space, params) if space else {}, fixed, sweep_dir)
        record = record_status(run_dir)
        if not needs_run(record, run_dir, rerun_failed):
            self._finish(job, number, record, run_dir, before=True)  # type: ignore[arg-type]
            return None
        finished = trial is not None and trial.state.is_finished()
        job.trial_number = self._retry_trial(study, trial, k) if finished else number
        if _running_elsewhere(run_dir):  # e.g. a SLURM job that outlived its sweep: wait, do not train it twice
            self.waiting.append(job)
            return None
        if record is not None:
            if rerun_failed or not (run_dir / CHECKPOINT).exists():
                (run_dir / CHECKPOINT).unlink(missing_ok=True)  # start afresh
            (run_dir / RECORD_NAME).unlink()  # the new attempt writes its own; its absence means "not done"
        job.overrides += [f"++sweep.trial={k}", f"++sweep.job={job.subdir}", "trainer.resume=true",
                          f"hydra.sweep.subdir={job.subdir}"]
        return job

    @staticmethod
    def _ask(study: optuna.Study, space: list[Param], study_cfg: Mapping, label: str, k: int) -> optuna.Trial:
        if study_cfg.get("sampler", "random") == "random":
            # Trial k's sample depends on (seed, point, k) only: reproducible, resumable, and shared when paired.
            seed = study_cfg.get("seed")
            trial_seed = None if seed is None else derive_seed(seed, "paired" if study_cfg.get("paired") else label, k)
            study.sampler = optuna.samplers.RandomSampler(seed=trial_seed)
        trial = study.ask(distributions(space))
        trial.set_user_attr("k", k)
        return trial

    @staticmethod
    def _retry_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, k: int) -> int:
        """A new running trial with a finished trial's parameters (its job runs again), made in one step."""
        template = optuna.trial.create_trial(
            state=optuna.trial.TrialState.RUNNING, params=trial.params, distributions=trial.distributions,
            user_attrs={"k": k},
        )
        trial_id = study._storage.create_new_trial(study._study_id, template_trial=template)
        return study._storage.get_trial_number_from_id(trial_id)

    @staticmethod
    def _fail_orphans(study: optuna.Study, exclusive: bool) -> None:
        """Trials a killed sweep left half-made (asked, but no trial index k yet; or waiting) are failed, so
        that they neither sit RUNNING forever nor mislead the sampler. Sweeps sharing a directory leave
        each other's fresh ones alone."""
        now = time.time()
        for trial in study.get_trials(deepcopy=False):
            unfinished = trial.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
            age = now - trial.datetime_start.timestamp() if trial.datetime_start else math.inf
            if unfinished and "k" not in trial.user_attrs and (exclusive or age > STALE_S):
                study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)

    # ----------------------------------------------------------------- launching
    def _pack(self, jobs: list[Job], sweep_dir: Path, setting: int | str) -> list[Job]:
        """The launch units of packed trials: a pack of one is its job, a wider pack one job over its members."""
        assert self.hydra_context is not None and self.config is not None
        configs = []
        for job in jobs:
            cfg = _job_container(self.hydra_context.config_loader.load_sweep_config(self.config, list(job.overrides)))
            cfg["overrides"] = list(job.overrides)
            configs.append(cfg)
        units = []
        for members in packs.plan(configs, [job.label for job in jobs], setting):
            if len(members) == 1:
                units.append(jobs[members[0]])
                continue
            first = jobs[members[0]]
            manifest = packs.write_manifest(sweep_dir, [(configs[i], sweep_dir / jobs[i].subdir) for i in members])
            units.append(Job(point=first.point, k=first.k, study=first.study, subdir=first.subdir,
                             overrides=[*first.overrides, f"++sweep.{packs.MANIFEST_KEY}={manifest}"],
                             members=[jobs[i] for i in members]))
        log.info("%d jobs in %d launches (sweep.pack=%s)", len(jobs), len(units), setting)
        return units

    def _launch(self, jobs: list[Job], sweep_dir: Path) -> None:
        """Run a batch. When a worker dies, the launcher loses the whole batch: its unfinished jobs run again
        (resuming), together first, then one at a time, so that only a job that kills its worker by
        itself ends failed."""
        crashed = self._launch_once(jobs, sweep_dir)
        if len(crashed) > 1:
            log.warning("a worker died; running the %d unfinished jobs of its batch again", len(crashed))
            crashed = self._launch_once(crashed, sweep_dir)
        if len(crashed) > 1:
            log.warning("a worker died again; running the %d unfinished jobs one at a time", len(crashed))
            crashed = [lost for job in crashed for lost in self._launch_once([job], sweep_dir)]
        for job in crashed:
            self._finish(job, job.trial_number, self._missing_record(job, sweep_dir / job.subdir, None), sweep_dir / job.subdir)

    def _launch_once(self, jobs: list[Job], sweep_dir: Path) -> list[Job]:
        """Launch `jobs` and finish those that ended; returns the jobs a broken launch left unfinished."""
        assert self.launcher is not None and self.progress is not None
        results: Sequence[JobReturn] = []
        broken = False
        self.progress.in_flight = [sweep_dir / trial.subdir for job in jobs for trial in job.trials]
        try:
            results = self.launcher.launch([job.overrides for job in jobs], initial_job_idx=self.job_idx)
        except Exception as err:  # a killed worker takes its batch down: what left a record still counts
            log.error("launcher failed on a batch of %d jobs: %s: %s", len(jobs), type(err).__name__, str(err).strip().splitlines()[0] if str(err).strip() else "")
            broken = True
        finally:
            self.job_idx += len(jobs)
            self.progress.in_flight = []
        crashed = []
        for i, unit in enumerate(jobs):
            for job in unit.trials:  # a pack's members are rerun alone if its worker died
                run_dir = sweep_dir / job.subdir
                record = record_status(run_dir)
                if record is None and _running_elsewhere(run_dir):  # the launcher lost track of a job that still runs
                    self.waiting.append(job)
                    continue
                if record is None and broken:
                    crashed.append(job)
                    continue
                if record is None:
                    record = self._missing_record(job, run_dir, results[i] if i < len(results) else None)
                self._finish(job, job.trial_number, record, run_dir)
        if not self.progress.tty:
            self.progress.show()
        return crashed

    def _wait_for_others(self, sweep_dir: Path) -> None:
        """Jobs that a process of an earlier sweep still trains: wait for their records."""
        for job in self.waiting:
            run_dir = sweep_dir / job.subdir
            holder = _running_elsewhere(run_dir)
            if holder is not None:
                log.warning("waiting for %s, trained by %s", job.subdir, holder.describe())
            while _running_elsewhere(run_dir) is not None:
                time.sleep(WAIT_POLL_S)
            record = record_status(run_dir) or self._missing_record(job, run_dir, None)
            self._finish(job, job.trial_number, record, run_dir)
        self.waiting = []

    def _finish(self, job: Job, number: int | None, record: dict, run_dir: Path, before: bool = False) -> None:
        """Count a job's end, tell its trial (when still running) and release its claim."""
        assert self.progress is not None and self.holdings is not None
        self.progress.done(record.get("status", FAILED), before=before)
        if number is not None:
            self._tell(job.study, number, record, run_dir)
        if job.claim is not None:
            self.holdings.release(job.claim)
            job.claim = None

    def _missing_record(self, job: Job, run_dir: Path, result: JobReturn | None) -> dict:
        """A job that ended without a record (killed, or crashed outside training) is recorded as failed."""
        if result is not None and result.status == JobStatus.FAILED:
            err = result._return_value
            error, stopped_by = f"{type(err).__name__}: {err}", None
        else:
            error = "the job ended without writing a record (killed, out of memory, or lost by the launcher)"
            stopped_by = KILLED
        record: dict[str, Any] = {"status": FAILED, "error": error, "run_dir": str(run_dir),
                                  "overrides": job.overrides, "trial": job.k, "stopped_by": stopped_by}
        try:
            assert self.hydra_context is not None and self.config is not None
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(job.overrides))
            record.update(cell=cfg.cell.name, task=cfg.data.name, seed=cfg.trainer.seed,
                          study=cfg.sweep.get("name"))
            record["hparams"] = hparams_of(_job_container(cfg))
        except Exception as exc:  # the record matters more than its details
            log.warning("could not compose the config of %s: %s", job.subdir, exc)
        write_record(run_dir, record)
        log.error("job %s failed without a record: %s", job.subdir, error)
        return record

    @staticmethod
    def _tell(study: optuna.Study, number: int, record: dict, run_dir: Path) -> None:
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


def _job_container(cfg: DictConfig) -> dict:
    """A composed job config as a plain dict, without the hydra node (which needs a Hydra runtime)."""
    job_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return OmegaConf.to_container(job_cfg, resolve=True)  # type: ignore[return-value]
