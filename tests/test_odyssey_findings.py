"""The paper's findings as verdicts (analysis/odyssey.py) on planted studies: each claim comes out supported
when the planted effects show it at the plan's margin, contradicted when they show the opposite, and inconclusive
(with the reason) when the study cannot answer it; the numbers quoted are the primary test's (checked against
scipy)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lstm_odyssey import analysis
from lstm_odyssey.analysis import bootstrap, inference, odyssey
from lstm_odyssey.analysis.text import fmt
from lstm_odyssey.analysis.verdicts import CONTRADICTED, INCONCLUSIVE, SUPPORTED
from lstm_odyssey.cells import get_spec
from lstm_odyssey.schema import AnalysisConfig

CELLS = ("vanilla", *odyssey.VARIANTS)
PAPER = {"vanilla": 0.0, "nig": 0.15, "nfg": 0.6, "nog": 0.1, "niaf": 0.1, "noaf": 0.5, "cifg": 0.0, "np": 0.0, "fgr": 0.1}
FAST = AnalysisConfig(bootstrap=20)  # the default plan with 20 bootstrap resamples instead of 200: the same claims, quicker
CELLS_ONLY = AnalysisConfig(bootstrap=0)  # no bootstrap: the claims about hyperparameters are skipped (inconclusive)
DELTA = FAST.margin["nll"]


def jsb_study(effects: dict[str, float], n_trials: int = 40, momentum_effect: float = 0.0, interaction: float = 0.0,
              shift: float = 0.0, momentum: bool = True, seed: int = 0) -> pd.DataFrame:
    """A paired JSB-like study: trial k draws lr, hidden size, momentum and noise shared by every cell; the
    test NLL is a parabola in log10 lr around 10^-3 (whose vertex moves by `shift` decades between small and
    large hidden sizes), plus `momentum_effect` x momentum, an lr x noise `interaction`, the cell's effect and
    a little noise."""
    rng = np.random.default_rng(seed)
    log_lr = rng.uniform(-5, -1, n_trials)
    hidden = np.exp(rng.uniform(np.log(20), np.log(200), n_trials)).astype(int)
    mom = 1 - 10 ** rng.uniform(-2, 0, n_trials)
    noise = rng.uniform(0, 1, n_trials)
    vertex = -3 + shift * (hidden > 60)
    base = 8.5 + 0.4 * (log_lr - vertex) ** 2 + momentum_effect * mom + interaction * (log_lr + 3) * (noise - 0.5)
    rows = []
    for cell, effect in effects.items():
        flags = {f"cell.{k}": v for k, v in dataclasses.asdict(get_spec(cell)).items()}
        for k in range(n_trials):
            y = base[k] + effect + 0.03 * rng.normal()
            row = {"study": "jsb", "trial": k, "status": "ok", "cell": cell, "task": "jsb_chorales", "metric": "nll",
                   "test_nll": y, "val_nll": y + 0.01 * rng.normal(), "objective": y, "optim.lr": float(10 ** log_lr[k]),
                   "model.hidden_size": int(hidden[k]), "trainer.input_noise": float(noise[k]), "trainer.seed": 0,
                   "cell.name": cell, **flags, "stopped_by": ["early_stopping", "plateau", "epoch_cap"][k % 3],
                   "num_parameters": 1000, "wall_seconds": 1.0, "run_dir": f"/sweep/jsb/{cell}/{k:03d}"}
            if momentum:
                row["optim.momentum"] = float(mom[k])
            rows.append(row)
    return analysis.prepare(pd.DataFrame(rows))


def findings(df: pd.DataFrame, plan: AnalysisConfig = FAST) -> pd.DataFrame:
    """`paper_findings` by a plan with fewer bootstrap resamples than the default: the planted effects are
    strong, and the tests stay quick."""
    return odyssey.paper_findings(df, plan)


def claim(found: pd.DataFrame, key: str) -> pd.Series:
    assert list(found["finding"]) == list(odyssey.CLAIMS.values())  # every claim, in the paper's order
    return found.set_index("finding").loc[odyssey.CLAIMS[key]]


def runs(df: pd.DataFrame, cell: str) -> np.ndarray:
    return df[df["cell"] == cell].sort_values("trial")["test_nll"].to_numpy()


def walsh_median(d: np.ndarray) -> float:
    """The Hodges–Lehmann estimate by its definition: the median of every (d_i + d_j) / 2 with i <= j."""
    return float(np.median([(d[i] + d[j]) / 2 for i in range(len(d)) for j in range(i, len(d))]))


@pytest.fixture(scope="module")
def paper_like() -> pd.DataFrame:
    return jsb_study(PAPER)


@pytest.fixture(scope="module")
def paper_like_found(paper_like) -> pd.DataFrame:
    return findings(paper_like)


@pytest.mark.slow
def test_a_study_that_behaves_like_the_paper_supports_every_claim_it_can_answer(paper_like_found):
    assert list(paper_like_found["finding"]) == list(odyssey.CLAIMS.values())
    assert list(paper_like_found.columns) == odyssey.FINDING_COLUMNS
    shift = odyssey.CLAIMS["hidden_does_not_shift_lr"]
    others = paper_like_found[paper_like_found["finding"] != shift]
    assert set(others["verdict"]) == {SUPPORTED}, others[["finding", "verdict", "reason"]]
    # 40 trials in three hidden-size groups cannot show that the optimum stays within ±0.5 decades: "no shift
    # found" is not "no shift shown" (test_verdicts.py plants a study that can show it)
    row = claim(paper_like_found, "hidden_does_not_shift_lr")
    assert row["verdict"] == INCONCLUSIVE
    assert row["reason"] == f"the interval reaches beyond ±{FAST.lr_shift:g} decades without lying beyond them"
    assert row["low"] < -FAST.lr_shift < row["high"] or row["low"] < FAST.lr_shift < row["high"]
    assert row["interval"] == "90% bootstrap interval"


def test_the_comparison_numbers_are_the_primary_rank_test(paper_like, paper_like_found):
    row = claim(paper_like_found, "nfg_noaf_hurt_most")
    # the claim quotes the weaker of the two (NOAF, +0.5): its Hodges–Lehmann estimate against vanilla and interval
    d = runs(paper_like, "noaf") - runs(paper_like, "vanilla")
    hl = inference.paired_shift(d)
    assert row["measure"] == "NOAF − vanilla" and row["n"] == 40 and row["interval"] == "95% CI"
    assert row["effect"] == pytest.approx(walsh_median(d))
    assert (row["low"], row["high"]) == (pytest.approx(hl.low), pytest.approx(hl.high))
    # ... the same numbers as the all-pairs row of the significance table
    sig = analysis.significance(paper_like, FAST, subsets=("all",)).set_index("cell").loc["noaf"]
    assert (sig["diff"], sig["ci_low"], sig["ci_high"]) == (pytest.approx(row["effect"]), pytest.approx(row["low"]),
                                                             pytest.approx(row["high"]))
    # p: the largest one-sided signed-rank p of "NFG (NOAF) is worse than vanilla and than each other variant"
    others = ["vanilla"] + [v for v in odyssey.VARIANTS if v not in ("nfg", "noaf")]
    by_hand = max(stats.wilcoxon(runs(paper_like, s) - runs(paper_like, o), alternative="greater").pvalue
                  for s in ("nfg", "noaf") for o in others)
    assert row["p"] == pytest.approx(by_hand, rel=1e-9) and row["p_is"] == "p (largest of the one-sided tests)"
    assert f"NOAF − vanilla {walsh_median(d):+.3g} (95% CI {hl.low:+.3g} to {hl.high:+.3g}, n = 40)" in row["detail"]
    assert f"NFG − vanilla {walsh_median(runs(paper_like, 'nfg') - runs(paper_like, 'vanilla')):+.3g} (95% CI" in row["detail"]
    assert "rank of the harm among the variants (1 = worst; bootstrap 95 % interval): NIG " in row["detail"]
    assert "NFG 1 (1–1)" in row["detail"] and "NOAF 2 (2–2)" in row["detail"]
    # "no difference": the larger of the two TOST p-values at ±δ, each the larger of two one-sided signed-rank tests
    row = claim(paper_like_found, "cifg_np_no_difference")
    tost = {c: max(stats.wilcoxon(runs(paper_like, c) - runs(paper_like, "vanilla") + DELTA, alternative="greater").pvalue,
                   stats.wilcoxon(runs(paper_like, c) - runs(paper_like, "vanilla") - DELTA, alternative="less").pvalue)
            for c in ("cifg", "np")}
    assert row["p"] == pytest.approx(max(tost.values()), rel=1e-9) and row["p_is"] == "p (TOST, largest)"
    assert row["measure"] == f"{max(tost, key=tost.get).upper()} − vanilla"


def test_a_better_variant_and_a_different_cifg_contradict_the_paper():
    found = findings(jsb_study({**PAPER, "cifg": -0.3}), CELLS_ONLY)
    better, same = claim(found, "no_variant_better"), claim(found, "cifg_np_no_difference")
    assert better["verdict"] == CONTRADICTED and better["reason"] == f"CIFG is better than vanilla by more than δ = {DELTA:g}"
    assert better["p_is"] == "Holm p (better by > δ)" and better["p"] < FAST.alpha
    assert same["verdict"] == CONTRADICTED and same["reason"] == f"CIFG differs from vanilla by more than δ = {DELTA:g}"
    assert same["effect"] == pytest.approx(-0.3, abs=0.02)
    assert claim(found, "nfg_noaf_hurt_most")["verdict"] == SUPPORTED


def test_nfg_and_noaf_must_be_the_two_worst():
    row = claim(findings(jsb_study({**PAPER, "nig": 0.55}), CELLS_ONLY), "nfg_noaf_hurt_most")  # NIG hurts more than NOAF
    assert row["verdict"] == CONTRADICTED and row["reason"] == "NIG is worse than NOAF"


@pytest.mark.slow
def test_momentum_that_matters_and_a_shifted_optimum_contradict_the_paper():
    found = findings(jsb_study(PAPER, momentum_effect=3.0, shift=1.5))
    assert claim(found, "momentum_hardly_matters")["verdict"] == CONTRADICTED
    assert claim(found, "momentum_hardly_matters")["low"] >= FAST.hardly
    assert claim(found, "lr_most_important")["verdict"] == CONTRADICTED  # momentum now matters more than lr
    row = claim(found, "hidden_does_not_shift_lr")
    assert row["verdict"] == CONTRADICTED and row["low"] >= FAST.lr_shift
    assert row["reason"] == f"the optimum moves by more than {FAST.lr_shift:g} decades"


@pytest.mark.slow
def test_without_momentum_or_with_few_trials_the_verdict_is_inconclusive():
    found = findings(jsb_study(PAPER, momentum=False))  # an Adam protocol has no momentum to vary
    assert claim(found, "momentum_hardly_matters")["verdict"] == INCONCLUSIVE
    assert claim(found, "momentum_hardly_matters")["reason"].startswith("this protocol has no momentum to vary")
    assert claim(found, "lr_most_important")["verdict"] == SUPPORTED
    small = findings(jsb_study(PAPER, n_trials=6))
    for key in ("no_variant_better", "nfg_noaf_hurt_most", "cifg_np_no_difference"):
        row = claim(small, key)
        assert row["verdict"] == INCONCLUSIVE
        assert row["reason"].startswith("too few pairs: ") and f"(the plan needs {FAST.min_pairs})" in row["reason"]
    fifteen = findings(jsb_study(PAPER, n_trials=15))  # enough pairs, too few runs for fANOVA
    assert claim(fifteen, "nfg_noaf_hurt_most")["verdict"] == SUPPORTED
    assert claim(fifteen, "lr_most_important")["verdict"] == INCONCLUSIVE
    assert f"at least {bootstrap.MIN_RUNS} ok runs" in claim(fifteen, "lr_most_important")["reason"]
    only_two = findings(jsb_study({"vanilla": 0.0, "nfg": 0.5}), CELLS_ONLY)
    assert claim(only_two, "nfg_noaf_hurt_most")["verdict"] == INCONCLUSIVE
    assert claim(only_two, "nfg_noaf_hurt_most")["reason"] == "the study lacks NFG or NOAF"
    assert claim(only_two, "cifg_np_no_difference")["reason"] == "the study lacks CIFG or NP"


@pytest.mark.slow
def test_strong_interactions_leave_independence_inconclusive():
    found = claim(findings(jsb_study({c: 0.0 for c in CELLS}, interaction=4.0)), "nearly_independent")
    assert found["verdict"] == INCONCLUSIVE and found["effect"] < FAST.independent and found["low"] < FAST.independent
    assert "cannot contradict the claim" in found["reason"]  # this fANOVA cannot tell interactions from noise


def test_best_by_validation_picks_the_run_with_the_best_validation_score(paper_like):
    best = odyssey.best_by_validation(paper_like)
    ours = best[~best["published"]].set_index("cell")
    for cell in CELLS:
        g = paper_like[paper_like["cell"] == cell]
        assert ours.loc[cell, "best_test"] == g.loc[g["val_nll"].idxmin(), "test_nll"]
        assert ours.loc[cell, "capped"] == pytest.approx((g["stopped_by"] == "epoch_cap").mean())
        assert ours.loc[cell, "plateau"] == pytest.approx((g["stopped_by"] == "plateau").mean())
    assert dict(best.loc[best["published"], ["cell", "best_test"]].values) == odyssey.PUBLISHED_JSB


@pytest.mark.slow
def test_the_markdown_tables_quote_every_protocol(paper_like, paper_like_found):
    found = paper_like_found
    adam = findings(jsb_study(PAPER, momentum=False, seed=1))
    table = odyssey.findings_markdown({"paper": found, "adam": adam})
    lines = table.splitlines()
    assert lines[0] == "| finding | paper | adam |" and len(lines) == 2 + len(odyssey.CLAIMS)
    momentum = next(line for line in lines if line.startswith("| momentum"))
    assert momentum.count(f"**{SUPPORTED}**") == 1 and f"**{INCONCLUSIVE}**: this protocol has no momentum" in momentum
    # each cell: the verdict, its reason, the effect with its named interval, n, and what the p is
    row = found[found["finding"] == odyssey.CLAIMS["cifg_np_no_difference"]].iloc[0]
    cifg = next(line for line in lines if line.startswith("| CIFG and NP"))
    assert (f"| **{SUPPORTED}**: {row['reason']} ({row['measure']} {fmt(row['effect'])} ({row['interval']} "
            f"{fmt(row['low'])} to {fmt(row['high'])}), n = 40, p (TOST, largest) = {fmt(row['p'])}) |") in cifg
    assert row["interval"] == "95% CI" and row["measure"] in ("CIFG − vanilla", "NP − vanilla")
    # the claims about hyperparameters carry bootstrap intervals and no p
    shift = found[found["finding"] == odyssey.CLAIMS["hidden_does_not_shift_lr"]].iloc[0]
    line = next(line for line in lines if line.startswith("| the hidden size"))
    assert f"**{shift['verdict']}**: {shift['reason']} ({shift['measure']} {fmt(shift['effect'])} (90% bootstrap interval" in line
    assert np.isnan(shift["p"]) and "p = " not in line.split(" | ")[1]
    assert "(90% bootstrap interval " in next(line for line in lines if line.startswith("| the learning rate"))
    best = odyssey.best_markdown({"paper": odyssey.best_by_validation(paper_like)})
    assert "| LSTM (Bai et al. 2018) | 8.45 |" in best and best.count("\n") == 1 + len(CELLS) + len(odyssey.PUBLISHED_JSB)


@pytest.mark.slow
def test_the_report_of_an_odyssey_study_leads_with_the_findings(tmp_path, paper_like):
    from lstm_odyssey.analysis import write_report

    runs_table = tmp_path / "runs.csv"
    paper_like.to_csv(runs_table, index=False)
    text = write_report([runs_table], tmp_path / "report", plan=FAST).read_text()
    assert text.index("## Analysis plan") < text.index("## The paper's findings") < text.index("## Design")
    table = pd.read_csv(tmp_path / "report" / "tables" / "paper_findings.csv")
    assert list(table["finding"]) == list(odyssey.CLAIMS.values()) and "plateau rule judges a slow learner" in text
    assert list(table.columns) == odyssey.FINDING_COLUMNS and table["reason"].notna().all()
    assert (tmp_path / "report" / "tables" / "best_by_validation.csv").is_file()
    # a study without the paper's variants has no such section
    other = paper_like[paper_like["cell"].isin(["vanilla"])].assign(cell=lambda d: d["cell"].where(d["trial"] < 20, "gru"))
    other.to_csv(runs_table, index=False)
    assert "## The paper's findings" not in write_report([runs_table], tmp_path / "other", plan=FAST).read_text()


@pytest.mark.slow
def test_a_tuned_jsb_study_of_one_cell_reports_its_best_run_beside_the_published_results(tmp_path, paper_like):
    from lstm_odyssey.analysis import write_report

    runs = tmp_path / "runs.csv"
    tuned = paper_like[paper_like["cell"] == "cifg"]
    tuned.to_csv(runs, index=False)
    text = write_report([runs], tmp_path / "tuned").read_text()
    assert "## The paper's findings" not in text and "## Best run per cell by validation" in text
    best = pd.read_csv(tmp_path / "tuned" / "tables" / "best_by_validation.csv")
    ours = best[~best["published"]]
    assert list(ours["cell"]) == ["cifg"]
    assert ours["best_test"].iloc[0] == pytest.approx(tuned.loc[tuned["val_nll"].idxmin(), "test_nll"])
    assert dict(best.loc[best["published"], ["cell", "best_test"]].values) == odyssey.PUBLISHED_JSB
    # on another task there is nothing published to stand beside, and no such section
    tuned.assign(task="adding").to_csv(runs, index=False)
    assert "## Best run per cell by validation" not in write_report([runs], tmp_path / "adding").read_text()


def capped_advantage_study() -> pd.DataFrame:
    """NOAF equals vanilla wherever both converge; on every third trial vanilla is cut off by the cap while
    NOAF converges 1.0 nats lower (a fast learner judged against a slow one at the budget)."""
    df = jsb_study({**PAPER, "noaf": 0.0}, n_trials=60)
    rows = (df["cell"] == "noaf") & (df["trial"] % 3 == 2)
    df.loc[rows, "stopped_by"] = "plateau"
    df.loc[rows, ["test_nll", "val_nll", "objective"]] -= 1.0
    return analysis.prepare(df.drop(columns=["test", "val"], errors="ignore"))


def test_no_subset_is_chosen_by_whether_a_run_hit_the_cap():
    """Whether a run hit the cap is an outcome of training, so no subset is selected by it (the old "converged"
    subset was): the secondary subsets are the best pairs by both runs' validation, each cell's own best runs and
    strata fixed before training; the table says how many of each cell's runs the budget cut off."""
    df = capped_advantage_study()
    sig = analysis.significance(df)
    lr = {s for s in sig["subset"] if s.startswith("lr 1e")}
    hidden = {s for s in sig["subset"] if s.startswith("hidden ")}
    assert set(sig["subset"]) == {"all", "top pairs", "top own"} | lr | hidden and len(lr) == 4 and len(hidden) == 2
    assert all(sorted(g) == sorted(odyssey.VARIANTS) for _, g in sig.groupby("subset")["cell"])
    assert analysis.significance(df, subsets=("converged",)).empty
    noaf = sig[sig["cell"] == "noaf"].set_index("subset").loc["all"]
    own = runs(df, "noaf") - runs(df, "vanilla")
    assert noaf["n"] == 60 and noaf["diff"] == pytest.approx(walsh_median(own)) and noaf["verdict"] == "better"
    assert noaf["epoch_capped"] == 0.0 and noaf["epoch_capped_ref"] == pytest.approx(1 / 3)
    line = next(h for h in analysis.significant_cells(sig) if h.startswith("noaf"))
    assert line.startswith("noaf is significantly better than vanilla on jsb_chorales (Hodges–Lehmann ")
    assert line.endswith("share of ok runs capped by the budget: 0% vs 33%)")


