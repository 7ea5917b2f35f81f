"""The paper's findings as verdicts (analysis/odyssey.py) on planted studies: each claim comes out confirmed
when the planted effects agree with the paper, not confirmed when they contradict it, and "cannot tell" when
the study cannot answer it; the numbers quoted are the report's own tests (checked against scipy)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lstm_odyssey import analysis
from lstm_odyssey.analysis import odyssey
from lstm_odyssey.analysis.text import fmt
from lstm_odyssey.cells import get_spec

CELLS = ("vanilla", *odyssey.VARIANTS)
PAPER = {"vanilla": 0.0, "nig": 0.15, "nfg": 0.6, "nog": 0.1, "niaf": 0.1, "noaf": 0.5, "cifg": 0.0, "np": 0.0, "fgr": 0.1}


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


def findings(df: pd.DataFrame) -> pd.DataFrame:
    """`paper_findings` with a smaller fANOVA forest than the report's (16 trees, per cell only): the planted
    effects are strong, and the tests stay quick."""
    return odyssey.paper_findings(df, imp=analysis.importance(df, n_trees=16, pooled=False))


def verdicts(df: pd.DataFrame) -> dict[str, str]:
    found = findings(df)
    assert list(found["finding"]) == list(odyssey.CLAIMS.values())
    return dict(zip(found["finding"], found["verdict"]))


@pytest.fixture(scope="module")
def paper_like() -> pd.DataFrame:
    return jsb_study(PAPER)


@pytest.fixture(scope="module")
def paper_like_found(paper_like) -> pd.DataFrame:
    return findings(paper_like)


def test_a_study_that_behaves_like_the_paper_confirms_every_claim(paper_like_found):
    assert list(paper_like_found["finding"]) == list(odyssey.CLAIMS.values())
    assert set(paper_like_found["verdict"]) == {odyssey.CONFIRMED}


def test_the_comparison_numbers_are_the_paired_t_test_with_holm(paper_like, paper_like_found):
    found = paper_like_found.set_index("finding")
    row = found.loc[odyssey.CLAIMS["nfg_noaf_hurt_most"]]
    # the claim is decided by the weaker of the two (NOAF, +0.5): its paired t-test against vanilla
    a = paper_like[paper_like["cell"] == "noaf"].sort_values("trial")["test_nll"].to_numpy()
    b = paper_like[paper_like["cell"] == "vanilla"].sort_values("trial")["test_nll"].to_numpy()
    expected = stats.ttest_rel(a, b)
    ci = expected.confidence_interval(0.95)
    assert row["effect"] == pytest.approx((a - b).mean()) and row["n"] == 40 and row["measure"] == "NOAF − vanilla"
    assert (row["low"], row["high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))
    raw = analysis.significance(paper_like, subsets=("all",))
    assert row["p"] == pytest.approx(raw.set_index("cell").loc["noaf", "p_holm"]) and row["p"] >= expected.pvalue
    assert "NFG, NOAF" in row["detail"] or "NOAF, NFG" in row["detail"]


def test_a_better_variant_and_a_different_cifg_contradict_the_paper():
    df = jsb_study({**PAPER, "cifg": -0.3})
    v = verdicts(df)
    assert v[odyssey.CLAIMS["no_variant_better"]] == odyssey.NOT_CONFIRMED
    assert v[odyssey.CLAIMS["cifg_np_no_difference"]] == odyssey.NOT_CONFIRMED
    assert v[odyssey.CLAIMS["nfg_noaf_hurt_most"]] == odyssey.CONFIRMED


def test_nfg_and_noaf_must_be_the_two_worst():
    v = verdicts(jsb_study({**PAPER, "nig": 0.55}))  # NIG hurts more than NOAF
    assert v[odyssey.CLAIMS["nfg_noaf_hurt_most"]] == odyssey.NOT_CONFIRMED


def test_momentum_that_matters_and_a_shifted_optimum_contradict_the_paper():
    df = jsb_study(PAPER, momentum_effect=3.0, shift=1.5)
    v = verdicts(df)
    assert v[odyssey.CLAIMS["momentum_hardly_matters"]] == odyssey.NOT_CONFIRMED
    assert v[odyssey.CLAIMS["hidden_does_not_shift_lr"]] == odyssey.NOT_CONFIRMED


def test_without_momentum_or_with_few_trials_the_verdict_is_cannot_tell():
    v = verdicts(jsb_study(PAPER, momentum=False))  # an Adam protocol has no momentum to vary
    assert v[odyssey.CLAIMS["momentum_hardly_matters"]] == odyssey.CANNOT_TELL
    assert v[odyssey.CLAIMS["lr_most_important"]] == odyssey.CONFIRMED
    small = findings(jsb_study(PAPER, n_trials=6)).set_index("finding")
    for key in ("no_variant_better", "nfg_noaf_hurt_most", "cifg_np_no_difference"):
        assert small.loc[odyssey.CLAIMS[key], "verdict"] == odyssey.CANNOT_TELL
        assert f"at least {odyssey.MIN_PAIRS}" in small.loc[odyssey.CLAIMS[key], "detail"]
    fifteen = findings(jsb_study(PAPER, n_trials=15)).set_index("finding")  # enough pairs, too few runs for fANOVA
    assert fifteen.loc[odyssey.CLAIMS["nfg_noaf_hurt_most"], "verdict"] == odyssey.CONFIRMED
    assert fifteen.loc[odyssey.CLAIMS["lr_most_important"], "verdict"] == odyssey.CANNOT_TELL
    assert f"at least {odyssey.MIN_RUNS} ok runs" in fifteen.loc[odyssey.CLAIMS["lr_most_important"], "detail"]
    only_two = jsb_study({"vanilla": 0.0, "nfg": 0.5})
    assert verdicts(only_two)[odyssey.CLAIMS["nfg_noaf_hurt_most"]] == odyssey.CANNOT_TELL


def test_strong_interactions_leave_independence_unconfirmed():
    df = jsb_study({c: 0.0 for c in CELLS}, interaction=4.0)
    found = findings(df).set_index("finding").loc[odyssey.CLAIMS["nearly_independent"]]
    assert found["verdict"] == odyssey.CANNOT_TELL and found["effect"] < odyssey.INDEPENDENT


def test_best_by_validation_picks_the_run_with_the_best_validation_score(paper_like):
    best = odyssey.best_by_validation(paper_like)
    ours = best[~best["published"]].set_index("cell")
    for cell in CELLS:
        g = paper_like[paper_like["cell"] == cell]
        assert ours.loc[cell, "best_test"] == g.loc[g["val_nll"].idxmin(), "test_nll"]
        assert ours.loc[cell, "capped"] == pytest.approx((g["stopped_by"] == "epoch_cap").mean())
        assert ours.loc[cell, "plateau"] == pytest.approx((g["stopped_by"] == "plateau").mean())
    assert dict(best.loc[best["published"], ["cell", "best_test"]].values) == odyssey.PUBLISHED_JSB


def test_the_markdown_tables_quote_every_protocol(paper_like, paper_like_found):
    found = paper_like_found
    adam = findings(jsb_study(PAPER, momentum=False, seed=1))
    table = odyssey.findings_markdown({"paper": found, "adam": adam})
    lines = table.splitlines()
    assert lines[0] == "| finding | paper | adam |" and len(lines) == 2 + len(odyssey.CLAIMS)
    momentum = next(line for line in lines if line.startswith("| momentum"))
    assert momentum.count(odyssey.CONFIRMED) == 1 and odyssey.CANNOT_TELL in momentum
    # each effect's interval is named: the comparison's own 95 % CI, the range over cells for fANOVA
    row = found[found["finding"] == odyssey.CLAIMS["cifg_np_no_difference"]].iloc[0]
    cifg = next(line for line in lines if line.startswith("| CIFG and NP"))
    assert f"{row['measure']} {fmt(row['effect'])} ({row['interval']} {fmt(row['low'])} to {fmt(row['high'])})" in cifg
    assert row["interval"] == "unadjusted 95 % CI" and row["measure"] in ("CIFG − vanilla", "NP − vanilla")
    # ... and each p what it is: Holm-corrected for the comparisons, the plain F-test p for the hidden-size shift
    assert f"Holm p = {fmt(row['p'])}" in cifg
    shift = found[found["finding"] == odyssey.CLAIMS["hidden_does_not_shift_lr"]].iloc[0]
    assert f", p = {fmt(shift['p'])})" in next(line for line in lines if line.startswith("| the hidden size"))
    assert "(range over cells " in next(line for line in lines if line.startswith("| the learning rate"))
    best = odyssey.best_markdown({"paper": odyssey.best_by_validation(paper_like)})
    assert "| LSTM (Bai et al. 2018) | 8.45 |" in best and best.count("\n") == 1 + len(CELLS) + len(odyssey.PUBLISHED_JSB)


def test_the_report_of_an_odyssey_study_leads_with_the_findings(tmp_path, paper_like):
    from lstm_odyssey.analysis import write_report

    runs = tmp_path / "runs.csv"
    paper_like.to_csv(runs, index=False)
    text = write_report([runs], tmp_path / "report").read_text()
    assert text.index("## The paper's findings") < text.index("## Design and tests")
    table = pd.read_csv(tmp_path / "report" / "tables" / "paper_findings.csv")
    assert list(table["finding"]) == list(odyssey.CLAIMS.values()) and "plateau rule judges a slow learner" in text
    assert (tmp_path / "report" / "tables" / "best_by_validation.csv").is_file()
    # a study without the paper's variants has no such section
    other = paper_like[paper_like["cell"].isin(["vanilla"])].assign(cell=lambda d: d["cell"].where(d["trial"] < 20, "gru"))
    other.to_csv(runs, index=False)
    assert "## The paper's findings" not in write_report([runs], tmp_path / "other").read_text()


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


def test_the_converged_subset_keeps_the_pairs_where_neither_run_was_capped():
    df = capped_advantage_study()
    sig = analysis.significance(df, subsets=("converged", "all"))
    noaf = sig[sig["cell"] == "noaf"].set_index("subset")
    keep = [k for k in range(60) if k % 3 != 2]  # vanilla's capped trials drop out, whatever NOAF did
    own = df[df["cell"] == "noaf"].set_index("trial")["test_nll"] - df[df["cell"] == "vanilla"].set_index("trial")["test_nll"]
    assert noaf.loc["converged", "n"] == len(keep) and noaf.loc["all", "n"] == 60
    assert noaf.loc["converged", "diff"] == pytest.approx(own.loc[keep].mean())
    assert noaf.loc["all", "diff"] == pytest.approx(own.mean())
    assert noaf.loc["all", "verdict"] == "better" and noaf.loc["converged", "verdict"] == "n.s."


def test_the_findings_say_whether_a_verdict_survives_without_the_capped_runs():
    found = odyssey.paper_findings(capped_advantage_study(), imp=pd.DataFrame())
    row = found[found["finding"] == odyssey.CLAIMS["no_variant_better"]].iloc[0]
    assert row["verdict"] == odyssey.NOT_CONFIRMED  # the verdict stays on all pairs ...
    head, converged = row["detail"].split("; on the pairs where neither run hit the cap: ")
    assert head.startswith("better than vanilla: NOAF") and "n = 60" in head
    assert converged.startswith("NOAF ") and "n = 40" in converged and converged.endswith("n.s.)")  # ... and says this


def test_the_verdicts_command_prints_one_column_per_protocol(tmp_path, capsys, paper_like):
    """`lstm-odyssey-verdicts NAME=STUDY ...` reads each study's records and prints both README tables."""
    paper_like.to_csv(tmp_path / "paper.csv", index=False)
    paper_like[paper_like["cell"].isin(["vanilla", "cifg"])].to_csv(tmp_path / "cifg.csv", index=False)
    assert odyssey.main([f"paper={tmp_path / 'paper.csv'}", f"two={tmp_path / 'cifg.csv'}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| finding | paper | two |" and "| cell | paper best test (capped) | two best test (capped) |" in lines
    lr = next(line for line in lines if line.startswith("| the learning rate"))
    assert lr.split(" | ")[1].startswith(f"**{odyssey.CONFIRMED}**")  # the planted parabola in log10 lr
    g = paper_like[paper_like["cell"] == "nig"]
    best = g.loc[g["val_nll"].idxmin()]
    capped = (g["stopped_by"] == "epoch_cap").mean()
    assert f"| nig | {best['test_nll']:.3f} ({capped:.0%}) |  |" in lines  # nig ran under one protocol only


def test_the_verdicts_command_says_what_a_bad_argument_should_be(capsys):
    with pytest.raises(SystemExit) as stop:
        odyssey.main(["results/odyssey_jsb/paper"])
    assert stop.value.code == 2 and "is not NAME=STUDY" in capsys.readouterr().err
