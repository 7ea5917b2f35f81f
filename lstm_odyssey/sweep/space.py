"""The search space of a study: declared in the study config, sampled through Optuna distributions.

    sweep.params:
      optim:
        lr: {type: loguniform, low: 1.0e-6, high: 1.0e-2}
        momentum: {type: one_minus_loguniform, low: 0.01, high: 1.0}   # the paper's 1 - logU[0.01, 1]
      model:
        hidden_size: {type: int, low: 20, high: 200, log: true}
      trainer:
        input_noise: {type: uniform, low: 0.0, high: 1.0}
      cell:
        peepholes: {type: choice, choices: [true, false]}

Nesting follows the config (so `sweep.params.optim.lr.high=0.1` works on the command line); a leaf is a
mapping with a `type`. Optuna sees `1-optim.momentum` for a one_minus_loguniform parameter, since a
distribution of 1 - x with x log-uniform is not one of its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

TYPES = ("uniform", "loguniform", "int", "choice", "one_minus_loguniform")
ONE_MINUS = "1-"


class SearchSpaceError(ValueError):
    """A parameter of the study's search space is declared wrongly."""


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter: its config key, the Optuna name and distribution."""

    key: str
    kind: str
    distribution: BaseDistribution

    @property
    def optuna_name(self) -> str:
        return ONE_MINUS + self.key if self.kind == "one_minus_loguniform" else self.key

    def value(self, optuna_value: Any) -> Any:
        """The config value for the sampled Optuna value."""
        if self.kind == "one_minus_loguniform":
            return 1.0 - float(optuna_value)
        return optuna_value

    def optuna_value(self, value: Any) -> Any:
        """The Optuna value for a config value (the inverse of `value`)."""
        if self.kind == "one_minus_loguniform":
            return 1.0 - float(value)
        return value

    def check(self, value: Any) -> str | None:
        """None when `value` (a config value) is one this parameter can take, else what is wrong with it
        (sweep.configs' values are checked this way)."""
        dist = self.distribution
        if isinstance(dist, CategoricalDistribution):
            ok = any(value == c and type(value) is type(c) for c in dist.choices)
            return None if ok else f"is not one of its choices {list(dist.choices)} in sweep.params"
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if isinstance(dist, IntDistribution) and not (isinstance(value, int) and not isinstance(value, bool)):
            return "is not an integer, as sweep.params declares it (type int)"
        if not is_number:
            return f"is not a number, as sweep.params declares it (type {self.kind})"
        x = float(self.optuna_value(value))
        what = "1 - the value" if self.kind == "one_minus_loguniform" else "it"
        low, high = dist.low, dist.high  # type: ignore[attr-defined]
        if not low <= x <= high:
            return f"is outside its range in sweep.params: {what} must lie in [{low}, {high}]"
        if isinstance(dist, IntDistribution) and (value - dist.low) % dist.step:
            return f"is off the grid of sweep.params: {dist.low} + a multiple of step {dist.step}"
        return None

    def coerce(self, value: Any) -> Any:
        """A checked config value as the trial's value: a float for a float parameter (given as 1 or 1.0 alike)."""
        if isinstance(self.distribution, FloatDistribution):
            return float(value)
        return value


def _number(spec: Mapping, name: str, key: str) -> float:
    if name not in spec:
        raise SearchSpaceError(f"sweep.params.{key} (type {spec['type']}) needs `{name}`; add e.g. {name}: 0.1")
    try:
        return float(spec[name])
    except (TypeError, ValueError):
        raise SearchSpaceError(f"sweep.params.{key}.{name} must be a number, got {spec[name]!r}") from None


def make_param(key: str, spec: Mapping) -> Param:
    """Turn one declared parameter into a Param; one-line errors name the key and the fix."""
    kind = spec.get("type")
    if kind not in TYPES:
        raise SearchSpaceError(f"sweep.params.{key}.type is {kind!r}; use one of {', '.join(TYPES)}")
    if kind == "choice":
        choices = spec.get("choices")
        if not choices:
            raise SearchSpaceError(f"sweep.params.{key} (choice) needs a non-empty `choices` list")
        return Param(key, kind, CategoricalDistribution(tuple(choices)))
    low, high = _number(spec, "low", key), _number(spec, "high", key)
    if not low < high:
        raise SearchSpaceError(f"sweep.params.{key} needs low < high, got low={low}, high={high}")
    log = kind in ("loguniform", "one_minus_loguniform") or (kind == "int" and bool(spec.get("log", False)))
    if log and low <= 0:
        raise SearchSpaceError(f"sweep.params.{key} is log-scaled, so low must be > 0 (got {low})")
    if kind == "int":
        if low != int(low) or high != int(high):
            raise SearchSpaceError(f"sweep.params.{key} (int) needs integer bounds, got {low}..{high}")
        step = int(spec.get("step", 1))
        if log and step != 1:
            raise SearchSpaceError(f"sweep.params.{key}: a log-scaled int cannot have step {step}; drop step or log")
        return Param(key, kind, IntDistribution(int(low), int(high), log=log, step=step))
    if kind == "one_minus_loguniform" and high > 1:
        raise SearchSpaceError(f"sweep.params.{key}: 1 - logU[low, high] needs high <= 1, got {high}")
    return Param(key, kind, FloatDistribution(low, high, log=log))


def parse_space(params: Mapping | None, prefix: str = "") -> list[Param]:
    """All leaves of `sweep.params` (mappings with a `type`), in declaration order."""
    found: list[Param] = []
    for name, spec in (params or {}).items():
        key = f"{prefix}{name}"
        if not isinstance(spec, Mapping):
            raise SearchSpaceError(
                f"sweep.params.{key} must be a mapping like {{type: loguniform, low: 1e-4, high: 1e-1}}, got {spec!r}"
            )
        if "type" in spec:
            found.append(make_param(key, spec))
        else:
            found.extend(parse_space(spec, f"{key}."))
    return found


def distributions(space: list[Param]) -> dict[str, BaseDistribution]:
    return {p.optuna_name: p.distribution for p in space}


def to_values(space: list[Param], optuna_params: Mapping[str, Any]) -> dict[str, Any]:
    """Optuna's sampled params -> {config key: value}."""
    return {p.key: p.value(optuna_params[p.optuna_name]) for p in space}


def format_value(value: Any) -> str:
    """A value as a Hydra override string that parses back to the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if value is None:
        return "null"
    text = str(value)
    if text and all(c.isalnum() or c in "._-/" for c in text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
