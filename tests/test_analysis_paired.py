"""The analysis of paired studies (trial k shares its sample across cells) against scipy on planted effects, the
lr × hidden size question refused where the design cannot answer it, every figure's layout and colours, and a
report that regenerates byte for byte."""

from __future__ import annotations

import dataclasses
import itertools
import warnings

import matplotlib
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lstm_odyssey import analysis
from lstm_odyssey.analysis import compare, inference, plots, style
from lstm_odyssey.analysis.hyperparams import MIN_LRS_PER_GROUP, POOLED
from lstm_odyssey.cells import PRESETS, get_spec
from lstm_odyssey.schema import AnalysisConfig

matplotlib.use("Agg")


def study(effects: dict[str, float], n_trials: int = 20, paired: bool = True, noise: float = 0.05, seed: int = 0,
          trial_sd: float = 1.0, lrs: np.ndarray | None = None, hidden: np.ndarray | None = None) -> pd.DataFrame:
    """Rows of a study: trial k draws (lr, hidden size), which move the metric a lot (sd `trial_sd`); a cell adds
    its planted effect and a little noise. Paired: trial k has the same sample in every cell; else every
    grid point draws its own. Cell flags are columns as in real records (they differ between cells)."""
    rng = np.random.default_rng(seed)
    lrs = 10 ** rng.uniform(-3, -1, n_trials) if lrs is None else lrs
    hidden = rng.integers(16, 49, n_trials) if hidden is None else hidden
    trial_effect = rng.normal(0, trial_sd, n_trials)
    rows = []
    for j, (cell, effect) in enumerate(effects.items()):
        order = np.arange(n_trials) if paired else rng.permutation(n_trials)
        flags = {f"cell.{k}": v for k, v in dataclasses.asdict(get_spec(cell)).items()} if cell in PRESETS else {}
        for k in range(n_trials):
            s = order[k]  # the sample this grid point's trial k got
            y = 3.0 + trial_effect[s] + effect + noise * rng.normal()
            rows.append({
                "study": "toy", "trial": k, "status": "ok", "cell": cell, "task": "toy", "metric": "mse",
                "test_mse": y, "val_mse": y + 0.01 * rng.normal(), "objective": y, "optim.lr": float(lrs[s]),
                "model.hidden_size": int(hidden[s]), "trainer.seed": 0, "cell.name": cell, **flags,
                "stopped_by": "epoch_cap" if k % 3 else "early_stopping", "num_parameters": 1000 * (j + 1) + int(hidden[s]),
                "wall_seconds": 1.0 + j + 0.1 * k, "run_dir": f"/sweep/toy/{cell}/{k:03d}",
            })
    return pd.DataFrame(rows)


def walsh_median(d: np.ndarray) -> float:
    """The Hodges–Lehmann estimate by its definition: the median of every (d_i + d_j) / 2 with i <= j."""
    return float(np.median([(d[i] + d[j]) / 2 for i in range(len(d)) for j in range(i, len(d))]))


def runs_of(df: pd.DataFrame, cell: str) -> np.ndarray:
    return df.loc[df["cell"] == cell].sort_values("trial")["test_mse"].to_numpy()


@pytest.fixture(scope="module")
def planted() -> pd.DataFrame:
    # nfg is worse by 0.1: tiny next to the spread over trials (sd 1), large next to the noise (sd 0.05)
    return analysis.prepare(study({"vanilla": 0.0, "nfg": 0.1, "cifg": 0.0}))


def test_the_design_is_read_off_the_records(planted):
    paired, why = analysis.design(planted)
    assert paired and "same hyperparameters (20 matched trials)" in why
    unpaired = analysis.prepare(study({"vanilla": 0.0, "nfg": 0.1}, paired=False))
    paired, why = analysis.design(unpaired)
    assert not paired and "different hyperparameters" in why
    paired, why = analysis.design(analysis.prepare(planted.drop(columns=["trial", "pair"])))
    assert not paired and "no trial index" in why


