"""Figures of a sweep (matplotlib's Agg backend: files, no display). Each function draws one task and returns
the Figure; `save` writes it as PNG. Every figure shares the look of analysis/style.py (one style per cell,
`cell_styles`: the paper's order, distinguishable colours and markers), uses constrained layout with legends
outside the axes, and labels its axes with the metric's unit and direction."""

from __future__ import annotations

import functools
import math
import sys
import warnings
from pathlib import Path

import matplotlib
import matplotlib.ticker

if "ipykernel" not in sys.modules:
    matplotlib.use("Agg")  # headless: figures are files (a notebook keeps its inline backend)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from ..schema import AnalysisConfig  # noqa: E402
from .compare import ALL, TOP_OWN, TOP_PAIRS, compared_runs, worst  # noqa: E402
from .frame import TEST, cell_order, design, pairs  # noqa: E402
from .hyperparams import POOLED, lr_hidden_frame, why_untestable  # noqa: E402
from .plan import primary_test  # noqa: E402
from .stats import METRICS, lower_is_better, metric_label, metric_range  # noqa: E402
from .style import (  # noqa: E402
    MARKERS,
    PARAM_NAMES,
    boxes,
    cell_legend,
    cell_styles,
    metric_of,
    param_label,
    plain_log_x,
    set_value_axis,
    value_scale,
)

MIN_BAND_RUNS = 3  # a 95 % interval over 2 runs spans the whole axis and hides every line
DPI = 110


def quiet(fn):
    """Drawing should not spam a report run with library deprecation warnings."""

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
    fig.savefig(path, dpi=DPI, metadata={"Software": None})  # no version stamp: the same data, the same file
    plt.close(fig)
    return path


def _verdict_of(sig: pd.DataFrame | None, task: str, subset: str, cell: str) -> pd.Series | None:
    if sig is None or not len(sig):
        return None
    hit = sig[(sig["task"] == task) & (sig["subset"] == subset) & (sig["cell"] == cell)]
    return hit.iloc[0] if len(hit) else None


def _test_words(sig: pd.DataFrame | None, task: str, reference: str) -> str:
    rows = sig[sig["task"] == task] if sig is not None and len(sig) else None
    paired = rows is not None and len(rows) and rows["design"].iloc[0] == "paired"
    test = rows["test"].iloc[0] if rows is not None and len(rows) else "rank"
    words = primary_test(AnalysisConfig(primary=test), bool(paired))
    return f"verdict against {reference}: {words}, Holm-corrected"


