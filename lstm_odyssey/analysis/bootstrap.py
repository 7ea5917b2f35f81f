"""The paper's claims about hyperparameters as verdicts with bootstrap intervals over trials.

fANOVA gives no p-value, and its importances move a lot with the trials a study happened to draw, so each claim
compares a bootstrap interval (`scipy.stats.bootstrap`, percentile, `analysis.bootstrap` resamples of the trials:
in a paired study a resample keeps every cell of a trial together) with the plan's threshold: *supported* when the
one-sided (1 − α) bound lies on the claim's side, *contradicted* when the other bound lies on the other side,
*inconclusive* otherwise. The claim's estimate and every resample fit forests of `analysis.bootstrap_trees` trees
(the report's importance table keeps 64), and the resamples' forests are fitted in parallel on every core the process
may use; scipy draws the same resamples either way, so the intervals do not depend on the number of cores
(docs/analysis.md gives the report's time).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy import stats as sps

from ..schema import AnalysisConfig
from .frame import PAIR, TEST, cell_order
from .hyperparams import _fanova, lr_hidden_frame, why_untestable
from .verdicts import CONTRADICTED, INCONCLUSIVE, SUPPORTED, Claim

LR, MOMENTUM = "optim.lr", "optim.momentum"
MIN_CELLS = 3      # fANOVA claims need the importances of at least this many cells ...
MIN_RUNS = 20      # ... each from at least this many ok runs (a forest on fewer explains anything)
DEPTH = 8          # the report's fANOVA trees (hyperparams.importance)


def _interval(statistic: Callable[..., np.ndarray], samples: tuple[np.ndarray, ...], plan: AnalysisConfig,
              workers: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (1 − 2α) percentile interval of each statistic (each end a one-sided 1 − α bound) and the share of
    resamples where it was undefined. With `workers` > 1 the resamples' statistics are computed in that many
    processes: scipy draws the same resamples either way."""
    with warnings.catch_warnings():  # a statistic that never moves (lr always first) is no error
        warnings.simplefilter("ignore", sps.DegenerateDataWarning)
        vectorised = _in_parallel(statistic, workers) if workers > 1 else None
        res = sps.bootstrap(samples, vectorised or statistic, n_resamples=plan.bootstrap, vectorized=bool(vectorised),
                            method="percentile", paired=False, random_state=np.random.default_rng(plan.seed))
    dist = np.atleast_2d(res.bootstrap_distribution)
    with warnings.catch_warnings():  # a statistic the study cannot have (momentum under Adam) is NaN throughout
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanquantile(dist, [plan.alpha, 1 - plan.alpha], axis=-1)
    return low, high, np.isnan(dist).mean(axis=-1)


