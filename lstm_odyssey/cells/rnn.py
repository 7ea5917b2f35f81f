"""The tanh RNN (Elman, Keras's SimpleRNN; docs/equations.md, "tanh RNN") as the `RNN` family object:
h_t = tanh(W x_t + R h_{t-1} + b), R a full matrix, block-diagonal over heads, or diagonal (IndRNN,
Li et al. 2018: h_t = tanh(W x_t + u ⊙ h_{t-1} + b)); relu instead of tanh as a layer option
(`nonlinearity="relu"`, torch.nn.RNN's, on the reference loop and torch's kernel). One block, state h.
Shapes: see ops.py (one trial 2-D, stacked trials with K first). No Triton kernel: a step is one matmul
and one tanh already."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import ops
from .base import Family, TorchEquivalent, Weights
from .spec import CellSpec


class RNNFamily(Family):
    name = "rnn"
    gate_names = "h"
    recurrent_names = ("weight_hh",)
    keras_name = "SimpleRNN"
    torch_equivalent = TorchEquivalent("rnn", nn.RNN, torch._VF.rnn_tanh)
    nonlinearity = "tanh"  # or "relu": torch.nn.RNN(nonlinearity="relu"), Le et al.'s IRNN, Li et al.'s IndRNN

    def with_options(
        self, spec: CellSpec, hidden_size: int, proj_size: int = 0, nonlinearity: str = "tanh"
    ) -> RNNFamily:
        """With nonlinearity="relu" a copy that computes h_t = relu(W x_t + R h_{t-1} + b), torch's kernel
        rnn_relu for the `rnn` preset (the fused sweep is tanh's only: `fused_problem`)."""
        super().with_options(spec, hidden_size, proj_size, "tanh")
        if nonlinearity == "tanh":
            return self
        if nonlinearity != "relu":
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu' (as in torch.nn.RNN), got {nonlinearity!r}")
        relu_kernel = TorchEquivalent("rnn", nn.RNN, torch._VF.rnn_relu)
        return self._configured(nonlinearity="relu", torch_equivalent=relu_kernel)

    def torch_options(self) -> dict[str, str]:
        return {"nonlinearity": self.nonlinearity}

    def fused_problem(self) -> str | None:
        return None if self.nonlinearity == "tanh" else f"nonlinearity={self.nonlinearity!r}"

    def step(self, spec: CellSpec, x_proj: Tensor, state: list[Tensor], weights: Weights):
        """h_t = tanh(W x_t + b + R h_{t-1}) (relu with nonlinearity="relu"). Activations by name: h."""
        (h_prev,), (weight_hh,) = state, weights
        pre = self.recurrence(spec).add(x_proj, h_prev, weight_hh)
        h = torch.relu(pre) if self.nonlinearity == "relu" else torch.tanh(pre)
        return h, [h], {"h": h}

    def sequence_forward(self, spec: CellSpec, xp: Tensor, states: list[Tensor], weights: Weights, mask: Tensor | None):
        """`step` over time-major `xp` (T, ..., B, N) = W x + b. Returns ([out, h_T], saved: h of every
        step, and with a mask the unmasked new h). tanh only: a relu family refuses rather than compute tanh."""
        if self.fused_problem():
            raise ValueError(f"the rnn family's fused sweep is tanh's only, not {self.fused_problem()}; use the loop")
        (h0,), (weight_hh,) = states, weights
        steps = xp.shape[0]
        H = xp.new_empty((steps + 1, *h0.shape))
        H[0] = h0
        A = torch.empty_like(xp) if mask is not None else None  # new h (H holds the kept state)
        out = xp.new_empty((steps, *h0.shape)) if mask is not None else None
        rec = self.recurrence(spec)
        for t in range(steps):
            new = A[t] if mask is not None else H[t + 1]
            ops.tanh_(rec.add_into(xp[t], H[t], weight_hh, out=new))
            if mask is not None:
                torch.where(mask[t].bool(), new, H[t], out=H[t + 1])
                torch.mul(new, mask[t], out=out[t])
        saved = {"H": H} if mask is None else {"H": H, "A": A}
        return [H[1:] if mask is None else out, H[steps]], saved

    def sequence_backward(self, spec: CellSpec, saved: dict[str, Tensor], grads: list[Tensor | None], weights: Weights, mask: Tensor | None):
        """Gradients of `sequence_forward`: (d xp, [dh0], [dR])."""
        H, A = saved["H"], saved.get("A")
        grad_out, grad_h = grads
        (weight_hh,) = weights
        new_h = A if A is not None else H[1:]
        dxp = torch.empty_like(new_h)
        dh = grad_h.clone() if grad_h is not None else H.new_zeros(H.shape[1:])
        rec = self.recurrence(spec)
        for t in range(H.shape[0] - 2, -1, -1):
            d, hn = dxp[t], new_h[t]
            if mask is not None:
                m = mask[t]
                torch.mul(dh, m, out=d)
                if grad_out is not None:
                    d.addcmul_(grad_out[t], m)
                dh.mul_(1 - m)
            elif grad_out is not None:
                torch.add(dh, grad_out[t], out=d)
            else:
                d.copy_(dh)
            d.addcmul_(d * hn, hn, value=-1)  # tanh'
            if mask is not None:
                rec.add_transposed_(dh, d, weight_hh)
            else:
                dh = rec.transposed(d, weight_hh)
        return dxp, [dh], [rec.grad(dxp, H[:-1], weight_hh)]


RNN = RNNFamily()
