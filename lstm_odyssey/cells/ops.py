"""Tensor helpers every family's step and fused sequence functions share (a leaf: imports only torch).

Trial axis: a tensor may carry a leading axis of K trials of one cell trained side by side. One trial
is the 2-D layout (states (B, N), weights (rows, cols), vectors (n,)); K trials stack them (states
(K, B, N), weights (K, rows, cols), vectors (K, 1, n)), and a whole sequence puts time first:
(T, B, kN) or (T, K, B, kN). The matmul helpers below pick torch's 2-D kernel (addmm, mm) for one
trial and its batched one (baddbmm, bmm) for K, so that the one-trial path costs what it always did.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import os
from collections.abc import Iterator
from typing import Any

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


# -- which kernels run: the config keys kernels.triton, kernels.scan, kernels.graph_cache -------------
# Their defaults (the schema's too: lstm_odyssey/schema.py reads them here), their values, and the environment
# variables that set them. A run enters `kernel_settings` with its config's values (cli.py), a layer with its own
# (RecurrentLayer(triton=...)); the fused backward takes its forward's (backends.py). Code that runs outside
# both (the layer used as a library) reads the environment variable, else the default.
KERNEL_DEFAULTS: dict[str, Any] = {"triton": "auto", "scan": "auto", "graph_cache": 16}
KERNEL_CHOICES: dict[str, tuple[str, ...]] = {"triton": ("auto", "off", "force"), "scan": ("auto", "off", "log")}
KERNEL_ENV = {"triton": "LSTM_ODYSSEY_TRITON", "scan": "LSTM_ODYSSEY_SCAN", "graph_cache": "LSTM_ODYSSEY_GRAPH_CACHE"}
_chosen: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("kernel_settings", default=None)


def kernel_from_environment(name: str) -> Any:
    """The value the environment variable of setting `name` gives (None when unset): `0` reads as `off`,
    the graph cache's size as an integer (left as text when it is none, for the caller to refuse)."""
    raw = os.environ.get(KERNEL_ENV[name], "").strip()
    if not raw:
        return None
    if name == "graph_cache":
        return int(raw) if raw.lstrip("-").isdigit() else raw
    return "off" if raw == "0" else raw


def kernel_setting(name: str) -> Any:
    """The value of `name` in force: the one `kernel_settings` set (a run's config), else the environment's,
    else the default."""
    chosen = _chosen.get() or {}
    if chosen.get(name) is not None:
        return chosen[name]
    found = kernel_from_environment(name)
    return KERNEL_DEFAULTS[name] if found is None else found


def kernel_settings_now() -> dict[str, Any]:
    """The settings `kernel_settings` set here (for an autograd backward, which may run in another thread)."""
    return dict(_chosen.get() or {})


@contextlib.contextmanager
def kernel_settings(**values: Any) -> Iterator[None]:
    """Within the block, the given settings (None: leave as is) are in force for this thread or task."""
    token = _chosen.set({**(_chosen.get() or {}), **{k: v for k, v in values.items() if v is not None}})
    try:
        yield
    finally:
        _chosen.reset(token)


def check_kernel_settings(triton: Any = None, scan: Any = None, graph_cache: Any = None) -> dict[str, Any]:
    """The settings a layer was given, checked (None: not given); raises ValueError in one line."""
    for name, value in (("triton", triton), ("scan", scan)):
        if value is not None and value not in KERNEL_CHOICES[name]:
            raise ValueError(f"{name} must be one of {', '.join(KERNEL_CHOICES[name])}, not {value!r}")
    if graph_cache is not None and (isinstance(graph_cache, bool) or not isinstance(graph_cache, int) or graph_cache < 1):
        raise ValueError(f"graph_cache must be a positive integer, not {graph_cache!r}")
    return {"triton": triton, "scan": scan, "graph_cache": graph_cache}


def triton_available() -> bool:
    """Triton is importable (it ships with CUDA builds of torch; CPU builds lack it)."""
    return importlib.util.find_spec("triton") is not None


def use_triton(t: Tensor) -> bool:
    """Per-step Triton kernels for CUDA tensors where Triton is present (triton `auto`); `off` turns them
    off, `force` runs them on any device (CPU under TRITON_INTERPRET=1, for tests)."""
    choice = kernel_setting("triton")
    if choice == "off" or t.dtype not in (torch.float32, torch.float64):  # kernels compute in the input dtype
        return False
    return (choice == "force" or t.is_cuda) and triton_available()


def triton_runs(xp: Tensor) -> bool:
    """The Triton kernels take this sequence `xp` (T, B, kN): they index one trial's rows densely, so
    stacked trials (T, K, B, kN) run the eager path."""
    return xp.dim() == 3 and use_triton(xp)


def scan_enabled() -> bool:
    """Cells that are parallel in time run the scan (scan `off`: the sequential eager path, for comparisons)."""
    return kernel_setting("scan") != "off"


