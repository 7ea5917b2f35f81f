"""The study sweeper: Optuna's ask/tell API behind Hydra's Sweeper interface.

A study (`+sweep=<name>`, see sweeps/) declares a grid (`sweep.grid`: cell, task, any key) and a search space
(`sweep.params`); every grid point gets `sweep.n_trials` trials and its own Optuna study in one storage
(sweep/trials.py); `sweep.seeds` adds the grid axis trainer.seed = 0 .. K-1, and `sweep.sampler=listed` runs
the configurations of `sweep.configs` as the trials. Jobs go to whatever launcher Hydra is configured with, in
batches as wide as the launcher runs at once. Each job is trial k of a grid point, found again by its key when
the same command runs on the same sweep directory (sweep/jobs.py: which jobs are kept, resumed or run again); the study is
checked, and one job per grid point composed, before any job runs (sweep/study.py).

Several processes never train one job twice: the sweep directory has a lock (one sweep at a time, unless
`sweep.cooperate=true`), every job a claim held by the sweep that runs it, and a running job a marker (how
they are held: lstm_odyssey/locks.py; where they lie: jobstate.py). A worker that dies takes down only what it
ran: the unfinished jobs of its batch are run again, resuming from their checkpoints; a job that kills its worker when it runs alone is recorded
as failed (killed), and the next run of the command resumes it.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from .. import jobstate
from ..cells import cell_label
from ..jobstate import KILLED
from ..locks import LOCK_NAME, Holder, Holdings, acquire
from ..results import FAILED, OK, STATUSES, hparams_of, write_record
from ..signals import interrupts, reraise_if_interrupted
from . import packs, trials
from .jobs import Job, job_key, launcher_width, point_label, time_limit_problem
from .progress import Progress
from .slurm import is_lost
from .space import Param, to_values
from .study import (
    StudyConfigError,
    job_container,
    listed_configs,
    point_configs,
    preflight,
    sample_label,
    search_space,
    seed_axis,
    split_arguments,
    study_config,
)
from .worker import SWEEP_ENV, local_pool, sweep_owner

log = logging.getLogger("lstm_odyssey.sweep")

WAIT_POLL_S = 5.0  # how often to look at a job that another process is running
LAUNCHER_LOGGERS = ("hydra_plugins.hydra_joblib_launcher", "hydra_plugins.hydra_submitit_launcher",
                    "hydra._internal.core_plugins.basic_launcher")  # their per-batch banners


class StudyFailed(CompactHydraException):
    """Every job of the study failed: the sweep exits non-zero."""


class SweepBusy(CompactHydraException):
    """Another live sweep holds the sweep directory's lock."""


def open_studies(prefix: str, suffix: str, points: list, storage: Any, study_cfg: dict, space: list[Param],
                 exclusive: bool) -> dict:
    """The Optuna study of each grid point; a listed study resumes only with the configurations it ran."""
    studies = {point: trials.open_study(f"{prefix}{point_label(point)}{suffix}", point_label(point), storage,
                                        study_cfg, exclusive=exclusive) for point in points}
    if study_cfg["configs"] is not None:
        for point, study in studies.items():
            problem = trials.listed_mismatch(study, space, point_configs(study_cfg["configs"], point))
            if problem:
                raise StudyConfigError(f"{point_label(point)}: {problem}")
    return studies


def sampling(study_cfg: dict) -> str:
    """How a study samples its trials, in a few words: `random, paired, 3 seeds`."""
    seeds = f", {study_cfg['seeds']} seeds" if study_cfg["seeds"] > 1 else ""
    return f"{study_cfg['sampler']}{', paired' if study_cfg['paired'] else ''}{seeds}"


