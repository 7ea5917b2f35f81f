"""The training loop, once, for K >= 1 trials side by side: a single run is K = 1, a pack K > 1.

The loop owns each trial's life cycle (lifecycle.py): its batches and input noise from its own generator,
divergence, validation and the best epoch (`best.pt`), the stopping rules and its own clock for the time cap,
the tracker, the checkpoint and resume, and the record it writes when it leaves. A *runner* holds the
model(s) and optimiser(s) and is asked only to compute losses and gradients, to step, to drop trials, to
evaluate, and for its state: `train.SingleRunner` (one model, the fastest backend) and
`packed.fit.PackRunner` (K models in one packed model).

Time cap: a trial's clock (`loop["elapsed"]`) is charged the time of every step and evaluation divided by
the trials training at that moment, so a trial of a pack is charged its share of the pack's time, and it
stops by `trainer.max_minutes` at the epoch where its own run would if the pack cost the sum of its runs.

Checkpoint (`last.pt` of a run, `pack.pt` of a pack; tensors and plain values only): every trial that ended
its last epoch without diverging, so a run that stopped can be continued with a larger `trainer.epochs`; on
resume, a trial whose rules still stop it keeps the record it wrote.
"""

from __future__ import annotations

import logging
import math
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from . import checkpoints, signals, tracking
from .cells import get_spec
from .cells.ops import kernel_settings
from .data.base import Batch, TaskData
from .jobstate import finished
from .lifecycle import end_epoch, final_results, identify, improves, new_loop, stop_reason
from .results import DIVERGED, FAILED, OK, hparams_of, read_record, write_record

log = logging.getLogger("lstm_odyssey.train")
EPOCH_LOGGER = "lstm_odyssey.train.epochs"  # one line per epoch: the job's log file only, in a sweep
epoch_log = logging.getLogger(EPOCH_LOGGER)
clock = time.monotonic  # every duration the loop measures (tests replace it)


class Runner(Protocol):
    """What the loop asks of the model side; trial j is the j-th trial still training."""

    backend: str  # the record's `backend`

    def train(self) -> None: ...

    def forward_backward(self, xs: Sequence[torch.Tensor], batches: Sequence[Batch], state: Any
                         ) -> tuple[list[float], list[float], Any]:
        """Each trial's loss and gradient norm (after clipping to its `trainer.clip`) and the final state;
        a trial whose loss is not finite gets no gradient (its norm is nan)."""

    def step(self) -> None: ...

    def select(self, keep: Sequence[int]) -> None:
        """Only the trials at `keep` go on (the others' weights and optimiser state are dropped)."""

    def evaluate(self, split: str, index: Sequence[int]) -> list[dict[str, float]]: ...

    def weights(self, j: int) -> dict[str, torch.Tensor]:
        """Trial j's weights as its own `SequenceModel.state_dict()` (what `best.pt` holds)."""

    def state_dict(self) -> dict[str, Any]:
        """{"model": ..., "optimizer": ...} of the trials still training."""

    def load_state_dict(self, saved: dict[str, Any]) -> None: ...


@dataclass
class Setup:
    """What a runner factory builds, in the order a run builds it: the task, the device, each trial's
    model (seeded with its own seed) and the runner that trains them."""

    task: TaskData
    device: torch.device
    models: list
    runner: Runner


@dataclass
class Trial:
    """One trial: its config, record, random stream, loop state and tracker."""

    position: int
    cfg: dict
    run_dir: Path
    record: dict
    generator: torch.Generator
    tracker: tracking.Tracker = field(default_factory=tracking.NullTracker)
    loop: dict = field(default_factory=new_loop)
    resumed_from: int | None = None  # the epoch a resumed trial continued from
    batches: Any = None  # this epoch's batch iterator
    total: float = 0.0  # this epoch's summed training loss
    count: int = 0

    @property
    def trainer(self) -> dict:
        return self.cfg["trainer"]


