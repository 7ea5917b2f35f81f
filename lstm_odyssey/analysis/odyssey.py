"""The paper's findings (Greff et al. 2017, docs/equations.md, Study protocol) as verdicts on a study.

Each claim gets *supported*, *contradicted* or *inconclusive* (with the reason) from the analysis plan
(analysis/plan.py, docs/analysis.md): the claims about cells from the primary rank test at the margin δ on all
pairs (analysis/verdicts.py), the claims about hyperparameters from bootstrap intervals over trials
(analysis/bootstrap.py). `lstm-odyssey-verdicts NAME=SWEEP_DIR ...` prints the README's table for several
protocols side by side.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from ..schema import AnalysisConfig
from ..settings import ConfigError
from .bootstrap import importance_claims, lr_shift_claim
from .frame import VAL, cell_order, design, load, prepare
from .hyperparams import hyperparameters, lr_by_hidden
from .plan import PRIMARY_TESTS, load_plan, margin
from .replicates import best_over_seeds
from .stats import capped_runs, summarize
from .text import fmt, metric_text
from .verdicts import INCONCLUSIVE, Claim, hurt_most, no_difference, no_variant_better

VARIANTS = ("nig", "nfg", "nog", "niaf", "noaf", "cifg", "np", "fgr")  # the paper's eight, against vanilla

# Published test NLL per frame on JSB Chorales (same split): Bai et al. 2018, ~300K parameters each
JSB = "jsb_chorales"  # the task whose published results stand beside the best runs
PUBLISHED_JSB = {"LSTM (Bai et al. 2018)": 8.45, "GRU (Bai et al. 2018)": 8.43,
                 "tanh RNN (Bai et al. 2018)": 8.91, "TCN (Bai et al. 2018)": 8.10}

FINDING_COLUMNS = ["task", "finding", "verdict", "reason", "test", "n", "measure", "effect", "low", "high", "interval",
                   "p", "p_is", "detail"]
CLAIMS = {
    "no_variant_better": "no variant beats vanilla by more than δ",
    "nfg_noaf_hurt_most": "NFG and NOAF hurt most",
    "cifg_np_no_difference": "CIFG and NP make no difference (within δ)",
    "lr_most_important": "the learning rate is by far the most important hyperparameter",
    "momentum_hardly_matters": "momentum hardly matters",
    "nearly_independent": "hyperparameters are nearly independent",
    "hidden_does_not_shift_lr": "the hidden size does not shift the optimal learning rate",
}


def _row(task: str, key: str, claim: Claim, test: str) -> dict:
    return {"task": task, "finding": CLAIMS[key], "test": test, **asdict(claim)}


def comparison_findings(tdf: pd.DataFrame, task: str, metric: str, plan: AnalysisConfig) -> list[dict]:
    """The three claims about cells, by the primary test at δ on all pairs (analysis/verdicts.py)."""
    paired = design(tdf)[0]
    test = f"{PRIMARY_TESTS[plan.primary][0 if paired else 1]}; δ = {margin(plan, metric):g}; all {'pairs' if paired else 'runs'}"
    present = set(tdf["cell"])
    variants = [v for v in VARIANTS if v in present]
    if plan.reference not in present or not variants:
        why = f"the study lacks {plan.reference!r} or every one of the paper's variants"
        return [_row(task, k, Claim(INCONCLUSIVE, why), test)
                for k in ("no_variant_better", "nfg_noaf_hurt_most", "cifg_np_no_difference")]
    out = [_row(task, "no_variant_better", no_variant_better(tdf, variants, metric, plan), test)]
    suspects, same = [c for c in ("nfg", "noaf") if c in present], [c for c in ("cifg", "np") if c in present]
    out.append(_row(task, "nfg_noaf_hurt_most", hurt_most(tdf, suspects, variants, metric, plan) if len(suspects) == 2
                    else Claim(INCONCLUSIVE, "the study lacks NFG or NOAF"), test))
    out.append(_row(task, "cifg_np_no_difference", no_difference(tdf, same, metric, plan) if len(same) == 2
                    else Claim(INCONCLUSIVE, "the study lacks CIFG or NP"), test))
    return out


def paper_findings(df: pd.DataFrame, plan: AnalysisConfig | None = None, lrh: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per task × claim of the paper, by the plan (the schema's defaults when none is given)."""
    plan = plan or AnalysisConfig()
    df = prepare(df) if VAL not in df.columns else df
    lrh = lr_by_hidden(df) if lrh is None else lrh
    rows = []
    for task in sorted(df["task"].unique()):
        tdf = df[df["task"] == task]
        metric = str(tdf["metric"].dropna().iloc[0]) if tdf["metric"].notna().any() else "metric"
        rows += comparison_findings(tdf, task, metric, plan)
        names = hyperparameters(tdf)
        claims = importance_claims(tdf, names, plan, design(tdf)[0], _config_value(tdf, "optim.name"))
        test = f"fANOVA per cell, median over cells; bootstrap over trials ({plan.bootstrap} resamples)"
        rows += [_row(task, key, claim, test) for key, claim in claims.items()]
        lt = lrh[lrh["task"] == task] if len(lrh) else lrh
        ftest = float(lt["shift_p"].iloc[0]) if len(lt) else np.nan
        rows.append(_row(task, "hidden_does_not_shift_lr", lr_shift_claim(tdf, plan, ftest),
                         f"bootstrap over trials of the optimum's shift against ±{plan.lr_shift:g} decades"))
    return pd.DataFrame(rows, columns=FINDING_COLUMNS)