def test_paired_statistics_match_scipy_and_find_what_the_unpaired_test_misses(planted):
    sig = analysis.significance(planted, subsets=("all",)).set_index("cell")
    assert (sig["test"] == "rank").all() and (sig["design"] == "paired").all()
    a, b = runs_of(planted, "nfg"), runs_of(planted, "vanilla")
    d = a - b
    row = sig.loc["nfg"]
    # the primary test: Wilcoxon signed-rank on the paired differences, the Hodges–Lehmann estimate and its interval
    assert row["p"] == pytest.approx(stats.wilcoxon(a, b).pvalue, rel=1e-9)
    assert row["diff"] == pytest.approx(walsh_median(d)) and row["n"] == 20 and row["n_missing"] == 0
    hl = inference.paired_shift(d)
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(hl.low), pytest.approx(hl.high))
    assert row["ci_low"] < row["diff"] < row["ci_high"]
    assert (row["wins"], row["ties"], row["losses"]) == (int((a < b).sum()), 0, int((a > b).sum()))
    assert row["verdict"] == "worse" and row["p_holm"] < 0.001
    assert row["equivalence"] == "beyond δ"  # 0.1 against the margin 0.002 of an MSE
    # the t-test stays beside it, for comparison only
    assert row["mean_diff"] == pytest.approx(d.mean()) and row["t_p"] == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-9)
    # Holm over the two cells, by hand
    p = np.array([sig.loc["nfg", "p"], sig.loc["cifg", "p"]])
    low, high = np.argsort(p)
    by_hand = np.empty(2)
    by_hand[low] = min(1, 2 * p[low])
    by_hand[high] = max(by_hand[low], p[high])
    np.testing.assert_allclose(sig.loc[["nfg", "cifg"], "p_holm"], by_hand)
    np.testing.assert_allclose(sig.loc[["nfg", "cifg"], "p_holm"], analysis.holm(p))
    assert sig.loc["cifg", "verdict"] == "n.s."
    # the plan's alternative primary test, the paired t-test, on the same pairs
    t = analysis.significance(planted, AnalysisConfig(primary="t"), subsets=("all",)).set_index("cell").loc["nfg"]
    expected = stats.ttest_rel(a, b)
    ci = expected.confidence_interval(0.95)
    assert t["test"] == "t" and t["p"] == pytest.approx(expected.pvalue, rel=1e-9) and t["diff"] == pytest.approx(d.mean())
    assert (t["ci_low"], t["ci_high"]) == (pytest.approx(ci.low, rel=1e-9), pytest.approx(ci.high, rel=1e-9))
    assert t["verdict"] == "worse"
    # an unpaired test of the same runs throws the pairing away and misses the effect: Mann–Whitney, and Welch
    runs = analysis.prepare(planted.drop(columns=["trial", "pair", "ok", "val_score", "test_score"]))
    for plan, expected_p in ((AnalysisConfig(), stats.mannwhitneyu(a, b).pvalue),
                             (AnalysisConfig(primary="t"), stats.ttest_ind(a, b, equal_var=False).pvalue)):
        unpaired = analysis.significance(runs, plan, subsets=("all",)).set_index("cell").loc["nfg"]
        assert unpaired["design"] == "unpaired" and unpaired["p"] == pytest.approx(expected_p, rel=1e-9)
        assert unpaired["p"] > 0.5 and unpaired["verdict"] == "n.s."


def test_a_failed_run_keeps_its_pair_ranked_worst_and_an_unpaired_study_gets_mann_whitney(planted):
    df = planted.copy()
    df.loc[(df["cell"] == "nfg") & (df["trial"] == 3), "status"] = "diverged"
    df = analysis.prepare(df.drop(columns=["ok", "pair", "val_score", "test_score"]))
    p = analysis.pairs(df, "nfg", "vanilla")  # pairs of ok runs only
    assert len(p) == 19 and 3 not in set(df.loc[p["run_index"], "trial"])
    assert (df.loc[p["run_index"], "trial"].to_numpy() == df.loc[p["ref_index"], "trial"].to_numpy()).all()
    kept = analysis.pairs(df, "nfg", "vanilla", failed_as=np.inf)  # the comparison's pairs: the diverged run ranks worst
    assert len(kept) == 20
    failed = kept[df.loc[kept["run_index"], "trial"].to_numpy() == 3].iloc[0]
    assert failed["test"] == np.inf and failed["val"] == np.inf and np.isfinite(failed["test_ref"])
    row = analysis.significance(df, subsets=("all",)).set_index("cell").loc["nfg"]
    a, b = runs_of(df, "nfg"), runs_of(df, "vanilla")
    d = np.where(np.arange(20) == 3, np.inf, a - b)
    assert row["n"] == 20 and row["n_failed"] == 1 and row["losses"] == int((d > 0).sum())
    assert row["p"] == pytest.approx(stats.wilcoxon(d).pvalue, rel=1e-9) and row["diff"] == pytest.approx(walsh_median(d))
    assert np.isnan(row["t_p"])  # the t-test cannot take a failed run; the rank test can
    unpaired = study({"vanilla": 0.0, "nfg": 0.1}, paired=False)
    sig = analysis.significance(unpaired, subsets=("all",))
    assert sig["test"].tolist() == ["rank"] and sig["design"].tolist() == ["unpaired"]
    a, b = (unpaired.loc[unpaired["cell"] == c, "test_mse"].to_numpy() for c in ("nfg", "vanilla"))
    assert sig["p"].iloc[0] == pytest.approx(stats.mannwhitneyu(a, b).pvalue, rel=1e-9)
    assert sig["diff"].iloc[0] == pytest.approx(np.median(np.subtract.outer(a, b)))
    welch = analysis.significance(unpaired, AnalysisConfig(primary="t"), subsets=("all",))
    assert welch["p"].iloc[0] == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-9)


