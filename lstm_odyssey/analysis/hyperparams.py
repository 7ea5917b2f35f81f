"""Which hyperparameters matter (fANOVA) and how the metric depends on them (marginals).

The search space is read off the runs: every hyperparameter (`lstm_odyssey.results.is_hparam`: cell flags
included, a study may search them) that varies among the ok runs of one task and cell. A cell flag that
only differs between cells is the cell's identity, not a searched hyperparameter. Values are analysed on
the scale they were sampled on (docs/equations.md, "Study protocol"): log10 for the learning rate and the hidden size, log10(1 − momentum)
for momentum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from ..results import is_hparam
from .fanova import main_effects
from .frame import TEST, VAL, canonical, cell_order, design, prepare

REPLICATE = "trainer.seed"  # a seed replicates a run; it is not a setting anyone tunes
LOG_PARAMS = {"optim.lr", "model.hidden_size", "optim.weight_decay", "model.embedding_dim", "trainer.batch_size"}
POOLED = "(pooled)"
# The lr × hidden size question (does the hidden size shift the optimal learning rate?) needs, per hidden-size
# group, a quadratic in log10 lr with a residual to test: at least 4 distinct learning rates, and runs enough.
MIN_LRS_PER_GROUP = 4
MIN_RUNS_PER_GROUP = 10


def hyperparameters(df: pd.DataFrame) -> list[str]:
    """The searched hyperparameters: hyperparameter columns that take more than one value among the ok runs
    of one task and cell (the seed, a replicate, excluded)."""
    df = prepare(df) if VAL not in df.columns else df
    ok = df[df["ok"]]
    found = []
    for col in df.columns:
        if not is_hparam(col) or col == REPLICATE:
            continue
        values = ok[col].map(canonical).replace("null", None)
        if (values.groupby([ok["task"], ok["cell"]]).nunique() > 1).any():
            found.append(col)
    return found


def scale_of(name: str, values: pd.Series) -> str:
    """"log" (log10 x), "log1m" (log10(1 − x), for momentum), "linear" or "categorical"."""
    values = pd.to_numeric(values, errors="coerce") if not _categorical(values) else values
    if _categorical(values):
        return "categorical"
    v = values.dropna().to_numpy(dtype=float)
    if name.endswith("momentum") and len(v) and v.min() >= 0 and v.max() < 1 and (1 - v).max() / (1 - v).min() >= 10:
        return "log1m"
    if len(v) and v.min() > 0 and name in LOG_PARAMS:
        return "log"
    return "linear"


def _categorical(values: pd.Series) -> bool:
    values = values.dropna()
    if values.map(lambda x: isinstance(x, bool)).any():
        return True
    return pd.to_numeric(values, errors="coerce").isna().any()


def transform(values: pd.Series, scale: str) -> pd.Series:
    """Values on the analysis scale (what the axis and the fANOVA forest see)."""
    if scale == "categorical":
        return values.astype(str)
    v = pd.to_numeric(values, errors="coerce").astype(float)
    if scale == "log":
        return np.log10(v)
    if scale == "log1m":
        return np.log10(1 - v)
    return v


def axis_label(name: str, scale: str) -> str:
    return {"log": f"log10 {name}", "log1m": f"log10(1 − {name})"}.get(scale, name)


def importance(
    df: pd.DataFrame, params: Sequence[str] | None = None, *, target: str = "test", by_cell: bool = True,
    pooled: bool = True, min_runs: int = 8, n_trees: int = 64, max_depth: int = 8, seed: int = 0,
    notes: list[str] | None = None,
) -> pd.DataFrame:
    """fANOVA (optuna's `FanovaImportanceEvaluator`, its numbers computed by `fanova.main_effects`) per task ×
    cell and per task pooled over cells with the cell as a categorical parameter. One row per task, cell, param:
    `importance` (share of the main effects, sums to 1) and `variance_fraction` (share of the forest's variance
    explained by that parameter alone; 1 − their sum is what interactions and noise explain). `max_depth`
    bounds the trees: optuna's default (64) made its pure-Python marginals take minutes on a paper-sized pool
    (2600 runs: 5 min at depth 64, 5 s at depth 8, the same importances on planted data)."""
    df = prepare(df) if VAL not in df.columns else df
    notes = notes if notes is not None else []
    score = TEST if target == "test" else VAL
    rows = []
    for task in sorted(df["task"].unique()):
        tdf = df[(df["task"] == task) & df["ok"]]
        if tdf.empty:
            notes.append(f"importance on {task}: no ok runs")
            continue
        names = list(params) if params is not None else hyperparameters(tdf)
        names = [p for p in names if p in tdf.columns and tdf[p].dropna().astype(str).nunique() > 1]
        if not names:
            notes.append(f"importance on {task}: no hyperparameter varies among its ok runs")
            continue
        groups = [(c, tdf[tdf["cell"] == c]) for c in cell_order(tdf["cell"].unique())] if by_cell else []
        if pooled and tdf["cell"].nunique() > 1:
            groups.append((POOLED, tdf))
        elif pooled and not by_cell:
            groups.append((POOLED, tdf))
        for cell, g in groups:
            if len(g) < min_runs:
                notes.append(f"importance on {task} / {cell}: cannot tell from these runs which hyperparameters matter, "
                             f"because it has {len(g)} ok runs and fANOVA needs at least {min_runs}")
                continue
            use = names + (["cell"] if cell == POOLED and g["cell"].nunique() > 1 else [])
            try:
                raw = _fanova(g, use, score, n_trees, max_depth, seed)
            except Exception as err:  # a forest that cannot be fitted is a note, not a crash
                notes.append(f"importance on {task} / {cell}: fANOVA failed ({type(err).__name__}: {err})")
                continue
            total = sum(raw.values())
            for name in use:
                rows.append({
                    "task": task, "cell": cell, "param": name,
                    "scale": "categorical" if name == "cell" else scale_of(name, g[name]),
                    "importance": raw[name] / total if total > 0 else np.nan,
                    "variance_fraction": raw[name], "n_runs": len(g),
                })
    out = pd.DataFrame(rows, columns=["task", "cell", "param", "scale", "importance", "variance_fraction", "n_runs"])
    return out.sort_values(["task", "cell", "importance"], ascending=[True, True, False], kind="stable").reset_index(
        drop=True
    )


def _fanova(g: pd.DataFrame, names: list[str], score: str, n_trees: int, max_depth: int, seed: int) -> dict[str, float]:
    """optuna's `FanovaImportanceEvaluator(n_trees, max_depth, seed)` with `normalize=False`, the same numbers
    from `fanova.main_effects` (vectorised, fast enough to bootstrap). optuna orders the parameters by name:
    that order is the forest's column order, hence its randomness, so it is kept here."""
    order = sorted(names)
    columns, bounds, n_choices = [], [], []
    for name in order:
        scale = "categorical" if name == "cell" else scale_of(name, g[name])
        values = transform(g[name], scale)
        if scale == "categorical":  # codes into the sorted choices; main_effects one-hot encodes them as optuna
            choices = sorted(values.unique())
            columns.append(values.map({c: i for i, c in enumerate(choices)}).to_numpy(dtype=float))
            bounds.append((0.0, 1.0))
            n_choices.append(len(choices))
        else:
            lo, hi = float(values.min()), float(values.max())
            columns.append(values.to_numpy(dtype=float))
            bounds.append((lo, hi if hi > lo else lo + 1e-12))
            n_choices.append(0)
    X, y, (low, high) = np.column_stack(columns), g[score].to_numpy(dtype=float), np.array(bounds).T
    keep = np.isfinite(X).all(axis=1)  # a trial with a non-finite parameter value is left out
    if not keep.any():  # optuna refused a study without trials
        raise ValueError("no run has a value for every parameter")
    raw = dict(zip(order, main_effects(X[keep], y[keep], low, high, n_trees=n_trees, max_depth=max_depth, seed=seed,
                                       n_choices=n_choices).tolist()))
    # optuna's order: largest first; ties in reverse order of (searched by name, then one-choice ones by name)
    ranked = [n for n, k in zip(order, n_choices) if k != 1] + [n for n, k in zip(order, n_choices) if k == 1]
    return dict(reversed(sorted(((n, raw[n]) for n in ranked), key=lambda item: item[1])))


def marginals(
    df: pd.DataFrame, params: Sequence[str] | None = None, bins: int = 8, confidence: float = 0.95,
    target: str = "test",
) -> pd.DataFrame:
    """The metric against each hyperparameter per task × cell (the paper's Fig. 4 view): equal-width bins on
    the analysis scale (shared by the cells of a task), mean and a t confidence interval per bin."""
    df = prepare(df) if VAL not in df.columns else df
    score = TEST if target == "test" else VAL
    rows = []
    for task in sorted(df["task"].unique()):
        tdf = df[(df["task"] == task) & df["ok"]]
        names = list(params) if params is not None else hyperparameters(tdf)
        for name in [p for p in names if p in tdf.columns]:
            scale = scale_of(name, tdf[name])
            x = transform(tdf[name], scale)
            if scale == "categorical":
                key = x
                edges = None
            else:
                lo, hi = float(x.min()), float(x.max())
                edges = np.linspace(lo, hi, bins + 1) if hi > lo else np.array([lo, lo + 1e-12])
                key = pd.Series(np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2), index=x.index)
            for cell in cell_order(tdf["cell"].unique()):
                mask = tdf["cell"] == cell
                for k, y in tdf.loc[mask, score].groupby(key[mask]):
                    n, mean, sd = len(y), y.mean(), y.std(ddof=1)
                    half = sps.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n) if n > 1 else np.nan
                    row = {"task": task, "cell": cell, "param": name, "scale": scale, "n": n, "mean": mean, "sd": sd,
                           "ci_low": mean - half, "ci_high": mean + half}
                    if edges is None:
                        row.update(bin=str(k), x=np.nan, bin_low=np.nan, bin_high=np.nan)
                    else:
                        row.update(bin=int(k), x=(edges[k] + edges[k + 1]) / 2, bin_low=edges[k], bin_high=edges[k + 1])
                    rows.append(row)
    cols = ["task", "cell", "param", "scale", "bin", "x", "bin_low", "bin_high", "n", "mean", "sd", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=cols)


