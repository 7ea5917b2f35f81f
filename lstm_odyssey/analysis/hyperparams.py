"""Which hyperparameters matter (fANOVA) and how the metric depends on them (marginals).

The search space is read off the runs: every numeric or categorical `model.*`, `optim.*` or
`trainer.*` column that varies among a task's ok runs. Values are analysed on the scale they were
sampled on (SPEC §2): log10 for the learning rate and the hidden size, log10(1 − momentum) for momentum.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from .stats import TEST, VAL, cell_order, prepare

PARAM_PREFIXES = ("model.", "optim.", "trainer.")
NOT_SEARCHED = {"trainer.seed", "trainer.epochs", "trainer.patience", "trainer.eval_batch_size", "trainer.max_minutes"}
LOG_PARAMS = {"optim.lr", "model.hidden_size", "optim.weight_decay", "model.embedding_dim", "trainer.batch_size"}
POOLED = "(pooled)"


def hyperparameters(df: pd.DataFrame) -> list[str]:
    """The searched hyperparameters: hparam columns that take more than one value among ok runs."""
    df = prepare(df) if VAL not in df.columns else df
    ok = df[df["ok"]]
    found = []
    for col in df.columns:
        if not col.startswith(PARAM_PREFIXES) or col in NOT_SEARCHED:
            continue
        values = ok[col].dropna()
        if values.astype(str).nunique() > 1:
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
    """fANOVA (optuna's `FanovaImportanceEvaluator`, chosen explicitly) per task × cell and per task pooled
    over cells with the cell as a categorical parameter. One row per task, cell, param: `importance` (share
    of the main effects, sums to 1) and `variance_fraction` (share of the forest's variance explained by
    that parameter alone; 1 − their sum is what interactions and noise explain). `max_depth` bounds the trees:
    optuna's default (64) makes the pure-Python marginals take minutes on a paper-sized pool (2600 runs:
    5 min at depth 64, 5 s at depth 8, the same importances on planted data)."""
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
                notes.append(f"importance on {task} / {cell}: {len(g)} ok runs, fANOVA needs at least {min_runs}")
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
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.importance import FanovaImportanceEvaluator

    columns, dists = {}, {}
    for name in names:
        scale = "categorical" if name == "cell" else scale_of(name, g[name])
        values = transform(g[name], scale)
        if scale == "categorical":
            dists[name] = CategoricalDistribution(sorted(values.unique()))
        else:
            low, high = float(values.min()), float(values.max())
            dists[name] = FloatDistribution(low, high if high > low else low + 1e-12)
        columns[name] = values.to_numpy()
    trials = []
    for i in range(len(g)):
        params = {n: (str(columns[n][i]) if isinstance(dists[n], CategoricalDistribution) else float(columns[n][i]))
                  for n in names}
        if any(isinstance(v, float) and not math.isfinite(v) for v in params.values()):
            continue
        trials.append(optuna.trial.create_trial(params=params, distributions=dists, value=float(g[score].iloc[i])))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning and friends
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="minimize")
        study.add_trials(trials)
        return optuna.importance.get_param_importances(
            study, evaluator=FanovaImportanceEvaluator(n_trees=n_trees, max_depth=max_depth, seed=seed), params=names, normalize=False
        )


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


def lr_by_hidden(
    df: pd.DataFrame, lr: str = "optim.lr", hidden: str = "model.hidden_size", hidden_groups: int = 3,
    lr_bins: int = 8, notes: list[str] | None = None,
) -> pd.DataFrame:
    """Does the hidden size shift the optimal learning rate? Per task, runs are split into `hidden_groups`
    hidden-size terciles (pooled over cells after subtracting each cell's mean, so cells do not confound);
    per group the learning-rate bin with the lowest mean metric is the optimum, and so is the vertex of a
    quadratic in log10 lr. `shift_p` is the F-test of letting that quadratic differ between hidden-size
    groups against one shared curve (plus a level per group): small means the hidden size moves the curve.
    One row per task × group."""
    df = prepare(df) if VAL not in df.columns else df
    notes = notes if notes is not None else []
    rows = []
    for task in sorted(df["task"].unique()):
        tdf = df[(df["task"] == task) & df["ok"]].copy()
        if tdf.empty:
            notes.append(f"lr × hidden size on {task}: no ok runs")
            continue
        missing = [c for c in (lr, hidden) if c not in tdf.columns or pd.to_numeric(tdf[c], errors="coerce").nunique() < 2]
        if missing:
            notes.append(f"lr × hidden size on {task}: {', '.join(missing)} not varied in this sweep")
            continue
        tdf["_y"] = tdf[TEST] - tdf.groupby("cell")[TEST].transform("mean")
        x = np.log10(pd.to_numeric(tdf[lr]).astype(float))
        edges = np.linspace(x.min(), x.max(), lr_bins + 1)
        tdf["_lr_bin"] = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, lr_bins - 1)
        h = pd.to_numeric(tdf[hidden]).astype(float)
        n_groups = min(hidden_groups, h.nunique())
        tdf["_h"] = pd.qcut(h.rank(method="first"), n_groups, labels=False)
        tdf["_x"] = x
        shift_p = _shift_test(tdf["_x"].to_numpy(), tdf["_y"].to_numpy(), tdf["_h"].to_numpy())
        for grp, g in tdf.groupby("_h"):
            means = g.groupby("_lr_bin")["_y"].mean()
            best = int(means.idxmin())
            rows.append({
                "task": task, "hidden_group": int(grp), "hidden_min": h[g.index].min(), "hidden_max": h[g.index].max(),
                "n": len(g), "best_lr_bin": best, "best_lr_low": 10 ** edges[best], "best_lr_high": 10 ** edges[best + 1],
                "best_log10_lr": (edges[best] + edges[best + 1]) / 2,
                "vertex_log10_lr": _vertex(g["_x"].to_numpy(), g["_y"].to_numpy()), "shift_p": shift_p,
            })
    cols = ["task", "hidden_group", "hidden_min", "hidden_max", "n", "best_lr_bin", "best_lr_low", "best_lr_high",
            "best_log10_lr", "vertex_log10_lr", "shift_p"]
    return pd.DataFrame(rows, columns=cols)


def _vertex(x: np.ndarray, y: np.ndarray) -> float:
    """The minimum of a least-squares parabola y ~ x (NaN when it opens downwards or is underdetermined)."""
    if len(x) < 4 or np.ptp(x) == 0:
        return float("nan")
    c2, c1, _ = np.polyfit(x, y, 2)
    if c2 <= 0:
        return float("nan")
    return float(np.clip(-c1 / (2 * c2), x.min(), x.max()))


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
