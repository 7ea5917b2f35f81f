"""The config's schema: one dataclass per config group, and `validate(cfg)`, the one place that checks values.

The dataclasses are registered in Hydra's ConfigStore (group `schema`) and are the base of conf/'s YAML files
(`defaults: [/schema/trainer@_here_, _self_]`), so Hydra checks every key's type when it composes and refuses
`trainer.epohcs=3`. They are the only source of the defaults: a YAML file sets only what its preset or task
changes (tests/test_config_defaults.py holds them to it), the data options' defaults are their builders'
(`schema/data_<task>`), and the environment variables of ENVIRONMENT replace a default when a config is
composed. What composition cannot refuse, `validate` does, at the start of every run and in the sweeper's
pre-flight: keys added with `+` (Hydra adds them to a structured node all the same), each value's
allowed range, and the data options of each task (read off the task builder's signature, since one study's
data options meet another task's: `data=imdb '~data.max_chars'`). Every problem is one `ConfigError` line that
names the key, the value and what is allowed (settings.py: what a setting may be, and the checks);
`one_line` turns Hydra's own composition errors into the same.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .backends import BACKENDS
from .cells import DEFAULT_INIT, CellSpec, ops
from .cells.base import INIT_SCHEMES, PEEPHOLE_INITS
from .models import ENCODERS
from .settings import (
    Allowed,
    ConfigError,
    Setting,
    check_group,
    describe,
    not_allowed,
    setting,
    settings_of,
)

# ------------------------------------------------------------------------------------------------ the groups


@dataclass
class TrainerConfig:
    epochs: int = setting(20, low=1)
    patience: int | None = setting(5, low=1, null="never stop early")  # epochs without a better validation metric
    clip: float | None = setting(1.0, above=0, null="no clipping")  # gradient-norm clipping
    batch_size: int = setting(32, low=1)
    eval_batch_size: int | None = setting(256, low=1, null="trainer.batch_size")
    input_noise: float = setting(0.0, low=0)  # std of Gaussian noise added to real-valued inputs in training (the paper's)
    max_minutes: float | None = setting(None, above=0, null="no wall-clock cap")
    min_improvement: float | None = setting(None, low=0, below=1, null="no plateau rule")
    device: str = "auto"  # auto: cuda when available
    seed: int = 0
    deterministic: bool = False
    resume: bool = False  # continue from checkpoints/last.pt in the run directory
    progress: Any = setting("auto", choices=("auto", True, False))  # auto: a bar on a terminal, else a line per epoch


@dataclass
class ModelConfig:
    """SequenceModel (models.py): encoder -> RecurrentLayer -> head. The defaults of init, peephole_init and
    forget_bias are `cells.DEFAULT_INIT`'s (the layer's and the model's too)."""

    hidden_size: int = setting(64, low=1)
    num_layers: int = setting(1, low=1)
    bidirectional: bool = False
    dropout: float = setting(0.0, low=0, below=1)  # between stacked layers (torch.nn.LSTM's)
    output_dropout: float = setting(0.0, low=0, below=1)  # on the top layer's output before the head (Zaremba et al.)
    encoder: str = setting("auto", choices=ENCODERS)  # auto: embedding for tokens, identity otherwise
    embedding_dim: int | None = setting(None, low=1, null="model.hidden_size")
    forget_bias: float = DEFAULT_INIT.forget_bias  # Jozefowicz et al. 2015; 0.0 for none
    init: str = setting(DEFAULT_INIT.scheme, choices=INIT_SCHEMES)  # torch: U(±1/sqrt(N)); keras: Glorot + orthogonal
    peephole_init: str = setting(DEFAULT_INIT.peephole, choices=PEEPHOLE_INITS)
    backend: str = setting("auto", choices=BACKENDS)  # see backends.py


@dataclass
class KernelsConfig:
    """Which kernels the fused backends (model.backend fused, graph) run: they compute the same function, so
    these are no hyperparameters, but they decide which code runs (cells/ops.py; defaults `ops.KERNEL_DEFAULTS`).
    LSTM_ODYSSEY_TRITON, _SCAN and _GRAPH_CACHE set them when a config is composed (ENVIRONMENT below)."""

    triton: str = setting(ops.KERNEL_DEFAULTS["triton"], choices=ops.KERNEL_CHOICES["triton"])  # auto: on CUDA; force: anywhere
    scan: str = setting(ops.KERNEL_DEFAULTS["scan"], choices=ops.KERNEL_CHOICES["scan"])  # off: sequential; log: log space
    graph_cache: int = setting(ops.KERNEL_DEFAULTS["graph_cache"], low=1)  # CUDA graphs kept per device (backend graph)


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