def test_a_record_written_before_an_option_existed_pairs_as_its_default():
    """Records of one study can straddle a release that added an option (`model.output_dropout`, default 0):
    the older records lack the key and ran as the default does, so they pair with newer ones at the default,
    and only with those."""
    from lstm_odyssey.schema import default

    assert default("model.output_dropout") == 0.0
    rows = study({"vanilla": 0.0, "nfg": 0.1})
    older = rows["cell"] == "vanilla"  # written before the option existed: no value
    at_default = rows.assign(**{"model.output_dropout": np.where(older, np.nan, 0.0)})
    p = analysis.pairs(analysis.prepare(at_default), "nfg", "vanilla")
    assert len(p) == 20
    a, b = (rows.loc[rows["cell"] == c].sort_values("trial")["test_mse"].to_numpy() for c in ("nfg", "vanilla"))
    assert np.sort(p["test"] - p["test_ref"]) == pytest.approx(np.sort(a - b))  # trial k against trial k
    elsewhere = rows.assign(**{"model.output_dropout": np.where(older, np.nan, 0.3)})
    assert analysis.pairs(analysis.prepare(elsewhere), "nfg", "vanilla").empty


def test_top_pairs_are_the_best_by_both_runs_validation_not_the_references(planted):
    """The secondary "top pairs" select pairs by the mean validation score of both runs, so neither arm picks
    them alone; "top own" are each cell's own best runs, compared unpaired (as Greff et al. read the top 10 %)."""
    df = planted.copy()
    best_ref = df[df["cell"] == "vanilla"].nsmallest(2, "val_mse")["trial"]  # the reference's own best 2 of 20
    df.loc[(df["cell"] == "nfg") & df["trial"].isin(best_ref), "val_mse"] += 5.0  # ... where nfg validated badly
    df = analysis.prepare(df.drop(columns=["ok", "pair", "val_score", "test_score"]))
    sig = analysis.significance(df, subsets=("top pairs", "top own")).set_index(["subset", "cell"])
    nfg, ref = (df[df["cell"] == c].set_index("trial") for c in ("nfg", "vanilla"))
    chosen = ((nfg["val_mse"] + ref["val_mse"]) / 2).nsmallest(2).index  # 10 % of 20 pairs
    assert not set(chosen) & set(best_ref)
    d = (nfg["test_mse"] - ref["test_mse"]).loc[chosen].to_numpy()
    row = sig.loc[("top pairs", "nfg")]
    assert row["design"] == "paired" and row["n"] == 2
    assert row["diff"] == pytest.approx(walsh_median(d)) and row["mean_diff"] == pytest.approx(d.mean())
    plan = AnalysisConfig()
    assert sorted(compare.compared_runs(df, "nfg", "top pairs", plan)["trial"]) == sorted(chosen)  # what fig3 shows
    own, own_ref = nfg.nsmallest(2, "val_mse")["test_mse"], ref.nsmallest(2, "val_mse")["test_mse"]
    row = sig.loc[("top own", "nfg")]
    assert row["design"] == "unpaired" and (row["n"], row["n_ref"]) == (2, 2)
    assert row["diff"] == pytest.approx(np.median(np.subtract.outer(own.to_numpy(), own_ref.to_numpy())))
    assert sorted(compare.compared_runs(df, "vanilla", "top own", plan)["trial"]) == sorted(best_ref)


