"""The LSTM family's sequences for cells that are parallel in time (`CellSpec.parallel_in_time`: no
recurrent weights, no peephole into i or f, no FGR, sigmoid gates; minGRU and minLSTM of Feng et al.
2024, "Were RNNs All We Needed?", arXiv 2410.01201): every gate comes from x_t alone, so the cell

    c_t = a_t c_{t-1} + b_t,   a_t = f_t,   b_t = i_t g(z~_t)

is a linear recurrence that `ops.linear_scan` computes for all steps at once (in log space, Heinsen
2023), and the backward sweep is the same scan run in reverse: lambda_t = dL/dc_t (direct) + a_{t+1}
lambda_{t+1}. Steps past a length keep the state (a = 1, b = 0). The output y_t = o_t h(c_t), with
o_t = sigmoid(o~_t + p_o c_t), is pointwise. No autograd; tensors may carry a trial axis (ops.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import ops
from .base import Weights


def _gates(lay, acts: Tensor, log_space: bool) -> tuple[Tensor, Tensor | None]:
    """In place: each gate block's sigmoid and g(z~) into `acts`; returns (the decay a = f of the
    recurrence, or log a for the log-space scan, computed stably from the pre-activations; the gain: the
    input gate as it multiplies g(z~), None when it is one)."""
    spec, col = lay.spec, lay.col
    log_a = _log_decay(lay, acts) if log_space else None
    for g in lay.gates_if:
        acts[..., col[g]].sigmoid_()
    ops.activation_(spec.input_activation, acts[..., col["z"]])
    if log_space:
        return log_a, _gain(lay, acts)
    if spec.coupled:
        a = 1 - acts[..., col["i"]]
    elif spec.normalized_gates:  # f / (i + f)
        a = acts[..., col["f"]] / (acts[..., col["f"]] + acts[..., col["i"]])
    elif "f" in col:
        a = acts[..., col["f"]].clone()
    else:
        a = torch.ones_like(acts[..., col["z"]])
    return a, _gain(lay, acts)


def _log_decay(lay, acts: Tensor) -> Tensor:
    """log a from the pre-activations: finite where a itself would round to 0."""
    spec, col = lay.spec, lay.col
    if spec.coupled:  # f = 1 - sigmoid(i~): log f = -softplus(i~)
        return -F.softplus(acts[..., col["i"]])
    if "f" not in col:
        return torch.zeros_like(acts[..., col["z"]])
    log_f = F.logsigmoid(acts[..., col["f"]])
    if spec.normalized_gates:  # f / (i + f): log f - log(i + f)
        return log_f - torch.logaddexp(log_f, F.logsigmoid(acts[..., col["i"]]))
    return log_f


def _gain(lay, acts: Tensor) -> Tensor | None:
    """The input gate as it multiplies g(z~), from the gates' sigmoids: i, i / (i + f) (minLSTM), JANET's
    sigmoid(i~ + beta), or None without an input gate."""
    col = lay.col
    if "i" not in col:
        return None
    s = acts[..., col["i"]]
    if lay.spec.normalized_gates:
        return s / (s + acts[..., col["f"]])
    return lay.shifted(s) if lay.shift else s


def sequence_forward(lay, xp: Tensor, states: list[Tensor], weights: Weights, mask: Tensor | None):
    """The whole sequence from `xp` (T, ..., B, kN) = W x + b (it becomes the activations): ([out, y_T,
    c_T], saved: activations, cells, the decay a (or log a), h(c))."""
    col = lay.col
    y0, c0 = states
    _, peephole, _ = weights
    acts = xp
    log_space = ops.scan_in_log_space(xp)
    decay, gain = _gates(lay, acts, log_space)
    C = xp.new_empty((xp.shape[0] + 1, *c0.shape))
    C[0] = c0
    c = C[1:]
    if gain is not None:  # b = gain g(z~), then the scan turns it into c in place
        torch.mul(acts[..., col["z"]], gain, out=c)
    else:
        c.copy_(acts[..., col["z"]])
    if mask is not None:  # past a length a = 1 (log a = 0) and b = 0: the state stays
        decay.masked_fill_(mask == 0, 0.0 if log_space else 1.0)
        c.mul_(mask)
    ops.linear_scan(decay, c, c0, out=c)
    HC = torch.tanh(c) if lay.tanh_out else None
    hc = HC if HC is not None else c
    if "o" in col:
        o = acts[..., col["o"]]
        if peephole is not None:
            o.addcmul_(peephole, c)
        y = hc * o.sigmoid_()
    else:
        y = hc.clone()  # the output is not the saved c
    if mask is None:
        final_y = y[-1]
    else:
        final_y = _last_valid(y, y0, mask)[0]
        y.mul_(mask)
    saved = {"acts": acts, "C": C, "DECAY": decay, "HC": HC, "Y0": y0}
    return [y, final_y, C[-1]], saved


def _last_index(mask: Tensor) -> Tensor:
    """Per sequence, the step whose state the mask keeps at the end (1..T), or 0 when none is valid."""
    steps = torch.arange(1, mask.shape[0] + 1, device=mask.device, dtype=mask.dtype).view(-1, *[1] * (mask.dim() - 1))
    return (mask * steps).amax(0, keepdim=True).long()


def _last_valid(y: Tensor, y0: Tensor, mask: Tensor) -> Tensor:
    """y at each sequence's last valid step (y0 where none is), as the sequential path keeps it."""
    index = _last_index(mask).expand(1, *y.shape[1:])
    return torch.cat([y0.unsqueeze(0), y]).gather(0, index)


