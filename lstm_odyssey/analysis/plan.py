"""The analysis plan (docs/analysis.md): the primary test, α, the margin δ per metric and the thresholds of the
paper's claims, fixed before a study runs. The keys, types and defaults are `schema.AnalysisConfig`; a study sets
its own in its YAML (`analysis.margin.error: 0.02`), Hydra writes them to the sweep's `multirun.yaml`, and the
report reads them from there and writes the plan it used into report.md."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path

from omegaconf import OmegaConf

from ..schema import AnalysisConfig, validate

PRIMARY_TESTS = {
    "rank": ("Wilcoxon signed-rank test with the Hodges–Lehmann estimate and its interval",
             "Mann–Whitney test with the two-sample Hodges–Lehmann shift and its interval"),
    "t": ("paired t-test with the mean difference and its t interval",
          "Welch's t-test with the difference of means and its interval"),
}


def load_plan(paths: Sequence[str | Path] = (), overrides: Iterable[str] = ()) -> AnalysisConfig:
    """The plan of the study under `paths`: the `analysis` block of its `multirun.yaml` when the study set one,
    else the schema's defaults; then `overrides` ("margin.nll=0.1", "alpha=0.01"). Raises ConfigError for a
    key or value the schema refuses."""
    base = OmegaConf.structured(AnalysisConfig)
    for path in paths:
        saved = Path(path) / "multirun.yaml"
        if Path(path).is_dir() and saved.exists():
            block = OmegaConf.load(saved).get("analysis")
            if block is not None:
                validate({"analysis": OmegaConf.to_container(block)})
                base = OmegaConf.merge(base, block)
            break
    extra = OmegaConf.from_dotlist([o.removeprefix("analysis.") for o in overrides])
    validate({"analysis": OmegaConf.to_container(extra)})
    merged = OmegaConf.to_container(OmegaConf.merge(base, extra))
    return AnalysisConfig(**merged)


def margin(plan: AnalysisConfig, metric: str | None) -> float:
    """δ for `metric`: the smallest difference that matters."""
    if metric not in plan.margin:
        raise ValueError(f"the analysis plan has no margin for the metric {metric!r}: "
                         f"set analysis.margin.{metric}=<the smallest difference that matters>")
    return float(plan.margin[metric])


def primary_test(plan: AnalysisConfig, paired: bool) -> str:
    return PRIMARY_TESTS[plan.primary][0 if paired else 1]


def plan_markdown(plan: AnalysisConfig, metrics: Iterable[str] = ()) -> list[str]:
    """The plan as report.md states it, before any result."""
    values = dataclasses.asdict(plan)
    margins = ", ".join(f"{m} {plan.margin[m]:g}" for m in metrics if m in plan.margin) or "none of this study's metrics"
    return [
        "## Analysis plan", "",
        f"Fixed before the study (docs/analysis.md; `analysis.*` in the study's config). Primary test: "
        f"{PRIMARY_TESTS[plan.primary][0]} (paired studies), {PRIMARY_TESTS[plan.primary][1]} (unpaired), "
        f"{plan.confidence:.0%} intervals, α = {plan.alpha:g}. Margin δ (the smallest difference that matters): "
        f"{margins}. A run that diverged or failed ranks worst. Holm's correction runs across the comparisons that "
        "decide one claim. Only the primary analysis of all pairs decides a verdict; subsets are secondary.", "",
        "`" + " ".join(f"{k}={v}" for k, v in values.items() if k != "margin") + "`", "",
    ]
