"""Each cell against the reference by the analysis plan's primary test (analysis/plan.py, inference.py).

The primary analysis is every pair of the study ("all"): in a paired study the runs of trial k of the cell and of
the reference; a run that diverged or failed stays in its pair as the worst run. The secondary subsets are fixed by
what was chosen before training (the learning-rate decade, the hidden-size band) or select pairs symmetrically
(the best pairs by the mean validation score of both runs; each cell's own best runs, as Greff et al. read it), so
no subset is chosen by one arm's result. Secondary rows never decide a verdict of the paper's claims.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..schema import AnalysisConfig
from .frame import PAIR, TEST, VAL, cell_order, design, pairs, prepare
from .hyperparams import group_hidden_sizes, group_label
from .inference import Shift, paired_mean, shift, unpaired_mean
from .plan import margin
from .stats import capped_runs, lower_is_better, top_runs

ALL, TOP_PAIRS, TOP_OWN = "all", "top pairs", "top own"
COLUMNS = [
    "task", "metric", "subset", "cell", "reference", "design", "test", "n", "n_ref", "n_missing", "n_failed",
    "diff", "ci_low", "ci_high", "p", "p_holm", "verdict", "margin", "p_within", "p_beyond_holm", "equivalence",
    "mean_diff", "t_p", "wins", "ties", "losses", "epoch_capped", "epoch_capped_ref", "note",
]


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values (step-down, monotone, capped at 1); NaN stays NaN and is not counted. The same numbers
    as statsmodels' `multipletests(method="holm")` (tests/test_verdicts.py), which runs a full garbage collection
    on every call: 0.24 s with torch loaded, 25 minutes over the simulation's replicates."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    valid = np.flatnonzero(np.isfinite(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    out[order] = np.minimum(1.0, np.maximum.accumulate((len(valid) - np.arange(len(valid))) * p[order]))
    return out


def worst(metric: str | None) -> float:
    """The score that ranks a failed or diverged run below every finished one."""
    return math.inf if lower_is_better(str(metric)) else -math.inf


def harm(values: np.ndarray, metric: str | None) -> np.ndarray:
    """Values on the harm scale: larger is worse, whatever the metric's direction."""
    return np.asarray(values, dtype=float) * (1.0 if lower_is_better(str(metric)) else -1.0)


def paired_harms(tdf: pd.DataFrame, cell: str, other: str, metric: str | None) -> tuple[pd.DataFrame, np.ndarray]:
    """The pairs of `cell` with `other` (a failed run as the worst score) and their differences on the harm scale."""
    p = pairs(tdf, cell, other, failed_as=worst(metric))
    with np.errstate(invalid="ignore"):  # both runs failed: inf - inf, a tie
        return p, _tie(harm(p["test"].to_numpy() - p["test_ref"].to_numpy(), metric))


def _tie(values: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(values), 0.0, values)


def significance(df: pd.DataFrame, plan: AnalysisConfig | None = None, subsets: Sequence[str] | None = None) -> pd.DataFrame:
    """Every cell against the plan's reference per task and subset, one row each. `diff`, `ci_low`, `ci_high` are
    the primary estimate and interval of cell − reference in the metric's units; `p` its two-sided test and
    `p_holm` Holm-corrected across the cells of the task and subset, giving `verdict` better / worse / n.s. /
    untested. `p_within` is the two one-sided tests of |effect| < δ (`margin`), `p_beyond_holm` the test of
    |effect| > δ (Holm across the cells), so `equivalence` says within / beyond / unclear. `mean_diff` and `t_p`
    are the t-test's, for comparison only. `subsets` default: all pairs, then the secondary subsets."""
    plan = plan or AnalysisConfig()
    df = prepare(df) if VAL not in df.columns else df
    rows = []
    for task in sorted(df["task"].unique()):
        tdf = df[df["task"] == task]
        metric = tdf["metric"].dropna().iloc[0] if tdf["metric"].notna().any() else None
        is_paired = design(tdf)[0]
        cells = [c for c in cell_order(tdf["cell"].unique(), plan.reference) if c != plan.reference]
        for subset, keep in _subsets(tdf, is_paired, plan, subsets):
            block = [_compare(tdf, cell, subset, keep, is_paired, metric, plan) for cell in cells]
            for name in ("p", "p_beyond"):
                for r, adjusted in zip(block, holm([r[name] for r in block])):
                    r[f"{name}_holm"] = adjusted
            for r in block:
                r["verdict"] = _verdict(r, plan.alpha)
                r["equivalence"] = _equivalence(r, plan.alpha)
            rows.extend(block)
    return pd.DataFrame(rows, columns=COLUMNS)


