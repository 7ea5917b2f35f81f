"""A study's definition, read before any job runs: the `sweep` block checked, the command line's sweeps
turned into grid axes, the search space, and one job per grid point composed and validated (the pre-flight).
Every problem is a `StudyConfigError`: one line, and Hydra prints just that."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf

from ..config_errors import one_line
from ..results import flatten
from ..schema import SweepConfig, validate
from ..settings import ConfigError, check_group, settings_of
from . import packs
from .jobs import GRID_FIRST, job_overrides, point_label
from .space import Param, SearchSpaceError, format_value, parse_space

log = logging.getLogger("lstm_odyssey.sweep")

SEED_KEY = "trainer.seed"  # the grid axis of sweep.seeds
LISTED = "listed"  # the sampler that runs sweep.configs
UP_FRONT = ("random", LISTED)  # samplers whose trials are known before any runs (packs, pairs, seeds)


class StudyConfigError(CompactHydraException):
    """The study configuration is wrong; raised before any job runs (Hydra prints just the message)."""


def study_config(config: DictConfig) -> dict:
    """The run config's `sweep` block as a plain dict, checked: its keys and values, and the settings
    that exclude each other. A key the study deleted (`~sweep.params`) has SweepConfig's default, so the sweep
    reads every key of the schema."""
    if "sweep" not in config or config.sweep is None:
        raise StudyConfigError("hydra/sweeper=odyssey needs a study: add +sweep=<name> (see sweeps/, e.g. +sweep=quick)")
    study = OmegaConf.to_container(config.sweep, resolve=True)
    assert isinstance(study, dict)
    try:
        check_group("sweep", study, settings_of(SweepConfig))
    except ConfigError as err:
        raise StudyConfigError(str(err)) from None
    study = {**dataclasses.asdict(SweepConfig()), **study}
    problem = packs.check_setting(study["pack"])
    if problem:
        raise StudyConfigError(problem)
    sampler = study["sampler"]
    if study["pack"] != 1 and sampler not in UP_FRONT:
        raise StudyConfigError("sweep.pack packs trials known up front; use sweep.sampler=random (or listed) with it, "
                               "or sweep.pack=1")
    if study["paired"] and sampler not in UP_FRONT:
        raise StudyConfigError("sweep.paired=true shares random samples across cells; use sweep.sampler=random with it")
    if study["seeds"] > 1 and sampler not in UP_FRONT:
        raise StudyConfigError("sweep.seeds repeats trial k's configuration over seeds, which TPE cannot (it asks "
                               "as it learns); use sweep.sampler=random or listed, or a grid axis sweep.grid.trainer.seed")
    study["n_trials"] = _trial_count(study)
    if "batch_size" in study:  # renamed: it read like trainer.batch_size, the minibatch
        old = study.pop("batch_size")
        if study["jobs_per_launch"] is None:
            study["jobs_per_launch"] = old
        if old is not None:
            log.warning("sweep.batch_size is deprecated and read until 0.3; use sweep.jobs_per_launch")
    return study


def _trial_count(study: Mapping) -> int:
    """Trials per grid point: sweep.n_trials (1 when null); with sampler listed, one per config of sweep.configs
    (of each cell's list when it lists configurations by cell), which n_trials may repeat but not contradict."""
    n_trials, configs = study["n_trials"], study["configs"]
    if study["sampler"] != LISTED:
        if configs is not None:
            raise StudyConfigError("sweep.configs is read by sweep.sampler=listed only; set it, or drop sweep.configs")
        return 1 if n_trials is None else int(n_trials)
    if not configs:
        raise StudyConfigError("sweep.sampler=listed runs the configurations of sweep.configs, which is empty; list "
                               "them, e.g. sweep.configs=[{optim.lr:0.01}]")
    if isinstance(configs, Mapping):  # by cell: each cell its own list
        if study["paired"]:
            raise StudyConfigError("sweep.configs lists configurations by cell, so trial k differs between cells and "
                                   "cannot pair them; set sweep.paired=false")
        counts = {cell: len(v) if isinstance(v, list) else 0 for cell, v in configs.items()}
        if len(set(counts.values())) != 1 or 0 in counts.values():
            raise StudyConfigError(f"sweep.configs lists configurations by cell, but not as many for every cell "
                                   f"({', '.join(f'{c}: {n}' for c, n in counts.items())}); give each cell a list "
                                   "of the same length")
        count = next(iter(counts.values()))
    elif isinstance(configs, list):
        count = len(configs)
    else:
        raise StudyConfigError(f"sweep.configs must be a list of configurations, or a mapping from cell to such a "
                               f"list, got {configs!r}")
    if n_trials is not None and n_trials != count:
        raise StudyConfigError(f"sweep.n_trials={n_trials} but sweep.configs lists {count} configurations"
                               f"{' per cell' if isinstance(configs, Mapping) else ''}; set sweep.n_trials={count} "
                               "or null (one trial per config)")
    return count


def listed_configs(study: Mapping, space: list[Param],
                   cells: Sequence[str] = ()) -> list[dict[str, Any]] | dict[str, list[dict[str, Any]]] | None:
    """sweep.configs checked against the search space (each gives exactly the keys of sweep.params, each value
    inside its declared range), as {config key: value} in the order of sweep.params; None unless listed. Listed
    by cell, a mapping from each of the grid's `cells` (which it must all give) to its checked list."""
    if study["sampler"] != LISTED:
        return None
    configs = study["configs"]
    if not isinstance(configs, Mapping):
        return _checked(configs, space, "sweep.configs")
    if not cells:
        raise StudyConfigError("sweep.configs lists configurations by cell, but the study has no cell axis; put the "
                               "cells in sweep.grid.cell (or on the command line, cell=a,b)")
    missing = [c for c in cells if c not in configs]
    if missing:
        raise StudyConfigError(f"sweep.configs lists configurations by cell but none for {', '.join(missing)}; add "
                               "them, or leave those cells out of the grid")
    return {cell: _checked(configs[cell], space, f"sweep.configs.{cell}") for cell in cells}


def _checked(configs: Sequence[Any], space: list[Param], where: str) -> list[dict[str, Any]]:
    """One list of listed configurations, each checked against the search space (`where`: its name in errors)."""
    declared = [p.key for p in space]
    out = []
    for k, config in enumerate(configs):
        if not isinstance(config, Mapping):
            raise StudyConfigError(f"{where}[{k}] (trial {k}) must be a mapping like {{optim.lr: 0.01}}, "
                                   f"got {config!r}")
        values = flatten(dict(config))
        for key in values:
            if key not in declared:
                raise StudyConfigError(f"{where}[{k}] (trial {k}) gives {key}, which sweep.params does not "
                                       f"declare ({', '.join(declared) or 'none'}); declare it there or drop it")
        for p in space:
            if p.key not in values:
                raise StudyConfigError(f"{where}[{k}] (trial {k}) lacks {p.key}; give every key of "
                                       f"sweep.params ({', '.join(declared)})")
            problem = p.check(values[p.key])
            if problem:
                raise StudyConfigError(f"{where}[{k}] (trial {k}): {p.key}={values[p.key]!r} {problem}")
        out.append({p.key: p.coerce(values[p.key]) for p in space})
    return out


def point_configs(configs: list[dict[str, Any]] | Mapping[str, list[dict[str, Any]]] | None,
                  point: Sequence[tuple[str, str]]) -> list[dict[str, Any]] | None:
    """The listed configurations of one grid point (`configs` as `listed_configs` returns them): the one list,
    or the list of the point's cell."""
    if isinstance(configs, Mapping):
        return configs[dict(point)["cell"]]
    return configs


def seed_axis(study: Mapping, grid: dict[str, list[str]], fixed: list[str], space: list[Param],
              configured: Any = 0) -> dict[str, list[str]]:
    """The grid with sweep.seeds as the axis trainer.seed = 0 .. K-1 (unchanged when K is 1); a study that
    also sets trainer.seed itself (`configured`: the composed config's, 0 by default) is refused."""
    seeds = int(study["seeds"])
    if seeds == 1:
        return grid
    where = ("a grid axis" if SEED_KEY in grid else "a searched parameter" if SEED_KEY in {p.key for p in space}
             else "set on the command line" if any(o.lstrip("+~").split("=", 1)[0] == SEED_KEY for o in fixed)
             else f"set to {configured} by the study" if configured not in (0, None) else None)
    if where:
        raise StudyConfigError(f"sweep.seeds={seeds} runs every job under trainer.seed=0..{seeds - 1}, but "
                               f"trainer.seed is also {where}; keep one (sweep.seeds=1, or drop trainer.seed there)")
    return {**grid, SEED_KEY: [str(s) for s in range(seeds)]}


def sample_label(point: Sequence[tuple[str, str]], study: Mapping) -> str:
    """What a grid point's random samples are drawn for: its label, less the seed axis of sweep.seeds (every
    seed of trial k runs the same configuration, paired or not)."""
    if int(study["seeds"]) > 1:
        point = [(key, value) for key, value in point if key != SEED_KEY]
    return point_label(point)


def _as_list(value: Any) -> list[str]:
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, (list, tuple)):
        return [format_value(v) for v in value]
    if isinstance(value, str) and "," in value:
        return [v.strip() for v in value.split(",") if v.strip()]
    return [format_value(value)]


