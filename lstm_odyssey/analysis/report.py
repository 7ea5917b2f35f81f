"""`lstm-odyssey-report SWEEP_DIR [...] --out DIR`: the whole analysis of a sweep as report.md, figures
(PNG) and tables (CSV), optionally logged to W&B. `write_report` is what a study's end-of-multirun
callback calls; it never raises for bad data: what it cannot compute, it says so in the report."""

from __future__ import annotations

import argparse
import math
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .hyperparams import (
    MIN_LRS_PER_GROUP,
    MIN_RUNS_PER_GROUP,
    POOLED,
    hyperparameters,
    importance,
    lr_by_hidden,
    marginals,
)
from .stats import (
    ALPHA,
    METRICS,
    PAIRED_TEST,
    TEST,
    TOP_FRACTION,
    VAL,
    design,
    direction,
    load,
    prepare,
    significance,
    summarize,
    wilcoxon_floor,
)

REPORT_NAME = "report.md"
RUN_COLUMNS = ["task", "cell", "status", "metric", VAL, TEST, "ok", "stopped_by", "epochs_run", "wall_seconds",
               "num_parameters", "seed", "run_dir", "error"]


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if v == 0 or 1e-3 <= abs(v) < 1e5:
            return f"{v:.4g}"
        return f"{v:.3e}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(df: pd.DataFrame, columns: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured markdown table (no tabulate dependency)."""
    columns = [c for c in (columns or df.columns) if c in df.columns]
    if df.empty or not columns:
        return "_(no rows)_"
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(_fmt(row[c]) for c in columns) + " |")
    return "\n".join(lines)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _share(value: float) -> str:
    return "" if value is None or not np.isfinite(value) else f"{value:.0%}"


def significant_cells(sig: pd.DataFrame) -> list[str]:
    """One line per cell that differs from the reference after Holm correction."""
    lines = []
    for _, r in sig[sig["verdict"].isin(["better", "worse"])].iterrows():
        subset = _subset_words(r)
        n = f"{r['n']} pairs" if r.get("test") == PAIRED_TEST else f"n = {r['n']} vs {r['n_ref']}"
        lines.append(
            f"{r['cell']} is significantly {r['verdict']} than {r['reference']} on {r['task']} ({subset}: "
            f"mean test {r['metric']} {_fmt(r['mean'])} vs {_fmt(r['mean_ref'])}, {_test_name(r)} Holm-adjusted "
            f"{_p(r['p_holm'])}, Hedges' g = {_fmt(r['hedges_g'])}, {n}; share of ok runs capped by the epoch limit: "
            f"{_share(r['epoch_capped'])} vs {_share(r['epoch_capped_ref'])})"
        )
    return lines


def _test_name(r: pd.Series) -> str:
    return "paired t-test" if r.get("test") == PAIRED_TEST else "Welch's t-test"


def _subset_words(r: pd.Series) -> str:
    if r.get("test") == PAIRED_TEST:
        return "all pairs" if r["subset"] == "all" else f"pairs whose {r['reference']} run is in its top runs"
    return "all ok runs" if r["subset"] == "all" else "top runs by validation"


def verdict_sentence(r: pd.Series, alpha: float = ALPHA, n_tested: int | None = None) -> str:
    """The verdict of one row of `significance` in words, with the effect, its interval and the tests; an
    untested comparison says "cannot tell from these runs, because ..."."""
    where = f"{r['cell']} vs {r['reference']} on {r['task']} ({_subset_words(r)})"
    if r["verdict"] == "untested":
        return f"{where}: cannot tell from these runs, because {r['note'] or 'no test could be computed'}."
    unit = METRICS.get(str(r["metric"]), ("", "", None))[1]
    ci = (f"mean difference {_fmt(r['diff'])}{' ' + unit if unit else ''} (95 % CI {_fmt(r['ci_low'])} to "
          f"{_fmt(r['ci_high'])}, not adjusted for the number of cells)")
    tests = f"{_test_name(r)} Holm-adjusted {_p(r['p_holm'])}"
    paired = r.get("test") == PAIRED_TEST
    if paired:
        tests += (f", Wilcoxon signed-rank Holm-adjusted {_p(r['wilcoxon_p_holm'])}" if np.isfinite(r["wilcoxon_p_holm"])
                  else f", no Wilcoxon test ({r['wilcoxon_note']})")
        tests += f"; wins/ties/losses of {r['cell']} {int(r['wins'])}/{int(r['ties'])}/{int(r['losses'])}"
    if r["verdict"] in ("better", "worse"):
        text = f"{where}: {r['cell']} is {r['verdict']} than {r['reference']}: {ci}; {tests}."
    else:
        text = f"{where}: no significant difference at α = {alpha} after Holm correction: {ci}; {tests}."
    if paired and np.isfinite(r["wilcoxon_p_holm"]) and wilcoxon_floor(int(r["wins"]) + int(r["losses"])) * (
            n_tested or 1) < alpha and (r["wilcoxon_p_holm"] < alpha) != (r["verdict"] in ("better", "worse")):
        text += f" The Wilcoxon test {'finds' if r['wilcoxon_p_holm'] < alpha else 'does not confirm'} a difference."
    return text