def scan_in_log_space(t: Tensor) -> bool:
    """The parallel log-space scan on CUDA (or anywhere with scan `log`); on the CPU one fused
    multiply-add per step is cheaper: torch's CPU logcumsumexp is an unvectorised loop (33 ms against 7 ms
    for the whole sweep, 100 x 64 x 128 floats)."""
    return kernel_setting("scan") == "log" or t.is_cuda


# -- activations the cells share: g (input), h (output) ------------------------------------------


def activation(name: str, x: Tensor) -> Tensor:
    """g or h: tanh, the identity (NIAF, NOAF), or Feng et al.'s positive g (x + 1/2 for x >= 0, else
    sigmoid(x): minGRU's log-space variant keeps its states positive with it)."""
    if name == "tanh":
        return torch.tanh(x)
    if name == "positive":
        return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))
    return x


def activation_(name: str, x: Tensor) -> Tensor:
    """`activation` in place (tanh by `tanh_`)."""
    if name == "tanh":
        return tanh_(x)
    if name == "positive":
        return x.copy_(activation(name, x))
    return x


def activation_grad(name: str, value: Tensor) -> Tensor | None:
    """The derivative of `activation` from its value v: 1 - v² (tanh), 1 where v >= 1/2 else v - v²
    (positive), None for the identity (a factor of one)."""
    if name == "tanh":
        return torch.addcmul(torch.ones_like(value), value, value, value=-1)
    if name == "positive":
        return torch.where(value >= 0.5, torch.ones_like(value), value - value * value)
    return None


# -- the recurrent term R y_{t-1} of every kind of recurrence -----------------------------------