# The smallest difference that matters, per metric (docs/analysis.md, "The margin"): JSB's NLL in nats per frame,
# an error rate as a fraction (one percentage point), an MSE in squared target units.
MARGINS = {"nll": 0.05, "bpc": 0.01, "error": 0.01, "accuracy": 0.01, "mse": 0.002, "mae": 0.01}


@dataclass
class AnalysisConfig:
    """The analysis plan (docs/analysis.md): fixed before a study runs, and written into its report."""

    reference: str = "vanilla"
    primary: str = setting("rank", choices=("rank", "t"))  # rank: Wilcoxon / Mann-Whitney with Hodges-Lehmann
    alpha: float = setting(0.05, above=0, below=0.5)
    confidence: float = setting(0.95, above=0.5, below=1)
    margin: dict[str, float] = field(default_factory=lambda: dict(MARGINS))
    min_pairs: int = setting(10, low=2)
    top_fraction: float = setting(0.1, above=0, below=1)
    bootstrap: int = setting(200, low=0)  # resamples over trials for the fANOVA and lr x hidden claims
    bootstrap_trees: int = setting(16, low=1)  # trees per resample's forest (the point estimate keeps 64)
    seed: int = 0
    by_far: float = setting(2.0, above=1)  # "by far the most important": lr's importance >= by_far x the next one's
    hardly: float = setting(0.10, above=0, below=1)  # "hardly matters": importance below this
    independent: float = setting(0.75, above=0, below=1)  # "nearly independent": main effects explain at least this
    lr_shift: float = setting(0.5, above=0)  # decades: a shift of the optimal lr smaller than this does not matter


@dataclass
class SweepConfig:
    """A study (sweeps/<name>.yaml): see sweeps/README.md."""

    name: str = "study"
    n_trials: int | None = setting(None, low=1, null="1, or one trial per config with sampler listed")
    seeds: int = setting(1, low=1)  # K > 1: every job runs under trainer.seed = 0 .. K-1 (a grid axis)
    seed: int | None = None
    sampler: str = setting("random", choices=("random", "tpe", "listed"))
    # sampler listed: trial k runs configs[k] ({dotted key: value}); or {cell: [...]}, each cell its own list
    configs: Any = None
    paired: bool = False
    rerun_failed: bool = False
    storage: str | None = None  # null: journal file with the SLURM launcher, else sqlite; or a database URL
    jobs_per_launch: int | None = setting(None, low=1, null="the launcher's width; with pack, every pack at once")
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
    """The cell group: the preset the flags start from (`name`, set by `cell=<preset>`), a free `label` for
    records, and every flag of CellSpec, typed Any because the cell itself says which combinations are
    possible (`cell=gru cell.peepholes=true` fails as a run)."""
    flags = [(f.name, Any, field(default=f.default)) for f in dataclasses.fields(CellSpec)]
    named = [("name", str, field(default="vanilla")), ("label", str | None, field(default=None))]
    return dataclasses.make_dataclass("CellConfig", [*named, *flags])


CellConfig = cell_schema()
CELL_EXTRA_KEYS = ("preset",)  # get_spec's base preset for a labelled cell: `+cell.preset=gru`

OPTIMIZERS: dict[str, type] = {"adam": AdamConfig, "sgd": SGDConfig}
LOGGERS: dict[str, type] = {"none": NoLoggerConfig, "wandb": WandbLoggerConfig}
SCHEMAS: dict[str, type] = {  # ConfigStore name (group `schema`) -> dataclass
    "trainer": TrainerConfig, "model": ModelConfig, "kernels": KernelsConfig, "paths": PathsConfig, "cell": CellConfig,
    "analysis": AnalysisConfig,
    **{f"optim_{k}": v for k, v in OPTIMIZERS.items()}, **{f"logger_{k}": v for k, v in LOGGERS.items()},
}


# Environment variables that set a key of every run composed where they are set: they take the place of the
# schema's default when the config is composed (a YAML file or an override that sets the key still wins), so the
# composed config, and the run's record with it, holds the value the run uses. Without a config (the layer as a
# library) the code reads them itself (cells/ops.py).
ENVIRONMENT = {"paths.root": "LSTM_ODYSSEY_RESULTS", **{f"kernels.{name}": variable for name, variable in ops.KERNEL_ENV.items()}}


def environment() -> dict[str, Any]:
    """{dotted key: value} of ENVIRONMENT's variables that are set here, each checked as `validate` checks its
    key (a ConfigError names the variable)."""
    found = {}
    for key, variable in ENVIRONMENT.items():
        group, _, name = key.partition(".")
        value = ops.kernel_from_environment(name) if group == "kernels" else os.environ.get(variable) or None
        if value is None:
            continue
        item = lookup(key)
        try:
            check_group(group, {name: value}, {name: item})
        except ConfigError:
            raise ConfigError(f"{variable}={os.environ[variable]} is not allowed: {key} must be {describe(item)}") from None
        found[key] = value
    return found


