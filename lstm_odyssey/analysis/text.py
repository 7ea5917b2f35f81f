"""The report's words: numbers formatted, tables in Markdown, and the tests' results as sentences (one
verdict per comparison, the plain findings paragraph). `report.py` assembles them into report.md."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .hyperparams import POOLED
from .stats import ALPHA, METRICS, PAIRED_TEST, direction, wilcoxon_floor


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
    """One line per cell that differs from the reference after Holm correction."""
    lines = []
    for _, r in sig[sig["verdict"].isin(["better", "worse"])].iterrows():
        subset = _subset_words(r)
        n = f"{r['n']} pairs" if r.get("test") == PAIRED_TEST else f"n = {r['n']} vs {r['n_ref']}"
        lines.append(
            f"{r['cell']} is significantly {r['verdict']} than {r['reference']} on {r['task']} ({subset}: "
            f"mean test {r['metric']} {fmt(r['mean'])} vs {fmt(r['mean_ref'])}, {_test_name(r)} Holm-adjusted "
            f"{_p(r['p_holm'])}, Hedges' g = {fmt(r['hedges_g'])}, {n}; share of ok runs capped by the epoch limit: "
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
    ci = (f"mean difference {fmt(r['diff'])}{' ' + unit if unit else ''} (95 % CI {fmt(r['ci_low'])} to "
          f"{fmt(r['ci_high'])}, not adjusted for the number of cells)")
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
                        f"(mean difference {fmt(r['diff'])}, 95 % CI {fmt(r['ci_low'])} to {fmt(r['ci_high'])}; "
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
            params = pooled[pooled["param"] != "cell"]  # the cell is a factor of the pooled forest, not a hyperparameter
            if len(params):
                top = params.sort_values("importance", ascending=False).iloc[0]
                main = pooled["variance_fraction"].sum()
                cell = pooled.loc[pooled["param"] == "cell", "importance"]
                text += (f"The most important hyperparameter (fANOVA over all cells) is {top['param']} "
                         f"(importance {top['importance']:.2f}"
                         + (f"; the cell itself, a factor of the same forest, {cell.iloc[0]:.2f}" if len(cell) else "")
                         + f"); main effects explain {main:.0%} of the variance of the fANOVA forest, the rest is "
                         f"interactions and noise ({int(top['n_runs'])} runs). ")
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

