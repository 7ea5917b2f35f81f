"""Train a pack: the trials of one grid point side by side in one process, each as its own single run would.

API (what the sweeper calls)::

    records = fit_pack([(cfg_0, run_dir_0), (cfg_1, run_dir_1), ...], pack_id="...", pack_dir=...)

* Each `cfg_k` is a trial's resolved run config (the dict `train.run` takes; a DictConfig is resolved), and
  `run_dir_k` its own job directory. The trials must share everything but the per-trial keys (`plan.PER_TRIAL_KEYS`:
  the optimiser's hyperparameters, seed, input noise, clipping, patience, epochs, time cap, hidden size,
  forget bias); `plan.check_packable` says which key differs otherwise, `plan.pack_key(cfg)` is what jobs
  must share to be packed together, and `plan.plan_packs` groups a grid point's trials into packs.
* Returns the K records in the order given; each is also written to `run_dir_k/result.json` with exactly
  the keys of a single run plus `pack` = {id, width, position}. A trial writes its record when it leaves
  the pack (early stopping, divergence, its epoch or time cap), so a sweeper reading records sees it then.
* Trial k reproduces `train.run(cfg_k, run_dir_k)`: the initial weights of `train.build_model` after
  `torch.manual_seed(seed_k)`, the batch order and input noise of one `torch.Generator` seeded with seed_k,
  the same epoch loop, early stopping, divergence rules and record; `best.pt` lands in the trial's own
  `checkpoints/`. Results equal a single run's up to float rounding (bmm instead of mm); on the CPU a pack
  is bit-reproducible.
* Per epoch the pack writes `pack_dir/pack.pt` (default: the first trial's `checkpoints/`; tensors and
  plain types only). With `trainer.resume=true` a killed pack resumes from its last epoch and reaches the
  same records as an uninterrupted one; trials that already left keep their records. A checkpoint of a
  different set of run directories is ignored (the pack starts over).
* An exception records every trial still in the pack as `failed` (error and traceback) and is raised again.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import checkpoints, signals, tracking, train
from ..cells import get_spec
from ..data import build_task
from ..data.base import TaskData
from ..models import SequenceModel
from ..results import DIVERGED, FAILED, OK, read_record, write_record
from .model import PackedModel, stack_batches, template_for
from .optim import PackedOptimizer, clip_grad_norms_
from .plan import check_packable

log = logging.getLogger("lstm_odyssey.packed")

BACKENDS = {"fused": "packed_fused", "vmap": "packed_loop"}  # the record's `backend` for each PackedModel path
CHECKPOINT = "pack.pt"


@dataclass
class Trial:
    """One trial of the pack: its config, its random stream and the loop state of `train.fit`."""

    position: int
    cfg: dict
    run_dir: Path
    record: dict
    generator: torch.Generator
    results: dict
    tracker: tracking.Tracker = field(default_factory=tracking.NullTracker)
    loop: dict = field(default_factory=train.new_loop)
    batches: Any = None  # this epoch's batch iterator
    total: float = 0.0  # this epoch's summed training loss
    count: int = 0
    resumed_from: int | None = None  # the epoch a resumed pack continued this trial from

    @property
    def trainer(self) -> dict:
        return self.cfg["trainer"]


def initial_models(cfgs: Sequence[dict], task: TaskData | None = None) -> tuple[TaskData, list[SequenceModel]]:
    """The task and each trial's model as `train.fit` builds them: seed, task, model. The task is built once
    unless building it draws from torch's global generator (then again per trial, to replay the draws).
    A given `task` (benchmarks) is used as it is."""
    draws, models = task is None, []
    for cfg in cfgs:
        torch.manual_seed(cfg["trainer"]["seed"])
        if draws:
            before = torch.get_rng_state()
            task = build_task(**cfg["data"])
            draws = not torch.equal(before, torch.get_rng_state())
        models.append(train.build_model(cfg, task))
    return task, models


class Pack:
    """The trials still training, their packed model and optimiser, and the epoch loop over them."""

    def __init__(
        self, cfgs: Sequence[dict], run_dirs: Sequence[Path], heads: Sequence[dict], pack_dir: Path,
        task: TaskData | None = None, path: str = "fused",
    ) -> None:
        trainer = cfgs[0]["trainer"]
        train._set_determinism(trainer)
        self.device = train.pick_device(trainer.get("device", "auto"))
        self.task, models = initial_models(cfgs, task)
        template = template_for(cfgs[0], self.task, max(m.rnn.hidden_size for m in models))
        self.model = PackedModel(template, models, path).to(self.device)
        self.optimizer = PackedOptimizer.from_torch([train.build_optimizer(c, m) for c, m in zip(cfgs, models)])
        self.pack_dir, self.run_dirs = pack_dir, [str(d) for d in run_dirs]
        self.eval_batch = trainer.get("eval_batch_size") or trainer["batch_size"]
        self.trials = [
            Trial(k, cfg, Path(run_dir), head, torch.Generator().manual_seed(cfg["trainer"]["seed"]),
                  train.run_facts(self.task, m, self.device, BACKENDS[self.model.path]))
            for k, (cfg, run_dir, head, m) in enumerate(zip(cfgs, run_dirs, heads, models))
        ]
        self.active = list(self.trials)
        self.records: dict[int, dict] = {}
        self.elapsed = 0.0
        self.started = time.time()

    # -- the life cycle -------------------------------------------------------------------
    def run(self) -> list[dict]:
        """Train until every trial has left; returns the records in trial order."""
        if all(t.trainer.get("resume") for t in self.trials):
            self.resume()
        for t in self.active:
            t.tracker = tracking.start(t.cfg, t.run_dir)
            t.tracker.log_summary({"num_parameters": t.results["num_parameters"]})
        self.started = time.time() - self.elapsed
        self.leave([(t, OK, reason, None) for t in self.active if (reason := train.stop_reason(t.trainer, t.loop))])
        while self.active:
            self.train_epoch()
            if self.active:
                self.end_epoch()
        return [self.records[t.position] for t in self.trials]

    def leave(self, exits: Sequence[tuple[Trial, str, str, str | None]]) -> list[int]:
        """Trials leave the pack as (trial, status, stopped_by, error): each writes its record and its slice
        is removed. Returns the positions in the old active list of the trials that stay."""
        for t, status, stopped_by, error in exits:
            t.results.update(train.final_results(t.loop, status, stopped_by, error, time.time() - self.started,
                                                 t.resumed_from))
            record = {**t.record, **t.results}
            write_record(t.run_dir, record)
            t.tracker.finish(record)
            self.records[t.position] = record
        gone = {t.position for t, *_ in exits}
        keep = [j for j, t in enumerate(self.active) if t.position not in gone]
        if gone:
            self.model.select(keep)
            self.optimizer.select(keep)
        self.active = [self.active[j] for j in keep]
        return keep

    def fail(self, err: BaseException) -> None:
        """An exception: every trial still in the pack records it as `failed`."""
        for t in self.active:
            record = {**t.record, "status": FAILED, "error": f"{type(err).__name__}: {err}",
                      "traceback": traceback.format_exc(), "wall_seconds": time.time() - self.started}
            write_record(t.run_dir, record)
            t.tracker.finish(record)

    # -- one epoch ------------------------------------------------------------------------
    def train_epoch(self) -> None:
        """`train.train_epoch` for every trial at once; a trial whose loss or gradient norm is not finite
        leaves as diverged, and the others go on."""
        task, model = self.task, self.model
        model.train()
        for t in self.active:
            t.total, t.count = 0.0, 0
            t.batches = task.train.batches(t.trainer["batch_size"], task.task_type, shuffle=not task.stateful, generator=t.generator)
        state = None
        while self.active:
            batches = [next(t.batches, None) for t in self.active]
            if batches[0] is None:
                break
            batches = [b.to(self.device) for b in batches]
            xs = []
            for t, batch in zip(self.active, batches):
                x = batch.x
                if t.trainer["input_noise"] and not task.tokens:  # the paper's Gaussian input noise
                    noise = torch.randn(x.shape, generator=t.generator, dtype=x.dtype).to(self.device)
                    x = x + t.trainer["input_noise"] * noise
                xs.append(x)
            prediction, final = model(*stack_batches(batches, xs), state)
            losses = model.losses(prediction, batches)
            values = losses.tolist()
            finite = [math.isfinite(v) for v in values]
            for p in model.params.values():
                p.grad = None
            if any(finite):
                losses[torch.tensor(finite)].sum().backward()
            model.mask_gradients_()
            max_norms = torch.tensor([t.trainer["clip"] or math.inf for t in self.active], dtype=torch.float64)
            norms = clip_grad_norms_(model.params, max_norms).tolist()
            exits = []
            for t, batch, value, ok, norm in zip(self.active, batches, values, finite, norms):
                error = f"loss is {value}" if not ok else None if math.isfinite(norm) else f"gradient norm is {norm}"
                if error:
                    log.warning("%s: epoch %d diverged: %s", t.run_dir, t.loop["epoch"] + 1, error)
                    exits.append((t, DIVERGED, "diverged", error))
                else:
                    t.total += value * len(batch)
                    t.count += len(batch)
            if exits:
                keep = self.leave(exits)
                final = _select_state(final, keep) if keep else None
            if not self.active:
                break
            self.optimizer.step(model.params, model.masks)
            state = _detach(final) if task.stateful else None

    def end_epoch(self) -> None:
        """Validation, best state, history and the stopping rules of `train.fit`, per trial; then the
        trials that stop leave and the pack writes its checkpoint."""
        metric = self.task.metric
        trials = list(self.active)
        vals = self.evaluate("val", range(len(trials)))
        exits, improved, entries = [], [], {}
        for j, (t, val) in enumerate(zip(trials, vals)):
            epoch = t.loop["epoch"] + 1
            objective = val[metric]
            if not math.isfinite(objective):
                exits.append((t, DIVERGED, "diverged", f"validation {metric} is {objective}"))
                continue
            entries[j] = {"epoch": epoch, "train_loss": t.total / max(t.count, 1), **{f"val_{k}": v for k, v in val.items()}}
            if train.improves(t.loop, objective):
                improved.append(j)
        bests = {}
        for j, test in zip(improved, self.evaluate("test", improved)):
            t, epoch = trials[j], entries[j]["epoch"]
            bests[j] = {"objective": vals[j][metric], "epoch": epoch, "val": vals[j], "test": test}
            cell = get_spec(t.cfg["cell"]).to_dict()
            checkpoints.save({"model": self.model.trial_state_dict(j), "epoch": epoch, "cell": cell},
                             t.run_dir / checkpoints.CHECKPOINT_DIR / checkpoints.BEST)
        self.elapsed = time.time() - self.started
        for j, entry in entries.items():
            t = trials[j]
            train.end_epoch(t.loop, entry, self.elapsed, bests.get(j))
            best = t.loop["best"]
            log.info("%s: epoch %d  train_loss %.4f  val_%s %.4f  best %.4f (epoch %d)", t.run_dir, entry["epoch"],
                     entry["train_loss"], metric, vals[j][metric], best["objective"], best["epoch"])
            t.tracker.log({**entry, "best_objective": best["objective"]}, step=entry["epoch"])
            reason = train.stop_reason(t.trainer, t.loop)
            if reason:
                exits.append((t, OK, reason, None))
        self.leave(exits)
        self.save()

    @torch.no_grad()
    def evaluate(self, split: str, index: Sequence[int]) -> list[dict[str, float]]:
        """`train.evaluate` for the trials at `index` of the pack; every trial reads the same batches."""
        index = list(index)
        if not index:
            return []
        model, task = self.model, self.task
        params = {n: p.detach()[index] for n, p in model.params.items()}
        model.eval()
        sums: list[dict[str, float]] = [{} for _ in index]
        state = None
        for batch in task.split(split).batches(self.eval_batch, task.task_type):
            batch = batch.to(self.device)
            prediction, final = model(batch.x, batch.lengths, state, shared=True, params=params)
            state = final if task.stateful else None
            for total, own in zip(sums, prediction):
                for k, v in model.template.metric_sums(own, batch).items():
                    total[k] = total.get(k, 0.0) + v
        return [model.template.finalize_metrics(total) for total in sums]

    # -- checkpoints ----------------------------------------------------------------------
    def save(self) -> None:
        """The pack's last epoch: tensors and plain types only (torch.load(weights_only=True) reads it)."""
        checkpoints.save({
            "run_dirs": self.run_dirs,
            "active": [t.position for t in self.active],
            "params": {n: p.detach() for n, p in self.model.params.items()},
            "optimizer": self.optimizer.state_dict(),
            "generators": [t.generator.get_state() for t in self.active],
            "loops": [t.loop for t in self.active],
            "elapsed": self.elapsed,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
        }, self.pack_dir / CHECKPOINT)

    def resume(self) -> None:
        """Continue from `pack.pt` when it belongs to these trials; trials that had left keep their records."""
        path = self.pack_dir / CHECKPOINT
        if not path.exists():
            return
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if ckpt["run_dirs"] != self.run_dirs:
            log.warning("%s belongs to another pack (%d trials); starting this pack from scratch", path, len(ckpt["run_dirs"]))
            return
        active = set(ckpt["active"])
        left = [t for t in self.trials if t.position not in active]
        if not all(_finished(t.run_dir) for t in left):
            log.warning("%s: a trial that had left the pack has lost its record; starting this pack from scratch", path)
            return
        for t in left:
            self.records[t.position] = read_record(t.run_dir)
        keep = [j for j, t in enumerate(self.trials) if t.position in active]
        self.model.select(keep)
        self.optimizer.select(keep)
        self.active = [self.trials[j] for j in keep]
        self.model.params = {n: p.to(self.device).requires_grad_() for n, p in ckpt["params"].items()}
        self.optimizer.load_state_dict(ckpt["optimizer"], self.device)
        for t, generator, loop in zip(self.active, ckpt["generators"], ckpt["loops"]):
            t.generator.set_state(generator)
            t.loop = loop
            t.resumed_from = loop["epoch"]
        torch.set_rng_state(ckpt["torch_rng"])
        if self.device.type == "cuda" and ckpt.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ckpt["cuda_rng"], self.device)
        self.elapsed = ckpt["elapsed"]
        log.info("resuming pack %s from epoch %d (%d of %d trials)", path, max([t.loop["epoch"] for t in self.active] or [0]),
                 len(self.active), len(self.trials))


