"""Exponential gates, the sLSTM of Beck et al. (2024), "xLSTM: Extended Long Short-Term Memory"
(arXiv 2405.04517), as the LSTM family computes it when `exponential_gates` is set (docs/equations.md,
"sLSTM"): the reference step and the eager sequence forward/backward.

    i~, f~, z~, o~ = W x_t + R y_{t-1} + b          R full, over heads, diagonal or none
    m_t = max(i~_t, log sigmoid(f~_t) + m_{t-1})     the stabiliser (log sigmoid(f~) = 0 without a forget gate;
                                                     m_t = i~_t where n_{t-1} = 0, as xLSTM's code starts)
    i_t = exp(i~_t - m_t),   f_t = exp(log sigmoid(f~_t) + m_{t-1} - m_t)
    c_t = f_t c_{t-1} + i_t g(z~_t),   n_t = f_t n_{t-1} + i_t
    y_t = sigmoid(o~_t) h(c_t / max(n_t, 1))

c and n are the unstabilised cell and normaliser times exp(-m_t), so their ratio, and y, do not depend
on m (tests compare with the unstabilised form). From the zero state n_t >= 1 at every step (the first
step has i_t = 1; then either i_t = 1 or f_t = 1), so max(n_t, 1) = n_t there: it only keeps a state
passed in with n near zero from dividing by it. State (y, c, n, m), zero at t = 0 unless passed in.
Imported by lstm.py, which hands over its `_Layout` (blocks, recurrence, activations).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Weights
from .ops import activation, activation_, activation_grad
from .spec import CellSpec


def step(spec: CellSpec, blocks: dict[str, Tensor], y_prev: Tensor, c_prev: Tensor, n_prev: Tensor, m_prev: Tensor):
    """One step with autograd from the pre-activations by block. Activations: z i f o c y (i and f
    stabilised, as they act on the stabilised c)."""
    log_f = F.logsigmoid(blocks["f"]) if "f" in blocks else torch.zeros_like(c_prev)
    m = torch.where(n_prev == 0, blocks["i"], torch.maximum(blocks["i"], log_f + m_prev))
    i = torch.exp(blocks["i"] - m)
    f = torch.exp(log_f + m_prev - m)
    z = activation(spec.input_activation, blocks["z"])
    c = f * c_prev + i * z
    n = f * n_prev + i
    y = activation(spec.output_activation, c / torch.clamp(n, min=1))
    acts = {"z": z, "i": i, "f": f, "c": c}
    if "o" in blocks:
        acts["o"] = torch.sigmoid(blocks["o"])
        y = y * acts["o"]
    acts["y"] = y
    return y, [y, c, n, m], acts


def sequence_forward(lay, xp: Tensor, states: list[Tensor], weights: Weights, mask: Tensor | None):
    """`step` over time-major `xp` (T, ..., B, kN) = W x + b without autograd; `xp` becomes the
    activations (i stabilised in its block, z, o). Returns ([out, y_T, c_T, n_T, m_T], saved)."""
    spec, col = lay.spec, lay.col
    weight_hh = weights[0]
    steps = xp.shape[0]
    shape = states[0].shape
    acts = xp
    Y, C, NN, M = (xp.new_empty((steps + 1, *shape)) for _ in range(4))  # kept states
    for buffer, start in zip((Y, C, NN, M), states):
        buffer[0] = start
    FG, Q, NNEW, SEL = (xp.new_empty((steps, *shape)) for _ in range(4))  # f, c/n and n (unmasked), max's share of i~
    DLF = xp.new_empty((steps, *shape)) if "f" in col else None  # d log sigmoid(f~) / d f~ = sigmoid(-f~)
    HQ = xp.new_empty((steps, *shape)) if lay.tanh_out else None
    out = xp.new_empty((steps, *shape)) if mask is not None else None
    for t in range(steps):
        a = acts[t]
        lay.rec.add_(a, Y[t], weight_hh)
        i_pre, z = a[..., col["i"]], a[..., col["z"]]
        if "f" in col:
            f_pre = a[..., col["f"]]
            torch.sigmoid(-f_pre, out=DLF[t])
            b = F.logsigmoid(f_pre).add_(M[t])  # log sigmoid(f~) + m_{t-1}
        else:
            b = M[t].clone()
        first = NN[t] == 0
        m = torch.where(first, i_pre, torch.maximum(i_pre, b))
        torch.sign(i_pre - b, out=SEL[t]).add_(1).mul_(0.5)  # torch.maximum's gradient split: 1, 1/2 (tie), 0
        SEL[t].masked_fill_(first, 1)
        torch.exp(b.sub_(m), out=FG[t])
        i_pre.sub_(m).exp_()
        activation_(spec.input_activation, z)
        c_new = torch.mul(FG[t], C[t]).addcmul_(i_pre, z)
        n_new = torch.mul(FG[t], NN[t], out=NNEW[t]).add_(i_pre)
        q = torch.div(c_new, n_new.clamp(min=1), out=Q[t])
        y = torch.tanh(q, out=HQ[t]) if HQ is not None else q  # h(c / n); tanh's kept for its derivative
        if "o" in col:
            y = y * a[..., col["o"]].sigmoid_()
        if mask is None:
            Y[t + 1], C[t + 1], NN[t + 1], M[t + 1] = y, c_new, n_new, m
        else:
            keep = mask[t].bool()
            for buffer, new in ((Y, y), (C, c_new), (NN, n_new), (M, m)):
                torch.where(keep, new, buffer[t], out=buffer[t + 1])
            torch.mul(y, mask[t], out=out[t])
    saved = {"acts": acts, "Y": Y, "C": C, "NN": NN, "M": M, "FG": FG, "Q": Q, "NNEW": NNEW, "SEL": SEL, "DLF": DLF, "HQ": HQ}
    return [Y[1:] if mask is None else out, Y[steps], C[steps], NN[steps], M[steps]], saved


def sequence_backward(lay, saved: dict[str, Tensor], grads: list[Tensor | None], weights: Weights, mask: Tensor | None):
    """The reverse sweep of `sequence_forward`: (d xp, [dy0, dc0, dn0, dm0], [dR, None, None])."""
    spec, col = lay.spec, lay.col
    weight_hh = weights[0]
    grad_out, *grad_states = grads + [None] * (5 - len(grads))
    acts, Y, C, NN = saved["acts"], saved["Y"], saved["C"], saved["NN"]
    FG, Q, NNEW, SEL, DLF, HQ = (saved.get(k) for k in ("FG", "Q", "NNEW", "SEL", "DLF", "HQ"))
    g_prime = activation_grad(spec.input_activation, acts[..., col["z"]])
    carried = [g.clone() if g is not None else Y.new_zeros(Y.shape[1:]) for g in grad_states]  # dy dc dn dm
    dpre = torch.empty_like(acts)
    for t in range(acts.shape[0] - 1, -1, -1):
        a, d = acts[t], dpre[t]
        if mask is not None:  # state_t = m new + (1 - m) old, out_t = m y_new
            m = mask[t]
            dy, dc, dn, dm = (g * m for g in carried)
            if grad_out is not None:
                dy.addcmul_(grad_out[t], m)
            for g in carried:
                g.mul_(1 - m)
        else:
            dy, dc, dn, dm = carried
            if grad_out is not None:
                dy = dy + grad_out[t]
        hq = HQ[t] if HQ is not None else Q[t]
        if "o" in col:  # y = o h(q)
            o = a[..., col["o"]]
            torch.mul(dy, hq, out=d[..., col["o"]]).mul_(o - o * o)
            dy = dy * o
        dq = dy * (1 - hq * hq) if HQ is not None else dy
        # q = c / max(n, 1)
        n_used = NNEW[t].clamp(min=1)
        dc = dc + dq / n_used
        dn = dn - torch.where(NNEW[t] >= 1, dq * Q[t] / n_used, 0)
        # c = f c_prev + i z, n = f n_prev + i
        i, f, z = a[..., col["i"]], FG[t], a[..., col["z"]]
        d_f = dc * C[t] + dn * NN[t]
        d_i = (dc * z + dn) * i  # through i = exp(i~ - m): d/di~ = i, d/dm = -i
        d_b = d_f * f  # through f = exp(b - m), b = log sigmoid(f~) + m_{t-1}
        torch.mul(dc, i, out=d[..., col["z"]])
        if g_prime is not None:
            d[..., col["z"]].mul_(g_prime[t])
        dm = dm - d_i - d_b
        # m = max(i~, b)
        torch.addcmul(d_i, dm, SEL[t], out=d[..., col["i"]])
        d_b = d_b + dm * (1 - SEL[t])
        if DLF is not None:
            torch.mul(d_b, DLF[t], out=d[..., col["f"]])
        previous = [lay.rec.transposed(d, weight_hh), dc * f, dn * f, d_b]
        if mask is not None:
            for g, p in zip(carried, previous):
                g.add_(p)
        else:
            carried = previous
    return dpre, carried, [lay.rec.grad(dpre, Y[:-1], weight_hh), None, None]
