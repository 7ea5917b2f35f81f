"""The schema is the only source of defaults (issue 28): conf/'s YAML files set only what a preset or task
changes, a default changed in the schema (or a data builder) reaches a run with no YAML touched, the library's
defaults are the schema's, and the settings that choose which code runs are config keys the record holds."""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lstm_odyssey import train
from lstm_odyssey.cells import DEFAULT_INIT, get_spec, lstm_scan, ops
from lstm_odyssey.config import load_config
from lstm_odyssey.data import synthetic
from lstm_odyssey.layers import RecurrentLayer
from lstm_odyssey.models import SequenceModel
from lstm_odyssey.results import hparams_of
from lstm_odyssey.schema import (
    SCHEMAS,
    AdamConfig,
    KernelsConfig,
    ModelConfig,
    TrainerConfig,
    register_schemas,
    task_defaults,
    validate,
)
from lstm_odyssey.settings import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf"
SCHEMA_GROUPS = ("model", "kernels", "trainer", "optim", "logger", "paths", "analysis")  # extend /schema/<name>
TINY = ["data.length=5", "data.n_train=16", "data.n_val=8", "data.n_test=8", "model.hidden_size=3",
        "trainer.epochs=1", "trainer.progress=false"]
ENVIRONMENT = ("LSTM_ODYSSEY_TRITON", "LSTM_ODYSSEY_SCAN", "LSTM_ODYSSEY_GRAPH_CACHE", "LSTM_ODYSSEY_RESULTS")


@pytest.fixture(autouse=True)
def plain_environment(monkeypatch):
    for variable in ENVIRONMENT:
        monkeypatch.delenv(variable, raising=False)
    yield
    monkeypatch.undo()
    register_schemas()  # the ConfigStore as the unpatched schema and environment have it, for later tests


def own_keys(path: Path) -> tuple[dict, list]:
    """What a YAML file sets itself (its keys less `defaults`), and its defaults list."""
    cfg = OmegaConf.to_container(OmegaConf.load(path))
    defaults = cfg.pop("defaults", [])
    return cfg, defaults


def schema_default(schema: type, name: str):
    f = next(f for f in dataclasses.fields(schema) if f.name == name)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def schema_of(defaults: list) -> type:
    (entry,) = [d for d in defaults if isinstance(d, str) and d.startswith("/schema/")]
    return SCHEMAS[entry.removeprefix("/schema/").partition("@")[0]]


# ------------------------------------------------------------------------------ YAML and schema agree


