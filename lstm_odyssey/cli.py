"""The command line: `lstm-odyssey-train`, the Hydra app over `conf/train.yaml`.

This is the top of the dependency graph (config/CLI -> train and sweep -> data, models, results -> cells):
it registers the studies of sweeps/ and the `odyssey` sweeper plugin with Hydra, then runs one job per
Hydra call through `train.run`. Nothing in the package imports it.

    lstm-odyssey-train cell=cifg data=temporal_order optim=sgd optim.lr=0.05     # one run
    lstm-odyssey-train -m +sweep=quick                                            # a study

Whatever goes wrong before a run starts is one line on stderr: a wrong value or key (Hydra's composition
errors are rewritten in the words of lstm_odyssey/schema.py), a wrong study, a locked sweep directory.
SIGTERM and Ctrl-C print one line and exit 143 / 130; a rerun of the same command resumes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hydra_plugins.odyssey_sweeper.odyssey_sweeper import OdysseySweeper

from . import jobstate
from .cells.ops import kernel_settings
from .config import register_studies
from .config_errors import one_line
from .engine import EPOCH_LOGGER
from .results import RECORD_NAME
from .schema import environment, validate
from .settings import ConfigError
from .signals import exit_code, interrupts, reraise_if_interrupted
from .sweep.packs import MANIFEST_KEY, run_pack
from .sweep.worker import AlreadyRunning, die_with_parent, running
from .train import describe, describe_error, run

log = logging.getLogger("lstm_odyssey.train")
FULL_ERROR = "HYDRA_FULL_ERROR"  # Hydra's switch: its errors reach main() as exceptions, printed here
INTERRUPTED = "interrupted; rerun the same command to resume"
_single_run: dict[str, Path] = {}  # the run directory of a single run, for the line printed on interrupt


def register() -> None:
    """Make the studies (`+sweep=<name>`) and the `odyssey` sweeper known to Hydra. Code that composes
    configs itself (`hydra.compose(..., overrides=["+sweep=quick"])`) calls this first. Hydra also finds
    the plugin by scanning the hydra_plugins namespace, except in an editable install, whose import hook
    hides it from that scan; registering it explicitly works in both."""
    register_studies()
    Plugins.instance().register(OdysseySweeper)


def quiet_console() -> None:
    """A sweep's job: per-epoch lines go to the job's log file only; on a terminal, which shows the sweep's
    progress line, its console shows warnings and errors only."""
    root = logging.getLogger()
    epochs = logging.getLogger(EPOCH_LOGGER)
    epochs.propagate = False
    epochs.handlers = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
    if sys.stdout.isatty():
        for handler in root.handlers:
            if not isinstance(handler, logging.FileHandler):
                handler.setLevel(logging.WARNING)


def _sweep_job(container: dict, run_dir: Path) -> dict | None:
    """One job of a sweep: dies with the sweep, holds the job's `.running` marker, quiet on the console;
    None when another process trains it right now. A job that is already `ok` is not trained again."""
    die_with_parent()
    quiet_console()
    if container["trainer"]["progress"] == "auto":
        container["trainer"]["progress"] = False  # bars of parallel jobs would garble the terminal
    manifest = (container.get("sweep") or {}).get(MANIFEST_KEY)
    try:
        if manifest:  # a pack of trials (sweep.pack): each member writes its own record
            return run_pack(manifest)[0]
        with running(run_dir):
            done = jobstate.done(run_dir)
            if done:
                log.warning("%s is done already (ok); not training it again", run_dir)
                return done
            return run(container, run_dir)
    except AlreadyRunning as err:
        log.error("%s", err)
        return None


def main() -> None:
    """Console script `lstm-odyssey-train`."""

    @hydra.main(version_base="1.3", config_path="pkg://lstm_odyssey.conf", config_name="train")
    def app(cfg: DictConfig) -> float | None:
        hydra_cfg = HydraConfig.get()
        container = OmegaConf.to_container(cfg, resolve=True)
        container["overrides"] = list(hydra_cfg.overrides.task)
        run_dir = Path(hydra_cfg.runtime.output_dir)
        multirun = hydra_cfg.mode is not None and hydra_cfg.mode.name == "MULTIRUN"
        if not multirun:  # a sweep checks every grid point in its pre-flight (lstm_odyssey/sweep/study.py)
            _single_run["dir"] = run_dir
            try:
                validate(container)
            except ConfigError as err:  # nothing ran: one line, no record (raising would add Hydra's lines)
                print(err, file=sys.stderr)
                sys.exit(1)
        try:
            with kernel_settings(**container["kernels"]):  # the kernels the config names (and the record shows)
                record = _sweep_job(container, run_dir) if multirun else run(container, run_dir)
        except Exception as err:
            reraise_if_interrupted(err)
            where = f" (record in {run_dir / RECORD_NAME})" if (run_dir / RECORD_NAME).exists() else ""
            log.error("run failed: %s%s", describe_error(err), where)
            if multirun:
                return None
            sys.exit(1)
        if record is None:
            return None
        log.info("%s", describe(record))
        log.info("record: %s", run_dir / RECORD_NAME)
        return record.get("objective")

    register()
    with reported():
        environment()  # a wrong value of a variable of schema.ENVIRONMENT: one line, before Hydra composes
        app()


@contextlib.contextmanager
def reported() -> Iterator[None]:
    """Errors a person can fix print one line (no traceback) and exit 1; SIGTERM and Ctrl-C print one line
    and exit 128 + the signal. HYDRA_FULL_ERROR=1 set by the user keeps Hydra's full tracebacks."""
    full = os.environ.get(FULL_ERROR) == "1"
    os.environ[FULL_ERROR] = "1"
    try:
        with interrupts():
            yield
    except KeyboardInterrupt as err:
        where = _single_run.get("dir")
        line = INTERRUPTED if where is None else f"interrupted; resume with the same command plus trainer.resume=true hydra.run.dir={where}"
        print(f"\n{line}", file=sys.stderr)
        sys.exit(exit_code(err))
    except (CompactHydraException, OmegaConfBaseException, ConfigError) as err:
        if full:
            raise
        print(one_line(err), file=sys.stderr)
        sys.exit(1)
    finally:
        if not full:
            os.environ.pop(FULL_ERROR, None)


if __name__ == "__main__":
    # Run the app from the importable module, not __main__, so joblib and submitit can pickle it by reference.
    from lstm_odyssey.cli import main as _main

    _main()
