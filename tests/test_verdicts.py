"""The analysis plan's statistics against independent computations: the Hodges–Lehmann estimate and its exact
signed-rank interval, the rank and t tests and their TOST against scipy and statsmodels, Holm's correction, a
failed run ranked worst; the paper's claims about cells on planted paired studies (docs/analysis.md), the
learning-rate shift claim, seed noise, and the plan read from a study's multirun.yaml."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_ind, ttost_paired

from lstm_odyssey import analysis
from lstm_odyssey.analysis import bootstrap, compare, inference, odyssey, replicates, verdicts
from lstm_odyssey.analysis.plan import load_plan
from lstm_odyssey.analysis.verdicts import CONTRADICTED, INCONCLUSIVE, SUPPORTED
from lstm_odyssey.schema import MARGINS, AnalysisConfig
from lstm_odyssey.settings import ConfigError

PLAN = AnalysisConfig(bootstrap=20)
DELTA = PLAN.margin["nll"]  # 0.05 nats
VARIANTS = list(odyssey.VARIANTS)
TIGHT, NOISY = 0.01, 0.5  # sd of a paired difference


# -- independent computations --------------------------------------------------------------------------------
def walsh_averages(d: np.ndarray) -> list[float]:
    """Every (d_i + d_j) / 2 with i <= j, by a plain double loop."""
    return [(d[i] + d[j]) / 2 for i in range(len(d)) for j in range(i, len(d))]


def signed_rank_null(n: int) -> np.ndarray:
    """The exact null distribution of W+ for n pairs by enumerating all 2^n signs: counts of each W+."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    for signs in itertools.product((0, 1), repeat=n):
        counts[sum(r for r, s in zip(range(1, n + 1), signs) if s)] += 1
    return counts


def sample(n: int, seed: int, loc: float = 0.3) -> np.ndarray:
    """Continuous data: no ties, no zeros, Walsh averages all distinct."""
    return np.random.default_rng(seed).normal(loc, 1.0, n)


# -- the rank test: estimate, interval, p-values --------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 7, 12, 20])
def test_hodges_lehmann_is_the_median_of_the_walsh_averages(n):
    d = sample(n, seed=n)
    assert inference.paired_shift(d).estimate == pytest.approx(float(np.median(walsh_averages(d))), abs=1e-12)
    a, b = sample(n, seed=100 + n), sample(n + 3, seed=200 + n, loc=-0.2)
    diffs = [x - y for x in a for y in b]
    shift = inference.unpaired_shift(a, b)
    assert shift.estimate == pytest.approx(float(np.median(diffs)), abs=1e-12) and shift.n == n
    assert math.isnan(inference.paired_shift(np.array([])).estimate)


@pytest.mark.parametrize("confidence", [0.95, 0.9])
@pytest.mark.parametrize("n", [12, 20])
def test_the_signed_rank_interval_inverts_the_exact_wilcoxon_test(n, confidence):
    """Each end of the interval is where scipy's exact two-sided signed-rank test of H0: shift = m crosses α:
    p >= α just inside, p < α just outside."""
    alpha = 1 - confidence
    d = sample(n, seed=7 * n)
    shift = inference.paired_shift(d, confidence)
    gaps = np.diff(np.sort(walsh_averages(d)))
    eps = gaps.min() / 10
    assert eps > 0 and shift.low < shift.estimate < shift.high

    def p(m: float) -> float:
        return stats.wilcoxon(d - m, method="exact").pvalue

    assert p(shift.low + eps) >= alpha > p(shift.low - eps)
    assert p(shift.high - eps) >= alpha > p(shift.high + eps)


def test_signed_rank_critical_values_are_the_textbook_ones():
    # n = 10, two-sided 5 %: P(W <= 8) = 25/1024 = 0.0244 <= 0.025 < P(W <= 9) = 33/1024
    cdf = np.cumsum(signed_rank_null(10)) / 2**10
    assert cdf[8] == pytest.approx(0.0244, abs=5e-5) and cdf[8] <= 0.025 < cdf[9]
    assert inference.signed_rank_critical(10) == 8
    assert inference.signed_rank_critical(12) == 13 and inference.signed_rank_critical(20) == 52  # the tables' values
    cdf12 = np.cumsum(signed_rank_null(12)) / 2**12
    assert inference.signed_rank_critical(12, 0.9) == int(np.searchsorted(cdf12, 0.05, side="right")) - 1
    # n = 5: even W = 0 has P = 1/32 > 0.025, so no 95 % interval exists; n = 6: P(W = 0) = 1/64, the range of d
    assert inference.signed_rank_critical(5) is None and inference.signed_rank_critical(6) == 0
    five, six = inference.paired_shift(sample(5, 1)), inference.paired_shift(d := sample(6, 2))
    assert (five.low, five.high) == (-np.inf, np.inf)
    assert (six.low, six.high) == (pytest.approx(d.min()), pytest.approx(d.max()))


