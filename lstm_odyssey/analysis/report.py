"""`lstm-odyssey-report SWEEP_DIR [...] --out DIR`: the whole analysis of a sweep as report.md, figures
(PNG) and tables (CSV), optionally logged to W&B. `write_report` is what a study's end-of-multirun
callback calls; it never raises for bad data: what it cannot compute, it says so in the report."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..schema import AnalysisConfig
from ..settings import ConfigError
from . import odyssey
from .compare import ALL, significance
from .frame import TEST, VAL, design, load, prepare
from .hyperparams import (
    MIN_LRS_PER_GROUP,
    MIN_RUNS_PER_GROUP,
    hyperparameters,
    importance,
    lr_by_hidden,
    marginals,
)
from .plan import load_plan, plan_markdown, primary_test
from .stats import study_cost, summarize
from .text import findings, grouped_sentences, markdown_table, significant_cells, verdict_sentences

REPORT_NAME = "report.md"
RUN_COLUMNS = ["task", "cell", "status", "metric", VAL, TEST, "ok", "stopped_by", "epochs_run", "wall_seconds",
               "pack_id", "device", "torch", "num_parameters", "seed", "run_dir", "error"]


DEBUG = False  # --debug: print the traceback of every part that could not be computed


def _try(notes: list[str], what: str, fn: Callable[[], Any]) -> Any:
    """Run one part of the analysis; a failure becomes a note in the report instead of losing the rest."""
    try:
        return fn()
    except Exception as err:
        notes.append(f"{what} could not be computed: {type(err).__name__}: {err}")
        if DEBUG:
            traceback.print_exc()
        return None


def write_report(
    paths: Sequence[str | Path] | str | Path, out_dir: str | Path, *, wandb: bool = False,
    plan: AnalysisConfig | None = None, plan_overrides: Sequence[str] = (), metric: str | None = None,
    importance_min_runs: int = 8, wandb_project: str | None = None, wandb_group: str | None = None,
) -> Path:
    """Analyse the runs under `paths` by the study's analysis plan (its `multirun.yaml`, else the schema's
    defaults; `plan` replaces it, `plan_overrides` change keys) and write `out_dir/report.md`,
    `out_dir/figures/*.png` and `out_dir/tables/*.csv`; returns the report's path. With `wandb`, log tables and
    figures into a W&B run (job_type "analysis") in the sweep's group."""
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    plan = plan or load_plan(paths, plan_overrides)
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    tables: dict[str, pd.DataFrame] = {}
    figures: dict[str, Path] = {}
    raw = _load_runs(paths, notes)
    lines = ["# lstm-odyssey report", "", f"Sweep: {', '.join(f'`{p}`' for p in paths)}", ""]
    if raw.empty:
        notes.insert(0, f"no run records (result.json) found under {', '.join(map(str, paths))}: nothing to analyse")
        lines += ["## Findings", "", "Nothing to analyse: the sweep has no finished runs yet.", ""]
    else:
        lines += _report_body(prepare(raw, metric), plan, importance_min_runs, out, tables, figures, notes)
    return _finish(out, lines, notes, tables, figures, paths, wandb, wandb_project, wandb_group)