def train_trials(cfgs: Sequence[dict], run_dirs: Sequence[Path], heads: Sequence[dict], build, checkpoint: Path
                 ) -> list[dict]:
    """Train the trials (resolved configs, their run directories and record heads) with the runner that
    `build(cfgs) -> Setup` makes; returns their records in order. An exception records every trial still
    training as failed and is raised again; an interrupt records nothing (the checkpoint resumes it)."""
    started, engine = clock(), None
    try:
        for head, cfg in zip(heads, cfgs):
            identify(head, cfg)
        with kernel_settings(**(cfgs[0].get("kernels") or {})):  # a manifest older than `kernels` has none
            engine = Engine(cfgs, run_dirs, heads, build(cfgs), checkpoint)
            return engine.run()
    except Exception as err:
        signals.reraise_if_interrupted(err)
        if engine is not None:
            engine.fail(err)
        else:
            for cfg, head, run_dir in zip(cfgs, heads, run_dirs):
                if not (_trainer_of(cfg).get("resume") and finished(run_dir)):  # a resumed trial that had left keeps its record
                    record_failure(cfg, run_dir, failed_record(head, err, clock() - started))
        raise


class Engine:
    """The trials still training, their runner, and the epoch loop over them."""

    def __init__(self, cfgs: Sequence[dict], run_dirs: Sequence[Path], heads: Sequence[dict], setup: Setup,
                 checkpoint: Path) -> None:
        self.task, self.device, self.runner = setup.task, setup.device, setup.runner
        self.trials = [Trial(k, cfg, Path(d), {**head, **_facts(setup, m)}, torch.Generator().manual_seed(cfg["trainer"]["seed"]))
                       for k, (cfg, d, head, m) in enumerate(zip(cfgs, run_dirs, heads, setup.models))]
        self.active = list(self.trials)
        self.checkpoint, self.run_dirs = checkpoint, [str(d) for d in run_dirs]
        self.records: dict[int, dict] = {}
        self.elapsed = 0.0  # wall seconds before this process (a resumed run's earlier ones)
        self.started = self.mark = clock()

    # -- the life cycle -------------------------------------------------------------------
    def run(self) -> list[dict]:
        """Train until every trial has left; returns the records in trial order."""
        if all(t.trainer["resume"] for t in self.trials):
            self.resume()
        for t in self.active:
            t.tracker = tracking.start(t.cfg, t.run_dir)
            t.tracker.log_summary({"num_parameters": t.record["num_parameters"]})
        self.started, self.mark = clock() - self.elapsed, clock()
        self.leave([(t, OK, reason, None) for t in self.active if (reason := stop_reason(t.trainer, t.loop))])
        while self.active:
            self.train_epoch()
            if self.active:
                self.end_epoch()
        return [self.records[t.position] for t in self.trials]

    def leave(self, exits: Sequence[tuple[Trial, str, str, str | None]]) -> list[int]:
        """Trials leave as (trial, status, stopped_by, error): each writes its record and the runner drops it.
        Returns the positions in the old active list of the trials that stay."""
        for t, status, stopped_by, error in exits:
            record = {**t.record, **final_results(t.loop, status, stopped_by, error, clock() - self.started, t.resumed_from)}
            write_record(t.run_dir, record)
            t.tracker.finish(record)
            self.records[t.position] = record
        gone = {t.position for t, *_ in exits}
        keep = [j for j, t in enumerate(self.active) if t.position not in gone]
        if gone:
            self.runner.select(keep)
        self.active = [self.active[j] for j in keep]
        return keep

    def fail(self, err: BaseException) -> None:
        """An exception: every trial still training records it as `failed`."""
        for t in self.active:
            record_failure(t.cfg, t.run_dir, failed_record(t.record, err, clock() - self.started), t.tracker)

    def charge(self) -> None:
        """Charge the time since the last charge to the trials training now, in equal shares."""
        now = clock()
        share = (now - self.mark) / max(len(self.active), 1)
        for t in self.active:
            t.loop["elapsed"] += share
        self.mark = now

    # -- one epoch ------------------------------------------------------------------------
    def train_epoch(self) -> None:
        """One pass over the training split for every trial; a trial whose loss or gradient norm is not
        finite leaves as diverged, and the others go on."""
        task, trainer = self.task, self.trials[0].trainer
        self.runner.train()
        for t in self.active:
            t.total, t.count = 0.0, 0
            t.batches = task.train.batches(trainer["batch_size"], task.task_type, shuffle=not task.stateful, generator=t.generator)
        state, bar = None, _progress_bar(trainer, math.ceil(len(task.train) / trainer["batch_size"]))
        while self.active:
            batches = [next(t.batches, None) for t in self.active]
            if batches[0] is None:
                break
            batches = [b.to(self.device) for b in batches]
            xs = [self.noisy(t, b.x) for t, b in zip(self.active, batches)]
            losses, norms, final = self.runner.forward_backward(xs, batches, state)
            exits = []
            for t, batch, loss, norm in zip(self.active, batches, losses, norms):
                error = f"loss is {loss}" if not math.isfinite(loss) else None if math.isfinite(norm) else f"gradient norm is {norm}"
                if error:
                    log.warning("%s: epoch %d diverged: %s", t.run_dir, t.loop["epoch"] + 1, error)
                    exits.append((t, DIVERGED, "diverged", error))
                else:
                    t.total += loss * len(batch)
                    t.count += len(batch)
            if exits:
                keep = self.leave(exits)
                final = _select_state(final, keep) if keep else None
            if self.active:
                self.runner.step()
            self.charge()
            state = _detach(final) if task.stateful else None
            if bar is not None:
                bar.update()
        if bar is not None:
            bar.close()

    def noisy(self, t: Trial, x: torch.Tensor) -> torch.Tensor:
        """The paper's Gaussian input noise, drawn from the trial's own generator."""
        if not t.trainer["input_noise"] or self.task.tokens:
            return x
        noise = torch.randn(x.shape, generator=t.generator, dtype=x.dtype).to(self.device)
        return x + t.trainer["input_noise"] * noise

    def end_epoch(self) -> None:
        """Validation, the best epoch, history and the stopping rules, per trial; the checkpoint; then the
        trials that stop leave."""
        metric, trials = self.task.metric, list(self.active)
        vals = self.runner.evaluate("val", range(len(trials)))
        diverged, improved, entries = [], [], {}
        for j, (t, val) in enumerate(zip(trials, vals)):
            if not math.isfinite(val[metric]):
                diverged.append((t, DIVERGED, "diverged", f"validation {metric} is {val[metric]}"))
                continue
            entries[j] = {"epoch": t.loop["epoch"] + 1, "train_loss": t.total / max(t.count, 1),
                          **{f"val_{k}": v for k, v in val.items()}}
            if improves(t.loop, val[metric]):
                improved.append(j)
        bests = {j: self.save_best(trials[j], j, entries[j]["epoch"], vals[j], test)
                 for j, test in zip(improved, self.runner.evaluate("test", improved))}
        self.charge()
        stopping = []
        for j, entry in entries.items():
            t = trials[j]
            end_epoch(t.loop, entry, bests.get(j))
            self.log_epoch(t, entry, vals[j][metric])
            if reason := stop_reason(t.trainer, t.loop):
                stopping.append((t, OK, reason, None))
        self.leave(diverged)
        self.save()
        self.leave(stopping)

    def save_best(self, t: Trial, j: int, epoch: int, val: dict, test: dict) -> dict:
        """`best.pt` in the trial's own checkpoints (its weights in the single model's layout)."""
        checkpoints.save({"model": self.runner.weights(j), "epoch": epoch, "cell": get_spec(t.cfg["cell"]).to_dict()},
                         t.run_dir / checkpoints.CHECKPOINT_DIR / checkpoints.BEST)
        return {"objective": val[self.task.metric], "epoch": epoch, "val": val, "test": test}

    def log_epoch(self, t: Trial, entry: dict, objective: float) -> None:
        best = t.loop["best"]
        where = f"{t.run_dir}: " if len(self.trials) > 1 else ""
        epoch_log.info("%sepoch %d  train_loss %.4f  val_%s %.4f  best %.4f (epoch %d)", where, entry["epoch"],
                       entry["train_loss"], self.task.metric, objective, best["objective"], best["epoch"])
        t.tracker.log({**entry, "best_objective": best["objective"]}, step=entry["epoch"])

    # -- checkpoint -----------------------------------------------------------------------
    def save(self) -> None:
        """The trials still training after this epoch: all a resumed run needs to go on as if never stopped."""
        checkpoints.save({
            "run_dirs": self.run_dirs,
            "active": [t.position for t in self.active],
            **self.runner.state_dict(),
            "generators": [t.generator.get_state() for t in self.active],
            "loops": [t.loop for t in self.active],
            "hparams": [hparams_of(t.cfg) for t in self.active],
            "elapsed": clock() - self.started,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
        }, self.checkpoint)

    def resume(self) -> None:
        """Go on from the checkpoint when it belongs to these trials; trials that had left keep their records."""
        path = self.checkpoint
        if not path.exists():
            return
        ckpt = checkpoints.load_checkpoint(path, self.device)
        if len(self.trials) > 1 and ckpt["run_dirs"] != self.run_dirs:
            log.warning("%s belongs to another pack (%d trials); starting this pack from scratch", path, len(ckpt["run_dirs"]))
            return
        saved = [self.trials[k] for k in ckpt["active"]]
        if all(hparams is None for hparams in ckpt["hparams"]):
            log.warning("%s records no hyperparameters (an older checkpoint); resuming without checking them", path)
        for t, hparams in zip(saved, ckpt["hparams"]):
            if hparams is not None:
                checkpoints.check_resumable(hparams, hparams_of(t.cfg), path)
        left = [t for t in self.trials if t not in saved]
        if not all(finished(t.run_dir) for t in left):
            log.warning("%s: a trial that had left has lost its record; starting from scratch", path)
            return
        self.runner.select(ckpt["active"])
        try:
            self.runner.load_state_dict(ckpt)
        except (RuntimeError, ValueError, KeyError) as err:
            first = str(err).strip().splitlines()[0]
            raise checkpoints.CheckpointError(f"{path} does not fit this model ({first}); delete it to start afresh") from None
        self.active = saved
        for t, generator, loop in zip(saved, ckpt["generators"], ckpt["loops"]):
            t.generator.set_state(generator)
            t.loop, t.resumed_from = loop, loop["epoch"]
        torch.set_rng_state(ckpt["torch_rng"])
        if self.device.type == "cuda" and ckpt.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ckpt["cuda_rng"], self.device)
        self.elapsed = ckpt["elapsed"]
        for t in self.trials:
            if t not in saved or (finished(t.run_dir) and stop_reason(t.trainer, t.loop)):
                self.records[t.position] = read_record(t.run_dir)
        self.active = [t for t in saved if t.position not in self.records]
        if len(self.active) < len(saved):
            self.runner.select([j for j, t in enumerate(saved) if t in self.active])
        log.info("resuming %s from epoch %d (%d of %d trials)", path, max([t.loop["epoch"] for t in self.active] or [0]),
                 len(self.active), len(self.trials))