def test_p_values_are_scipys_rank_tests_on_the_shifted_data():
    d = sample(20, seed=3)
    s = inference.paired_shift(d)
    for m in (-0.2, 0.0, 0.3):
        assert s.p_above(m) == pytest.approx(stats.wilcoxon(d - m, alternative="greater").pvalue, rel=1e-12)
        assert s.p_below(m) == pytest.approx(stats.wilcoxon(d - m, alternative="less").pvalue, rel=1e-12)
    assert s.p_differs() == pytest.approx(stats.wilcoxon(d).pvalue, rel=1e-12)
    assert s.p_within(0.4) == pytest.approx(max(stats.wilcoxon(d + 0.4, alternative="greater").pvalue,
                                                stats.wilcoxon(d - 0.4, alternative="less").pvalue), rel=1e-12)
    # the one-sided p by enumerating every sign assignment of 10 pairs
    d10 = sample(10, seed=4)
    w = stats.rankdata(np.abs(d10))[d10 > 0].sum()
    counts = signed_rank_null(10)
    assert inference.paired_shift(d10).p_above(0.0) == pytest.approx(counts[int(w):].sum() / 2**10, rel=1e-12)
    a, b = sample(14, seed=5), sample(17, seed=6, loc=-0.5)
    u = inference.unpaired_shift(a, b)
    for m in (-0.3, 0.0, 0.8):
        assert u.p_above(m) == pytest.approx(stats.mannwhitneyu(a - m, b, alternative="greater").pvalue, rel=1e-12)
        assert u.p_below(m) == pytest.approx(stats.mannwhitneyu(a - m, b, alternative="less").pvalue, rel=1e-12)
    assert u.p_differs() == pytest.approx(stats.mannwhitneyu(a, b).pvalue, rel=1e-12)


def test_the_two_sample_interval_inverts_the_normal_approximation_of_mann_whitney():
    """The unpaired interval takes U's quantile from its normal approximation (no continuity correction)."""
    a, b = sample(14, seed=8), sample(19, seed=9, loc=-0.4)
    u = inference.unpaired_shift(a, b)
    eps = np.diff(np.sort(np.subtract.outer(a, b).ravel())).min() / 10

    def p(m: float) -> float:
        return stats.mannwhitneyu(a - m, b, method="asymptotic", use_continuity=False).pvalue

    assert p(u.low + eps) >= 0.05 > p(u.low - eps)
    assert p(u.high - eps) >= 0.05 > p(u.high + eps)


# -- the t versions: TOST against statsmodels, intervals against scipy ----------------------------------------
def test_t_versions_tost_equals_statsmodels():
    rng = np.random.default_rng(10)
    x2 = rng.normal(8.5, 1.0, 25)
    x1 = x2 + rng.normal(0.02, 0.1, 25)
    d = x1 - x2
    for delta in (0.05, 0.1):
        assert inference.paired_mean(d).p_within(delta) == pytest.approx(ttost_paired(x1, x2, -delta, delta)[0], rel=1e-9)
    a, b = rng.normal(0.0, 0.3, 18), rng.normal(0.05, 0.6, 23)
    for delta in (0.2, 0.5):
        welch = ttost_ind(a, b, -delta, delta, usevar="unequal")[0]
        assert inference.unpaired_mean(a, b).p_within(delta) == pytest.approx(welch, rel=1e-9)
        pooled = ttost_ind(a, b, -delta, delta, usevar="pooled")[0]
        assert inference.unpaired_mean(a, b).p_within(delta) != pytest.approx(pooled, rel=1e-6)  # Welch, not pooled


@pytest.mark.parametrize("confidence", [0.95, 0.9])
def test_t_intervals_equal_scipys(confidence):
    rng = np.random.default_rng(11)
    a, b = rng.normal(1.0, 0.3, 12), rng.normal(0.7, 0.9, 17)
    expected = stats.ttest_ind(a, b, equal_var=False).confidence_interval(confidence)
    welch = inference.unpaired_mean(a, b, confidence)
    assert (welch.low, welch.high) == (pytest.approx(expected.low, rel=1e-12), pytest.approx(expected.high, rel=1e-12))
    assert welch.estimate == pytest.approx(a.mean() - b.mean())
    assert welch.p_differs() == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-12)
    d = a - b[:12]
    expected = stats.ttest_1samp(d, 0.0).confidence_interval(confidence)
    paired = inference.paired_mean(d, confidence)
    assert (paired.low, paired.high) == (pytest.approx(expected.low, rel=1e-12), pytest.approx(expected.high, rel=1e-12))
    assert paired.p_differs() == pytest.approx(stats.ttest_rel(a, b[:12]).pvalue, rel=1e-12)


def test_holm_equals_statsmodels_and_keeps_nan():
    p = np.array([0.01, np.nan, 0.04, 0.03, 0.005, np.nan, 0.5])
    out = compare.holm(p)
    finite = np.isfinite(p)
    np.testing.assert_array_equal(np.isnan(out), ~finite)
    np.testing.assert_allclose(out[finite], multipletests(p[finite], method="holm")[1], rtol=1e-12)
    np.testing.assert_allclose(out[finite], [0.04, 0.09, 0.09, 0.025, 0.5])  # by hand: x5, x4, x3, x2, x1, running max
    assert analysis.holm is compare.holm and np.isnan(compare.holm([np.nan])).all() and len(compare.holm([])) == 0


