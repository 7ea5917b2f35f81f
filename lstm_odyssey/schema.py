"""The config's schema: one dataclass per config group, and `validate(cfg)`, the one place that checks values.

The dataclasses are registered in Hydra's ConfigStore (group `schema`) and are the base of conf/'s YAML files
(`defaults: [/schema/trainer@_here_, _self_]`), so Hydra checks every key's type when it composes and refuses
`trainer.epohcs=3`. What composition cannot refuse, `validate` does, at the start of every run and in the
sweeper's pre-flight: keys added with `+` (Hydra adds them to a structured node all the same), each value's
allowed range, and the data options of each task (read off the task builder's signature, since one study's
data options meet another task's: `data=imdb '~data.max_chars'`). Every problem is one `ConfigError` line that
names the key, the value and what is allowed; `one_line` turns Hydra's own composition errors into the same.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from .cells import CellSpec


class ConfigError(ValueError):
    """A value of the config is wrong; the message is one line that names the key and what is allowed."""


@dataclass(frozen=True)
class Allowed:
    """The values a setting may take besides its type: a range (inclusive low/high, exclusive above/below),
    a list of choices, a list length; `null` says what null means where the type allows it."""

    low: float | None = None
    high: float | None = None
    above: float | None = None
    below: float | None = None
    choices: tuple = ()
    length: int | None = None
    null: str | None = None

    def admits(self, value: Any) -> bool:
        if self.choices:
            return value in self.choices and type(value) in {type(c) for c in self.choices}
        if isinstance(value, (list, tuple)):
            return (self.length is None or len(value) == self.length) and all(self.admits(v) for v in value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return math.isfinite(value) and not (
                (self.low is not None and value < self.low) or (self.high is not None and value > self.high)
                or (self.above is not None and value <= self.above) or (self.below is not None and value >= self.below)
            )
        return True

    def bounds(self) -> str:
        low = f"[{_show(self.low)}" if self.low is not None else f"({_show(self.above)}" if self.above is not None else None
        high = f"{_show(self.high)}]" if self.high is not None else f"{_show(self.below)})" if self.below is not None else None
        if low and high:
            return f" in {low}, {high}"
        if low:
            return f" >= {_show(self.low)}" if self.low is not None else f" > {_show(self.above)}"
        if high:
            return f" <= {_show(self.high)}" if self.high is not None else f" < {_show(self.below)}"
        return ""


def setting(default: Any = None, **allowed: Any) -> Any:
    """A dataclass field with its allowed values in the metadata (see Allowed)."""
    spec = Allowed(**{k: tuple(v) if k == "choices" else v for k, v in allowed.items()})
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"allowed": spec})
    return field(default=default, metadata={"allowed": spec})


# ------------------------------------------------------------------------------------------------ the groups


@dataclass
class TrainerConfig:
    epochs: int = setting(20, low=1)
    patience: int | None = setting(5, low=1, null="never stop early")
    clip: float | None = setting(1.0, above=0, null="no clipping")
    batch_size: int = setting(32, low=1)
    eval_batch_size: int | None = setting(256, low=1, null="trainer.batch_size")
    input_noise: float = setting(0.0, low=0)
    max_minutes: float | None = setting(None, above=0, null="no wall-clock cap")
    min_improvement: float | None = setting(None, low=0, below=1, null="no plateau rule")
    device: str = "auto"
    seed: int = 0
    deterministic: bool = False
    resume: bool = False
    progress: Any = setting("auto", choices=("auto", True, False))


@dataclass
class ModelConfig:
    hidden_size: int = setting(64, low=1)
    num_layers: int = setting(1, low=1)
    bidirectional: bool = False
    dropout: float = setting(0.0, low=0, below=1)
    encoder: str = setting("auto", choices=("auto", "embedding", "identity"))
    embedding_dim: int | None = setting(None, low=1, null="model.hidden_size")
    forget_bias: float = 1.0
    init: str = setting("torch", choices=("torch", "keras"))
    peephole_init: str = setting("uniform", choices=("uniform", "zero"))
    backend: str = "auto"


@dataclass
class AdamConfig:
    name: str = "adam"
    lr: float = setting(0.001, low=0)  # 0 is legal: a frozen run, the untrained baseline
    betas: list[float] = setting([0.9, 0.999], low=0, below=1, length=2)
    weight_decay: float = setting(0.0, low=0)


@dataclass
class SGDConfig:
    name: str = "sgd"
    lr: float = setting(0.01, low=0)
    momentum: float = setting(0.9, low=0, below=1)
    nesterov: bool = True
    scale_lr_by_momentum: bool = False
    weight_decay: float = setting(0.0, low=0)


@dataclass
class NoLoggerConfig:
    name: str = "none"


@dataclass
class WandbLoggerConfig:
    name: str = "wandb"
    project: str = "lstm-odyssey"
    entity: str | None = None
    group: str | None = None
    run_name: str | None = None
    tags: list[str] = field(default_factory=list)
    mode: str = setting("offline", choices=("offline", "online", "disabled"))


@dataclass
class PathsConfig:
    root: str = "results"


@dataclass
class SweepConfig:
    """A study (sweeps/<name>.yaml): see sweeps/README.md."""

    name: str = "study"
    n_trials: int = setting(1, low=1)
    seed: int | None = None
    sampler: str = setting("random", choices=("random", "tpe"))
    paired: bool = False
    rerun_failed: bool = False
    storage: str | None = None  # null: journal file with the SLURM launcher, else sqlite; or a database URL
    jobs_per_launch: int | None = setting(None, low=1, null="the launcher's width")
    batch_size: int | None = setting(None, low=1, null="unset")  # deprecated alias of jobs_per_launch
    report: bool = True
    cooperate: bool = False  # true: several sweep processes share the directory (claims keep jobs apart)
    grid: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] | None = None
    vars: dict[str, Any] = field(default_factory=dict)  # a study's own lookup tables, for interpolations
    pack: Any = 1  # packed trials: 1 (each trial alone), a width K, or auto (sweep/packs.py)
    pack_members: str | None = None  # set per pack job by the sweeper: its manifest
    trial: int | None = None  # set per job by the sweeper
    job: str | None = None


def cell_schema() -> type:
    """The cell group: a preset's name (or a free label) and every flag of CellSpec, typed Any because the
    cell itself says which combinations are possible (`cell=gru cell.peepholes=true` fails as a run)."""
    flags = [(f.name, Any, field(default=f.default)) for f in dataclasses.fields(CellSpec)]
    return dataclasses.make_dataclass("CellConfig", [("name", str, field(default="vanilla")), *flags])


CellConfig = cell_schema()
CELL_EXTRA_KEYS = ("preset",)  # get_spec's base preset for a labelled cell: `+cell.preset=gru`

OPTIMIZERS: dict[str, type] = {"adam": AdamConfig, "sgd": SGDConfig}
LOGGERS: dict[str, type] = {"none": NoLoggerConfig, "wandb": WandbLoggerConfig}
SCHEMAS: dict[str, type] = {  # ConfigStore name (group `schema`) -> dataclass
    "trainer": TrainerConfig, "model": ModelConfig, "paths": PathsConfig, "cell": CellConfig,
    **{f"optim_{k}": v for k, v in OPTIMIZERS.items()}, **{f"logger_{k}": v for k, v in LOGGERS.items()},
}


def register_schemas() -> None:
    """Put the group dataclasses in Hydra's ConfigStore as `schema/<name>` (conf/'s YAMLs extend them). The
    studies start from `schema/sweep`, SweepConfig's defaults as a plain node: a structured one would refuse
    `~sweep.params`, so the sweeper checks the study's types when it starts instead."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    store = ConfigStore.instance()
    for name, schema in SCHEMAS.items():
        store.store(group="schema", name=name, node=schema, provider="lstm_odyssey")
    store.store(group="schema", name="sweep", node=OmegaConf.create(dataclasses.asdict(SweepConfig())), provider="lstm_odyssey")