def test_too_few_pairs_or_no_differences_are_untested_with_the_reason():
    few = study({"vanilla": 0.0, "nfg": 0.1}, n_trials=1)
    row = analysis.significance(few, subsets=("all",)).iloc[0]
    assert row["verdict"] == "untested" and "needs at least 2 pairs (has 1)" in row["note"]
    same = study({"vanilla": 0.0, "nfg": 0.0}, noise=0.0)  # the same metric in both cells, trial by trial
    row = analysis.significance(same, subsets=("all",)).iloc[0]
    assert row["verdict"] == "untested" and row["note"] == "all 20 paired differences are zero"
    text = analysis.verdict_sentence(row)
    assert "cannot tell from these runs, because all 20 paired differences are zero" in text
    # fewer pairs than the plan's minimum: tested, and said; 5 pairs have no 95 % signed-rank interval
    five = analysis.significance(study({"vanilla": 0.0, "nfg": 0.1}, n_trials=5), subsets=("all",)).iloc[0]
    assert five["note"] == "5 pairs, fewer than the plan's minimum of 10" and np.isfinite(five["p"])
    assert (five["ci_low"], five["ci_high"]) == (-np.inf, np.inf)
    # every pair worse by the same amount: no spread for a t-test, a clear verdict for the rank test
    shifted = study({"vanilla": 0.0, "nfg": 0.5}, noise=0.0)
    row = analysis.significance(shifted, subsets=("all",)).iloc[0]
    assert row["verdict"] == "worse" and row["losses"] == 20 and row["diff"] == pytest.approx(0.5)
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(0.5), pytest.approx(0.5))


# -- lr × hidden size --------------------------------------------------------------------------------------
def test_hidden_size_groups_never_split_a_value():
    h = pd.Series([20] * 10 + [30] * 3 + [35] * 3 + [47] * 10 + [19] * 2)
    groups = analysis.group_hidden_sizes(h, 3)
    assert (groups.groupby(h).nunique() == 1).all()  # one group per size
    ranges = h.groupby(groups).agg(["min", "max"]).sort_index()
    assert (ranges["max"].to_numpy()[:-1] < ranges["min"].to_numpy()[1:]).all()  # ordered, not overlapping
    assert groups.nunique() == 3


def test_lr_by_hidden_refuses_a_paired_design_with_one_lr_per_hidden_size():
    df = study({"vanilla": 0.0, "nfg": 0.1, "cifg": 0.0, "gru": -0.1}, n_trials=6)
    notes: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RankWarning from a degenerate fit
        lrh = analysis.lr_by_hidden(df, notes=notes)
    assert lrh["shift_p"].isna().all() and lrh["vertex_log10_lr"].isna().all()
    assert lrh["n"].sum() == 6  # one observation per trial, not per run: the cells of a trial are not replicates
    assert (lrh["distinct_lrs"] < MIN_LRS_PER_GROUP).all()
    assert any("cannot tell from these runs whether the hidden size shifts the optimal learning rate, because "
               "each hidden-size group needs at least 4 distinct learning rates" in n for n in notes)
    assert any("in a paired study" in n for n in notes)


def test_lr_by_hidden_answers_a_paired_design_with_enough_learning_rates():
    rng = np.random.default_rng(3)
    n = 90
    lrs, hidden = 10 ** rng.uniform(-4, -1, n), rng.integers(16, 200, n)
    df = study({"vanilla": 0.0, "nfg": 0.1}, n_trials=n, lrs=lrs, hidden=hidden, trial_sd=0.0)
    # a valley at lr = 10^-2.5 for every hidden size: nothing to shift
    valley = {k: (np.log10(lrs[k]) + 2.5) ** 2 for k in range(n)}
    df["test_mse"] = df["test_mse"] + df["trial"].map(valley)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lrh = analysis.lr_by_hidden(df)
    assert len(lrh) == 3 and lrh["n"].sum() == n and lrh["note"].isna().all()
    assert (abs(lrh["vertex_log10_lr"] + 2.5) < 0.2).all() and lrh["shift_p"].iloc[0] > 0.01


