"""The study sweeper: Optuna's ask/tell API behind Hydra's Sweeper interface.

A study (`+sweep=<name>`, see sweeps/) declares a grid (`sweep.grid`: cell, task, any key) and a search space
(`sweep.params`); every grid point gets `sweep.n_trials` trials and its own Optuna study in one storage
(SQLite in the sweep directory unless `sweep.storage` names a database). Jobs go to whatever launcher
Hydra is configured with, in batches as wide as the launcher runs at once.

Each job is trial k of a grid point. Its run directory is `<grid point>/<k>_<key>`, where the key hashes
the job's overrides (minus bookkeeping), so the same command on the same sweep directory finds its
earlier jobs: an `ok` record is skipped, a failed one is skipped unless `sweep.rerun_failed=true`, a job
that left no record (killed) is run again, resuming from its last checkpoint. Random sampling draws
trial k from a generator seeded by (seed, grid point, k), or by (seed, k) when `paired: true`, so a
study is reproducible and resumable and paired cells share their samples.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import os
import re
import signal
import threading
from collections import Counter
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

from ..results import FAILED, OK, RECORD_NAME, STATUSES, hparams_of, read_record, write_record
from .space import Param, SearchSpaceError, distributions, format_value, parse_space, to_values

log = logging.getLogger("lstm_odyssey.sweep")

SAMPLERS = ("random", "tpe")
# Overrides that never change what a job computes, so they stay out of its key.
UNKEYED_PREFIXES = ("sweep.", "+sweep", "++sweep", "hydra.", "logger", "+logger", "paths.", "trainer.device",
                    "trainer.progress", "trainer.resume")
GRID_FIRST = ("data", "cell")  # the run directory reads task/cell/...


class StudyConfigError(CompactHydraException):
    """The study configuration is wrong; raised before any job runs (Hydra prints just the message)."""


class StudyFailed(CompactHydraException):
    """Every job of the study failed: the sweep exits non-zero."""


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


def record_status(path: Path) -> dict | None:
    """The record in a run directory, or None when there is none (or it is unreadable)."""
    try:
        record = read_record(path / RECORD_NAME)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


class _sigterm_as_interrupt:
    """SIGTERM (kill, scancel, a closed terminal) raises KeyboardInterrupt in the sweeping process, so joblib
    shuts its workers down instead of leaving them running orphaned."""

    def __enter__(self) -> None:
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._raise)

    @staticmethod
    def _raise(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    def __exit__(self, *exc: Any) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


class StudySweeper(Sweeper):
    """Hydra sweeper over `sweep.*` (see module doc). Registered as `hydra/sweeper=odyssey`."""

    def __init__(self, **_: Any) -> None:
        super().__init__()
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher = None
        self.counts: Counter = Counter()

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
        sampler = study.get("sampler", "random")
        if sampler not in SAMPLERS:
            raise StudyConfigError(f"sweep.sampler is {sampler!r}; use one of {', '.join(SAMPLERS)}")
        if study.get("paired") and sampler != "random":
            raise StudyConfigError("sweep.paired=true shares random samples across cells; use sweep.sampler=random with it")
        if "batch_size" in study:  # renamed: it read like trainer.batch_size, the minibatch
            old = study.pop("batch_size")
            if study.get("jobs_per_launch") is None:
                study["jobs_per_launch"] = old
            if old is not None:
                log.warning("sweep.batch_size is deprecated and read until 0.3; use sweep.jobs_per_launch")
        n = study.get("n_trials", 1)
        if not isinstance(n, int) or n < 1:
            raise StudyConfigError(f"sweep.n_trials must be a positive integer, got {n!r}")
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
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        storage = study_cfg.get("storage") or f"sqlite:///{(sweep_dir / 'optuna.db').resolve()}"
        name = study_cfg.get("name") or "study"
        seed = study_cfg.get("seed")
        sampler = study_cfg.get("sampler", "random")
        paired = bool(study_cfg.get("paired"))
        rerun_failed = bool(study_cfg.get("rerun_failed"))
        n_trials = int(study_cfg.get("n_trials", 1))
        width = int(study_cfg.get("jobs_per_launch") or launcher_width(self.config.hydra.get("launcher")))
        fixed_key = job_key(fixed)
        suffix = "" if fixed_key == job_key([]) else f"@{fixed_key[:6]}"

        points = [tuple(zip(grid, values)) for values in itertools.product(*grid.values())]
        self._validate(points, fixed, space)
        studies = {}
        for point in points:
            label = point_label(point)
            tpe = optuna.samplers.TPESampler(seed=derive_seed(seed, label), constant_liar=True) if sampler == "tpe" else None
            studies[point] = optuna.create_study(
                study_name=f"{name}/{label}{suffix}", storage=storage, load_if_exists=True, direction="minimize",
                sampler=tpe or optuna.samplers.RandomSampler(),
            )
        log.info(
            "study %s: %d grid points x %d trials (%s%s), %s, batches of %d, storage %s",
            name, len(points), n_trials, sampler, ", paired" if paired else "", sweep_dir, width, storage,
        )

        self.counts = Counter()
        skipped = 0
        returns: list[Sequence[JobReturn]] = []
        pending: list[Job] = []
        job_idx = 0
        slots = [(k, point) for k in range(n_trials) for point in points]
        with _sigterm_as_interrupt():  # a cancelled sweep stops its local workers too; a rerun resumes it
            for i, (k, point) in enumerate(slots):
                job = self._prepare(point, k, studies[point], space, fixed, sweep_dir, seed, sampler, paired, rerun_failed)
                if job is None:
                    skipped += 1
                else:
                    pending.append(job)
                if pending and (len(pending) >= width or i == len(slots) - 1):
                    returns.append(self._launch(pending, job_idx, sweep_dir))
                    job_idx += len(pending)
                    pending = []

        total = sum(self.counts.values())
        summary = ", ".join(f"{s} {self.counts.get(s, 0)}" for s in STATUSES)
        log.info("study %s: %d jobs: %s (%d ran now, %d done before)", name, total, summary, total - skipped, skipped)
        print(f"[sweep] {name}: {total} jobs: {summary} ({total - skipped} ran now, {skipped} done before); {sweep_dir}")
        if total and self.counts.get(OK, 0) == 0:
            from .collect import collect

            collect(sweep_dir)
            raise StudyFailed(f"every job of study {name} failed; read the errors in the result.json files under {sweep_dir}")
        return returns

    def _validate(self, points: list, fixed: list[str], space: list[Param]) -> None:
        """Compose one job per grid point before anything runs: a wrong config fails fast."""
        sample = {}
        for p in space:
            dist = p.distribution
            sample[p.key] = p.value(dist.choices[0] if hasattr(dist, "choices") else dist.low)  # type: ignore[attr-defined]
        for point in points:
            overrides = self._overrides(point, sample, fixed)
            try:
                self.validate_batch_is_legal([overrides])
            except Exception as err:  # composition errors come in several types
                raise StudyConfigError(f"grid point {point_label(point)}: {err}") from None

    @staticmethod
    def _overrides(point, values: Mapping[str, Any], fixed: list[str]) -> list[str]:
        return [*fixed, *(f"{k}={v}" for k, v in point), *(f"{k}={format_value(v)}" for k, v in values.items())]

    def _prepare(
        self, point, k: int, study: optuna.Study, space: list[Param], fixed: list[str], sweep_dir: Path,
        seed: Any, sampler: str, paired: bool, rerun_failed: bool,
    ) -> Job | None:
        """Find or ask trial k of this grid point; None when its job is already done."""
        job = Job(point=point, k=k, study=study)
        earlier = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("k") == k]
        trial = earlier[-1] if earlier else None
        if trial is not None:
            job.values = to_values(space, trial.params) if space else {}
        else:
            trial = self._ask(study, space, seed, job.label, k, sampler, paired)
            job.values = to_values(space, trial.params)
        job.overrides = self._overrides(point, job.values, fixed)
        job.subdir = f"{job.label}/{k:03d}_{job_key(job.overrides)}"
        run_dir = sweep_dir / job.subdir
        record = record_status(run_dir)
        state = trial.state if isinstance(trial, optuna.trial.FrozenTrial) else optuna.trial.TrialState.RUNNING
        if record is not None and (record.get("status") == OK or not rerun_failed):
            status = record.get("status", FAILED)
            self.counts[status] += 1
            if state == optuna.trial.TrialState.RUNNING:  # finished, but the sweep died before telling Optuna
                self._tell(study, trial.number, record, run_dir)
            return None
        if state == optuna.trial.TrialState.RUNNING:
            job.trial_number = trial.number
        else:  # a finished trial asked to run again: a new trial with the same parameters
            study.enqueue_trial(trial.params, user_attrs={"k": k}, skip_if_exists=False)
            job.trial_number = study.ask(distributions(space)).number
        if record is not None:  # rerunning a failed job: start afresh, not from its checkpoint
            (run_dir / "checkpoints" / "last.pt").unlink(missing_ok=True)
        job.overrides += [f"++sweep.trial={k}", f"++sweep.job={job.subdir}", "trainer.resume=true",
                          f"hydra.sweep.subdir={job.subdir}"]
        return job

    @staticmethod
    def _ask(study: optuna.Study, space: list[Param], seed: Any, label: str, k: int, sampler: str, paired: bool):
        if sampler == "random":
            # Trial k's sample depends on (seed, point, k) only: reproducible, resumable, and shared when paired.
            trial_seed = None if seed is None else derive_seed(seed, "paired" if paired else label, k)
            study.sampler = optuna.samplers.RandomSampler(seed=trial_seed)
        trial = study.ask(distributions(space))
        trial.set_user_attr("k", k)
        return trial

    def _launch(self, jobs: list[Job], job_idx: int, sweep_dir: Path) -> Sequence[JobReturn]:
        assert self.launcher is not None
        results: Sequence[JobReturn] = []
        try:
            results = self.launcher.launch([job.overrides for job in jobs], initial_job_idx=job_idx)
        except Exception as err:  # a killed worker takes its batch down: what left a record still counts
            log.error("launcher failed on a batch of %d jobs: %s: %s", len(jobs), type(err).__name__, err)
        for i, job in enumerate(jobs):
            run_dir = sweep_dir / job.subdir
            record = record_status(run_dir)
            result = results[i] if i < len(results) else None
            if record is None:
                record = self._missing_record(job, run_dir, result)
            self.counts[record.get("status", FAILED)] += 1
            assert job.trial_number is not None
            self._tell(job.study, job.trial_number, record, run_dir)
        return results

    def _missing_record(self, job: Job, run_dir: Path, result: JobReturn | None) -> dict:
        """A job that ended without a record (killed, or crashed outside training) is recorded as failed."""
        if result is not None and result.status == JobStatus.FAILED:
            err = result._return_value
            error = f"{type(err).__name__}: {err}"
        else:
            error = "the job ended without writing a record (killed, out of memory, or lost by the launcher)"
        record: dict[str, Any] = {"status": FAILED, "error": error, "run_dir": str(run_dir),
                                  "overrides": job.overrides, "trial": job.k, "stopped_by": None}
        try:
            assert self.hydra_context is not None and self.config is not None
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(job.overrides))
            record.update(cell=cfg.cell.name, task=cfg.data.name, seed=cfg.trainer.seed,
                          study=cfg.sweep.get("name"))
            job_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])  # hydra.* needs a runtime
            record["hparams"] = hparams_of(OmegaConf.to_container(job_cfg, resolve=True))  # type: ignore[arg-type]
        except Exception as exc:  # the record matters more than its details
            log.warning("could not compose the config of %s: %s", job.subdir, exc)
        write_record(run_dir, record)
        log.error("job %s failed without a record: %s", job.subdir, error)
        return record

    @staticmethod
    def _tell(study: optuna.Study, number: int, record: dict, run_dir: Path) -> None:
        status = record.get("status", FAILED)
        objective = record.get("objective")
        trial = optuna.trial.Trial(study, study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number))
        trial.set_user_attr("status", status)
        trial.set_user_attr("run_dir", str(run_dir))
        if record.get("error"):
            trial.set_user_attr("error", str(record["error"])[:500])
        if status == OK and isinstance(objective, (int, float)) and math.isfinite(objective):
            study.tell(number, float(objective))
        else:
            study.tell(number, state=optuna.trial.TrialState.FAIL)