def _subsets(tdf: pd.DataFrame, is_paired: bool, plan: AnalysisConfig, wanted: Sequence[str] | None) -> list:
    """(name, the runs' row labels a subset keeps or None for all) for the primary and the secondary subsets."""
    out: list[tuple[str, Any]] = [(ALL, None), (TOP_PAIRS if is_paired else TOP_OWN, None)]
    if is_paired:
        out.append((TOP_OWN, None))
    lr = pd.to_numeric(tdf.get("optim.lr"), errors="coerce") if "optim.lr" in tdf else None
    if lr is not None and lr.nunique() > 1 and (lr > 0).all():
        decade = np.floor(np.log10(lr))
        out += [(f"lr 1e{int(d)} to 1e{int(d) + 1}", tdf.index[decade == d]) for d in sorted(decade.unique())]
    hidden = pd.to_numeric(tdf.get("model.hidden_size"), errors="coerce") if "model.hidden_size" in tdf else None
    if hidden is not None and hidden.nunique() > 1:
        band = group_hidden_sizes(hidden, 2)
        out += [(f"hidden {group_label(hidden[band == b])}", tdf.index[band == b]) for b in sorted(band.unique())]
    return [(name, keep) for name, keep in out if wanted is None or name in wanted]


def _compare(tdf: pd.DataFrame, cell: str, subset: str, keep: Any, is_paired: bool, metric: str | None,
             plan: AnalysisConfig) -> dict[str, Any]:
    row: dict[str, Any] = {"task": tdf["task"].iloc[0], "metric": metric, "subset": subset, "cell": cell,
                           "reference": plan.reference, "design": "paired" if is_paired and subset != TOP_OWN else "unpaired",
                           "margin": margin(plan, metric), "note": None}
    row["test"] = "rank" if plan.primary == "rank" else "t"
    capped = capped_runs(tdf)
    ok = tdf[tdf["ok"]]
    row["epoch_capped"] = float(capped[ok.index][ok["cell"] == cell].mean()) if (ok["cell"] == cell).any() else np.nan
    row["epoch_capped_ref"] = (float(capped[ok.index][ok["cell"] == plan.reference].mean())
                               if (ok["cell"] == plan.reference).any() else np.nan)
    if plan.reference not in set(tdf["cell"]):
        return {**row, **_empty(f"there are no runs of the reference cell {plan.reference!r}")}
    if row["design"] == "paired":
        p, h = paired_harms(tdf, cell, plan.reference, metric)  # p is indexed 0..n-1, so its index picks from h
        if keep is not None:
            p = p[p["ref_index"].isin(keep)]
        if subset == TOP_PAIRS:
            p = _top_pairs(p, metric, plan.top_fraction)
        h = h[p.index.to_numpy()]
        keys = {c: set(tdf.loc[(tdf["cell"] == c) & tdf[PAIR].notna(), PAIR]) for c in (cell, plan.reference)}
        row["n_missing"] = len(keys[cell] ^ keys[plan.reference]) if keep is None and subset == ALL else np.nan
        row.update(n=len(p), n_ref=len(p), n_failed=int((~np.isfinite(p[["test", "test_ref"]].to_numpy())).any(axis=1).sum()))
        est, t = shift(h, None, plan.primary, plan.confidence), paired_mean(h, plan.confidence)
        wins = int((h < 0).sum()); losses = int((h > 0).sum())  # noqa: E702
        row.update(wins=wins, losses=losses, ties=len(h) - wins - losses)
    else:
        a, b = (_runs(tdf, c, subset, keep, metric, plan) for c in (cell, plan.reference))
        row.update(n=len(a), n_ref=len(b), n_missing=np.nan, n_failed=int((~np.isfinite(np.r_[a, b])).sum()),
                   wins=np.nan, ties=np.nan, losses=np.nan)
        est = shift(harm(a, metric), harm(b, metric), plan.primary, plan.confidence)
        t = unpaired_mean(harm(a, metric), harm(b, metric), plan.confidence)
    return {**row, **_tests(est, t, row["margin"], metric, plan)}


def _top_pairs(p: pd.DataFrame, metric: str | None, fraction: float) -> pd.DataFrame:
    """The best `fraction` of the pairs by the mean validation score of both runs (failed runs never qualify)."""
    mean = (p["val"] + p["val_ref"]) / 2
    finite = p[np.isfinite(mean)]
    n = max(1, math.ceil(fraction * len(finite) - 1e-9)) if len(finite) else 0
    return finite.assign(_m=mean[finite.index]).sort_values("_m", ascending=lower_is_better(str(metric)),
                                                             kind="stable").head(n).drop(columns="_m")


