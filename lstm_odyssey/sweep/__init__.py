"""Studies: the sweeper that drives Optuna from Hydra multirun, the study configs of sweeps/, and the
end-of-sweep collection of records (`runs.parquet` and a task x cell table).

`lstm_odyssey.cli.register()` makes both known to Hydra; the `lstm-odyssey-train` entry point calls it, and
code that composes configs itself (`hydra.compose(..., overrides=["+sweep=quick"])`) calls it first.
"""

from __future__ import annotations

from importlib import resources

STUDIES_PACKAGE = "lstm_odyssey.studies"  # sweeps/ at the top of the repository, installed under this name


def study_names() -> list[str]:
    """The studies shipped in sweeps/ (selectable as `+sweep=<name>`)."""
    return sorted(f.name[:-5] for f in resources.files(STUDIES_PACKAGE).iterdir() if f.name.endswith(".yaml"))


def register_studies() -> None:
    """Put every sweeps/<name>.yaml in Hydra's config store as group `sweep`, package `_global_`.

    The files are read through importlib.resources, which finds them in an editable install (the
    repository's sweeps/) and in a regular one (site-packages/lstm_odyssey/studies) alike; a search-path
    entry could not, since an editable install maps packages one by one."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    store = ConfigStore.instance()
    root = resources.files(STUDIES_PACKAGE)
    for name in study_names():
        node = OmegaConf.create(root.joinpath(f"{name}.yaml").read_text(encoding="utf-8"))
        store.store(group="sweep", name=name, node=node, package="_global_", provider="lstm_odyssey")