MATCH_COLUMNS = ["task", "cell", "claim", "verdict", "reason", "measure", "effect", "low", "high", "interval", "p", "p_is",
                 "n", "capped", "capped_reference", "num_parameters"]
MATCH_SHOWN = ["task", "cell", "verdict", "reason", "effect", "low", "high", "p", "n", "capped", "capped_reference",
               "num_parameters"]  # the report's columns of it


def matches_reference(df: pd.DataFrame, plan: AnalysisConfig | None = None) -> pd.DataFrame:
    """Per task and cell: "the cell matches the reference within δ", the claim made for cells beyond the paper
    (minGRU and minLSTM match the LSTM, Feng et al. 2024), decided like the paper's "no difference": two one-sided
    tests at ±δ on all pairs, supported when the cell is shown within ±δ, contradicted when shown beyond (better or
    worse), else inconclusive. Beside it, the share of each arm's ok runs cut off by the budget (a verdict carried
    by capped runs is about learning speed) and the cell's median parameter count."""
    plan = plan or AnalysisConfig()
    df = prepare(df) if VAL not in df.columns else df
    ref, rows = plan.reference, []
    for task in sorted(df["task"].unique()):
        tdf = df[df["task"] == task]
        if ref not in set(tdf["cell"]):
            continue
        metric = str(tdf["metric"].dropna().iloc[0]) if tdf["metric"].notna().any() else "metric"
        shares = {c: float(capped_runs(g[g["ok"]]).mean()) if g["ok"].any() else np.nan for c, g in tdf.groupby("cell")}
        for cell in cell_order(set(tdf["cell"]) - {ref}, ref):
            claim = no_difference(tdf, [cell], metric, plan)
            size = pd.to_numeric(tdf.loc[tdf["cell"] == cell, "num_parameters"], errors="coerce").median() \
                if "num_parameters" in tdf.columns else np.nan
            rows.append({"task": task, "cell": cell, "claim": f"{cell} matches {ref} within δ = {margin(plan, metric):g}",
                         **asdict(claim), "capped": shares[cell], "capped_reference": shares[ref], "num_parameters": size})
    return pd.DataFrame(rows, columns=MATCH_COLUMNS)


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


