"""The run table every analysis reads: runs loaded from a sweep, `prepare`d, and paired across cells.

`load` reads the DataFrame of `lstm_odyssey.results.load_results` (one row per run) or a saved run table;
`prepare` adds the primary metric on validation and test as `val_score` / `test_score`, `ok` and `pair`
(what makes runs of two cells a pair). A study is *paired* when trial k of every cell ran with the same
hyperparameters (`sweep.paired: true`): `design` tells whether a task's runs are, `pairs` matches them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..results import FAILED, OK, is_hparam
from ..schema import NO_DEFAULT
from ..schema import default as schema_default

VAL, TEST = "val_score", "test_score"
PAIR = "pair"


def load(*paths: str | Path) -> pd.DataFrame:
    """Runs from sweep folders / result.json files (via `load_results`) and `.parquet`/`.csv` run tables."""
    from ..results import load_results

    frames = []
    record_paths = []
    for path in paths:
        path = Path(path)
        if path.is_file() and path.suffix == ".parquet":
            frames.append(pd.read_parquet(path))
        elif path.is_file() and path.suffix == ".csv":
            frames.append(pd.read_csv(path))
        else:
            record_paths.append(path)
    if record_paths:
        frames.append(load_results(*record_paths))
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True)
    if "record_path" in df.columns:  # a runs.parquet next to its records would count each run twice
        keep = df["record_path"].isna() | ~df["record_path"].duplicated()
        df = df[keep].reset_index(drop=True)
    return df


def cell_order(cells: Iterable[str], reference: str | None = "vanilla") -> list[str]:
    """The reference first, then the presets in the paper's order, then anything else by name."""
    from ..cells import PRESETS

    cells = list(dict.fromkeys(str(c) for c in cells))
    preset = {name: i for i, name in enumerate(PRESETS)}

    def key(c: str) -> tuple:
        return (c != reference, preset.get(c, len(preset)), c)

    return sorted(cells, key=key)


