"""The paper's findings (Greff et al. 2017, docs/equations.md, Study protocol) as verdicts on a study.

Each claim gets "confirmed", "not confirmed" or "cannot tell from these runs", the test behind the verdict,
n, the effect with its interval and the p-value. The comparisons of cells are the report's own
(`stats.significance`: paired t-test over matched trials, Holm-corrected across the cells of a task, on all
ok pairs); the hyperparameter claims read fANOVA per cell (`hyperparams.importance`) and the F-test of
`hyperparams.lr_by_hidden`. `python -m lstm_odyssey.analysis.odyssey NAME=SWEEP_DIR ...` prints the README's
table for several protocols side by side.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .frame import VAL, load, prepare
from .hyperparams import POOLED, importance, lr_by_hidden
from .stats import ALPHA, capped_runs, lower_is_better, significance, summarize
from .text import fmt

CONFIRMED, NOT_CONFIRMED, CANNOT_TELL = "confirmed", "not confirmed", "cannot tell from these runs"
VARIANTS = ("nig", "nfg", "nog", "niaf", "noaf", "cifg", "np", "fgr")  # the paper's eight, against vanilla
LR, MOMENTUM = "optim.lr", "optim.momentum"
MIN_PAIRS = 10     # fewer matched trials than this: the comparison claims are not judged
MIN_CELLS = 3      # fANOVA claims need the importances of at least this many cells ...
MIN_RUNS = 20      # ... each from at least this many ok runs (a forest on fewer explains anything)
BY_FAR = 2.0       # "by far the most important": the learning rate's median importance >= 2x the next one's
HARDLY = 0.10      # momentum "hardly matters": its median share of the main effects below 10 %
INDEPENDENT = 0.75  # "nearly independent": main effects explain >= 75 % of the variance, so interactions <= 25 %

# Published test NLL per frame on JSB Chorales (same split): Bai et al. 2018, ~300K parameters each
JSB = "jsb_chorales"  # the task whose published results stand beside the best runs
PUBLISHED_JSB = {"LSTM (Bai et al. 2018)": 8.45, "GRU (Bai et al. 2018)": 8.43,
                 "tanh RNN (Bai et al. 2018)": 8.91, "TCN (Bai et al. 2018)": 8.10}

FINDING_COLUMNS = ["task", "finding", "verdict", "test", "n", "measure", "effect", "low", "high", "interval", "p",
                   "p_is", "detail"]
# A comparison's interval is the t interval of that one comparison while its p is Holm-corrected across the cells, so
# an interval that misses 0 can go with an adjusted p above alpha; the labels say so wherever the numbers are quoted
COMPARISON_INTERVAL = "unadjusted 95 % CI"
HOLM_P = "Holm p"
CLAIMS = {
    "no_variant_better": "no variant beats vanilla significantly",
    "nfg_noaf_hurt_most": "NFG and NOAF hurt most",
    "cifg_np_no_difference": "CIFG and NP make no significant difference",
    "lr_most_important": "the learning rate is by far the most important hyperparameter",
    "momentum_hardly_matters": "momentum hardly matters",
    "nearly_independent": "hyperparameters are nearly independent",
    "hidden_does_not_shift_lr": "the hidden size does not shift the optimal learning rate",
}


def _row(task: str, key: str, verdict: str, test: str, detail: str, n: float = np.nan, effect: float = np.nan,
         low: float = np.nan, high: float = np.nan, interval: str = "", p: float = np.nan, measure: str = "",
         p_is: str = "p") -> dict:
    """One claim's verdict; `measure` names what `effect` is (NOAF − vanilla, the lr's importance, ...), `interval`
    what `low`–`high` are and `p_is` what `p` is (Holm-corrected or not)."""
    return {"task": task, "finding": CLAIMS[key], "verdict": verdict, "test": test, "n": n, "measure": measure,
            "effect": effect, "low": low, "high": high, "interval": interval, "p": p, "p_is": p_is if np.isfinite(p) else "",
            "detail": detail}


def _minus(cell: str, reference: str) -> str:
    return f"{cell.upper()} − {reference}"


def _cmp(r: pd.Series) -> str:
    return (f"{r['cell'].upper()} {r['diff']:+.3f} ({COMPARISON_INTERVAL} {r['ci_low']:+.3f} to {r['ci_high']:+.3f}, "
            f"n = {int(r['n'])}, {HOLM_P} = {r['p_holm']:.3g}, {r['verdict']})")


def _comparisons(sig: pd.DataFrame, task: str, reference: str) -> tuple[pd.DataFrame, str | None]:
    """The tested comparisons of `task` on all ok pairs, or why the comparison claims cannot be judged."""
    s = sig[(sig["task"] == task) & (sig["subset"] == "all") & (sig["reference"] == reference)]
    tested = s[s["verdict"] != "untested"]
    if tested.empty:
        notes = s["note"].dropna()
        return tested, (notes.iloc[0] if len(notes) else f"no cell could be compared with {reference}")
    if tested["n"].min() < MIN_PAIRS:
        return tested, f"the smallest comparison has {int(tested['n'].min())} pairs (at least {MIN_PAIRS} are needed)"
    return tested, None


def _converged(converged: pd.DataFrame | None, task: str, reference: str, cells: Sequence[str]) -> str:
    """The same comparisons on the pairs in which neither run was cut off by the budget (the "converged"
    subset of `significance`): whether a verdict survives without the capped runs."""
    if converged is None or converged.empty:
        return ""
    c = converged[(converged["task"] == task) & (converged["reference"] == reference)]
    parts = []
    for cell in cells:
        for _, r in c[c["cell"] == cell].iterrows():
            parts.append(_cmp(r) if r["verdict"] != "untested" else f"{cell.upper()} untested ({r['note']})")
    return f"; on the pairs where neither run hit the cap: {'; '.join(parts)}" if parts else ""


def comparison_findings(sig: pd.DataFrame, task: str, metric: str, reference: str = "vanilla",
                        converged: pd.DataFrame | None = None) -> list[dict]:
    """The three claims about cells: no variant better; NFG and NOAF hurt most; CIFG and NP no different.
    The verdicts are on all ok pairs; `converged` (significance on the "converged" subset) adds to each
    detail how the deciding cells compare where neither run was capped."""
    test = "paired t-test, Holm-corrected (all ok pairs)"
    tested, why = _comparisons(sig, task, reference)
    if why is not None:
        return [_row(task, k, CANNOT_TELL, test, f"cannot tell from these runs, because {why}")
                for k in ("no_variant_better", "nfg_noaf_hurt_most", "cifg_np_no_difference")]
    harm = tested["diff"] if lower_is_better(metric) else -tested["diff"]  # > 0: the variant is worse
    tested = tested.assign(harm=harm).sort_values("harm", kind="stable")
    out = []

    best = tested.iloc[0]
    better = tested[tested["verdict"] == "better"]
    out.append(_row(
        task, "no_variant_better", NOT_CONFIRMED if len(better) else CONFIRMED, test,
        ((f"better than {reference}: " + "; ".join(_cmp(r) for _, r in better.iterrows())) if len(better)
         else f"{len(tested)} cells tested; the most favourable: {_cmp(best)}")
        + _converged(converged, task, reference, list(better["cell"]) if len(better) else [best["cell"]]),
        best["n"], best["diff"], best["ci_low"], best["ci_high"], COMPARISON_INTERVAL, best["p_holm"],
        _minus(best["cell"], reference), HOLM_P,
    ))

    by_cell = tested.set_index("cell")
    pair = [c for c in ("nfg", "noaf") if c in by_cell.index]
    if len(pair) < 2:
        out.append(_row(task, "nfg_noaf_hurt_most", CANNOT_TELL, test, "the study lacks NFG or NOAF"))
    else:
        worst_two = list(tested["cell"].iloc[::-1][:2])
        weaker = by_cell.loc[pair].sort_values("harm").iloc[0]  # the one of the two that decides
        hurt = all(by_cell.loc[c, "verdict"] == "worse" for c in pair) and set(worst_two) == set(pair)
        out.append(_row(
            task, "nfg_noaf_hurt_most", CONFIRMED if hurt else NOT_CONFIRMED, test,
            "; ".join(_cmp(r) for _, r in by_cell.loc[pair].reset_index().iterrows())
            + f"; the two largest harms: {', '.join(c.upper() for c in worst_two)}" + _converged(converged, task, reference, pair),
            weaker["n"], weaker["diff"], weaker["ci_low"], weaker["ci_high"], COMPARISON_INTERVAL, weaker["p_holm"],
            _minus(weaker.name, reference), HOLM_P,
        ))

    pair = [c for c in ("cifg", "np") if c in by_cell.index]
    if len(pair) < 2:
        out.append(_row(task, "cifg_np_no_difference", CANNOT_TELL, test, "the study lacks CIFG or NP"))
    else:
        rows = by_cell.loc[pair].reset_index()
        larger = rows.loc[rows["diff"].abs().idxmax()]
        differs = (rows["verdict"] != "n.s.").any()
        out.append(_row(
            task, "cifg_np_no_difference", NOT_CONFIRMED if differs else CONFIRMED, test,
            "; ".join(_cmp(r) for _, r in rows.iterrows()) + (
                "" if differs else " (no significant difference is not equivalence: read the intervals)")
            + _converged(converged, task, reference, pair),
            larger["n"], larger["diff"], larger["ci_low"], larger["ci_high"], COMPARISON_INTERVAL, larger["p_holm"],
            _minus(larger["cell"], reference), HOLM_P,
        ))
    return out


def importance_findings(imp: pd.DataFrame, task: str, optimiser: str | None = None) -> list[dict]:
    """The claims about hyperparameters that fANOVA answers: the learning rate by far the most important,
    momentum hardly matters, hyperparameters nearly independent (per cell, then the median over cells)."""
    test = "fANOVA per cell (median over cells; interval = range over cells)"
    per_cell = imp[(imp["task"] == task) & (imp["cell"] != POOLED) & (imp["n_runs"] >= MIN_RUNS)] if len(imp) else imp
    n_cells = per_cell["cell"].nunique() if len(per_cell) else 0
    if n_cells < MIN_CELLS:
        why = (f"cannot tell from these runs, because {n_cells} cells have fANOVA importances from at least {MIN_RUNS} "
               f"ok runs (at least {MIN_CELLS} such cells are needed)")
        return [_row(task, k, CANNOT_TELL, test, why)
                for k in ("lr_most_important", "momentum_hardly_matters", "nearly_independent")]
    n_runs = float(per_cell.groupby("cell")["n_runs"].first().sum())
    table = per_cell.pivot_table(index="cell", columns="param", values="importance")
    median = table.median().sort_values(ascending=False)
    spread = lambda p: (float(table[p].min()), float(table[p].max()))  # noqa: E731
    out = []

    if LR not in median.index:
        out.append(_row(task, "lr_most_important", CANNOT_TELL, test, "the learning rate was not varied"))
    else:
        others = median.drop(LR)
        runner = others.index[0] if len(others) else None
        ratio = median[LR] / others.iloc[0] if len(others) and others.iloc[0] > 0 else np.inf
        top_in = int((table.idxmax(axis=1) == LR).sum())
        out.append(_row(
            task, "lr_most_important", CONFIRMED if median.index[0] == LR and ratio >= BY_FAR else NOT_CONFIRMED,
            test, f"median importance {median[LR]:.2f}, {ratio:.1f}x the next ({runner}, {others.iloc[0]:.2f}); "
                  f"the most important in {top_in} of {n_cells} cells", n_runs, float(median[LR]), *spread(LR),
            "range over cells", measure="the learning rate's importance",
        ))

    if MOMENTUM not in median.index:
        out.append(_row(task, "momentum_hardly_matters", CANNOT_TELL, test,
                        f"this protocol has no momentum to vary (optimiser {optimiser or 'unknown'})"))
    else:
        hardly = median[MOMENTUM] < HARDLY
        out.append(_row(
            task, "momentum_hardly_matters", CONFIRMED if hardly else NOT_CONFIRMED, test,
            f"median importance {median[MOMENTUM]:.2f} ({'below' if hardly else 'not below'} {HARDLY:.2f})",
            n_runs, float(median[MOMENTUM]), *spread(MOMENTUM), "range over cells", measure="momentum's importance",
        ))

    main = per_cell.groupby("cell")["variance_fraction"].sum()
    share = float(main.median())
    out.append(_row(
        task, "nearly_independent", CONFIRMED if share >= INDEPENDENT else CANNOT_TELL, test,
        f"main effects explain a median {share:.0%} of the forest's variance, so interactions explain at most "
        f"{1 - share:.0%}" + ("" if share >= INDEPENDENT else
                              f"; above {1 - INDEPENDENT:.0%} this fANOVA cannot tell interactions from noise"),
        n_runs, share, float(main.min()), float(main.max()), "range over cells", measure="main effects' share",
    ))
    return out


def shift_finding(lrh: pd.DataFrame, task: str, alpha: float = ALPHA) -> dict:
    """Does the hidden size shift the optimal learning rate? The F-test of `lr_by_hidden`."""
    test = "F-test: a quadratic in log10 lr per hidden-size group against a shared one"
    lt = lrh[lrh["task"] == task] if len(lrh) else lrh
    p = float(lt["shift_p"].iloc[0]) if len(lt) else np.nan
    if not np.isfinite(p):
        notes = lt["note"].dropna() if len(lt) else pd.Series(dtype=object)
        reason = notes.iloc[0] if len(notes) else "the learning rate or the hidden size was not varied"
        return _row(task, "hidden_does_not_shift_lr", CANNOT_TELL, test, f"cannot tell from these runs, because {reason}")
    vertices = lt["vertex_log10_lr"].astype(float)
    where = ", ".join(f"10^{v:.2f} for hidden {int(a)}–{int(b)}"
                      for v, a, b in zip(vertices, lt["hidden_min"], lt["hidden_max"]))
    return _row(task, "hidden_does_not_shift_lr", CONFIRMED if p >= alpha else NOT_CONFIRMED, test,
                f"best learning rate (vertex) {where}", float(lt["n"].sum()), float(vertices.max() - vertices.min()),
                float(vertices.min()), float(vertices.max()), "vertices, log10 lr", p,
                "spread of the best log10 lr")


def paper_findings(df: pd.DataFrame, sig: pd.DataFrame | None = None, imp: pd.DataFrame | None = None,
                   lrh: pd.DataFrame | None = None, reference: str = "vanilla", alpha: float = ALPHA) -> pd.DataFrame:
    """One row per task × claim of the paper; computes what is not given (the report passes its own)."""
    df = prepare(df) if VAL not in df.columns else df
    sig = significance(df, reference=reference, alpha=alpha) if sig is None else sig
    converged = significance(df, reference=reference, alpha=alpha, subsets=("converged",))
    imp = importance(df) if imp is None else imp
    lrh = lr_by_hidden(df) if lrh is None else lrh
    rows = []
    for task in sorted(df["task"].unique()):
        tdf = df[df["task"] == task]
        metric = str(tdf["metric"].dropna().iloc[0]) if tdf["metric"].notna().any() else "metric"
        optimiser = _config_value(tdf, "optim.name")
        rows += comparison_findings(sig, task, metric, reference, converged)
        rows += importance_findings(imp, task, optimiser)
        rows.append(shift_finding(lrh, task, alpha))
    return pd.DataFrame(rows, columns=FINDING_COLUMNS)


def _config_value(tdf: pd.DataFrame, key: str) -> str | None:
    values = tdf[key].dropna().astype(str).unique() if key in tdf.columns else []
    return values[0] if len(values) == 1 else None


def best_by_validation(df: pd.DataFrame, reference: str = "vanilla") -> pd.DataFrame:
    """Per task × cell: the test metric of the run with the best validation score, how the ok runs stopped
    (share cut off by the budget), and for JSB Chorales the published results beside them."""
    df = prepare(df) if VAL not in df.columns else df
    summary = summarize(df, reference=reference)
    rows = []
    for _, s in summary.iterrows():
        g = df[(df["task"] == s["task"]) & (df["cell"] == s["cell"]) & df["ok"]]
        stopped = g["stopped_by"] if "stopped_by" in g.columns else pd.Series(dtype=object)
        rows.append({"task": s["task"], "cell": s["cell"], "ok": s["ok"], "best_val": s["best_val"],
                     "best_test": s["best_test"], "top_median": s["top_median"],
                     "capped": float(capped_runs(g).mean()) if len(g) and len(stopped) else np.nan,
                     "plateau": float((stopped == "plateau").mean()) if len(g) else np.nan,
                     "published": False, "best_run": s["best_run"]})
    for task in summary["task"].unique():
        if task == JSB:
            rows += [{"task": task, "cell": name, "best_test": nll, "published": True} for name, nll in PUBLISHED_JSB.items()]
    return pd.DataFrame(rows, columns=["task", "cell", "ok", "best_val", "best_test", "top_median", "capped",
                                       "plateau", "published", "best_run"])


STOPPING_BIAS = (
    "Runs stop on convergence: early stopping on the validation metric, or the plateau rule (the best "
    "validation metric improved by less than `trainer.min_improvement` over the last `patience` epochs). The "
    "plateau rule judges a slow learner where it stalled, not where it would end: a cell that learns slowly at "
    "a given learning rate looks worse than it is, one that learns fast (NOAF's unbounded output early on) "
    "better. `plateau` and `capped` give the share of ok runs each rule stopped; a verdict carried by runs cut "
    "off by the budget is about learning speed, not reachable performance. The comparisons' details therefore "
    "repeat each deciding comparison on the pairs where neither run hit the cap (the `converged` subset)."
)


def findings_markdown(studies: Mapping[str, pd.DataFrame]) -> str:
    """The verdict table of several protocols: one row per claim, one column per protocol (`studies`:
    protocol name -> `paper_findings` table of one task)."""
    names = list(studies)
    lines = ["| finding | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for claim in CLAIMS.values():
        cells = []
        for name in names:
            f = studies[name]
            r = f[f["finding"] == claim]
            if r.empty:
                cells.append("")
                continue
            r = r.iloc[0]
            numbers = []
            if np.isfinite(r["effect"]):  # the interval says what it is: a 95 % CI, a range over cells, ...
                label = r["interval"] if isinstance(r["interval"], str) and r["interval"] else "interval"
                measure = r.get("measure")
                measure = f"{measure} " if isinstance(measure, str) and measure else ""
                numbers.append(f"{measure}{fmt(r['effect'])} ({label} {fmt(r['low'])} to {fmt(r['high'])})")
            if np.isfinite(r["n"]):
                numbers.append(f"n = {int(r['n'])}")
            if np.isfinite(r["p"]):
                p_is = r.get("p_is")
                numbers.append(f"{p_is if isinstance(p_is, str) and p_is else 'p'} = {fmt(r['p'])}")
            cells.append(f"**{r['verdict']}**" + (f" ({', '.join(numbers)})" if numbers else ""))
        lines.append(f"| {claim} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def best_markdown(studies: Mapping[str, pd.DataFrame]) -> str:
    """Best-by-validation test metric per cell, one column per protocol, published results last."""
    names = list(studies)
    cells = list(dict.fromkeys(c for b in studies.values() for c in b.loc[~b["published"].astype(bool), "cell"]))
    lines = ["| cell | " + " | ".join(f"{n} best test (capped)" for n in names) + " |", "|---|" + "---|" * len(names)]
    for cell in cells:
        out = []
        for name in names:
            b = studies[name]
            r = b[(b["cell"] == cell) & ~b["published"].astype(bool)]
            out.append(f"{r['best_test'].iloc[0]:.3f} ({r['capped'].iloc[0]:.0%})" if len(r) else "")
        lines.append(f"| {cell} | " + " | ".join(out) + " |")
    published = next((b[b["published"].astype(bool)] for b in studies.values() if b["published"].any()), None)
    if published is not None:
        lines += [f"| {r['cell']} | " + " | ".join([f"{r['best_test']:.2f}"] * len(names)) + " |"
                  for _, r in published.iterrows()]
    return "\n".join(lines)


def protocol_tables(path: str | Path, reference: str = "vanilla") -> tuple[pd.DataFrame, pd.DataFrame]:
    """`paper_findings` and `best_by_validation` of the study under `path` (its records)."""
    df = prepare(load(path))
    return paper_findings(df, reference=reference), best_by_validation(df, reference)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lstm-odyssey-verdicts",
        description="The paper's findings as verdicts, one column per protocol (the README's tables).")
    parser.add_argument("studies", nargs="+", metavar="NAME=STUDY",
                        help="a protocol's name and its sweep folder or runs.parquet, e.g. paper=results/odyssey_jsb/paper")
    parser.add_argument("--reference", default="vanilla")
    args = parser.parse_args(argv)
    findings, best = {}, {}
    for item in args.studies:
        name, sep, path = item.partition("=")
        if not sep or not Path(path).exists():
            parser.error(f"{item!r} is not NAME=STUDY: give a name, '=', and an existing sweep folder or runs.parquet")
        findings[name], best[name] = protocol_tables(path, args.reference)
    print(findings_markdown(findings) + "\n\n" + best_markdown(best))
    return 0


if __name__ == "__main__":
    sys.exit(main())