def wilcoxon_limits(sig: pd.DataFrame, alpha: float = ALPHA) -> list[str]:
    """Where the Wilcoxon test cannot be significant whatever the data: too few non-zero pairs for the
    number of cells Holm corrects over (one line per task and subset)."""
    lines = []
    for (task, subset), s in sig[(sig["test"] == PAIRED_TEST) & np.isfinite(sig["wilcoxon_p"])].groupby(
            ["task", "subset"], sort=False):
        nonzero = int((s["wins"] + s["losses"]).max())
        floor = wilcoxon_floor(nonzero) * len(s)
        if floor >= alpha:
            lines.append(f"{task} ({subset}): with at most {nonzero} non-zero pairs the Wilcoxon signed-rank test cannot "
                         f"reach p < {alpha} after Holm over {len(s)} cells (smallest possible adjusted p {floor:.3g}); "
                         "its verdict needs more trials.")
    return lines


def verdict_sentences(sig: pd.DataFrame, alpha: float = ALPHA) -> list[str]:
    """`verdict_sentence` of every row, each knowing how many cells its Holm correction covered."""
    tested = sig.groupby(["task", "subset"])["p"].transform(lambda p: int(np.isfinite(p).sum()))
    return [verdict_sentence(r, alpha, int(k)) for (_, r), k in zip(sig.iterrows(), tested)]


def findings(df: pd.DataFrame, summary: pd.DataFrame, sig: pd.DataFrame | None, imp: pd.DataFrame | None,
             lrh: pd.DataFrame | None, reference: str, alpha: float) -> str:
    """The one-paragraph plain statement of what the sweep shows."""
    parts = []
    for task in sorted(df["task"].unique()):
        tdf = df[df["task"] == task]
        srow = summary[summary["task"] == task]
        metric = srow["metric"].dropna().iloc[0] if srow["metric"].notna().any() else "metric"
        ok = int(tdf["ok"].sum())
        text = (f"On {task} ({_n(len(tdf), 'run')} of {_n(tdf['cell'].nunique(), 'cell')}, {ok} ok; test {metric}, "
                f"{direction(metric)}): ")
        if sig is None or reference not in set(tdf["cell"]):
            text += f"no {reference} runs, so no cell could be compared with {reference}. "
        else:
            s = sig[sig["task"] == task]
            hits = s[s["verdict"].isin(["better", "worse"])]
            if len(s) and s["test"].iloc[0] == PAIRED_TEST:
                text += (f"the study is paired, so every cell is compared with {reference} trial by trial (paired "
                         "t-test; Wilcoxon signed-rank test alongside). ")
            if len(hits):
                said = []
                for cell, g in hits.groupby("cell", sort=False):
                    said.append(f"{cell.upper()} is significantly " + " and ".join(
                        f"{r['verdict']} than {reference} on {'the top runs' if r['subset'] == 'top' else 'all runs'} "
                        f"(mean difference {_fmt(r['diff'])}, 95 % CI {_fmt(r['ci_low'])} to {_fmt(r['ci_high'])}; "
                        f"Holm-adjusted {_p(r['p_holm'])}, g = {r['hedges_g']:.2f})" for _, r in g.iterrows()
                    ))
                text += "; ".join(said) + ". "
                rest = sorted(set(s.loc[s["verdict"] == "n.s.", "cell"]) - set(hits["cell"]))
                if rest:
                    text += f"{', '.join(c.upper() for c in rest)} show no significant difference at α = {alpha}. "
            elif (s["verdict"] == "untested").all():
                text += f"no cell had enough runs for a test against {reference}: cannot tell from these runs. "
            else:
                text += f"no cell differs significantly from {reference} at α = {alpha} after Holm correction. "
        capped = (tdf.loc[tdf["ok"], "stopped_by"] == "epoch_cap").mean() if "stopped_by" in tdf and ok else np.nan
        if np.isfinite(capped) and capped > 0:
            text += (f"{capped:.0%} of ok runs stopped at the epoch cap, so these verdicts reflect learning speed "
                     "as much as reachable performance. ")
        if imp is not None and len(imp):
            pooled = imp[(imp["task"] == task) & (imp["cell"] == POOLED)]
            if len(pooled):
                top = pooled.sort_values("importance", ascending=False).iloc[0]
                main = pooled["variance_fraction"].sum()
                text += (f"The most important hyperparameter (fANOVA over all cells) is {top['param']} "
                         f"(importance {top['importance']:.2f}); main effects explain {main:.0%} of the variance "
                         f"of the fANOVA forest, the rest is interactions and noise "
                         f"({int(top['n_runs'])} runs). ")
        if lrh is not None and len(lrh[lrh["task"] == task]):
            lt = lrh[lrh["task"] == task]
            p_shift = lt["shift_p"].iloc[0]
            if not np.isfinite(p_shift):
                reason = lt["note"].dropna().iloc[0] if lt["note"].notna().any() else "the F-test could not be computed"
                text += ("Learning rate × hidden size: cannot tell from these runs whether the hidden size shifts the "
                         f"optimal learning rate, because {reason}. ")
            else:
                where = ", ".join(f"{_lr_text(r)} for hidden {_range(r)}" for _, r in lt.iterrows())
                verdict = "shifts" if p_shift < alpha else "does not significantly shift"
                text += (f"The best learning rate is {where}; the hidden size {verdict} the optimal learning rate "
                         f"(F-test of a quadratic in log lr per hidden-size group against a shared one, {_p(p_shift)}). ")
        parts.append(text.strip())
    return " ".join(parts)


