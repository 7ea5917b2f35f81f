"""End of a multirun: every record of the sweep directory into `runs.parquet`, a task x cell table on
stdout, and the analysis report when the analysis package offers one."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ..files import atomic_write, atomic_write_text
from ..results import load_results
from ..signals import reraise_if_interrupted

log = logging.getLogger("lstm_odyssey.sweep")

RUNS_NAME = "runs.parquet"


# The end of a sweep prints a view of the analysis' task x cell table: counts, and the objective (the best
# validation metric, minimised) as `median` / `best`.
SWEEP_COLUMNS = {"task": "task", "cell": "cell", "metric": "metric", "ok": "ok", "diverged": "diverged",
                 "failed": "failed", "objective_median": "median", "objective_best": "best"}


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, cell) in the paper's cell order: runs ok/diverged/failed, median and best objective
    of the ok runs; columns of `lstm_odyssey.analysis.stats.summarize`, the report's table."""
    from ..analysis.stats import summarize

    if df.empty:
        return pd.DataFrame(columns=list(SWEEP_COLUMNS.values()))
    table = summarize(df, reference=None)
    return table[list(SWEEP_COLUMNS)].rename(columns=SWEEP_COLUMNS)


def format_table(table: pd.DataFrame) -> str:
    if table.empty:
        return "(no records)"
    return table.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-")


def write_runs(df: pd.DataFrame, sweep_dir: Path) -> Path:
    """runs.parquet (or runs.csv when a column will not go into parquet), written via a temp file."""
    path = sweep_dir / RUNS_NAME
    try:
        try:
            atomic_write(path, lambda fh: df.to_parquet(fh, index=False))
        except Exception:  # mixed types in an object column: store those columns as text
            fixed = df.copy()
            for column in fixed.select_dtypes(include="object").columns:
                fixed[column] = fixed[column].map(lambda v: v if v is None or isinstance(v, str) else str(v))
            atomic_write(path, lambda fh: fixed.to_parquet(fh, index=False))
        return path
    except Exception as err:
        log.warning("could not write %s (%s); writing runs.csv instead", path, err)
        path = sweep_dir / "runs.csv"
        atomic_write_text(path, df.to_csv(index=False))
        return path


def collect(sweep_dir: str | Path, report: bool = True) -> pd.DataFrame:
    """Load every record under `sweep_dir`, write runs.parquet, print the task x cell table, write the report."""
    sweep_dir = Path(sweep_dir)
    df = load_results(sweep_dir)
    if df.empty:
        print(f"[sweep] no records under {sweep_dir}")
        return df
    path = write_runs(df, sweep_dir)
    table = summary_table(df)
    print(f"[sweep] {len(df)} runs in {path} (objective = best validation metric, lower is better)")
    print(format_table(table), flush=True)
    if report:
        write_analysis_report(sweep_dir)
    return df


def write_analysis_report(sweep_dir: Path) -> Path | None:
    """The analysis package's report of this sweep in <sweep_dir>/report; never fails the sweep."""
    try:
        from ..analysis.report import write_report
    except ImportError:
        return None
    try:
        out = sweep_dir / "report"
        write_report([sweep_dir], out)
        print(f"[sweep] report in {out}")
        return out
    except Exception as err:  # the records are safe; a report can be made later with the analysis CLI
        reraise_if_interrupted(err)
        log.warning("the analysis report failed (%s: %s); the records and runs.parquet are fine", type(err).__name__, err)
        return None


class CollectRecords(Callback):
    """Hydra callback (hydra.callbacks.collect in conf/train.yaml): `collect()` at the end of every multirun."""

    def __init__(self, report: bool = True) -> None:
        self.report = report

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        study = config.get("sweep")  # None: a multirun without a study (+sweep=...)
        report = self.report and (study is None or bool(study["report"]))
        try:
            collect(Path(config.hydra.sweep.dir), report=report)
        except Exception as err:
            log.error("collecting the sweep's records failed: %s: %s", type(err).__name__, err)