def task_defaults() -> dict[str, dict[str, Any]]:
    """Each task's data options with their defaults, read off its builder's signature (`name` first, the
    task's registry name): the only place a data option's default is written is its builder."""
    from .data import available
    from .data.base import REGISTRY

    found = {}
    for task in available():
        options: dict[str, Any] = {"name": task}
        for param in inspect.signature(REGISTRY[task]).parameters.values():
            if param.name != "name" and param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
                options[param.name] = "???" if param.default is param.empty else param.default  # ???: must be set
        found[task] = options
    return found


def register_schemas() -> None:
    """Put the schema in Hydra's ConfigStore, group `schema` (conf/'s YAMLs extend these nodes and set only what
    they change): each group's dataclass as `schema/<name>`, ENVIRONMENT's variables in place of its defaults;
    each task's data options as `schema/data_<task>` (`task_defaults`, plain nodes: `validate` checks the
    types); and `schema/sweep`, SweepConfig's defaults as a plain node (the studies start from it: a
    structured one would refuse `~sweep.params`, so the sweeper checks the study's types when it starts).
    Called when conf/ is imported and by `config.load_config`, so that a changed default or variable counts."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    store = ConfigStore.instance()
    preset = environment()
    for name, schema in SCHEMAS.items():
        node = OmegaConf.structured(schema)
        for key, value in preset.items():
            group, _, leaf = key.partition(".")
            if group == name:
                node[leaf] = value
        store.store(group="schema", name=name, node=node, provider="lstm_odyssey")
    for task, options in task_defaults().items():
        store.store(group="schema", name=f"data_{task}", node=OmegaConf.create(options), provider="lstm_odyssey")
    store.store(group="schema", name="sweep", node=OmegaConf.create(dataclasses.asdict(SweepConfig())), provider="lstm_odyssey")


# ------------------------------------------------------------------------------------------------ checking


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
    if "kernels" in cfg:
        check_group("kernels", cfg["kernels"], settings_of(KernelsConfig))
    if "optim" in cfg:
        known, label = _named("optim", cfg["optim"], OPTIMIZERS, "adam")
        check_group("optim", cfg["optim"], known, label)
    if "logger" in cfg:
        known, label = _named("logger", cfg["logger"], LOGGERS, "none")
        check_group("logger", cfg["logger"], known, label)
    if "paths" in cfg:
        check_group("paths", cfg["paths"], settings_of(PathsConfig))
    if "analysis" in cfg:
        check_group("analysis", cfg["analysis"], settings_of(AnalysisConfig))
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


def _schemas(group: str) -> list[type]:
    return {"trainer": [TrainerConfig], "model": [ModelConfig], "kernels": [KernelsConfig], "optim": list(OPTIMIZERS.values()),
            "logger": list(LOGGERS.values()), "paths": [PathsConfig], "sweep": [SweepConfig],
            "analysis": [AnalysisConfig]}.get(group, [])


def lookup(key: str) -> Setting | None:
    """The Setting of a dotted key of a group with one schema (for messages about a composition error)."""
    group, _, name = key.partition(".")
    for schema in _schemas(group):
        known = settings_of(schema)
        if name in known:
            return known[name]
    return None


NO_DEFAULT = object()


def default(key: str) -> Any:
    """The schema's default of a dotted key (`model.output_dropout`), or NO_DEFAULT: what a config written
    before the key existed behaved as."""
    group, _, name = key.partition(".")
    head, _, rest = name.partition(".")  # `analysis.margin.nll`: a key inside a mapping's default
    for schema in _schemas(group):
        for f in dataclasses.fields(schema):
            if f.name != head:
                continue
            value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            for part in rest.split(".") if rest else []:
                value = value.get(part, NO_DEFAULT) if isinstance(value, Mapping) else NO_DEFAULT
            return NO_DEFAULT if value is dataclasses.MISSING else value
    return NO_DEFAULT


def with_defaults(values: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """`values` (dotted keys) with the schema's default for each of `keys` it lacks: what a config, record or
    checkpoint written before a key existed ran with. The one place old settings are filled in."""
    added = {k: d for k in keys if k not in values and (d := default(k)) is not NO_DEFAULT}
    return {**added, **values}


def complete(cfg: Mapping) -> dict:
    """A resolved config of an earlier release (a pack manifest) with every key it lacks in the groups of one
    schema (trainer, model, kernels) set to its default: what that release ran with, in today's shape."""
    done = dict(cfg)
    for group in ("trainer", "model", "kernels"):
        values = {f"{group}.{k}": v for k, v in (done.get(group) or {}).items()}
        keys = [f"{group}.{f.name}" for schema in _schemas(group) for f in dataclasses.fields(schema)]
        done[group] = {k.partition(".")[2]: v for k, v in with_defaults(values, keys).items()}
    return done