# -- a failed run ranks worst --------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [20, 40])
def test_a_failed_run_is_a_loss_and_the_estimate_stays_finite_while_under_a_third_fail(n):
    d = sample(n, seed=n, loc=0.0) * 0.1
    total = n * (n + 1) // 2
    for k in range(n + 1):
        h = d.copy()
        h[:k] = np.inf  # the cell's run of k pairs failed: it ranks below every finished run
        s = inference.paired_shift(h)
        finite_walsh = (n - k) * (n - k + 1) // 2  # the Walsh averages of two finished pairs
        assert np.isfinite(s.estimate) == (finite_walsh > total / 2), k  # more than half of them finite
        if k < n / 4:
            assert np.isfinite(s.estimate)
        if k >= n / 3:
            assert s.estimate == np.inf
        if 0 < k < n:
            assert s.p_above(0.0) <= inference.paired_shift(d).p_above(0.0)  # a failure only adds evidence of harm
    # breakdown at 1 − 1/√2 ≈ 29 % of the pairs
    first_infinite = next(k for k in range(n + 1) if not np.isfinite(inference.paired_shift(np.r_[[np.inf] * k, d[k:]]).estimate))
    assert first_infinite / n == pytest.approx(1 - 1 / math.sqrt(2), abs=1.5 / n)


def paired_study(effects: dict[str, float], pair_sd: float, n_trials: int = 40, seed: int = 0,
                 metric: str = "nll", base: float = 8.5) -> pd.DataFrame:
    """A paired JSB-like study: trial k's hyperparameters move the test NLL a lot (sd 1 nat across trials, the
    same for every cell); each run adds its cell's effect and noise whose paired difference has sd `pair_sd`."""
    rng = np.random.default_rng(seed)
    lr = 10 ** rng.uniform(-5, -1, n_trials)
    hidden = np.exp(rng.uniform(np.log(20), np.log(200), n_trials)).astype(int)
    level = base + rng.normal(0, 1.0, n_trials)
    rows = []
    for cell, effect in effects.items():
        y = level + effect + rng.normal(0, pair_sd / math.sqrt(2), n_trials)
        rows += [{"study": "jsb", "trial": k, "status": "ok", "cell": cell, "task": "jsb_chorales", "metric": metric,
                  f"test_{metric}": y[k], f"val_{metric}": y[k] + 0.01 * rng.normal(), "optim.lr": float(lr[k]),
                  "model.hidden_size": int(hidden[k]), "trainer.seed": 0} for k in range(n_trials)]
    return analysis.prepare(pd.DataFrame(rows))


def test_failed_runs_in_the_significance_table_rank_worst_whatever_the_metrics_direction():
    df = paired_study({"vanilla": 0.0, "nfg": 0.0}, TIGHT, n_trials=20, metric="accuracy", base=0.5)
    failed = (df["trial"] == 3) & (df["cell"] == "nfg")
    both = (df["trial"] == 4)
    df.loc[failed | both, "status"] = "failed"
    df = analysis.prepare(df.drop(columns=["ok", "pair", "val_score", "test_score", "test_accuracy"]).assign(
        test_accuracy=df["test_accuracy"].where(~(failed | both))))
    row = analysis.significance(df, subsets=("all",)).iloc[0]
    p = analysis.pairs(df, "nfg", "vanilla", failed_as=compare.worst("accuracy"))
    assert compare.worst("accuracy") == -np.inf and compare.worst("nll") == np.inf
    assert row["n"] == 20 and row["n_failed"] == 2
    finished = p[np.isfinite(p["test"]) & np.isfinite(p["test_ref"])]
    d = (finished["test"] - finished["test_ref"]).to_numpy()
    # nfg's failed run loses its pair (lower accuracy is worse); both failed is a tie
    assert row["losses"] == int((d < 0).sum()) + 1 and row["wins"] == int((d > 0).sum()) and row["ties"] == 1
    assert np.isfinite(row["diff"]) and row["verdict"] == "n.s."


# -- the paper's claims about cells on planted paired studies ------------------------------------------------
def test_a_noisy_null_leaves_no_difference_inconclusive_with_the_interval_as_the_reason():
    df = paired_study({"vanilla": 0.0, "cifg": 0.0, "np": 0.0}, NOISY)
    c = verdicts.no_difference(df, ["cifg", "np"], "nll", PLAN)
    assert c.verdict == INCONCLUSIVE
    assert c.reason.endswith(f"is not shown within ±δ = {DELTA:g}: its interval is wider than the band ±δ: more pairs "
                             "are needed")
    assert c.high - c.low > 2 * DELTA and c.low < 0 < c.high and c.interval == "95% CI" and c.n == 40
    assert c.p >= PLAN.alpha and c.p_is == "p (TOST, largest)"


