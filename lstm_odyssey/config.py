"""Compose the training config without the command line (tests, notebooks, scripts), and make the studies of
sweeps/ known to Hydra as the config group `sweep`."""

from __future__ import annotations

from importlib import resources
from typing import Any

from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from .schema import register_schemas

STUDIES_PACKAGE = "lstm_odyssey.studies"  # sweeps/ at the top of the repository, installed under this name


def load_config(overrides: list[str] | None = None, config_name: str = "train") -> dict[str, Any]:
    """The resolved config of `lstm-odyssey-train <overrides>` as a plain dict (no Hydra run dir). The schema and
    the studies are registered afresh first, so the defaults and environment variables (schema.ENVIRONMENT) of
    this moment count, and `+sweep=<name>` selects the study (unregistered, Hydra would take it for a new key
    holding the string <name>)."""
    with initialize_config_module("lstm_odyssey.conf", version_base="1.3"):
        register_schemas()
        register_studies()
        cfg = compose(config_name, overrides=list(overrides or []))
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    container["overrides"] = list(overrides or [])
    return container  # type: ignore[return-value]


def study_names() -> list[str]:
    """The studies shipped in sweeps/ (selectable as `+sweep=<name>`)."""
    return sorted(f.name[:-5] for f in resources.files(STUDIES_PACKAGE).iterdir() if f.name.endswith(".yaml"))


def register_studies() -> None:
    """Put every sweeps/<name>.yaml in Hydra's config store as group `sweep`, package `_global_`.

    The files are read through importlib.resources, which finds them in an editable install (the
    repository's sweeps/) and in a regular one (site-packages/lstm_odyssey/studies) alike; a search-path
    entry could not, since an editable install maps packages one by one."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    root = resources.files(STUDIES_PACKAGE)
    for name in study_names():
        node = OmegaConf.create(root.joinpath(f"{name}.yaml").read_text(encoding="utf-8"))
        store.store(group="sweep", name=name, node=node, package="_global_", provider="lstm_odyssey")
