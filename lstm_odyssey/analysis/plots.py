"""Figures of a sweep (seaborn on matplotlib's Agg backend: files, no display). Each function draws one
task and returns the Figure; `save` writes it as PNG. Axis labels carry the metric and its direction."""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib
import matplotlib.ticker

if "ipykernel" not in sys.modules:
    matplotlib.use("Agg")  # headless: figures are files (a notebook keeps its inline backend)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .hyperparams import POOLED, axis_label  # noqa: E402
from .stats import TEST, cell_order, direction, top_runs  # noqa: E402

VERDICT_COLOURS = {"reference": "#4c72b0", "worse": "#c44e52", "better": "#55a868", "n.s.": "#b0b0b0", "untested": "#dddddd"}


def _metric_label(tdf: pd.DataFrame) -> str:
    metric = tdf["metric"].dropna().iloc[0] if tdf["metric"].notna().any() else "metric"
    return f"test {metric} ({direction(metric)})"


def quiet(fn):
    """Drawing should not spam a report run with library deprecation warnings (seaborn on new matplotlib)."""
    import functools
    import warnings

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            warnings.filterwarnings("ignore", category=matplotlib.MatplotlibDeprecationWarning)
            return fn(*args, **kwargs)

    return wrapper


def save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


@quiet
def fig3(df: pd.DataFrame, task: str, sig: pd.DataFrame | None = None, reference: str = "vanilla",
         top: float = 0.1) -> plt.Figure:
    """The paper's Fig. 3: test metric of all ok runs (left) and of the top runs by validation (right) per
    cell, boxes coloured by the verdict against the reference on that subset."""
    tdf = df[(df["task"] == task) & df["ok"]]
    cells = cell_order(tdf["cell"].unique(), reference)
    fig, axes = plt.subplots(1, 2, figsize=(max(6.0, 1.0 + 0.9 * len(cells)) * 1.6, 4.2), sharey=False)
    for ax, subset, title in ((axes[0], "all", "all ok runs"), (axes[1], "top", f"best {top:.0%} by validation")):
        data = tdf if subset == "all" else pd.concat([top_runs(tdf[tdf["cell"] == c], top) for c in cells])
        palette = {}
        for cell in cells:
            verdict = "reference" if cell == reference else "untested"
            if sig is not None and len(sig):
                hit = sig[(sig["task"] == task) & (sig["subset"] == subset) & (sig["cell"] == cell)]
                if len(hit):
                    verdict = hit["verdict"].iloc[0]
            palette[cell] = VERDICT_COLOURS.get(verdict, VERDICT_COLOURS["untested"])
        sns.boxplot(data=data, x="cell", y=TEST, hue="cell", order=cells, hue_order=cells, palette=palette, ax=ax,
                    showfliers=False, legend=False)
        sns.stripplot(data=data, x="cell", y=TEST, order=cells, color="black", size=3, alpha=0.6, ax=ax)
        ax.set_title(f"{task}: {title}")
        ax.set_xlabel("cell")
        ax.set_ylabel(_metric_label(tdf))
        ax.tick_params(axis="x", rotation=45)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in VERDICT_COLOURS.values()]
    words = {"reference": f"{reference} (reference)", "worse": f"worse than {reference}", "better": f"better than {reference}",
             "n.s.": "no significant difference", "untested": "too few runs to test"}
    labels = [words[k] for k in VERDICT_COLOURS]
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), bbox_to_anchor=(0.5, 1.0), frameon=False,
               title=f"Welch's t-test against {reference}, Holm-corrected")
    fig.tight_layout(rect=(0, 0, 1, 0.86))
    return fig


@quiet
def marginal_plot(marg: pd.DataFrame, task: str, metric: str = "metric") -> plt.Figure:
    """The paper's Fig. 4 view: binned mean test metric (95 % interval) against each hyperparameter per cell."""
    m = marg[marg["task"] == task]
    params = list(dict.fromkeys(m["param"]))
    fig, axes = plt.subplots(1, max(1, len(params)), figsize=(4.2 * max(1, len(params)), 3.8), squeeze=False)
    cells = cell_order(m["cell"].unique())
    colours = dict(zip(cells, sns.color_palette("tab10", len(cells))))
    means = m["mean"].dropna()
    lo, hi = (float(means.min()), float(means.max())) if len(means) else (0.0, 1.0)
    pad = 0.25 * (hi - lo) if hi > lo else 0.1 * abs(hi) + 1e-9
    for ax, param in zip(axes[0], params):
        p = m[m["param"] == param]
        scale = p["scale"].iloc[0]
        for cell in cells:
            c = p[p["cell"] == cell]
            if scale == "categorical":
                ax.errorbar(c["bin"], c["mean"], yerr=[c["mean"] - c["ci_low"], c["ci_high"] - c["mean"]], fmt="o",
                            label=cell, color=colours[cell], capsize=3)
                continue
            x = 10 ** c["x"] if scale == "log" else c["x"]
            ax.plot(x, c["mean"], marker="o", label=cell, color=colours[cell])
            ax.fill_between(x, c["ci_low"], c["ci_high"], color=colours[cell], alpha=0.12)
        if scale == "log":
            ax.set_xscale("log")
        ax.set_xlabel(f"{param} (log scale)" if scale == "log" else axis_label(param, scale))
        ax.set_ylim(lo - pad, hi + pad)  # a 95 % interval of a bin with 2 runs would hide every mean
        ax.set_title(param)
    for ax in axes[0][len(params):]:
        ax.axis("off")
    axes[0][0].set_ylabel(f"mean test {metric} per bin, 95 % CI\n({direction(metric)})")
    axes[0][-1].legend(title="cell", fontsize=8, loc="best")
    fig.suptitle(f"{task}: test metric against each hyperparameter", y=1.02)
    fig.tight_layout()
    return fig


