"""The LSTM family's eager fused sequence (docs/equations.md, "LSTM"): `LSTM.step` over all steps without
autograd, in place into preallocated buffers (per-step views made once; on the CPU i, f and z under one
sigmoid), its reverse sweep, and the weight gradients as one reduction each (also after Triton's sweep).
It runs every cell without exponential gates (those have their own sweep, lstm_exponential.py) where
neither Triton nor the scan does. Imported by lstm.py, which hands over its `_Layout` (blocks, peepholes,
recurrence, activations); tensors may carry a trial axis (ops.py).
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import ops
from .base import Weights


def sequence_forward(lay, xp: Tensor, states: list[Tensor], weights: Weights, mask: Tensor | None):
    """`LSTM.step` over time-major `xp` (T, ..., B, kN) = W x + b, in place: `xp` becomes the gate
    activations (saved for backward). In-place ops into preallocated buffers and per-step views made
    once (a slice per op per step would cost as much as the op). Returns ([out, y_T, c_T(, g_T)], saved: the
    activations, y and c of every step, and h(c) (TANH_OUT), the unmasked new c (a mask), g (FGR) or None)."""
    h0, c0, *g0 = states
    weight_hh, peephole, weight_gg = weights
    steps, n = xp.shape[0], h0.shape[-1]
    spec, col, gates_if = lay.spec, lay.col, lay.gates_if
    fgr = weight_gg is not None
    acts = xp  # W x + b becomes the pre-activations, then the activations, in place
    Y = xp.new_empty((steps + 1, *h0.shape))  # states y (== outputs without a mask)
    C = xp.new_empty((steps + 1, *h0.shape))
    Y[0], C[0] = h0, c0
    HC = xp.new_empty((steps, *h0.shape)) if lay.tanh_out else None
    CN = xp.new_empty((steps, *h0.shape)) if mask is not None else None  # new cells (C holds the kept state)
    YN = xp.new_empty(h0.shape) if mask is not None else None
    out = xp.new_empty((steps, *h0.shape)) if mask is not None else None
    G = gg_t = None
    if fgr:
        G = xp.new_empty((steps + 1, *g0[0].shape))
        G[0] = g0[0]
        gg_t = lay.gg_full(weight_gg).mT
    rec, whh = lay.rec, weight_hh
    p = {g: peephole[..., s] for g, s in lay.peep.items()} if peephole is not None else {}
    # tanh(z) = 2 sigmoid(2z) - 1: with z's pre-activation doubled (its rows of W x + b and of R), one
    # sigmoid covers i, f and z together (they lead the block order i f z o)
    z_with_gates = lay.tanh_in and xp.device.type == "cpu"
    if z_with_gates:
        acts[..., col["z"]].mul_(2)
        whh = rec.scaled_rows(weight_hh, col["z"], 2)
    A = acts.unbind(0)
    blk = {b: acts[..., col[b]].unbind(0) for b in col}
    S_if = acts[..., : len(gates_if) * n].unbind(0) if gates_if else None
    S_ifz = acts[..., : col["z"].stop].unbind(0)
    both_peep = "i" in p and "f" in p
    if both_peep:  # one op adds p_i c and p_f c
        A_if = acts[..., : 2 * n].unflatten(-1, (2, n)).unbind(0)
        p_if = peephole[..., : 2 * n].unflatten(-1, (2, n))
        C_u = C.unsqueeze(-2).unbind(0)
    Yl, Cl = Y.unbind(0), C.unbind(0)
    HCl = HC.unbind(0) if HC is not None else None
    if mask is not None:
        CNl, outl, Ml, Kl = CN.unbind(0), out.unbind(0), mask.unbind(0), mask.bool().unbind(0)
    Gl = G.unbind(0) if fgr else None
    for t in range(steps):
        a, c_prev = A[t], Cl[t]
        rec.add_(a, Yl[t], whh)
        if fgr:
            ops.addmm_(a, Gl[t], gg_t)
        if both_peep:
            A_if[t].addcmul_(p_if, C_u[t])
        else:
            for g in gates_if:
                if g in p:
                    blk[g][t].addcmul_(p[g], c_prev)
        z = blk["z"][t]
        if z_with_gates:
            S_ifz[t].sigmoid_()
            z.mul_(2).sub_(1)
        else:
            if gates_if:
                S_if[t].sigmoid_()
            ops.activation_(spec.input_activation, z)
        c = CNl[t] if mask is not None else Cl[t + 1]
        if spec.normalized_gates:  # c = (z i + f c_prev) / (i + f)
            i, f = blk["i"][t], blk["f"][t]
            torch.mul(z, i, out=c).addcmul_(f, c_prev).div_(i + f)
        else:
            if "i" in col:  # JANET's shifted input gate sigmoid(i~ + beta), from s = sigmoid(i~)
                torch.mul(z, lay.shifted(blk["i"][t]) if lay.shift else blk["i"][t], out=c)
            else:
                c.copy_(z)
            if spec.coupled:  # c += (1 - s) c_prev
                c.add_(c_prev).addcmul_(blk["i"][t], c_prev, value=-1)
            elif "f" in col:
                c.addcmul_(blk["f"][t], c_prev)
            else:
                c.add_(c_prev)
        y = YN if mask is not None else Yl[t + 1]
        hc = ops.tanh_into(c, HCl[t]) if lay.tanh_out else c
        if "o" in col:
            o = blk["o"][t]
            if "o" in p:
                o.addcmul_(p["o"], c)
            o.sigmoid_()
            torch.mul(hc, o, out=y)
        else:
            y.copy_(hc)
        if fgr:
            gates = [blk[g][t] for g in spec.computed_gates]
            if mask is not None:
                torch.where(Kl[t], torch.cat(gates, dim=-1), Gl[t], out=Gl[t + 1])
            else:
                torch.cat(gates, dim=-1, out=Gl[t + 1])
        if mask is not None:
            torch.where(Kl[t], y, Yl[t], out=Yl[t + 1])
            torch.where(Kl[t], c, c_prev, out=Cl[t + 1])
            torch.mul(y, Ml[t], out=outl[t])
    if mask is None:
        out = Y[1:]
    finals = [Y[steps], C[steps]] + ([G[steps]] if fgr else [])
    return [out] + finals, {"acts": acts, "Y": Y, "C": C, "HC": HC, "CN": CN, "G": G}


def sequence_backward(lay, saved: dict[str, Tensor], grads: list[Tensor | None], weights: Weights, mask: Tensor | None):
    """The reverse sweep of `sequence_forward`: returns (dL/d pre-activations (T, ..., B, kN), [dy0,
    dc0(, dg0)]). The activations' derivatives are computed for all steps at once before the sweep."""
    grad_out, grad_h, grad_c, grad_g = grads
    weight_hh, peephole, weight_gg = weights
    spec, col, gates_if = lay.spec, lay.col, lay.gates_if
    acts, Y, C = saved["acts"], saved["Y"], saved["C"]
    HC, CN, G = saved.get("HC"), saved.get("CN"), saved.get("G")
    steps, n = acts.shape[0], Y.shape[-1]
    fgr = weight_gg is not None
    # derivative factors, all steps at once: sigmoid' = s - s^2, tanh' = 1 - t^2
    F = torch.addcmul(acts, acts, acts, value=-1)
    g_prime = ops.activation_grad(spec.input_activation, acts[..., col["z"]])  # None: g is the identity
    if g_prime is not None:
        F[..., col["z"]] = g_prime
    HD = torch.addcmul(torch.ones_like(HC), HC, HC, value=-1) if HC is not None else None
    dpre = torch.empty_like(acts)  # dL/d(pre-activation), all steps
    dy = grad_h.clone() if grad_h is not None else Y.new_zeros(Y.shape[1:])  # dL/d(state y_t), carried
    dc = grad_c.clone() if grad_c is not None else Y.new_zeros(Y.shape[1:])
    dg = gg_full = None
    if fgr:
        dg = grad_g.clone() if grad_g is not None else Y.new_zeros(G.shape[1:])
        gg_full = lay.gg_full(weight_gg)
    p = {g: peephole[..., s] for g, s in lay.peep.items()} if peephole is not None else {}
    D = dpre.unbind(0)
    Db = {b: dpre[..., col[b]].unbind(0) for b in col}
    Ab = {b: acts[..., col[b]].unbind(0) for b in col}
    Fb = {b: F[..., col[b]].unbind(0) for b in col}
    if gates_if:
        D_if = dpre[..., : len(gates_if) * n].unbind(0)
        F_if = F[..., : len(gates_if) * n].unbind(0)
    Cl = C.unbind(0)
    CNl = CN.unbind(0) if CN is not None else Cl[1:]
    HCl = HC.unbind(0) if HC is not None else CNl
    HDl = HD.unbind(0) if HD is not None else None
    GOl = grad_out.unbind(0) if grad_out is not None else None
    if mask is not None:
        Ml, Keep = mask.unbind(0), (1 - mask).unbind(0)
    for t in range(steps - 1, -1, -1):
        d, c_prev = D[t], Cl[t]
        if mask is not None:  # state_t = m new + (1 - m) old and out_t = m y_new
            m = Ml[t]
            dy_new = dy * m
            if GOl is not None:
                dy_new.addcmul_(GOl[t], m)
            dc_new = dc * m
            dg_new = dg * m if fgr else None
            dy.mul_(Keep[t])
            dc.mul_(Keep[t])
            if fgr:
                dg.mul_(Keep[t])
        else:  # dy is replaced by R^T d at the end of the step, so dy_new may be updated in place
            dy_new = dy.add_(GOl[t]) if GOl is not None else dy
            dc_new, dg_new = dc, dg
        # y = h(c) o
        if "o" in col:
            do = Db["o"][t]
            torch.mul(dy_new, HCl[t], out=do)
            if fgr:
                do.add_(dg_new[..., lay.gate["o"]])
            do.mul_(Fb["o"][t])
            dhc = dy_new * Ab["o"][t]
        else:
            dhc = dy_new
        # dc_total = dc_new + dhc h'(c) + do p_o
        if HDl is not None:
            dhc.mul_(HDl[t])
        dct = dhc.add_(dc_new)
        if "o" in p:
            dct.addcmul_(Db["o"][t], p["o"])
        # c = z i + f c_prev (f = 1 - i for CIFG, f = 1 without a forget gate)
        dz = Db["z"][t]
        dc_prev = dct
        d_shifted = None
        if spec.normalized_gates:  # c = (z i + f c_prev) / (i + f): d/di = (z - c) / (i + f), d/df = (c_prev - c) / (i + f)
            i, f, c_new = Ab["i"][t], Ab["f"][t], CNl[t]
            scale = dct / (i + f)
            torch.mul(scale, i, out=dz)
            torch.mul(scale, Ab["z"][t] - c_new, out=Db["i"][t])
            torch.mul(scale, c_prev - c_new, out=Db["f"][t])
            dc_prev = scale * f
        elif "i" in col:
            i = Ab["i"][t]
            if lay.shift:  # JANET: c = z sigmoid(i~ + beta) + (1 - s) c_prev; the shifted gate's share joins after s'
                shifted = lay.shifted(i)
                torch.mul(dct, shifted, out=dz)
                d_shifted = dct * Ab["z"][t] * (shifted - shifted * shifted)
                torch.mul(dct, c_prev, out=Db["i"][t]).neg_()
            else:
                torch.mul(dct, i, out=dz)
                torch.mul(dct, Ab["z"][t], out=Db["i"][t])
                if spec.coupled:
                    Db["i"][t].addcmul_(dct, c_prev, value=-1)
            if spec.coupled:
                dc_prev = torch.addcmul(dct, dct, i, value=-1)
        else:
            dz.copy_(dct)
        if "f" in col and not spec.normalized_gates:
            torch.mul(dct, c_prev, out=Db["f"][t])
            dc_prev = dct * Ab["f"][t]
        if gates_if:
            if fgr:
                for g in gates_if:
                    Db[g][t].add_(dg_new[..., lay.gate[g]])
            D_if[t].mul_(F_if[t])
            if d_shifted is not None:
                Db["i"][t].add_(d_shifted)
            for g in gates_if:
                if g in p:
                    dc_prev.addcmul_(Db[g][t], p[g])
        if g_prime is not None:
            dz.mul_(Fb["z"][t])
        # carry to step t-1
        if mask is not None:
            lay.rec.add_transposed_(dy, d, weight_hh)
            dc.add_(dc_prev)
            if fgr:
                ops.addmm_(dg, d, gg_full)
        else:
            dy = lay.rec.transposed(d, weight_hh)
            dc = dc_prev
            if fgr:
                dg = ops.mm(d, gg_full)
    return dpre, [dy, dc] + ([dg] if fgr else [])


def weight_grads(lay, saved: dict[str, Tensor], dpre: Tensor, weights: Weights) -> Weights:
    """dR, dpeephole and dR_g from the pre-activation gradients of every step: one reduction each."""
    weight_hh, peephole, weight_gg = weights
    Y, C, CN, G = saved["Y"], saved["C"], saved.get("CN"), saved.get("G")
    d_whh = lay.rec.grad(dpre, Y[:-1], weight_hh)
    d_gg = lay.gg_rows(ops.sum_over_steps(dpre, G[:-1])) if weight_gg is not None else None
    d_peep = None
    if peephole is not None:
        c_new = CN if CN is not None else C[1:]
        parts = [ops.sum_over_steps_and_batch(dpre[..., lay.col[g]] * (c_new if g == "o" else C[:-1])) for g in lay.spec.peephole_gates]
        d_peep = torch.cat(parts, dim=-1).view_as(peephole)
    return [d_whh, d_peep, d_gg]
