"""The paper's analysis of a sweep (docs/equations.md, "Study protocol"): which cells differ from vanilla (paired trial by trial when the
study is paired, Welch otherwise), which hyperparameters matter, how the metric depends on them; as tables,
figures, a report, a notebook and a W&B page.

    df = load("results/sweeps/2026-...")          # one row per run
    summarize(df); significance(df); importance(df); marginals(df)
    write_report(["results/sweeps/2026-..."], "report/")
"""

from .frame import cell_order, design, load, pairs, prepare
from .hyperparams import group_hidden_sizes, hyperparameters, importance, lr_by_hidden, marginals, scale_of, transform
from .report import main, write_report
from .stats import hedges_g, holm, paired, significance, summarize, top_runs, welch
from .text import markdown_table, significant_cells, verdict_sentence

__all__ = [
    "cell_order", "design", "group_hidden_sizes", "hedges_g", "holm", "hyperparameters", "importance", "load",
    "lr_by_hidden", "main", "markdown_table", "marginals", "paired", "pairs", "prepare", "scale_of", "significance",
    "significant_cells", "summarize", "top_runs", "transform", "verdict_sentence", "welch", "write_report",
]
