"""A pack: K trials of one cell on one task as one set of parameters with a leading trial axis.

Trial k is a `SequenceModel` (built by `train.build_model` from its own config and seed) copied into slice k
of each packed parameter. Trials of different hidden sizes share a pack by exact padding to the largest
size N: each block of n_k units (a gate, a direction) sits at the start of its block of N, and every other
entry is zero. Zero rows and columns keep the padded units of h and c at exactly zero, so they never reach a
real unit, and their gradients are exactly zero; `masks` marks the real entries so that gradients outside
them are cleared (`mask_gradients_`) and the optimiser never moves them. (FGR's gate state of a padded unit
is sigmoid(0), not zero; it reaches no real unit because its columns of `weight_gg` are zero, but it gives
those columns a gradient, which the mask clears.)

Two ways run the trial axis through the forward (`PackedModel(..., trial_axis=...)`):

* ``stacked`` (the default): `stacked.py`, every layer-direction through its family's fused sequence
  functions with the trial axis (one batched matmul per step for all trials, the hand-written backward),
  the encoder, input projections and head as batched matmuls over the trials.
* ``vmap``: the reference. The loop of `layers.py` (`backend="loop"`) run by `torch.func.vmap` over the
  trial axis with `functional_call`: the cell math of `cells/`, unchanged, each matmul one batched matmul
  over the trials. The one thing vmap cannot run is `RecurrentLayer._check_lengths` with a lengths tensor
  per trial (it branches on the values), so the pack validates nothing there: its lengths come from the
  task's own batches.

Where the stacked forward cannot run an architecture (`stacked.stacked_problem`), the pack logs why and runs vmap.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call, vmap

from .. import train
from ..data.base import Batch, TaskData
from ..models import SEQUENCE_TASKS, SequenceModel
from . import stacked

log = logging.getLogger("lstm_odyssey.packed")
TRIAL_AXES = ("stacked", "vmap")  # how the forward runs the trial axis


def embedding_index(single: Sequence[int], padded: Sequence[int], n: int, width: int) -> tuple[Tensor, ...]:
    """For each dimension, where the entries of a trial's tensor (shape `single`, hidden size n) sit in the
    pack's tensor (shape `padded`, hidden size `width`). A dimension that differs is m blocks of the hidden
    size (gates, directions): block j of n entries starts at j * width."""
    index = []
    for s, p in zip(single, padded):
        if s == p:
            index.append(torch.arange(s))
        elif p % width == 0 and s == (p // width) * n:
            blocks = p // width
            index.append((torch.arange(blocks)[:, None] * width + torch.arange(n)[None, :]).flatten())
        else:
            raise ValueError(f"cannot pad a tensor of shape {tuple(single)} (hidden {n}) to {tuple(padded)} (hidden {width})")
    return tuple(i.view(-1, *([1] * (len(single) - d - 1))) for d, i in enumerate(index))  # an open mesh


def _lengths_from_the_pack(lengths, steps: int, batch: int):
    """Stands in for `RecurrentLayer._check_lengths` under vmap (see the module docstring)."""
    return lengths


def template_for(cfg: dict, task: TaskData, hidden_size: int) -> SequenceModel:
    """The module whose code the pack runs: trial `cfg`'s architecture at the pack's hidden size, on the loop
    backend, with its parameters on the meta device (the pack supplies them)."""
    model_cfg = {**cfg["model"], "hidden_size": hidden_size, "backend": "loop"}
    with torch.device("meta"):
        return train.build_model({**cfg, "model": model_cfg}, task)


class PackedModel:
    """K trials of one architecture; trial k equals `models[k]` (outputs, states, gradients). `trial_axis`:
    how the forward runs the trials (see the module docstring); `self.trial_axis` is the one that runs."""

    def __init__(self, template: SequenceModel, models: Sequence[SequenceModel], trial_axis: str = "stacked") -> None:
        if trial_axis == "fused":  # its name before this release, when "fused" also named a backend
            warnings.warn('PackedModel(..., "fused") is now trial_axis="stacked"; "fused" goes in the next release',
                          DeprecationWarning, stacklevel=2)
            trial_axis = "stacked"
        if trial_axis not in TRIAL_AXES:
            raise ValueError(f"unknown trial_axis {trial_axis!r}; choose one of {', '.join(TRIAL_AXES)}")
        if template.rnn.backend != "loop":
            raise ValueError(f"a pack runs the loop backend under vmap; build its template with backend='loop', not {template.rnn.backend!r}")
        width = template.rnn.hidden_size
        self.template = template
        self.template.rnn._check_lengths = _lengths_from_the_pack
        self.hidden_sizes = [m.rnn.hidden_size for m in models]
        if max(self.hidden_sizes) > width:
            raise ValueError(f"the template's hidden size {width} is below a trial's {max(self.hidden_sizes)}")
        shapes = {name: p.shape for name, p in template.named_parameters()}
        self.index: list[dict[str, tuple[Tensor, ...]]] = []
        self.params: dict[str, Tensor] = {}
        masks: dict[str, Tensor] = {}
        for name, shape in shapes.items():
            ref = dict(models[0].named_parameters())[name]
            self.params[name] = torch.zeros(len(models), *shape, dtype=ref.dtype, device=ref.device)
            masks[name] = torch.zeros(len(models), *shape, dtype=torch.bool, device=ref.device)
        for k, model in enumerate(models):
            own = dict(model.named_parameters())
            if set(own) != set(shapes):
                raise ValueError(f"trial {k} has parameters {sorted(own)}, the pack {sorted(shapes)}; pack trials of one architecture")
            index = {name: embedding_index(own[name].shape, shapes[name], self.hidden_sizes[k], width) for name in shapes}
            with torch.no_grad():
                for name, ix in index.items():
                    self.params[name][k][ix] = own[name].detach()
                    masks[name][k][ix] = True
            self.index.append(index)
        for p in self.params.values():
            p.requires_grad_()
        self.masks = {name: m for name, m in masks.items() if not m.all()} or None
        problem = stacked.stacked_problem(template, next(iter(self.params.values())).device) if trial_axis == "stacked" else None
        if problem:
            log.warning("the pack runs its trials by vmap: the stacked forward does not cover %s", problem)
        self.trial_axis = "vmap" if problem else trial_axis

    @property
    def width(self) -> int:
        """K, the number of trials in the pack."""
        return len(self.hidden_sizes)

    def train(self, mode: bool = True) -> PackedModel:
        self.template.train(mode)
        return self

    def eval(self) -> PackedModel:
        return self.train(False)

    def to(self, device: torch.device | str) -> PackedModel:
        self.params = {n: p.detach().to(device).requires_grad_() for n, p in self.params.items()}
        if self.masks:
            self.masks = {n: m.to(device) for n, m in self.masks.items()}
        return self

    def _call(self, params: dict[str, Tensor], x: Tensor, lengths: Tensor | None, state):
        return functional_call(self.template, params, (x, lengths, state))

    def __call__(self, x: Tensor, lengths: Tensor | None = None, state=None, shared: bool = False,
                 params: dict[str, Tensor] | None = None):
        """Predictions (K, ...) and final states (K, ...) of every trial. `x` and `lengths` hold one batch per
        trial on a leading axis, or with `shared` one batch that every trial reads (evaluation). `params`
        (default: the pack's) may be a selection of the trials."""
        params = self.params if params is None else params
        if self.trial_axis == "stacked":
            if shared:
                trials = next(iter(params.values())).shape[0]
                x = x.expand(trials, *x.shape)
                lengths = None if lengths is None else lengths.expand(trials, -1)
            return stacked.forward(self.template, params, x, lengths, state)
        batched = None if shared else 0
        in_dims = (0, batched, None if lengths is None else batched, None if state is None else 0)
        return vmap(self._call, in_dims=in_dims, randomness="error")(params, x, lengths, state)

    def losses(self, prediction: Tensor, batches: Sequence[Batch]) -> Tensor:
        """(K,) training losses: `SequenceModel.loss` of trial k's prediction on its own batch. (`unbind`, not
        `prediction[k]`: the backward of K selects would build K zero tensors of the whole prediction.)"""
        return torch.stack([self.template.loss(self.own_steps(p, b), b) for p, b in zip(prediction.unbind(0), batches)])

    def own_steps(self, prediction: Tensor, batch: Batch) -> Tensor:
        """A trial's prediction cut to its own batch's steps (per-step tasks read a batch padded further)."""
        if self.template.task_type in SEQUENCE_TASKS:
            return prediction
        return prediction[:, : batch.x.shape[1]]

    @torch.no_grad()
    def mask_gradients_(self) -> None:
        """Clear the gradients of padded entries (only FGR's gate state gives them any)."""
        for name, mask in (self.masks or {}).items():
            grad = self.params[name].grad
            if grad is not None:
                grad.masked_fill_(~mask, 0)

    def select(self, index: Sequence[int]) -> None:
        """Keep only the trials at `index` (in that order): the others leave the pack and stop costing time."""
        idx = list(index)
        params = {}
        for name, p in self.params.items():
            params[name] = p.detach()[idx].clone().requires_grad_()
            if p.grad is not None:  # a trial may leave between backward and the update
                params[name].grad = p.grad[idx]
        self.params = params
        if self.masks:
            self.masks = {n: m[idx] for n, m in self.masks.items()}
        self.hidden_sizes = [self.hidden_sizes[k] for k in idx]
        self.index = [self.index[k] for k in idx]

    def trial_state_dict(self, k: int) -> dict[str, Tensor]:
        """Trial k's weights in the layout of its own SequenceModel (`load_state_dict` takes them)."""
        return {name: p[k].detach()[self.index[k][name]].clone() for name, p in self.params.items()}


def stack_batches(batches: Sequence[Batch], xs: Sequence[Tensor]) -> tuple[Tensor, Tensor | None]:
    """The per-trial inputs `xs` (trial k's batch, noise added) padded to the longest and stacked, with
    the stacked lengths, or None when every sequence of every trial fills the padded length."""
    steps = max(x.shape[1] for x in xs)
    padded = [F.pad(x, (0, 0) * (x.dim() - 2) + (0, steps - x.shape[1])) for x in xs]
    lengths = torch.stack([b.lengths for b in batches])
    return torch.stack(padded), None if bool((lengths == steps).all()) else lengths
