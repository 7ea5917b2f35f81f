"""The command line: `lstm-odyssey-train`, the Hydra app over `conf/train.yaml`.

This is the top of the dependency graph (config/CLI -> train and sweep -> data, models, results -> cells):
it registers the studies of sweeps/ and the `odyssey` sweeper plugin with Hydra, then runs one job per
Hydra call through `train.run`. Nothing in the package imports it.

    lstm-odyssey-train cell=cifg data=temporal_order optim=sgd optim.lr=0.05     # one run
    lstm-odyssey-train -m +sweep=quick                                            # a study
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.odyssey_sweeper.odyssey_sweeper import OdysseySweeper

from .results import RECORD_NAME
from .sweep import register_studies
from .train import describe, run

log = logging.getLogger("lstm_odyssey.train")


def register() -> None:
    """Make the studies (`+sweep=<name>`) and the `odyssey` sweeper known to Hydra. Code that composes
    configs itself (`hydra.compose(..., overrides=["+sweep=quick"])`) calls this first. Hydra also finds
    the plugin by scanning the hydra_plugins namespace, except in an editable install, whose import hook
    hides it from that scan; registering it explicitly works in both."""
    register_studies()
    Plugins.instance().register(OdysseySweeper)


def main() -> None:
    """Console script `lstm-odyssey-train`."""

    @hydra.main(version_base="1.3", config_path="pkg://lstm_odyssey.conf", config_name="train")
    def app(cfg: DictConfig) -> float | None:
        hydra_cfg = HydraConfig.get()
        container = OmegaConf.to_container(cfg, resolve=True)
        container["overrides"] = list(hydra_cfg.overrides.task)
        run_dir = Path(hydra_cfg.runtime.output_dir)
        try:
            record = run(container, run_dir)
        except Exception as err:
            where = f" (record in {run_dir / RECORD_NAME})" if (run_dir / RECORD_NAME).exists() else ""
            log.error("run failed: %s: %s%s", type(err).__name__, err, where)
            if hydra_cfg.mode is not None and hydra_cfg.mode.name == "MULTIRUN":
                return None
            sys.exit(1)
        log.info("%s", describe(record))
        log.info("record: %s", run_dir / RECORD_NAME)
        return record.get("objective")

    register()
    app()


if __name__ == "__main__":
    # Run the app from the importable module, not __main__, so joblib and submitit can pickle it by reference.
    from lstm_odyssey.cli import main as _main

    _main()
