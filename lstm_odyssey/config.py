"""Compose the training config without the command line (tests, notebooks, scripts)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from .schema import NO_DEFAULT, KernelsConfig, ModelConfig, TrainerConfig, default, register_schemas


def load_config(overrides: list[str] | None = None, config_name: str = "train") -> dict[str, Any]:
    """The resolved config of `lstm-odyssey-train <overrides>` as a plain dict (no Hydra run dir). The schema is
    registered afresh first, so the defaults and environment variables (schema.ENVIRONMENT) of this moment count."""
    with initialize_config_module("lstm_odyssey.conf", version_base="1.3"):
        register_schemas()
        cfg = compose(config_name, overrides=list(overrides or []))
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    container["overrides"] = list(overrides or [])
    return container  # type: ignore[return-value]


COMPLETED_GROUPS = {"trainer": TrainerConfig, "model": ModelConfig, "kernels": KernelsConfig}  # one schema each


def complete(cfg: Mapping) -> dict:
    """A resolved config written by an earlier release (a pack manifest, a record) with every key it lacks in
    the one-schema groups set to the schema's default: what that release ran with, in today's shape."""
    done = dict(cfg)
    for group, schema in COMPLETED_GROUPS.items():
        values = dict(done.get(group) or {})
        for f in dataclasses.fields(schema):
            if f.name not in values and (value := default(f"{group}.{f.name}")) is not NO_DEFAULT:
                values[f.name] = value
        done[group] = values
    return done