def split_arguments(arguments: list[str], grid_cfg: Mapping, config_loader: Any) -> tuple[dict[str, list[str]], list[str]]:
    """(the grid axes, the fixed overrides): command-line sweeps (`cell=a,b`) become grid axes; a plain
    override of a grid key pins that axis; the axes are ordered task, cell, then the others."""
    parser = OverridesParser.create(config_loader=config_loader)
    grid: dict[str, list[str]] = {str(k): _as_list(v) for k, v in (grid_cfg or {}).items()}
    fixed: list[str] = []
    for override in parser.parse_overrides(arguments):
        key = override.get_key_element()
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                raise StudyConfigError(
                    f"{override.input_line}: continuous ranges go in the study's sweep.params, not on the command line"
                )
            grid[key] = list(override.sweep_string_iterator())
        elif key in grid:
            grid[key] = [override.get_value_element_as_str()]
        else:
            fixed.append(override.input_line)
    for key, values in grid.items():
        if not values:
            raise StudyConfigError(f"sweep.grid.{key} is empty; give it at least one value")
    order = [k for k in GRID_FIRST if k in grid] + [k for k in grid if k not in GRID_FIRST]
    return {k: grid[k] for k in order}, fixed


def search_space(params: Any, grid: Mapping[str, list[str]]) -> list[Param]:
    """The parameters of `sweep.params`; none of them may also be a grid axis."""
    try:
        space = parse_space(params)
    except SearchSpaceError as err:
        raise StudyConfigError(str(err)) from None
    clash = {p.key for p in space} & set(grid)
    if clash:
        raise StudyConfigError(f"{', '.join(sorted(clash))} is both a grid axis and a searched parameter; keep one")
    return space