def _load_runs(paths: list[Path], notes: list[str]) -> pd.DataFrame:
    """The run records; the loader's warnings about unreadable records or missing paths become notes."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        raw = load(*paths)
    notes.extend(str(w.message) for w in caught if "record" in str(w.message) or "no such" in str(w.message))
    return raw


def _report_body(df: pd.DataFrame, plan: AnalysisConfig, importance_min_runs: int, out: Path,
                 tables: dict[str, pd.DataFrame], figures: dict[str, Path], notes: list[str]) -> list[str]:
    """Every section of a report of a sweep with runs, in order; the order of the tables and notes it adds is the
    order the report lists them in, so it is kept."""
    lines = plan_markdown(plan, sorted(df["metric"].dropna().unique()))
    summary, sig, imp, marg, lrh = _analyse(df, plan, importance_min_runs, tables, notes)
    tasks = sorted(df["task"].unique())
    for task in tasks:
        _figures(df, task, sig, imp, marg, plan, out, figures, notes)
    lines += paper_section(df, sig, lrh, plan, tables, notes)
    lines += matches_section(df, plan, tables, notes)
    lines += _design_section(df, tasks, plan)
    lines += _verdicts_section(sig, tasks, plan, figures)
    lines += ["## Findings", "", findings(df, summary, sig, imp, lrh, plan.reference, plan.alpha), ""]
    lines += _significant_section(sig, plan)
    from .replicates import replicate_section  # here, so that `python -m lstm_odyssey.analysis.replicates` runs clean

    lines += replicate_section(df, plan, tables)
    lines += _compute_section(df, tables)
    return lines + _table_sections(summary, imp, lrh) + _figures_section(tasks, figures)


def _analyse(df: pd.DataFrame, plan: AnalysisConfig, importance_min_runs: int, tables: dict[str, pd.DataFrame],
             notes: list[str]) -> tuple[pd.DataFrame | None, ...]:
    """Fill the plan, runs and analysis tables; return the five the sections read (summary, significance,
    importance, marginals, lr × hidden), None where a part failed: a note says why, the report goes on."""
    tables["plan"] = pd.DataFrame([{"key": k, "value": str(v)} for k, v in dataclasses.asdict(plan).items()])
    tables["runs"] = df[[c for c in RUN_COLUMNS + hyperparameters(df) if c in df.columns]]
    summary = summarize(df, top=plan.top_fraction, reference=plan.reference)
    tables["summary"] = summary
    if not df["ok"].any():
        notes.append("no run finished ok (all diverged or failed): no statistics, importance or marginals")
    sig = _significance(df, plan, tables, notes)
    imp = _try(notes, "importance", lambda: importance(df, min_runs=importance_min_runs, notes=notes))
    if imp is not None:
        tables["importance"] = imp
    marg = _try(notes, "marginals", lambda: marginals(df))
    if marg is not None:
        tables["marginals"] = marg
    lrh = _try(notes, "learning rate × hidden size", lambda: lr_by_hidden(df, notes=notes))
    if lrh is not None:
        tables["lr_hidden"] = lrh
    return summary, sig, imp, marg, lrh


def _significance(df: pd.DataFrame, plan: AnalysisConfig, tables: dict[str, pd.DataFrame],
                  notes: list[str]) -> pd.DataFrame | None:
    """The significance table with its verdicts in words, and a note for each comparison that could not be tested
    although the reference ran on its task."""
    reference = plan.reference
    sig = _try(notes, "significance", lambda: significance(df, plan))
    if sig is None:
        return None
    sig["verdict_text"] = verdict_sentences(sig, plan.alpha)
    tables["significance"] = sig
    if reference not in set(df["cell"]):
        notes.append(f"significance: the sweep has no runs of the reference cell {reference!r}; "
                     f"pass --plan reference=CELL to compare against another cell")
    for _, r in sig[(sig["verdict"] == "untested") & (sig["subset"] == ALL)].iterrows():
        if r["note"] and reference in set(df[df["task"] == r["task"]]["cell"]):
            notes.append(f"significance of {r['cell']} on {r['task']}: cannot tell from these runs, because {r['note']}")
    return sig


def _design_section(df: pd.DataFrame, tasks: list[str], plan: AnalysisConfig) -> list[str]:
    """Per task, whether the runs pair up trial by trial, and so which primary test the plan takes."""
    lines = ["## Design", ""]
    for task in tasks:
        paired, why = design(df[df["task"] == task])
        lines.append(f"- {task}: {'paired' if paired else 'unpaired'}: {why}. The primary test: "
                     f"{primary_test(plan, paired)}, on all {'pairs' if paired else 'runs'}.")
    return lines + [""]


def _verdicts_section(sig: pd.DataFrame | None, tasks: list[str], plan: AnalysisConfig,
                      figures: dict[str, Path]) -> list[str]:
    """Each task's verdicts against the reference: the table, the sentences, the paired figure."""
    if sig is None or not len(sig):
        return []
    lines = ["## Verdicts against the reference", "",
             f"Primary: all pairs (`subset` all). Secondary, never deciding a claim: the best {plan.top_fraction:.0%} of "
             "the pairs by the mean validation score of both runs (`top pairs`), each cell's own best runs (`top own`, "
             "unpaired, as Greff et al. read it), and strata fixed before training (learning-rate decade, hidden-size "
             "band). `diff` is the primary estimate of cell − reference with its 95 % CI; `p_holm` its test against 0; "
             "`equivalence` whether it is shown within ±δ (TOST) or beyond δ; `n_missing` counts trials one of the two "
             "lacks, `n_failed` pairs with a failed run (ranked worst).", ""]
    for task in tasks:
        s = sig[sig["task"] == task]
        lines += [f"### {task}", "", markdown_table(s, VERDICT_COLUMNS), ""]
        lines += [f"- {text}" for text in grouped_sentences(s[s["subset"] == ALL])] + [""]
        if f"paired_{task}" in figures:
            lines += [f"![paired_{task}](figures/{figures[f'paired_{task}'].name})", ""]
    return lines