def findings_intro(plan: AnalysisConfig) -> str:
    """What the report's table of the paper's findings says, with the plan's thresholds."""
    return ("Each claim of Greff et al. (2017) as *supported* (shown at the margin δ), *contradicted* (an effect "
            "against it shown) or *inconclusive* (neither; `reason` says why), by the analysis plan above "
            "(docs/analysis.md). The claims about cells rest on the primary test of all pairs; the claims about "
            f"hyperparameters on {plan.bootstrap} bootstrap resamples of the trials against the plan's thresholds "
            f"(*by far*: ≥ {plan.by_far:g}x the next parameter; *hardly*: < {plan.hardly:g}; *nearly independent*: "
            f"main effects ≥ {plan.independent:.0%}; the optimum's shift within ±{plan.lr_shift:g} decades).")


def matches_intro(reference: str) -> str:
    """What the report's table of `matches_reference` says."""
    return ("The claim made for cells beyond the paper (minGRU and minLSTM match the LSTM, Feng et al. 2024), for each "
            f"cell against {reference}: *supported* when two one-sided tests show the difference within ±δ on all "
            "pairs, *contradicted* when it is shown beyond δ (better or worse), *inconclusive* otherwise, by the plan "
            "above. `capped` and `capped_reference` are the shares of each arm's ok runs cut off by the budget: a "
            "difference they carry is about learning speed, not reachable performance.")


BEST_INTRO = ("The test metric of each cell's run with the best validation score (`published`: results on the same "
              "split from the literature); `capped` and `plateau` are the shares of ok runs cut off by the budget and "
              "stopped by the plateau rule.")

STOPPING_BIAS = (
    "Runs stop on convergence: early stopping on the validation metric, or the plateau rule (the best "
    "validation metric improved by less than `trainer.min_improvement` over the last `patience` epochs). The "
    "plateau rule judges a slow learner where it stalled, not where it would end: a cell that learns slowly at "
    "a given learning rate looks worse than it is, one that learns fast (NOAF's unbounded output early on) "
    "better. `plateau` and `capped` give the share of ok runs each rule stopped; a difference carried by runs cut "
    "off by the budget is about learning speed, not reachable performance. The secondary comparisons by "
    "learning-rate decade (fixed before training, unlike whether a run hit the cap) show where it comes from."
)