def test_a_tight_null_supports_no_difference():
    df = paired_study({"vanilla": 0.0, "cifg": 0.0, "np": 0.0}, TIGHT)
    c = verdicts.no_difference(df, ["cifg", "np"], "nll", PLAN)
    assert c.verdict == SUPPORTED and c.reason == f"each is equivalent to vanilla within ±δ = {DELTA:g} (TOST)"
    assert -DELTA < c.low <= c.effect <= c.high < DELTA and c.p < PLAN.alpha


def test_a_harm_of_two_margins_contradicts_no_difference():
    df = paired_study({"vanilla": 0.0, "cifg": 2 * DELTA, "np": 0.0}, TIGHT)
    c = verdicts.no_difference(df, ["cifg", "np"], "nll", PLAN)
    assert c.verdict == CONTRADICTED and c.reason == f"CIFG differs from vanilla by more than δ = {DELTA:g}"
    assert c.measure == "CIFG − vanilla" and c.effect == pytest.approx(2 * DELTA, abs=0.01) and c.low > DELTA
    assert c.p < PLAN.alpha and c.p_is == "Holm p (beyond δ)"


def test_no_variant_beats_vanilla():
    worse_or_equal = {"vanilla": 0.0, **{v: 0.1 * (i % 3) for i, v in enumerate(VARIANTS)}}
    c = verdicts.no_variant_better(paired_study(worse_or_equal, TIGHT), VARIANTS, "nll", PLAN)
    assert c.verdict == SUPPORTED and c.reason == f"every variant is shown not better than vanilla by δ = {DELTA:g} or more"
    assert c.p < PLAN.alpha and c.p_is == "p (non-superiority, largest)"
    slightly = verdicts.no_variant_better(paired_study({**worse_or_equal, "fgr": -DELTA / 2}, TIGHT), VARIANTS, "nll", PLAN)
    assert slightly.verdict == SUPPORTED  # better, but by less than δ: not what the claim is about
    c = verdicts.no_variant_better(paired_study({**worse_or_equal, "fgr": -3 * DELTA}, TIGHT), VARIANTS, "nll", PLAN)
    assert c.verdict == CONTRADICTED and c.reason == f"FGR is better than vanilla by more than δ = {DELTA:g}"
    assert c.measure == "FGR − vanilla" and c.effect == pytest.approx(-3 * DELTA, abs=0.01) and c.high < -DELTA


def test_nfg_and_noaf_hurt_most():
    paper = {"vanilla": 0.0, "nig": 0.15, "nfg": 0.6, "nog": 0.1, "niaf": 0.1, "noaf": 0.5, "cifg": 0.0, "np": 0.0,
             "fgr": 0.1}
    c = verdicts.hurt_most(paired_study(paper, TIGHT), ["nfg", "noaf"], VARIANTS, "nll", PLAN)
    assert c.verdict == SUPPORTED
    assert c.reason == "NFG and NOAF are each worse than vanilla and than every other variant"
    assert c.measure == "NOAF − vanilla" and c.effect == pytest.approx(0.5, abs=0.01)
    assert "NFG 1 (1–1)" in c.detail and "NOAF 2 (2–2)" in c.detail
    c = verdicts.hurt_most(paired_study({**paper, "nog": 0.55}, TIGHT), ["nfg", "noaf"], VARIANTS, "nll", PLAN)
    assert c.verdict == CONTRADICTED and c.reason == "NOG is worse than NOAF"
    assert c.p < PLAN.alpha and c.p_is == "Holm p (against the claim, smallest)"


def test_the_claims_about_cells_by_name_in_paper_findings():
    df = paired_study({"vanilla": 0.0, **{v: 0.0 for v in VARIANTS}, "nfg": 0.6, "noaf": 0.5, "nig": 0.5}, TIGHT)
    rows = odyssey.comparison_findings(df, "jsb_chorales", "nll", PLAN)
    assert [r["finding"] for r in rows] == [odyssey.CLAIMS[k] for k in
                                           ("no_variant_better", "nfg_noaf_hurt_most", "cifg_np_no_difference")]
    assert [r["verdict"] for r in rows] == [SUPPORTED, INCONCLUSIVE, SUPPORTED]
    assert rows[1]["reason"] == "NOAF is not shown worse than NIG"  # both +0.5: neither shown worse
    assert rows[0]["test"] == ("Wilcoxon signed-rank test with the Hodges–Lehmann estimate and its interval; δ = 0.05; "
                               "all pairs")


