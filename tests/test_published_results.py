"""The README and the documentation's results pages (docs/results/) quote the published studies; every figure they
quote must come out of their committed records, and the main command run afresh must give the published quick
study's numbers again."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lstm_odyssey.results import load_results
from lstm_odyssey.sweep.collect import summary_table

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = ROOT / "docs" / "results"  # the documentation's results pages (mkdocs.yml)
STUDY = ROOT / "results" / "published" / "quick"  # `lstm-odyssey-train -m +sweep=quick hydra.sweep.dir=<this>`


def flat(text: str) -> str:
    """`text` with every run of whitespace as one space: a page's line breaks do not change what it says."""
    return " ".join(text.split())


def readme_table(table) -> str:
    """The results page's table of the main command: median and best objective per cell, 4 significant digits."""
    cells = list(table["cell"])
    rows = ["| cell | " + " | ".join(cells) + " |", "|---|" + "---|" * len(cells)]
    for column in ("median", "best"):
        rows.append(f"| {column} | " + " | ".join(f"{v:.4g}" for v in table[column]) + " |")
    return "\n".join(rows)


@pytest.mark.skipif(not STUDY.is_dir(), reason="the published quick study is not in this checkout")
def test_the_results_page_quotes_the_committed_quick_study():
    table = summary_table(load_results(STUDY))
    assert len(table) == 13 and (table["ok"] == 3).all()
    assert readme_table(table) in (PAGES / "quick.md").read_text()


def early_epochs(sweep: Path) -> dict[str, tuple]:
    """Each job's hyperparameters and its first REPRODUCE_EPOCHS epochs (training loss, validation MSE)."""
    records = [json.loads(p.read_text()) for p in sweep.rglob("result.json")]
    return {f"{r['cell']}/{r['trial']}": (r["hparams"], [(h["train_loss"], h["val_mse"]) for h in r["history"][:REPRODUCE_EPOCHS]])
            for r in records}


# The adding problem's loss falls sharply around epoch 5 of this 10-epoch study, and there the rounding of another CPU
# (AVX-512 against AVX2 kernels: measured on an AMD EPYC against the machine that made the published study) moves a
# run's final objective by up to 70 %. The first 3 epochs agree to 4e-6 across those CPUs, while any change to the
# data, the initialisation, the cell, the loss or the optimiser moves them by far more than REPRODUCE_RTOL.
REPRODUCE_EPOCHS = 3
REPRODUCE_RTOL = 1e-4


@pytest.mark.slow
@pytest.mark.skipif(not STUDY.is_dir(), reason="the published quick study is not in this checkout")
def test_the_main_command_afresh_gives_the_published_quick_study_again(tmp_path):
    """`lstm-odyssey-train -m +sweep=quick`, the README's main command, into a fresh folder: every one of the 39 jobs
    trains with its committed record's hyperparameters and repeats its first epochs, so a change that moves the
    numbers fails here the day it lands (then regenerate the study with its own command, docs/results/quick.md).
    The runs stop at the epochs compared and the report is left out: epochs 1-3 do not depend on the cap, and the
    report of the committed records is the next test's (a third of CI's time for this test otherwise)."""
    env = dict(os.environ, WANDB_MODE="disabled", MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, "-m", "lstm_odyssey.cli", "-m", "+sweep=quick", f"hydra.sweep.dir={tmp_path}",
                           f"trainer.epochs={REPRODUCE_EPOCHS}", "sweep.report=false"],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    fresh, published = early_epochs(tmp_path), early_epochs(STUDY)
    assert len(published) == 39 and set(fresh) == set(published)
    uncapped = lambda hparams: {k: v for k, v in hparams.items() if k != "trainer.epochs"}  # noqa: E731
    assert {job: uncapped(fresh[job][0]) for job in fresh} == {job: uncapped(published[job][0]) for job in published}
    moved = {job: (fresh[job][1], published[job][1]) for job in published
             if any(abs(a - b) > REPRODUCE_RTOL * abs(b)
                    for new, old in zip(fresh[job][1], published[job][1], strict=True) for a, b in zip(new, old))}
    assert not moved, f"{len(moved)} of 39 jobs moved in their first {REPRODUCE_EPOCHS} epochs (fresh, published): {moved}"