@quiet
def paired_plot(df: pd.DataFrame, task: str, sig: pd.DataFrame | None = None, reference: str = "vanilla",
                subset: str = ALL) -> plt.Figure:
    """The headline figure of a paired study: per cell, its test metric minus the reference's at the same trial
    (one dot per trial; a failed run at the axis' end) and the primary estimate with its 95 % interval, every cell
    on one shared axis: linear within ±δ (shaded), logarithmic beyond, so long tails and small effects both show."""
    tdf = df[df["task"] == task]
    metric = metric_of(tdf)
    cells = [c for c in cell_order(tdf["cell"].unique(), reference) if c != reference and len(pairs(tdf, c, reference))]
    styles = cell_styles(cell_order(tdf["cell"].unique(), reference))
    fig, axes = plt.subplots(max(1, len(cells)), 1, figsize=(8.0, 1.0 + 0.95 * max(1, len(cells))), squeeze=False,
                             layout="constrained", sharex=True)
    better = "< 0" if lower_is_better(metric) else "> 0"
    name, unit, _ = METRICS.get(metric, (metric, "", None))
    rows = {cell: _verdict_of(sig, task, subset, cell) for cell in cells}
    delta = next((float(r["margin"]) for r in rows.values() if r is not None and np.isfinite(r["margin"])), None)
    diffs = {}
    for cell in cells:
        p = pairs(tdf, cell, reference, failed_as=worst(metric))
        diffs[cell] = (p["test"] - p["test_ref"]).fillna(0.0).to_numpy()
    finite = np.concatenate([d[np.isfinite(d)] for d in diffs.values()] + [np.zeros(1)])
    edge = max(abs(finite).max(), delta or 0.0) * 1.5 or 1.0
    for ax, cell in zip(axes[:, 0], cells):
        d, row = np.clip(diffs[cell], -edge, edge), rows[cell]
        jitter = np.linspace(-0.18, 0.18, len(d)) if len(d) > 1 else np.zeros(1)
        if delta:
            ax.axvspan(-delta, delta, color="0.92", zorder=0)
        ax.axvline(0, color="0.55", linestyle="--", linewidth=1, zorder=1)
        ax.scatter(d, jitter, color=styles[cell].colour, marker=styles[cell].marker, s=30, alpha=0.75, zorder=2,
                   **styles[cell].outline("white", 0.4))
        if row is not None and np.isfinite(row["ci_low"]) and np.isfinite(row["ci_high"]):
            ax.plot(np.clip([row["ci_low"], row["ci_high"]], -edge, edge), [-0.42, -0.42], color=styles[cell].colour,
                    linewidth=3, solid_capstyle="butt", zorder=3)
        if row is not None and np.isfinite(row["diff"]):
            ax.plot([row["diff"]], [-0.42], marker="|", color="black", markersize=14, markeredgewidth=2, zorder=4)
        ax.set_ylim(-0.65, 0.35)
        ax.set_yticks([])
        ax.set_ylabel(cell, rotation=0, ha="right", va="center", fontsize=10, color=styles[cell].colour)
        ax.set_title(_pair_summary(row, len(d)), loc="right", fontsize=8)
    if not cells:
        axes[0, 0].axis("off")
        axes[0, 0].set_title(f"{task}: no pairs of any cell with {reference}")
    else:
        linthresh = delta or max(1e-9, float(np.median(abs(finite))) or 1e-3)
        axes[-1, 0].set_xscale("symlog", linthresh=linthresh)
        axes[-1, 0].set_xlim(-edge, edge)
        decades = [10.0 ** k for k in range(math.ceil(math.log10(linthresh)), math.floor(math.log10(edge)) + 1)
                   if 10.0 ** k > 2.5 * linthresh]  # a decade just past ±δ would print over it
        ticks = sorted({0.0, linthresh, -linthresh, *decades, *(-d for d in decades)})
        axes[-1, 0].set_xticks(ticks, [f"{t:g}" for t in ticks])
        axes[-1, 0].tick_params(axis="x", labelsize=8)
    axes[-1, 0].set_xlabel(f"test {name} of the cell − {reference}'s at the same trial ({unit + '; ' if unit else ''}"
                           f"{better}: the cell is better)", fontsize=10)
    fig.suptitle(f"{task}: paired differences against {reference}; shaded: ±δ{f' = {delta:g}' if delta else ''} "
                 "(axis linear inside, logarithmic outside)", fontsize=10)
    handles = [Line2D([], [], color="0.4", marker="o", linestyle="none"),
               Line2D([], [], color="0.4", linewidth=3), Line2D([], [], color="black", marker="|", linestyle="none",
                                                              markersize=12, markeredgewidth=2)]
    fig.legend(handles, ["one trial", "95 % CI", "estimate (the primary test's)"], loc="outside lower center", ncol=3,
               frameon=False, fontsize=8)
    return fig


def _pair_summary(row: pd.Series | None, n: int) -> str:
    if row is None:
        return f"{n} pairs"

    def p_text(p: float) -> str:
        return "–" if not np.isfinite(p) else ("< 0.001" if p < 0.001 else f"{p:.3f}")

    ci = (f" (95 % CI {row['ci_low']:.3g} to {row['ci_high']:.3g})" if np.isfinite(row["ci_low"]) else "")
    return (f"{row['diff']:.3g}{ci}; W/T/L {int(row['wins'])}/{int(row['ties'])}/{int(row['losses'])} of "
            f"{int(row['n'])}; Holm p {p_text(row['p_holm'])}; {row['verdict']}, {row['equivalence']}")


