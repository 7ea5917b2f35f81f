"""Experiment tracking. W&B lives here and nowhere else; `logger=none` gives the NullTracker."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class Tracker:
    def log(self, metrics: dict[str, Any], step: int | None = None) -> None: ...

    def log_summary(self, values: dict[str, Any]) -> None: ...

    def finish(self, record: dict) -> None: ...


class NullTracker(Tracker):
    """Tracking off."""


class WandbTracker(Tracker):
    """One W&B run per job: group = sweep name, job_type = task, tags = cell and task; its folder
    inside the run directory. `finish()` ends it (failed runs are marked failed) so multirun jobs
    never merge into one W&B run."""

    def __init__(self, cfg: dict, run_dir: Path) -> None:
        import wandb

        logger = cfg.get("logger") or {}
        self.wandb = wandb
        self.run = wandb.init(
            project=logger.get("project", "lstm-odyssey"),
            entity=logger.get("entity"),
            group=logger.get("group"),
            job_type=cfg["data"]["name"],
            name=logger.get("run_name"),
            tags=[f"cell:{cfg['cell'].get('name', 'custom')}", f"task:{cfg['data']['name']}"],
            config={k: v for k, v in cfg.items() if k not in ("logger", "paths")},
            dir=str(run_dir),
            mode=logger.get("mode", "offline"),
            reinit="finish_previous",
        )

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self.run.log(metrics, step=step)

    def log_summary(self, values: dict[str, Any]) -> None:
        self.run.summary.update(values)

    def finish(self, record: dict) -> None:
        summary = {k: v for k, v in record.items() if k not in ("config", "history", "traceback", "hparams")}
        self.run.summary.update({"record": summary, "status": record.get("status")})
        self.run.finish(exit_code=1 if record.get("status") == "failed" else 0)


def start(cfg: dict, run_dir: str | Path) -> Tracker:
    name = (cfg.get("logger") or {}).get("name", "none")
    if name in (None, "none"):
        return NullTracker()
    if name == "wandb":
        return WandbTracker(cfg, Path(run_dir))
    raise ValueError(f"unknown logger {name!r}; use logger=none or logger=wandb")


def log_analysis(
    tables: dict[str, Any], figures: dict[str, Path], report: Path | None = None, *, project: str = "lstm-odyssey",
    group: str | None = None, name: str = "analysis", mode: str | None = None,
) -> str | None:
    """Log a sweep's analysis (pandas tables, PNG figures, the report file) as one W&B run with
    job_type "analysis" in the sweep's group; returns the run URL (None offline or disabled)."""
    import os

    import wandb

    folder = Path(report).parent if report else Path(".")
    run = wandb.init(
        project=project, group=group, job_type="analysis", name=name, dir=str(folder),
        mode=mode or os.environ.get("WANDB_MODE", "offline"), reinit="finish_previous",
    )
    try:
        for key, table in tables.items():
            run.log({f"tables/{key}": wandb.Table(dataframe=table.astype(object).where(table.notna(), None))})
        for key, path in figures.items():
            run.log({f"figures/{key}": wandb.Image(str(path))})
        if report is not None and Path(report).exists():
            run.summary["report"] = Path(report).read_text()
        return getattr(run, "url", None)
    finally:
        run.finish()
