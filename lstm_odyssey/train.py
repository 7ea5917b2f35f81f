"""A single run: config → data + model → the training loop (engine.py) → `result.json`.

Called by the command line (`lstm-odyssey-train ...`, see cli.py) or directly: `run(cfg, run_dir)` with a
plain dict or DictConfig. Here live the builders a run and a pack share (device, model, optimiser) and the
runner of one model; the loop, the stopping rules and the record are the engine's.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from . import checkpoints
from .cells import get_spec
from .data import build_task
from .data.base import Batch, TaskData
from .engine import EPOCH_LOGGER, Setup, train_trials
from .lifecycle import record_head
from .models import SequenceModel
from .settings import ConfigError

__all__ = ["EPOCH_LOGGER", "SingleRunner", "build_model", "build_optimizer", "describe", "evaluate", "evaluate_trials", "run"]


def to_dict(cfg: Any) -> dict:
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except ImportError:  # pragma: no cover - hydra is a dependency
        pass
    return dict(cfg)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"trainer.device={name} but CUDA is not available here; use trainer.device=auto or cpu")
    return torch.device(name)


def build_model(cfg: dict, task: TaskData) -> SequenceModel:
    model_cfg = dict(cfg["model"])
    return SequenceModel(
        task.task_type, task.input_size, task.output_size, cell=get_spec(cfg["cell"]), tokens=task.tokens,
        tolerance=task.tolerance, **model_cfg,
    )


def build_optimizer(cfg: dict, model: torch.nn.Module) -> torch.optim.Optimizer:
    opt = dict(cfg["optim"])
    name = opt.pop("name")
    if name == "sgd":
        lr = opt["lr"] * (1 - opt["momentum"]) if opt["scale_lr_by_momentum"] else opt["lr"]
        return torch.optim.SGD(
            model.parameters(), lr=lr, momentum=opt["momentum"], nesterov=bool(opt["nesterov"]) and opt["momentum"] > 0,
            weight_decay=opt["weight_decay"],
        )
    if name == "adam":
        return torch.optim.Adam(
            model.parameters(), lr=opt["lr"], betas=tuple(opt["betas"]),
            weight_decay=opt["weight_decay"],
        )
    raise ValueError(f"unknown optimiser {name!r}; choose optim=sgd or optim=adam")


def evaluate(model: SequenceModel, task: TaskData, split: str, batch_size: int, device: torch.device) -> dict[str, float]:
    """The metrics of `model` on a split (`evaluate_trials` of one model)."""
    model.eval()

    def forward(batch: Batch, state: Any) -> tuple[list[torch.Tensor], Any]:
        prediction, final = model(batch.x, batch.lengths, state)
        return [prediction], final

    return evaluate_trials(forward, model, task, split, batch_size, device, 1)[0]


def evaluate_trials(forward: Callable[[Batch, Any], tuple[Sequence[torch.Tensor], Any]], metrics: SequenceModel,
                    task: TaskData, split: str, batch_size: int, device: torch.device, trials: int
                    ) -> list[dict[str, float]]:
    """The metrics of each of `trials` predictions `forward` makes per batch, summed over the split's batches
    and then finalised by `metrics` (a model of the task's type); a stateful task carries its state across
    batches. A single run and a pack both evaluate through here."""
    sums: list[dict[str, float]] = [{} for _ in range(trials)]
    state = None
    with torch.no_grad():
        for batch in task.split(split).batches(batch_size, task.task_type):
            batch = batch.to(device)
            predictions, final = forward(batch, state)
            state = final if task.stateful else None
            for total, prediction in zip(sums, predictions, strict=True):
                for k, v in metrics.metric_sums(prediction, batch).items():
                    total[k] = total.get(k, 0.0) + v
    return [metrics.finalize_metrics(total) for total in sums]


def set_determinism(trainer: dict) -> None:
    if trainer["deterministic"]:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


class SingleRunner:
    """One `SequenceModel` and its torch optimiser, on the fastest backend the model selects."""

    def __init__(self, cfg: dict, task: TaskData, model: SequenceModel, device: torch.device) -> None:
        self.task, self.model, self.device = task, model.to(device), device
        self.optimizer = build_optimizer(cfg, self.model)
        self.clip = cfg["trainer"]["clip"] or math.inf
        self.eval_batch = cfg["trainer"]["eval_batch_size"] or cfg["trainer"]["batch_size"]
        self.backend = self.model.rnn.select_backend()

    def train(self) -> None:
        self.model.train()

    def forward_backward(self, xs: list[torch.Tensor], batches: list[Batch], state: Any) -> tuple[list[float], list[float], Any]:
        (x,), (batch,) = xs, batches
        prediction, final = self.model(x, batch.lengths, state)
        loss = self.model.loss(prediction, batch)
        value = loss.item()
        if not math.isfinite(value):
            return [value], [math.nan], final
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return [value], [torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip).item()], final

    def step(self) -> None:
        self.optimizer.step()

    def select(self, keep: list[int]) -> None:
        pass  # one trial: when it leaves, the loop ends

    def evaluate(self, split: str, index) -> list[dict[str, float]]:
        return [evaluate(self.model, self.task, split, self.eval_batch, self.device) for _ in index]

    def weights(self, j: int) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])


def single_setup(cfgs: list[dict]) -> Setup:
    """Device, seed, task, model and runner of a run, in this order (a pack replays it per trial)."""
    (cfg,) = cfgs
    set_determinism(cfg["trainer"])
    device = pick_device(cfg["trainer"]["device"])
    torch.manual_seed(cfg["trainer"]["seed"])
    task = build_task(**cfg["data"])
    model = build_model(cfg, task)
    return Setup(task, device, [model], SingleRunner(cfg, task, model, device))


def run(cfg: Any, run_dir: str | Path) -> dict:
    """Train one configuration in `run_dir` and write its record. Never raises for a diverged run; any
    exception, a wrong config or an impossible cell included, is recorded as `failed` and raised again."""
    cfg = to_dict(cfg)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = run_dir / checkpoints.CHECKPOINT_DIR / checkpoints.LAST
    return train_trials([cfg], [run_dir], [record_head(cfg, run_dir)], single_setup, checkpoint)[0]


def describe_error(err: BaseException) -> str:
    """One line for a failed run: a config or checkpoint problem says it all; others name their type."""
    return str(err) if isinstance(err, (ConfigError, checkpoints.CheckpointError)) else f"{type(err).__name__}: {err}"


def describe(record: dict) -> str:
    """One line for people: what ran, how it ended, the test metrics next to the task's trivial baseline."""
    test = ", ".join(f"{k} {v:.4g}" for k, v in (record.get("test") or {}).items())
    baselines = ", ".join(
        f"{k} {v:.4g}" for k, v in (record.get("info") or {}).items() if k.endswith("_baseline") and isinstance(v, float)
    )
    line = f"{record['status']}: {record['cell']} on {record['task']} after {record.get('epochs_run')} epochs"
    line += f" ({record.get('stopped_by')}), best epoch {record.get('best_epoch')}: test {test or 'n/a'}"
    return line + (f"; trivial baseline {baselines}" if baselines else "")


if __name__ == "__main__":
    sys.exit("the command line moved: run `lstm-odyssey-train ...` or `python -m lstm_odyssey.cli ...`")
