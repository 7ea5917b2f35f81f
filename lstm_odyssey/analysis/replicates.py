"""Run-to-run noise and code versions: what the margin δ and a study's numbers must be read against.

A configuration run under several seeds (`sweep.seeds`, or a study of listed configurations) shows how much the
test metric moves when nothing but the seed changes; the same pairs across seeds show how much a paired
difference does. A margin smaller than that noise asks more of one run than it can give. The records' commits say
which code versions a study's numbers come from.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from ..schema import AnalysisConfig
from .frame import PAIR, TEST, prepare
from .plan import margin
from .text import fmt, markdown_table

SEED = "trainer.seed"


def configuration(pair_key: str | None) -> str | None:
    """A pair key without the seed: the runs of one configuration under every seed share it."""
    if pair_key is None:
        return None
    return json.dumps([part for part in json.loads(pair_key) if not str(part).startswith(f"{SEED}=")])


def seed_noise(df: pd.DataFrame, plan: AnalysisConfig) -> pd.DataFrame:
    """Per task × cell over the configurations run under two or more seeds: how many, the seeds per configuration,
    the pooled within-configuration sd of the test metric (`sd_seed`), and of the paired difference to the
    reference at the same seed (`sd_seed_diff`), beside the plan's margin."""
    ok = df[df["ok"] & df[PAIR].notna()].copy()
    if SEED not in ok.columns or ok.empty:
        return pd.DataFrame()
    ok["configuration"] = ok[PAIR].map(configuration)
    rows = []
    for (task, cell), g in ok.groupby(["task", "cell"], sort=True):
        seeds = g.groupby("configuration")[SEED].nunique()
        repeated = seeds[seeds >= 2].index
        if not len(repeated):
            continue
        r = g[g["configuration"].isin(repeated)]
        ref = ok[(ok["task"] == task) & (ok["cell"] == plan.reference)].drop_duplicates(PAIR).set_index(PAIR)[TEST]
        diff = r[TEST].to_numpy() - ref.reindex(r[PAIR]).to_numpy()
        metric = str(g["metric"].iloc[0])
        rows.append({
            "task": task, "cell": cell, "configurations": len(repeated), "seeds": int(seeds[repeated].median()),
            "sd_seed": _pooled_sd(r[TEST], r["configuration"]),
            "sd_seed_diff": np.nan if cell == plan.reference else _pooled_sd(pd.Series(diff, index=r.index), r["configuration"]),
            "margin": margin(plan, metric) if metric in plan.margin else np.nan,
        })
    return pd.DataFrame(rows)


def _pooled_sd(values: pd.Series, groups: pd.Series) -> float:
    """sqrt of the within-group variances pooled by their degrees of freedom."""
    values = values[np.isfinite(values)]
    g = values.groupby(groups[values.index])
    dof = (g.count() - 1).clip(lower=0)
    return float(np.sqrt((g.var(ddof=1).fillna(0) * dof).sum() / dof.sum())) if dof.sum() > 0 else np.nan


def commits(df: pd.DataFrame) -> pd.DataFrame:
    """The code versions a study's records came from: runs per commit (first 10 hex digits), oldest run first."""
    if "git_commit" not in df.columns:
        return pd.DataFrame(columns=["commit", "runs", "cells"])
    c = df.assign(commit=df["git_commit"].fillna("unknown").astype(str).str[:10])
    out = c.groupby("commit", sort=False).agg(runs=("cell", "size"), cells=("cell", lambda s: ", ".join(sorted(set(s)))))
    return out.reset_index()


def reruns(new: pd.DataFrame, old: pd.DataFrame) -> pd.DataFrame:
    """Runs of study `new` that repeat a run of study `old` (same cell, same hyperparameters and seed, whatever the
    study or trial index): both test metrics, their difference and both commits, one row per repeated run. Equal
    code, data and seed give a difference of 0 on the CPU; anything else measures what the code versions changed.
    Both run tables are prepared together, so that a hyperparameter one of them lacks counts as its default."""
    both = prepare(pd.concat([new.assign(_side="new"), old.assign(_side="old")], ignore_index=True))
    ok = both[both["ok"] & both[PAIR].notna()]
    key = ok["cell"] + "|" + ok[PAIR].map(lambda k: json.dumps(json.loads(k)[2:]))  # less study and trial k
    table = pd.DataFrame({"key": key, "side": ok["_side"], "cell": ok["cell"], "test": ok[TEST],
                          "commit": ok["git_commit"] if "git_commit" in ok else None}).drop_duplicates(["key", "side"])
    side = {name: table[table["side"] == name].drop(columns="side") for name in ("new", "old")}
    merged = side["new"].merge(side["old"], on=["key", "cell"], suffixes=("", "_before"))
    merged["difference"] = merged["test"] - merged["test_before"]
    return merged.drop(columns="key").reset_index(drop=True)


def replicate_section(df: pd.DataFrame, plan: AnalysisConfig, tables: dict[str, pd.DataFrame]) -> list[str]:
    """The report's "Seed noise and code versions" section (and its tables)."""
    lines = ["## Seed noise and code versions", ""]
    noise = seed_noise(df, plan)
    if len(noise):
        tables["seed_noise"] = noise
        diff = noise["sd_seed_diff"].dropna()
        lines += ["Configurations run under several seeds: `sd_seed` is the pooled sd of the test metric when only the "
                  "seed changes, `sd_seed_diff` that of the paired difference to the reference at the same seed. "
                  + (f"The margin δ = {fmt(noise['margin'].iloc[0])} stands against a median `sd_seed_diff` of "
                     f"{fmt(float(diff.median()))}." if len(diff) else ""), "",
                  markdown_table(noise), ""]
    else:
        lines += ["Every configuration ran under one seed, so run-to-run noise is not measured here "
                  "(`sweep.seeds=K` repeats each configuration over K seeds).", ""]
    versions = commits(df)
    tables["commits"] = versions
    lines += [f"The records come from {len(versions)} code version(s) (`git_commit`, first 10 digits):", "",
              markdown_table(versions), ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    """`python -m lstm_odyssey.analysis.replicates NEW OLD`: the runs of study NEW that repeat runs of study OLD,
    and the largest difference of their test metrics."""
    import argparse

    from .frame import load

    parser = argparse.ArgumentParser(prog="python -m lstm_odyssey.analysis.replicates", description=main.__doc__)
    parser.add_argument("new")
    parser.add_argument("old")
    args = parser.parse_args(argv)
    table = reruns(load(args.new), load(args.old))
    print(markdown_table(table))
    if len(table):
        print(f"\n{len(table)} repeated runs; largest |difference| {table['difference'].abs().max():.4g} "
              f"(median {table['difference'].abs().median():.4g})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