def test_a_verdict_rests_on_all_pairs_whatever_the_capped_runs_did():
    df = capped_advantage_study()
    found = findings(df, CELLS_ONLY)
    sig = analysis.significance(df, CELLS_ONLY, subsets=("all",)).set_index("cell").loc["noaf"]
    row = claim(found, "no_variant_better")
    # NOAF is better than vanilla (p < α), but not shown better by more than δ: the claim is not contradicted
    assert row["verdict"] == INCONCLUSIVE
    assert row["reason"] == f"NOAF's interval reaches below −δ = {-DELTA:g} without lying beyond it"
    assert row["measure"] == "NOAF − vanilla" and row["n"] == 60
    assert (row["effect"], row["low"], row["high"]) == (pytest.approx(sig["diff"]), pytest.approx(sig["ci_low"]),
                                                         pytest.approx(sig["ci_high"]))
    assert "cap" not in row["detail"]  # no second verdict on a subset
    hurt = claim(found, "nfg_noaf_hurt_most")
    assert hurt["verdict"] == CONTRADICTED and hurt["reason"].startswith("NOAF is better than vanilla")


@pytest.mark.slow
def test_the_verdicts_command_prints_one_column_per_protocol(tmp_path, capsys, paper_like):
    """`lstm-odyssey-verdicts NAME=STUDY ...` reads each study's records and prints both README tables."""
    paper_like.to_csv(tmp_path / "paper.csv", index=False)
    paper_like[paper_like["cell"].isin(["vanilla", "cifg"])].to_csv(tmp_path / "cifg.csv", index=False)
    assert odyssey.main([f"paper={tmp_path / 'paper.csv'}", f"two={tmp_path / 'cifg.csv'}", "--plan", "bootstrap=20"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| finding | paper | two |" and "| cell | paper best test (capped) | two best test (capped) |" in lines
    lr = next(line for line in lines if line.startswith("| the learning rate"))
    assert lr.split(" | ")[1].startswith(f"**{SUPPORTED}**")  # the planted parabola in log10 lr
    assert lr.split(" | ")[2].startswith(f"**{INCONCLUSIVE}**: 2 cells have at least")  # two cells: no fANOVA claim
    g = paper_like[paper_like["cell"] == "nig"]
    best = g.loc[g["val_nll"].idxmin()]
    capped = (g["stopped_by"] == "epoch_cap").mean()
    assert f"| nig | {best['test_nll']:.3f} ({capped:.0%}) |  |" in lines  # nig ran under one protocol only


def test_the_verdicts_command_says_what_a_bad_argument_should_be(capsys):
    with pytest.raises(SystemExit) as stop:
        odyssey.main(["results/odyssey_jsb/paper"])
    assert stop.value.code == 2 and "is not NAME=STUDY" in capsys.readouterr().err


def test_a_brief_verdict_cell_keeps_the_verdict_effect_and_interval_and_drops_the_reason():
    """The README's table (`lstm-odyssey-verdicts --brief`): a difference shows its sign, a ratio does not."""
    import pandas as pd

    rows = pd.DataFrame([
        {"finding": odyssey.CLAIMS["no_variant_better"], "verdict": SUPPORTED, "reason": "shown at δ",
         "measure": "NP − vanilla", "effect": 0.01234, "low": -0.02, "high": 0.03, "interval": "95% CI", "n": 50,
         "p": 0.001, "p_is": "p"},
        {"finding": odyssey.CLAIMS["lr_most_important"], "verdict": INCONCLUSIVE, "reason": "needs ≥ 2x",
         "measure": "lr's ratio", "effect": 1.869, "low": 0.631, "high": 4.261, "interval": "90%", "n": 450,
         "p": float("nan"), "p_is": ""},
    ])
    table = odyssey.findings_markdown({"adam": rows}, brief=True).splitlines()
    assert f"| **{SUPPORTED}**: NP − vanilla +0.0123 [-0.02, +0.03] |" in table[2]
    assert table[5].endswith(f"| **{INCONCLUSIVE}**: lr's ratio 1.87 [0.631, 4.26] |")
    assert "shown at δ" not in "\n".join(table) and "shown at δ" in odyssey.findings_markdown({"adam": rows})


def test_the_published_results_stand_only_under_the_protocols_of_their_own_task():
    """JSB's literature numbers (Bai et al.) beside a JSB column, nothing beside a column of another task."""
    import pandas as pd

    jsb = pd.DataFrame([{"cell": "vanilla", "best_test": 8.38, "capped": 0.2, "published": False}]
                       + [{"cell": c, "best_test": v, "capped": float("nan"), "published": True}
                          for c, v in odyssey.PUBLISHED_JSB.items()])
    other = pd.DataFrame([{"cell": "vanilla", "best_test": 0.043, "capped": 0.0, "published": False}])
    lines = odyssey.best_markdown({"jsb": jsb, "uea": other}).splitlines()
    assert "| vanilla | 8.380 (20%) | 0.043 (0%) |" in lines
    for cell, nll in odyssey.PUBLISHED_JSB.items():
        assert f"| {cell} | {nll:.2f} |  |" in lines


def test_a_metric_far_below_one_keeps_its_digits_in_the_best_and_seed_columns():
    """An adding problem's test MSE (1e-5) printed to 3 decimals would read 0.000 for every cell: below 0.01 the
    tables switch to 3 significant digits, a spread following its mean's style, while NLLs keep 3 decimals."""
    import pandas as pd

    adding = pd.DataFrame([{"cell": "vanilla", "best_test": 1.2345e-5, "capped": 1.0, "published": False},
                           {"cell": "janet", "best_test": 0.0, "capped": 0.0, "published": False}])
    jsb = pd.DataFrame([{"cell": "vanilla", "best_test": 8.4, "capped": 0.0, "published": False}])
    lines = odyssey.best_markdown({"jsb": jsb, "adding": adding}).splitlines()
    assert "| vanilla | 8.400 (0%) | 1.23e-05 (100%) |" in lines and "| janet |  | 0.000 (0%) |" in lines
    jsb_match = pd.DataFrame([{"task": "t", "cell": "min_gru", "verdict": SUPPORTED, "effect": 1e-5, "low": -2e-5,
                               "high": 3e-5, "p": 0.01, "capped": 0.0, "capped_reference": 0.1,
                               "num_parameters": 900.0}])
    seeds = pd.DataFrame([{"cell": "min_gru", "seeds": 3, "test_mean": 4.567e-4, "test_sd": 1.234e-4},
                          {"cell": "vanilla", "seeds": 3, "test_mean": 8.4019, "test_sd": 0.0068}])
    table = odyssey.matches_markdown({"adding": jsb_match}, seeds, {"vanilla": 1000.0, "min_gru": 900.0})
    assert "| 4.57e-04 ± 1.23e-04 (3) |" in table and "| 8.402 ± 0.007 (3) |" in table


def test_the_parallel_bootstrap_draws_the_resamples_of_scipys_sequential_one():
    """The fANOVA resamples run in worker processes: every interval must be the one scipy's own one-at-a-time
    bootstrap gives, for one sample (a paired study's trials) and for several (an unpaired study's cells)."""
    x, y = np.random.default_rng(1).lognormal(size=30), np.random.default_rng(2).normal(size=17)
    plan = AnalysisConfig(bootstrap=40, seed=3)

    def one(i):  # a statistic of two values that depends on which rows were drawn, not only on how many
        return np.array([np.median(x[i]), np.max(x[i]) - np.min(x[i])])

    def two(i, j):
        return np.array([np.mean(x[i]) - np.median(y[j])])

    for statistic, samples in ((one, (np.arange(len(x)),)), (two, (np.arange(len(x)), np.arange(len(y))))):
        expected = stats.bootstrap(samples, statistic, n_resamples=40, vectorized=False, method="percentile",
                                   paired=False, random_state=np.random.default_rng(3)).bootstrap_distribution
        low, high = np.quantile(np.atleast_2d(expected), [plan.alpha, 1 - plan.alpha], axis=-1)
        for workers in (1, 2):
            got = bootstrap._interval(statistic, samples, plan, workers)
            np.testing.assert_array_equal(got[0], low)
            np.testing.assert_array_equal(got[1], high)


@pytest.mark.slow
def test_the_importance_claims_do_not_depend_on_the_number_of_workers(paper_like, monkeypatch):
    names = ["model.hidden_size", "optim.lr", "optim.momentum", "trainer.input_noise"]
    claims = {}
    for workers in (1, 2):
        monkeypatch.setattr(bootstrap, "workers_for", lambda plan, n=workers: n)
        claims[workers] = bootstrap.importance_claims(paper_like, names, FAST, is_paired=True, optimiser="sgd")
    assert claims[1] == claims[2] and claims[1]["lr_most_important"].verdict == SUPPORTED


def test_the_matches_table_gives_each_cell_its_verdict_effect_interval_p_and_capped_shares():
    """`lstm-odyssey-verdicts --matches`: one column per study, the cell's median parameter count of the first
    study beside its name, a cell a study lacks left blank."""
    import pandas as pd

    def row(cell, verdict, effect, low, high, p, capped, size):
        return {"task": "t", "cell": cell, "verdict": verdict, "effect": effect, "low": low, "high": high, "p": p,
                "capped": capped, "capped_reference": 0.05, "num_parameters": size}

    jsb = pd.DataFrame([row("min_gru", SUPPORTED, -0.0123, -0.041, 0.0182, 0.00312, 0.0333, 18176.0),
                        row("janet", CONTRADICTED, 0.31, 0.12, 0.5, 0.0004, 0.2, 27936.0)])
    adding = pd.DataFrame([row("min_gru", INCONCLUSIVE, float("nan"), float("nan"), float("nan"), float("nan"),
                               float("nan"), 900.0)])
    lines = odyssey.matches_markdown({"jsb": jsb, "adding": adding}).splitlines()
    assert lines[0] == "| cell | parameters (jsb) | jsb: matches within δ? | adding: matches within δ? |"
    assert lines[2] == (f"| min_gru | 18,176 | **{SUPPORTED}**: -0.0123 [-0.041, +0.0182], p 0.0031; capped 3% (ref 5%) "
                        f"| **{INCONCLUSIVE}** |")
    assert lines[3] == f"| janet | 27,936 | **{CONTRADICTED}**: +0.31 [+0.12, +0.5], p 0.0004; capped 20% (ref 5%) |  |"


def test_the_matches_command_reads_the_committed_first_look_as_its_report_did(capsys):
    """`lstm-odyssey-verdicts --matches first=results/modern_first_look` prints what the study's committed report
    table (tables/matches_reference.csv) says of each cell."""
    import pandas as pd

    study = Path(__file__).resolve().parents[1] / "results" / "modern_first_look"
    assert odyssey.main(["--matches", f"first={study}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    committed = pd.read_csv(study / "report" / "tables" / "matches_reference.csv")
    assert len(committed) == 9
    for _, r in committed.iterrows():
        line = next(x for x in lines if x.startswith(f"| {r['cell']} | "))
        assert f"**{r['verdict']}**: {r['effect']:+.3g} [{r['low']:+.3g}, {r['high']:+.3g}], p {r['p']:.2g}" in line
        assert f"capped {r['capped']:.0%} (ref {r['capped_reference']:.0%})" in line
        assert f"| {r['num_parameters']:,.0f} |" in line


def test_the_matches_table_adds_the_reference_and_each_cells_spread_over_seeds():
    """With the parameter counts of every cell and a seed study's best configurations (`--seeds`), the reference
    gets its row first, and each cell its best configuration's mean ± sd over the seeds."""
    import pandas as pd

    jsb = pd.DataFrame([{"task": "t", "cell": "min_gru", "verdict": SUPPORTED, "effect": 0.01, "low": -0.02,
                         "high": 0.03, "p": 0.01, "capped": 0.0, "capped_reference": 0.1, "num_parameters": 18176.0}])
    seeds = pd.DataFrame([{"cell": "min_gru", "seeds": 3, "test_mean": 8.4123, "test_sd": 0.0211},
                          {"cell": "vanilla", "seeds": 3, "test_mean": 8.4019, "test_sd": 0.0068}])
    lines = odyssey.matches_markdown({"jsb": jsb}, seeds, {"vanilla": 49800.0, "min_gru": 18176.0}).splitlines()
    assert lines[0].endswith("| jsb: matches within δ? | best over seeds (mean ± sd) |")
    assert lines[2] == "| vanilla | 49,800 |  | 8.402 ± 0.007 (3) |"
    assert lines[3].startswith("| min_gru | 18,176 | **supported**") and lines[3].endswith("| 8.412 ± 0.021 (3) |")


def test_the_matches_table_adds_each_cells_cpu_time_over_the_reference_from_a_bench_file(tmp_path, capsys):
    """`--speed BENCH_JSON`: each cell's forward+backward time over vanilla's (torch's nn.LSTM row is the bench's
    reference, not the study's; a second backend of a cell is not its default), beside its parameter count."""
    import json

    rows = [{"cell": "reference", "backend": "nn.LSTM", "fwd_bwd_ms": 50.0},
            {"cell": "vanilla", "backend": "fused", "fwd_bwd_ms": 120.0},
            {"cell": "min_gru", "backend": "fused (scan)", "fwd_bwd_ms": 30.0},
            {"cell": "min_gru", "backend": "loop", "fwd_bwd_ms": 90.0}]
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"config": {}, "rows": rows}))
    assert odyssey.speed_ratios(bench, "vanilla") == {"vanilla": 1.0, "min_gru": 0.25}
    with pytest.raises(ValueError, match="no time of the reference np"):
        odyssey.speed_ratios(bench, "np")
    study = Path(__file__).resolve().parents[1] / "results" / "modern_first_look"
    assert odyssey.main(["--matches", f"first={study}", "--speed", str(bench)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| cell | parameters (first) | CPU time (× vanilla) | first: matches within δ? |"
    assert lines[1] == "|---|---:|---:|---|"
    assert next(x for x in lines if x.startswith("| min_gru | ")).split(" | ")[2] == "0.25"
    assert next(x for x in lines if x.startswith("| janet | ")).split(" | ")[2] == ""  # not benched
    bench.write_text("{}")
    with pytest.raises(SystemExit):
        odyssey.main(["--matches", f"first={study}", "--speed", str(bench)])
    assert "is not the --json of lstm-odyssey-bench" in capsys.readouterr().err


def test_the_matches_command_reads_a_seed_study_as_its_report_did(capsys):
    """`--seeds results/odyssey_jsb/seeds` gives each cell the spread its committed report (tables/seed_best.csv)
    gives, and every cell the median parameter count of its runs."""
    import pandas as pd

    results = Path(__file__).resolve().parents[1] / "results" / "odyssey_jsb"
    assert odyssey.main(["--matches", f"adam={results / 'adam'}", "--seeds", str(results / "seeds")]) == 0
    lines = capsys.readouterr().out.splitlines()
    runs = pd.read_parquet(results / "adam" / "runs.parquet")
    for _, b in pd.read_csv(results / "seeds" / "report" / "tables" / "seed_best.csv").iterrows():
        line = next(x for x in lines if x.startswith(f"| {b['cell']} | "))
        size = runs.loc[runs["cell"] == b["cell"], "num_parameters"].median()
        assert line.startswith(f"| {b['cell']} | {size:,.0f} | ")
        assert line.endswith(f"| {b['test_mean']:.3f} ± {b['test_sd']:.3f} ({b['seeds']}) |")
    with pytest.raises(SystemExit):
        odyssey.main([f"adam={results / 'adam'}", "--seeds", str(results / "seeds")])  # --seeds without --matches
