"""The primary test of the analysis plan: a rank test, its shift estimate and interval, and tests against a margin.

Paired studies use the Wilcoxon signed-rank test on the paired differences d = cell − reference, with the
Hodges–Lehmann estimate (the median of the Walsh averages (d_i + d_j) / 2) and its distribution-free interval
(order statistics of the Walsh averages at the exact signed-rank critical value). Unpaired studies use the
Mann–Whitney test with the two-sample Hodges–Lehmann shift (the median of all differences a_i − b_j). Both
depend on ranks only, so a run that never learned (NLL 61 where the rest sit near 9) counts as one bad pair, not
as 60 % of a mean, and a failed or diverged run can rank worst (+inf on a lower-is-better metric) instead of
being dropped. docs/analysis.md gives the simulation (analysis/simulate.py) that chose this test over the t-test.

Every effect here is on the *harm* scale: h > 0 means the cell is worse than the reference, whatever the
metric's direction. Tests against a margin shift the data: H1 "θ > m" is the rank test of h − m, one-sided.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import stats as sps

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Shift:
    """The location of the harm h (cell worse > 0) with its interval; `paired` says which rank test."""

    harm: np.ndarray            # paired: the differences; unpaired: the cell's values (oriented)
    reference: np.ndarray | None  # unpaired: the reference's values (oriented); None when paired
    estimate: float
    low: float
    high: float

    @property
    def paired(self) -> bool:
        return self.reference is None

    @property
    def n(self) -> int:
        return len(self.harm)

    def p_above(self, margin: float = 0.0) -> float:
        """One-sided p of H1: θ > margin (the cell is worse than the reference by more than `margin`)."""
        return self._p(margin, "greater")

    def p_below(self, margin: float = 0.0) -> float:
        """One-sided p of H1: θ < margin."""
        return self._p(margin, "less")

    def p_differs(self) -> float:
        """Two-sided p of H1: θ ≠ 0."""
        return self._p(0.0, "two-sided")

    def p_within(self, margin: float) -> float:
        """Two one-sided tests (TOST) of H1: −margin < θ < margin; small means equivalent within the margin."""
        return max(self.p_above(-margin), self.p_below(margin))

    def _p(self, margin: float, alternative: str) -> float:
        if self.paired:
            d = _finite_ties(self.harm - margin)
            if not (d != 0).any():  # every difference sits on the margin: no evidence either way
                return 1.0
            return float(sps.wilcoxon(d, alternative=alternative).pvalue)
        return float(sps.mannwhitneyu(self.harm - margin, self.reference, alternative=alternative).pvalue)


def _finite_ties(values: np.ndarray) -> np.ndarray:
    """inf − inf (both runs failed) is a tie, not NaN."""
    return np.where(np.isnan(values), 0.0, values)


def paired_shift(harm: np.ndarray, confidence: float = CONFIDENCE) -> Shift:
    """Hodges–Lehmann estimate of the paired harms and its interval (Walsh averages at the exact critical value)."""
    h = _finite_ties(np.asarray(harm, dtype=float))
    i, j = np.triu_indices(len(h))
    with np.errstate(invalid="ignore"):
        walsh = np.sort(_finite_ties((h[i] + h[j]) / 2))
    if len(h) == 0:
        return Shift(h, None, np.nan, np.nan, np.nan)
    k = signed_rank_critical(len(h), confidence)
    low, high = (walsh[k], walsh[len(walsh) - 1 - k]) if k is not None else (-math.inf, math.inf)
    return Shift(h, None, float(np.median(walsh)), float(low), float(high))


def unpaired_shift(cell: np.ndarray, reference: np.ndarray, confidence: float = CONFIDENCE) -> Shift:
    """Two-sample Hodges–Lehmann shift (cell − reference, harm scale) and its Mann–Whitney interval."""
    a, b = np.asarray(cell, dtype=float), np.asarray(reference, dtype=float)
    if len(a) == 0 or len(b) == 0:
        return Shift(a, b, np.nan, np.nan, np.nan)
    with np.errstate(invalid="ignore"):
        diffs = np.sort(_finite_ties(np.subtract.outer(a, b).ravel()))
    n, m = len(a), len(b)
    z = sps.norm.ppf(0.5 + confidence / 2)
    k = math.floor(n * m / 2 - z * math.sqrt(n * m * (n + m + 1) / 12))  # normal approximation of U's quantile
    low, high = (diffs[k], diffs[len(diffs) - 1 - k]) if k >= 0 else (-math.inf, math.inf)
    return Shift(a, b, float(np.median(diffs)), float(low), float(high))


def signed_rank_critical(n: int, confidence: float = CONFIDENCE) -> int | None:
    """The 0-based index of the interval's lower end among the n(n+1)/2 sorted Walsh averages: the largest w with
    P(W+ ≤ w) ≤ (1 − confidence) / 2 under the exact null distribution (the textbook critical value); None when no w
    qualifies (too few pairs for any interval at this confidence)."""
    cdf = _signed_rank_cdf(n)
    tail = (1 - confidence) / 2
    below = int(np.searchsorted(cdf, tail * (1 + 1e-9), side="right"))  # how many w have P(W+ <= w) <= tail
    return below - 1 if below else None  # the largest such w is the 0-based index of the lower end


@lru_cache(maxsize=256)
def _signed_rank_cdf(n: int) -> np.ndarray:
    """P(W+ ≤ w) for w = 0 .. n(n+1)/2: the number of subsets of {1..n} with sum w, over 2^n."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1.0
    for r in range(1, n + 1):
        counts[r:] = counts[r:] + counts[:-r].copy()
    return np.cumsum(counts / counts.sum())