def _significant_section(sig: pd.DataFrame | None, plan: AnalysisConfig) -> list[str]:
    """The cells that differ from the reference on all pairs, or why none does."""
    if sig is None:
        return []
    hits = significant_cells(sig)
    lines = ["## Significant cells (all pairs)", ""]
    if hits:
        lines += [f"- {h}" for h in hits]
    elif len(sig) and (sig["verdict"] == "untested").all():
        lines += [f"- none could be tested against {plan.reference}: see *What could not be computed*"]
    else:
        lines += [f"- none: no cell differs from {plan.reference} after Holm correction at α = {plan.alpha}"]
    return lines + [""]


def _compute_section(df: pd.DataFrame, tables: dict[str, pd.DataFrame]) -> list[str]:
    """What the study cost in process hours (also the `compute` table)."""
    tables["compute"] = study_cost(df)
    return ["## Compute", "", "Processes: a pack trains its trials in one process, a single run in its own; "
            "`process_hours` sums their wall time (a pack's is its longest trial's); with W workers side by side the study "
            "took about process_hours / W.", "", markdown_table(tables["compute"], list(tables["compute"].columns)), ""]


def _table_sections(summary: pd.DataFrame, imp: pd.DataFrame | None, lrh: pd.DataFrame | None) -> list[str]:
    """The summary per task and cell, and the fANOVA importances and the lr × hidden table when there are any."""
    lines = ["## Summary per task and cell", "",
             "Test metric at the best validation epoch; `top_*` over the best runs by validation; `epoch_capped` is "
             "the share of ok runs stopped by the epoch cap rather than early stopping.", ""]
    lines += [markdown_table(summary, ["task", "cell", "runs", "ok", "diverged", "failed", "epoch_capped", "mean",
                                       "sd", "median", "n_top", "top_mean", "top_sd", "top_median", "best_test",
                                       "best_run"]), ""]
    if imp is not None and len(imp):
        lines += ["## Hyperparameter importance (fANOVA)", "",
                  "fANOVA (64 trees, depth 8; the numbers of optuna's `FanovaImportanceEvaluator`) on the test metric of ok "
                  "runs; parameters on their sampling scale (log10 lr and hidden size, log10(1 − momentum)). "
                  "`variance_fraction` is the share of the forest's variance each parameter explains alone.", ""]
        lines += [markdown_table(imp, ["task", "cell", "param", "scale", "importance", "variance_fraction", "n_runs"]), ""]
    if lrh is not None and len(lrh):
        lines += ["## Learning rate × hidden size", "",
                  "Per hidden-size group (groups never split a size; metric centred per cell, and in a paired study "
                  "averaged per trial): the learning-rate bin with the lowest mean, the vertex of a quadratic in "
                  "log10 lr, and the F-test p-value of letting that quadratic depend on the group (secondary: the "
                  "paper's claim is judged by the bootstrap interval of the optimum's shift). The test needs at "
                  f"least two groups with {MIN_LRS_PER_GROUP} distinct learning rates and {MIN_RUNS_PER_GROUP} "
                  "observations each; `note` says why it was not run.", ""]
        lines += [markdown_table(lrh, ["task", "hidden_min", "hidden_max", "n", "distinct_lrs", "best_lr_low",
                                       "best_lr_high", "vertex_log10_lr", "shift_p"]), ""]
    return lines


def _figures_section(tasks: list[str], figures: dict[str, Path]) -> list[str]:
    """Every figure but the paired ones (those stand beside their verdicts), task by task."""
    lines = ["## Figures", ""]
    for task in tasks:
        for name, path in figures.items():
            if name.endswith(f"_{task}") and not name.startswith("paired_"):
                lines += [f"![{name}](figures/{path.name})", ""]
    return lines

