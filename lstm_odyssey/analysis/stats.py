"""Tables of a sweep: per-cell summaries and the significance of each cell against a reference.

Everything here works on the DataFrame of `lstm_odyssey.results.load_results` (one row per run) after
`prepare`, which adds the primary metric on validation and test as `val_score` / `test_score`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

VAL, TEST = "val_score", "test_score"
TOP_FRACTION = 0.1
ALPHA = 0.05
# Metrics where a larger value is better; every primary metric the trainer minimises is "lower is better".
HIGHER_IS_BETTER = {"accuracy", "solved", "f1", "auc"}


def lower_is_better(metric: str) -> bool:
    return str(metric) not in HIGHER_IS_BETTER


def direction(metric: str) -> str:
    """Words for an axis label, e.g. "lower is better"."""
    return "lower is better" if lower_is_better(metric) else "higher is better"


def load(*paths: str | Path) -> pd.DataFrame:
    """Runs from sweep folders / result.json files (via `load_results`) and `.parquet`/`.csv` run tables."""
    from ..results import load_results

    frames = []
    record_paths = []
    for path in paths:
        path = Path(path)
        if path.is_file() and path.suffix == ".parquet":
            frames.append(pd.read_parquet(path))
        elif path.is_file() and path.suffix == ".csv":
            frames.append(pd.read_csv(path))
        else:
            record_paths.append(path)
    if record_paths:
        frames.append(load_results(*record_paths))
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True)
    if "record_path" in df.columns:  # a runs.parquet next to its records would count each run twice
        keep = df["record_path"].isna() | ~df["record_path"].duplicated()
        df = df[keep].reset_index(drop=True)
    return df


def cell_order(cells: Iterable[str], reference: str | None = "vanilla") -> list[str]:
    """The reference first, then the presets in the paper's order, then anything else by name."""
    from ..cells import PRESETS

    cells = list(dict.fromkeys(str(c) for c in cells))
    preset = {name: i for i, name in enumerate(PRESETS)}

    def key(c: str) -> tuple:
        return (c != reference, preset.get(c, len(preset)), c)

    return sorted(cells, key=key)


