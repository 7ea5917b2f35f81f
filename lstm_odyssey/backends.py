"""Which backend runs a `RecurrentLayer` forward, and the autograd Function of the fused backends.

* ``loop``: the reference time loop of `layers.py` over a family's `step` (autograd records every op
  of every step).
* ``torch``: torch's own kernels (`nn.LSTM`, `nn.GRU`, `nn.RNN`; cuDNN on a GPU) for the cells that are
  exactly torch's (`np`, `gru`, `rnn`: each family's `torch` equivalent).
* ``fused``: one `autograd.Function` per layer-direction over the whole sequence, with a hand-written
  backward: a family's `sequence_forward` / `sequence_backward` (cells/lstm.py, gru.py, rnn.py), which
  run the step without autograd (a few in-place ops per step), walk the sequence once in reverse and
  compute every weight gradient with one matmul over all steps at the end. No compiler, any device,
  any dtype; activation memory is linear in T. On CUDA with Triton the pointwise part of each step is
  one hand-written Triton kernel (cells/lstm_triton.py, gru_triton.py), next to the cuBLAS matmul;
  cells a kernel cannot run (the flags beyond the paper) run the eager sweep, and cells that are
  parallel in time (minGRU, minLSTM) a scan over time (cells/lstm_scan.py): `fused_kernel` says which.
* ``graph`` (CUDA only): ``fused`` with each sequence's forward and backward captured as CUDA graphs
  (graphs.py), so that the per-step launches cost one launch.

`select` is what ``backend="auto"`` calls: the fastest backend that can honour the request. Every
backend is tested equal to ``loop`` (tests/test_backends.py).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .cells import FAMILIES, CellSpec, ops
from .cells.base import Weights
from .graphs import graph_runner

BACKENDS = ("auto", "loop", "torch", "fused", "graph")
TORCH_CELLS = tuple(family.torch_equivalent.preset for family in FAMILIES.values() if family.torch_equivalent is not None)


# -- which backend can do what ------------------------------------------------------------


def torch_able(spec: CellSpec) -> bool:
    """True when torch has a kernel for exactly this cell."""
    return FAMILIES[spec.family].torch_runs(spec)


def fused_able(spec: CellSpec) -> bool:
    """Every family has its fused sequence functions (LSTM flags, both GRU resets, tanh RNN)."""
    return spec.family in FAMILIES


def graph_available(device: torch.device) -> bool:
    """CUDA graphs need a CUDA device."""
    return device.type == "cuda" and torch.cuda.is_available()


def why_not(backend: str, spec: CellSpec, device: torch.device, return_gates: bool = False) -> str | None:
    """Why `backend` cannot run this request, or None when it can."""
    if backend in ("loop", "auto"):
        return None
    if return_gates:
        return "gates were requested (only the loop backend records them)"
    if backend == "torch":
        return None if torch_able(spec) else f"cell {spec.name} is not one of torch's ({', '.join(TORCH_CELLS)})"
    if torch.is_autocast_enabled(device.type):
        return "autocast is on (the fused kernels run one dtype; the loop follows autocast op by op)"
    if not fused_able(spec):
        return f"cell {spec.name} has no fused implementation"
    if backend == "graph" and not graph_available(device):
        return f"CUDA graphs need a CUDA device, the layer is on {device}"
    return None


def fused_kernel(spec: CellSpec, device: torch.device, dtype: torch.dtype = torch.float32) -> str:
    """What the ``fused`` and ``graph`` backends run for one trial of this cell, with the reason: the
    scan over time, Triton's kernel, or the eager sweep (and why not the kernel)."""
    family = FAMILIES[spec.family]
    probe = torch.empty((1, 1, len(spec.blocks)), device=device, dtype=dtype)  # a (T, B, kN) sequence's layout
    kernel = family.fused_kernel(spec, probe)
    if kernel == "scan":
        return "scan: parallel in time (no recurrent weights, no peephole into i or f, sigmoid gates)"
    if kernel == "triton":
        return "triton: the family's kernel runs this cell"
    problem = family.kernel_problem(spec)
    return f"eager: {problem}" if problem else f"eager: Triton's kernels run CUDA float32/float64 sequences only (this one: {device}, {dtype})"


def select(backend: str, spec: CellSpec, device: torch.device, return_gates: bool = False) -> str:
    """The backend that runs a forward: `backend` itself when it can (else a one-line error), or for
    ``auto`` the fastest that can: torch's kernels, then CUDA graphs on a GPU, then fused, then loop."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend != "auto":
        problem = why_not(backend, spec, device, return_gates)
        if problem:
            raise ValueError(f"backend={backend!r} cannot run this layer: {problem}; use backend='auto' or 'loop'")
        return backend
    for candidate in ("torch", "graph", "fused"):
        if why_not(candidate, spec, device, return_gates) is None:
            return candidate
    return "loop"


# -- the fused backends: autograd around a family's sequence functions -----------------------


class _Fused(torch.autograd.Function):
    """One layer-direction over the whole sequence: forward and backward by `runner` (a family, or the
    CUDA-graph cache), which has a family's `sequence_forward` / `sequence_backward`."""

    @staticmethod
    def forward(ctx, spec, runner, mask, num_states, xp, *tensors):  # noqa: D102
        states, weights = list(tensors[:num_states]), list(tensors[num_states:])
        outs, saved = runner.sequence_forward(spec, xp, states, weights, mask)
        ctx.entry = saved.pop("__entry__", None)  # the graph cache's capture: not a tensor, kept on ctx
        ctx.spec, ctx.runner, ctx.keys, ctx.num_states = spec, runner, list(saved), num_states
        ctx.kernels = ops.kernel_settings_now()  # the backward takes the forward's path (it may run in another thread)
        ctx.save_for_backward(*saved.values(), *weights, mask)
        return tuple(outs)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads):  # noqa: D102
        values = ctx.saved_tensors
        k = len(ctx.keys)
        saved = dict(zip(ctx.keys, values[:k]))
        weights, mask = list(values[k:-1]), values[-1]
        if ctx.entry is not None:
            saved["__entry__"] = ctx.entry
        with ops.kernel_settings(**ctx.kernels):
            dxp, dstates, dweights = ctx.runner.sequence_backward(ctx.spec, saved, list(grads), weights, mask)
        dstates = list(dstates) + [None] * (ctx.num_states - len(dstates))
        return (None, None, None, None, dxp, *dstates, *dweights)


def run_fused(
    spec: CellSpec, backend: str, xp: Tensor, valid: Tensor | None, state: list[Tensor], weights: Weights
) -> tuple[Tensor, list[Tensor]]:
    """One layer-direction on the ``fused`` or ``graph`` backend: from `xp` = W x + b (T, B, kN, consumed
    as scratch), `valid` (T, B, 1) or None, the initial state and the family's recurrent weights,
    returns (outputs (T, B, N), final state)."""
    mask = valid.to(xp.dtype) if valid is not None else None
    runner = graph_runner(xp.device) if backend == "graph" else FAMILIES[spec.family]
    outs = _Fused.apply(spec, runner, mask, len(state), xp, *state, *weights)
    return outs[0], list(outs[1:])