@quiet
def importance_plot(imp: pd.DataFrame, task: str) -> plt.Figure:
    """fANOVA importance (share of main effects) per hyperparameter, one bar per cell and the pooled fit."""
    t = imp[imp["task"] == task]
    cells = [c for c in cell_order(t["cell"].unique()) if c != POOLED] + ([POOLED] if POOLED in set(t["cell"]) else [])
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * t["param"].nunique()), 4))
    sns.barplot(data=t, x="param", y="importance", hue="cell", hue_order=cells, ax=ax)
    ax.set_ylim(0, 1)
    ax.set_ylabel("fANOVA importance (share of main effects)")
    ax.set_xlabel("hyperparameter")
    ax.set_title(f"{task}: hyperparameter importance (optuna FanovaImportanceEvaluator)")
    ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    return fig


@quiet
def params_plot(df: pd.DataFrame, task: str) -> plt.Figure:
    """Parameter count against the test metric per cell: does a variant win by being bigger?"""
    tdf = df[(df["task"] == task) & df["ok"]].copy()
    tdf["num_parameters"] = pd.to_numeric(tdf["num_parameters"], errors="coerce")
    fig, ax = plt.subplots(figsize=(6.5, 4))
    sns.scatterplot(data=tdf, x="num_parameters", y=TEST, hue="cell", hue_order=cell_order(tdf["cell"].unique()),
                    ax=ax, alpha=0.8)
    if tdf["num_parameters"].min() > 0 and tdf["num_parameters"].max() / tdf["num_parameters"].min() > 5:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels collide
    ax.set_xlabel("trainable parameters (count)")
    ax.set_ylabel(_metric_label(tdf))
    ax.set_title(f"{task}: parameter count against test metric")
    fig.tight_layout()
    return fig


@quiet
def time_plot(df: pd.DataFrame, task: str) -> plt.Figure:
    """Wall-clock training time per run and cell (all finished runs, diverged included)."""
    tdf = df[(df["task"] == task) & df["status"].isin(["ok", "diverged"])].copy()
    tdf["wall_seconds"] = pd.to_numeric(tdf["wall_seconds"], errors="coerce")
    cells = cell_order(tdf["cell"].unique())
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(cells) + 1), 4))
    sns.boxplot(data=tdf, x="cell", y="wall_seconds", order=cells, color="#8da0cb", showfliers=False, ax=ax)
    sns.stripplot(data=tdf, x="cell", y="wall_seconds", order=cells, color="black", size=3, alpha=0.6, ax=ax)
    ax.set_ylabel("training time per run (s)")
    ax.set_title(f"{task}: training time per cell")
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    return fig


@quiet
def lr_hidden_plot(df: pd.DataFrame, task: str, lr: str = "optim.lr", hidden: str = "model.hidden_size",
                   groups: int = 3) -> plt.Figure:
    """Test metric against the learning rate, coloured by hidden-size tercile: if the valleys line up,
    the hidden size does not shift the optimal learning rate."""
    tdf = df[(df["task"] == task) & df["ok"]].copy()
    h = pd.to_numeric(tdf[hidden]).astype(float)
    n = min(groups, h.nunique())
    codes = pd.qcut(h.rank(method="first"), n, labels=False)
    names = {}
    for code in range(n):
        hs = h[codes == code]
        names[code] = f"{int(hs.min())}–{int(hs.max())}"
    tdf["hidden size"] = codes.map(names)
    tdf["lr"] = pd.to_numeric(tdf[lr]).astype(float)
    tdf["centred"] = tdf[TEST] - tdf.groupby("cell")[TEST].transform("mean")
    fig, ax = plt.subplots(figsize=(6.5, 4))
    sns.scatterplot(data=tdf, x="lr", y="centred", hue="hidden size", hue_order=list(names.values()), ax=ax, alpha=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel(f"{_metric_label(tdf)}\nminus the cell's mean")
    ax.set_title(f"{task}: learning rate × hidden size")
    fig.tight_layout()
    return fig


def has_variation(df: pd.DataFrame, column: str) -> bool:
    return column in df.columns and pd.to_numeric(df[column], errors="coerce").nunique() > 1 and bool(
        np.isfinite(pd.to_numeric(df[column], errors="coerce")).any()
    )