def prepare(df: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """A copy with the columns every analysis needs: status, cell, task, metric, `val_score` and
    `test_score` (the task's primary metric, or `metric` when given), and `ok` (a usable finished run)."""
    df = df.copy()
    for col, default in (("status", "failed"), ("cell", "unknown"), ("task", "unknown"), ("metric", None)):
        if col not in df.columns:
            df[col] = default
    df["status"] = df["status"].fillna("failed").astype(str)
    df["cell"] = df["cell"].fillna("unknown").astype(str)
    df["task"] = df["task"].fillna("unknown").astype(str)
    # Failed runs carry no metric name: use the task's most common one.
    names = df["metric"].astype(object)
    by_task = {}
    for task, group in df.groupby("task"):
        found = group["metric"].dropna()
        by_task[task] = metric or (str(found.mode().iloc[0]) if len(found) else None)
    df["metric"] = [metric or (m if isinstance(m, str) else by_task.get(t)) for m, t in zip(names, df["task"])]
    for split, col in (("val", VAL), ("test", TEST)):
        values = []
        for i, m in enumerate(df["metric"]):
            name = f"{split}_{m}"
            values.append(df[name].iloc[i] if m is not None and name in df.columns else np.nan)
        df[col] = pd.to_numeric(pd.Series(values, index=df.index, dtype=object), errors="coerce")
    df["ok"] = (df["status"] == "ok") & np.isfinite(df[VAL]) & np.isfinite(df[TEST])
    return df


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
    """One row per task × cell: run counts by status, the share of ok runs stopped by the epoch cap,
    mean/sd/median of the test metric over all ok runs and over the top runs by validation, the best run."""
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
            row = {
                "task": task,
                "metric": g["metric"].dropna().iloc[0] if g["metric"].notna().any() else None,
                "cell": cell,
                "runs": len(g),
                "ok": int(g["ok"].sum()),
                "diverged": int((g["status"] == "diverged").sum()),
                "failed": int((g["status"] == "failed").sum()),
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
            }
            if "wall_seconds" in g.columns:
                row["median_seconds"] = pd.to_numeric(ok["wall_seconds"], errors="coerce").median()
            if "num_parameters" in g.columns:
                row["num_parameters"] = pd.to_numeric(ok["num_parameters"], errors="coerce").median()
            rows.append(row)
    return pd.DataFrame(rows)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1); NaN stays NaN and is not counted."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    valid = np.flatnonzero(np.isfinite(p))
    m = len(valid)
    running = 0.0
    for rank, idx in enumerate(valid[np.argsort(p[valid], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        out[idx] = running
    return out


def hedges_g(a: Sequence[float], b: Sequence[float]) -> float:
    """Standardised mean difference (a − b) / pooled sd with the small-sample correction; NaN when undefined."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n1, n2 = len(a), len(b)
    if n1 < 2 or n2 < 2:
        return float("nan")
    pooled = math.sqrt(((n1 - 1) * a.var(ddof=1) + (n2 - 1) * b.var(ddof=1)) / (n1 + n2 - 2))
    if pooled == 0:
        return float("nan")
    d = (a.mean() - b.mean()) / pooled
    return float(d * (1 - 3 / (4 * (n1 + n2) - 9)))


def welch(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float, str | None]:
    """Welch's t-test of a against b: (t, df, p, reason it could not be computed or None)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return np.nan, np.nan, np.nan, f"needs at least 2 runs on each side (has {len(a)} vs {len(b)})"
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return np.nan, np.nan, np.nan, "both groups have zero variance"
    res = sps.ttest_ind(a, b, equal_var=False)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return float(res.statistic), float(dof), float(res.pvalue), None


def significance(
    df: pd.DataFrame, reference: str = "vanilla", top: float = TOP_FRACTION, alpha: float = ALPHA,
    subsets: Sequence[str] = ("top", "all"),
) -> pd.DataFrame:
    """Welch's t-test of every cell against `reference` per task, on the top runs and on all ok runs;
    p-values Holm-corrected across the cells of one task and subset. `verdict` is better / worse
    (adjusted p < alpha, in the metric's direction), n.s., or untested with the reason in `note`."""
    df = prepare(df) if VAL not in df.columns else df
    rows = []
    for task in sorted(df["task"].unique()):
        tdf = df[df["task"] == task]
        metric = tdf["metric"].dropna().iloc[0] if tdf["metric"].notna().any() else None
        capped = _capped(tdf)
        cells = [c for c in cell_order(tdf["cell"].unique(), reference) if c != reference]
        for subset in subsets:
            ref = _pick(tdf, reference, subset, top)
            block = []
            for cell in cells:
                cur = _pick(tdf, cell, subset, top)
                a, b = cur[TEST].to_numpy(), ref[TEST].to_numpy()
                if reference not in set(tdf["cell"]):
                    t, dof, p, note = np.nan, np.nan, np.nan, f"no runs of the reference cell {reference!r}"
                else:
                    t, dof, p, note = welch(a, b)
                block.append({
                    "task": task, "metric": metric, "subset": subset, "cell": cell, "reference": reference,
                    "n": len(a), "n_ref": len(b), "mean": np.mean(a) if len(a) else np.nan,
                    "mean_ref": np.mean(b) if len(b) else np.nan, "t": t, "df": dof, "p": p,
                    "hedges_g": hedges_g(a, b), "epoch_capped": capped.get(cell, np.nan),
                    "epoch_capped_ref": capped.get(reference, np.nan), "note": note,
                })
            adjusted = holm([r["p"] for r in block])
            for r, p_adj in zip(block, adjusted):
                r["p_holm"] = p_adj
                r["diff"] = r["mean"] - r["mean_ref"]
                if not np.isfinite(p_adj):
                    r["verdict"] = "untested"
                elif p_adj >= alpha:
                    r["verdict"] = "n.s."
                else:
                    worse = (r["diff"] > 0) == lower_is_better(metric)
                    r["verdict"] = "worse" if worse else "better"
            rows.extend(block)
    columns = [
        "task", "metric", "subset", "cell", "reference", "n", "n_ref", "mean", "mean_ref", "diff", "t", "df", "p",
        "p_holm", "hedges_g", "verdict", "epoch_capped", "epoch_capped_ref", "note",
    ]
    return pd.DataFrame(rows, columns=columns)


def _pick(tdf: pd.DataFrame, cell: str, subset: str, top: float) -> pd.DataFrame:
    g = tdf[tdf["cell"] == cell]
    return top_runs(g, top) if subset == "top" else g[g["ok"]]


def _capped(tdf: pd.DataFrame) -> dict[str, float]:
    if "stopped_by" not in tdf.columns:
        return {}
    ok = tdf[tdf["ok"]]
    return {cell: float((g["stopped_by"] == "epoch_cap").mean()) for cell, g in ok.groupby("cell")}