def group_hidden_sizes(hidden: pd.Series, groups: int = 3) -> pd.Series:
    """Up to `groups` contiguous hidden-size groups of about equal run counts that never split a value: each
    distinct size goes to the group its cumulative share of the runs falls in (codes 0, 1, ... by size)."""
    h = pd.to_numeric(hidden, errors="coerce").astype(float)
    counts = h.value_counts().sort_index()
    middle = ((counts.cumsum() - counts / 2) / counts.sum()).to_numpy()  # each size's share of the runs below it
    raw = np.minimum(np.floor(middle * groups), groups - 1)
    codes = np.unique(raw, return_inverse=True)[1]  # consecutive codes, even when a big size empties a group
    return h.map(dict(zip(counts.index, codes.tolist())))


def group_label(values: pd.Series) -> str:
    """A hidden-size group as its real range: "17–20", or "26" for one size."""
    lo, hi = int(values.min()), int(values.max())
    return str(lo) if lo == hi else f"{lo}–{hi}"


def lr_hidden_frame(tdf: pd.DataFrame, lr: str = "optim.lr", hidden: str = "model.hidden_size",
                    groups: int = 3) -> tuple[pd.DataFrame, bool]:
    """The observations of the lr × hidden size question for one task's ok runs: `log10_lr`, `hidden`, `y` (the
    test metric minus its cell's mean, so cells do not confound), `group` and `group_label`. In a paired
    study the runs of one trial share (lr, hidden size), so they are averaged into one observation per trial
    (the cells are not independent replicates). Returns the frame and whether the study is paired."""
    tdf = tdf[tdf["ok"]].copy()
    tdf["y"] = tdf[TEST] - tdf.groupby("cell")[TEST].transform("mean")
    tdf["log10_lr"] = np.log10(pd.to_numeric(tdf[lr], errors="coerce").astype(float))
    tdf["hidden"] = pd.to_numeric(tdf[hidden], errors="coerce").astype(float)
    paired = design(tdf)[0]
    if paired:
        tdf = tdf.groupby("pair", as_index=False, sort=True).agg(log10_lr=("log10_lr", "first"),
                                                                    hidden=("hidden", "first"), y=("y", "mean"))
    tdf["group"] = group_hidden_sizes(tdf["hidden"], groups)
    labels = {g: group_label(v) for g, v in tdf.groupby("group")["hidden"]}
    tdf["group_label"] = tdf["group"].map(labels)
    return tdf.reset_index(drop=True), paired