@pytest.mark.slow
@pytest.mark.skipif(not STUDY.is_dir(), reason="the published quick study is not in this checkout")
def test_the_committed_report_tables_regenerate_from_the_committed_records(tmp_path):
    from lstm_odyssey.analysis import write_report

    copy = tmp_path / "quick"
    shutil.copytree(STUDY / "adding", copy / "adding")
    write_report([copy], tmp_path / "report")
    for name in ("summary.csv", "significance.csv"):
        assert (tmp_path / "report" / "tables" / name).read_text() == (STUDY / "report" / "tables" / name).read_text(), name


def modern_readme_table(report: Path | str) -> str:
    """The results page's table of the modern study: each cell against vanilla over the paired trials (all pairs),
    beside its best run by validation and the share of its runs cut off by the epoch cap."""
    import pandas as pd

    tables = Path(report) / "tables"
    sig = pd.read_csv(tables / "significance.csv")
    sig = sig[(sig["task"] == "jsb_chorales") & (sig["subset"] == "all")].set_index("cell")
    best = pd.read_csv(tables / "best_by_validation.csv")
    best = best[(best["task"] == "jsb_chorales") & ~best["published"]].set_index("cell")
    rows = ["| cell | pairs | test NLL − vanilla, Hodges–Lehmann (95 % CI) | Wilcoxon p (Holm) | W/T/L | verdict | "
            "within ±δ? | best test NLL | capped |",
            "|---|---:|---|---:|---|---|---|---:|---:|"]
    for cell, b in best.iterrows():
        if cell in sig.index:
            r = sig.loc[cell]
            rows.append(f"| {cell} | {int(r['n'])} | {r['diff']:+.3f} ({r['ci_low']:+.3f} to {r['ci_high']:+.3f}) | "
                        f"{r['p_holm']:.3g} | {int(r['wins'])}/{int(r['ties'])}/{int(r['losses'])} | {r['verdict']} | "
                        f"{r['equivalence']} | {b['best_test']:.3f} | {b['capped']:.0%} |")
        else:
            rows.append(f"| {cell} | | (the reference) | | | | | {b['best_test']:.3f} | {b['capped']:.0%} |")
    return "\n".join(rows)


MODERN = ROOT / "results" / "modern_first_look"  # the modern cells' first look (sweeps/modern_first_look.yaml)
MODERN_REPORT = MODERN / "report"


@pytest.mark.skipif(not (MODERN_REPORT / "tables").is_dir(), reason="the modern study's report is not committed yet")
def test_the_results_page_quotes_the_committed_modern_report():
    assert modern_readme_table(MODERN_REPORT) in (PAGES / "modern.md").read_text()


@pytest.mark.skipif(not (MODERN / "multirun.yaml").exists(), reason="the modern cells' first look is not committed")
def test_the_first_look_config_is_what_wrote_the_first_look():
    """`+sweep=modern_first_look` keeps the budget, search space and study name the committed first look ran under,
    so that its command still resumes it after `modern` took the budget its pilot chose."""
    from omegaconf import OmegaConf

    from lstm_odyssey.config import load_config

    wrote = OmegaConf.to_container(OmegaConf.load(MODERN / "multirun.yaml"))
    now = load_config(["+sweep=modern_first_look"])
    for block, keys in {"trainer": ("epochs", "patience", "min_improvement", "batch_size"),
                        "sweep": ("name", "n_trials", "seed", "sampler", "paired", "grid", "params")}.items():
        assert {k: now[block][k] for k in keys} == {k: wrote[block][k] for k in keys}, block


PILOT = ROOT / "results" / "modern_pilot"  # sweeps/modern_pilot.yaml: 10 cells x 6 listed learning rates


