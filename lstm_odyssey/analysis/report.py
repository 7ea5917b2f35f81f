"""`lstm-odyssey-report SWEEP_DIR [...] --out DIR`: the whole analysis of a sweep as report.md, figures
(PNG) and tables (CSV), optionally logged to W&B. `write_report` is what a study's end-of-multirun
callback calls; it never raises for bad data: what it cannot compute, it says so in the report."""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .hyperparams import POOLED, hyperparameters, importance, lr_by_hidden, marginals
from .stats import ALPHA, TEST, TOP_FRACTION, VAL, direction, load, prepare, significance, summarize

REPORT_NAME = "report.md"
MIN_LR_HIDDEN_RUNS = 10  # runs per hidden-size group before the report states a verdict on the optimal lr
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


def significant_cells(sig: pd.DataFrame) -> list[str]:
    """One line per cell that differs from the reference after Holm correction."""
    lines = []
    for _, r in sig[sig["verdict"].isin(["better", "worse"])].iterrows():
        subset = "all ok runs" if r["subset"] == "all" else "top runs by validation"
        lines.append(
            f"{r['cell']} is significantly {r['verdict']} than {r['reference']} on {r['task']} ({subset}: "
            f"mean test {r['metric']} {_fmt(r['mean'])} vs {_fmt(r['mean_ref'])}, Holm-adjusted {_p(r['p_holm'])}, "
            f"Hedges' g = {_fmt(r['hedges_g'])}, n = {r['n']} vs {r['n_ref']}; capped by the epoch limit: "
            f"{_fmt(r['epoch_capped'])} vs {_fmt(r['epoch_capped_ref'])})"
        )
    return lines


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
            if len(hits):
                said = []
                for cell, g in hits.groupby("cell", sort=False):
                    said.append(f"{cell.upper()} is significantly " + " and ".join(
                        f"{r['verdict']} than {reference} on {'the top runs' if r['subset'] == 'top' else 'all runs'} "
                        f"(Holm-adjusted {_p(r['p_holm'])}, g = {r['hedges_g']:.2f})" for _, r in g.iterrows()
                    ))
                text += "; ".join(said) + ". "
                rest = sorted(set(s["cell"]) - set(hits["cell"]))
                if rest:
                    text += f"{', '.join(c.upper() for c in rest)} show no significant difference at α = {alpha}. "
            elif (s["verdict"] == "untested").all():
                text += f"no cell had enough runs for a t-test against {reference}. "
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
        if lrh is not None and len(lrh[lrh["task"] == task]) > 1:
            lt = lrh[lrh["task"] == task]
            p_shift = lt["shift_p"].iloc[0]
            if lt["n"].min() < MIN_LR_HIDDEN_RUNS or not np.isfinite(p_shift):
                text += (f"Learning rate × hidden size: too few runs per hidden-size group ({int(lt['n'].min())}, "
                         f"needs {MIN_LR_HIDDEN_RUNS}) to judge whether the hidden size shifts the optimal learning rate. ")
            else:
                where = ", ".join(
                    f"{_lr_text(r)} for hidden {int(r['hidden_min'])}–{int(r['hidden_max'])}" for _, r in lt.iterrows()
                )
                verdict = "shifts" if p_shift < alpha else "does not significantly shift"
                text += (f"The best learning rate is {where}; the hidden size {verdict} the optimal learning rate "
                         f"(F-test of a quadratic in log lr per hidden-size group against a shared one, {_p(p_shift)}). ")
        parts.append(text.strip())
    return " ".join(parts)


DEBUG = False  # --debug: print the traceback of every part that could not be computed


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
        f"Written: {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; reference cell `{reference}`, "
        f"top runs = best {top:.0%} by validation, Welch's t-test with Holm correction at α = {alpha}.", "",
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
        tables["significance"] = sig
        if reference not in set(df["cell"]):
            notes.append(f"significance: the sweep has no runs of the reference cell {reference!r}; "
                         f"pass --reference CELL to compare against another cell")
        for _, r in sig[sig["verdict"] == "untested"].iterrows():
            if r["note"] and reference in set(df[df["task"] == r["task"]]["cell"]):
                notes.append(f"significance of {r['cell']} on {r['task']} ({r['subset']} runs): {r['note']}")
    imp = _try(notes, "importance", lambda: importance(df, min_runs=importance_min_runs, notes=notes))
    if imp is not None:
        tables["importance"] = imp
    marg = _try(notes, "marginals", lambda: marginals(df))
    if marg is not None:
        tables["marginals"] = marg
    lrh = _try(notes, "learning rate × hidden size", lambda: lr_by_hidden(df, notes=notes))
    if lrh is not None:
        tables["lr_hidden"] = lrh

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
        lines += ["## Significance against the reference", ""]
        lines += [markdown_table(sig, ["task", "subset", "cell", "n", "n_ref", "mean", "mean_ref", "p", "p_holm",
                                       "hedges_g", "verdict", "epoch_capped", "epoch_capped_ref", "note"]), ""]
    if imp is not None and len(imp):
        lines += ["## Hyperparameter importance (fANOVA)", "",
                  "optuna's `FanovaImportanceEvaluator` (64 trees, depth 8) on the test metric of ok runs; parameters on their sampling "
                  "scale (log10 lr and hidden size, log10(1 − momentum)). `variance_fraction` is the share of the "
                  "forest's variance each parameter explains alone.", ""]
        lines += [markdown_table(imp, ["task", "cell", "param", "scale", "importance", "variance_fraction", "n_runs"]), ""]
    if lrh is not None and len(lrh):
        lines += ["## Learning rate × hidden size", "",
                  "Per hidden-size group (metric centred per cell): the learning-rate bin with the lowest mean, the vertex of "
                  "a quadratic in log10 lr, and the F-test p-value of letting that quadratic depend on the group.", ""]
        lines += [markdown_table(lrh, ["task", "hidden_min", "hidden_max", "n", "best_lr_low", "best_lr_high",
                                       "vertex_log10_lr", "shift_p"]), ""]

    lines += ["## Figures", ""]
    for task in sorted(df["task"].unique()):
        _figures(df, task, sig, imp, marg, reference, top, out, figures, notes)
        for name, path in figures.items():
            if name.endswith(f"_{task}"):
                lines += [f"![{name}](figures/{path.name})", ""]
    return _finish(out, lines, notes, tables, figures, paths, wandb, wandb_project, wandb_group)


def _figures(df: pd.DataFrame, task: str, sig, imp, marg, reference: str, top: float, out: Path,
             figures: dict[str, Path], notes: list[str]) -> None:
    from . import plots

    tdf = df[df["task"] == task]
    if not tdf["ok"].any():
        notes.append(f"figures for {task}: no ok runs to plot")
        return
    metric = tdf["metric"].dropna().iloc[0] if tdf["metric"].notna().any() else "metric"
    jobs: list[tuple[str, Callable[[], Any]]] = [("fig3", lambda: plots.fig3(df, task, sig, reference, top))]
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
    for name, table in tables.items():
        table.to_csv(out / "tables" / f"{name}.csv", index=False)
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
