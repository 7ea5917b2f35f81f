"""Tables of a sweep: per-cell summaries and the significance of each cell against a reference.

Everything here works on a run table after `frame.prepare` (analysis/frame.py). In a paired study each
cell is compared with the reference trial by trial (paired t-test, Wilcoxon signed-rank test), which removes
the variance the hyperparameters cause from the comparison. Otherwise the cells are independent samples and
Welch's t-test compares them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from ..results import DIVERGED, FAILED, OK
from .frame import TEST, VAL, cell_order, design, pairs, prepare

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
PAIRED_TEST, WELCH_TEST = "paired t", "Welch t"


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


# -- tests -----------------------------------------------------------------------------------------------------
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
        return np.nan, np.nan, np.nan, f"the test needs at least 2 runs on each side (has {len(a)} vs {len(b)})"
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return np.nan, np.nan, np.nan, "both groups have zero variance, so the t-test is undefined"
    res = sps.ttest_ind(a, b, equal_var=False)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return float(res.statistic), float(dof), float(res.pvalue), None


def _t_interval(mean: float, se: float, dof: float, confidence: float = CONFIDENCE) -> tuple[float, float]:
    if not (np.isfinite(se) and np.isfinite(dof)) or dof <= 0:
        return np.nan, np.nan
    half = sps.t.ppf(0.5 + confidence / 2, dof) * se
    return mean - half, mean + half


def paired(a: Sequence[float], b: Sequence[float], metric: str = "mse", confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Paired comparison of a against b (a[i] and b[i] ran under the same conditions): the mean of d = a − b
    with its t interval, the paired t-test, the Wilcoxon signed-rank test (zero differences dropped) and
    wins / ties / losses of a (a win is a better metric value). `note` / `wilcoxon_note` say why a test is missing."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = a - b
    n = len(d)
    better = d < 0 if lower_is_better(metric) else d > 0
    out: dict[str, Any] = {
        "n": n, "diff": float(d.mean()) if n else np.nan, "ci_low": np.nan, "ci_high": np.nan, "t": np.nan,
        "df": np.nan, "p": np.nan, "wilcoxon": np.nan, "wilcoxon_p": np.nan, "wins": int(better.sum()),
        "ties": int((d == 0).sum()), "losses": int((~better & (d != 0)).sum()), "note": None, "wilcoxon_note": None,
    }
    if n < 2:
        out["note"] = out["wilcoxon_note"] = f"the test needs at least 2 pairs (has {n})"
        return out
    sd = d.std(ddof=1)
    if np.allclose(d, d[0], rtol=1e-12, atol=0):  # equal up to rounding: the t statistic would be noise / 0
        out["note"] = f"all {n} paired differences are equal ({d[0]:.4g}), so the t-test is undefined"
    else:
        res = sps.ttest_rel(a, b)
        out.update(t=float(res.statistic), df=n - 1, p=float(res.pvalue))
        out["ci_low"], out["ci_high"] = _t_interval(out["diff"], sd / math.sqrt(n), n - 1, confidence)
    if not (d != 0).any():
        out["wilcoxon_note"] = "all paired differences are zero"
    else:
        res = sps.wilcoxon(a, b)
        out.update(wilcoxon=float(res.statistic), wilcoxon_p=float(res.pvalue))
    return out


def wilcoxon_floor(nonzero: int) -> float:
    """The smallest two-sided p-value the exact Wilcoxon signed-rank test can give with `nonzero` pairs (all
    differences of one sign): 2 / 2^n. With few pairs no result can be significant."""
    return min(1.0, 2.0 / 2.0**nonzero) if nonzero > 0 else 1.0


def significance(
    df: pd.DataFrame, reference: str = "vanilla", top: float = TOP_FRACTION, alpha: float = ALPHA,
    subsets: Sequence[str] = ("top", "all"), paired_design: bool | None = None, confidence: float = CONFIDENCE,
) -> pd.DataFrame:
    """Every cell against `reference` per task, on the top runs and on all ok runs (and, when `subsets` asks,
    on the runs that converged), one row per task × subset × cell. A paired task (`design`, or
    `paired_design=True`) is tested over its pairs: the mean difference cell − reference with a t interval,
    the paired t-test (the verdict) and the Wilcoxon signed-rank test, wins / ties / losses; the top subset
    is the pairs whose reference run is in the reference's top runs by validation. An unpaired task gets Welch's t-test and its interval. p-values are Holm-corrected across the
    cells of one task and subset. `verdict` is better / worse (adjusted p < alpha, in the metric's direction),
    n.s., or untested with the reason in `note`."""
    df = prepare(df) if VAL not in df.columns else df
    rows = []
    for task in sorted(df["task"].unique()):
        tdf = df[df["task"] == task]
        metric = tdf["metric"].dropna().iloc[0] if tdf["metric"].notna().any() else None
        capped = _capped(tdf)
        is_paired = design(tdf)[0] if paired_design is None else paired_design
        has_ref = reference in set(tdf["cell"])
        cells = [c for c in cell_order(tdf["cell"].unique(), reference) if c != reference]
        for subset in subsets:
            block = []
            for cell in cells:
                row = {"task": task, "metric": metric, "subset": subset, "cell": cell, "reference": reference,
                       "design": "paired" if is_paired else "unpaired", "test": PAIRED_TEST if is_paired else WELCH_TEST}
                if is_paired:
                    row.update(_paired_row(tdf, cell, reference, subset, top, metric, confidence))
                else:
                    row.update(_welch_row(tdf, cell, reference, subset, top, confidence))
                if not has_ref:
                    row.update(p=np.nan, wilcoxon_p=np.nan, note=f"there are no runs of the reference cell {reference!r}")
                row.update(epoch_capped=capped.get(cell, np.nan), epoch_capped_ref=capped.get(reference, np.nan))
                block.append(row)
            for name in ("p", "wilcoxon_p"):
                for r, p_adj in zip(block, holm([r.get(name, np.nan) for r in block])):
                    r[f"{name}_holm"] = p_adj
            for r in block:
                r["verdict"] = _verdict(r["p_holm"], r["diff"], metric, alpha)
            rows.extend(block)
    columns = [
        "task", "metric", "subset", "cell", "reference", "design", "test", "n", "n_ref", "mean", "mean_ref", "diff",
        "ci_low", "ci_high", "t", "df", "p", "p_holm", "wilcoxon_p", "wilcoxon_p_holm", "wins", "ties", "losses",
        "hedges_g", "verdict", "epoch_capped", "epoch_capped_ref", "note", "wilcoxon_note",
    ]
    return pd.DataFrame(rows, columns=columns)


def _verdict(p_holm: float, diff: float, metric: str | None, alpha: float) -> str:
    if not np.isfinite(p_holm):
        return "untested"
    if p_holm >= alpha:
        return "n.s."
    return "worse" if (diff > 0) == lower_is_better(str(metric)) else "better"


def _paired_row(tdf: pd.DataFrame, cell: str, reference: str, subset: str, top: float, metric: str | None,
                confidence: float) -> dict[str, Any]:
    p = _subset_pairs(tdf, cell, reference, subset, top)
    res = paired(p["test"], p["test_ref"], str(metric), confidence)
    a, b = p["test"].to_numpy(), p["test_ref"].to_numpy()
    return {**res, "n_ref": res["n"], "mean": a.mean() if len(a) else np.nan, "mean_ref": b.mean() if len(b) else np.nan,
            "hedges_g": hedges_g(a, b)}


def _welch_row(tdf: pd.DataFrame, cell: str, reference: str, subset: str, top: float,
               confidence: float) -> dict[str, Any]:
    a, b = select(tdf, cell, subset, top)[TEST].to_numpy(), select(tdf, reference, subset, top)[TEST].to_numpy()
    t, dof, p, note = welch(a, b)
    diff = a.mean() - b.mean() if len(a) and len(b) else np.nan
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)) if note is None else np.nan
    low, high = _t_interval(diff, se, dof, confidence)
    return {"n": len(a), "n_ref": len(b), "mean": a.mean() if len(a) else np.nan, "mean_ref": b.mean() if len(b) else np.nan,
            "diff": diff, "ci_low": low, "ci_high": high, "t": t, "df": dof, "p": p, "wilcoxon_p": np.nan,
            "hedges_g": hedges_g(a, b), "note": note}


def select(tdf: pd.DataFrame, cell: str, subset: str, top: float = TOP_FRACTION) -> pd.DataFrame:
    """The runs of one cell an unpaired comparison uses: its top runs by validation, its ok runs that
    converged (subset "converged": not cut off by the budget), or all its ok runs."""
    g = tdf[tdf["cell"] == cell]
    if subset == "top":
        return top_runs(g, top)
    return g[g["ok"] & ~capped_runs(g)] if subset == "converged" else g[g["ok"]]


def capped_runs(tdf: pd.DataFrame) -> pd.Series:
    """Which runs the budget cut off (the epoch or time cap) rather than a stopping rule."""
    if "stopped_by" not in tdf.columns:
        return pd.Series(False, index=tdf.index)
    return tdf["stopped_by"].isin(CAPPED)


def compared_runs(tdf: pd.DataFrame, cell: str, reference: str, subset: str, top: float = TOP_FRACTION,
                  is_paired: bool = False) -> pd.DataFrame:
    """The runs of `cell` that its comparison with `reference` uses (what a figure of that comparison shows):
    in a paired task the cell's members of the pairs, else `select`."""
    if not is_paired or cell == reference:
        return select(tdf, cell, subset, top)
    return tdf.loc[_subset_pairs(tdf, cell, reference, subset, top)["run_index"]]


def _subset_pairs(tdf: pd.DataFrame, cell: str, reference: str, subset: str, top: float) -> pd.DataFrame:
    """All pairs; (subset "top") the pairs whose reference run is in the reference's top runs by validation;
    (subset "converged") the pairs in which neither run was cut off by the budget."""
    p = pairs(tdf, cell, reference)
    if subset == "top":
        p = p[p["ref_index"].isin(top_runs(tdf[tdf["cell"] == reference], top).index)]
    if subset == "converged":
        capped = capped_runs(tdf)
        p = p[~capped.loc[p["run_index"]].to_numpy() & ~capped.loc[p["ref_index"]].to_numpy()]
    return p


def _capped(tdf: pd.DataFrame) -> dict[str, float]:
    if "stopped_by" not in tdf.columns:
        return {}
    ok = tdf[tdf["ok"]]
    return {cell: float((g["stopped_by"] == "epoch_cap").mean()) for cell, g in ok.groupby("cell")}