@pytest.mark.skipif(len(list(PILOT.glob("jsb_chorales/*/*/result.json"))) < 60, reason="the modern study's pilot is not complete")
def test_the_modern_budget_is_what_its_pilot_replays_to():
    """sweeps/modern.yaml gives its lr floor, cap and plateau rule with the capped shares and costs the exact replay
    of the pilot's runs gives; the chosen budget caps at most 20 % of them."""
    from lstm_odyssey.analysis.stopping import what_if
    from lstm_odyssey.config import load_config
    from lstm_odyssey.results import find_records, read_record

    study = load_config(["+sweep=modern"])
    floor, cap = study["sweep"]["params"]["optim"]["lr"]["low"], study["trainer"]["epochs"]
    rule, patience = study["trainer"]["min_improvement"], study["trainer"]["patience"]
    records = [read_record(p.parent) for p in find_records(PILOT)]
    table = what_if(records, [rule, 2 * rule], [patience], [cap, 300], [floor]).set_index(["min_improvement", "cap"])
    chosen, shorter, stricter = table.loc[(rule, cap)], table.loc[(rule, 300)], table.loc[(2 * rule, cap)]
    assert chosen["capped"] <= 0.20
    config = flat((ROOT / "sweeps" / "modern.yaml").read_text().replace("#", " "))
    def percent(share: float) -> str:
        return f"{share:.0%}".replace("%", " %")  # the config's typography: 12 %

    quoted = [f"this caps {percent(chosen['capped'])}", f"a cap of 300 would cap {percent(shorter['capped'])}",
              f"save {percent(1 - shorter['epochs'] / chosen['epochs'])} of the epochs",
              f"end a run {shorter['worse_max']:.2f} nats short", f"A 0.2 % rule caps {percent(stricter['capped'])}",
              f"{stricter['top_worse_max']:.2f} nats worse ({chosen['top_worse_max']:.3f} at 0.1 %)"]
    for text in quoted:
        assert text in config, text


LONGLAG_PILOT = ROOT / "results" / "modern_longlag_pilot"  # sweeps/modern_longlag_pilot.yaml: 10 cells x 2 trials


@pytest.mark.skipif(len(list(LONGLAG_PILOT.glob("adding_long/*/*/result.json"))) < 20,
                    reason="the long-lag pilot is not complete")
def test_the_long_lag_budget_is_what_its_pilot_measured():
    """sweeps/modern_longlag.yaml quotes its pilot: the epoch by which the learning cells left the flat start, the
    cell that never did, the seconds per epoch of a pack of two, and the exact replay of its caps."""
    import numpy as np

    from lstm_odyssey.analysis.stopping import what_if
    from lstm_odyssey.config import load_config
    from lstm_odyssey.results import find_records, read_record

    study = load_config(["+sweep=modern_longlag"])
    cap, patience = study["trainer"]["epochs"], study["trainer"]["patience"]
    records = [read_record(p.parent) for p in find_records(LONGLAG_PILOT)]
    left = {}  # cell -> the latest epoch at which one of its runs first fell below a tenth of the baseline's MSE
    for r in records:
        first = next((e["epoch"] for e in r["history"] if e["val_mse"] < 0.167 / 10), np.inf)
        left[r["cell"]] = max(left.get(r["cell"], 0), first)
    never = sorted(c for c, e in left.items() if e == np.inf)
    learnt = [e for e in left.values() if e < np.inf]
    per_epoch = [r["wall_seconds"] / r["epochs_run"] for r in records]
    table = what_if(records, [None], [patience], [cap - 5, cap, 30], [None]).set_index("cap")
    config = flat((ROOT / "sweeps" / "modern_longlag.yaml").read_text().replace("#", " "))
    quoted = [f"{len(learnt)} of the pilot's {len(left)} cells", f"by epoch {max(learnt)}", "IndRNN never did",
              f"measured {min(per_epoch):.0f} to {max(per_epoch):.0f} s per epoch for a pack of two",
              f"{cap} epochs end every run within {table.loc[cap, 'worse_max']:.1e}".replace("e-0", "e-"),
              f"{cap - 5} epochs one run {table.loc[cap - 5, 'worse_max']:.3f} (δ) short"]
    assert never == ["indrnn"] and table.loc[30, "worse_max"] < table.loc[cap, "worse_max"] <= 0.3 * 0.002
    for text in quoted:
        assert text in config, text


def test_the_speed_page_quotes_the_committed_bench_of_the_modern_cells_at_the_studys_shapes():
    """docs/speed.md's table at JSB's shapes is `format_table` of results/modern/speed_cpu.json, which the
    command printed above it wrote (the file records its own command line)."""
    from lstm_odyssey.bench import format_table

    bench = json.loads((ROOT / "results" / "modern" / "speed_cpu.json").read_text())
    page = (ROOT / "docs" / "speed.md").read_text()
    assert format_table(bench) in page
    assert f"\n{bench['env']['command']}\n" in page
    assert (bench["config"]["input"], bench["config"]["batch"], bench["env"]["threads"]) == (88, 16, 1)