def findings_markdown(studies: Mapping[str, pd.DataFrame], brief: bool = False) -> str:
    """The verdict table of several protocols: one row per claim, one column per protocol (`studies`:
    protocol name -> `paper_findings` table of one task); `brief` keeps the verdict and the effect, not the reason."""
    names = list(studies)
    lines = ["| finding | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for claim in CLAIMS.values():
        cells = []
        for name in names:
            f = studies[name]
            r = f[f["finding"] == claim]
            cells.append(_verdict_cell(r.iloc[0], brief) if len(r) else "")
        lines.append(f"| {claim} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _verdict_cell(r: pd.Series, brief: bool = False) -> str:
    """"**supported**: the reason (effect, interval, n, p)", or briefly "**supported** (effect, interval)"."""
    if brief:  # the effect in 3 digits and its interval in brackets: a table that fits a page
        sign = "+" if "−" in str(r["measure"]) else ""  # a difference shows its sign, a ratio or share does not
        effect = f"{r['measure']} {r['effect']:{sign}.3g}" if np.isfinite(r["effect"]) else ""
        span = f" [{r['low']:{sign}.3g}, {r['high']:{sign}.3g}]" if effect and np.isfinite(r["low"]) else ""
        return f"**{r['verdict']}**" + (f": {effect}{span}" if effect else "")
    numbers = []
    if np.isfinite(r["effect"]):
        label = r["interval"] if isinstance(r["interval"], str) and r["interval"] else "interval"
        measure = f"{r['measure']} " if isinstance(r.get("measure"), str) and r["measure"] else ""
        span = f" ({label} {fmt(r['low'])} to {fmt(r['high'])})" if np.isfinite(r["low"]) else ""
        numbers.append(f"{measure}{fmt(r['effect'])}{span}")
    if np.isfinite(r["n"]):
        numbers.append(f"n = {int(r['n'])}")
    if np.isfinite(r["p"]):
        numbers.append(f"{r['p_is'] if isinstance(r.get('p_is'), str) and r['p_is'] else 'p'} = {fmt(r['p'])}")
    reason = f": {r['reason']}" if isinstance(r.get("reason"), str) and r["reason"] else ""
    return f"**{r['verdict']}**{reason}" + (f" ({', '.join(numbers)})" if numbers else "")


def speed_ratios(path: str | Path, reference: str) -> dict[str, float]:
    """Each cell's forward+backward time over the reference cell's, from a `lstm-odyssey-bench --json` file (the
    first row of each cell: its default backend; torch's own modules, the bench's references, left out)."""
    try:
        rows = json.loads(Path(path).read_text())["rows"]
        times = {}
        for r in rows:
            if r["backend"] not in ("nn.LSTM", "nn.GRU"):
                times.setdefault(r["cell"], float(r["fwd_bwd_ms"]))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not the --json of lstm-odyssey-bench ({type(err).__name__}: {err})") from None
    if reference not in times:
        raise ValueError(f"{path} has no time of the reference {reference}; bench it too (--cells {reference} ...)")
    return {cell: t / times[reference] for cell, t in times.items()}


def matches_markdown(studies: Mapping[str, pd.DataFrame], seeds: pd.DataFrame | None = None,
                     parameters: Mapping[str, float] | None = None, speed: Mapping[str, float] | None = None,
                     reference: str = "vanilla") -> str:
    """"Each cell matches the reference within δ", one column per study (`studies`: name -> `matches_reference`
    table of one task): the verdict, the effect with its interval, the test's p and the share of capped runs of
    the cell and of the reference; beside the cell's name its median parameter count in the first study
    (`parameters`, cell -> count; else the first table's, which lacks the reference) and, with `speed`
    (`speed_ratios`), its CPU time per step × the `reference`'s. With `seeds` (`replicates.best_over_seeds` of a
    seed study), a last column: each cell's best configuration's test metric, mean ± sd over its seeds."""
    names = list(studies)
    cells = list(dict.fromkeys(c for t in studies.values() for c in t["cell"]))
    first = dict(parameters) if parameters is not None else dict(zip(studies[names[0]]["cell"],
                                                                         studies[names[0]]["num_parameters"]))
    spread = seeds.set_index("cell") if seeds is not None and len(seeds) else None
    extra = [" best over seeds (mean ± sd) |"] if spread is not None else []
    cost = [f" CPU time (× {reference}) |"] if speed is not None else []
    lines = [f"| cell | parameters ({names[0]}) |" + "".join(cost) + " "
             + " | ".join(f"{n}: matches within δ?" for n in names) + " |" + "".join(extra),
             "|---|---:|" + "---:|" * len(cost) + "---|" * len(names) + "---:|" * len(extra)]
    for cell in cell_order([*cells, *(spread.index if spread is not None else [])]):
        out = []
        for name in names:
            t = studies[name]
            r = t[t["cell"] == cell]
            out.append(_match_cell(r.iloc[0]) if len(r) else "")
        if spread is not None:
            b = spread.loc[cell] if cell in spread.index else None
            out.append(f"{metric_text(b['test_mean'])} ± {metric_text(b['test_sd'], b['test_mean'])} ({int(b['seeds'])})"
                       if b is not None else "")
        size = first.get(cell, np.nan)
        if speed is not None:
            out.insert(0, f"{speed[cell]:.2f}" if cell in speed else "")
        lines.append(f"| {cell} | {f'{size:,.0f}' if np.isfinite(size) else ''} | " + " | ".join(out) + " |")
    return "\n".join(lines)


def _match_cell(r: pd.Series) -> str:
    """"**supported**: -0.012 [-0.041, +0.018], p 0.003; capped 3% (ref 5%)": the verdict and its numbers (p is
    the test's that decided it, or for an inconclusive one the equivalence test's)."""
    if not np.isfinite(r["effect"]):
        return f"**{r['verdict']}**"
    p = f", p {r['p']:.2g}" if np.isfinite(r["p"]) else ""
    capped = (f"; capped {r['capped']:.0%} (ref {r['capped_reference']:.0%})"
              if np.isfinite(r["capped"]) and np.isfinite(r["capped_reference"]) else "")
    return f"**{r['verdict']}**: {r['effect']:+.3g} [{r['low']:+.3g}, {r['high']:+.3g}]{p}{capped}"


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
            out.append(f"{metric_text(r['best_test'].iloc[0])} ({r['capped'].iloc[0]:.0%})" if len(r) else "")
        lines.append(f"| {cell} | " + " | ".join(out) + " |")
    published = next((b[b["published"].astype(bool)] for b in studies.values() if b["published"].any()), None)
    if published is not None:  # the literature's numbers, under the protocols of their task only
        has = [bool(studies[name]["published"].astype(bool).any()) for name in names]
        lines += [f"| {r['cell']} | " + " | ".join(f"{r['best_test']:.2f}" if h else "" for h in has) + " |"
                  for _, r in published.iterrows()]
    return "\n".join(lines)


def protocol_tables(path: str | Path, overrides: Sequence[str] = (),
                    matches: bool = False) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """`paper_findings` (or with `matches`, `matches_reference`) and `best_by_validation` of the study under
    `path` (its records), by its plan, and each cell's median parameter count."""
    plan = load_plan([path], overrides)
    df = prepare(load(path))
    verdicts = matches_reference(df, plan) if matches else paper_findings(df, plan)
    sizes = pd.to_numeric(df["num_parameters"], errors="coerce") if "num_parameters" in df else pd.Series(np.nan, df.index)
    return verdicts, best_by_validation(df, plan.reference), sizes.groupby(df["cell"]).median()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lstm-odyssey-verdicts",
        description="The paper's findings as verdicts, one column per protocol (the README's tables).")
    parser.add_argument("studies", nargs="+", metavar="NAME=STUDY",
                        help="a protocol's name and its sweep folder or runs.parquet, e.g. paper=results/odyssey_jsb/paper")
    parser.add_argument("--brief", action="store_true",
                        help="each verdict with its effect and interval only, without the reason (the README's table)")
    parser.add_argument("--matches", action="store_true",
                        help="instead of the paper's findings: does each cell match the reference within δ (the "
                             "claim of the cells beyond the paper), one column per study")
    parser.add_argument("--seeds", metavar="STUDY", help="with --matches: a seed study of the same cells, whose "
                        "best configuration per cell adds its test metric's mean ± sd over the seeds")
    parser.add_argument("--speed", metavar="BENCH_JSON", help="with --matches: the --json of lstm-odyssey-bench, "
                        "whose forward+backward times add each cell's CPU time × the reference's")
    parser.add_argument("--plan", nargs="*", default=[], metavar="KEY=VALUE",
                        help="change the analysis plan, e.g. --plan margin.nll=0.1 alpha=0.01 (docs/analysis.md)")
    args = parser.parse_args(argv)
    if args.seeds and not (args.matches and Path(args.seeds).exists()):
        parser.error(f"--seeds {args.seeds}: give it with --matches, and an existing sweep folder or runs.parquet")
    if args.speed and not args.matches:
        parser.error("--speed adds a column to the --matches table: give it with --matches")
    findings, best, sizes = {}, {}, {}
    for item in args.studies:
        name, sep, path = item.partition("=")
        if not sep or not Path(path).exists():
            parser.error(f"{item!r} is not NAME=STUDY: give a name, '=', and an existing sweep folder or runs.parquet")
        try:
            findings[name], best[name], sizes[name] = protocol_tables(path, args.plan, args.matches)
        except (ConfigError, ValueError) as err:  # a plan key or value the schema refuses
            parser.error(str(err))
    seeds = best_over_seeds(prepare(load(args.seeds))) if args.seeds else None
    reference = load_plan([args.studies[0].partition("=")[2]], args.plan).reference
    try:
        speed = speed_ratios(args.speed, reference) if args.speed else None
    except ValueError as err:
        parser.error(f"--speed: {err}")
    verdicts = (matches_markdown(findings, seeds, sizes[next(iter(sizes))], speed, reference) if args.matches
                else findings_markdown(findings, args.brief))
    print(verdicts + "\n\n" + best_markdown(best))
    return 0


if __name__ == "__main__":
    sys.exit(main())