def job_container(cfg: DictConfig) -> dict:
    """A composed job config as a plain dict, without the hydra node (which needs a Hydra runtime)."""
    job_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return OmegaConf.to_container(job_cfg, resolve=True)  # type: ignore[return-value]


def preflight(config_loader: Any, config: DictConfig, points: list, fixed: list[str], space: list[Param],
              listed: list[dict[str, Any]] | Mapping[str, list[dict[str, Any]]] | None = None) -> None:
    """Compose and check one job per grid point before anything runs: a wrong config fails fast. The job
    takes the point's first listed config (sampler listed; `listed` as `listed_configs` returns them), else the
    low end of every parameter."""
    low = {}
    for p in space:
        dist = p.distribution
        low[p.key] = p.value(dist.choices[0] if hasattr(dist, "choices") else dist.low)  # type: ignore[attr-defined]
    for point in points:
        sample = {**low, **((point_configs(listed, point) or [{}])[0])}
        overrides = job_overrides(point, sample, fixed)
        try:
            cfg = config_loader.load_sweep_config(config, list(overrides))
            validate(job_container(cfg))
        except ConfigError as err:
            raise StudyConfigError(f"grid point {point_label(point)}: {err}") from None
        except Exception as err:  # composition errors come in several types
            raise StudyConfigError(f"grid point {point_label(point)}: {one_line(err)}") from None
