"""The analysis of a sweep: statistics against scipy on planted effects, fANOVA on a planted dominant
hyperparameter, the report CLI and the notebook on a real tiny sweep, and bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

from lstm_odyssey import analysis, train
from lstm_odyssey.analysis.hyperparams import POOLED
from lstm_odyssey.config import load_config
from lstm_odyssey.results import load_results
from lstm_odyssey.schema import AnalysisConfig

ROOT = Path(__file__).resolve().parents[1]
SWEEP_CELLS = ("vanilla", "nfg", "cifg")
RUNS_PER_CELL = 3


# -- constructed data -----------------------------------------------------------------------------------
def frame(groups: dict[str, np.ndarray], task: str = "toy", metric: str = "mse", val_noise: float = 0.0) -> pd.DataFrame:
    """Runs of a fake sweep: one row per test value, the validation metric a noisy copy of it."""
    rng = np.random.default_rng(1)
    rows = []
    for cell, values in groups.items():
        for i, y in enumerate(values):
            rows.append({
                "status": "ok", "cell": cell, "task": task, "metric": metric, f"test_{metric}": float(y),
                f"val_{metric}": float(y + val_noise * rng.normal()), "stopped_by": "early_stopping" if i % 2 else "epoch_cap",
                "run_dir": f"/sweep/{cell}_{i}",
            })
    return pd.DataFrame(rows)


def shift_for_p(base: np.ndarray, target_p: float) -> float:
    """The shift of `base` whose Welch test against `base` has p-value `target_p` (same variance, so exact). The
    rank test's p of the same shift is a step function of it: near `target_p`, not equal."""
    return optimize.brentq(lambda d: stats.ttest_ind(base + d, base, equal_var=False).pvalue - target_p, 1e-9, 10.0)


@pytest.fixture(scope="module")
def planted() -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    ref = rng.normal(1.0, 0.1, 30)
    groups = {
        "vanilla": ref,
        "nfg": ref + 0.2 + rng.normal(0, 0.02, 30),  # clearly worse (higher mse)
        "cifg": ref.copy(),  # identical to the reference
        "np": ref + shift_for_p(ref, 0.03),  # raw p near 0.03: significant alone, not after Holm over 3 cells
    }
    return frame(groups), groups


T_TEST = AnalysisConfig(primary="t")  # the plan's alternative primary test: Welch's t-test in an unpaired study


def test_unpaired_p_values_match_scipy(planted):
    """Runs without a trial index are unpaired: the primary test is Mann–Whitney with the two-sample
    Hodges–Lehmann shift (the median of all differences); `primary=t` makes it Welch's t-test."""
    df, groups = planted
    sig = analysis.significance(df, subsets=("all",))
    welch = analysis.significance(df, T_TEST, subsets=("all",))
    for cell in ("nfg", "cifg", "np"):
        a, b = groups[cell], groups["vanilla"]
        row = sig[sig["cell"] == cell].iloc[0]
        assert (row["test"], row["design"]) == ("rank", "unpaired")
        assert row["p"] == pytest.approx(stats.mannwhitneyu(a, b).pvalue, rel=1e-9)
        assert row["diff"] == pytest.approx(np.median(np.subtract.outer(a, b)))
        assert row["ci_low"] <= row["diff"] <= row["ci_high"]
        assert (row["n"], row["n_ref"]) == (30, 30)
        row = welch[welch["cell"] == cell].iloc[0]
        expected = stats.ttest_ind(a, b, equal_var=False)
        ci = expected.confidence_interval(0.95)
        assert row["test"] == "t" and row["p"] == pytest.approx(expected.pvalue, rel=1e-9)
        assert row["diff"] == pytest.approx(a.mean() - b.mean())
        assert (row["ci_low"], row["ci_high"]) == (pytest.approx(ci.low, rel=1e-9), pytest.approx(ci.high, rel=1e-9))


def test_planted_worse_cell_is_flagged_identical_is_not(planted):
    df, groups = planted
    sig = analysis.significance(df, subsets=("all",)).set_index("cell")
    assert sig.loc["nfg", "verdict"] == "worse"
    assert sig.loc["cifg", "verdict"] == "n.s."
    assert sig.loc["cifg", "p"] == pytest.approx(1.0) and sig.loc["cifg", "diff"] == 0.0
    # nfg is worse by 0.2, a hundred times the plan's margin for an MSE: shown beyond δ, and not within it
    assert sig.loc["nfg", "margin"] == AnalysisConfig().margin["mse"]
    assert sig.loc["nfg", "equivalence"] == "beyond δ" and sig.loc["nfg", "p_within"] > 0.5
    assert sig.loc["nfg", "diff"] == pytest.approx(0.2, abs=0.02)