def finish(name: str, progress: Progress, sweep_dir: Path) -> None:
    """The study's last lines (log and terminal); a study none of whose jobs ended ok collects its records and
    raises StudyFailed."""
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

    # ----------------------------------------------------------------- the sweep
    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study_cfg = study_config(self.config)
        grid, fixed = split_arguments(list(arguments), study_cfg["grid"] or {}, self.hydra_context.config_loader)
        space = search_space(study_cfg["params"], grid)
        grid = seed_axis(study_cfg, grid, fixed, space,  # sweep.seeds: the axis trainer.seed = 0 .. K-1
                         self.config.trainer.seed)
        # sweep.sampler=listed: trial k runs configs[k] (of its cell's list, when listed by cell)
        study_cfg["configs"] = listed_configs(study_cfg, space, grid.get("cell", ()))

        sweep_dir = Path(self.config.hydra.sweep.dir)
        name = study_cfg["name"] or "study"  # sweep.name=null
        n_trials = int(study_cfg["n_trials"])  # resolved by study_config (listed: one per config)
        width = int(study_cfg["jobs_per_launch"] or launcher_width(self.config.hydra.get("launcher")))
        if (problem := time_limit_problem(self.config.hydra.get("launcher"))) is not None:
            raise StudyConfigError(problem)
        cooperate = bool(study_cfg["cooperate"])
        fixed_key = job_key(fixed)
        suffix = "" if fixed_key == job_key([]) else f"@{fixed_key[:6]}"
        points = [tuple(zip(grid, values)) for values in itertools.product(*grid.values())]
        preflight(self.hydra_context.config_loader, self.config, points, fixed, space, study_cfg["configs"])

        sweep_dir.mkdir(parents=True, exist_ok=True)
        with Holdings() as holdings:
            self.holdings = holdings
            if not cooperate:
                self._lock(sweep_dir)
            OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
            storage = trials.study_storage(study_cfg["storage"], self.config.hydra.get("launcher"), sweep_dir)
            studies = open_studies(f"{name}/", suffix, points, storage, study_cfg, space, exclusive=not cooperate)
            log.info("study %s: %d grid points x %d trials (%s), %s, batches of %d, storage %s", name, len(points),
                     n_trials, sampling(study_cfg), sweep_dir, width, trials.storage_name(storage, sweep_dir))
            os.environ[SWEEP_ENV] = sweep_owner()  # local workers die with this process (sweep/worker.py)
            for logger in LAUNCHER_LOGGERS:
                logging.getLogger(logger).setLevel(logging.WARNING)

            slots = [(k, point) for k in range(n_trials) for point in points]
            self.progress = Progress(name, len(slots), read=jobstate.record,
                                     is_running=lambda run_dir: jobstate.running_elsewhere(run_dir) is not None)
            pending: list[Job] = []
            with interrupts(), self.progress:  # a cancelled sweep stops its local workers; a rerun resumes
                packing = study_cfg["pack"] != 1
                for i, (k, point) in enumerate(slots):
                    job = self._prepare(point, k, studies[point], space, fixed, sweep_dir, study_cfg)
                    if job is not None:
                        pending.append(job)
                    if not packing and pending and (len(pending) >= width or i == len(slots) - 1):
                        self._launch(pending, sweep_dir)
                        pending = []
                if packing:  # every job is known up front: pack them, then hand the launcher all the packs at
                    # once (unless sweep.jobs_per_launch says otherwise), so no worker idles while packs remain
                    units = self._pack(pending, sweep_dir, study_cfg["pack"])
                    per_launch = int(study_cfg["jobs_per_launch"] or len(units) or 1)
                    for start in range(0, len(units), per_launch):
                        self._launch(units[start : start + per_launch], sweep_dir)
                self._wait_for_others(sweep_dir)
            progress = self.progress
        finish(name, progress, sweep_dir)
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

    # ----------------------------------------------------------------- one job
    def _prepare(self, point, k: int, study: optuna.Study, space: list[Param], fixed: list[str], sweep_dir: Path,
                 study_cfg: Mapping) -> Job | None:
        """Claim trial k of this grid point and make its job; None when there is nothing to run (it is done,
        another sweep holds it, or a process from an earlier sweep still trains it: then this sweep waits)."""
        assert self.holdings is not None and self.progress is not None
        job = Job(point=point, k=k, study=study)
        rerun_failed = bool(study_cfg["rerun_failed"])
        trial = trials.latest_trial(study, k, space)
        if trial is not None:  # the common case on a rerun: a finished job needs no claim
            run_dir = job.place(self._values(space, trial.params, study_cfg, point, k), fixed, sweep_dir)
            record = jobstate.record(run_dir)
            if not jobstate.needs_run(record, run_dir, rerun_failed):
                self._finish(job, trial.number, record, run_dir, before=True)  # type: ignore[arg-type]
                return None
        claim = jobstate.claim(sweep_dir / job.label, k)
        if isinstance(claim, Holder):
            log.info("trial %d of %s is claimed by another sweep (%s)", k, job.label, claim.describe())
            self.progress.elsewhere += 1
            return None
        job.claim = self.holdings.add(claim)
        trial = trials.latest_trial(study, k, space)  # read again under the claim: another sweep may have moved on
        if trial is None:
            live = trials.ask(study, space, study_cfg, sample_label(point, study_cfg), k,
                              point_configs(study_cfg["configs"], point))
            number, params = live.number, live.params
        else:
            number, params = trial.number, trial.params
        run_dir = job.place(self._values(space, params, study_cfg, point, k), fixed, sweep_dir)
        record = jobstate.record(run_dir)
        if not jobstate.needs_run(record, run_dir, rerun_failed):
            self._finish(job, number, record, run_dir, before=True)  # type: ignore[arg-type]
            return None
        finished = trial is not None and trial.state.is_finished()
        job.trial_number = trials.retry_trial(study, trial, k) if finished else number
        if jobstate.running_elsewhere(run_dir):  # e.g. a SLURM job that outlived its sweep: wait, do not train it twice
            self.waiting.append(job)
            return None
        if record is not None:
            jobstate.restart(run_dir, rerun_failed)
        job.overrides += [f"++sweep.trial={k}", f"++sweep.job={job.subdir}", "trainer.resume=true",
                          f"hydra.sweep.subdir={job.subdir}"]
        return job

    @staticmethod
    def _values(space: list[Param], params: Mapping[str, Any], study_cfg: Mapping, point, k: int) -> dict[str, Any]:
        """Trial k's config values: its sample; with sampler listed, the point's sweep.configs[k] itself (its
        trial's parameters are those, but 1 - (1 - x) need not be x)."""
        listed = point_configs(study_cfg["configs"], point)
        if listed is not None:
            return dict(listed[k])
        return to_values(space, params) if space else {}

    # ----------------------------------------------------------------- launching
    def _pack(self, jobs: list[Job], sweep_dir: Path, setting: int | str) -> list[Job]:
        """The launch units of packed trials: a pack of one is its job, a wider pack one job over its members."""
        assert self.hydra_context is not None and self.config is not None
        configs = []
        for job in jobs:
            cfg = job_container(self.hydra_context.config_loader.load_sweep_config(self.config, list(job.overrides)))
            cfg["overrides"] = list(job.overrides)
            configs.append(cfg)
        units = []
        run_dirs = [str(sweep_dir / job.subdir) for job in jobs]
        for members, manifest in packs.launch_plan(sweep_dir, run_dirs, configs, [job.label for job in jobs], setting):
            if manifest is None:
                units.append(jobs[members[0]])
                continue
            first = jobs[members[0]]
            units.append(Job(point=first.point, k=first.k, study=first.study, subdir=first.subdir,
                             overrides=[*first.overrides, f"++sweep.{packs.MANIFEST_KEY}={manifest}"],
                             members=[jobs[i] for i in members]))
        log.info("%d jobs in %d launches (sweep.pack=%s)", len(jobs), len(units), setting)
        return units

    def _launch(self, jobs: list[Job], sweep_dir: Path) -> None:
        """Run a batch. A SLURM task that left the queue without a result (scancel, a lost node) costs only its
        own job, which is submitted once more and resumes from its checkpoint (a pack as a pack). When a local
        worker dies, the launcher loses the whole batch: its unfinished jobs run again (resuming), together
        first, then one at a time, so that only a job that kills its worker by itself ends failed."""
        crashed, lost = self._launch_once(jobs, sweep_dir)
        if lost:
            log.warning("%d SLURM task(s) ended without a result (cancelled or killed); submitting their jobs once "
                        "more, to resume from their checkpoints", len(lost))
            again, lost = self._launch_once(lost, sweep_dir)
            crashed += again
        if len(crashed) > 1:
            log.warning("a worker died; running the %d unfinished jobs of its batch again", len(crashed))
            crashed, more = self._launch_once(crashed, sweep_dir)
            lost += more
        if len(crashed) > 1:
            log.warning("a worker died again; running the %d unfinished jobs one at a time", len(crashed))
            ends = [self._launch_once([job], sweep_dir) for job in crashed]
            crashed, lost = [job for gone, _ in ends for job in gone], lost + [unit for _, more in ends for unit in more]
        for job in crashed + [trial for unit in lost for trial in unit.trials]:
            run_dir = sweep_dir / job.subdir
            self._finish(job, job.trial_number, jobstate.record(run_dir) or self._missing_record(job, run_dir, None), run_dir)

    def _launch_once(self, jobs: list[Job], sweep_dir: Path) -> tuple[list[Job], list[Job]]:
        """Launch `jobs` and finish those that ended; returns the jobs a broken launch left unfinished, and the
        jobs (whole packs) whose SLURM task was lost without a result."""
        assert self.launcher is not None and self.progress is not None
        results: Sequence[JobReturn] = []
        broken = False
        self.progress.in_flight = [sweep_dir / trial.subdir for job in jobs for trial in job.trials]
        try:
            with local_pool():  # local workers, idle ones included, die with this process
                results = self.launcher.launch([job.overrides for job in jobs], initial_job_idx=self.job_idx)
        except Exception as err:  # a killed worker takes its batch down: what left a record still counts
            reraise_if_interrupted(err)  # unless an interrupt hit the launcher and came out as another error
            log.error("launcher failed on a batch of %d jobs: %s: %s", len(jobs), type(err).__name__, str(err).strip().splitlines()[0] if str(err).strip() else "")
            broken = True
        finally:
            self.job_idx += len(jobs)
            self.progress.in_flight = []
        crashed, lost = [], []
        for i, unit in enumerate(jobs):
            result = results[i] if i < len(results) else None
            if is_lost(result) and any(jobstate.record(sweep_dir / job.subdir) is None for job in unit.trials):
                lost.append(unit)  # submitted again as it was: a pack resumes as a pack
                continue
            for job in unit.trials:  # a pack's members are rerun alone if its worker died
                run_dir = sweep_dir / job.subdir
                record = jobstate.record(run_dir)
                if record is None and jobstate.running_elsewhere(run_dir):  # the launcher lost track of a job that still runs
                    self.waiting.append(job)
                    continue
                if record is None and broken:
                    crashed.append(job)
                    continue
                if record is None:
                    record = self._missing_record(job, run_dir, result)
                self._finish(job, job.trial_number, record, run_dir)
        if not self.progress.tty:
            self.progress.show()
        return crashed, lost

    def _wait_for_others(self, sweep_dir: Path) -> None:
        """Jobs that a process of an earlier sweep still trains: wait for their records."""
        for job in self.waiting:
            run_dir = sweep_dir / job.subdir
            holder = jobstate.running_elsewhere(run_dir)
            if holder is not None:
                log.warning("waiting for %s, trained by %s", job.subdir, holder.describe())
            while jobstate.running_elsewhere(run_dir) is not None:
                time.sleep(WAIT_POLL_S)
            record = jobstate.record(run_dir) or self._missing_record(job, run_dir, None)
            self._finish(job, job.trial_number, record, run_dir)
        self.waiting = []

    def _finish(self, job: Job, number: int | None, record: dict, run_dir: Path, before: bool = False) -> None:
        """Count a job's end, tell its trial (when still running) and release its claim."""
        assert self.progress is not None and self.holdings is not None
        self.progress.done(record.get("status", FAILED), before=before)
        if number is not None:
            trials.tell(job.study, number, record, run_dir)
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
            record.update(cell=cell_label(job_container(cfg)['cell']), task=cfg.data.name, seed=cfg.trainer.seed,
                          study=cfg.sweep.get("name"))
            record["hparams"] = hparams_of(job_container(cfg))
        except Exception as exc:  # the record matters more than its details
            log.warning("could not compose the config of %s: %s", job.subdir, exc)
        write_record(run_dir, record)
        log.error("job %s failed without a record: %s", job.subdir, error)
        return record