@quiet
def fig3(df: pd.DataFrame, task: str, sig: pd.DataFrame | None = None, plan: AnalysisConfig | None = None
         ) -> plt.Figure:
    """The paper's Fig. 3: test metric of all ok runs (left) and of the top runs (right) per cell, each box in
    the cell's colour, the verdict against the reference under the cell's name. In a paired study the top
    runs are the best pairs by the mean validation score of both runs."""
    plan = plan or AnalysisConfig()
    reference, top = plan.reference, plan.top_fraction
    tdf = df[(df["task"] == task) & df["ok"]]
    metric = metric_of(tdf)
    cells = cell_order(tdf["cell"].unique(), reference)
    styles = cell_styles(cells)
    is_paired = design(df[df["task"] == task])[0]
    wide = len(cells) <= 7
    fig, axes = plt.subplots(1 if wide else 2, 2 if wide else 1, squeeze=False, layout="constrained",
                             figsize=(max(6.0, 1.2 + 0.85 * len(cells)) * (2 if wide else 1), 4.4 if wide else 8.4))
    top_title = (f"best {top:.0%} of the pairs by the mean validation score of both runs" if is_paired
                 else f"best {top:.0%} of each cell by validation")
    top_subset = TOP_PAIRS if is_paired else TOP_OWN
    for ax, subset, title in zip(axes.flat, (ALL, top_subset), ("all ok runs", top_title)):
        data = [compared_runs(df[df["task"] == task], c, subset, plan)[TEST].to_numpy() for c in cells]
        positions = np.arange(len(cells))
        boxes(ax, data, cells, styles)
        labels = []
        for cell in cells:
            row = None if cell == reference else _verdict_of(sig, task, subset, cell)
            labels.append(f"{cell}\n" + ("reference" if cell == reference else (row["verdict"] if row is not None else "")))
        ax.set_xticks(positions, labels, fontsize=8)
        ax.set_xlim(-0.6, len(cells) - 0.4)
        set_value_axis(ax, pd.Series(np.concatenate(data)), metric, metric_label(metric))
        ax.set_title(f"{task}: {title}", fontsize=10)
    fig.suptitle(_test_words(sig, task, reference), fontsize=10)
    return fig