# -- figures ----------------------------------------------------------------------------------------------
def lab(colour: str) -> np.ndarray:
    """CIE L*a*b* (D65) of an sRGB colour, to measure how far apart two colours look."""
    rgb = np.array(matplotlib.colors.to_rgb(colour))
    rgb = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ rgb
    f = np.cbrt(np.maximum(xyz / np.array([0.95047, 1.0, 1.08883]), 0.008856 ** 3))
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_one_fixed_distinguishable_style_per_cell():
    cells = list(PRESETS) + ["zeta", "alpha"]
    styles = style.cell_styles(cells)
    assert list(PRESETS) == list(style.PAPER_CELLS)
    assert len({s.colour for s in styles.values()}) == len(cells)
    assert len({s.marker for s in styles.values() if s.colour in style.COLOURS}) == len(style.PAPER_CELLS)
    # keyed by cell: the same colour whatever else is in the figure
    assert style.cell_styles(["gru", "vanilla"]) == {"gru": styles["gru"], "vanilla": styles["vanilla"]}
    # distinguishable: every two of the presets' colours at least 20 CIE76 units apart (2.3 is a just-noticeable difference)
    assert min(np.linalg.norm(lab(a) - lab(b)) for a, b in itertools.combinations(style.COLOURS, 2)) > 20


def overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def check_layout(fig) -> None:
    """Legends outside every axes' data area, and nothing drawn outside the figure (nothing clipped)."""
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    titles = [t for t in [fig._suptitle] + [ax.title for ax in fig.axes] + [ax._right_title for ax in fig.axes]
              if t is not None and t.get_text()]
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            if ax.get_visible() and ax.axison:
                assert not overlaps(box, ax.get_window_extent(renderer)), (legend, ax.get_title())
        for title in titles:
            assert not overlaps(box, title.get_window_extent(renderer)), title.get_text()
    tight, whole = fig.get_tightbbox(renderer), fig.bbox
    assert tight.x0 >= whole.x0 - 1 and tight.y0 >= whole.y0 - 1
    assert tight.x1 <= whole.x1 + 1 and tight.y1 <= whole.y1 + 1


def legend_colours(fig) -> dict[str, str]:
    out = {}
    for legend in fig.legends:
        for text, handle in zip(legend.get_texts(), legend.legend_handles):
            colour = handle.get_color() if hasattr(handle, "get_markerfacecolor") else handle.get_facecolor()
            out[text.get_text()] = matplotlib.colors.to_hex(colour)
    return out


@pytest.fixture(scope="module")
def every_cell() -> pd.DataFrame:
    effects = {cell: 0.05 * i for i, cell in enumerate(PRESETS)} | {"mycell": 0.3}
    return analysis.prepare(study(effects, n_trials=12, trial_sd=0.5))


@pytest.mark.slow
def test_every_figure_has_outside_legends_and_one_colour_per_cell(every_cell):
    df, task = every_cell, "toy"
    sig = analysis.significance(df)
    styles = plots.cell_styles(df["cell"].unique())
    colours = {c: s.colour for c, s in styles.items()}
    marg = analysis.marginals(df)
    imp = analysis.importance(df, n_trees=8, min_runs=8)
    with warnings.catch_warnings(record=True) as caught:  # every cell's marker, line markers (+ x 1 2) among them
        warnings.simplefilter("always")
        figures = {
            "paired": plots.paired_plot(df, task, sig), "fig3": plots.fig3(df, task, sig),
            "marginals": plots.marginal_plot(marg, task, "mse"), "importance": plots.importance_plot(imp, task),
            "parameters": plots.params_plot(df, task), "time": plots.time_plot(df, task),
            "lr_hidden": plots.lr_hidden_plot(df, task),
        }
    assert not [str(w.message) for w in caught if "edgecolor" in str(w.message)]
    for name, fig in figures.items():
        check_layout(fig)
        labels = [ax.get_ylabel() for ax in fig.axes]
        if name in ("fig3", "marginals", "parameters", "lr_hidden"):
            assert any("(squared target units; lower is better)" in label for label in labels), (name, labels)
    for name in ("marginals", "parameters", "importance"):
        found = legend_colours(figures[name])
        assert {c: found[c] for c in found if c != POOLED} == {c: colours[c] for c in found if c != POOLED}, name
        assert len(set(found.values())) == len(found)
    assert set(legend_colours(figures["marginals"])) == set(df["cell"])
    for name in ("fig3", "time"):
        for ax in figures[name].axes:
            cells = [t.get_text().split("\n")[0] for t in ax.get_xticklabels()]
            edges = [matplotlib.colors.to_hex(p.get_edgecolor()) for p in ax.patches]
            assert edges == [colours[c] for c in cells], name
    for ax in figures["paired"].axes:  # one panel per cell: its dots in its colour
        cell = ax.get_ylabel()
        assert matplotlib.colors.to_hex(ax.collections[0].get_facecolor()[0]) == colours[cell]
    assert [ax.get_ylabel() for ax in figures["paired"].axes] == [c for c in analysis.cell_order(df["cell"]) if c != "vanilla"]
    for fig in figures.values():
        matplotlib.pyplot.close(fig)


