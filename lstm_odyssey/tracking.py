"""Experiment tracking. W&B lives here and nowhere else; `logger=none` gives the NullTracker.

One W&B run per job, so a multirun never merges into one run: group = the study's name (`sweep.name`, or
`logger.group`), job_type = task, tags = `cell:<name>`, `task:<name>` (and `study:<name>`), name = the job's
directory in the sweep. It logs the config, per-epoch metrics, the parameter count and the final record
as the run summary; the trials of a pack, trained in one process, are as many runs open at once.
`finish()` ends a run with exit code 1 for failed jobs so W&B shows them as failed. The run folder lives
in the run's own directory (`<run_dir>/wandb/offline-run-*`), offline by default: sync later with
`wandb sync <run_dir>/wandb/offline-run-*`. The environment variable WANDB_MODE, when set, wins over
`logger.mode` (CI sets it to `disabled`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from .cells import cell_label
from .results import FAILED, flat_metrics

log = logging.getLogger("lstm_odyssey.tracking")

# Record keys too bulky or redundant for a run summary (the config and the history are logged already).
SUMMARY_SKIP = ("config", "history", "traceback", "hparams", "cell_flags", "versions", "overrides")
MODES = ("offline", "online", "disabled")


class Tracker:
    """What the trainer calls; a tracker never stops a run."""

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None: ...

    def log_summary(self, values: dict[str, Any]) -> None: ...

    def finish(self, record: dict) -> None: ...


class NullTracker(Tracker):
    """Tracking off."""


def _names(cfg: dict) -> tuple[str, str, str | None]:
    cell = cfg.get("cell") or {}
    cell_name = cell_label(cell) if cell else "custom"
    sweep = cfg.get("sweep") or {}
    return cell_name, (cfg.get("data") or {}).get("name", "unknown"), sweep.get("name")


class WandbTracker(Tracker):
    """One W&B run per job (see the module docstring)."""

    def __init__(self, cfg: dict, run_dir: Path) -> None:
        import wandb

        logger = cfg["logger"]  # logger=wandb: every key of schema.WandbLoggerConfig
        cell, task, study = _names(cfg)
        sweep = cfg.get("sweep") or {}
        mode = os.environ.get("WANDB_MODE") or logger["mode"]
        if mode not in MODES:
            raise ValueError(f"logger.mode is {mode!r}; use one of {', '.join(MODES)}")
        tags = [f"cell:{cell}", f"task:{task}"] + ([f"study:{study}"] if study else []) + list(logger["tags"] or [])
        run_dir.mkdir(parents=True, exist_ok=True)
        self.wandb = wandb
        self.run = wandb.init(
            project=logger["project"],
            entity=logger["entity"],
            group=logger["group"] or study,  # null: the study's name
            job_type=task,
            name=logger["run_name"] or sweep.get("job") or f"{task}-{cell}",
            tags=tags,
            config={k: v for k, v in cfg.items() if k not in ("logger", "paths")},
            dir=str(run_dir),
            mode=mode,
            reinit="create_new",  # the trials of a pack are runs at the same time, each logged through its own run
        )

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self.run.log(metrics, step=step)

    def log_summary(self, values: dict[str, Any]) -> None:
        self.run.summary.update(values)

    def finish(self, record: dict) -> None:
        summary = {k: v for k, v in record.items() if k not in SUMMARY_SKIP}
        summary.update(flat_metrics(record))  # flat keys so the runs table can sort and plot them
        self.run.summary.update(summary)
        self.run.finish(exit_code=1 if record.get("status") == FAILED else 0)


class _Guarded(Tracker):
    """Keeps a tracker's errors out of the run: logged once, then tracking stops for this job."""

    def __init__(self, inner: Tracker) -> None:
        self.inner: Tracker | None = inner

    def _call(self, name: str, *args: Any, **kwargs: Any) -> None:
        if self.inner is None:
            return
        try:
            getattr(self.inner, name)(*args, **kwargs)
        except Exception as err:
            log.error("tracking stopped for this run: %s failed with %s: %s", name, type(err).__name__, err)
            self.inner = None

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self._call("log", metrics, step=step)

    def log_summary(self, values: dict[str, Any]) -> None:
        self._call("log_summary", values)

    def finish(self, record: dict) -> None:
        self._call("finish", record)


def start(cfg: dict, run_dir: str | Path) -> Tracker:
    """The tracker chosen by `logger.name`. A W&B failure is logged and the run goes on untracked:
    the record is what counts."""
    name = (cfg.get("logger") or {}).get("name", "none")
    if name in (None, "none"):
        return NullTracker()
    if name != "wandb":
        raise ValueError(f"unknown logger {name!r}; use logger=none or logger=wandb")
    try:
        return _Guarded(WandbTracker(cfg, Path(run_dir)))
    except ValueError:
        raise
    except Exception as err:
        log.error("W&B could not start (%s: %s); this run goes on without tracking", type(err).__name__, err)
        return NullTracker()


def log_analysis(
    tables: dict[str, Any], figures: dict[str, Path], report: Path | None = None, *, project: str = "lstm-odyssey",
    group: str | None = None, name: str = "analysis", mode: str | None = None,
) -> str | None:
    """Log a sweep's analysis (pandas tables, PNG figures, the report text) as one W&B run with job_type
    "analysis" in the sweep's group, next to its runs; returns the run URL (None offline or disabled).
    Used by `lstm_odyssey.analysis.write_report(..., wandb=True)`; WANDB_MODE wins over `mode`."""
    import wandb

    mode = os.environ.get("WANDB_MODE") or mode or "offline"
    if mode not in MODES:
        raise ValueError(f"W&B mode {mode!r} is not one of {', '.join(MODES)}; set WANDB_MODE accordingly")
    folder = Path(report).parent if report else Path(".")
    run = wandb.init(project=project, group=group, job_type="analysis", name=name, dir=str(folder), mode=mode,
                     reinit="finish_previous")
    try:
        for key, table in tables.items():
            run.log({f"tables/{key}": wandb.Table(dataframe=table.astype(object).where(table.notna(), None))})
        for key, path in figures.items():
            run.log({f"figures/{key}": wandb.Image(str(path))})
        if report is not None and Path(report).exists():
            run.summary["report"] = Path(report).read_text()
        return None if mode != "online" else getattr(run, "url", None)
    finally:
        run.finish()