def lr_by_hidden(
    df: pd.DataFrame, lr: str = "optim.lr", hidden: str = "model.hidden_size", hidden_groups: int = 3,
    lr_bins: int = 8, notes: list[str] | None = None,
) -> pd.DataFrame:
    """Does the hidden size shift the optimal learning rate? Per task, the observations of `lr_hidden_frame`
    are split into up to `hidden_groups` hidden-size groups (never splitting a size); per group the
    learning-rate bin with the lowest mean metric is the optimum, and so is the vertex of a quadratic in
    log10 lr. `shift_p` is the F-test of letting that quadratic differ between groups against one shared curve
    (plus a level per group): small means the hidden size moves the curve. The test needs at least two
    groups, each with MIN_LRS_PER_GROUP distinct learning rates and MIN_RUNS_PER_GROUP observations; otherwise
    `shift_p` is NaN and `note` (and `notes`) say "cannot tell from these runs, because ...". One row per
    task × group."""
    df = prepare(df) if VAL not in df.columns else df
    notes = notes if notes is not None else []
    rows = []
    for task in sorted(df["task"].unique()):
        tdf = df[(df["task"] == task) & df["ok"]]
        if tdf.empty:
            notes.append(f"lr × hidden size on {task}: no ok runs")
            continue
        missing = [c for c in (lr, hidden) if c not in tdf.columns or pd.to_numeric(tdf[c], errors="coerce").nunique() < 2]
        if missing:
            notes.append(f"lr × hidden size on {task}: {', '.join(missing)} not varied in this sweep")
            continue
        obs, paired = lr_hidden_frame(tdf, lr, hidden, hidden_groups)
        how = ("one per trial (the cell-centred metric averaged over the cells of that trial)" if paired
               else "one per run (the metric centred per cell)")
        x = obs["log10_lr"]
        edges = np.linspace(x.min(), x.max(), lr_bins + 1)
        obs["lr_bin"] = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, lr_bins - 1)
        reason = why_untestable(obs, paired)
        shift_p = np.nan if reason else _shift_test(x.to_numpy(), obs["y"].to_numpy(), obs["group"].to_numpy())
        if reason:
            notes.append(f"lr × hidden size on {task}: cannot tell from these runs whether the hidden size shifts the "
                         f"optimal learning rate, because {reason}")
        for grp, g in obs.groupby("group"):
            means = g.groupby("lr_bin")["y"].mean()
            best = int(means.idxmin())
            rows.append({
                "task": task, "hidden_group": int(grp), "hidden_min": g["hidden"].min(), "hidden_max": g["hidden"].max(),
                "hidden_sizes": g["hidden"].nunique(), "n": len(g), "distinct_lrs": g["log10_lr"].nunique(),
                "best_lr_bin": best, "best_lr_low": 10 ** edges[best], "best_lr_high": 10 ** edges[best + 1],
                "best_log10_lr": (edges[best] + edges[best + 1]) / 2,
                "vertex_log10_lr": np.nan if reason else _vertex(g["log10_lr"].to_numpy(), g["y"].to_numpy()),
                "shift_p": shift_p, "observations": how, "note": reason,
            })
    cols = ["task", "hidden_group", "hidden_min", "hidden_max", "hidden_sizes", "n", "distinct_lrs", "best_lr_bin",
            "best_lr_low", "best_lr_high", "best_log10_lr", "vertex_log10_lr", "shift_p", "observations", "note"]
    return pd.DataFrame(rows, columns=cols)