def test_holm_correction_changes_the_verdict_where_it_should(planted):
    df, groups = planted
    for plan in (AnalysisConfig(), T_TEST):
        sig = analysis.significance(df, plan, subsets=("all",)).set_index("cell")
        p = sig.loc["np", "p"]
        if plan.primary == "t":
            assert p == pytest.approx(0.03, rel=1e-6)
        else:
            assert p == pytest.approx(stats.mannwhitneyu(groups["np"], groups["vanilla"]).pvalue, rel=1e-9)
            assert 0.025 < p < 0.05
        # np has the second smallest of three p-values (cifg's is 1): Holm multiplies it by 2.
        assert sig.loc["np", "p_holm"] == pytest.approx(2 * p, rel=1e-6)
        assert sig.loc["np", "verdict"] == "n.s."
        # Compared alone there is nothing to correct for, and the same data is significant.
        alone = analysis.significance(df[df["cell"].isin(["vanilla", "np"])], plan, subsets=("all",)).set_index("cell")
        assert alone.loc["np", "p_holm"] == pytest.approx(p, rel=1e-9)
        assert alone.loc["np", "verdict"] == "worse"


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    np.testing.assert_allclose(analysis.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    out = analysis.holm([0.2, np.nan, 0.9])
    assert np.isnan(out[1]) and out[0] == pytest.approx(0.4) and out[2] == pytest.approx(0.9)


def test_better_cell_and_higher_is_better_metric():
    rng = np.random.default_rng(3)
    ref = rng.normal(0.5, 0.05, 20)
    df = frame({"vanilla": ref, "gru": ref - 0.1}, metric="mse")
    assert analysis.significance(df, subsets=("all",))["verdict"].tolist() == ["better"]
    df = frame({"vanilla": ref, "gru": ref - 0.1}, metric="accuracy")  # lower accuracy is worse
    assert analysis.significance(df, subsets=("all",))["verdict"].tolist() == ["worse"]


def test_top_runs_and_summary():
    rng = np.random.default_rng(4)
    df = frame({"vanilla": rng.normal(1, 0.3, 40), "nfg": rng.normal(2, 0.3, 20)}, val_noise=0.05)
    df.loc[len(df)] = {"status": "diverged", "cell": "nfg", "task": "toy", "stopped_by": "diverged"}
    df.loc[len(df)] = {"status": "failed", "cell": "nfg", "task": "toy"}
    prepared = analysis.prepare(df)
    summary = analysis.summarize(prepared).set_index("cell")
    assert list(summary.index) == ["vanilla", "nfg"]  # the reference first
    assert summary.loc["nfg", ["runs", "ok", "diverged", "failed"]].tolist() == [22, 20, 1, 1]
    ok = prepared[prepared["ok"] & (prepared["cell"] == "vanilla")]
    best4 = ok.nsmallest(4, "val_score")  # 10 % of 40 by validation
    assert summary.loc["vanilla", "n_top"] == 4
    assert summary.loc["vanilla", "top_mean"] == pytest.approx(best4["test_score"].mean())
    assert summary.loc["vanilla", "mean"] == pytest.approx(ok["test_score"].mean())
    assert summary.loc["vanilla", "sd"] == pytest.approx(ok["test_score"].std(ddof=1))
    assert summary.loc["vanilla", "best_test"] == pytest.approx(best4["test_score"].iloc[0])
    assert summary.loc["vanilla", "best_run"] == Path(best4["run_dir"].iloc[0]).name
    assert summary.loc["vanilla", "epoch_capped"] == pytest.approx(0.5)


def test_no_reference_and_too_few_runs_are_reported_not_raised():
    df = frame({"nfg": np.array([1.0, 1.1, 1.2]), "cifg": np.array([1.0, 1.2, 1.3])})
    sig = analysis.significance(df)
    assert (sig["verdict"] == "untested").all()
    assert sig["note"].str.contains("no runs of the reference cell 'vanilla'").all()
    df = frame({"vanilla": np.array([1.0, 1.1, 1.2]), "nfg": np.array([2.0])})
    row = analysis.significance(df, subsets=("all",)).iloc[0]
    assert row["verdict"] == "untested" and row["note"] == "too few runs to compare"


# -- importance -------------------------------------------------------------------------------------------
def random_search(n: int, dominant: str, seed: int) -> pd.DataFrame:
    """Random search over the paper's space (docs/equations.md, "Study protocol") where only `dominant` matters (plus a little noise),
    and the cell `nfg` adds a constant."""
    rng = np.random.default_rng(seed)
    rows = []
    for cell in ("vanilla", "nfg"):
        for i in range(n):
            hp = {
                "optim.lr": 10 ** rng.uniform(-6, -2), "model.hidden_size": int(10 ** rng.uniform(np.log10(20), np.log10(200))),
                "optim.momentum": 1 - 10 ** rng.uniform(-2, 0), "trainer.input_noise": rng.uniform(0, 1), "trainer.seed": i,
            }
            signal = {"optim.lr": (np.log10(hp["optim.lr"]) + 3.5) ** 2 / 6, "trainer.input_noise": 3 * hp["trainer.input_noise"]}
            y = signal[dominant] + 0.3 * (cell == "nfg") + 0.05 * rng.normal()
            rows.append({"status": "ok", "cell": cell, "task": "toy", "metric": "nll", "val_nll": y, "test_nll": y, **hp})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("dominant", ["optim.lr", "trainer.input_noise"])
def test_importance_recovers_a_planted_dominant_hyperparameter(dominant):
    df = random_search(60, dominant, seed=5)
    assert analysis.hyperparameters(df) == ["optim.lr", "model.hidden_size", "optim.momentum", "trainer.input_noise"]
    imp = analysis.importance(df, n_trees=32)
    assert set(imp["cell"]) == {"vanilla", "nfg", POOLED}
    for cell, g in imp.groupby("cell"):
        g = g.set_index("param")
        assert g["importance"].idxmax() == dominant, (cell, g)
        assert g.loc[dominant, "importance"] > 0.6
        assert g["importance"].sum() == pytest.approx(1.0)
    pooled = imp[imp["cell"] == POOLED].set_index("param")
    assert pooled.loc["cell", "scale"] == "categorical"
    # the planted cell offset matters more than any parameter that does nothing
    assert pooled.loc["cell", "importance"] > pooled.drop([dominant, "cell"])["importance"].max()


def test_scales_follow_the_papers_sampling():
    df = random_search(10, "optim.lr", seed=0)
    assert analysis.scale_of("optim.lr", df["optim.lr"]) == "log"
    assert analysis.scale_of("model.hidden_size", df["model.hidden_size"]) == "log"
    assert analysis.scale_of("optim.momentum", df["optim.momentum"]) == "log1m"
    assert analysis.scale_of("trainer.input_noise", df["trainer.input_noise"]) == "linear"
    np.testing.assert_allclose(analysis.transform(df["optim.momentum"], "log1m"), np.log10(1 - df["optim.momentum"]))


def test_marginals_and_lr_by_hidden():
    df = random_search(80, "optim.lr", seed=6)
    marg = analysis.marginals(df, params=["optim.lr"], bins=6)
    van = marg[marg["cell"] == "vanilla"]
    assert van["n"].sum() == 80 and len(van) == 6
    # binned means recomputed by hand; the valley of the planted (log lr + 3.5)^2 is in the middle bins
    x = np.log10(df.loc[df["cell"] == "vanilla", "optim.lr"])
    y = df.loc[df["cell"] == "vanilla", "test_nll"]
    edges = np.linspace(np.log10(df["optim.lr"]).min(), np.log10(df["optim.lr"]).max(), 7)
    first = y[(x >= edges[0]) & (x < edges[1])]
    assert van.iloc[0]["mean"] == pytest.approx(first.mean())
    assert van.iloc[0]["ci_high"] - van.iloc[0]["mean"] == pytest.approx(
        stats.t.ppf(0.975, len(first) - 1) * first.std(ddof=1) / np.sqrt(len(first)))
    assert abs(van.loc[van["mean"].idxmin(), "x"] + 3.5) < 1.0
    lrh = analysis.lr_by_hidden(df)
    assert len(lrh) == 3 and lrh["n"].sum() == 160
    assert (abs(lrh["best_log10_lr"] + 3.5) < 1.0).all()  # hidden size does not shift the planted optimum
    assert (abs(lrh["vertex_log10_lr"] + 3.5) < 0.3).all()
    assert lrh["shift_p"].iloc[0] > 0.05


def test_lr_by_hidden_detects_a_planted_shift():
    df = random_search(80, "optim.lr", seed=7)
    # move the optimum by two decades from the smallest to the largest hidden size
    log_h = np.log10(df["model.hidden_size"])
    shift = 2 * (log_h - log_h.min()) / (log_h.max() - log_h.min())
    df["test_nll"] = (np.log10(df["optim.lr"]) + 4.5 - shift) ** 2 / 6 + 0.05 * np.random.default_rng(0).normal(size=len(df))
    lrh = analysis.lr_by_hidden(df)
    assert lrh["shift_p"].iloc[0] < 1e-6
    assert lrh["vertex_log10_lr"].is_monotonic_increasing


# -- a real tiny sweep -------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def sweep(tmp_path_factory) -> Path:
    """3 cells × 3 random-search trials on a tiny adding problem, plus one failed run: a real sweep folder."""
    root = tmp_path_factory.mktemp("sweep")
    rng = np.random.default_rng(0)
    job = 0
    for trial in range(RUNS_PER_CELL):
        lr, hidden = 10 ** rng.uniform(-2, -0.5), int(rng.integers(4, 13))
        for cell in SWEEP_CELLS:
            cfg = load_config([
                f"cell={cell}", "data.length=10", "data.n_train=64", "data.n_val=32", "data.n_test=32",
                f"model.hidden_size={hidden}", "trainer.epochs=2", "trainer.batch_size=32", "optim=sgd",
                f"optim.lr={lr}", f"trainer.seed={trial}", "trainer.device=cpu", "trainer.progress=false",
            ])
            train.run(cfg, root / f"{job}_adding_{cell}")
            job += 1
    cfg = load_config(["cell=nfg", "data.length=10", "data.n_train=64", "data.n_val=32", "data.n_test=32"])
    cfg["optim"]["name"] = "no-such-optimiser"  # a crashed job: its record says failed
    with pytest.raises(ValueError):
        train.run(cfg, root / f"{job}_adding_nfg")
    return root


@pytest.mark.slow
def test_report_cli_end_to_end(sweep, tmp_path):
    out = tmp_path / "report"
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "-m", "lstm_odyssey.analysis", str(sweep), "--out", str(out), "--wandb"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out / "report.md")
    report = (out / "report.md").read_text()
    sections = ("## Analysis plan", "## Design", "## Verdicts against the reference", "## Findings",
                "## Significant cells (all pairs)", "## Seed noise and code versions", "## Summary per task and cell",
                "## What could not be computed")
    assert [report.index(s) for s in sections] == sorted(report.index(s) for s in sections)
    assert "Primary test: Wilcoxon signed-rank test with the Hodges–Lehmann estimate" in report
    assert "- adding: unpaired: the records carry no trial index" in report  # runs made outside a study
    assert "On adding (10 runs of 3 cells, 9 ok; test mse, lower is better)" in report
    assert "W&B: logged as job_type analysis" in report

    summary = pd.read_csv(out / "tables" / "summary.csv")
    assert summary["cell"].tolist() == list(SWEEP_CELLS)
    assert summary.set_index("cell")["runs"].to_dict() == {"vanilla": 3, "nfg": 4, "cifg": 3}
    assert summary.set_index("cell")["failed"].to_dict() == {"vanilla": 0, "nfg": 1, "cifg": 0}
    records = load_results(sweep)
    van = records[(records["cell"] == "vanilla") & (records["status"] == "ok")]
    assert summary.set_index("cell").loc["vanilla", "mean"] == pytest.approx(van["test_mse"].mean())
    sig = pd.read_csv(out / "tables" / "significance.csv")
    assert set(sig["cell"]) == {"nfg", "cifg"} and {"all", "top own"} <= set(sig["subset"])
    assert all(sorted(g) == ["cifg", "nfg"] for _, g in sig.groupby("subset")["cell"])  # every cell, every subset
    assert set(sig["subset"]) - {"all", "top own"} <= {s for s in sig["subset"] if s.startswith(("lr ", "hidden "))}
    assert (sig["design"] == "unpaired").all() and (sig["test"] == "rank").all()
    # 3 runs per cell: the top 10 % is one run, too few to compare
    top = sig[sig["subset"] == "top own"]
    assert (top["verdict"] == "untested").all() and (top["note"] == "too few runs to compare").all()
    primary = sig[sig["subset"] == "all"].set_index("cell")
    assert primary["p"].notna().all()
    # the crashed nfg job stays in the comparison as nfg's worst run instead of being dropped
    assert primary.loc["nfg", ["n", "n_ref", "n_failed"]].tolist() == [4, 3, 1]
    assert primary.loc["cifg", ["n", "n_ref", "n_failed"]].tolist() == [3, 3, 0]
    imp = pd.read_csv(out / "tables" / "importance.csv")
    assert set(imp["cell"]) == {POOLED} and {"optim.lr", "model.hidden_size", "cell"} <= set(imp["param"])
    assert "fANOVA needs at least 8" in report  # per-cell importance with 3 runs each
    assert len(pd.read_csv(out / "tables" / "runs.csv")) == 10
    cost = pd.read_csv(out / "tables" / "compute.csv").iloc[0]  # ten single runs: ten processes
    assert (cost["runs"], cost["packs"], cost["single_runs"]) == (10, 0, 10) and "## Compute" in report
    assert cost["process_hours"] == pytest.approx(records["wall_seconds"].sum() / 3600)
    figures = {p.name for p in (out / "figures").glob("*.png")}
    assert {"fig3_adding.png", "marginals_adding.png", "importance_adding.png", "time_adding.png",
            "lr_hidden_adding.png"} <= figures
    for name in figures:
        assert (out / "figures" / name).stat().st_size > 5000
        assert f"figures/{name}" in report


