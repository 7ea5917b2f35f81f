"""A trial's life cycle, as plain data: its record before it starts, its epoch-loop state, when it improves,
when it stops, and the results its record ends with. The engine (engine.py) drives it for one run and for a
pack alike; the stopping analysis (analysis/stopping.py) replays it on recorded histories."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from .cells import cell_label, get_spec
from .results import FAILED, git_commit, hparams_of, versions
from .schema import validate


def record_head(cfg: dict, run_dir: Path) -> dict[str, Any]:
    """What a record says about a run before it starts; read defensively, since a wrong config must
    still end in a record that says what was wrong."""
    trainer = cfg.get("trainer") if isinstance(cfg.get("trainer"), dict) else {}
    cell = cfg.get("cell")
    sweep = cfg.get("sweep") if isinstance(cfg.get("sweep"), dict) else {}
    return {
        "status": FAILED,
        "cell": cell.get("name") if isinstance(cell, dict) else str(cell),
        "task": (cfg.get("data") or {}).get("name") if isinstance(cfg.get("data"), dict) else None,
        "seed": trainer.get("seed"),
        "hparams": hparams_of(cfg),
        "cell_flags": None,
        "config": cfg,
        "run_dir": str(run_dir),
        "overrides": cfg.get("overrides", []),
        "versions": versions(),
        "git_commit": git_commit(),
        "study": sweep.get("name"),  # set by a study (+sweep=...): its name and trial index
        "trial": sweep.get("trial"),
        "requeued": requeue_count(),
    }


def requeue_count() -> int:
    """How many times the scheduler requeued this job (a time limit, `scontrol requeue`, preemption): SLURM counts
    them in SLURM_RESTART_COUNT; 0 outside SLURM. A requeued job resumes from its last epoch's checkpoint."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    except ValueError:
        return 0


def identify(record: dict, cfg: dict) -> None:
    """Validate the config and put the cell into the record: its flags, and its name (`cells.cell_label`)."""
    validate(cfg)
    record.update(cell=cell_label(cfg["cell"]), cell_flags=get_spec(cfg["cell"]).to_dict())


def new_loop() -> dict[str, Any]:
    """The epoch loop's state, as checkpoints store it (plain values only). `elapsed` is the trial's own
    clock: the seconds of training charged to it (in a pack, its share of the pack's time)."""
    return {"epoch": 0, "best": None, "bad_epochs": 0, "history": [], "elapsed": 0.0, "best_by_epoch": []}


def improves(loop: dict, objective: float) -> bool:
    """True when `objective` beats the best so far (lower is better)."""
    return loop["best"] is None or objective < loop["best"]["objective"]


def end_epoch(loop: dict, entry: dict, best: dict | None = None) -> None:
    """Book one finished epoch into the loop state: `best` is the epoch's results when `improves` said it beat
    the best so far (it resets the patience count), else None (one more epoch without improvement)."""
    if best is None:
        loop["bad_epochs"] += 1
    else:
        loop["best"], loop["bad_epochs"] = best, 0
    loop["history"].append(entry)
    loop["epoch"] = entry["epoch"]
    loop.setdefault("best_by_epoch", []).append(loop["best"]["objective"])


def stop_reason(trainer: dict, loop: dict) -> str | None:
    """Why the run stops after this epoch, or None to go on:

    * ``early_stopping``: `patience` epochs without a better validation objective;
    * ``plateau``: with `min_improvement` set, the best objective improved by less than that fraction over
      the last `patience` epochs: a run that still improves, but too slowly to matter, stops as converged
      (it is judged where it stalled, which can favour fast learners; the record says so);
    * ``time_cap``, ``epoch_cap``: the budget ran out (the record's `stopped_by` says the run was cut off)."""
    patience = trainer["patience"]
    if patience and loop["bad_epochs"] >= patience:
        return "early_stopping"
    history = loop.get("best_by_epoch") or []
    threshold = trainer["min_improvement"]
    if threshold and patience and len(history) > patience:
        before, now = history[-patience - 1], history[-1]
        if before - now < threshold * abs(before):
            return "plateau"
    if loop["elapsed"] >= (trainer["max_minutes"] or math.inf) * 60:
        return "time_cap"
    if loop["epoch"] >= trainer["epochs"]:
        return "epoch_cap"
    return None


def final_results(loop: dict, status: str, stopped_by: str | None, error: str | None, wall_seconds: float,
                  resumed_from: int | None = None) -> dict[str, Any]:
    """The record's results at the end of a run: the metrics of the best epoch and how the run ended."""
    best = loop["best"] or {}
    return {
        "status": status,
        "stopped_by": stopped_by,
        "error": error,
        "objective": best.get("objective"),
        "best_epoch": best.get("epoch"),
        "val": best.get("val", {}),
        "test": best.get("test", {}),
        "epochs_run": loop["epoch"],
        "resumed_from_epoch": resumed_from,
        "history": loop["history"],
        "wall_seconds": wall_seconds,
        "trial_seconds": loop["elapsed"],  # the time charged to this trial (in a pack, its share); the time cap's clock
    }
