"""The report's words: numbers formatted, tables in Markdown, and the tests' results as sentences (one
verdict per comparison, the plain findings paragraph). `report.py` assembles them into report.md."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .compare import ALL, TOP_OWN, TOP_PAIRS
from .hyperparams import POOLED
from .stats import ALPHA, METRICS, direction


def fmt(value: Any) -> str:
    """A value as the tables show it: 4 significant digits, scientific notation outside 1e-3 to 1e5."""
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


def metric_text(value: float, scale: float | None = None) -> str:
    """A test metric as the verdict tables show it: 3 decimals (an NLL of 8.412, an error rate of 0.043), or 3
    significant digits below 0.01, where 3 decimals would print an adding problem's MSE of 1.2e-5 as 0.000.
    `scale` picks the style by another value: a spread is written as its mean is (8.402 ± 0.007)."""
    scale = value if scale is None else scale
    return f"{value:.3f}" if scale == 0 or abs(scale) >= 0.01 or not np.isfinite(scale) else f"{value:.2e}"


def markdown_table(df: pd.DataFrame, columns: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured markdown table (no tabulate dependency)."""
    columns = [c for c in (columns or df.columns) if c in df.columns]
    if df.empty or not columns:
        return "_(no rows)_"
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(fmt(row[c]) for c in columns) + " |")
    return "\n".join(lines)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _share(value: float) -> str:
    return "" if value is None or not np.isfinite(value) else f"{value:.0%}"


def significant_cells(sig: pd.DataFrame) -> list[str]:
    """One line per cell that differs from the reference on all pairs (the primary analysis) after Holm."""
    lines = []
    for _, r in sig[(sig["subset"] == ALL) & sig["verdict"].isin(["better", "worse"])].iterrows():
        lines.append(f"{r['cell']} is significantly {r['verdict']} than {r['reference']} on {r['task']} "
                     f"({_estimate(r)}; Holm {_p(r['p_holm'])}; {_margin_words(r)}; share of ok runs capped by the "
                     f"budget: {_share(r['epoch_capped'])} vs {_share(r['epoch_capped_ref'])})")
    return lines


def _estimate(r: pd.Series) -> str:
    """"Hodges–Lehmann +0.095 nats (95 % CI +0.069 to +0.127), n = 50 pairs"."""
    name = "Hodges–Lehmann" if r.get("test") == "rank" else "mean"
    unit = METRICS.get(str(r["metric"]), ("", "", None))[1]
    pairs = r.get("design") == "paired"
    n = f"n = {int(r['n'])} pairs" if pairs else f"n = {int(r['n'])} vs {int(r['n_ref'])} runs"
    return (f"{name} {fmt(r['diff'])}{' ' + unit if unit else ''} (95 % CI {fmt(r['ci_low'])} to {fmt(r['ci_high'])}), "
            f"{n}")


def _margin_words(r: pd.Series) -> str:
    delta = fmt(r["margin"])
    if r["equivalence"] == "within δ":
        return f"equivalent within ±{delta} (TOST {_p(r['p_within'])})"
    if r["equivalence"] == "beyond δ":
        return f"differs by more than {delta} (Holm {_p(r['p_beyond_holm'])})"
    return f"neither shown within nor beyond ±{delta}"


def _subset_words(r: pd.Series) -> str:
    if r["subset"] == ALL:
        return "all pairs, primary" if r.get("design") == "paired" else "all runs, primary"
    if r["subset"] == TOP_PAIRS:
        return "secondary: the best pairs by the mean validation score of both runs"
    if r["subset"] == TOP_OWN:
        return "secondary: each cell's own best runs by validation, unpaired"
    return f"secondary: {r['subset']}"


def verdict_sentence(r: pd.Series, alpha: float = ALPHA) -> str:
    """The verdict of one row of `compare.significance` in words: the estimate, its interval, the test, and where it
    stands against the margin; an untested comparison says "cannot tell from these runs, because ..."."""
    where = f"{r['cell']} vs {r['reference']} on {r['task']} ({_subset_words(r)})"
    if r["verdict"] == "untested":
        return f"{where}: cannot tell from these runs, because {r['note'] or 'no test could be computed'}."
    record = f"; W/T/L {int(r['wins'])}/{int(r['ties'])}/{int(r['losses'])}" if np.isfinite(r["wins"]) else ""
    failed = f"; {int(r['n_failed'])} with a failed run, ranked worst" if r["n_failed"] else ""
    head = (f"{r['cell']} is {r['verdict']} than {r['reference']}" if r["verdict"] in ("better", "worse")
            else f"no significant difference at α = {alpha} after Holm")
    note = f" ({r['note']})" if isinstance(r["note"], str) and r["note"] else ""
    return f"{where}: {head}: {_estimate(r)}{record}{failed}; Holm {_p(r['p_holm'])}; {_margin_words(r)}.{note}"


