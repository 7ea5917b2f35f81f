"""Run-to-run noise and code versions: what the margin δ and a study's numbers must be read against.

A configuration run under several seeds (`sweep.seeds`, or a study of listed configurations) shows how much the
test metric moves when nothing but the seed changes; the same pairs across seeds show how much a paired
difference does. A margin smaller than that noise asks more of one run than it can give. The records' commits say
which code versions a study's numbers come from.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..schema import AnalysisConfig
from .frame import PAIR, TEST, VAL, cell_order, prepare
from .plan import margin
from .stats import lower_is_better
from .text import fmt, markdown_table

SEED = "trainer.seed"


def configuration(pair_key: str | None) -> str | None:
    """A pair key without the seed: the runs of one configuration under every seed share it."""
    if pair_key is None:
        return None
    return json.dumps([part for part in json.loads(pair_key) if not str(part).startswith(f"{SEED}=")])


def _repeated(df: pd.DataFrame) -> Iterator[tuple[tuple[str, str], pd.DataFrame, pd.DataFrame]]:
    """Per (task, cell) with a configuration run under two or more seeds: those runs (with their `configuration`)
    and all ok runs of the study."""
    ok = df[df["ok"] & df[PAIR].notna()].copy()
    if SEED not in ok.columns or ok.empty:
        return
    ok["configuration"] = ok[PAIR].map(configuration)
    for key, g in ok.groupby(["task", "cell"], sort=True):
        seeds = g.groupby("configuration")[SEED].nunique()
        repeated = seeds[seeds >= 2].index
        if len(repeated):
            yield key, g[g["configuration"].isin(repeated)], ok


def seed_noise(df: pd.DataFrame, plan: AnalysisConfig) -> pd.DataFrame:
    """Per task × cell over the configurations run under two or more seeds: how many, the seeds per configuration,
    the pooled within-configuration sd of the test metric (`sd_seed`), and of the paired difference to the
    reference at the same seed (`sd_seed_diff`), beside the plan's margin."""
    rows = []
    for (task, cell), r, ok in _repeated(df):
        seeds = r.groupby("configuration")[SEED].nunique()
        ref = ok[(ok["task"] == task) & (ok["cell"] == plan.reference)].drop_duplicates(PAIR).set_index(PAIR)[TEST]
        diff = r[TEST].to_numpy() - ref.reindex(r[PAIR]).to_numpy()
        metric = str(r["metric"].iloc[0])
        rows.append({
            "task": task, "cell": cell, "configurations": len(seeds), "seeds": int(seeds.median()),
            "sd_seed": _pooled_sd(r[TEST], r["configuration"]),
            "sd_seed_diff": np.nan if cell == plan.reference else _pooled_sd(pd.Series(diff, index=r.index), r["configuration"]),
            "margin": margin(plan, metric) if metric in plan.margin else np.nan,
        })
    return pd.DataFrame(rows)


def best_over_seeds(df: pd.DataFrame) -> pd.DataFrame:
    """Per task × cell, of its configurations run under two or more seeds, the one with the best mean validation
    score: its trial, the seeds, and the mean, sd, min and max of its test metric over them. The best single run
    of a study is one draw of its seed; this says how far that draw may move."""
    rows = []
    for (task, cell), r, _ in _repeated(df):
        means = r.groupby("configuration")[VAL].mean()
        ascending = lower_is_better(str(r["metric"].iloc[0]))
        runs = r[r["configuration"] == means.sort_values(ascending=ascending, kind="stable").index[0]]
        test = runs[TEST]
        rows.append({"task": task, "cell": cell, "trial": runs["trial"].iloc[0], "seeds": int(runs[SEED].nunique()),
                     "val_mean": float(runs[VAL].mean()), "test_mean": float(test.mean()),
                     "test_sd": float(test.std(ddof=1)), "test_min": float(test.min()), "test_max": float(test.max())})
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


def searched_keys(study: str | Path) -> dict[str, str]:
    """The keys a study searched and their types (`sweep.params` of its multirun.yaml, nested as in the config),
    in its order."""
    from omegaconf import OmegaConf

    saved = Path(study) / "multirun.yaml"
    if not saved.exists():
        raise FileNotFoundError(f"{saved} not found: give the folder of a study written by lstm-odyssey-train -m")
    params = OmegaConf.to_container(OmegaConf.load(saved).get("sweep", {}).get("params") or {})

    def leaves(node: Mapping, prefix: str) -> dict[str, str]:
        found: dict[str, str] = {}
        for name, v in node.items():
            found.update({f"{prefix}{name}": v["type"]} if "type" in v else leaves(v, f"{prefix}{name}."))
        return found

    return leaves(params, "")


def _one_task(df: pd.DataFrame) -> None:
    """Trials rank within one task: refuse runs of several in one line."""
    if df["task"].nunique() != 1:
        raise ValueError(f"the runs are of {df['task'].nunique()} tasks; rank one task's trials at a time")


