"""The training entry point: config → data + model → fit with early stopping → `result.json`.

Called by the command line (`lstm-odyssey-train ...`, see cli.py) or directly: `run(cfg, run_dir)` with a
plain dict or DictConfig.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from . import checkpoints, signals, tracking
from .cells import PRESETS, get_spec
from .data import build_task
from .data.base import TaskData
from .models import SequenceModel
from .results import DIVERGED, FAILED, OK, git_commit, hparams_of, versions, write_record
from .schema import validate
from .settings import ConfigError

log = logging.getLogger("lstm_odyssey.train")
EPOCH_LOGGER = "lstm_odyssey.train.epochs"  # one line per epoch: the job's log file only, in a sweep
epoch_log = logging.getLogger(EPOCH_LOGGER)


class Diverged(RuntimeError):
    """The loss or the gradient became NaN or infinite."""


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
        lr = opt["lr"] * (1 - opt["momentum"]) if opt.get("scale_lr_by_momentum") else opt["lr"]
        return torch.optim.SGD(
            model.parameters(), lr=lr, momentum=opt["momentum"], nesterov=bool(opt.get("nesterov")) and opt["momentum"] > 0,
            weight_decay=opt.get("weight_decay", 0.0),
        )
    if name == "adam":
        return torch.optim.Adam(
            model.parameters(), lr=opt["lr"], betas=tuple(opt.get("betas", (0.9, 0.999))),
            weight_decay=opt.get("weight_decay", 0.0),
        )
    raise ValueError(f"unknown optimiser {name!r}; choose optim=sgd or optim=adam")


def evaluate(model: SequenceModel, task: TaskData, split: str, batch_size: int, device: torch.device) -> dict[str, float]:
    model.eval()
    sums: dict[str, float] = {}
    state = None
    with torch.no_grad():
        for batch in task.split(split).batches(batch_size, task.task_type):
            batch = batch.to(device)
            prediction, final = model(batch.x, batch.lengths, state)
            state = final if task.stateful else None
            for k, v in model.metric_sums(prediction, batch).items():
                sums[k] = sums.get(k, 0.0) + v
    return model.finalize_metrics(sums)


def _detach(state):
    if state is None:
        return None
    return state.detach() if isinstance(state, torch.Tensor) else tuple(s.detach() for s in state)


def train_epoch(
    model: SequenceModel, task: TaskData, optimizer: torch.optim.Optimizer, trainer: dict,
    generator: torch.Generator, device: torch.device,
) -> float:
    """One pass over the training split; returns the mean loss. Raises Diverged on NaN/inf."""
    model.train()
    total, count, state = 0.0, 0, None
    batches = task.train.batches(trainer["batch_size"], task.task_type, shuffle=not task.stateful, generator=generator)
    progress = _progress(batches, trainer, len(task.train))
    for batch in progress:
        batch = batch.to(device)
        x = batch.x
        if trainer["input_noise"] and not task.tokens:  # the paper's Gaussian input noise
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(device)
            x = x + trainer["input_noise"] * noise
        prediction, final = model(x, batch.lengths, state)
        state = _detach(final) if task.stateful else None
        loss = model.loss(prediction, batch)
        if not torch.isfinite(loss):
            raise Diverged(f"loss is {loss.item()}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), trainer["clip"] or float("inf"))
        if not torch.isfinite(norm):
            raise Diverged(f"gradient norm is {norm.item()}")
        optimizer.step()
        total += loss.item() * len(batch)
        count += len(batch)
    return total / max(count, 1)


def _progress(batches, trainer: dict, n: int):
    show = trainer.get("progress", "auto")
    if show == "auto":
        show = sys.stderr.isatty()
    if not show:
        return batches
    from tqdm import tqdm

    return tqdm(batches, total=math.ceil(n / trainer["batch_size"]), leave=False, unit="batch")


def _set_determinism(trainer: dict) -> None:
    if trainer.get("deterministic"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


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
    }


def identify(record: dict, cfg: dict) -> None:
    """Validate the config and put the cell into the record: its flags, and its name (a label the config
    gives, e.g. `name: my_cifg_np`, else the preset the flags equal, else a description of the flags)."""
    validate(cfg)
    spec = get_spec(cfg["cell"])
    label = cfg["cell"].get("name") if isinstance(cfg["cell"], dict) else None
    record.update(cell=label if label and label not in PRESETS else spec.name, cell_flags=spec.to_dict())


def run_facts(task: TaskData, model: SequenceModel, device: torch.device, backend: str) -> dict[str, Any]:
    """What the record says about a run once its task and model exist."""
    return {
        "task_type": task.task_type,
        "metric": task.metric,
        "num_parameters": model.num_parameters(),
        "recurrent_parameters": model.rnn.num_parameters(),
        "device": str(device),
        "backend": backend,
        "info": task.info,
    }


def new_loop() -> dict[str, Any]:
    """The epoch loop's state, as checkpoints store it (plain values only)."""
    return {"epoch": 0, "best": None, "bad_epochs": 0, "history": [], "elapsed": 0.0, "best_by_epoch": []}


def improves(loop: dict, objective: float) -> bool:
    """True when `objective` beats the best so far (lower is better)."""
    return loop["best"] is None or objective < loop["best"]["objective"]


def end_epoch(loop: dict, entry: dict, elapsed: float, best: dict | None = None) -> None:
    """Book one finished epoch into the loop state: `best` is the epoch's results when `improves` said it beat
    the best so far (it resets the patience count), else None (one more epoch without improvement)."""
    if best is None:
        loop["bad_epochs"] += 1
    else:
        loop["best"], loop["bad_epochs"] = best, 0
    loop["history"].append(entry)
    loop["epoch"] = entry["epoch"]
    loop["elapsed"] = elapsed
    loop.setdefault("best_by_epoch", []).append(loop["best"]["objective"])