@quiet
def marginal_plot(marg: pd.DataFrame, task: str, metric: str = "metric") -> plt.Figure:
    """The paper's Fig. 4 view: binned mean test metric (95 % interval, clipped to the metric's range) against
    each hyperparameter per cell."""
    m = marg[marg["task"] == task]
    params = list(dict.fromkeys(m["param"]))
    fig, axes = plt.subplots(1, max(1, len(params)), figsize=(4.0 * max(1, len(params)) + 1.6, 3.9), squeeze=False,
                             layout="constrained")
    cells = cell_order(m["cell"].unique())
    styles = cell_styles(cells)
    low_bound, high_bound = metric_range(metric)
    means = m["mean"].dropna()
    scale_y = value_scale(means, metric)
    lo, hi = (float(means.min()), float(means.max())) if len(means) else (0.0, 1.0)
    for ax, param in zip(axes[0], params):
        p = m[m["param"] == param]
        scale = p["scale"].iloc[0]
        for cell in cells:
            c = p[p["cell"] == cell]
            band_low = c["ci_low"].clip(lower=low_bound, upper=high_bound)
            band_high = c["ci_high"].clip(lower=low_bound, upper=high_bound)
            style = styles[cell]
            if scale == "categorical":
                ax.errorbar(c["bin"], c["mean"], yerr=[c["mean"] - band_low, band_high - c["mean"]], fmt=style.marker,
                            color=style.colour, capsize=3)
                continue
            x = 10 ** c["x"] if scale == "log" else c["x"]
            ax.plot(x, c["mean"], marker=style.marker, color=style.colour, markersize=5)
            ax.fill_between(x, band_low, band_high, where=(c["n"] >= MIN_BAND_RUNS).to_numpy(), interpolate=False,
                            color=style.colour, alpha=0.1, linewidth=0)
        if scale == "log":
            ax.set_xscale("log")
            plain_log_x(ax)
        ax.set_xlabel(param_label(param, scale))
        ax.set_yscale(scale_y)
        if scale_y == "log":
            ax.set_ylim(lo / 2, hi * 2)
        else:  # a 95 % interval of a bin with 2 runs would hide every mean
            pad = 0.25 * (hi - lo) if hi > lo else 0.1 * abs(hi) + 1e-9
            ax.set_ylim(max(lo - pad, low_bound), min(hi + pad, high_bound))
        ax.set_title(PARAM_NAMES.get(param, param), fontsize=10)
    for ax in axes[0][len(params):]:
        ax.axis("off")
    axes[0][0].set_ylabel(f"mean per bin (band: 95 % CI, bins of {MIN_BAND_RUNS}+ runs)\n{metric_label(metric)}"
                          + ("\n(log scale)" if scale_y == "log" else ""))
    cell_legend(fig, cells, styles, line=True)
    fig.suptitle(f"{task}: test metric against each hyperparameter (equal-width bins on the sampling scale)",
                 fontsize=10)
    return fig



@quiet
def importance_plot(imp: pd.DataFrame, task: str) -> plt.Figure:
    """fANOVA importance (share of main effects) per hyperparameter, one bar per cell and the pooled fit."""
    t = imp[imp["task"] == task]
    cells = [c for c in cell_order(t["cell"].unique()) if c != POOLED] + ([POOLED] if POOLED in set(t["cell"]) else [])
    styles = cell_styles(cells)
    params = list(dict.fromkeys(t["param"]))
    fig, ax = plt.subplots(figsize=(max(5.5, 1.3 * len(params) + 2.5), 4.0), layout="constrained")
    width = 0.8 / max(1, len(cells))
    for j, cell in enumerate(cells):
        values = t[t["cell"] == cell].set_index("param")["importance"].reindex(params)
        ax.bar(np.arange(len(params)) - 0.4 + (j + 0.5) * width, values.to_numpy(dtype=float), width=width,
               color=styles[cell].colour, label=cell)
    ax.set_xticks(np.arange(len(params)), params, rotation=20, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("fANOVA importance\n(share of main effects, 0–1)")
    ax.set_xlabel("hyperparameter")
    ax.set_title(f"{task}: hyperparameter importance (optuna fANOVA)", fontsize=10)
    handles = [plt.Rectangle((0, 0), 1, 1, color=styles[c].colour) for c in cells]
    fig.legend(handles, cells, loc="outside right upper", title="cell", frameon=False)
    return fig


@quiet
def params_plot(df: pd.DataFrame, task: str) -> plt.Figure:
    """Parameter count against the test metric per cell: does a variant win by being bigger?"""
    tdf = df[(df["task"] == task) & df["ok"]].copy()
    tdf["num_parameters"] = pd.to_numeric(tdf["num_parameters"], errors="coerce")
    metric = metric_of(tdf)
    cells = cell_order(tdf["cell"].unique())
    styles = cell_styles(cells)
    fig, ax = plt.subplots(figsize=(7.5, 4.2), layout="constrained")
    for cell in cells:
        c = tdf[tdf["cell"] == cell]
        ax.scatter(c["num_parameters"], c[TEST], color=styles[cell].colour, marker=styles[cell].marker, s=28, alpha=0.8)
    counts = tdf["num_parameters"].dropna()
    log_x = len(counts) and counts.min() > 0 and counts.max() / counts.min() > 5
    if log_x:
        ax.set_xscale("log")
        plain_log_x(ax)
    ax.set_xlabel("trainable parameters (count" + (", log scale)" if log_x else ")"))
    set_value_axis(ax, tdf[TEST], metric, metric_label(metric))
    ax.set_title(f"{task}: parameter count against test metric", fontsize=10)
    cell_legend(fig, cells, styles)
    return fig


@quiet
def time_plot(df: pd.DataFrame, task: str) -> plt.Figure:
    """Wall-clock training time per run and cell (all finished runs, diverged included)."""
    tdf = df[(df["task"] == task) & df["status"].isin(["ok", "diverged"])].copy()
    tdf["wall_seconds"] = pd.to_numeric(tdf["wall_seconds"], errors="coerce")
    cells = cell_order(tdf["cell"].unique())
    styles = cell_styles(cells)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.8 * len(cells) + 1.5), 4.0), layout="constrained")
    data = [tdf.loc[tdf["cell"] == c, "wall_seconds"].dropna().to_numpy() for c in cells]
    boxes(ax, data, cells, styles)
    ax.set_xticks(np.arange(len(cells)), cells, rotation=45 if len(cells) > 7 else 0)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("cell")
    ax.set_ylabel("training time per run (s)")
    ax.set_title(f"{task}: training time per cell", fontsize=10)
    return fig


