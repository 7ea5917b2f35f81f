"""Tables of a sweep: per-cell summaries, what a study cost, and the metrics' names, units and directions.

Everything here works on a run table after `frame.prepare` (analysis/frame.py); the comparisons of cells are
analysis/compare.py's.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..results import DIVERGED, FAILED, OK
from .frame import TEST, VAL, cell_order, prepare

TOP_FRACTION = 0.1
ALPHA = 0.05
CAPPED = ("epoch_cap", "time_cap")  # a run cut off by the budget, not stopped by convergence
CONFIDENCE = 0.95
# Metrics where a larger value is better; every primary metric the trainer minimises is "lower is better".
HIGHER_IS_BETTER = {"accuracy", "solved", "f1", "auc"}
# name on an axis, unit, range of values: what a label says and where an error band must stop
METRICS: dict[str, tuple[str, str, tuple[float, float]]] = {
    "mse": ("MSE", "squared target units", (0.0, math.inf)),
    "mae": ("MAE", "target units", (0.0, math.inf)),
    "nll": ("NLL", "nats", (0.0, math.inf)),
    "bpc": ("BPC", "bits per character", (0.0, math.inf)),
    "error": ("error rate", "fraction wrong", (0.0, 1.0)),
    "accuracy": ("accuracy", "fraction right", (0.0, 1.0)),
}


def lower_is_better(metric: str) -> bool:
    return str(metric) not in HIGHER_IS_BETTER


def direction(metric: str) -> str:
    """Words for an axis label, e.g. "lower is better"."""
    return "lower is better" if lower_is_better(metric) else "higher is better"


def metric_range(metric: str | None) -> tuple[float, float]:
    """The values a metric can take (an MSE is never below 0): where error bands are clipped."""
    return METRICS.get(str(metric), ("", "", (-math.inf, math.inf)))[2]


def metric_label(metric: str | None, what: str = "test") -> str:
    """An axis label with the unit and the direction, e.g. "test MSE (squared target units; lower is better)"."""
    name, unit, _ = METRICS.get(str(metric), (str(metric or "metric"), "", None))
    return f"{what} {name} ({unit + '; ' if unit else ''}{direction(str(metric))})"


# -- summaries -----------------------------------------------------------------------------------------------
def top_runs(group: pd.DataFrame, fraction: float = TOP_FRACTION) -> pd.DataFrame:
    """The best `fraction` of a group's ok runs by validation score (at least one when there are any)."""
    ok = group[group["ok"]]
    if ok.empty:
        return ok
    n = max(1, math.ceil(fraction * len(ok) - 1e-9))
    metric = ok["metric"].iloc[0]
    return ok.sort_values(VAL, ascending=lower_is_better(metric), kind="stable").head(n)


def _run_name(row: pd.Series) -> str:
    for col in ("run_dir", "record_path"):
        value = row.get(col)
        if isinstance(value, str) and value:
            path = Path(value)
            return path.parent.name if path.name == "result.json" else path.name
    return str(row.name)


def summarize(df: pd.DataFrame, top: float = TOP_FRACTION, reference: str | None = "vanilla") -> pd.DataFrame:
    """The one task × cell table (the report's and the end of a sweep's): run counts by status, the share of
    ok runs stopped by the epoch cap, mean/sd/median of the test metric over all ok runs and over the top runs
    by validation, the best run, and median / best of the objective (the best validation metric, minimised)."""
    df = prepare(df) if VAL not in df.columns else df
    rows = []
    for task in sorted(df["task"].unique()):
        tdf = df[df["task"] == task]
        for cell in cell_order(tdf["cell"].unique(), reference):
            g = tdf[tdf["cell"] == cell]
            ok = g[g["ok"]]
            best = top_runs(g, 0.0)  # the single best run by validation
            topg = top_runs(g, top)
            stopped = ok["stopped_by"] if "stopped_by" in ok.columns else pd.Series(dtype=object)
            objective = g.loc[g["status"] == OK, "objective"] if "objective" in g.columns else pd.Series(dtype=float)
            objective = pd.to_numeric(objective, errors="coerce").dropna()
            row = {
                "task": task,
                "metric": g["metric"].dropna().iloc[0] if g["metric"].notna().any() else None,
                "cell": cell,
                "runs": len(g),
                "ok": int((g["status"] == OK).sum()),
                "diverged": int((g["status"] == DIVERGED).sum()),
                "failed": int((g["status"] == FAILED).sum()),
                "epoch_capped": float((stopped == "epoch_cap").mean()) if len(ok) else np.nan,
                "mean": ok[TEST].mean(),
                "sd": ok[TEST].std(ddof=1),
                "median": ok[TEST].median(),
                "n_top": len(topg),
                "top_mean": topg[TEST].mean(),
                "top_sd": topg[TEST].std(ddof=1),
                "top_median": topg[TEST].median(),
                "best_val": best[VAL].iloc[0] if len(best) else np.nan,
                "best_test": best[TEST].iloc[0] if len(best) else np.nan,
                "best_run": _run_name(best.iloc[0]) if len(best) else None,
                "objective_median": objective.median() if len(objective) else np.nan,
                "objective_best": objective.min() if len(objective) else np.nan,
            }
            if "wall_seconds" in g.columns:
                row["median_seconds"] = pd.to_numeric(ok["wall_seconds"], errors="coerce").median()
            if "num_parameters" in g.columns:
                row["num_parameters"] = pd.to_numeric(ok["num_parameters"], errors="coerce").median()
            rows.append(row)
    return pd.DataFrame(rows)


def study_cost(df: pd.DataFrame) -> pd.DataFrame:
    """What a study cost, per task: its runs, the processes that trained them (a pack is one process for
    all its trials, a single run one of its own) and their wall time summed in hours. A pack's time is its
    longest finished trial's `wall_seconds`, which counts from the pack's start (and carries over a resume)."""
    df = df.assign(**{name: None for name in ("wall_seconds", "pack_id", "device", "torch") if name not in df})
    rows = []
    for task, tdf in df.groupby("task", sort=True):
        seconds, pack = pd.to_numeric(tdf["wall_seconds"], errors="coerce"), tdf["pack_id"]
        per_pack = seconds[pack.notna()].groupby(pack[pack.notna()]).max()
        rows.append({
            "task": task, "runs": len(tdf), "packed_runs": int(pack.notna().sum()), "packs": len(per_pack),
            "single_runs": int(pack.isna().sum()), "process_hours": (per_pack.sum() + seconds[pack.isna()].sum()) / 3600,
            "devices": ", ".join(sorted(tdf["device"].dropna().astype(str).unique())),
            "torch": ", ".join(sorted(tdf["torch"].dropna().astype(str).unique())),
        })
    return pd.DataFrame(rows)


# -- comparisons (analysis/compare.py runs them) --------------------------------------------------------------
def capped_runs(tdf: pd.DataFrame) -> pd.Series:
    """Which runs the budget cut off (the epoch or time cap) rather than a stopping rule."""
    if "stopped_by" not in tdf.columns:
        return pd.Series(False, index=tdf.index)
    return tdf["stopped_by"].isin(CAPPED)