def test_error_bands_stay_in_the_metrics_range():
    df = study({"vanilla": 0.0}, n_trials=40, trial_sd=0.0, noise=0.0)
    df["test_mse"] = np.where(np.arange(len(df)) % 5, 0.001, 0.1)  # an MSE near 0, now and then large: wide intervals
    df["val_mse"] = df["test_mse"]
    marg = analysis.marginals(df, params=["optim.lr"], bins=4)
    assert (marg["ci_low"] < 0).any()  # the t interval itself goes below 0 ...
    fig = plots.marginal_plot(marg, "toy", "mse")
    for band in fig.axes[0].collections:  # ... the drawn band does not
        assert min(path.vertices[:, 1].min() for path in band.get_paths()) >= 0
    lower = fig.axes[0].get_ylim()[0]
    assert lower >= 0
    matplotlib.pyplot.close(fig)


# -- the report ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_paired_report_puts_the_verdicts_first_and_regenerates_byte_for_byte(tmp_path, planted):
    table = tmp_path / "runs.parquet"
    study({"vanilla": 0.0, "nfg": 0.1, "cifg": 0.0}).to_parquet(table, index=False)
    first = analysis.write_report([table], tmp_path / "a", plan_overrides=["bootstrap=20"])
    again = analysis.write_report([table], tmp_path / "b", plan_overrides=["bootstrap=20"])
    text = first.read_text()
    assert text == again.read_text()
    csvs = sorted(p.name for p in (tmp_path / "a" / "tables").glob("*.csv"))
    assert {"significance.csv", "summary.csv", "runs.csv"} <= set(csvs)
    for name in csvs:
        assert (tmp_path / "a" / "tables" / name).read_bytes() == (tmp_path / "b" / "tables" / name).read_bytes(), name
    assert text.index("## Analysis plan") < text.index("## Verdicts against the reference") < text.index("## Findings")
    assert "bootstrap=20" in text  # the plan it used, with the override
    assert "- toy: paired: trial k of every cell ran with the same hyperparameters (20 matched trials)" in text
    assert "nfg vs vanilla on toy (all pairs, primary): nfg is worse than vanilla: Hodges–Lehmann" in text
    sig = pd.read_csv(tmp_path / "a" / "tables" / "significance.csv")
    row = sig[(sig["cell"] == "nfg") & (sig["subset"] == "all")].iloc[0]
    assert row["test"] == "rank" and row["n"] == 20 and row["verdict"] == "worse"
    assert f"95 % CI {analysis.text.fmt(row['ci_low'])} to {analysis.text.fmt(row['ci_high'])}" in text
    assert "![paired_toy](figures/paired_toy.png)" in text and (tmp_path / "a" / "figures" / "paired_toy.png").exists()


@pytest.mark.slow
def test_unpaired_report_says_mann_whitney_and_why(tmp_path):
    table = tmp_path / "runs.parquet"
    study({"vanilla": 0.0, "nfg": 0.1}, paired=False).to_parquet(table, index=False)
    text = analysis.write_report([table], tmp_path / "r").read_text()
    assert "- toy: unpaired: trial k of different cells ran with different hyperparameters" in text
    assert ("The primary test: Mann–Whitney test with the two-sample Hodges–Lehmann shift and its interval, on all "
            "runs.") in text
    assert "nfg vs vanilla on toy (all runs, primary)" in text and "![paired_toy]" not in text
    welch = analysis.write_report([table], tmp_path / "t", plan_overrides=["primary=t"]).read_text()
    assert "The primary test: Welch's t-test with the difference of means and its interval, on all runs." in welch