VERDICT_COLUMNS = ["subset", "cell", "n", "n_missing", "n_failed", "diff", "ci_low", "ci_high", "p_holm", "verdict",
                   "margin", "p_within", "p_beyond_holm", "equivalence", "wins", "ties", "losses", "mean_diff", "t_p", "note"]


def paper_section(df: pd.DataFrame, sig, lrh, plan: AnalysisConfig, tables: dict[str, pd.DataFrame],
                  notes: list[str]) -> list[str]:
    """The paper's findings as verdicts, for a study of the reference against at least one of the paper's
    variants (analysis/odyssey.py), and the best run per cell by validation beside the published results, for
    that study or any on JSB Chorales (a tuned one, say); nothing for any other study."""
    reference = plan.reference
    compares = reference in set(df["cell"]) and bool(set(odyssey.VARIANTS) & set(df["cell"])) and sig is not None
    if not compares and odyssey.JSB not in set(df["task"]):
        return []
    lines = []
    if compares:
        found = _try(notes, "the paper's findings", lambda: odyssey.paper_findings(df, plan, lrh))
        if found is None:
            return []
        tables["paper_findings"] = found
        lines += ["## The paper's findings", "", odyssey.findings_intro(plan), "", markdown_table(found, [
            "task", "finding", "verdict", "reason", "measure", "effect", "low", "high", "interval", "p", "p_is", "n"]), ""]
        lines += [f"- {r['task']}, {r['finding']}: {r['detail']}" for _, r in found.iterrows() if r["detail"]] + [""]
    best = _try(notes, "best run per cell", lambda: odyssey.best_by_validation(df, reference))
    if best is None:
        return lines
    tables["best_by_validation"] = best
    lines += [("### " if compares else "## ") + "Best run per cell by validation", "", odyssey.BEST_INTRO, "",
              odyssey.STOPPING_BIAS, ""]
    lines += [markdown_table(best, ["task", "cell", "ok", "best_val", "best_test", "top_median", "capped", "plateau",
                                    "published"]), ""]
    return lines


def matches_section(df: pd.DataFrame, plan: AnalysisConfig, tables: dict[str, pd.DataFrame], notes: list[str]) -> list[str]:
    """Does each cell match the reference within δ (odyssey.matches_reference)? For studies of cells beyond the paper."""
    if plan.reference not in set(df["cell"]) or not set(df["cell"]) - set(odyssey.VARIANTS) - {plan.reference}:
        return []
    found = _try(notes, "whether each cell matches the reference", lambda: odyssey.matches_reference(df, plan))
    if found is None or not len(found):
        return []
    tables["matches_reference"] = found
    return ["## Does each cell match the reference?", "", odyssey.matches_intro(plan.reference), "",
            markdown_table(found, odyssey.MATCH_SHOWN), ""]


def _figures(df: pd.DataFrame, task: str, sig, imp, marg, plan: AnalysisConfig, out: Path,
             figures: dict[str, Path], notes: list[str]) -> None:
    from . import plots

    tdf = df[df["task"] == task]
    if not tdf["ok"].any():
        notes.append(f"figures for {task}: no ok runs to plot")
        return
    metric = tdf["metric"].dropna().iloc[0] if tdf["metric"].notna().any() else "metric"
    jobs: list[tuple[str, Callable[[], Any]]] = []
    if sig is not None and ((sig["task"] == task) & (sig["design"] == "paired")).any():
        jobs.append(("paired", lambda: plots.paired_plot(df, task, sig, plan.reference)))  # the headline figure
    jobs.append(("fig3", lambda: plots.fig3(df, task, sig, plan)))
    if marg is not None and len(marg[marg["task"] == task]):
        jobs.append(("marginals", lambda: plots.marginal_plot(marg, task, metric)))
    if imp is not None and len(imp[imp["task"] == task]):
        jobs.append(("importance", lambda: plots.importance_plot(imp, task)))
    if plots.has_variation(tdf, "num_parameters"):
        jobs.append(("parameters", lambda: plots.params_plot(df, task)))
    if "wall_seconds" in tdf.columns:
        jobs.append(("time", lambda: plots.time_plot(df, task)))
    if plots.has_variation(tdf[tdf["ok"]], "optim.lr") and plots.has_variation(tdf[tdf["ok"]], "model.hidden_size"):
        jobs.append(("lr_hidden", lambda: plots.lr_hidden_plot(df, task)))
    for name, make in jobs:
        fig = _try(notes, f"figure {name} for {task}", make)
        if fig is not None:
            safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in task)
            figures[f"{name}_{task}"] = plots.save(fig, out / "figures" / f"{name}_{safe}.png")