def best_configurations(df: pd.DataFrame, keys: Sequence[str], top: int) -> pd.DataFrame:
    """The `top` trials of a paired study by the mean validation score over all its cells, counting only trials
    in which every cell's run is ok (a failed run would flatter the mean it leaves): one row per trial, best
    first, with `trial`, the mean (`mean_val`) and the searched hyperparameters `keys` as the runs had them."""
    _one_task(df)
    cells = df["cell"].nunique()
    ok = df[df["ok"] & df[PAIR].notna()]
    trials = ok.groupby(PAIR).agg(trial=("trial", "first"), cells=("cell", "nunique"), mean_val=(VAL, "mean"),
                                  **{k: (k, "first") for k in keys})
    complete = trials[trials["cells"] == cells].drop(columns="cells")
    ascending = lower_is_better(str(df["metric"].iloc[0]))
    return complete.sort_values("mean_val", ascending=ascending, kind="stable").head(top).reset_index(drop=True)


def best_configurations_by_cell(df: pd.DataFrame, keys: Sequence[str], top: int) -> pd.DataFrame:
    """Each cell's own `top` trials by its validation score (ok runs only), for a seed study of every cell at its
    best: one row per cell and trial, cells in the study's order and each cell's best first, with `cell`, `trial`,
    the validation score (`val`) and the searched hyperparameters `keys` as the run had them."""
    _one_task(df)
    ok = df[df["ok"] & df["trial"].notna()]
    ascending = lower_is_better(str(df["metric"].iloc[0]))
    ranked = [ok[ok["cell"] == cell].sort_values(VAL, ascending=ascending, kind="stable").head(top)
              for cell in cell_order(ok["cell"].unique())]
    columns = ["cell", "trial", VAL, *keys]
    best = pd.concat(ranked)[columns] if ranked else pd.DataFrame(columns=columns)
    return best.rename(columns={VAL: "val"}).reset_index(drop=True)


def configs_yaml(best: pd.DataFrame, keys: Mapping[str, str]) -> str:
    """`best` as the `sweep.configs` block of a study of listed configurations (exact values, trial as comment);
    by cell (`best` has a `cell` column, as `best_configurations_by_cell` gives) a list under each cell."""
    def value(v: object, kind: str) -> str:
        return str(int(v)) if kind == "int" else repr(v.item() if hasattr(v, "item") else v)

    def rows(table: pd.DataFrame, indent: str) -> list[str]:
        return [f"{indent}- {{{', '.join(f'{k}: {value(row[k], kind)}' for k, kind in keys.items())}}}"
                f"   # trial {row['trial']}" for row in table.to_dict("records")]

    if "cell" not in best.columns:
        return "\n".join(["  configs:", *rows(best, "    ")])
    lines = ["  configs:"]
    for cell in dict.fromkeys(best["cell"]):
        lines += [f"    {cell}:", *rows(best[best["cell"] == cell], "      ")]
    return "\n".join(lines)


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
        best = best_over_seeds(df)
        tables["seed_best"] = best
        lines += ["Each cell's best configuration by its mean validation score over the seeds, and its test metric "
                  "over them: the spread one seed's best run may land anywhere in.", "", markdown_table(best), ""]
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
    and the largest difference of their test metrics. `... --best K STUDY`: the K best trials of a paired study
    as the sweep.configs of a seed study."""
    import argparse

    from .frame import load

    parser = argparse.ArgumentParser(prog="python -m lstm_odyssey.analysis.replicates", description=main.__doc__)
    parser.add_argument("studies", nargs="+", help="NEW OLD, or with --best the one study to rank")
    parser.add_argument("--best", type=int, metavar="K", help="print the K best trials of STUDY as sweep.configs")
    parser.add_argument("--by-cell", action="store_true",
                        help="with --best: each cell's own K best trials by its validation score, listed by cell")
    args = parser.parse_args(argv)
    if args.by_cell and args.best is None:
        parser.error("--by-cell ranks with --best K: give both")
    if args.best is not None:
        if len(args.studies) != 1:
            parser.error("--best ranks one study: give its folder only")
        rank = best_configurations_by_cell if args.by_cell else best_configurations
        try:
            keys = searched_keys(args.studies[0])
            best = rank(prepare(load(args.studies[0])), keys, args.best)
        except (FileNotFoundError, ValueError) as err:  # not a study's folder; runs of several tasks
            parser.error(str(err))
        print(markdown_table(best))
        how = ("each cell's best trials by its validation score" if args.by_cell
               else f"the {len(best)} best trials by the mean validation score over its cells")
        print(f"\n# {how} in {args.studies[0]}\n" + configs_yaml(best, keys))
        return 0
    if len(args.studies) != 2:
        parser.error("give two studies, NEW OLD (the runs of NEW that repeat runs of OLD), or --best K STUDY")
    table = reruns(load(args.studies[0]), load(args.studies[1]))
    print(markdown_table(table))
    if len(table):
        print(f"\n{len(table)} repeated runs; largest |difference| {table['difference'].abs().max():.4g} "
              f"(median {table['difference'].abs().median():.4g})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