def _runs(tdf: pd.DataFrame, cell: str, subset: str, keep: Any, metric: str | None, plan: AnalysisConfig) -> np.ndarray:
    """A cell's scores in an unpaired comparison (failed runs as the worst score)."""
    g = tdf[tdf["cell"] == cell]
    if keep is not None:
        g = g[g.index.isin(keep)]
    if subset == TOP_OWN:
        return top_runs(g, plan.top_fraction)[TEST].to_numpy()
    return g[TEST].where(g["ok"], worst(metric)).to_numpy()


def _tests(est: Shift, t: Shift | None, delta: float, metric: str | None, plan: AnalysisConfig) -> dict[str, Any]:
    """The primary numbers of one comparison, back in the metric's units (cell − reference)."""
    sign = 1.0 if lower_is_better(str(metric)) else -1.0
    low, high = sorted((sign * est.low, sign * est.high))
    out = {"diff": sign * est.estimate, "ci_low": low, "ci_high": high, "p": np.nan, "p_within": np.nan,
           "p_beyond": np.nan, "mean_diff": sign * t.estimate if t is not None else np.nan, "t_p": np.nan}
    what = "pairs" if est.paired else "runs of the cell"
    if est.n < 2 or (not est.paired and len(est.reference) < 2):
        out["note"] = f"the test needs at least 2 {what} (has {est.n})" if est.paired else "too few runs to compare"
        return out
    if est.n < plan.min_pairs:
        out["note"] = f"{est.n} {what}, fewer than the plan's minimum of {plan.min_pairs}"
    if est.paired and not (est.harm != 0).any():
        out["note"] = f"all {est.n} paired differences are zero"
        return out
    out.update(p=est.p_differs(), p_within=est.p_within(delta),
               p_beyond=min(1.0, 2 * min(est.p_above(delta), est.p_below(-delta))))
    if not np.isfinite(out["p"]):
        out["note"] = "the t-test is undefined: the differences are all equal, or a run failed"
    if t is not None:
        out["t_p"] = t.p_differs()
    return out


def _empty(note: str) -> dict[str, Any]:
    return {"n": 0, "n_ref": 0, "n_missing": np.nan, "n_failed": 0, "diff": np.nan, "ci_low": np.nan, "ci_high": np.nan,
            "p": np.nan, "p_within": np.nan, "p_beyond": np.nan, "mean_diff": np.nan, "t_p": np.nan, "wins": np.nan,
            "ties": np.nan, "losses": np.nan, "note": note}


def _verdict(r: dict, alpha: float) -> str:
    if not np.isfinite(r["p_holm"]):
        return "untested"
    if r["p_holm"] >= alpha:
        return "n.s."
    worse = (r["diff"] > 0) == lower_is_better(str(r["metric"]))
    return "worse" if worse else "better"


def _equivalence(r: dict, alpha: float) -> str:
    if np.isfinite(r["p_within"]) and r["p_within"] < alpha:
        return "within δ"
    if np.isfinite(r["p_beyond_holm"]) and r["p_beyond_holm"] < alpha:
        return "beyond δ"
    return "unclear"


def compared_runs(tdf: pd.DataFrame, cell: str, subset: str, plan: AnalysisConfig) -> pd.DataFrame:
    """The ok runs of `cell` that its comparison in `subset` uses (what a figure of that comparison shows)."""
    ok = tdf[tdf["ok"]]
    if subset == TOP_OWN or (subset == TOP_PAIRS and cell == plan.reference and not design(tdf)[0]):
        return top_runs(ok[ok["cell"] == cell], plan.top_fraction)
    if subset == ALL:
        return ok[ok["cell"] == cell]
    if cell == plan.reference:  # the reference's runs of every pair it has in this subset, once each
        others = [c for c in tdf["cell"].unique() if c != cell]
        index = pd.Index([])
        for other in others:
            index = index.union(_pairs_of(tdf, other, subset, plan)["ref_index"])
        return ok.loc[ok.index.intersection(index)]
    return ok.loc[ok.index.intersection(_pairs_of(tdf, cell, subset, plan)["run_index"])]


def _pairs_of(tdf: pd.DataFrame, cell: str, subset: str, plan: AnalysisConfig) -> pd.DataFrame:
    metric = tdf["metric"].dropna().iloc[0] if tdf["metric"].notna().any() else None
    p = pairs(tdf, cell, plan.reference, failed_as=worst(metric))
    if subset == TOP_PAIRS:
        return _top_pairs(p, metric, plan.top_fraction)
    keep = dict(_subsets(tdf, True, plan, [subset])).get(subset)
    return p if keep is None else p[p["ref_index"].isin(keep)]