REPRODUCTION = ROOT / "results" / "odyssey_jsb"
SPEECH = ROOT / "results" / "odyssey_uea" / "adam"  # the second task (sweeps/odyssey_uea_adam.yaml)
REPORTED = (sorted(p.parent.parent for p in REPRODUCTION.glob("*/report/report.md"))
            + [s for s in (MODERN, SPEECH) if (s / "report" / "report.md").exists()])
TABLES = ("summary.csv", "significance.csv", "paper_findings.csv", "best_by_validation.csv", "matches_reference.csv", "seed_noise.csv",
          "plan.csv")


@pytest.mark.slow
@pytest.mark.skipif(not REPORTED, reason="no published study under results/odyssey_jsb/ or results/modern*/ has a committed report yet")
@pytest.mark.parametrize("study", REPORTED, ids=lambda p: p.relative_to(ROOT / "results").as_posix())
def test_the_published_reports_regenerate_from_their_records(tmp_path, study):
    """`lstm-odyssey-report <study>` on the committed records gives the committed tables (the paper's findings
    only where the study has the paper's cells)."""
    from benchmarks.report import copy_study
    from lstm_odyssey.analysis import write_report

    write_report([copy_study(study, tmp_path)], tmp_path / "report")  # its records and plan, not its report
    committed = [name for name in TABLES if (study / "report" / "tables" / name).exists()]
    assert {"summary.csv", "significance.csv"} <= set(committed)
    for name in committed:
        assert_same_table(tmp_path / "report" / "tables" / name, study / "report" / "tables" / name)


def assert_same_table(got: Path, committed: Path) -> None:
    """The same table: every text cell (verdicts, details with their rounded figures) and every column as written;
    numbers equal to 1e-9 relative. On another CPU the last of a float's 17 digits can differ (numpy's SIMD sums
    add in another order: a bootstrap bound of odyssey_uea/adam came out 2e-16 apart, relative, on an AVX2 EPYC
    against the AVX-512 one that wrote it); any real change to data or analysis moves far more than that."""
    import numpy as np
    import pandas as pd

    if got.read_text() == committed.read_text():
        return
    new, old = pd.read_csv(got), pd.read_csv(committed)
    assert list(new.columns) == list(old.columns) and new.shape == old.shape, committed.name
    for column in old.columns:
        if pd.api.types.is_numeric_dtype(old[column]) and pd.api.types.is_numeric_dtype(new[column]):
            assert np.allclose(new[column], old[column], rtol=1e-9, atol=0, equal_nan=True), (committed.name, column)
        else:
            assert new[column].fillna("").astype(str).tolist() == old[column].fillna("").astype(str).tolist(), (
                committed.name, column)


PROTOCOLS = [name for name in ("adam", "paper") if (REPRODUCTION / name / "report" / "tables").is_dir()]
# every study the verdict tables quote: its folder and its task (the second task's column once its report exists)
VERDICT_STUDIES = {**{name: (REPRODUCTION / name, "jsb_chorales") for name in PROTOCOLS},
                   **({"uea": (SPEECH, "JapaneseVowels")} if (SPEECH / "report" / "tables").is_dir() else {})}


def reproduction_tables() -> tuple[dict, dict]:
    """Each study's `paper_findings` and `best_by_validation` on its task, from its committed report (which the
    regeneration test above rebuilds from the records)."""
    import pandas as pd

    findings, best = {}, {}
    for name, (study, task) in VERDICT_STUDIES.items():
        tables = study / "report" / "tables"
        f, b = pd.read_csv(tables / "paper_findings.csv"), pd.read_csv(tables / "best_by_validation.csv")
        findings[name], best[name] = f[f["task"] == task], b[b["task"] == task]
    return findings, best