def _finish(out: Path, lines: list[str], notes: list[str], tables: dict[str, pd.DataFrame],
            figures: dict[str, Path], paths: list[Path], wandb: bool, project: str | None, group: str | None) -> Path:
    for name, table in tables.items():  # same records, same bytes: a regenerated report can be diffed
        table.to_csv(out / "tables" / f"{name}.csv", index=False, lineterminator="\n")
    lines += ["## What could not be computed", ""]
    lines += [f"- {n}" for n in dict.fromkeys(notes)] if notes else ["- everything was computed"]
    lines += ["", "Tables (CSV): " + ", ".join(f"[{n}](tables/{n}.csv)" for n in tables) if tables else ""]
    path = out / REPORT_NAME
    path.write_text("\n".join(lines).rstrip() + "\n")
    if wandb:
        try:
            from ..tracking import log_analysis

            url = log_analysis(tables, figures, path, project=project or _project(paths), group=group or _group(paths))
            lines += ["", f"W&B: logged as job_type analysis{f' at {url}' if url else ' (offline run under ' + str(out) + ')'}"]
        except Exception as err:  # W&B trouble must not lose the report
            lines += ["", f"W&B logging failed: {type(err).__name__}: {err}"]
        path.write_text("\n".join(lines).rstrip() + "\n")
    return path


def _first_config(paths: list[Path]) -> dict:
    from ..results import find_records, read_record

    for record in find_records(*[p for p in paths if p.exists()])[:1]:
        try:
            return read_record(record).get("config") or {}
        except (OSError, ValueError):
            return {}
    return {}


def _group(paths: list[Path]) -> str:
    """The runs' W&B group: logger.group, else the study's name (sweep.name), else the sweep folder's name."""
    config = _first_config(paths)
    logger, study = config.get("logger") or {}, config.get("sweep") or {}
    return logger.get("group") or (study.get("name") if isinstance(study, dict) else None) or paths[0].resolve().name


def _project(paths: list[Path]) -> str:
    logger = _first_config(paths).get("logger") or {}
    return logger.get("project") or "lstm-odyssey"


def main(argv: Sequence[str] | None = None) -> int:
    """Console script `lstm-odyssey-report`."""
    parser = argparse.ArgumentParser(
        prog="lstm-odyssey-report",
        description="The paper's tables and figures for one or more sweeps: report.md, figures/*.png, tables/*.csv.",
    )
    parser.add_argument("paths", nargs="+", metavar="SWEEP_DIR", help="sweep folders, result.json or runs.parquet files")
    parser.add_argument("--out", help="output folder (default: SWEEP_DIR/report)")
    parser.add_argument("--plan", nargs="*", default=[], metavar="KEY=VALUE",
                        help="change the study's analysis plan, e.g. --plan reference=np margin.nll=0.1 (docs/analysis.md)")
    parser.add_argument("--metric", help="metric to analyse instead of each task's primary metric")
    parser.add_argument("--wandb", action="store_true", help="log tables and figures to W&B (job_type analysis)")
    parser.add_argument("--wandb-project", help="W&B project (default: the runs' logger.project)")
    parser.add_argument("--wandb-group", help="W&B group (default: the runs' logger.group or the sweep folder name)")
    parser.add_argument("--debug", action="store_true", help="print tracebacks of parts that could not be computed")
    args = parser.parse_args(argv)
    global DEBUG
    DEBUG = args.debug
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        print(f"lstm-odyssey-report: no such file or folder: {', '.join(missing)}; pass a sweep folder", file=sys.stderr)
        return 2
    try:
        plan = load_plan(args.paths, args.plan)
    except (ConfigError, ValueError) as err:  # a plan key or value the schema refuses: one line, not a traceback
        print(f"lstm-odyssey-report: {err}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(args.paths[0]) / "report"
    path = write_report(
        args.paths, out, wandb=args.wandb, plan=plan,
        metric=args.metric, wandb_project=args.wandb_project, wandb_group=args.wandb_group,
    )
    print(path)
    return 0


def cli() -> None:
    sys.exit(main())