def verdict_sentences(sig: pd.DataFrame, alpha: float = ALPHA) -> list[str]:
    return [verdict_sentence(r, alpha) for _, r in sig.iterrows()]


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
            text += _comparison_words(sig[(sig["task"] == task) & (sig["subset"] == ALL)], reference, alpha)
        text += _cap_words(tdf, ok) + _importance_words(imp, task) + _lr_hidden_words(lrh, task)
        parts.append(text.strip())
    return " ".join(parts)


def _comparison_words(s: pd.DataFrame, reference: str, alpha: float) -> str:
    """The primary verdicts of one task (`s`: its rows on all pairs): which cells differ, which are equivalent."""
    text = ""
    hits = s[s["verdict"].isin(["better", "worse"])]
    if len(s):
        text += (f"every cell is compared with {reference} by the plan's primary test on all "
                 f"{'pairs (trial by trial)' if s['design'].iloc[0] == 'paired' else 'runs'}. ")
    if len(hits):
        text += "; ".join(f"{r['cell'].upper()} is significantly {r['verdict']} ({_estimate(r)}, Holm {_p(r['p_holm'])})"
                          for _, r in hits.iterrows()) + ". "
        rest = sorted(set(s.loc[s["verdict"] == "n.s.", "cell"]))
        if rest:
            text += f"{', '.join(c.upper() for c in rest)} show no significant difference at α = {alpha}. "
    elif (s["verdict"] == "untested").all():
        text += f"no cell had enough runs for a test against {reference}: cannot tell from these runs. "
    else:
        text += f"no cell differs significantly from {reference} at α = {alpha} after Holm correction. "
    within = s.loc[s["equivalence"] == "within δ", "cell"]
    if len(within):
        text += (f"{', '.join(c.upper() for c in within)} {'is' if len(within) == 1 else 'are'} shown equivalent "
                 f"to {reference} within ±{fmt(s['margin'].iloc[0])} (TOST). ")
    return text


def _cap_words(tdf: pd.DataFrame, ok: int) -> str:
    """A warning when ok runs hit the epoch cap: then the verdicts measure learning speed too."""
    capped = (tdf.loc[tdf["ok"], "stopped_by"] == "epoch_cap").mean() if "stopped_by" in tdf and ok else np.nan
    if np.isfinite(capped) and capped > 0:
        return (f"{capped:.0%} of ok runs stopped at the epoch cap, so these verdicts reflect learning speed "
                "as much as reachable performance. ")
    return ""


def _importance_words(imp: pd.DataFrame | None, task: str) -> str:
    """The most important hyperparameter of the pooled fANOVA forest, and how much the main effects explain."""
    if imp is None or not len(imp):
        return ""
    pooled = imp[(imp["task"] == task) & (imp["cell"] == POOLED)]
    params = pooled[pooled["param"] != "cell"]  # the cell is a factor of the pooled forest, not a hyperparameter
    if not len(params):
        return ""
    top = params.sort_values("importance", ascending=False).iloc[0]
    main = pooled["variance_fraction"].sum()
    cell = pooled.loc[pooled["param"] == "cell", "importance"]
    return (f"The most important hyperparameter (fANOVA over all cells) is {top['param']} "
            f"(importance {top['importance']:.2f}"
            + (f"; the cell itself, a factor of the same forest, {cell.iloc[0]:.2f}" if len(cell) else "")
            + f"); main effects explain {main:.0%} of the variance of the fANOVA forest, the rest is "
            f"interactions and noise ({int(top['n_runs'])} runs). ")


def _lr_hidden_words(lrh: pd.DataFrame | None, task: str) -> str:
    """The best learning rate per hidden-size group and the F-test of a shift, or why it could not be run."""
    if lrh is None or not len(lrh[lrh["task"] == task]):
        return ""
    lt = lrh[lrh["task"] == task]
    p_shift = lt["shift_p"].iloc[0]
    if not np.isfinite(p_shift):
        reason = lt["note"].dropna().iloc[0] if lt["note"].notna().any() else "the F-test could not be computed"
        return ("Learning rate × hidden size: cannot tell from these runs whether the hidden size shifts the "
                f"optimal learning rate, because {reason}. ")
    where = ", ".join(f"{_lr_text(r)} for hidden {_range(r)}" for _, r in lt.iterrows())
    return (f"The best learning rate is {where} (the F-test of a quadratic in log lr per hidden-size "
            f"group against a shared one gives {_p(p_shift)}; a secondary test of the curves' shapes, while "
            "the verdict on the optimum's shift is the bootstrap interval of the paper's findings). ")

def _range(row: pd.Series) -> str:
    lo, hi = int(row["hidden_min"]), int(row["hidden_max"])
    return str(lo) if lo == hi else f"{lo}–{hi}"


def _lr_text(row: pd.Series) -> str:
    vertex = row.get("vertex_log10_lr")
    if vertex is not None and np.isfinite(vertex):
        return f"about {10 ** vertex:.2g}"
    return f"{fmt(row['best_lr_low'])}–{fmt(row['best_lr_high'])}"


def grouped_sentences(s: pd.DataFrame) -> list[str]:
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