def test_each_cell_beyond_the_paper_is_judged_to_match_the_reference_on_its_own():
    """A tight null supported, a harm and a gain of 3δ contradicted (beyond δ either way), a noisy null
    inconclusive; each by its own TOST (scipy's signed-rank test on the pairs shifted by ±δ), with its arms' capped
    shares and its size."""
    df = paired_study({"vanilla": 0.0, "min_gru": 0.0, "min_lstm": 3 * DELTA, "indrnn": -3 * DELTA}, TIGHT)
    noisy = paired_study({"vanilla": 0.0, "janet": 0.0}, NOISY, seed=1).assign(study="jsb2", task="other")
    df = pd.concat([df, noisy], ignore_index=True)
    df["stopped_by"] = np.where(df["trial"] < 10, "epoch_cap", "early_stopping")  # a quarter of each arm capped
    df["num_parameters"] = df["cell"].map({"vanilla": 400, "min_gru": 100, "min_lstm": 150, "indrnn": 50, "janet": 200})
    table = odyssey.matches_reference(df, PLAN)
    assert dict(zip(zip(table["task"], table["cell"]), table["verdict"])) == {
        ("jsb_chorales", "indrnn"): CONTRADICTED, ("jsb_chorales", "min_gru"): SUPPORTED,
        ("jsb_chorales", "min_lstm"): CONTRADICTED, ("other", "janet"): INCONCLUSIVE}
    row = table.set_index("cell").loc["min_gru"]
    jsb = df[df["task"] == "jsb_chorales"]
    pairs = (jsb[jsb["cell"] == "min_gru"].sort_values("trial")["test_nll"].to_numpy()
             - jsb[jsb["cell"] == "vanilla"].sort_values("trial")["test_nll"].to_numpy())
    tost = max(stats.wilcoxon(pairs - DELTA, alternative="less").pvalue,
               stats.wilcoxon(pairs + DELTA, alternative="greater").pvalue)
    assert row["p"] == pytest.approx(tost, rel=1e-6) and row["claim"] == f"min_gru matches vanilla within δ = {DELTA:g}"
    assert row["effect"] == pytest.approx(float(np.median(walsh_averages(pairs))), abs=1e-12)
    assert row["capped"] == row["capped_reference"] == 0.25 and row["num_parameters"] == 100
    assert table.set_index("cell").loc["indrnn", "high"] < -DELTA  # shown better by more than δ: not a match


# -- the claims about hyperparameters ------------------------------------------------------------------------
def test_best_lr_is_the_median_lr_of_the_best_quarter():
    x = np.array([-5.0, -4.0, -3.5, -3.0, -2.5, -2.0, -1.0, -4.5])
    y = np.array([5.0, 3.0, 1.2, 1.0, 1.1, 2.0, 6.0, 4.0])
    assert bootstrap.best_lr(x, y) == -3.0  # a quarter of 8 is 2, at least 3: -3 (1.0), -2.5 (1.1), -3.5 (1.2)
    assert bootstrap.best_lr(x, y, share=0.5) == -2.75  # the best 4 add -2 (2.0): median of -3.5, -3, -2.5, -2
    x20 = np.linspace(-5, -1, 20)
    y20 = (x20 + 2.2) ** 2  # best five: the five lrs nearest 10^-2.2
    nearest = np.sort(x20[np.argsort(np.abs(x20 + 2.2))[:5]])
    assert bootstrap.best_lr(x20, y20) == pytest.approx(nearest[2])
    assert bootstrap.best_lr(x[:2], y[:2]) == pytest.approx(-4.5)  # fewer than 3: all of them
    assert math.isnan(bootstrap.best_lr(np.array([]), np.array([])))


def lr_grid_study(move: float, noise: float = 0.01) -> pd.DataFrame:
    """A paired study on a grid: 3 hidden sizes × 41 learning rates from 1e-5 to 1e-1; the NLL is a parabola in
    log10 lr whose vertex moves by `move` decades from the smallest to the largest hidden size."""
    rng = np.random.default_rng(0)
    rows = []
    grid = [(h, x) for h in (20, 60, 200) for x in np.linspace(-5, -1, 41)]
    vertex = {20: -3 - move / 2, 60: -3.0, 200: -3 + move / 2}
    for cell, effect in (("vanilla", 0.0), ("nfg", 0.3)):
        for k, (h, x) in enumerate(grid):
            y = 8.5 + 0.4 * (x - vertex[h]) ** 2 + effect + noise * rng.normal()
            rows.append({"study": "grid", "trial": k, "status": "ok", "cell": cell, "task": "jsb_chorales", "metric": "nll",
                         "test_nll": y, "val_nll": y, "optim.lr": float(10**x), "model.hidden_size": h})
    return analysis.prepare(pd.DataFrame(rows))


def test_the_lr_shift_claim():
    plan = AnalysisConfig(bootstrap=100)
    still = bootstrap.lr_shift_claim(lr_grid_study(0.0), plan)
    assert still.verdict == SUPPORTED and still.reason == f"the shift lies within ±{plan.lr_shift:g} decades"
    assert still.effect == pytest.approx(0.0, abs=1e-9) and -plan.lr_shift < still.low <= still.high < plan.lr_shift
    assert still.measure == "optimum's shift, hidden 20 → 200 (decades)" and still.n == 123
    moved = bootstrap.lr_shift_claim(lr_grid_study(2.0), plan)
    assert moved.verdict == CONTRADICTED and moved.reason == f"the optimum moves by more than {plan.lr_shift:g} decades"
    assert moved.effect == pytest.approx(2.0, abs=1e-9) and moved.low >= plan.lr_shift
    none = bootstrap.lr_shift_claim(lr_grid_study(0.0), AnalysisConfig(bootstrap=0))
    assert none.verdict == INCONCLUSIVE and "analysis.bootstrap=0" in none.reason


