"""A run's checkpoints, in `<run_dir>/checkpoints/`: `last.pt`, everything a resumed run needs (model,
optimiser, random streams, the epoch loop's state, the hyperparameters), and `best.pt`, the best epoch's model.
A pack writes the same layout for all its trials to `pack.pt` (engine.py writes and reads it; here is its
format and its checks).

Written atomically (files.py); read with weights_only=True, so a file that holds other Python objects is
refused before any of it runs; a run resumes only with the hyperparameters it was trained with (but for
those that only say when to stop). Every problem is a one-line `CheckpointError` that says how to start afresh.
"""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from .files import atomic_write
from .schema import with_defaults

log = logging.getLogger("lstm_odyssey.train")

CHECKPOINT_DIR = "checkpoints"
LAST, BEST = "last.pt", "best.pt"
# Hyperparameters a resumed run may change: they only say when to stop, not what any epoch computes.
RESUMABLE_CHANGES = frozenset({"trainer.epochs", "trainer.max_minutes"})


class CheckpointError(RuntimeError):
    """A checkpoint cannot be resumed from: unsafe, unreadable, or from other hyperparameters."""


def save(obj: dict, path: Path) -> None:
    """Write a checkpoint (tensors and plain values) atomically."""
    atomic_write(path, lambda fh: torch.save(obj, fh))


def load_checkpoint(path: Path, device: torch.device) -> dict:
    """A checkpoint of tensors and plain values, read with weights_only=True: a file that holds other Python
    objects (which unpickling would let run code) is refused, and nothing of it runs."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        what = f"it refers to {found.group(1)}" if found else "it is not a plain checkpoint"
        raise CheckpointError(
            f"{path} is not loaded: {what}, and loading it could run code (a checkpoint holds only tensors and "
            "plain values); delete it, or rerun without trainer.resume=true, to start afresh"
        ) from None
    except (OSError, RuntimeError, EOFError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} is unreadable ({first}); delete it to start afresh") from None
    ckpt = upgrade(ckpt) if isinstance(ckpt, dict) else ckpt
    if not isinstance(ckpt, dict) or not {"run_dirs", "active", "model", "optimizer", "loops", "hparams"} <= set(ckpt):
        raise CheckpointError(f"{path} is not a checkpoint of lstm-odyssey; delete it to start afresh")
    return ckpt


def upgrade(ckpt: dict) -> dict:
    """A checkpoint of an earlier release in today's layout: a run's `last.pt` (one `loop`, one `generator`)
    and a pack's `pack.pt` (`params`, no hyperparameters) resume as they are."""
    if {"model", "optimizer", "loop"} <= set(ckpt):
        loop = ckpt["loop"]
        return {"run_dirs": None, "active": [0], "model": ckpt["model"], "optimizer": ckpt["optimizer"],
                "generators": [ckpt["generator"]], "loops": [loop], "hparams": [ckpt.get("hparams")],
                "elapsed": loop.get("elapsed", 0.0), "torch_rng": ckpt["torch_rng"], "cuda_rng": ckpt.get("cuda_rng")}
    if {"params", "optimizer", "loops", "active"} <= set(ckpt):
        return {**{k: v for k, v in ckpt.items() if k != "params"}, "model": ckpt["params"],
                "hparams": [None] * len(ckpt["active"])}
    return ckpt


def check_resumable(saved: dict | None, current: dict, path: Path) -> None:
    """Refuse to continue a run with hyperparameters other than those its checkpoint was trained with."""
    if saved is None:
        log.warning("%s records no hyperparameters (an older checkpoint); resuming without checking them", path)
        return
    missing = object()
    saved, current = with_defaults(saved, current), with_defaults(current, saved)  # a key one side lacks: its default
    changed = sorted(k for k in set(saved) | set(current)
                     if k not in RESUMABLE_CHANGES and saved.get(k, missing) != current.get(k, missing))
    if changed:
        def show(value: Any) -> str:
            return "(unset)" if value is missing else repr(value)

        diffs = ", ".join(f"{k} {show(saved.get(k, missing))} -> {show(current.get(k, missing))}" for k in changed)
        raise CheckpointError(
            f"{path} was trained with other hyperparameters ({diffs}); rerun without trainer.resume=true, "
            "or in a new directory, to start afresh"
        )
