"""Train a pack: the trials of one grid point side by side in one process, each as its own single run would.
The loop and each trial's life cycle are the engine's (engine.py); here is the runner of a packed model.

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
* A pack of one trial is a single run (`train.SingleRunner`, the fastest backend) with the pack's record.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .. import train
from ..checkpoints import CHECKPOINT_DIR
from ..data import build_task
from ..data.base import Batch, TaskData
from ..engine import Setup, train_trials
from ..jobstate import PACK_CHECKPOINT
from ..lifecycle import record_head
from ..models import SequenceModel
from .model import PackedModel, stack_batches, template_for
from .optim import PackedOptimizer, clip_grad_norms_
from .plan import check_packable

RECORDED_BACKEND = {"stacked": "packed_fused", "vmap": "packed_loop"}  # the record's `backend` per trial axis (the
# labels of earlier releases, kept so that a study's records stay comparable)


def initial_models(cfgs: Sequence[dict], task: TaskData | None = None) -> tuple[TaskData, list[SequenceModel]]:
    """The task and each trial's model as a single run builds them: seed, task, model. The task is built once
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


class PackRunner:
    """K models of one architecture in a `PackedModel`, with a `PackedOptimizer` of their own optimisers."""

    def __init__(self, cfgs: Sequence[dict], task: TaskData, models: Sequence[SequenceModel], device: torch.device,
                 trial_axis: str = "stacked") -> None:
        template = template_for(cfgs[0], task, max(m.rnn.hidden_size for m in models))
        self.task, self.device = task, device
        self.model = PackedModel(template, models, trial_axis).to(device)
        self.optimizer = PackedOptimizer.from_torch([train.build_optimizer(c, m) for c, m in zip(cfgs, models)])
        self.clips = [c["trainer"]["clip"] or math.inf for c in cfgs]
        trainer = cfgs[0]["trainer"]
        self.eval_batch = trainer["eval_batch_size"] or trainer["batch_size"]
        self.backend = RECORDED_BACKEND[self.model.trial_axis]

    def train(self) -> None:
        self.model.train()

    def forward_backward(self, xs: Sequence[torch.Tensor], batches: Sequence[Batch], state: Any
                         ) -> tuple[list[float], list[float], Any]:
        model = self.model
        prediction, final = model(*stack_batches(batches, xs), state)
        losses = model.losses(prediction, batches)
        values = losses.tolist()
        finite = [math.isfinite(v) for v in values]
        for p in model.params.values():
            p.grad = None
        if any(finite):
            losses[torch.tensor(finite)].sum().backward()
        model.mask_gradients_()
        norms = clip_grad_norms_(model.params, torch.tensor(self.clips, dtype=torch.float64)).tolist()
        return values, [n if ok else math.nan for n, ok in zip(norms, finite)], final

    def step(self) -> None:
        self.optimizer.step(self.model.params, self.model.masks)

    def select(self, keep: Sequence[int]) -> None:
        self.model.select(keep)
        self.optimizer.select(keep)
        self.clips = [self.clips[j] for j in keep]

    def evaluate(self, split: str, index: Sequence[int]) -> list[dict[str, float]]:
        """`train.evaluate` for the trials at `index`; every trial reads the same batches."""
        index = list(index)
        if not index:
            return []
        model = self.model
        params = {n: p.detach()[index] for n, p in model.params.items()}
        model.eval()

        def forward(batch: Batch, state: Any) -> tuple[torch.Tensor, Any]:
            return model(batch.x, batch.lengths, state, shared=True, params=params)

        return train.evaluate_trials(forward, model.template, self.task, split, self.eval_batch, self.device, len(index))

    def weights(self, j: int) -> dict[str, torch.Tensor]:
        return self.model.trial_state_dict(j)

    def state_dict(self) -> dict[str, Any]:
        return {"model": {n: p.detach() for n, p in self.model.params.items()}, "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.model.params = {n: p.to(self.device).requires_grad_() for n, p in saved["model"].items()}
        self.optimizer.load_state_dict(saved["optimizer"], self.device)


def pack_setup(cfgs: list[dict], task: TaskData | None = None, trial_axis: str = "stacked") -> Setup:
    """Device, then each trial's seed, task and model as its single run builds them, and the pack's runner;
    a pack of one trial is a single run."""
    trainer = cfgs[0]["trainer"]
    train.set_determinism(trainer)
    device = train.pick_device(trainer["device"])
    task, models = initial_models(cfgs, task)
    if len(cfgs) == 1:
        return Setup(task, device, models, train.SingleRunner(cfgs[0], task, models[0], device))
    return Setup(task, device, models, PackRunner(cfgs, task, models, device, trial_axis))


def pack_id_of(run_dirs: Sequence[str | Path]) -> str:
    """A stable id of a pack from its members' run directories (the same pack gets the same id when resumed)."""
    return hashlib.sha1("\n".join(str(d) for d in run_dirs).encode()).hexdigest()[:12]


def fit_pack(
    trials: Sequence[tuple[Mapping, str | Path]], pack_id: str | None = None, pack_dir: str | Path | None = None,
    trial_axis: str = "stacked", task: TaskData | None = None,
) -> list[dict]:
    """Train `trials` [(resolved config, run directory), ...] of one grid point as one pack; returns their
    records in that order (see the module docstring). `trial_axis`: how `PackedModel` runs the trials (stacked or vmap);
    `task`: a task built already (benchmarks)."""
    cfgs = [train.to_dict(cfg) for cfg, _ in trials]
    run_dirs = [Path(d) for _, d in trials]
    check_packable(cfgs)
    for d in run_dirs:
        d.mkdir(parents=True, exist_ok=True)
    ident = pack_id or pack_id_of(run_dirs)
    heads = [{**record_head(cfg, d), "pack": {"id": ident, "width": len(cfgs), "position": k}}
             for k, (cfg, d) in enumerate(zip(cfgs, run_dirs))]
    checkpoint = (Path(pack_dir) if pack_dir else run_dirs[0] / CHECKPOINT_DIR) / PACK_CHECKPOINT
    return train_trials(cfgs, run_dirs, heads, lambda c: pack_setup(c, task, trial_axis), checkpoint)
