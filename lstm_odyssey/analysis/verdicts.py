"""The paper's claims about cells as three verdicts, each decided by the test that fits the claim at the margin δ.

*supported*: the claim is shown (non-superiority, equivalence or harm, at α); *contradicted*: an effect against the
claim is shown; *inconclusive*: neither, with the reason. A claim about several comparisons is shown when each
of them is (an intersection-union test, each at α); it is contradicted when one comparison against it is
significant after Holm's correction across the comparisons that decide the claim. All of it runs on the primary
analysis of all pairs (analysis/compare.py), so no verdict rests on a subset or on the t-test.

- "no variant beats vanilla": each variant's one-sided test of harm > −δ (non-superiority); contradicted by a
  variant better by more than δ.
- "NFG and NOAF hurt most": each is worse than vanilla and worse than each other variant (paired across cells,
  trial by trial); contradicted by one of them better than vanilla, or another variant worse than one of them.
  The ranks of the harms carry a bootstrap interval over trials.
- "CIFG and NP make no difference": two one-sided tests (TOST) at ±δ for each; contradicted by either beyond δ.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from ..schema import AnalysisConfig
from .compare import harm, holm, paired_harms, worst
from .frame import TEST, design
from .inference import Shift, shift
from .plan import margin

SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"


@dataclass
class Claim:
    """One claim's verdict with the numbers behind it (one row of `paper_findings`)."""

    verdict: str
    reason: str                 # what decided it, or why it is inconclusive
    measure: str = ""           # what `effect` is: "NOAF − vanilla", "the learning rate's importance", ...
    effect: float = np.nan
    low: float = np.nan
    high: float = np.nan
    interval: str = ""          # what low-high are: "95 % CI", "90 % bootstrap interval", ...
    p: float = np.nan
    p_is: str = ""
    n: float = np.nan
    detail: str = ""


def compare(tdf: pd.DataFrame, cell: str, other: str, metric: str, plan: AnalysisConfig) -> Shift:
    """The primary estimate of cell − other over all their pairs, or all their runs when the study is unpaired
    (harm scale; a failed run ranks worst)."""
    if not design(tdf)[0]:
        a, b = (harm(tdf.loc[tdf["cell"] == c, TEST].where(tdf["ok"], worst(metric)).to_numpy(), metric) for c in (cell, other))
        return shift(a, b, plan.primary, plan.confidence)
    return shift(paired_harms(tdf, cell, other, metric)[1], None, plan.primary, plan.confidence)


def _quote(name: str, s: Shift, metric: str, plan: AnalysisConfig) -> str:
    sign = 1.0 if harm(np.array([1.0]), metric)[0] > 0 else -1.0
    low, high = sorted((sign * s.low, sign * s.high))
    return f"{name} {sign * s.estimate:+.3g} ({plan.confidence:.0%} CI {low:+.3g} to {high:+.3g}, n = {s.n})"


def _effect(claim: Claim, name: str, s: Shift, metric: str, plan: AnalysisConfig) -> Claim:
    sign = 1.0 if harm(np.array([1.0]), metric)[0] > 0 else -1.0
    low, high = sorted((sign * s.low, sign * s.high))
    claim.measure, claim.effect, claim.low, claim.high, claim.n = name, sign * s.estimate, low, high, s.n
    claim.interval = f"{plan.confidence:.0%} CI"
    return claim


def _too_few(shifts: dict[str, Shift], plan: AnalysisConfig) -> str | None:
    few = {c: s.n for c, s in shifts.items() if s.n < plan.min_pairs}
    if few:
        return "too few pairs: " + ", ".join(f"{c.upper()} {n}" for c, n in few.items()) + f" (the plan needs {plan.min_pairs})"
    return None