# ------------------------------------------------------------------------------------------------ checking


@dataclass(frozen=True)
class Setting:
    """One key of a group: its type and allowed values."""

    name: str
    type: Any
    allowed: Allowed


def settings_of(schema: type) -> dict[str, Setting]:
    hints = typing.get_type_hints(schema)
    return {f.name: Setting(f.name, hints[f.name], f.metadata.get("allowed", Allowed())) for f in dataclasses.fields(schema)}


def settings_of_task(name: str) -> dict[str, Setting] | None:
    """The data options of task `name`, read off its builder's signature (None for an unknown task)."""
    from .data import available
    from .data.base import REGISTRY

    if name not in available():
        return None
    builder = REGISTRY[name]
    hints = typing.get_type_hints(getattr(builder, "func", builder))  # a functools.partial's function (data=uea)
    found = {"name": Setting("name", str, Allowed())}
    for param in inspect.signature(builder).parameters.values():
        if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            found[param.name] = Setting(param.name, hints.get(param.name, Any), Allowed())
    return found


def _optional(kind: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    if typing.get_origin(kind) in (Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return (args[0] if len(args) == 1 else Any), len(args) < len(typing.get_args(kind))
    return kind, kind is Any


def _has_type(value: Any, kind: Any) -> bool:
    kind, nullable = _optional(kind)
    if value is None:
        return nullable
    origin = typing.get_origin(kind) or kind
    if kind is Any:
        return True
    if origin in (list, tuple):
        (item,) = typing.get_args(kind)[:1] or (Any,)
        return isinstance(value, (list, tuple)) and all(_has_type(v, item) for v in value)
    if origin in (dict, Mapping):
        return isinstance(value, Mapping)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is str:  # Hydra reads `data.form=1997` as a number; a string option takes it as its text
        return isinstance(value, (str, int, float)) and not isinstance(value, bool)
    return isinstance(value, kind)


_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def describe(item: Setting) -> str:
    """What `item` may be, in words: 'an integer >= 1', 'null (never stop early) or an integer >= 1'."""
    kind, nullable = _optional(item.type)
    allowed = item.allowed
    if allowed.choices:
        text = "one of " + ", ".join(_show(c) for c in allowed.choices)
    elif typing.get_origin(kind) in (list, tuple):
        (inner,) = typing.get_args(kind)[:1] or (Any,)
        count = {2: "two"}.get(allowed.length or 0, "a list of")
        text = f"{count} {_NAMES.get(inner, 'value').split(' ', 1)[-1]}s{allowed.bounds()}"
    elif typing.get_origin(kind) in (dict, Mapping):
        text = "a mapping"
    else:
        text = _NAMES.get(kind, "any value") + allowed.bounds()
    if nullable and kind is not Any:
        text = f"null ({allowed.null}) or {text}" if allowed.null else f"null or {text}"
    return text


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float) and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def not_allowed(key: str, value: Any, item: Setting) -> ConfigError:
    return ConfigError(f"{key}={_show(value)} is not allowed: must be {describe(item)}")


def unknown_key(key: str, group: str, known: list[str]) -> ConfigError:
    return ConfigError(f"{key} is not a key of {group}; known keys: {', '.join(sorted(known))}")


def check_group(group: str, values: Any, known: dict[str, Setting], label: str | None = None,
                extra: tuple[str, ...] = ()) -> None:
    """Every key of `values` is known, of its type and in its range; raises the first problem."""
    label = label or group
    if not isinstance(values, Mapping):
        raise ConfigError(f"{group} must be a mapping of settings, got {_show(values)}")
    for key, value in values.items():
        if key in extra:
            continue
        if key not in known:
            raise unknown_key(f"{group}.{key}", label, [*known, *extra])
        item = known[key]
        if not _has_type(value, item.type) or (value is not None and not item.allowed.admits(value)):
            raise not_allowed(f"{group}.{key}", value, item)


def _named(group: str, values: Any, choices: Mapping[str, type], default: str) -> tuple[dict[str, Setting], str]:
    name = values.get("name", default) if isinstance(values, Mapping) else default
    if name not in choices:
        item = Setting("name", str, Allowed(choices=tuple(choices)))
        raise not_allowed(f"{group}.name", name, item)
    return settings_of(choices[name]), f"{group} ({name})"


def validate(cfg: Mapping) -> None:
    """Check every group of a resolved run config (plain or DictConfig): unknown keys, types, ranges.
    Groups that are absent are not checked; a missing key takes its default. Raises ConfigError."""
    if "trainer" in cfg:
        check_group("trainer", cfg["trainer"], settings_of(TrainerConfig))
    if "model" in cfg:
        check_group("model", cfg["model"], settings_of(ModelConfig))
    if "optim" in cfg:
        known, label = _named("optim", cfg["optim"], OPTIMIZERS, "adam")
        check_group("optim", cfg["optim"], known, label)
    if "logger" in cfg:
        known, label = _named("logger", cfg["logger"], LOGGERS, "none")
        check_group("logger", cfg["logger"], known, label)
    if "paths" in cfg:
        check_group("paths", cfg["paths"], settings_of(PathsConfig))
    if isinstance(cfg.get("cell"), Mapping):
        check_group("cell", cfg["cell"], settings_of(CellConfig), extra=CELL_EXTRA_KEYS)
    if isinstance(cfg.get("data"), Mapping):
        name = cfg["data"].get("name")
        known = settings_of_task(name)
        if known is None:
            from .data import available

            raise not_allowed("data.name", name, Setting("name", str, Allowed(choices=tuple(available()))))
        check_group("data", cfg["data"], known, f"data ({name})")
    if cfg.get("sweep") is not None:
        check_group("sweep", cfg["sweep"], settings_of(SweepConfig))


def lookup(key: str) -> Setting | None:
    """The Setting of a dotted key of a group with one schema (for messages about a composition error)."""
    group, _, name = key.partition(".")
    schemas = {"trainer": [TrainerConfig], "model": [ModelConfig], "optim": list(OPTIMIZERS.values()),
               "logger": list(LOGGERS.values()), "paths": [PathsConfig], "sweep": [SweepConfig]}.get(group, [])
    for schema in schemas:
        known = settings_of(schema)
        if name in known:
            return known[name]
    return None


# ------------------------------------------------------------------------------------------------ Hydra's errors


def one_line(err: BaseException) -> str:
    """One line for an error of composition or validation, in the words `validate` uses where it can:
    a value Hydra could not convert names the key, the value and what is allowed; an unknown key lists the
    known ones; a missing option lists the available ones."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    cause = err.__cause__ if isinstance(err.__cause__, OmegaConfBaseException) else None
    text = str(err)
    override = re.match(r"Error merging override (\S+?)=(.*)", text)
    unknown = isinstance(cause, (ConfigKeyError, ConfigAttributeError))
    if cause is not None and override and not unknown:
        key, value = override.group(1).lstrip("+~"), override.group(2)
        item = lookup(key)
        if item is not None:
            return f"{key}={value} is not allowed: must be {describe(item)}"
    if unknown and cause.full_key:
        parent = getattr(cause, "parent_node", None)
        known = [str(k) for k in parent.keys()] if parent is not None and hasattr(parent, "keys") else []
        group = cause.full_key.rpartition(".")[0] or "the config"
        if known:
            return str(unknown_key(cause.full_key, group, known))
    if isinstance(err, OverrideParseException):
        return f"cannot read the override {err.override!r}: {text.strip().splitlines()[0]}"
    if isinstance(err, MissingConfigException) and getattr(err, "options", None):
        first = text.strip().splitlines()[0]
        return f"{first}; available: {', '.join(err.options)}"
    lines = [line.strip() for line in text.splitlines() + (str(cause).splitlines() if cause else [])]
    keep = [line for line in lines if line and not line.startswith(("full_key:", "object_type=", "reference_type=",
                                                                     "Set the environment variable HYDRA_FULL_ERROR"))]
    return ": ".join(dict.fromkeys(keep)) or type(err).__name__