# -- seed noise ----------------------------------------------------------------------------------------------
def test_the_best_configuration_over_seeds_is_chosen_by_validation_and_spread_over_its_seeds():
    """Configuration 1 has the better mean validation NLL but the worse test NLL: it is the one reported, with the
    mean, sd, min and max of its test NLL over its 3 seeds; a configuration run under one seed never counts."""
    runs = {  # configuration (trial) -> seeds' (validation, test) NLL
        0: [(8.5, 8.0), (8.6, 8.3), (8.4, 8.1)],
        1: [(8.2, 9.0), (8.3, 9.6), (8.1, 9.3)],
        2: [(7.0, 7.0)],  # one seed: no spread to give
    }
    rows = [{"study": "seeds", "trial": k, "status": "ok", "cell": "vanilla", "task": "jsb_chorales", "metric": "nll",
             "val_nll": v, "test_nll": t, "optim.lr": [1e-3, 1e-2, 1e-1][k], "trainer.seed": seed}
            for k, pairs in runs.items() for seed, (v, t) in enumerate(pairs)]
    best = replicates.best_over_seeds(analysis.prepare(pd.DataFrame(rows))).iloc[0]
    test = np.array([9.0, 9.6, 9.3])
    assert (best["trial"], best["seeds"]) == (1, 3)
    assert best["val_mean"] == pytest.approx(8.2) and best["test_mean"] == pytest.approx(test.mean())
    assert best["test_sd"] == pytest.approx(np.std(test, ddof=1))
    assert (best["test_min"], best["test_max"]) == (pytest.approx(9.0), pytest.approx(9.6))


def test_the_best_configurations_rank_complete_trials_by_their_mean_validation_score():
    """Trial 2 has the best mean over the cells that ran, but its nfg run failed: it never qualifies. The others
    rank by the mean over both cells (a hand-computed order), in the direction of the metric."""
    val = {0: (8.0, 8.4), 1: (7.9, 8.3), 2: (7.0, None), 3: (8.6, 8.0)}  # trial -> vanilla, nfg validation NLL
    rows = [{"study": "s", "trial": k, "status": "ok" if y is not None else "failed", "cell": cell,
             "task": "jsb_chorales", "metric": "nll", "val_nll": y, "test_nll": y, "optim.lr": 10.0 ** -k,
             "model.hidden_size": 20 + k}
            for k, ys in val.items() for cell, y in zip(("vanilla", "nfg"), ys)]
    keys = {"optim.lr": "loguniform", "model.hidden_size": "int"}
    best = replicates.best_configurations(analysis.prepare(pd.DataFrame(rows)), keys, top=2)
    assert best["trial"].tolist() == [1, 0]  # means 8.1, 8.2, then 8.3 (trial 3)
    assert best["mean_val"].tolist() == pytest.approx([8.1, 8.2])
    assert yaml.safe_load(replicates.configs_yaml(best, keys))["configs"] == [
        {"optim.lr": 0.1, "model.hidden_size": 21}, {"optim.lr": 1.0, "model.hidden_size": 20}]
    accuracy = analysis.prepare(pd.DataFrame(rows).assign(metric="accuracy").rename(
        columns={"val_nll": "val_accuracy", "test_nll": "test_accuracy"}))
    assert replicates.best_configurations(accuracy, keys, top=3)["trial"].tolist() == [3, 0, 1]
    two_tasks = analysis.prepare(pd.DataFrame(rows + [{**rows[0], "task": "adding"}]))
    with pytest.raises(ValueError, match="2 tasks"):
        replicates.best_configurations(two_tasks, keys, top=2)