def _detach(state):
    if state is None:
        return None
    return state.detach() if isinstance(state, torch.Tensor) else tuple(s.detach() for s in state)


def _select_state(state, keep: list[int]):
    """The carried state (trial axis first) of the trials that stay."""
    if state is None:
        return None
    return state[keep] if isinstance(state, torch.Tensor) else tuple(s[keep] for s in state)


def _finished(run_dir: Path) -> bool:
    try:
        return read_record(run_dir).get("status") in (OK, DIVERGED)
    except (OSError, ValueError, AttributeError):
        return False


def default_pack_id(run_dirs: Sequence[Path]) -> str:
    """A stable id from the trials' directories (the same pack gets the same id when resumed)."""
    return hashlib.sha1("\n".join(str(d) for d in run_dirs).encode()).hexdigest()[:12]


def fit_pack(
    trials: Sequence[tuple[Mapping, str | Path]], pack_id: str | None = None, pack_dir: str | Path | None = None,
    path: str = "fused",
) -> list[dict]:
    """Train `trials` [(resolved config, run directory), ...] of one grid point as one pack; returns their
    records in that order (see the module docstring). `path`: `PackedModel`'s forward (fused or vmap)."""
    cfgs = [train.to_dict(cfg) for cfg, _ in trials]
    run_dirs = [Path(d) for _, d in trials]
    check_packable(cfgs)
    for d in run_dirs:
        d.mkdir(parents=True, exist_ok=True)
    pack_id = pack_id or default_pack_id(run_dirs)
    heads = [
        {**train.record_head(cfg, d), "pack": {"id": pack_id, "width": len(cfgs), "position": k}}
        for k, (cfg, d) in enumerate(zip(cfgs, run_dirs))
    ]
    for head, cfg in zip(heads, cfgs):
        train.identify(head, cfg)
    started = time.time()
    pack = None
    try:
        pack = Pack(cfgs, run_dirs, heads, Path(pack_dir) if pack_dir else run_dirs[0] / checkpoints.CHECKPOINT_DIR, path=path)
        return pack.run()
    except Exception as err:
        signals.reraise_if_interrupted(err)
        if pack is not None:
            pack.fail(err)
        else:
            for head, d in zip(heads, run_dirs):
                if _finished(d):  # a member that had left a resumed pack keeps its record
                    continue
                write_record(d, {**head, "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc(),
                                 "wall_seconds": time.time() - started})
        raise