def prepare(df: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """A copy with the columns every analysis needs: status, cell, task, metric, `val_score` and
    `test_score` (the task's primary metric, or `metric` when given), `ok` (a usable finished run) and
    `pair` (study, trial k and the non-cell hyperparameters: equal for the runs of a pair; None outside a study)."""
    df = df.copy()
    for col, default in (("status", FAILED), ("cell", "unknown"), ("task", "unknown"), ("metric", None)):
        if col not in df.columns:
            df[col] = default
    df["status"] = df["status"].fillna(FAILED).astype(str)
    df["cell"] = df["cell"].fillna("unknown").astype(str)
    df["task"] = df["task"].fillna("unknown").astype(str)
    # Failed runs carry no metric name: use the task's most common one.
    names = df["metric"].astype(object)
    by_task = {}
    for task, group in df.groupby("task"):
        found = group["metric"].dropna()
        by_task[task] = metric or (str(found.mode().iloc[0]) if len(found) else None)
    df["metric"] = [metric or (m if isinstance(m, str) else by_task.get(t)) for m, t in zip(names, df["task"])]
    for split, col in (("val", VAL), ("test", TEST)):
        values = []
        for i, m in enumerate(df["metric"]):
            name = f"{split}_{m}"
            values.append(df[name].iloc[i] if m is not None and name in df.columns else np.nan)
        df[col] = pd.to_numeric(pd.Series(values, index=df.index, dtype=object), errors="coerce")
    df["ok"] = (df["status"] == OK) & np.isfinite(df[VAL]) & np.isfinite(df[TEST])
    df[PAIR] = pair_keys(df)
    return df


# -- pairing -------------------------------------------------------------------------------------------------
def canonical(value: Any) -> str:
    """One spelling per value, whatever the frame's dtype made of it (19 and 19.0; a list and an array)."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return "[" + ",".join(canonical(v) for v in value) + "]"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "null"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, float, np.integer, np.floating)):
        v = float(value)
        return str(int(v)) if v.is_integer() else repr(v)
    return str(value)


def pair_keys(df: pd.DataFrame) -> pd.Series:
    """Per run: its study, trial k and every hyperparameter that is not a cell flag, as one string; runs of
    two cells with equal keys ran under the same conditions. A hyperparameter a record lacks counts as its
    schema default: the record was written before the key existed, and ran as the default does (records of
    one study can straddle a release that added an option). None for runs without a trial index."""
    if "trial" not in df.columns:
        return pd.Series([None] * len(df), index=df.index, dtype=object)
    columns = [c for c in df.columns if is_hparam(c) and not c.startswith("cell.")]
    studies = df["study"].tolist() if "study" in df.columns else [None] * len(df)
    values = [[_or_default(c, v) for v in df[c].tolist()] for c in columns]
    keys = []
    for i, trial in enumerate(df["trial"].tolist()):
        if trial is None or (isinstance(trial, float) and math.isnan(trial)):
            keys.append(None)
            continue
        row = [canonical(studies[i]), canonical(trial)] + [f"{c}={canonical(v[i])}" for c, v in zip(columns, values)]
        keys.append(json.dumps(row))
    return pd.Series(keys, index=df.index, dtype=object)


def _or_default(key: str, value: Any) -> Any:
    """`value`, or the schema's default of `key` where the record has none (None or NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        fallback = schema_default(key)
        return None if fallback is NO_DEFAULT else fallback
    return value


def design(tdf: pd.DataFrame) -> tuple[bool, str]:
    """Is this task's study paired, and why: among its ok runs, every run whose trial k also ran in another
    cell must share its hyperparameters with that run (trial k had the same sample in every cell)."""
    tdf = prepare(tdf) if PAIR not in tdf.columns else tdf
    ok = tdf[tdf["ok"] & tdf[PAIR].notna()]
    if ok.empty:
        return False, "the records carry no trial index (runs made outside a study), so no run has a partner"
    trials = ok[PAIR].map(lambda key: json.dumps(json.loads(key)[:2]))  # (study, k)
    shared = ok.groupby(trials)["cell"].transform("nunique") > 1
    if not shared.any():
        return False, "no trial index was run by two cells"
    partnered = ok.groupby(PAIR)["cell"].transform("nunique") > 1
    lonely = int((shared & ~partnered).sum())
    if lonely:
        return False, (f"trial k of different cells ran with different hyperparameters ({lonely} of {int(shared.sum())} "
                       "runs have no partner: an unpaired study, sweep.paired=false)")
    n_trials = ok.loc[shared, PAIR].nunique()
    return True, f"trial k of every cell ran with the same hyperparameters ({n_trials} matched trials)"


def pairs(tdf: pd.DataFrame, cell: str, reference: str, failed_as: float | None = None) -> pd.DataFrame:
    """The pairs of `cell` with `reference` in one task: runs with equal `pair` keys, one row per pair (ordered by
    the key) with `test`, `val` of the cell, `test_ref`, `val_ref`, and the runs' row labels `run_index`,
    `ref_index`. Only ok runs pair, unless `failed_as` is given: then a run that diverged or failed keeps its pair,
    with `failed_as` as its scores (a rank test counts it as the worst run instead of losing the pair)."""
    tdf = prepare(tdf) if PAIR not in tdf.columns else tdf
    runs = tdf[tdf[PAIR].notna() & (tdf["ok"] if failed_as is None else True)]

    def side(name: str) -> pd.DataFrame:
        g = runs[runs["cell"] == name].sort_values("ok", ascending=False, kind="stable").drop_duplicates(PAIR)
        test, val = (g[TEST], g[VAL]) if failed_as is None else (g[TEST].where(g["ok"], failed_as), g[VAL].where(g["ok"], failed_as))
        return pd.DataFrame({PAIR: g[PAIR], "test": test, "val": val, "index": g.index})

    merged = side(cell).merge(side(reference), on=PAIR, suffixes=("", "_ref"))
    merged = merged.rename(columns={"index": "run_index", "index_ref": "ref_index"})
    return merged.sort_values(PAIR, kind="stable").reset_index(drop=True)