@quiet
def lr_hidden_plot(df: pd.DataFrame, task: str, lr: str = "optim.lr", hidden: str = "model.hidden_size",
                   groups: int = 3) -> plt.Figure:
    """Test metric (centred per cell) against the learning rate, one colour per hidden-size group (the groups of
    `lr_by_hidden`, labelled with their real ranges): if the valleys line up, the hidden size does not shift
    the optimal learning rate. A paired study shows one point per trial."""
    tdf = df[(df["task"] == task) & df["ok"]]
    metric = metric_of(tdf)
    obs, is_paired = lr_hidden_frame(tdf, lr, hidden, groups)
    labels = obs.sort_values("group").drop_duplicates("group")["group_label"].tolist()
    colours = plt.get_cmap("viridis")(np.linspace(0.05, 0.85, max(1, len(labels))))
    fig, ax = plt.subplots(figsize=(7.5, 4.2), layout="constrained")
    for code, colour in enumerate(colours):
        g = obs[obs["group"] == code]
        ax.scatter(10 ** g["log10_lr"], g["y"], color=colour, marker=MARKERS[code % len(MARKERS)], s=30, alpha=0.85)
    ax.set_xscale("log")
    plain_log_x(ax)
    ax.set_xlabel(f"learning rate [{lr}], log scale")
    what = "minus the cell's mean" + (", averaged over the cells of a trial" if is_paired else "")
    ax.set_ylabel(f"{metric_label(metric)}\n{what}")
    title = f"{task}: learning rate × hidden size" + (" (one point per trial)" if is_paired else "")
    if why_untestable(obs, is_paired):
        title += "\ncannot tell whether the hidden size shifts the optimum (see the report)"
    ax.set_title(title, fontsize=10)
    handles = [Line2D([], [], color=c, marker=MARKERS[i % len(MARKERS)], linestyle="none") for i, c in enumerate(colours)]
    fig.legend(handles, labels, loc="outside right upper", title="hidden size\n(units)", frameon=False)
    return fig


def has_variation(df: pd.DataFrame, column: str) -> bool:
    return column in df.columns and pd.to_numeric(df[column], errors="coerce").nunique() > 1 and bool(
        np.isfinite(pd.to_numeric(df[column], errors="coerce")).any()
    )


__all__ = ["cell_styles", "fig3", "has_variation", "importance_plot", "lr_hidden_plot", "marginal_plot",
           "paired_plot", "params_plot", "save", "time_plot"]