@dataclass(frozen=True)
class MeanShift(Shift):
    """The mean harm with its t interval; the same tests as `Shift` by the (paired or Welch) t-test."""

    def _p(self, margin: float, alternative: str) -> float:
        if self.paired:
            d = self.harm - margin
            if not np.isfinite(d).all() or np.ptp(d) == 0:
                return float("nan")
            return float(sps.ttest_1samp(d, 0.0, alternative=alternative).pvalue)
        return float(sps.ttest_ind(self.harm - margin, self.reference, equal_var=False, alternative=alternative).pvalue)


def paired_mean(harm: np.ndarray, confidence: float = CONFIDENCE) -> MeanShift:
    """Mean of the paired harms and its t interval (NaN with fewer than 2 pairs or a failed run)."""
    h = np.asarray(harm, dtype=float)
    if len(h) < 2 or not np.isfinite(h).all():
        return MeanShift(h, None, float(h.mean()) if len(h) else np.nan, np.nan, np.nan)
    low, high = sps.t.interval(confidence, len(h) - 1, loc=h.mean(), scale=sps.sem(h)) if np.ptp(h) > 0 else (h[0], h[0])
    return MeanShift(h, None, float(h.mean()), float(low), float(high))


def unpaired_mean(cell: np.ndarray, reference: np.ndarray, confidence: float = CONFIDENCE) -> MeanShift:
    """Difference of means (cell − reference, harm scale) with Welch's interval."""
    a, b = np.asarray(cell, dtype=float), np.asarray(reference, dtype=float)
    if len(a) < 2 or len(b) < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return MeanShift(a, b, np.nan, np.nan, np.nan)
    res = sps.ttest_ind(a, b, equal_var=False)
    low, high = res.confidence_interval(confidence)
    return MeanShift(a, b, float(a.mean() - b.mean()), float(low), float(high))


def shift(harm: np.ndarray, reference: np.ndarray | None = None, primary: str = "rank",
          confidence: float = CONFIDENCE) -> Shift:
    """The plan's primary estimate: rank-based (`rank`) or mean-based (`t`); paired when `reference` is None."""
    if primary == "t":
        return paired_mean(harm, confidence) if reference is None else unpaired_mean(harm, reference, confidence)
    return paired_shift(harm, confidence) if reference is None else unpaired_shift(harm, reference, confidence)