def no_variant_better(tdf: pd.DataFrame, variants: list[str], metric: str, plan: AnalysisConfig) -> Claim:
    ref, delta = plan.reference, margin(plan, metric)
    shifts = {v: compare(tdf, v, ref, metric, plan) for v in variants}
    best = min(shifts, key=lambda v: shifts[v].estimate)
    detail = "; ".join(_quote(f"{v.upper()} − {ref}", s, metric, plan) for v, s in shifts.items())
    if (why := _too_few(shifts, plan)) is not None:
        return _effect(Claim(INCONCLUSIVE, why, detail=detail), f"{best.upper()} − {ref}", shifts[best], metric, plan)
    better = holm([s.p_below(-delta) for s in shifts.values()])
    nonsup = {v: s.p_above(-delta) for v, s in shifts.items()}
    if np.nanmin(better) < plan.alpha:
        v = list(shifts)[int(np.nanargmin(better))]
        claim = Claim(CONTRADICTED, f"{v.upper()} is better than {ref} by more than δ = {delta:g}", p=float(np.nanmin(better)),
                      p_is="Holm p (better by > δ)", detail=detail)
        return _effect(claim, f"{v.upper()} − {ref}", shifts[v], metric, plan)
    weakest = max(nonsup, key=lambda v: nonsup[v])
    if nonsup[weakest] < plan.alpha:
        claim = Claim(SUPPORTED, f"every variant is shown not better than {ref} by δ = {delta:g} or more",
                      p=nonsup[weakest], p_is="p (non-superiority, largest)", detail=detail)
        return _effect(claim, f"{weakest.upper()} − {ref}", shifts[weakest], metric, plan)
    claim = Claim(INCONCLUSIVE, f"{weakest.upper()}'s interval reaches below −δ = {-delta:g} without lying beyond it",
                  p=nonsup[weakest], p_is="p (non-superiority, largest)", detail=detail)
    return _effect(claim, f"{weakest.upper()} − {ref}", shifts[weakest], metric, plan)


def no_difference(tdf: pd.DataFrame, cells: list[str], metric: str, plan: AnalysisConfig) -> Claim:
    ref, delta = plan.reference, margin(plan, metric)
    shifts = {c: compare(tdf, c, ref, metric, plan) for c in cells}
    detail = "; ".join(_quote(f"{c.upper()} − {ref}", s, metric, plan) for c, s in shifts.items())
    if (why := _too_few(shifts, plan)) is not None:
        widest = max(shifts, key=lambda c: shifts[c].high - shifts[c].low)
        return _effect(Claim(INCONCLUSIVE, why, detail=detail), f"{widest.upper()} − {ref}", shifts[widest], metric, plan)
    claim, cell = equivalence(shifts, delta, plan.alpha, ref)
    claim.detail = detail
    return _effect(claim, f"{cell.upper()} − {ref}", shifts[cell], metric, plan)