@pytest.mark.skipif(not PROTOCOLS, reason="no reproduction study under results/odyssey_jsb/ has a committed report yet")
def test_the_readme_and_the_results_page_quote_the_verdicts_of_the_committed_reproduction_reports():
    """The README's brief verdict table and the results page's full verdict and best-run tables are what
    `lstm-odyssey-verdicts [--brief]` prints for the committed studies."""
    from lstm_odyssey.analysis.odyssey import best_markdown, findings_markdown

    findings, best = reproduction_tables()
    assert findings_markdown(findings, brief=True) in README.read_text()
    page = (PAGES / "index.md").read_text()
    assert findings_markdown(findings) in page
    assert best_markdown({name: best[name] for name in PROTOCOLS}) in page  # JSB's NLL beside the literature's
    if "uea" in best:
        assert best_markdown({"uea": best["uea"]}) in page


@pytest.mark.skipif("adam" not in PROTOCOLS, reason="the Adam protocol's report is not committed")
def test_the_readme_quotes_the_best_runs_and_run_counts_of_the_committed_studies():
    """The figures in the README's prose and results table: the Adam protocol's best vanilla and CIFG runs, the
    tuned best, and each published study's count of ok runs."""
    import pandas as pd

    readme = README.read_text()
    best = reproduction_tables()[1]["adam"].set_index("cell")
    assert f"vanilla {best.loc['vanilla', 'best_test']:.3f} and CIFG {best.loc['cifg', 'best_test']:.3f}" in readme
    tuned = pd.read_csv(REPRODUCTION / "tuned" / "report" / "tables" / "best_by_validation.csv")
    assert f"test NLL {tuned.loc[tuned['cell'] == 'cifg', 'best_test'].iloc[0]:.3f}" in readme
    for study, expected in [(REPRODUCTION / "adam", 450), (REPRODUCTION / "paper", 450),
                            (REPRODUCTION / "tuned", 30), (MODERN, 100), (STUDY, 39), (SPEECH, 450)]:
        records = [json.loads(p.read_text()) for p in study.rglob("result.json")]
        ok = sum(r["status"] == "ok" for r in records)
        assert len(records) == ok == expected and f"{ok}/{expected} runs" in readme, study


@pytest.mark.parametrize("study", ["tuned", "tuned_dropout"])
def test_the_results_page_quotes_the_tuned_best_of_the_committed_report(study):
    """The results page's tuned-best tables are `best_markdown` of each tuned study's committed table (which the
    regeneration test above rebuilds from its records)."""
    import pandas as pd

    from lstm_odyssey.analysis.odyssey import best_markdown

    tables = REPRODUCTION / study / "report" / "tables"
    if not (tables / "best_by_validation.csv").is_file():
        pytest.skip(f"results/odyssey_jsb/{study}/ has no committed report yet (the study is not complete)")
    best = pd.read_csv(tables / "best_by_validation.csv")
    assert best_markdown({study: best[best["task"] == "jsb_chorales"]}) in (PAGES / "index.md").read_text()