def _in_parallel(statistic: Callable[..., np.ndarray], workers: int) -> Callable[..., np.ndarray]:
    """`statistic` of one resample as scipy's vectorised statistic of a batch (each sample's resamples are the rows
    of its array; the result has one column per resample), the rows shared out among `workers` processes."""
    from joblib import Parallel, delayed

    def batch(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
        rows = np.array_split(np.arange(samples[0].shape[0]), workers)
        parts = Parallel(n_jobs=workers)(delayed(_rows)(statistic, [s[r] for s in samples]) for r in rows if len(r))
        return np.column_stack([value for part in parts for value in part])

    return batch


def _rows(statistic: Callable[..., np.ndarray], samples: list[np.ndarray]) -> list[np.ndarray]:
    return [np.atleast_1d(statistic(*row)) for row in zip(*samples)]


MAX_WORKERS = 8  # each worker imports pandas and scikit-learn (about 150 MB); past 8 the report gains seconds at most


def workers_for(plan: AnalysisConfig) -> int:
    """The processes for the fANOVA resamples: the cores this process may use (joblib counts the CPU affinity and
    the cgroup's quota, as on a SLURM node), at most `MAX_WORKERS` and one per resample."""
    from joblib import cpu_count

    return max(1, min(cpu_count(), MAX_WORKERS, plan.bootstrap))


def _decide(low: float, high: float, threshold: float, claim_below: bool) -> str:
    if claim_below:
        return SUPPORTED if high < threshold else CONTRADICTED if low >= threshold else INCONCLUSIVE
    return SUPPORTED if low >= threshold else CONTRADICTED if high < threshold else INCONCLUSIVE


def importance_claims(tdf: pd.DataFrame, names: list[str], plan: AnalysisConfig, is_paired: bool,
                      optimiser: str | None = None) -> dict[str, Claim]:
    """"the learning rate is by far the most important" (lr's median importance ≥ `by_far` × the next one's),
    "momentum hardly matters" (below `hardly`), "nearly independent" (main effects ≥ `independent`)."""
    ok = tdf[tdf["ok"]]
    cells = [c for c in cell_order(ok["cell"].unique(), plan.reference) if (ok["cell"] == c).sum() >= MIN_RUNS]
    test = f"fANOVA per cell, median over cells; bootstrap over trials ({plan.bootstrap} resamples)"
    keys = ("lr_most_important", "momentum_hardly_matters", "nearly_independent")
    if len(cells) < MIN_CELLS or not names:
        why = (f"{len(cells)} cells have at least {MIN_RUNS} ok runs (at least {MIN_CELLS} are needed)" if names
               else "no hyperparameter varies")
        return {k: Claim(INCONCLUSIVE, why, detail=test) for k in keys}
    if plan.bootstrap < 1:
        return {k: Claim(INCONCLUSIVE, "the plan asks no bootstrap (analysis.bootstrap=0)", detail=test) for k in keys}
    groups = [ok[ok["cell"] == c] for c in cells]
    order = [LR] + [n for n in names if n != LR]

    def medians(parts: list[pd.DataFrame], trees: int) -> np.ndarray:
        raws = [_fanova(g, names, TEST, trees, DEPTH, plan.seed) for g in parts]
        share = [np.array([r[n] for n in order]) / max(sum(r.values()), 1e-300) for r in raws]
        med = np.median(np.vstack(share), axis=0)
        ratio = med[0] / med[1:].max() if len(med) > 1 and med[1:].max() > 0 else np.inf
        momentum = med[order.index(MOMENTUM)] if MOMENTUM in order else np.nan
        return np.array([ratio, momentum, np.median([sum(r.values()) for r in raws]), *med])

    if is_paired:  # a resample draws trials (pair keys); each cell keeps its run of every drawn trial
        keys = np.array(sorted(ok[PAIR].dropna().unique()))
        position = [dict(zip(g[PAIR], range(len(g)))) for g in groups]

        def statistic(pick: np.ndarray) -> np.ndarray:
            return medians([g.iloc[[m[k] for k in keys[pick] if k in m]] for g, m in zip(groups, position)],
                           plan.bootstrap_trees)

        low, high, undefined = _interval(statistic, (np.arange(len(keys)),), plan, workers_for(plan))
    else:
        def statistic(*picks: np.ndarray) -> np.ndarray:
            return medians([g.iloc[p] for g, p in zip(groups, picks)], plan.bootstrap_trees)

        low, high, undefined = _interval(statistic, tuple(np.arange(len(g)) for g in groups), plan,
                                          workers_for(plan))
    point = medians(groups, plan.bootstrap_trees)  # the forests of the resamples, so the interval is the estimate's
    n = float(sum(len(g) for g in groups))
    spread = ", ".join(f"{name} {point[3 + i]:.2f} ({low[3 + i]:.2f}–{high[3 + i]:.2f})" for i, name in enumerate(order))
    detail = f"median importance over {len(cells)} cells ({1 - 2 * plan.alpha:.0%} bootstrap interval): {spread}"
    return _importance_verdicts(point, low, high, names, plan, n, detail, optimiser)


def _importance_verdicts(point: np.ndarray, low: np.ndarray, high: np.ndarray, names: list[str], plan: AnalysisConfig,
                         n: float, detail: str, optimiser: str | None) -> dict[str, Claim]:
    """The three claims from the statistics [lr's ratio to the next, momentum's importance, main effects' share]."""
    bound = f"{1 - 2 * plan.alpha:.0%} bootstrap interval"
    out = {}
    if LR not in names:
        out["lr_most_important"] = Claim(INCONCLUSIVE, "the learning rate was not varied", detail=detail)
    else:
        verdict = _decide(low[0], high[0], plan.by_far, claim_below=False)
        out["lr_most_important"] = Claim(
            verdict, f"lr's median importance is {point[0]:.2g}x the next parameter's; the claim needs ≥ {plan.by_far:g}x",
            "lr's importance ÷ the next one's", point[0], low[0], high[0], bound, n=n, detail=detail)
    if MOMENTUM not in names:
        out["momentum_hardly_matters"] = Claim(INCONCLUSIVE, f"this protocol has no momentum to vary (optimiser "
                                                             f"{optimiser or 'unknown'})", detail=detail)
    else:
        verdict = _decide(low[1], high[1], plan.hardly, claim_below=True)
        out["momentum_hardly_matters"] = Claim(
            verdict, f"momentum's median importance against the threshold {plan.hardly:g}", "momentum's importance",
            point[1], low[1], high[1], bound, n=n, detail=detail)
    verdict = SUPPORTED if low[2] >= plan.independent else INCONCLUSIVE
    why = (f"main effects explain at least {plan.independent:.0%} of the forest's variance" if verdict == SUPPORTED else
           f"the lower bound is below {plan.independent:.0%}, and this fANOVA cannot tell interactions from noise in "
           "the rest, so it cannot contradict the claim")
    out["nearly_independent"] = Claim(verdict, why, "main effects' share", point[2], low[2], high[2], bound, n=n,
                                      detail=detail)
    return out


def lr_shift_claim(tdf: pd.DataFrame, plan: AnalysisConfig, ftest_p: float = np.nan) -> Claim:
    """"The hidden size does not shift the optimal learning rate": the shift of the best learning rate from the
    smallest to the largest hidden-size group, in decades, against ±`lr_shift`. A group's best learning rate is the
    median log10 lr of its best quarter of observations (`best_lr`): defined in every resample and untouched by
    the size of a bad run's metric, where the vertex of a fitted parabola is undefined whenever the curve bends
    the wrong way (a third of the resamples of the published studies) and follows the tails."""
    test = f"bootstrap over trials ({plan.bootstrap} resamples) of the optimum's shift"
    if not {"optim.lr", "model.hidden_size"} <= set(tdf.columns):
        return Claim(INCONCLUSIVE, "the learning rate or the hidden size was not varied", detail=test)
    obs, paired = lr_hidden_frame(tdf[tdf["ok"]])
    why = why_untestable(obs, paired) if obs["group"].nunique() > 1 else "all runs fall into one hidden-size group"
    if why is not None or plan.bootstrap < 1:
        return Claim(INCONCLUSIVE, why or "the plan asks no bootstrap (analysis.bootstrap=0)", detail=test)
    first, last = obs["group"].min(), obs["group"].max()
    x, y, group = obs["log10_lr"].to_numpy(), obs["y"].to_numpy(), obs["group"].to_numpy()

    def statistic(pick: np.ndarray) -> np.ndarray:
        g = group[pick]
        return np.array([best_lr(x[pick][g == last], y[pick][g == last]) - best_lr(x[pick][g == first], y[pick][g == first])])

    point = float(statistic(np.arange(len(obs)))[0])
    low, high, undefined = _interval(statistic, (np.arange(len(obs)),), plan)
    labels = obs.groupby("group")["group_label"].first()
    measure = f"optimum's shift, hidden {labels[first]} → {labels[last]} (decades)"
    detail = (f"{test}; secondary: the F-test of one shared curve gives p = {ftest_p:.3g}" if np.isfinite(ftest_p) else test)
    bound = f"{1 - 2 * plan.alpha:.0%} bootstrap interval"
    if not np.isfinite(point) or undefined[0] > 0.1:
        return Claim(INCONCLUSIVE, f"a group had no observations in {undefined[0]:.0%} of the resamples",
                     measure, point, np.nan, np.nan, bound, n=float(len(obs)), detail=detail)
    d = plan.lr_shift
    if -d < low[0] and high[0] < d:
        verdict, why = SUPPORTED, f"the shift lies within ±{d:g} decades"
    elif low[0] >= d or high[0] <= -d:
        verdict, why = CONTRADICTED, f"the optimum moves by more than {d:g} decades"
    else:
        verdict, why = INCONCLUSIVE, f"the interval reaches beyond ±{d:g} decades without lying beyond them"
    return Claim(verdict, why, measure, point, float(low[0]), float(high[0]), bound, n=float(len(obs)), detail=detail)


def best_lr(log10_lr: np.ndarray, y: np.ndarray, share: float = 0.25) -> float:
    """The median log10 lr of the best `share` of the observations (at least 3; lower y is better)."""
    if len(y) == 0:
        return float("nan")
    k = min(len(y), max(3, int(np.ceil(share * len(y)))))
    return float(np.median(log10_lr[np.argsort(y, kind="stable")[:k]]))
