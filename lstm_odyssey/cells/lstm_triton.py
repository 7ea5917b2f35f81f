"""Triton kernels for the LSTM family: the pointwise part of one step, forward and backward, as one
kernel each, with the cell's flags as compile-time constants; the matmuls stay with cuBLAS. The math is
`LSTM.step` element by element (the same in-place order as lstm_eager.sequence_forward and its backward);
tests hold both equal to the reference loop, on a GPU and under Triton's CPU interpreter.

One trial only ((T, B, kN) sequences); stacked trials run the eager path. Imported only where Triton
runs (`ops.triton_runs`). Kernel conventions (elements, rows, BLOCK): triton_common.py.

Compile-time flags of both kernels: I_BLOCK, F_BLOCK, O_BLOCK: the gate has its own block of weights
(F_BLOCK is false for CIFG, whose f = 1 - i, and for NFG); COUPLED: CIFG; TANH_IN / TANH_OUT: g / h are
tanh, else the identity; PEEP: peepholes; FGR: gate recurrence; MASK: variable lengths. OI OF OZ OO:
each block's index in the fused pre-activation; PI PF PO: each peephole's index in the peephole vector;
GI GF GO: each gate's index in the FGR state g (0 where absent).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .triton_common import BLOCK, elements, grid, tanh


@triton.jit
def _gate(pre, peephole, cell, ok, PEEP: tl.constexpr):
    """sigmoid(pre-activation + peephole * cell), stored over its pre-activation `pre`."""
    a = tl.load(pre, mask=ok, other=0.0)
    if PEEP:
        a += tl.load(peephole, mask=ok, other=0.0) * cell
    s = tl.sigmoid(a)
    tl.store(pre, s, mask=ok)
    return s


@triton.jit
def _store_gate_state(gate, prev, state, yg, keep, ok, MASK: tl.constexpr):
    """FGR: one gate's block of the new gate state g_t (the previous block `prev` where the mask keeps
    the state) into `state` and into the [y | g] row `yg`."""
    if MASK:
        gate = tl.where(keep, gate, tl.load(prev, mask=ok, other=0.0))
    tl.store(state, gate, mask=ok)
    tl.store(yg, gate, mask=ok)


@triton.jit
def _gate_grad(d_gate, gate, d_pre, dg, m, ok, FGR: tl.constexpr, MASK: tl.constexpr):
    """dL/d(a gate's pre-activation), stored at `d_pre` and returned: (dL/d gate) sigmoid'. FGR adds the
    new step's share m dL/dg of the gate's carried state gradient `dg`; under a mask the kept share
    (1 - m) dL/dg stays in `dg` for the previous step."""
    if FGR:
        d = tl.load(dg, mask=ok, other=0.0)
        if MASK:
            tl.store(dg, d - d * m, mask=ok)
        d_gate += d * m
    d_pre_value = d_gate * (gate - gate * gate)
    tl.store(d_pre, d_pre_value, mask=ok)
    return d_pre_value


@triton.jit
def _fwd_step(
    A, CP, CS, CNEW, HC, YP, YS, OUT, GP, GS, M, P, YG, total, N, KN, GN, SYG,
    I_BLOCK: tl.constexpr, F_BLOCK: tl.constexpr, COUPLED: tl.constexpr, O_BLOCK: tl.constexpr,
    TANH_IN: tl.constexpr, TANH_OUT: tl.constexpr, PEEP: tl.constexpr, FGR: tl.constexpr, MASK: tl.constexpr,
    OI: tl.constexpr, OF: tl.constexpr, OZ: tl.constexpr, OO: tl.constexpr,
    PI: tl.constexpr, PF: tl.constexpr, PO: tl.constexpr,
    GI: tl.constexpr, GF: tl.constexpr, GO: tl.constexpr, BLOCK: tl.constexpr,
):
    """One forward step after the matmul: activations and the new state.

    A (B, KN): this step's pre-activations W x + b + R y (+ R_g g), overwritten with the activations.
    CP, YP, GP: the previous c, y (B, N) and g (B, GN). CS, YS, GS: the new state (kept where MASK is 0).
    CNEW: the new c before the mask (MASK). HC: h(c) (TANH_OUT). OUT: the output y m (MASK). M (B,): the
    mask. P: the peephole vector (PEEP). YG (B, SYG): [y | g], the next step's matmul input (FGR).
    total = B N; KN, GN: widths of A and g. Unused pointers may be any tensor."""
    e, ok, b, j = elements(total, N, BLOCK)
    row = A + b * KN + j
    cp = tl.load(CP + e, mask=ok, other=0.0)
    z = tl.load(row + OZ * N, mask=ok, other=0.0)
    if TANH_IN:
        z = tanh(z)
    tl.store(row + OZ * N, z, mask=ok)
    c = z
    if I_BLOCK:
        i = _gate(row + OI * N, P + PI * N + j, cp, ok, PEEP)
        c = z * i
    if COUPLED:
        c += (1.0 - i) * cp
    elif F_BLOCK:
        f = _gate(row + OF * N, P + PF * N + j, cp, ok, PEEP)
        c += f * cp
    else:
        c += cp
    if TANH_OUT:
        hc = tanh(c)
        tl.store(HC + e, hc, mask=ok)
    else:
        hc = c
    if O_BLOCK:
        o = _gate(row + OO * N, P + PO * N + j, c, ok, PEEP)  # o's peephole sees the new cell
        y = hc * o
    else:
        y = hc
    if MASK:
        m = tl.load(M + b, mask=ok, other=0.0)
        keep = m > 0.5
        tl.store(CNEW + e, c, mask=ok)
        tl.store(CS + e, tl.where(keep, c, cp), mask=ok)
        ys = tl.where(keep, y, tl.load(YP + e, mask=ok, other=0.0))
        tl.store(OUT + e, y * m, mask=ok)
    else:
        keep = ok  # unused without a mask
        tl.store(CS + e, c, mask=ok)
        ys = y
    tl.store(YS + e, ys, mask=ok)
    if FGR:  # gate states, also into [y | gates] rows (YG) that feed the next step's single GEMM
        g = b * GN + j
        yg = YG + b * SYG + j
        tl.store(yg, ys, mask=ok)
        if I_BLOCK:
            _store_gate_state(i, GP + g + GI * N, GS + g + GI * N, yg + N + GI * N, keep, ok, MASK)
        if F_BLOCK:
            _store_gate_state(f, GP + g + GF * N, GS + g + GF * N, yg + N + GF * N, keep, ok, MASK)
        if O_BLOCK:
            _store_gate_state(o, GP + g + GO * N, GS + g + GO * N, yg + N + GO * N, keep, ok, MASK)


@triton.jit
def _bwd_step(
    A, D, CP, CNEW, HC, DY, GOUT, DC, DG, M, P, total, N, KN, SDY, SDG,
    I_BLOCK: tl.constexpr, F_BLOCK: tl.constexpr, COUPLED: tl.constexpr, O_BLOCK: tl.constexpr,
    TANH_IN: tl.constexpr, TANH_OUT: tl.constexpr, PEEP: tl.constexpr, FGR: tl.constexpr, MASK: tl.constexpr,
    HAS_GOUT: tl.constexpr,
    OI: tl.constexpr, OF: tl.constexpr, OZ: tl.constexpr, OO: tl.constexpr,
    PI: tl.constexpr, PF: tl.constexpr, PO: tl.constexpr,
    GI: tl.constexpr, GF: tl.constexpr, GO: tl.constexpr, BLOCK: tl.constexpr,
):
    """One backward step before the matmul: the pre-activation gradients from the carried ones.

    A (B, KN): this step's activations. D (B, KN): out, dL/d pre-activations. CP, CNEW: c_{t-1} and the
    new c_t; HC: h(c_t) (TANH_OUT). DY (rows of stride SDY): the carried dL/dy_t, left holding the kept
    state's share (MASK; the caller adds R^T D). GOUT: dL/d out_t (HAS_GOUT). DC: the carried dL/dc,
    in place to dL/dc_{t-1}. DG (rows of stride SDG): the carried dL/dg (FGR), left as DY. M (B,): the
    mask. P: the peephole vector (PEEP). total = B N; KN: the width of A and D."""
    e, ok, b, j = elements(total, N, BLOCK)
    row = A + b * KN + j
    drow = D + b * KN + j
    g = b * SDG + j
    dyp = DY + b * SDY + j
    dy = tl.load(dyp, mask=ok, other=0.0)
    dc = tl.load(DC + e, mask=ok, other=0.0)
    if HAS_GOUT:
        go_t = tl.load(GOUT + e, mask=ok, other=0.0)
    if MASK:
        m = tl.load(M + b, mask=ok, other=0.0)
        dy_new = dy * m
        if HAS_GOUT:
            dy_new += go_t * m
        dc_new = dc * m
        tl.store(dyp, dy - dy * m, mask=ok)  # the kept state's share; R^T d is added by the caller
    else:
        m = 1.0
        dy_new = dy
        if HAS_GOUT:
            dy_new += go_t
        dc_new = dc
    cp = tl.load(CP + e, mask=ok, other=0.0)
    c = tl.load(CNEW + e, mask=ok, other=0.0)
    if TANH_OUT:
        hc = tl.load(HC + e, mask=ok, other=0.0)
    else:
        hc = c
    dct = dc_new
    if O_BLOCK:
        o = tl.load(row + OO * N, mask=ok, other=0.0)
        dao = _gate_grad(dy_new * hc, o, drow + OO * N, DG + g + GO * N, m, ok, FGR, MASK)
        dhc = dy_new * o
    else:
        dhc = dy_new
    if TANH_OUT:
        dhc = dhc * (1.0 - hc * hc)
    dct += dhc
    if O_BLOCK:
        if PEEP:
            dct += dao * tl.load(P + PO * N + j, mask=ok, other=0.0)
    z = tl.load(row + OZ * N, mask=ok, other=0.0)
    dcp = dct
    if I_BLOCK:
        i = tl.load(row + OI * N, mask=ok, other=0.0)
        dz = dct * i
        di = dct * z
        if COUPLED:
            di -= dct * cp
            dcp = dct * (1.0 - i)
        dai = _gate_grad(di, i, drow + OI * N, DG + g + GI * N, m, ok, FGR, MASK)
    else:
        dz = dct
    if F_BLOCK:
        f = tl.load(row + OF * N, mask=ok, other=0.0)
        dcp = dct * f
        daf = _gate_grad(dct * cp, f, drow + OF * N, DG + g + GF * N, m, ok, FGR, MASK)
    if PEEP:
        if I_BLOCK:
            dcp += dai * tl.load(P + PI * N + j, mask=ok, other=0.0)
        if F_BLOCK:
            dcp += daf * tl.load(P + PF * N + j, mask=ok, other=0.0)
    if TANH_IN:
        dz = dz * (1.0 - z * z)
    tl.store(drow + OZ * N, dz, mask=ok)
    if MASK:
        dcp += dc - dc * m
    tl.store(DC + e, dcp, mask=ok)


def _flags(spec, n: int, peephole: Tensor | None, fgr: bool, mask: Tensor | None) -> dict:
    """The kernels' compile-time constants for this cell (see the module docstring)."""
    blocks, gates, peeps = spec.blocks, spec.computed_gates, spec.peephole_gates
    flags = {
        "I_BLOCK": "i" in blocks, "F_BLOCK": "f" in blocks, "COUPLED": spec.coupled, "O_BLOCK": "o" in blocks,
        "TANH_IN": spec.input_activation == "tanh", "TANH_OUT": spec.output_activation == "tanh",
        "PEEP": peephole is not None, "FGR": fgr, "MASK": mask is not None,
    }
    for g, name in (("i", "I"), ("f", "F"), ("z", "Z"), ("o", "O")):
        flags[f"O{name}"] = blocks.index(g) if g in blocks else 0
        if g != "z":
            flags[f"P{name}"] = peeps.index(g) if g in peeps else 0
            flags[f"G{name}"] = gates.index(g) if g in gates else 0
    return flags


def triton_sequence_forward(spec, lay, xp: Tensor, states: list[Tensor], weights: list, mask: Tensor | None):
    """Same contract and saved tensors as `lstm_eager.sequence_forward`. FGR: y and g are kept side by
    side ([y | g] rows), so that one matmul per step computes R y + R_g g."""
    h0, c0, *g0 = states
    weight_hh, peephole, weight_gg = weights
    steps, batch, kn = xp.shape
    n = h0.shape[-1]
    fgr = weight_gg is not None
    flags = _flags(spec, n, peephole, fgr, mask)
    acts = xp  # scratch: overwritten by the activations
    Y = xp.new_empty(steps + 1, batch, n)
    C = xp.new_empty(steps + 1, batch, n)
    Y[0], C[0] = h0, c0
    HC = xp.new_empty(steps, batch, n) if flags["TANH_OUT"] else None
    CN = xp.new_empty(steps, batch, n) if mask is not None else None
    out = xp.new_empty(steps, batch, n) if mask is not None else None
    G = None
    gn = 1
    if fgr:
        gn = g0[0].shape[-1]
        G = xp.new_empty(steps + 1, batch, gn)
        G[0] = g0[0]
        YG = xp.new_empty(steps + 1, batch, n + gn)  # [y | gates]: one GEMM per step for both
        YG[0, :, :n], YG[0, :, n:] = h0, g0[0]
        w_cat_t = torch.cat([weight_hh, lay.gg_full(weight_gg)], dim=1).t()
    whh_t = weight_hh.t()
    total = batch * n
    P = peephole if peephole is not None else acts
    Mk = mask.reshape(steps, batch) if mask is not None else None
    for t in range(steps):
        a = acts[t]
        if fgr:
            a.addmm_(YG[t], w_cat_t)
        else:
            a.addmm_(Y[t], whh_t)
        _fwd_step[grid(total)](
            a, C[t], C[t + 1], CN[t] if CN is not None else a, HC[t] if HC is not None else a,
            Y[t], Y[t + 1], out[t] if out is not None else a, G[t] if fgr else a, G[t + 1] if fgr else a,
            Mk[t] if Mk is not None else a, P, YG[t + 1] if fgr else a, total, n, kn, gn, n + gn,
            BLOCK=BLOCK, **flags,
        )
    finals = [Y[steps], C[steps]] + ([G[steps]] if fgr else [])
    return [Y[1:] if mask is None else out] + finals, {"acts": acts, "Y": Y, "C": C, "HC": HC, "CN": CN, "G": G}


def triton_sequence_backward(spec, lay, saved: dict[str, Tensor], grads: list, weights: list, mask: Tensor | None):
    """Same contract as `lstm_eager.sequence_backward`: (dL/d pre-activations, [dy0, dc0(, dg0)]); the
    weight gradients are one reduction by the caller, as for the eager sweep."""
    grad_out, grad_h, grad_c, grad_g = [g.contiguous() if g is not None else None for g in grads]  # kernels index densely
    weight_hh, peephole, weight_gg = weights
    acts, Y, C = saved["acts"], saved["Y"], saved["C"]
    HC, CN, G = saved.get("HC"), saved.get("CN"), saved.get("G")
    steps, batch, kn = acts.shape
    n = Y.shape[-1]
    fgr = weight_gg is not None
    flags = _flags(spec, n, peephole, fgr, mask)
    dpre = torch.empty_like(acts)
    dc = grad_c.clone() if grad_c is not None else Y.new_zeros(batch, n)
    gn = G.shape[-1] if fgr else 0
    dyg = Y.new_zeros(batch, n + gn)  # [dy | dg]: one GEMM per step for both
    dy, dg = dyg[:, :n], (dyg[:, n:] if fgr else None)
    if grad_h is not None:
        dy.copy_(grad_h)
    if fgr:
        if grad_g is not None:
            dg.copy_(grad_g)
        w_cat = torch.cat([weight_hh, lay.gg_full(weight_gg)], dim=1)
    total = batch * n
    P = peephole if peephole is not None else acts
    Mk = mask.reshape(steps, batch) if mask is not None else None
    for t in range(steps - 1, -1, -1):
        d = dpre[t]
        _bwd_step[grid(total)](
            acts[t], d, C[t], CN[t] if CN is not None else C[t + 1], HC[t] if HC is not None else d,
            dy, grad_out[t] if grad_out is not None else d, dc, dg if fgr else d,
            Mk[t] if Mk is not None else d, P, total, n, kn, n + gn, n + gn,
            HAS_GOUT=grad_out is not None, BLOCK=BLOCK, **flags,
        )
        w = w_cat if fgr else weight_hh
        if mask is not None:
            dyg.addmm_(d, w)
        else:
            torch.mm(d, w, out=dyg)
    return dpre, [dy.contiguous(), dc] + ([dg.contiguous()] if fgr else [])