class Recurrence:
    """R y for the recurrence the flags choose, over k fused blocks of N units each:

    * full, one head: R (..., kN, N), R y = y R^T (one matmul, as always);
    * full over H heads (block-diagonal, sLSTM): R (..., kN, N/H), row (block g, head h, unit j) holding
      the weights from head h's N/H units;
    * diagonal (IndRNN, IndyLSTM): u (kN,) or (K, 1, kN), R y = u ⊙ [y, y, ..., y] (one weight per unit
      and block);
    * none (minGRU, minLSTM): no weight, R y = 0.

    `add` / `add_` add R y to a pre-activation, `transposed` / `add_transposed_` give R^T d for the
    backward sweep, `grad` the weight's gradient summed over all steps and sequences."""

    def __init__(self, kind: str, heads: int, blocks: int) -> None:
        self.kind, self.heads, self.blocks = kind, heads, blocks

    def _split(self, x: Tensor) -> Tensor:
        """(..., kN) -> (..., k, H, N/H)."""
        return x.unflatten(-1, (self.blocks, self.heads, -1))

    def _heads_weight(self, weight: Tensor) -> Tensor:
        """(..., kN, N/H) -> (..., k, H, N/H, N/H)."""
        return weight.unflatten(-2, (self.blocks, self.heads, -1))

    def term(self, y: Tensor, weight: Tensor | None) -> Tensor | None:
        """R y (..., B, kN), or None without recurrence."""
        if self.kind == "none":
            return None
        if self.kind == "diagonal":
            return (y.unsqueeze(-2) * weight.unflatten(-1, (self.blocks, -1))).flatten(-2)
        if self.heads == 1:
            return y @ weight.mT
        heads = torch.einsum("...ghje,...bhe->...bghj", self._heads_weight(weight), y.unflatten(-1, (self.heads, -1)))
        return heads.flatten(-3)

    def add(self, pre: Tensor, y: Tensor, weight: Tensor | None) -> Tensor:
        """pre + R y (a new tensor: the reference step's autograd sees it). Without recurrence y is not
        read; 0 y[..., :1] keeps it in autograd's graph, so that its gradient reads zero (as the fused
        functions return it) rather than absent."""
        if self.kind == "full" and self.heads == 1:
            return addmm(pre, y, weight.mT)
        term = self.term(y, weight)
        return pre + 0 * y[..., :1] if term is None else pre + term

    def add_into(self, pre: Tensor, y: Tensor, weight: Tensor | None, out: Tensor) -> Tensor:
        """out = pre + R y."""
        if self.kind == "full" and self.heads == 1:
            return addmm(pre, y, weight.mT, out=out)
        return self.add_(out.copy_(pre), y, weight)

    def add_(self, pre: Tensor, y: Tensor, weight: Tensor | None) -> Tensor:
        """pre += R y in place."""
        if self.kind == "full" and self.heads == 1:
            return addmm_(pre, y, weight.mT)
        if self.kind == "diagonal":
            pre.unflatten(-1, (self.blocks, -1)).addcmul_(y.unsqueeze(-2), weight.unflatten(-1, (self.blocks, -1)))
            return pre
        term = self.term(y, weight)
        return pre if term is None else pre.add_(term)

    def transposed(self, d: Tensor, weight: Tensor | None) -> Tensor:
        """R^T d: the gradient reaching y_{t-1} from the pre-activations' gradient d (..., B, kN)."""
        if self.kind == "none":
            return d.new_zeros((*d.shape[:-1], d.shape[-1] // self.blocks))
        if self.kind == "diagonal":
            return (d.unflatten(-1, (self.blocks, -1)) * weight.unflatten(-1, (self.blocks, -1))).sum(-2)
        if self.heads == 1:
            return mm(d, weight)
        return torch.einsum("...bghj,...ghje->...bhe", self._split(d), self._heads_weight(weight)).flatten(-2)

    def add_transposed_(self, dy: Tensor, d: Tensor, weight: Tensor | None) -> Tensor:
        """dy += R^T d in place."""
        if self.kind == "full" and self.heads == 1:
            return addmm_(dy, d, weight)
        if self.kind == "none":
            return dy
        return dy.add_(self.transposed(d, weight))

    def grad(self, d: Tensor, y: Tensor, weight: Tensor | None) -> Tensor | None:
        """dL/dR from the pre-activation gradients d (T, [K,] B, kN) and the previous outputs y
        (T, [K,] B, N) of every step, in the weight's shape (None without recurrence)."""
        if self.kind == "none":
            return None
        if self.kind == "diagonal":
            return sum_over_steps_and_batch((d.unflatten(-1, (self.blocks, -1)) * y.unsqueeze(-2)).flatten(-2)).view_as(weight)
        if self.heads == 1:
            return sum_over_steps(d, y)
        rows_d, rows_y = _steps_and_batch_as_rows(d), _steps_and_batch_as_rows(y)
        g = torch.einsum("...rghj,...rhe->...ghje", self._split(rows_d), rows_y.unflatten(-1, (self.heads, -1)))
        return g.flatten(-4, -2)

    def scaled_rows(self, weight: Tensor | None, rows: slice, factor: float) -> Tensor | None:
        """A copy of the weight with the rows of one block (`rows` of kN) scaled by `factor`."""
        if weight is None:
            return None
        scaled = weight.clone()
        if self.kind == "diagonal":
            scaled[..., rows] *= factor
        else:
            scaled[..., rows, :] *= factor
        return scaled


# -- the parallel scan over time ----------------------------------------------------------------


def linear_scan(decay: Tensor, b: Tensor, h0: Tensor, out: Tensor | None = None) -> Tensor:
    """h_t = a_t h_{t-1} + b_t for t = 1..T, from h0 (...) and b (T, ...): returns h_1..h_T (into `out`
    when given; it may be `b` itself). `decay` is a (T, ...), or log a where `scan_in_log_space` (the
    caller computes it stably). There all steps run at once by the log-space scan of Heinsen (2023) that
    minGRU and minLSTM train with (Feng et al. 2024): h_t = exp(A_t) Σ_{s<=t} exp(log b_s - A_s) with
    A_t = Σ_{r<=t} log a_r and b_0 = h0, each sum a log-cumsum-exp, the positive and negative parts of b
    apart (b may have either sign). Elsewhere one multiply-add per step."""
    if not scan_in_log_space(b):
        out = torch.empty_like(b) if out is None else out
        h = h0
        for a_t, b_t, out_t in zip(decay.unbind(0), b.unbind(0), out.unbind(0)):
            h = torch.addcmul(b_t, a_t, h, out=out_t)
        return out
    log_a = decay
    A = torch.cat([torch.zeros_like(h0).unsqueeze(0), log_a.cumsum(0)])
    v = torch.cat([h0.unsqueeze(0), b])
    log_v = v.abs().log() - A
    pos = torch.where(v > 0, log_v, float("-inf")).logcumsumexp(0)
    neg = torch.where(v < 0, log_v, float("-inf")).logcumsumexp(0)
    h = ((A + pos).exp() - (A + neg).exp())[1:]
    return h if out is None else out.copy_(h)


def linear_scan_adjoint(decay: Tensor, g: Tensor, g_last: Tensor) -> Tensor:
    """The backward of `linear_scan`: λ_t = g_t + a_{t+1} λ_{t+1} for t = T..1, λ_T = g_T + g_last, where g
    is the gradient reaching each h_t directly and g_last that of the final h_T. λ_t = dL/dh_t, so that
    dL/db_t = λ_t, dL/da_t = λ_t h_{t-1} and dL/dh0 = a_1 λ_1. The same scan, run backwards in time."""
    if not scan_in_log_space(g):
        lam = torch.empty_like(g)
        a, G, L = decay.unbind(0), g.unbind(0), lam.unbind(0)
        h = torch.add(G[-1], g_last, out=L[-1])
        for t in range(g.shape[0] - 2, -1, -1):
            h = torch.addcmul(G[t], a[t + 1], h, out=L[t])
        return lam
    shifted = torch.cat([decay[1:], torch.zeros_like(decay[:1])])  # log a_{t+1}, log 1 after the end
    return linear_scan(shifted.flip(0), g.flip(0), g_last).flip(0)
