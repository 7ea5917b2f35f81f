"""The GRU family (docs/equations.md, "GRU"): reset applied after R h (cuDNN's and torch's, `gru`, two
biases) or before it (Cho et al.'s, `gru_cho`, one bias), as the `GRU` family object.

Blocks ``r u n`` (torch's ``r z n``) fused in one matrix; state h. Shapes: see ops.py (one trial 2-D,
stacked trials with K first).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import ops
from .base import Family, TorchEquivalent, Weights
from .spec import CellSpec


class GRUFamily(Family):
    name = "gru"
    gate_names = "runh"
    recurrent_names = ("weight_hh", "bias_hh")
    keras_name = "GRU"
    torch_equivalent = TorchEquivalent("gru", nn.GRU, torch._VF.gru)

    def parameter_shapes(self, spec: CellSpec, input_size: int, hidden_size: int) -> dict[str, tuple[int, ...]]:
        """W, R, b over r u n; reset after R h keeps R h's own bias b_hh (it sits inside r * (R_n h + b_hn))."""
        shapes = super().parameter_shapes(spec, input_size, hidden_size)
        if spec.num_biases == 2:
            shapes["bias_hh"] = (3 * hidden_size,)
        return shapes

    def step(self, spec: CellSpec, x_proj: Tensor, state: list[Tensor], weights: Weights):
        """h_t = (1 - u) n + u h_{t-1}, with n = tanh(W_n x + r * (R_n h + b_hn)) (reset after) or
        tanh(W_n x + R_n (r * h)) (reset before). Activations by name: r u n h."""
        (h_prev,), (weight_hh, bias_hh) = state, weights
        n = h_prev.shape[-1]
        x_r, x_u, x_n = x_proj.split(n, dim=-1)
        if spec.reset == "after":
            h_r, h_u, h_n = ops.addmm(bias_hh, h_prev, weight_hh.mT).split(n, dim=-1)
            r = torch.sigmoid(x_r + h_r)
            u = torch.sigmoid(x_u + h_u)
            cand = torch.tanh(x_n + r * h_n)
        else:
            h_r, h_u = (h_prev @ weight_hh[..., : 2 * n, :].mT).split(n, dim=-1)
            r = torch.sigmoid(x_r + h_r)
            u = torch.sigmoid(x_u + h_u)
            cand = torch.tanh(x_n + (r * h_prev) @ weight_hh[..., 2 * n :, :].mT)
        h = (1 - u) * cand + u * h_prev
        return h, [h], {"r": r, "u": u, "n": cand, "h": h}

    def kernel_problem(self, spec: CellSpec) -> str | None:
        """The Triton kernels compute every GRU cell (both resets; the family has no other flags)."""
        return None

    def sequence_forward(self, spec: CellSpec, xp: Tensor, states: list[Tensor], weights: Weights, mask: Tensor | None):
        """Triton's per-step kernels where they run (gru_triton.py), else `eager_sequence_forward`."""
        if ops.triton_runs(xp):
            from . import gru_triton  # imports triton, which only CUDA builds of torch ship

            return gru_triton.triton_sequence_forward(spec, xp, states, weights, mask)
        return eager_sequence_forward(spec, xp, states, weights, mask)

    def sequence_backward(self, spec: CellSpec, saved: dict[str, Tensor], grads: list[Tensor | None], weights: Weights, mask: Tensor | None):
        """The reverse sweep (Triton's kernels or eager), then the weight gradients in one reduction."""
        if ops.triton_runs(saved["acts"]):
            from . import gru_triton  # imports triton, which only CUDA builds of torch ship

            dxp, dhh, dstates = gru_triton.triton_sequence_backward(spec, saved, grads, weights, mask)
        else:
            dxp, dhh, dstates = _eager_sequence_backward(spec, saved, grads, weights, mask)
        return dxp, dstates, _weight_grads(spec, saved, dxp, dhh, weights)


GRU = GRUFamily()