def why_untestable(obs: pd.DataFrame, paired: bool) -> str | None:
    """Why the observations cannot answer the lr × hidden size question, or None when they can."""
    per_group = obs.groupby("group").agg(n=("y", "size"), lrs=("log10_lr", "nunique"))
    if len(per_group) < 2:
        return "all runs fall into one hidden-size group"
    if per_group["lrs"].min() < MIN_LRS_PER_GROUP:
        few = ", ".join(f"{obs.loc[obs['group'] == g, 'group_label'].iloc[0]}: {int(k)}" for g, k in per_group["lrs"].items())
        why = (" (in a paired study trial k fixes the learning rate and the hidden size of every cell, so there "
               "are only as many learning rates as trials)") if paired else ""
        return (f"each hidden-size group needs at least {MIN_LRS_PER_GROUP} distinct learning rates to fit and test a "
                f"curve in log lr, and these have {few}{why}")
    if per_group["n"].min() < MIN_RUNS_PER_GROUP:
        return (f"a hidden-size group has only {int(per_group['n'].min())} observations "
                f"(needs {MIN_RUNS_PER_GROUP})")
    return None


def _vertex(x: np.ndarray, y: np.ndarray) -> float:
    """The minimum of a least-squares parabola y ~ x (NaN when it opens downwards or is underdetermined). x is
    standardised before the fit, so the fit is well conditioned; fewer than MIN_LRS_PER_GROUP distinct x is no fit."""
    if len(np.unique(x)) < MIN_LRS_PER_GROUP:
        return float("nan")
    centre, scale = x.mean(), x.std()
    c2, c1, _ = np.polyfit((x - centre) / scale, y, 2)
    if c2 <= 0:
        return float("nan")
    return float(np.clip(centre - scale * c1 / (2 * c2), x.min(), x.max()))


def _shift_test(x: np.ndarray, y: np.ndarray, group: np.ndarray) -> float:
    """Nested OLS F-test: shared quadratic in x with a level per group, against a quadratic per group."""
    levels = np.unique(group)
    dummies = np.stack([(group == g).astype(float) for g in levels], axis=1)
    reduced = np.column_stack([dummies, x, x**2])
    full = np.column_stack([dummies, dummies * x[:, None], dummies * (x**2)[:, None]])
    n, p0, p1 = len(y), reduced.shape[1], full.shape[1]
    if len(levels) < 2 or n <= p1:
        return float("nan")
    rss = [float(np.sum((y - m @ np.linalg.lstsq(m, y, rcond=None)[0]) ** 2)) for m in (reduced, full)]
    if rss[1] <= 0:
        return float("nan")
    f = ((rss[0] - rss[1]) / (p1 - p0)) / (rss[1] / (n - p1))
    return float(sps.f.sf(f, p1 - p0, n - p1))
