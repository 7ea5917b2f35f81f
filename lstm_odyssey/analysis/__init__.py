"""The paper's analysis of a sweep (docs/analysis.md): which cells differ from vanilla by the analysis plan's primary
test (a rank test, paired trial by trial when the study is paired) and at its margin δ, which hyperparameters
matter, how the metric depends on them; as tables, figures, a report, a notebook and a W&B page.

    df = load("results/sweeps/2026-...")          # one row per run
    summarize(df); significance(df); importance(df); marginals(df)
    write_report(["results/sweeps/2026-..."], "report/")
"""

from .compare import holm, significance
from .frame import cell_order, design, load, pairs, prepare
from .hyperparams import group_hidden_sizes, hyperparameters, importance, lr_by_hidden, marginals, scale_of, transform
from .plan import load_plan
from .report import main, write_report
from .stats import summarize, top_runs
from .text import markdown_table, significant_cells, verdict_sentence

__all__ = [
    "cell_order", "design", "group_hidden_sizes", "holm", "hyperparameters", "importance", "load", "load_plan",
    "lr_by_hidden", "main", "markdown_table", "marginals", "pairs", "prepare", "scale_of", "significance",
    "significant_cells", "summarize", "top_runs", "transform", "verdict_sentence", "write_report",
]