def eager_sequence_forward(spec: CellSpec, xp: Tensor, states: list[Tensor], weights: Weights, mask: Tensor | None):
    """`GRU.step` over time-major `xp` (T, ..., B, 3N) = W x + b with in-place ops. Returns
    ([out, h_T], saved: the activations r u n, h of every step, and HN: R_n h + b_hn (after) or r * h)."""
    (h0,), (weight_hh, bias_hh) = states, weights
    steps, n = xp.shape[0], h0.shape[-1]
    after = spec.reset == "after"
    acts = torch.empty_like(xp)  # r u n
    H = xp.new_empty((steps + 1, *h0.shape))
    H[0] = h0
    HN = xp.new_empty((steps, *h0.shape))  # reset after: R_n h + b_hn; before: r * h
    h_new = xp.new_empty(h0.shape) if mask is not None else None
    out = xp.new_empty((steps, *h0.shape)) if mask is not None else None
    w_t = weight_hh.mT
    w_ru_t, w_n_t = weight_hh[..., : 2 * n, :].mT, weight_hh[..., 2 * n :, :].mT
    for t in range(steps):
        a, h, x = acts[t], H[t], xp[t]
        if after:
            hh = ops.addmm(bias_hh, h, w_t)
            torch.add(x[..., : 2 * n], hh[..., : 2 * n], out=a[..., : 2 * n]).sigmoid_()
            torch.mul(a[..., :n], hh[..., 2 * n :], out=HN[t])
            ops.tanh_(torch.add(x[..., 2 * n :], HN[t], out=a[..., 2 * n :]))
            HN[t].copy_(hh[..., 2 * n :])
        else:
            ops.addmm(x[..., : 2 * n], h, w_ru_t, out=a[..., : 2 * n]).sigmoid_()
            torch.mul(a[..., :n], h, out=HN[t])
            ops.tanh_(ops.addmm(x[..., 2 * n :], HN[t], w_n_t, out=a[..., 2 * n :]))
        cand, u = a[..., 2 * n :], a[..., n : 2 * n]
        new = h_new if mask is not None else H[t + 1]
        torch.sub(h, cand, out=new)
        new.mul_(u).add_(cand)  # (1 - u) n + u h
        if mask is not None:
            torch.where(mask[t].bool(), new, h, out=H[t + 1])
            torch.mul(new, mask[t], out=out[t])
    return [H[1:] if mask is None else out, H[steps]], {"acts": acts, "H": H, "HN": HN}


def _eager_sequence_backward(spec: CellSpec, saved: dict[str, Tensor], grads: list[Tensor | None], weights: Weights, mask: Tensor | None):
    """The reverse sweep of `eager_sequence_forward`: (d xp, d(R h + b_hh) for reset after or None, [dh0])."""
    acts, H, HN = saved["acts"], saved["H"], saved["HN"]
    grad_out, grad_h = grads
    weight_hh, _ = weights
    n = H.shape[-1]
    after = spec.reset == "after"
    dxp = torch.empty_like(acts)
    dhh = torch.empty_like(acts) if after else None  # gradient of R h + b_hh
    dh = grad_h.clone() if grad_h is not None else H.new_zeros(H.shape[1:])
    w_ru, w_n = weight_hh[..., : 2 * n, :], weight_hh[..., 2 * n :, :]
    for t in range(acts.shape[0] - 1, -1, -1):
        a, d, h = acts[t], dxp[t], H[t]
        r, u, cand = a[..., :n], a[..., n : 2 * n], a[..., 2 * n :]
        if mask is not None:
            m = mask[t]
            dnew = dh * m
            if grad_out is not None:
                dnew.addcmul_(grad_out[t], m)
            dh.mul_(1 - m)
        else:
            dnew = dh.add_(grad_out[t]) if grad_out is not None else dh
        dn = d[..., 2 * n :]
        torch.mul(dnew, 1 - u, out=dn)
        dn.addcmul_(dn * cand, cand, value=-1)  # tanh'
        torch.mul(dnew, h - cand, out=d[..., n : 2 * n])  # du
        dh_prev = dnew * u
        if after:
            torch.mul(dn, HN[t], out=d[..., :n])  # dr
            e = dhh[t]
            torch.mul(dn, r, out=e[..., 2 * n :])
        else:
            d_rh = ops.mm(dn, w_n)
            torch.mul(d_rh, h, out=d[..., :n])
            dh_prev.addcmul_(d_rh, r)
        s = a[..., : 2 * n]
        d[..., : 2 * n].mul_(torch.addcmul(s, s, s, value=-1))
        if after:
            e[..., : 2 * n] = d[..., : 2 * n]
            ops.addmm_(dh_prev, e, weight_hh)
        else:
            ops.addmm_(dh_prev, d[..., : 2 * n], w_ru)
        if mask is not None:
            dh.add_(dh_prev)
        else:
            dh = dh_prev
    return dxp, dhh, [dh]


def _weight_grads(spec: CellSpec, saved: dict[str, Tensor], dxp: Tensor, dhh: Tensor | None, weights: Weights) -> Weights:
    """dR (and db_hh) from the per-step pre-activation gradients of the whole sequence: reset after R h,
    d(R h + b_hh) is `dhh`; reset before, n's rows multiply r * h (HN) instead of h."""
    H, HN = saved["H"], saved["HN"]
    _, bias_hh = weights
    if spec.reset == "after":
        return [ops.sum_over_steps(dhh, H[:-1]), ops.sum_over_steps_and_batch(dhh).view_as(bias_hh)]
    n = H.shape[-1]
    d_ru = ops.sum_over_steps(dxp[..., : 2 * n], H[:-1])
    return [torch.cat([d_ru, ops.sum_over_steps(dxp[..., 2 * n :], HN)], dim=-2), None]