DEBUG = False  # --debug: print the traceback of every part that could not be computed


def _range(row: pd.Series) -> str:
    lo, hi = int(row["hidden_min"]), int(row["hidden_max"])
    return str(lo) if lo == hi else f"{lo}–{hi}"


def _lr_text(row: pd.Series) -> str:
    vertex = row.get("vertex_log10_lr")
    if vertex is not None and np.isfinite(vertex):
        return f"about {10 ** vertex:.2g}"
    return f"{_fmt(row['best_lr_low'])}–{_fmt(row['best_lr_high'])}"


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
    paths: Sequence[str | Path] | str | Path, out_dir: str | Path, *, wandb: bool = False, reference: str = "vanilla",
    top: float = TOP_FRACTION, alpha: float = ALPHA, metric: str | None = None, importance_min_runs: int = 8,
    wandb_project: str | None = None, wandb_group: str | None = None,
) -> Path:
    """Analyse the runs under `paths` and write `out_dir/report.md`, `out_dir/figures/*.png` and
    `out_dir/tables/*.csv`; returns the report's path. With `wandb`, log tables and figures into a W&B run
    (job_type "analysis") in the sweep's group."""
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    tables: dict[str, pd.DataFrame] = {}
    figures: dict[str, Path] = {}

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        raw = load(*paths)
    notes.extend(str(w.message) for w in caught if "record" in str(w.message) or "no such" in str(w.message))
    lines = [
        "# lstm-odyssey report", "",
        f"Sweep: {', '.join(f'`{p}`' for p in paths)}  ",
        f"Reference cell `{reference}`; top runs = best {top:.0%} by validation; significance at α = {alpha} after "
        "Holm correction across the cells of a task.", "",
    ]
    if raw.empty:
        notes.insert(0, f"no run records (result.json) found under {', '.join(map(str, paths))}: nothing to analyse")
        lines += ["## Findings", "", "Nothing to analyse: the sweep has no finished runs yet.", ""]
        return _finish(out, lines, notes, tables, figures, paths, wandb, wandb_project, wandb_group)

    df = prepare(raw, metric)
    tables["runs"] = df[[c for c in RUN_COLUMNS + hyperparameters(df) if c in df.columns]]
    summary = summarize(df, top=top, reference=reference)
    tables["summary"] = summary
    if not df["ok"].any():
        notes.append("no run finished ok (all diverged or failed): no statistics, importance or marginals")
    sig = _try(notes, "significance", lambda: significance(df, reference=reference, top=top, alpha=alpha))
    if sig is not None:
        sig["verdict_text"] = verdict_sentences(sig, alpha)
        tables["significance"] = sig
        if reference not in set(df["cell"]):
            notes.append(f"significance: the sweep has no runs of the reference cell {reference!r}; "
                         f"pass --reference CELL to compare against another cell")
        for _, r in sig[sig["verdict"] == "untested"].iterrows():
            if r["note"] and reference in set(df[df["task"] == r["task"]]["cell"]):
                notes.append(f"significance of {r['cell']} on {r['task']} ({r['subset']} runs): cannot tell from these "
                             f"runs, because {r['note']}")
    imp = _try(notes, "importance", lambda: importance(df, min_runs=importance_min_runs, notes=notes))
    if imp is not None:
        tables["importance"] = imp
    marg = _try(notes, "marginals", lambda: marginals(df))
    if marg is not None:
        tables["marginals"] = marg
    lrh = _try(notes, "learning rate × hidden size", lambda: lr_by_hidden(df, notes=notes))
    if lrh is not None:
        tables["lr_hidden"] = lrh
    tasks = sorted(df["task"].unique())
    for task in tasks:
        _figures(df, task, sig, imp, marg, reference, top, out, figures, notes)

    lines += ["## Design and tests", ""]
    for task in tasks:
        paired, why = design(df[df["task"] == task])
        lines.append(f"- {task}: " + (
            f"paired: {why}. Each cell is compared with `{reference}` over its pairs (same trial k, both runs ok): "
            "the mean difference cell − reference with its 95 % t interval, the paired t-test (the verdict) and the "
            "Wilcoxon signed-rank test, wins/ties/losses. The top-runs comparison uses the pairs whose reference run "
            f"is in `{reference}`'s best {top:.0%} by validation (selected on the reference's validation score, so "
            "it asks whether a cell keeps up at the settings that suit the reference)." if paired else
            f"unpaired: {why}. Each cell is compared with `{reference}` as independent samples: Welch's t-test and "
            "its 95 % interval of the difference of means."
        ))
    lines.append("")
    if sig is not None and (sig["test"] == PAIRED_TEST).any():
        lines += ["## Paired verdicts", ""]
        for task in tasks:
            s = sig[(sig["task"] == task) & (sig["test"] == PAIRED_TEST)]
            if s.empty:
                continue
            s = s.sort_values("subset", key=lambda c: c != "all", kind="stable")  # all pairs first
            lines += [f"### {task}", "", markdown_table(s, PAIRED_COLUMNS), ""]
            lines += [f"- {text}" for text in _grouped_sentences(s)]
            lines += [f"- {text}" for text in wilcoxon_limits(s, alpha)] + [""]
            if f"paired_{task}" in figures:
                lines += [f"![paired_{task}](figures/{figures[f'paired_{task}'].name})", ""]
    lines += ["## Findings", "", findings(df, summary, sig, imp, lrh, reference, alpha), ""]
    if sig is not None:
        hits = significant_cells(sig)
        lines += ["## Significant cells", ""]
        if hits:
            lines += [f"- {h}" for h in hits]
        elif len(sig) and (sig["verdict"] == "untested").all():
            lines += [f"- none could be tested against {reference}: see *What could not be computed*"]
        else:
            lines += [f"- none: no cell differs from {reference} after Holm correction at α = {alpha}"]
        lines.append("")
    lines += ["## Summary per task and cell", "",
              "Test metric at the best validation epoch; `top_*` over the best runs by validation; `epoch_capped` is "
              "the share of ok runs stopped by the epoch cap rather than early stopping.", ""]
    lines += [markdown_table(summary, ["task", "cell", "runs", "ok", "diverged", "failed", "epoch_capped", "mean",
                                       "sd", "median", "n_top", "top_mean", "top_sd", "top_median", "best_test",
                                       "best_run"]), ""]
    if sig is not None:
        lines += ["## Significance against the reference", "",
                  "`diff` = mean of the cell − the reference (paired: over pairs) with its 95 % interval; `test` names "
                  "the test behind `p` and the verdict.", ""]
        lines += [markdown_table(sig, ["task", "subset", "cell", "test", "n", "n_ref", "mean", "mean_ref", "diff",
                                       "ci_low", "ci_high", "p", "p_holm", "wilcoxon_p_holm", "hedges_g", "verdict",
                                       "epoch_capped", "epoch_capped_ref", "note"]), ""]
    if imp is not None and len(imp):
        lines += ["## Hyperparameter importance (fANOVA)", "",
                  "optuna's `FanovaImportanceEvaluator` (64 trees, depth 8) on the test metric of ok runs; parameters on their sampling "
                  "scale (log10 lr and hidden size, log10(1 − momentum)). `variance_fraction` is the share of the "
                  "forest's variance each parameter explains alone.", ""]
        lines += [markdown_table(imp, ["task", "cell", "param", "scale", "importance", "variance_fraction", "n_runs"]), ""]
    if lrh is not None and len(lrh):
        lines += ["## Learning rate × hidden size", "",
                  "Per hidden-size group (groups never split a size; metric centred per cell, and in a paired study "
                  "averaged per trial): the learning-rate bin with the lowest mean, the vertex of a quadratic in "
                  "log10 lr, and the F-test p-value of letting that quadratic depend on the group. The test needs at "
                  f"least two groups with {MIN_LRS_PER_GROUP} distinct learning rates and {MIN_RUNS_PER_GROUP} "
                  "observations each; `note` says why it was not run.", ""]
        lines += [markdown_table(lrh, ["task", "hidden_min", "hidden_max", "n", "distinct_lrs", "best_lr_low",
                                       "best_lr_high", "vertex_log10_lr", "shift_p"]), ""]

    lines += ["## Figures", ""]
    for task in tasks:
        for name, path in figures.items():
            if name.endswith(f"_{task}") and not name.startswith("paired_"):
                lines += [f"![{name}](figures/{path.name})", ""]
    return _finish(out, lines, notes, tables, figures, paths, wandb, wandb_project, wandb_group)