def sequence_backward(lay, saved: dict[str, Tensor], grads: list[Tensor | None], weights: Weights, mask: Tensor | None):
    """Gradients of `sequence_forward`: (d xp, [dy0, dc0], [None, d peephole, None])."""
    spec, col = lay.spec, lay.col
    _, peephole, _ = weights
    grad_out, grad_y, grad_c = grads + [None] * (3 - len(grads))
    acts, C, decay, HC, y0 = saved["acts"], saved["C"], saved["DECAY"], saved.get("HC"), saved["Y0"]
    c, c_prev = C[1:], C[:-1]
    dy = grad_out.clone() if grad_out is not None else torch.zeros_like(c)
    dy0 = torch.zeros_like(y0)
    if mask is not None:
        dy.mul_(mask)
    if grad_y is not None:  # the final y is y at the last valid step (or y0)
        if mask is None:
            dy[-1] += grad_y
        else:
            index = _last_index(mask)
            padded = torch.cat([dy0.unsqueeze(0), dy])
            padded.scatter_add_(0, index.expand(1, *dy.shape[1:]), grad_y.unsqueeze(0))
            dy, dy0 = padded[1:], padded[0]
    dpre = torch.empty_like(acts)
    # y = o h(c), o = sigmoid(o~ + p_o c)
    hc = HC if HC is not None else c
    if "o" in col:
        o = acts[..., col["o"]]
        d_o = torch.mul(dy, hc, out=dpre[..., col["o"]]).mul_(o - o * o)
        dy = dy * o
    dc = dy * (1 - hc * hc) if HC is not None else dy
    if peephole is not None:
        dc = dc + d_o * peephole
    # c_t = a_t c_{t-1} + b_t, backwards: lambda_t = dc_t + a_{t+1} lambda_{t+1} (lambda_T += grad_c)
    lam = ops.linear_scan_adjoint(decay, dc, grad_c if grad_c is not None else torch.zeros_like(c[0]))
    dc0 = lam[0] * (decay[0].exp() if ops.scan_in_log_space(decay) else decay[0])
    if mask is not None:
        lam = lam * mask
    # b = gain g(z~), a = f
    z = acts[..., col["z"]]
    d_gain = lam * z
    d_f = lam * c_prev
    if "i" in col:
        s = acts[..., col["i"]]
        if spec.normalized_gates:  # gain = i / (i + f), f' = f / (i + f): d/di = f (d_gain - d_f') / (i + f)²
            f = acts[..., col["f"]]
            total = s + f
            torch.mul(lam, s / total, out=dpre[..., col["z"]])
            share = (d_gain - d_f) / (total * total)
            torch.mul(share * f, s - s * s, out=dpre[..., col["i"]])
            torch.mul(share * -s, f - f * f, out=dpre[..., col["f"]])
        else:
            gain = _gain(lay, acts)
            torch.mul(lam, gain, out=dpre[..., col["z"]])
            d_pre_i = torch.mul(d_gain, gain - gain * gain, out=dpre[..., col["i"]])
            if spec.coupled:  # f = 1 - s
                d_pre_i.addcmul_(d_f, s - s * s, value=-1)
    else:
        dpre[..., col["z"]] = lam
    if "f" in col and not spec.normalized_gates:
        f = acts[..., col["f"]]
        torch.mul(d_f, f - f * f, out=dpre[..., col["f"]])
    g_prime = ops.activation_grad(spec.input_activation, z)
    if g_prime is not None:
        dpre[..., col["z"]].mul_(g_prime)
    d_peep = ops.sum_over_steps_and_batch(d_o * c).view_as(peephole) if peephole is not None else None
    return dpre, [dy0, dc0], [None, d_peep, None]