@pytest.mark.parametrize("path", sorted(p for g in SCHEMA_GROUPS for p in (CONF / g).glob("*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_group_file_sets_only_what_differs_from_the_schema(path):
    own, defaults = own_keys(path)
    if path.name == "default.yaml":
        assert own == {}, f"{path}: a default belongs in lstm_odyssey/schema.py, not here"
    schema = schema_of(defaults)
    same = [k for k, v in own.items() if v == schema_default(schema, k)]
    assert not same, f"{path} repeats the schema's default of {same}"


@pytest.mark.parametrize("path", sorted((CONF / "data").glob("*.yaml")), ids=lambda p: p.stem)
def test_a_data_file_sets_only_what_differs_from_its_builder(path):
    own, defaults = own_keys(path)
    bases = [d for d in defaults if d != "_self_"]
    assert len(bases) == 1, path
    base = bases[0]
    if base.startswith("/schema/data_"):
        builder = task_defaults()[base.removeprefix("/schema/data_").partition("@")[0]]
    else:  # another task file (adding_long: adding at T = 200)
        builder = {**task_defaults()[base], **own_keys(CONF / "data" / f"{base}.yaml")[0]}
    same = [k for k, v in own.items() if v == builder[k]]
    assert not same, f"{path} repeats its builder's default of {same}"


def test_the_composed_config_is_the_schema_and_the_builders_defaults():
    cfg = load_config([])
    for group, schema in (("model", ModelConfig), ("kernels", KernelsConfig), ("trainer", TrainerConfig),
                          ("optim", AdamConfig), ("analysis", SCHEMAS["analysis"]), ("paths", SCHEMAS["paths"])):
        assert cfg[group] == dataclasses.asdict(schema()), group
    for path in sorted((CONF / "data").glob("*.yaml")):
        data = load_config([f"data={path.stem}"])["data"]
        builder = task_defaults()[data["name"]]
        changed = own_keys(path)[0]
        assert set(data) == set(builder), path  # every option of the builder, and no other
        assert {k: v for k, v in data.items() if k not in changed} == {k: v for k, v in builder.items() if k not in changed}


def test_a_schema_default_change_reaches_a_run_without_touching_any_yaml(monkeypatch, tmp_path):
    monkeypatch.setattr(TrainerConfig.__dataclass_fields__["epochs"], "default", 2)
    monkeypatch.setattr(ModelConfig.__dataclass_fields__["forget_bias"], "default", 0.25)
    monkeypatch.setattr(AdamConfig.__dataclass_fields__["lr"], "default", 0.02)
    monkeypatch.setattr(KernelsConfig.__dataclass_fields__["scan"], "default", "off")
    defaults = dict(zip(inspect.signature(synthetic.build).parameters, synthetic.build.__defaults__))
    monkeypatch.setattr(synthetic.build, "__defaults__", tuple({**defaults, "n_val": 9}.values()))
    cfg = load_config([k for k in TINY if not k.startswith(("trainer.epochs", "data.n_val"))])
    assert (cfg["trainer"]["epochs"], cfg["model"]["forget_bias"], cfg["optim"]["lr"]) == (2, 0.25, 0.02)
    assert (cfg["kernels"]["scan"], cfg["data"]["n_val"]) == ("off", 9)
    record = train.run(cfg, tmp_path)
    assert record["status"] == "ok" and record["epochs_run"] == 2
    assert record["config"]["model"]["forget_bias"] == 0.25 and record["config"]["kernels"]["scan"] == "off"


def test_the_library_defaults_are_the_schemas():
    """SequenceModel and RecurrentLayer called without a config build what a config of defaults builds."""
    model = inspect.signature(SequenceModel).parameters
    for f in dataclasses.fields(ModelConfig):
        assert model[f.name].default == schema_default(ModelConfig, f.name), f.name
    layer = inspect.signature(RecurrentLayer).parameters
    for name in ("forget_bias", "init", "peephole_init", "backend", "num_layers", "bidirectional", "dropout"):
        assert layer[name].default == schema_default(ModelConfig, name), name
    assert (DEFAULT_INIT.scheme, DEFAULT_INIT.peephole, DEFAULT_INIT.forget_bias) == ("torch", "uniform", 1.0)
    assert {f.name: f.default for f in dataclasses.fields(KernelsConfig)} == ops.KERNEL_DEFAULTS


# ------------------------------------------------------------------------------ model.encoder=linear


def test_the_linear_encoder_is_a_legal_config():
    cfg = load_config([*TINY, "model.encoder=linear", "model.embedding_dim=5"])
    validate(cfg)
    model = train.build_model(cfg, synthetic.build(length=5, n_train=4, n_val=2, n_test=2))
    assert isinstance(model.encoder, torch.nn.Linear) and model.rnn.input_size == 5
    cfg["model"]["encoder"] = "conv"
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert str(err.value) == "model.encoder=conv is not allowed: must be one of auto, identity, linear, embedding"


# ------------------------------------------------------------------------------ the kernels: config keys


def test_the_environment_sets_the_kernel_keys_and_an_override_wins(monkeypatch):
    monkeypatch.setenv("LSTM_ODYSSEY_SCAN", "0")
    monkeypatch.setenv("LSTM_ODYSSEY_TRITON", "force")
    monkeypatch.setenv("LSTM_ODYSSEY_GRAPH_CACHE", "4")
    assert load_config([])["kernels"] == {"triton": "force", "scan": "off", "graph_cache": 4}
    assert load_config(["kernels.scan=log"])["kernels"]["scan"] == "log"
    monkeypatch.setenv("LSTM_ODYSSEY_SCAN", "sideways")
    with pytest.raises(ConfigError, match=r"^LSTM_ODYSSEY_SCAN=sideways is not allowed: kernels.scan must be one of auto, off, log$"):
        load_config([])


def test_the_kernel_keys_are_no_hyperparameters():
    """A run resumes from a checkpoint written before they existed, and studies compare runs across them."""
    cfg = load_config(["kernels.scan=off"])
    assert not any(key.startswith("kernels.") for key in hparams_of(cfg))


def min_lstm_pass(layer: RecurrentLayer) -> None:
    x = torch.randn(2, 5, 3, requires_grad=True)
    layer(x)[0].sum().backward()


def test_the_scan_setting_chooses_the_path_forward_and_backward(monkeypatch):
    """Which path runs: a layer's own setting, else the one in force (a run's config), else the environment."""
    def no_scan(*args, **kwargs):
        raise AssertionError("the scan ran")

    spec = get_spec("min_lstm")
    assert backends_path(spec) == "scan"
    monkeypatch.setenv("LSTM_ODYSSEY_SCAN", "0")  # library use: the environment
    assert backends_path(spec) == "eager"
    with ops.kernel_settings(scan="auto"):  # a run's config wins over the environment
        assert backends_path(spec) == "scan"
    monkeypatch.setattr(lstm_scan, "sequence_forward", no_scan)
    monkeypatch.setattr(lstm_scan, "sequence_backward", no_scan)
    monkeypatch.setenv("LSTM_ODYSSEY_SCAN", "log")
    min_lstm_pass(RecurrentLayer(3, 4, spec, backend="fused", scan="off"))  # the layer's own, backward included
    with ops.kernel_settings(scan="off"):
        min_lstm_pass(RecurrentLayer(3, 4, spec, backend="fused"))
    with pytest.raises(ValueError, match="scan must be one of auto, off, log"):
        RecurrentLayer(3, 4, spec, scan="sideways")


def backends_path(spec) -> str:
    from lstm_odyssey.backends import fused_kernel

    return fused_kernel(spec, torch.device("cpu")).split(":")[0]


@pytest.mark.slow
def test_a_command_line_run_records_the_kernels_the_environment_chose(tmp_path):
    env = {**os.environ, "LSTM_ODYSSEY_SCAN": "0", "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "-m", "lstm_odyssey.cli", f"paths.root={tmp_path}", *TINY, "cell=min_lstm",
                           "model.backend=fused"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (path,) = tmp_path.rglob("result.json")
    assert json.loads(path.read_text())["config"]["kernels"] == {"triton": "auto", "scan": "off", "graph_cache": 16}


def test_a_config_of_an_earlier_release_is_completed_with_the_schema_defaults():
    """A pack manifest written before `model.output_dropout` and the `kernels` group existed runs as today's default."""
    from lstm_odyssey.config import load_config
    from lstm_odyssey.schema import complete

    today = load_config([])
    older = {k: (dict(v) if isinstance(v, dict) else v) for k, v in today.items() if k != "kernels"}
    del older["model"]["output_dropout"]
    assert "kernels" not in older and complete(older) == today
    assert complete(today) == today


def test_load_config_selects_a_study_in_a_fresh_process():
    """`load_config(["+sweep=quick"])` in a process that never called `cli.register()` (a notebook) composes the
    study of sweeps/quick.yaml, not a new key `sweep` holding the string "quick"."""
    import yaml

    code = ("import json; from lstm_odyssey.config import load_config; "
            "print(json.dumps(load_config(['+sweep=quick'])['sweep']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "WANDB_MODE": "disabled"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    sweep = json.loads(proc.stdout.strip().splitlines()[-1])
    shipped = yaml.safe_load((Path(__file__).resolve().parents[1] / "sweeps" / "quick.yaml").read_text())["sweep"]
    assert isinstance(sweep, dict) and sweep["name"] == "quick"
    assert {k: sweep[k] for k in shipped if k in ("n_trials", "grid", "params")} == {
        k: v for k, v in shipped.items() if k in ("n_trials", "grid", "params")}