def failed_record(head: dict, err: BaseException, wall_seconds: float) -> dict:
    return {**head, "status": FAILED, "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc(),
            "wall_seconds": wall_seconds}


def record_failure(cfg: dict, run_dir: Path, record: dict, tracker: tracking.Tracker | None = None) -> None:
    """Write a failed record and close the trial's tracker run with it (one is opened if the trial failed
    before it had one, so that the dashboard shows the failure too)."""
    write_record(run_dir, record)
    if tracker is None or isinstance(tracker, tracking.NullTracker):
        try:
            tracker = tracking.start(cfg, run_dir)
        except ValueError:  # a logger the config gets wrong: that error is in the record already
            return
    tracker.finish(record)


def _facts(setup: Setup, model) -> dict[str, Any]:
    """What the record says about a trial once its task and model exist."""
    return {"task_type": setup.task.task_type, "metric": setup.task.metric, "num_parameters": model.num_parameters(),
            "recurrent_parameters": model.rnn.num_parameters(), "device": str(setup.device),
            "backend": setup.runner.backend, "info": setup.task.info}


def _trainer_of(cfg: Any) -> dict:
    return cfg.get("trainer") if isinstance(cfg, dict) and isinstance(cfg.get("trainer"), dict) else {}


def _progress_bar(trainer: dict, total: int):
    show = trainer["progress"]
    if show == "auto":
        show = sys.stderr.isatty()
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, leave=False, unit="batch")


def _detach(state):
    if state is None:
        return None
    return state.detach() if isinstance(state, torch.Tensor) else tuple(s.detach() for s in state)


def _select_state(state, keep: list[int]):
    """The carried state (trial axis first) of the trials that stay."""
    if state is None:
        return None
    return state[keep] if isinstance(state, torch.Tensor) else tuple(s[keep] for s in state)