def test_compute_counts_a_pack_once_by_its_longest_trial():
    from lstm_odyssey.analysis.stats import study_cost

    runs = pd.DataFrame({
        "task": ["a"] * 5 + ["b"],
        "pack_id": ["p", "p", "q", None, None, None],
        "wall_seconds": [3600.0, 1800.0, 900.0, 360.0, 36.0, 7200.0],
        "device": ["cpu"] * 5 + ["cuda"],
        "torch": ["2.13.0+cpu"] * 6,
    })
    cost = study_cost(runs).set_index("task")
    assert cost.loc["a", ["runs", "packed_runs", "packs", "single_runs"]].tolist() == [5, 3, 2, 2]
    assert cost.loc["a", "process_hours"] == pytest.approx((3600 + 900 + 360 + 36) / 3600)
    assert cost.loc["b", "process_hours"] == pytest.approx(2.0) and cost.loc["b", "devices"] == "cuda"


def test_write_report_on_bad_input(tmp_path, sweep):
    empty = tmp_path / "empty"
    empty.mkdir()
    report = analysis.write_report(empty, tmp_path / "r0").read_text()
    assert "no run records (result.json) found" in report and "## What could not be computed" in report

    # a sweep without vanilla runs: everything else is still computed
    no_ref = tmp_path / "no_ref"
    for record in sweep.rglob("result.json"):
        if "vanilla" not in record.parent.name:
            (no_ref / record.parent.name).mkdir(parents=True)
            (no_ref / record.parent.name / "result.json").write_bytes(record.read_bytes())
    (no_ref / "broken").mkdir()
    (no_ref / "broken" / "result.json").write_text("{not json")  # a half-written record
    path = analysis.write_report([no_ref], tmp_path / "r1")
    report = path.read_text()
    assert "no vanilla runs, so no cell could be compared with vanilla" in report
    assert "no runs of the reference cell 'vanilla'" in report
    assert "skipping unreadable record" in report
    assert (tmp_path / "r1" / "figures" / "fig3_adding.png").exists()
    assert pd.read_csv(tmp_path / "r1" / "tables" / "summary.csv")["cell"].tolist() == ["nfg", "cifg"]


