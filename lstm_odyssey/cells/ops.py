"""Tensor helpers every family's step and fused sequence functions share (a leaf: imports only torch).

Trial axis: a tensor may carry a leading axis of K trials of one cell trained side by side. One trial
is the 2-D layout (states (B, N), weights (rows, cols), vectors (n,)); K trials stack them (states
(K, B, N), weights (K, rows, cols), vectors (K, 1, n)), and a whole sequence puts time first:
(T, B, kN) or (T, K, B, kN). The matmul helpers below pick torch's 2-D kernel (addmm, mm) for one
trial and its batched one (baddbmm, bmm) for K, so that the one-trial path costs what it always did.
"""

from __future__ import annotations

import importlib.util
import os

import torch
from torch import Tensor


def addmm(input: Tensor, a: Tensor, b: Tensor, out: Tensor | None = None) -> Tensor:
    """input + a @ b, for one trial (2-D a, b) or stacked trials (3-D)."""
    if a.dim() == 2:
        return torch.addmm(input, a, b, out=out)
    return torch.baddbmm(input, a, b, out=out)


def addmm_(out: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """out += a @ b in place, for one trial or stacked trials."""
    return out.addmm_(a, b) if a.dim() == 2 else out.baddbmm_(a, b)


def mm(a: Tensor, b: Tensor, out: Tensor | None = None) -> Tensor:
    """a @ b, for one trial or stacked trials."""
    return torch.mm(a, b, out=out) if a.dim() == 2 else torch.bmm(a, b, out=out)


def _steps_and_batch_as_rows(x: Tensor) -> Tensor:
    """(T, [K,] B, n) -> ([K,] T * B, n): a view for one trial (a copy for stacked trials)."""
    return x.movedim(0, -3).flatten(-3, -2)


def sum_over_steps(d: Tensor, x: Tensor) -> Tensor:
    """sum over steps t and batch b of outer(d[t, b], x[t, b]): the gradient of a weight W from the
    gradients `d` of W x for a whole sequence at once. (T, [K,] B, m), (T, [K,] B, n) -> ([K,] m, n)."""
    return _steps_and_batch_as_rows(d).mT @ _steps_and_batch_as_rows(x)


def sum_over_steps_and_batch(x: Tensor) -> Tensor:
    """(T, [K,] B, n) -> ([K,] 1, n): the gradient of a vector added to every step and sequence."""
    return x.sum(dim=(0, -2), keepdim=True).squeeze(0)


def tanh_into(x: Tensor, out: Tensor) -> Tensor:
    """out = tanh(x), as `tanh_`."""
    if x.device.type != "cpu":
        return torch.tanh(x, out=out)
    return torch.mul(x, 2, out=out).sigmoid_().mul_(2).sub_(1)


def tanh_(x: Tensor) -> Tensor:
    """In-place tanh. On the CPU as 2 sigmoid(2x) - 1: torch's CPU tanh measured 5-8x slower than its
    sigmoid here (45 vs 6 us for 64 x 128 floats), and a step has two. Equal to tanh within an ulp of 1."""
    if x.device.type != "cpu":
        return x.tanh_()
    return x.mul_(2).sigmoid_().mul_(2).sub_(1)


def triton_available() -> bool:
    """Triton is importable (it ships with CUDA builds of torch; CPU builds lack it)."""
    return importlib.util.find_spec("triton") is not None


def use_triton(t: Tensor) -> bool:
    """Per-step Triton kernels for CUDA tensors where Triton is present. LSTM_ODYSSEY_TRITON=0 turns
    them off; =force runs them on any device (CPU under TRITON_INTERPRET=1, for tests)."""
    choice = os.environ.get("LSTM_ODYSSEY_TRITON", "auto")
    if choice == "0" or t.dtype not in (torch.float32, torch.float64):  # kernels compute in the input dtype
        return False
    return (choice == "force" or t.is_cuda) and triton_available()


def triton_runs(xp: Tensor) -> bool:
    """The Triton kernels take this sequence `xp` (T, B, kN): they index one trial's rows densely, so
    stacked trials (T, K, B, kN) run the eager path."""
    return xp.dim() == 3 and use_triton(xp)