def test_the_best_configurations_by_cell_rank_each_cells_own_ok_runs():
    """By cell, each cell keeps its own best trials (vanilla's trial 2 with its lowest NLL, though nfg's run of
    trial 2 failed), in the metric's direction, listed under the cell as a study of configurations by cell reads
    them (sweep.configs: {cell: [...]})."""
    val = {0: (8.0, 8.4), 1: (7.9, 8.3), 2: (7.0, None), 3: (8.6, 8.0)}  # trial -> vanilla, nfg validation NLL
    rows = [{"study": "s", "trial": k, "status": "ok" if y is not None else "failed", "cell": cell,
             "task": "jsb_chorales", "metric": "nll", "val_nll": y, "test_nll": y, "optim.lr": 10.0 ** -k,
             "model.hidden_size": 20 + k}
            for k, ys in val.items() for cell, y in zip(("nfg", "vanilla"), ys[::-1])]
    keys = {"optim.lr": "loguniform", "model.hidden_size": "int"}
    best = replicates.best_configurations_by_cell(analysis.prepare(pd.DataFrame(rows)), keys, top=2)
    assert best[["cell", "trial"]].values.tolist() == [["vanilla", 2], ["vanilla", 1], ["nfg", 3], ["nfg", 1]]
    assert best["val"].tolist() == pytest.approx([7.0, 7.9, 8.0, 8.3])
    assert yaml.safe_load(replicates.configs_yaml(best, keys))["configs"] == {
        "vanilla": [{"optim.lr": 0.01, "model.hidden_size": 22}, {"optim.lr": 0.1, "model.hidden_size": 21}],
        "nfg": [{"optim.lr": 0.001, "model.hidden_size": 23}, {"optim.lr": 0.1, "model.hidden_size": 21}]}
    accuracy = analysis.prepare(pd.DataFrame(rows).assign(metric="accuracy").rename(
        columns={"val_nll": "val_accuracy", "test_nll": "test_accuracy"}))
    assert replicates.best_configurations_by_cell(accuracy, keys, top=1)["trial"].tolist() == [3, 0]


def test_best_configurations_of_a_folder_that_is_no_study_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        replicates.main(["--best", "3", str(tmp_path)])
    assert stop.value.code == 2 and "multirun.yaml not found" in capsys.readouterr().err


def test_seed_noise_is_the_pooled_within_configuration_sd():
    values = {  # cell -> configuration (trial) -> the test NLL of seeds 0, 1, 2
        "vanilla": {0: [8.0, 8.3, 8.1], 1: [9.0, 9.6, 9.3]},
        "nfg": {0: [8.4, 8.5, 8.9], 1: [9.2, 9.9, 9.4]},
    }
    rows = [{"study": "seeds", "trial": k, "status": "ok", "cell": cell, "task": "jsb_chorales", "metric": "nll",
             "test_nll": y, "val_nll": y, "optim.lr": [1e-3, 1e-2][k], "trainer.seed": seed}
            for cell, configs in values.items() for k, ys in configs.items() for seed, y in enumerate(ys)]
    noise = replicates.seed_noise(analysis.prepare(pd.DataFrame(rows)), AnalysisConfig()).set_index("cell")

    def pooled(groups: list[np.ndarray]) -> float:
        return math.sqrt(sum((len(g) - 1) * np.var(g, ddof=1) for g in groups) / sum(len(g) - 1 for g in groups))

    for cell in ("vanilla", "nfg"):
        assert noise.loc[cell, "sd_seed"] == pytest.approx(pooled([np.array(v) for v in values[cell].values()]))
        assert (noise.loc[cell, "configurations"], noise.loc[cell, "seeds"]) == (2, 3)
        assert noise.loc[cell, "margin"] == DELTA
    diffs = [np.array(values["nfg"][k]) - np.array(values["vanilla"][k]) for k in (0, 1)]
    assert noise.loc["nfg", "sd_seed_diff"] == pytest.approx(pooled(diffs))
    assert math.isnan(noise.loc["vanilla", "sd_seed_diff"])
    versions = replicates.commits(pd.DataFrame(rows).assign(git_commit=["abcdef0123456789"] * 6 + [None] * 6))
    assert versions.to_dict("records") == [{"commit": "abcdef0123", "runs": 6, "cells": "vanilla"},
                                           {"commit": "unknown", "runs": 6, "cells": "nfg"}]


# -- the analysis plan ---------------------------------------------------------------------------------------
def test_load_plan_reads_the_studys_multirun_yaml_and_overrides(tmp_path):
    assert load_plan() == AnalysisConfig() and load_plan([tmp_path]) == AnalysisConfig()  # no multirun.yaml
    (tmp_path / "multirun.yaml").write_text("hydra:\n  mode: MULTIRUN\nsweep:\n  paired: true\n")
    assert load_plan([tmp_path]) == AnalysisConfig()  # a study that set no plan
    (tmp_path / "multirun.yaml").write_text("sweep:\n  paired: true\nanalysis:\n  margin:\n    nll: 0.1\n")
    plan = load_plan([tmp_path])
    assert plan == dataclasses.replace(AnalysisConfig(), margin={**MARGINS, "nll": 0.1})  # that key only
    assert load_plan([tmp_path], ["alpha=0.01"]) == dataclasses.replace(plan, alpha=0.01)
    assert load_plan([tmp_path], ["analysis.alpha=0.01", "margin.nll=0.2"]).margin == {**MARGINS, "nll": 0.2}
    assert load_plan([], ["primary=t", "bootstrap=0"]) == AnalysisConfig(primary="t", bootstrap=0)