def _grouped_sentences(s: pd.DataFrame) -> list[str]:
    """The verdict sentences, with the untested comparisons of one subset that share a reason said once."""
    out, said = [], set()
    for _, r in s.iterrows():
        if r["verdict"] != "untested":
            out.append(r["verdict_text"])
            continue
        key = (r["subset"], r["note"])
        if key in said:
            continue
        said.add(key)
        same = s[(s["verdict"] == "untested") & (s["subset"] == r["subset"]) & (s["note"] == r["note"])]
        cells = ", ".join(same["cell"])
        out.append(f"{cells} vs {r['reference']} on {r['task']} ({_subset_words(r)}): cannot tell from these runs, "
                   f"because {r['note']}.")
    return out


PAIRED_COLUMNS = ["subset", "cell", "n", "diff", "ci_low", "ci_high", "p_holm", "wilcoxon_p_holm", "wins", "ties",
                  "losses", "verdict"]


def _figures(df: pd.DataFrame, task: str, sig, imp, marg, reference: str, top: float, out: Path,
             figures: dict[str, Path], notes: list[str]) -> None:
    from . import plots

    tdf = df[df["task"] == task]
    if not tdf["ok"].any():
        notes.append(f"figures for {task}: no ok runs to plot")
        return
    metric = tdf["metric"].dropna().iloc[0] if tdf["metric"].notna().any() else "metric"
    jobs: list[tuple[str, Callable[[], Any]]] = []
    if sig is not None and ((sig["task"] == task) & (sig["test"] == PAIRED_TEST)).any():
        jobs.append(("paired", lambda: plots.paired_plot(df, task, sig, reference)))  # the headline figure
    jobs.append(("fig3", lambda: plots.fig3(df, task, sig, reference, top)))
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
    parser.add_argument("--reference", default="vanilla", help="the cell every other cell is tested against")
    parser.add_argument("--top", type=float, default=TOP_FRACTION, help="fraction of best runs by validation (0.1)")
    parser.add_argument("--alpha", type=float, default=ALPHA, help="significance level after Holm correction")
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
    out = Path(args.out) if args.out else Path(args.paths[0]) / "report"
    path = write_report(
        args.paths, out, wandb=args.wandb, reference=args.reference, top=args.top, alpha=args.alpha,
        metric=args.metric, wandb_project=args.wandb_project, wandb_group=args.wandb_group,
    )
    print(path)
    return 0


def cli() -> None:
    sys.exit(main())
