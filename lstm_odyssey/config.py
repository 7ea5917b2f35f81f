"""Compose the training config without the command line (tests, notebooks, scripts)."""

from __future__ import annotations

from typing import Any

from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from .schema import register_schemas


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