def stop_reason(trainer: dict, loop: dict) -> str | None:
    """Why the run stops after this epoch, or None to go on:

    * ``early_stopping``: `patience` epochs without a better validation objective;
    * ``plateau``: with `min_improvement` set, the best objective improved by less than that fraction over
      the last `patience` epochs: a run that still improves, but too slowly to matter, stops as converged
      (it is judged where it stalled, which can favour fast learners; the record says so);
    * ``time_cap``, ``epoch_cap``: the budget ran out (the record's `stopped_by` says the run was cut off)."""
    patience = trainer.get("patience")
    if patience and loop["bad_epochs"] >= patience:
        return "early_stopping"
    history = loop.get("best_by_epoch") or []
    threshold = trainer.get("min_improvement")
    if threshold and patience and len(history) > patience:
        before, now = history[-patience - 1], history[-1]
        if before - now < threshold * abs(before):
            return "plateau"
    if loop["elapsed"] >= (trainer.get("max_minutes") or math.inf) * 60:
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
    }


def run(cfg: Any, run_dir: str | Path) -> dict:
    """Train one configuration in `run_dir` and write its record. Never raises for a diverged run; any
    exception, a wrong config or an impossible cell included, is recorded as `failed` and raised again."""
    cfg = to_dict(cfg)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    record = record_head(cfg, run_dir)
    tracker: tracking.Tracker | None = None
    try:
        identify(record, cfg)
        tracker = tracking.start(cfg, run_dir)
        record.update(fit(cfg, run_dir, tracker))
    except Exception as err:
        signals.reraise_if_interrupted(err)  # interrupted, not failed: no failed record, the checkpoint resumes it
        record.update(status=FAILED, error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
        record["wall_seconds"] = time.time() - started
        write_record(run_dir, record)
        if tracker is not None:
            tracker.finish(record)
        raise
    write_record(run_dir, record)
    tracker.finish(record)
    return record


def describe_error(err: BaseException) -> str:
    """One line for a failed run: a config or checkpoint problem says it all; others name their type."""
    return str(err) if isinstance(err, (ConfigError, checkpoints.CheckpointError)) else f"{type(err).__name__}: {err}"


def fit(cfg: dict, run_dir: Path, tracker: tracking.Tracker | None = None) -> dict[str, Any]:
    """The training loop with early stopping, checkpoints and resume; returns the record's results."""
    trainer = cfg["trainer"]
    tracker = tracker or tracking.NullTracker()
    _set_determinism(trainer)
    device = pick_device(trainer.get("device", "auto"))
    torch.manual_seed(trainer["seed"])
    task = build_task(**cfg["data"])
    model = build_model(cfg, task).to(device)
    optimizer = build_optimizer(cfg, model)
    generator = torch.Generator().manual_seed(trainer["seed"])
    eval_batch = trainer.get("eval_batch_size") or trainer["batch_size"]

    ckpt_dir = run_dir / checkpoints.CHECKPOINT_DIR
    hparams = hparams_of(cfg)
    state = new_loop()
    resumed_from = None
    if trainer.get("resume") and (ckpt_dir / checkpoints.LAST).exists():
        state = checkpoints.resume(ckpt_dir / checkpoints.LAST, model, optimizer, generator, device, hparams)
        resumed_from = state["epoch"]
        log.info("resuming %s from epoch %d", run_dir, state["epoch"])

    results = run_facts(task, model, device, model.rnn.select_backend())
    tracker.log_summary({"num_parameters": results["num_parameters"]})
    started = time.time() - state["elapsed"]
    status, stopped_by, error = OK, stop_reason(trainer, state), None
    while stopped_by is None:
        epoch = state["epoch"] + 1
        try:
            train_loss = train_epoch(model, task, optimizer, trainer, generator, device)
        except Diverged as err:
            status, stopped_by, error = DIVERGED, "diverged", str(err)
            log.warning("epoch %d diverged: %s", epoch, err)
            break
        val = evaluate(model, task, "val", eval_batch, device)
        entry = {"epoch": epoch, "train_loss": train_loss, **{f"val_{k}": v for k, v in val.items()}}
        objective = val[task.metric]
        if not math.isfinite(objective):
            status, stopped_by, error = DIVERGED, "diverged", f"validation {task.metric} is {objective}"
            break
        best = None
        if improves(state, objective):
            test = evaluate(model, task, "test", eval_batch, device)
            best = {"objective": objective, "epoch": epoch, "val": val, "test": test}
            checkpoints.save({"model": model.state_dict(), "epoch": epoch, "cell": get_spec(cfg["cell"]).to_dict()},
                             ckpt_dir / checkpoints.BEST)
        end_epoch(state, entry, time.time() - started, best)
        epoch_log.info(
            "epoch %d  train_loss %.4f  val_%s %.4f  best %.4f (epoch %d)",
            epoch, train_loss, task.metric, objective, state["best"]["objective"], state["best"]["epoch"],
        )
        tracker.log({**entry, "best_objective": state["best"]["objective"]}, step=epoch)
        checkpoints.save_last(ckpt_dir / checkpoints.LAST, model, optimizer, generator, device, state, hparams)
        stopped_by = stop_reason(trainer, state)

    results.update(final_results(state, status, stopped_by, error, time.time() - started, resumed_from))
    return results


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