def equivalence(shifts: dict[str, Shift], delta: float, alpha: float, ref: str = "the reference") -> tuple[Claim, str]:
    """"Each of these makes no difference within ±δ" for the given comparisons: supported when every TOST is
    significant (each at α), contradicted when one comparison lies beyond ±δ (Holm across both directions of every
    comparison); returns the claim and the comparison that decided it. analysis/simulate.py measures its error rates."""
    beyond = holm([p for s in shifts.values() for p in (s.p_above(delta), s.p_below(-delta))])
    if np.nanmin(beyond) < alpha:
        c = list(shifts)[int(np.nanargmin(beyond)) // 2]
        return Claim(CONTRADICTED, f"{c.upper()} differs from {ref} by more than δ = {delta:g}", p=float(np.nanmin(beyond)),
                     p_is="Holm p (beyond δ)"), c
    widest = max(shifts, key=lambda c: shifts[c].p_within(delta))
    s, p = shifts[widest], shifts[widest].p_within(delta)
    if p < alpha:
        return Claim(SUPPORTED, f"each is equivalent to {ref} within ±δ = {delta:g} (TOST)", p=p,
                     p_is="p (TOST, largest)"), widest
    why = ("its interval is wider than the band ±δ: more pairs are needed" if s.high - s.low > 2 * delta else
           "its interval reaches beyond ±δ without lying beyond it")
    return Claim(INCONCLUSIVE, f"{widest.upper()} is not shown within ±δ = {delta:g}: {why}", p=p,
                 p_is="p (TOST, largest)"), widest


def hurt_most(tdf: pd.DataFrame, suspects: list[str], variants: list[str], metric: str, plan: AnalysisConfig) -> Claim:
    """The suspects are each worse than the reference and than every other variant."""
    ref = plan.reference
    others = [v for v in variants if v not in suspects]
    vs = {(s, o): compare(tdf, s, o, metric, plan) for s in suspects for o in [ref, *others]}
    ranks = rank_intervals(tdf, variants, metric, plan)
    detail = "; ".join(_quote(f"{s.upper()} − {ref}", v, metric, plan) for (s, o), v in vs.items() if o == ref)
    if ranks:
        detail += ("; rank of the harm among the variants (1 = worst; bootstrap 95 % interval): "
                   + ", ".join(f"{c.upper()} {r}" for c, r in ranks.items()))
    weaker = min(suspects, key=lambda s: vs[(s, ref)].estimate)
    finish = lambda claim: _effect(claim, f"{weaker.upper()} − {ref}", vs[(weaker, ref)], metric, plan)  # noqa: E731
    if (why := _too_few({f"{s}−{o}": v for (s, o), v in vs.items()}, plan)) is not None:
        return finish(Claim(INCONCLUSIVE, why, detail=detail))
    against = holm([v.p_below(0.0) for v in vs.values()])
    if np.nanmin(against) < plan.alpha:
        shown = [k for k, p in zip(vs, against) if p < plan.alpha]
        what = "; ".join(f"{s.upper()} is better than {ref}" if o == ref else f"{o.upper()} is worse than {s.upper()}"
                         for s, o in shown)
        return finish(Claim(CONTRADICTED, what, p=float(np.nanmin(against)), p_is="Holm p (against the claim, smallest)",
                            detail=detail))
    p_for = {k: v.p_above(0.0) for k, v in vs.items()}
    weakest = max(p_for, key=lambda k: p_for[k])
    if p_for[weakest] < plan.alpha:
        return finish(Claim(SUPPORTED, f"{' and '.join(s.upper() for s in suspects)} are each worse than {ref} and than "
                                       "every other variant", p=p_for[weakest], p_is="p (largest of the one-sided tests)",
                            detail=detail))
    s, o = weakest
    what = f"{s.upper()} is not shown worse than {o.upper() if o != ref else ref}"
    return finish(Claim(INCONCLUSIVE, what, p=p_for[weakest], p_is="p (largest of the one-sided tests)", detail=detail))


def rank_intervals(tdf: pd.DataFrame, variants: list[str], metric: str, plan: AnalysisConfig) -> dict[str, str]:
    """Each variant's rank by its harm against the reference (1 = the worst), with a bootstrap interval over the
    trials: "2 (1–3)". The estimate of the harm is the median paired difference, a cheap robust stand-in."""
    d = {}
    for v in variants:
        p, h = paired_harms(tdf, v, plan.reference, metric)
        d[v] = pd.Series(h, index=p["pair"].to_numpy())
    table = pd.DataFrame(d).dropna()
    if len(table) < 2 or plan.bootstrap < 1:
        return {}
    values = np.nan_to_num(table.to_numpy(), nan=0.0)

    def ranks(rows: np.ndarray) -> np.ndarray:
        return sps.rankdata(-np.median(values[rows], axis=0))

    with warnings.catch_warnings():  # a rank that never moves (NOAF always last) is no error
        warnings.simplefilter("ignore", sps.DegenerateDataWarning)
        res = sps.bootstrap((np.arange(len(table)),), ranks, n_resamples=plan.bootstrap, vectorized=False,
                            method="percentile", confidence_level=0.95, random_state=np.random.default_rng(plan.seed))
    point = ranks(np.arange(len(table)))
    low, high = np.quantile(res.bootstrap_distribution, [0.025, 0.975], axis=-1, method="inverted_cdf")  # ranks, not between
    return {v: f"{point[i]:g} ({low[i]:g}–{high[i]:g})" for i, v in enumerate(table.columns)}