def test_the_readme_is_a_front_door_of_at_most_250_lines_whose_links_resolve():
    """The README stays short (the detail lives in docs/), and every relative link and image in it exists."""
    import re

    text = README.read_text()
    assert len(text.splitlines()) <= 250
    targets = [t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", text) if not t.startswith("http")]
    assert targets and not [t for t in targets if not (ROOT / t).exists()]


RERUN = REPRODUCTION / "rerun"  # odyssey_jsb_rerun: three Adam trials trained again at one code version


@pytest.mark.skipif(not (RERUN / "report").is_dir(), reason="the rerun study is not committed")
def test_the_results_page_quotes_the_rerun_at_one_code_version():
    """The figures of "One code version" come out of `python -m lstm_odyssey.analysis.replicates
    results/odyssey_jsb/rerun results/odyssey_jsb/adam`."""
    from lstm_odyssey.analysis.frame import load
    from lstm_odyssey.analysis.replicates import reruns

    table = reruns(load(RERUN), load(REPRODUCTION / "adam"))
    gap = table["difference"].abs()
    worst = table.assign(gap=gap).sort_values("gap", ascending=False).head(3)
    quoted = [f"{len(table)} runs", f"median\n|difference| {gap.median():.2g} nats",
              f"{int((gap <= 0.001).sum())} of {len(table)} within 0.001"]
    top = worst.iloc[0]
    quoted.append(f"{top['gap']:.3f} ({top['cell']}: {top['test']:.3f} against {top['test_before']:.3f})")
    quoted += [f"{row['gap']:.3f} ({row['cell'].upper()})" for _, row in worst.iloc[1:].iterrows()]
    page = flat((PAGES / "index.md").read_text())
    for text in quoted:
        assert flat(text) in page, text


SEEDS = REPRODUCTION / "seeds"  # odyssey_jsb_seeds: the Adam study's 5 best configurations x 9 cells x 3 seeds


def seed_noise_table(report: Path) -> str:
    """The results page's seed-noise table: per cell, the sd of the test NLL when only the seed changes and that of
    the paired difference to vanilla at the same seed, from the study's committed report."""
    import pandas as pd

    noise = pd.read_csv(report / "tables" / "seed_noise.csv")
    rows = ["| cell | configurations × seeds | sd of the test NLL | sd of the difference to vanilla |", "|---|---|---:|---:|"]
    for _, r in noise.iterrows():
        diff = "" if pd.isna(r["sd_seed_diff"]) else f"{r['sd_seed_diff']:.3f}"
        rows.append(f"| {r['cell']} | {int(r['configurations'])} × {int(r['seeds'])} | {r['sd_seed']:.3f} | {diff} |")
    return "\n".join(rows)


@pytest.mark.skipif(not (SEEDS / "report" / "tables" / "seed_noise.csv").exists(),
                    reason="the seed-noise study's report is not committed yet (the study is not complete)")
def test_the_results_page_quotes_the_seed_noise_of_the_committed_report():
    import pandas as pd

    page = (PAGES / "index.md").read_text()
    assert seed_noise_table(SEEDS / "report") in page
    median = f"{pd.read_csv(SEEDS / 'report' / 'tables' / 'seed_noise.csv')['sd_seed_diff'].median():.3f}"
    assert f"median {median}" in flat(page) and f"roughly {median}/√50" in flat(page)
    assert f"a median sd of {median}" in flat((ROOT / "README.md").read_text())


@pytest.mark.skipif(not (SEEDS / "report").is_dir(), reason="the seed-noise study's report is not committed yet")
def test_the_results_page_quotes_how_seed_0_repeats_the_adam_study():
    """Seed 0 of the seeds study repeats the Adam study's runs: the page's figures come out of `python -m
    lstm_odyssey.analysis.replicates results/odyssey_jsb/seeds results/odyssey_jsb/adam`."""
    from lstm_odyssey.analysis.frame import load
    from lstm_odyssey.analysis.replicates import reruns

    table = reruns(load(SEEDS), load(REPRODUCTION / "adam"))
    gap = table["difference"].abs()
    top = table.loc[gap.idxmax()]
    quoted = [f"{int((gap <= 0.001).sum())} of the {len(table)} repeats agree within 0.001",
              f"the median difference is {gap.median():.3f} and the largest {gap.max():.3f}",
              f"({top['cell'].upper()}: {top['test']:.3f} against {top['test_before']:.3f})"]
    page = flat((PAGES / "index.md").read_text())
    for text in quoted:
        assert text in page, text


def test_the_seed_study_lists_the_best_configurations_of_the_adam_study(capsys):
    """sweeps/odyssey_jsb_seeds.yaml names the Adam study's 5 best trials; `python -m
    lstm_odyssey.analysis.replicates --best 5 results/odyssey_jsb/adam` ranks them again from the committed
    records, to the last bit of every hyperparameter."""
    import yaml

    from lstm_odyssey.analysis.frame import load, prepare
    from lstm_odyssey.analysis.replicates import best_configurations, configs_yaml, main, searched_keys

    listed = yaml.safe_load((ROOT / "sweeps" / "odyssey_jsb_seeds.yaml").read_text())["sweep"]["configs"]
    keys = searched_keys(REPRODUCTION / "adam")
    best = best_configurations(prepare(load(REPRODUCTION / "adam")), keys, top=len(listed))
    assert best["trial"].tolist() == [41, 15, 38, 6, 25]
    assert yaml.safe_load(configs_yaml(best, keys))["configs"] == listed
    assert main(["--best", "5", str(REPRODUCTION / "adam")]) == 0
    printed = capsys.readouterr().out
    assert yaml.safe_load(printed[printed.index("  configs:"):])["configs"] == listed