@pytest.mark.parametrize("override, words", [
    ("alpah=0.01", "analysis.alpah is not a key of analysis"),
    ("alpha=0.7", "analysis.alpha=0.7 is not allowed"),
    ("primary=z", "analysis.primary=z is not allowed"),
    ("min_pairs=1", "analysis.min_pairs=1 is not allowed"),
])
def test_a_bad_plan_key_or_value_is_one_config_error_line(tmp_path, override, words):
    with pytest.raises(ConfigError) as bad:
        load_plan([], [override])
    assert words in str(bad.value) and "\n" not in str(bad.value)
    key, value = override.split("=")
    (tmp_path / "multirun.yaml").write_text(f"analysis:\n  {key}: {value}\n")
    with pytest.raises(ConfigError, match=words.split(" is ")[0]):
        load_plan([tmp_path])


# -- the significance table ----------------------------------------------------------------------------------
def test_significance_keeps_every_cell_in_every_subset_counts_missing_trials_and_keeps_failed_runs():
    df = paired_study({"vanilla": 0.0, "nfg": 0.3, "cifg": 0.0, "np": 0.0}, TIGHT)
    df = df[~(((df["cell"] == "vanilla") & (df["trial"] == 5)) | ((df["cell"] == "nfg") & (df["trial"] == 7)))]
    crashed = (df["cell"] == "cifg") & (df["trial"] == 9)
    df = analysis.prepare(df.drop(columns=["ok", "pair", "val_score", "test_score"]).assign(
        status=df["status"].where(~crashed, "failed"), test_nll=df["test_nll"].where(~crashed)))
    sig = analysis.significance(df, PLAN)
    assert list(sig.columns) == compare.COLUMNS
    subsets = list(dict.fromkeys(sig["subset"]))
    assert subsets[:3] == ["all", "top pairs", "top own"]
    assert any(s.startswith("lr 1e") for s in subsets) and any(s.startswith("hidden ") for s in subsets)
    for subset in subsets:
        assert list(sig.loc[sig["subset"] == subset, "cell"]) == ["nfg", "cifg", "np"], subset
    primary = sig[sig["subset"] == "all"].set_index("cell")
    # vanilla lacks trial 5 and nfg trial 7: nfg misses two pairs, cifg and np one; cifg's crashed run keeps its pair
    assert primary["n_missing"].to_dict() == {"nfg": 2, "cifg": 1, "np": 1}
    assert primary["n"].to_dict() == {"nfg": 38, "cifg": 39, "np": 39}
    assert primary["n_failed"].to_dict() == {"nfg": 0, "cifg": 1, "np": 0}
    assert primary.loc["cifg", "losses"] >= 1 and np.isfinite(primary.loc["cifg", "diff"])
    assert primary.loc["nfg", "verdict"] == "worse" and primary.loc["nfg", "equivalence"] == "beyond δ"
    assert primary.loc["np", "equivalence"] == "within δ"
    assert sig.loc[sig["subset"] != "all", "n_missing"].isna().all()  # counted once, on all pairs
    top = sig[sig["subset"] == "top pairs"].set_index("cell")
    assert (top["n_failed"] == 0).all()  # a failed run is never among the best pairs
    strata = sig[sig["subset"].str.startswith("lr 1e")].groupby("cell")["n"].sum()
    assert strata.to_dict() == primary["n"].to_dict()  # the decades split all pairs


def test_reruns_pair_runs_by_hyperparameters_and_seed_whatever_their_study_or_trial():
    """A rerun matches its original by cell, hyperparameters and seed, not by study or trial index; a
    hyperparameter only the newer records carry counts as its default in the older ones."""
    def runs(study, trials, nll, extra=None):
        return pd.DataFrame([{"study": study, "trial": k, "status": "ok", "cell": "vanilla", "task": "jsb_chorales",
                              "metric": "nll", "val_nll": v, "test_nll": v, "optim.lr": lr, "trainer.seed": 0,
                              "git_commit": study, **(extra or {})} for k, lr, v in zip(trials, (1e-3, 2e-3), nll)])

    old = runs("old", (41, 15), (8.5, 8.6))
    new = runs("new", (0, 1), (8.5, 8.75), {"model.output_dropout": 0.0})
    table = replicates.reruns(new, old).sort_values("test_before")
    assert table["difference"].tolist() == pytest.approx([0.0, 0.15])
    assert table["commit"].tolist() == ["new", "new"] and table["commit_before"].tolist() == ["old", "old"]
    assert replicates.reruns(new.assign(**{"trainer.seed": 1}), old).empty  # another seed is no rerun


def test_a_bad_plan_on_the_command_line_is_one_line_and_exit_code_2(tmp_path, capsys):
    from lstm_odyssey.analysis.report import main as report

    assert report([str(tmp_path), "--plan", "margn.nll=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["lstm-odyssey-report: analysis.margn is not a key of analysis; known keys: alpha, bootstrap, "
                   "bootstrap_trees, by_far, confidence, hardly, independent, lr_shift, margin, min_pairs, primary, "
                   "reference, seed, top_fraction"]
    with pytest.raises(SystemExit) as exit_:
        odyssey.main([f"x={tmp_path}", "--plan", "alpha=2"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "analysis.alpha=2 is not allowed: must be a number in (0, 0.5)")
