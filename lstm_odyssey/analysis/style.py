"""The look every figure of a sweep shares: one style per cell (the paper's order, distinguishable colours
and markers), value axes labelled with the metric's unit and put on a log scale where the values span
decades, plain log ticks, the cell legend outside the axes, boxes per cell, and hyperparameter labels."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import matplotlib
import matplotlib.colors
import matplotlib.ticker
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.markers import MarkerStyle

from .hyperparams import POOLED, axis_label
from .stats import metric_range

# One style per cell, in the paper's order (cells.PRESETS): a colour and a marker no other cell has.
PAPER_CELLS = ("vanilla", "nig", "nfg", "nog", "niaf", "noaf", "cifg", "np", "fgr", "gru", "gru_cho", "grupp", "rnn",
               "min_gru", "min_lstm", "slstm", "indy_lstm", "indrnn", "janet")  # the paper's, then the later cells
COLOURS = ("#000000", "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324",
           "#469990", "#808000", "#000075", "#800000", "#bfef45", "#a9a9a9", "#ffe119", "#dcbeff", "#fabed4", "#aaffc3")
MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "<", ">", "p", "h", "d", "H", "8", "+", "x", "1", "2")
EXTRA_COLOURS = ("#ffd8b1", "#fffac8")
POOLED_COLOUR = "#7f7f7f"


@dataclass(frozen=True)
class Style:
    colour: str
    marker: str

    def outline(self, colour: str, width: float) -> dict:
        """`scatter`'s edge keywords: an outline for a filled marker; none for a line marker (+ x 1 2), which is
        drawn in its own colour (matplotlib warns about an edge colour there and ignores it)."""
        if MarkerStyle(self.marker).is_filled():
            return {"edgecolors": colour, "linewidths": width}
        return {}


def cell_styles(cells: Iterable[str]) -> dict[str, Style]:
    """The style of each cell: the presets' fixed ones, then further distinct colours for other cells (by name)."""
    cells = list(dict.fromkeys(str(c) for c in cells))
    styles = {c: Style(COLOURS[PAPER_CELLS.index(c)], MARKERS[PAPER_CELLS.index(c)]) for c in cells if c in PAPER_CELLS}
    others = sorted(c for c in cells if c not in PAPER_CELLS and c != POOLED)
    tab20 = [matplotlib.colors.to_hex(c) for c in matplotlib.colormaps["tab20"].colors]
    spare = list(EXTRA_COLOURS) + [c for c in tab20 if c not in COLOURS]
    for i, cell in enumerate(others):
        styles[cell] = Style(spare[i % len(spare)], MARKERS[i % len(MARKERS)])
    if POOLED in cells:
        styles[POOLED] = Style(POOLED_COLOUR, "o")
    return styles


def metric_of(tdf: pd.DataFrame) -> str:
    """The metric of one task's runs (its name on every axis)."""
    return str(tdf["metric"].dropna().iloc[0]) if tdf["metric"].notna().any() else "metric"


def value_scale(values: pd.Series, metric: str) -> str:
    """"log" for a metric bounded below by 0 whose values span more than two decades, else "linear"."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    low = metric_range(metric)[0]
    if low == 0 and len(v) and v.min() > 0 and v.max() / v.min() > 100:
        return "log"
    return "linear"


def set_value_axis(ax: Axes, values: pd.Series, metric: str, label: str) -> None:
    """The y axis of a metric: its scale (`value_scale`) and its label, which says when it is a log scale."""
    scale = value_scale(values, metric)
    ax.set_yscale(scale)
    ax.set_ylabel(label + ("\n(log scale)" if scale == "log" else ""))


def plain_log_x(ax: Axes) -> None:
    """Ticks of a log x axis as plain numbers at 1, 2, 3, 5 × 10^k (fewer over many decades); no minor labels."""
    low, high = sorted(ax.get_xlim())
    decades = np.log10(high / low) if low > 0 else 3.0
    subs = (1.0, 2.0, 3.0, 5.0) if decades < 1.5 else (1.0, 2.0, 5.0) if decades < 3 else (1.0,)
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def cell_legend(fig: Figure, cells: list[str], styles: dict[str, Style], line: bool = False,
                title: str = "cell") -> None:
    """The legend of the cells, outside the axes on the right."""
    handles = [Line2D([], [], color=styles[c].colour, marker=styles[c].marker, linestyle="-" if line else "none",
                      markersize=7) for c in cells]
    fig.legend(handles, cells, loc="outside right upper", title=title, frameon=False)


def boxes(ax: Axes, data: list[np.ndarray], cells: list[str], styles: dict[str, Style]) -> None:
    """One box per cell at x = 0, 1, ...: a light face and the edge in the cell's colour, its runs as dark markers."""
    box = ax.boxplot([d if len(d) else [np.nan] for d in data], positions=np.arange(len(cells)), widths=0.6,
                     patch_artist=True, showfliers=False, medianprops={"color": "black", "linewidth": 1.8})
    for patch, cell in zip(box["boxes"], cells):
        colour = matplotlib.colors.to_rgb(styles[cell].colour)
        patch.set_facecolor((*colour, 0.3))
        patch.set_edgecolor(colour)
        patch.set_linewidth(1.6)
    for i, (cell, values) in enumerate(zip(cells, data)):
        jitter = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else np.zeros(len(values))
        ax.scatter(i + jitter, values, s=14, color=styles[cell].colour, zorder=3, marker=styles[cell].marker,
                   **styles[cell].outline("0.1", 0.6))


PARAM_NAMES = {
    "optim.lr": "learning rate", "model.hidden_size": "hidden size (units)", "optim.momentum": "momentum",
    "trainer.input_noise": "input noise (sd)", "trainer.batch_size": "batch size (sequences)",
    "optim.weight_decay": "weight decay", "model.num_layers": "layers", "model.dropout": "dropout (probability)",
    "model.embedding_dim": "embedding size (units)", "trainer.clip": "gradient clip (norm)",
}


def param_label(param: str, scale: str) -> str:
    """An axis label for a hyperparameter: its meaning and unit, its config key and the scale."""
    name = PARAM_NAMES.get(param)
    if scale == "log":
        return f"{name or param} [{param}], log scale" if name else f"{param} (log scale)"
    if scale == "log1m":
        return f"{axis_label(param, scale)} [{name}]" if name else axis_label(param, scale)
    return f"{name} [{param}]" if name else param