@pytest.mark.slow
def test_notebook_executes_on_the_sweep(sweep, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(ROOT / "notebooks" / "odyssey_analysis.ipynb", as_version=4)
    assert "parameters" in nb.cells[1].metadata.get("tags", [])
    monkeypatch.setenv("LSTM_ODYSSEY_SWEEP", str(sweep))  # the kernel inherits the environment
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert f"sweep: ['{sweep}']" in text
    assert "10 runs;" in text
    assert "analysis plan: AnalysisConfig(reference='vanilla', primary='rank'" in text  # the study's plan (defaults)
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 5
    # no stray warnings (a TqdmWarning, a deprecation) in the outputs, and no tool it does not install
    stderr = [o["text"] for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("name") == "stderr"]
    assert not stderr and "Warning" not in text
    assert not any("papermill" in c.source for c in nb.cells)


def test_load_reads_a_runs_table_without_counting_runs_twice(sweep, tmp_path):
    table = tmp_path / "runs.parquet"
    load_results(sweep).to_parquet(table, index=False)
    assert len(analysis.load(table)) == 10
    assert len(analysis.load(sweep, table)) == 10  # the same records from the folder and the table
    summary = analysis.summarize(analysis.load(table)).set_index("cell")
    assert summary["runs"].to_dict() == {"vanilla": 3, "nfg": 4, "cifg": 3}
