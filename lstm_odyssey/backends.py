"""Fast backends for `RecurrentLayer`: the same cells as `cells.py`, run faster.

* ``loop``: the reference time loop of `layers.py` (autograd records every op of every step).
* ``torch``: torch's own kernels (`nn.LSTM`, `nn.GRU`, `nn.RNN`; cuDNN on a GPU) for the cells that are
  exactly torch's (`np`, `gru`, `rnn`).
* ``fused``: one `autograd.Function` per layer-direction over the whole sequence, with a hand-written
  backward. The forward runs the step math of `cells.py` without autograd (a few in-place ops per step),
  the backward walks the sequence once in reverse and computes every weight gradient with one matmul
  over all steps at the end. No compiler, any device, any dtype; activation memory is linear in T.
  On CUDA with Triton the pointwise part of each step is one hand-written Triton kernel
  (`_triton_lstm.py`, `_triton_gru.py`; the cell's flags are compile-time constants), next to the
  cuBLAS matmul: two launches per step instead of a dozen.
* ``graph`` (CUDA only): ``fused`` with each sequence's forward and backward captured as CUDA graphs
  the second time a shape is met (bounded LRU cache), so that the per-step launches cost one launch.
  The first call of a shape pays Triton's compilation (cached on disk across processes) and capture.

`select` is what ``backend="auto"`` calls: the fastest backend that can honour the request. Every
backend is tested equal to ``loop`` (tests/test_backends.py).
"""

from __future__ import annotations

import collections
import functools
import importlib.util
import os
from collections.abc import Callable

import torch
from torch import Tensor

from . import cells
from .cells import CellSpec

BACKENDS = ("auto", "loop", "torch", "fused", "graph")
TORCH_CELLS = ("np", "gru", "rnn")


# -- which backend can do what ------------------------------------------------------------


def torch_able(spec: CellSpec) -> bool:
    """True when torch has a kernel for exactly this cell."""
    return any(spec == cells.PRESETS[name] for name in TORCH_CELLS)


def fused_able(spec: CellSpec) -> bool:
    """The fused sequence functions cover every family (LSTM flags, both GRU resets, tanh RNN)."""
    return spec.family in SEQUENCE_FUNCTIONS


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


# -- the LSTM family over a whole sequence, without autograd ------------------------------


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


class _Layout:
    """Column ranges of each block in the fused pre-activation, and of each gate in the FGR state."""

    def __init__(self, spec: CellSpec, n: int) -> None:
        self.spec, self.n = spec, n
        self.col = {b: slice(j * n, (j + 1) * n) for j, b in enumerate(spec.blocks)}
        self.peep = {g: slice(j * n, (j + 1) * n) for j, g in enumerate(spec.peephole_gates)}
        self.gate = {g: slice(j * n, (j + 1) * n) for j, g in enumerate(spec.computed_gates)}
        self.tanh_in = spec.input_activation == "tanh"
        self.tanh_out = spec.output_activation == "tanh"


def lstm_forward(
    spec: CellSpec,
    xp: Tensor,
    h0: Tensor,
    c0: Tensor,
    g0: Tensor | None,
    weight_hh: Tensor,
    peephole: Tensor | None,
    weight_gg: Tensor | None,
    mask: Tensor | None,
) -> tuple[list[Tensor], dict[str, Tensor]]:
    """The LSTM family over time-major `xp` (T, B, kN) = W x + b; `mask` (T, B, 1) of 0/1 or None.
    `xp` is scratch: it is overwritten by the gate activations (saved for backward).

    Same math as `cells.lstm_step` (SPEC.md §1), written with in-place ops into preallocated buffers
    and per-step views made once (a slice per op per step would cost as much as the op).
    Returns ([out, h_T, c_T(, g_T)], saved tensors for `lstm_backward`).
    """
    steps, batch, _ = xp.shape
    n = h0.shape[-1]
    lay = _Layout(spec, n)
    col = lay.col
    fgr = weight_gg is not None
    acts = xp  # W x + b becomes the pre-activations, then the activations, in place
    Y = xp.new_empty(steps + 1, batch, n)  # states y (== outputs without a mask)
    C = xp.new_empty(steps + 1, batch, n)
    Y[0], C[0] = h0, c0
    HC = xp.new_empty(steps, batch, n) if lay.tanh_out else None
    CN = xp.new_empty(steps, batch, n) if mask is not None else None  # new cells (C holds the kept state)
    YN = xp.new_empty(batch, n) if mask is not None else None
    out = xp.new_empty(steps, batch, n) if mask is not None else None
    G = gg_t = None
    if fgr:
        G = xp.new_empty(steps + 1, batch, g0.shape[-1])
        G[0] = g0
        gg_t = _gg_full(lay, weight_gg).t()
    whh_t = weight_hh.t()
    p = {g: peephole[s] for g, s in lay.peep.items()} if peephole is not None else {}
    gates_if = [g for g in ("i", "f") if g in col]  # adjacent at the front of i f z o
    # tanh(z) = 2 sigmoid(2z) - 1: with z's pre-activation doubled (its rows of W x + b and of R), one
    # sigmoid covers i, f and z together (they lead the block order i f z o)
    z_with_gates = lay.tanh_in and xp.device.type == "cpu"
    if z_with_gates:
        acts[:, :, col["z"]].mul_(2)
        whh_t = weight_hh.clone()
        whh_t[col["z"]] *= 2
        whh_t = whh_t.t()
    A = acts.unbind(0)
    blk = {b: acts[:, :, col[b]].unbind(0) for b in col}
    S_if = acts[:, :, : len(gates_if) * n].unbind(0) if gates_if else None
    S_ifz = acts[:, :, : col["z"].stop].unbind(0)
    both_peep = "i" in p and "f" in p
    if both_peep:  # one op adds p_i c and p_f c
        A_if = acts[:, :, : 2 * n].unflatten(2, (2, n)).unbind(0)
        p_if = peephole[: 2 * n].view(2, n)
        C_u = C.unsqueeze(2).unbind(0)
    Yl, Cl = Y.unbind(0), C.unbind(0)
    HCl = HC.unbind(0) if HC is not None else None
    if mask is not None:
        CNl, outl, Ml, Kl = CN.unbind(0), out.unbind(0), mask.unbind(0), mask.bool().unbind(0)
    Gl = G.unbind(0) if fgr else None
    for t in range(steps):
        a, c_prev = A[t], Cl[t]
        a.addmm_(Yl[t], whh_t)
        if fgr:
            a.addmm_(Gl[t], gg_t)
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
            if lay.tanh_in:
                tanh_(z)
        c = CNl[t] if mask is not None else Cl[t + 1]
        if "i" in col:
            torch.mul(z, blk["i"][t], out=c)
        else:
            c.copy_(z)
        if spec.coupled:  # c += (1 - i) c_prev
            c.add_(c_prev).addcmul_(blk["i"][t], c_prev, value=-1)
        elif "f" in col:
            c.addcmul_(blk["f"][t], c_prev)
        else:
            c.add_(c_prev)
        y = YN if mask is not None else Yl[t + 1]
        hc = tanh_into(c, HCl[t]) if lay.tanh_out else c
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
    saved = {"acts": acts, "Y": Y, "C": C}
    for name, value in (("HC", HC), ("CN", CN), ("G", G)):
        if value is not None:
            saved[name] = value
    return [out] + finals, saved


def _gg_full(lay: _Layout, weight_gg: Tensor) -> Tensor:
    """The FGR matrix as (k*N, G*N) with zero rows for z, so one addmm adds it to every gate block.
    Built from slices (no index tensor), so that it can run inside a CUDA graph capture."""
    zeros = weight_gg.new_zeros(lay.n, weight_gg.shape[1])
    return torch.cat([weight_gg[lay.gate[b]] if b in lay.gate else zeros for b in lay.spec.blocks])


def _gg_rows(lay: _Layout, full: Tensor) -> Tensor:
    """The gate rows of a (k*N, ...) tensor, in FGR gate order (inverse of `_gg_full`)."""
    return torch.cat([full[lay.col[g]] for g in lay.spec.computed_gates])


def lstm_backward(
    spec: CellSpec,
    saved: dict[str, Tensor],
    grad_out: Tensor | None,
    grad_h: Tensor | None,
    grad_c: Tensor | None,
    grad_g: Tensor | None,
    weight_hh: Tensor,
    peephole: Tensor | None,
    weight_gg: Tensor | None,
    mask: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor, Tensor | None, Tensor | None]:
    """Gradients of `lstm_forward` by hand in one reverse sweep: returns the gradients of
    (xp, h0, c0, g0, weight_hh, peephole, weight_gg). The activations' derivatives are computed for
    all steps at once before the sweep; weight and peephole gradients are one reduction after it."""
    acts, Y, C = saved["acts"], saved["Y"], saved["C"]
    HC, CN, G = saved.get("HC"), saved.get("CN"), saved.get("G")
    steps, batch, kn = acts.shape
    n = Y.shape[-1]
    lay = _Layout(spec, n)
    col = lay.col
    fgr = weight_gg is not None
    # derivative factors, all steps at once: sigmoid' = s - s^2, tanh' = 1 - t^2
    F = torch.addcmul(acts, acts, acts, value=-1)
    if lay.tanh_in:
        z_all = acts[:, :, col["z"]]
        F[:, :, col["z"]] = torch.addcmul(torch.ones_like(z_all), z_all, z_all, value=-1)
    HD = torch.addcmul(torch.ones_like(HC), HC, HC, value=-1) if HC is not None else None
    dpre = torch.empty_like(acts)  # dL/d(pre-activation), all steps
    dy = grad_h.clone() if grad_h is not None else Y.new_zeros(batch, n)  # dL/d(state y_t), carried
    dc = grad_c.clone() if grad_c is not None else Y.new_zeros(batch, n)
    dg = gg_full = None
    if fgr:
        dg = grad_g.clone() if grad_g is not None else Y.new_zeros(batch, G.shape[-1])
        gg_full = _gg_full(lay, weight_gg)
    p = {g: peephole[s] for g, s in lay.peep.items()} if peephole is not None else {}
    gates_if = [g for g in ("i", "f") if g in col]  # adjacent at the front of i f z o
    D = dpre.unbind(0)
    Db = {b: dpre[:, :, col[b]].unbind(0) for b in col}
    Ab = {b: acts[:, :, col[b]].unbind(0) for b in col}
    Fb = {b: F[:, :, col[b]].unbind(0) for b in col}
    if gates_if:
        D_if = dpre[:, :, : len(gates_if) * n].unbind(0)
        F_if = F[:, :, : len(gates_if) * n].unbind(0)
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
                do.add_(dg_new[:, lay.gate["o"]])
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
        if "i" in col:
            i = Ab["i"][t]
            torch.mul(dct, i, out=dz)
            torch.mul(dct, Ab["z"][t], out=Db["i"][t])
            if spec.coupled:
                Db["i"][t].addcmul_(dct, c_prev, value=-1)
                dc_prev = torch.addcmul(dct, dct, i, value=-1)
        else:
            dz.copy_(dct)
        if "f" in col:
            torch.mul(dct, c_prev, out=Db["f"][t])
            dc_prev = dct * Ab["f"][t]
        if gates_if:
            if fgr:
                for g in gates_if:
                    Db[g][t].add_(dg_new[:, lay.gate[g]])
            D_if[t].mul_(F_if[t])
            for g in gates_if:
                if g in p:
                    dc_prev.addcmul_(Db[g][t], p[g])
        if lay.tanh_in:
            dz.mul_(Fb["z"][t])
        # carry to step t-1
        if mask is not None:
            dy.addmm_(d, weight_hh)
            dc.add_(dc_prev)
            if fgr:
                dg.addmm_(d, gg_full)
        else:
            dy = torch.mm(d, weight_hh)
            dc = dc_prev
            if fgr:
                dg = torch.mm(d, gg_full)
    d_whh, d_peep, d_gg = _lstm_weight_grads(spec, lay, saved, dpre, peephole, fgr)
    return dpre, dy, dc, dg, d_whh, d_peep, d_gg


def _lstm_weight_grads(spec: CellSpec, lay: _Layout, saved: dict[str, Tensor], dpre: Tensor, peephole, fgr: bool):
    """dW_hh, dpeephole and dW_gg: one reduction over every step at once."""
    Y, C, CN, G = saved["Y"], saved["C"], saved.get("CN"), saved.get("G")
    steps, batch, kn = dpre.shape
    flat = dpre.view(steps * batch, kn)
    d_whh = flat.t().mm(Y[:-1].reshape(steps * batch, -1))
    d_gg = _gg_rows(lay, flat.t().mm(G[:-1].reshape(steps * batch, -1))) if fgr else None
    d_peep = None
    if peephole is not None:
        cn = CN if CN is not None else C[1:]
        col = lay.col
        parts = [(dpre[:, :, col[g]] * (cn if g == "o" else C[:-1])).sum((0, 1)) for g in spec.peephole_gates]
        d_peep = torch.cat(parts)
    return d_whh, d_peep, d_gg


# -- the GRU family and the tanh RNN ----------------------------------------------------


def gru_forward(spec: CellSpec, xp: Tensor, states: list[Tensor], weights: list[Tensor | None], mask: Tensor | None):
    """GRU (reset after R h, cuDNN) or Cho GRU (reset before), as `cells.gru_step`, over the sequence."""
    (h0,), (weight_hh, bias_hh) = states, weights
    steps, batch, _ = xp.shape
    n = h0.shape[-1]
    after = spec.reset == "after"
    acts = torch.empty_like(xp)  # r u n
    H = xp.new_empty(steps + 1, batch, n)
    H[0] = h0
    HN = xp.new_empty(steps, batch, n)  # reset after: R_n h + b_hn; before: r * h
    hn_new = xp.new_empty(batch, n) if mask is not None else None
    out = xp.new_empty(steps, batch, n) if mask is not None else None
    w_t = weight_hh.t()
    w_ru_t, w_n_t = weight_hh[: 2 * n].t(), weight_hh[2 * n :].t()
    for t in range(steps):
        a, h = acts[t], H[t]
        if after:
            hh = torch.addmm(bias_hh, h, w_t)
            torch.add(xp[t, :, : 2 * n], hh[:, : 2 * n], out=a[:, : 2 * n]).sigmoid_()
            torch.mul(a[:, :n], hh[:, 2 * n :], out=HN[t])
            tanh_(torch.add(xp[t, :, 2 * n :], HN[t], out=a[:, 2 * n :]))
            HN[t].copy_(hh[:, 2 * n :])
        else:
            torch.addmm(xp[t, :, : 2 * n], h, w_ru_t, out=a[:, : 2 * n]).sigmoid_()
            torch.mul(a[:, :n], h, out=HN[t])
            tanh_(torch.addmm(xp[t, :, 2 * n :], HN[t], w_n_t, out=a[:, 2 * n :]))
        cand, u = a[:, 2 * n :], a[:, n : 2 * n]
        new = hn_new if mask is not None else H[t + 1]
        torch.sub(h, cand, out=new)
        new.mul_(u).add_(cand)  # (1 - u) n + u h
        if mask is not None:
            torch.where(mask[t].bool(), new, h, out=H[t + 1])
            torch.mul(new, mask[t], out=out[t])
    return [H[1:] if mask is None else out, H[steps]], {"acts": acts, "H": H, "HN": HN}


def gru_backward(spec, saved, grads, weights, mask):
    """Gradients of `gru_forward`: (xp, [h0], [weight_hh, bias_hh])."""
    acts, H, HN = saved["acts"], saved["H"], saved["HN"]
    grad_out, grad_h = grads
    weight_hh, bias_hh = weights
    steps, batch, kn = acts.shape
    n = H.shape[-1]
    after = spec.reset == "after"
    dxp = torch.empty_like(acts)
    dhh = torch.empty_like(acts) if after else None  # gradient of R h + b_hh
    dh = grad_h.clone() if grad_h is not None else H.new_zeros(batch, n)
    w_ru, w_n = weight_hh[: 2 * n], weight_hh[2 * n :]
    for t in range(steps - 1, -1, -1):
        a, d, h = acts[t], dxp[t], H[t]
        r, u, cand = a[:, :n], a[:, n : 2 * n], a[:, 2 * n :]
        if mask is not None:
            m = mask[t]
            dnew = dh * m
            if grad_out is not None:
                dnew.addcmul_(grad_out[t], m)
            dh.mul_(1 - m)
        else:
            dnew = dh.add_(grad_out[t]) if grad_out is not None else dh
        dn = d[:, 2 * n :]
        torch.mul(dnew, 1 - u, out=dn)
        dn.addcmul_(dn * cand, cand, value=-1)  # tanh'
        torch.mul(dnew, h - cand, out=d[:, n : 2 * n])  # du
        dh_prev = dnew * u
        if after:
            torch.mul(dn, HN[t], out=d[:, :n])  # dr
            e = dhh[t]
            torch.mul(dn, r, out=e[:, 2 * n :])
        else:
            d_rh = dn.mm(w_n)
            torch.mul(d_rh, h, out=d[:, :n])
            dh_prev.addcmul_(d_rh, r)
        s = a[:, : 2 * n]
        d[:, : 2 * n].mul_(torch.addcmul(s, s, s, value=-1))
        if after:
            e[:, : 2 * n] = d[:, : 2 * n]
            dh_prev.addmm_(e, weight_hh)
        else:
            dh_prev.addmm_(d[:, : 2 * n], w_ru)
        if mask is not None:
            dh.add_(dh_prev)
        else:
            dh = dh_prev
    return dxp, [dh], gru_weight_grads(dxp, dhh, H, HN, after)


def gru_weight_grads(dxp: Tensor, dhh: Tensor | None, H: Tensor, HN: Tensor | None, after: bool) -> list[Tensor | None]:
    """Gradients of R (and b_hh) from the per-step pre-activation gradients of a whole sequence:
    reset after R h: d(R h + b_hh) is `dhh`; reset before: n's block multiplies r * h (`HN`)."""
    steps, batch, n = H.shape[0] - 1, H.shape[1], H.shape[2]
    h_prev = H[:-1].reshape(steps * batch, n)
    if after:
        flat = dhh.reshape(steps * batch, -1)
        return [flat.t().mm(h_prev), flat.sum(0)]
    flat = dxp.reshape(steps * batch, -1)
    return [torch.cat([flat[:, : 2 * n].t().mm(h_prev), flat[:, 2 * n :].t().mm(HN.reshape(steps * batch, n))]), None]


def rnn_forward(spec: CellSpec, xp: Tensor, states: list[Tensor], weights: list[Tensor | None], mask: Tensor | None):
    """tanh RNN as `cells.rnn_step`, over the sequence."""
    (h0,), (weight_hh,) = states, weights
    steps, batch, n = xp.shape
    H = xp.new_empty(steps + 1, batch, n)
    H[0] = h0
    A = torch.empty_like(xp) if mask is not None else None  # new h (H holds the kept state)
    out = xp.new_empty(steps, batch, n) if mask is not None else None
    w_t = weight_hh.t()
    for t in range(steps):
        new = A[t] if mask is not None else H[t + 1]
        tanh_(torch.addmm(xp[t], H[t], w_t, out=new))
        if mask is not None:
            torch.where(mask[t].bool(), new, H[t], out=H[t + 1])
            torch.mul(new, mask[t], out=out[t])
    saved = {"H": H} if mask is None else {"H": H, "A": A}
    return [H[1:] if mask is None else out, H[steps]], saved


def rnn_backward(spec, saved, grads, weights, mask):
    """Gradients of `rnn_forward`: (xp, [h0], [weight_hh])."""
    H, A = saved["H"], saved.get("A")
    grad_out, grad_h = grads
    (weight_hh,) = weights
    steps, batch, n = H.shape[0] - 1, H.shape[1], H.shape[2]
    new_h = A if A is not None else H[1:]
    dxp = H.new_empty(steps, batch, n)
    dh = grad_h.clone() if grad_h is not None else H.new_zeros(batch, n)
    for t in range(steps - 1, -1, -1):
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
        d.addcmul_(d * hn, hn, value=-1)
        if mask is not None:
            dh.addmm_(d, weight_hh)
        else:
            dh = d.mm(weight_hh)
    flat = dxp.view(steps * batch, n)
    return dxp, [dh], [flat.t().mm(H[:-1].reshape(steps * batch, n))]


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


def _lstm_forward(spec, xp, states, weights, mask):
    g0 = states[2] if len(states) > 2 else None
    if use_triton(xp):
        from . import _triton_lstm

        lay = _Layout(spec, states[0].shape[-1])
        return _triton_lstm.lstm_forward(
            spec, xp, states[0], states[1], g0, *weights, mask, functools.partial(_gg_full, lay)
        )
    return lstm_forward(spec, xp, states[0], states[1], g0, *weights, mask)


def _lstm_backward(spec, saved, grads, weights, mask):
    grad_g = grads[3] if len(grads) > 3 else None
    if use_triton(saved["acts"]):
        from . import _triton_lstm

        dense = [g.contiguous() if g is not None else None for g in grads]  # kernels index densely
        lay = _Layout(spec, saved["Y"].shape[-1])
        dxp, dh, dc, dg = _triton_lstm.lstm_backward(
            spec, saved, dense[0], dense[1], dense[2], dense[3] if len(dense) > 3 else None, *weights, mask,
            functools.partial(_gg_full, lay),
        )
        dwhh, dpeep, dgg = _lstm_weight_grads(spec, lay, saved, dxp, weights[1], weights[2] is not None)
        return dxp, [dh, dc] + ([dg] if dg is not None else []), [dwhh, dpeep, dgg]
    dxp, dh, dc, dg, dwhh, dpeep, dgg = lstm_backward(spec, saved, grads[0], grads[1], grads[2], grad_g, *weights, mask)
    return dxp, [dh, dc] + ([dg] if grad_g is not None or weights[2] is not None else []), [dwhh, dpeep, dgg]


def _gru_forward(spec, xp, states, weights, mask):
    if use_triton(xp):
        from . import _triton_gru

        return _triton_gru.gru_forward(spec, xp, states, weights, mask)
    return gru_forward(spec, xp, states, weights, mask)


def _gru_backward(spec, saved, grads, weights, mask):
    if use_triton(saved["acts"]):
        from . import _triton_gru

        return _triton_gru.gru_backward(spec, saved, grads, weights, mask)
    return gru_backward(spec, saved, grads, weights, mask)


SEQUENCE_FUNCTIONS: dict[str, tuple[Callable, Callable]] = {
    "lstm": (_lstm_forward, _lstm_backward),
    "gru": (_gru_forward, _gru_backward),
    "rnn": (rnn_forward, rnn_backward),
}


def layer_weights(spec: CellSpec, p: dict[str, Tensor | None]) -> list[Tensor | None]:
    """The recurrent tensors each family's sequence functions take, from a layer's parameters."""
    if spec.family == "lstm":
        return [p["weight_hh"], p["peephole"], p["weight_gg"]]
    if spec.family == "gru":
        return [p["weight_hh"], p["bias_hh"]]
    return [p["weight_hh"]]


# -- autograd glue ------------------------------------------------------------------------


class _Fused(torch.autograd.Function):
    """One layer-direction over the whole sequence: forward and backward by `runner`."""

    @staticmethod
    def forward(ctx, spec, runner, mask, num_states, xp, *tensors):  # noqa: D102
        states, weights = list(tensors[:num_states]), list(tensors[num_states:])
        outs, saved = runner.forward(spec, xp, states, weights, mask)
        ctx.entry = saved.pop("__entry__", None)
        ctx.spec, ctx.runner, ctx.keys, ctx.num_states = spec, runner, list(saved), num_states
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
        dxp, dstates, dweights = ctx.runner.backward(ctx.spec, saved, list(grads), weights, mask)
        dstates = list(dstates) + [None] * (ctx.num_states - len(dstates))
        return (None, None, None, None, dxp, *dstates, *dweights)


class EagerRunner:
    """Runs the sequence functions as they are (the ``fused`` backend)."""

    @staticmethod
    def forward(spec, xp, states, weights, mask):
        return SEQUENCE_FUNCTIONS[spec.family][0](spec, xp, states, weights, mask)

    @staticmethod
    def backward(spec, saved, grads, weights, mask):
        return SEQUENCE_FUNCTIONS[spec.family][1](spec, saved, grads, weights, mask)


def run_direction(
    layer, backend: str, x: Tensor, valid: Tensor | None, state: list[Tensor], p: dict[str, Tensor | None]
) -> tuple[Tensor, list[Tensor], dict]:
    """Drop-in for `RecurrentLayer._run_direction` (same arguments, same results) on a fast backend."""
    steps, batch, _ = x.shape
    xp = torch.addmm(p["bias"], x.reshape(steps * batch, -1), p["weight_ih"].t()).view(steps, batch, -1)
    mask = valid.to(x.dtype) if valid is not None else None
    runner = graph_runner(x.device) if backend == "graph" else EagerRunner
    outs = _Fused.apply(layer.spec, runner, mask, len(state), xp, *state, *layer_weights(layer.spec, p))
    return outs[0], list(outs[1:]), {}




# -- CUDA graphs: one launch per sequence instead of hundreds ------------------------------


class _Captured:
    """A sequence's forward and backward captured as CUDA graphs for one shape.

    The graphs read the weights in place (their addresses are part of the cache key) and read the
    input projection, states, mask, saved activations and incoming gradients from static buffers that
    each call fills; results are cloned out, so two forwards before a backward stay independent."""

    def __init__(self, spec, xp, states, weights, mask) -> None:
        self.spec = spec
        self.xp = xp.clone()
        self.states = [s.clone() for s in states]
        self.weights = weights  # the live parameters: their storage is updated in place by optimisers
        self.mask = mask.clone() if mask is not None else None
        self.backward_graph = None
        fn = SEQUENCE_FUNCTIONS[spec.family][0]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.no_grad():  # warm-up before capture (allocator, cuBLAS)
            fn(spec, self.xp, self.states, weights, self.mask)
        torch.cuda.current_stream().wait_stream(stream)
        self.forward_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.forward_graph), torch.no_grad():
            self.outs, self.saved = fn(spec, self.xp, self.states, weights, self.mask)

    def forward(self, xp, states, mask):
        self.xp.copy_(xp)
        for static, s in zip(self.states, states):
            static.copy_(s)
        if mask is not None:
            self.mask.copy_(mask)
        self.forward_graph.replay()
        return [o.clone() for o in self.outs], {k: v.clone() for k, v in self.saved.items()}

    def backward(self, saved, grads):
        if self.backward_graph is None:
            self._capture_backward(grads)
        for k, v in saved.items():
            self.saved[k].copy_(v)
        for static, g in zip(self.grads, grads):
            if static is not None:
                static.copy_(g)
        self.backward_graph.replay()
        dxp, dstates, dweights = self.grad_results
        clone = lambda t: t.clone() if t is not None else None  # noqa: E731
        return dxp.clone(), [clone(d) for d in dstates], [clone(d) for d in dweights]

    def _capture_backward(self, grads):
        fn = SEQUENCE_FUNCTIONS[self.spec.family][1]
        self.grads = [g.clone() if g is not None else None for g in grads]
        self.grad_pattern = [g is not None for g in grads]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.no_grad():
            fn(self.spec, self.saved, list(self.grads), self.weights, self.mask)
        torch.cuda.current_stream().wait_stream(stream)
        self.backward_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.backward_graph), torch.no_grad():
            self.grad_results = fn(self.spec, self.saved, list(self.grads), self.weights, self.mask)


class GraphRunner:
    """``graph`` backend: a bounded LRU cache of captured sequences per (cell, shapes, weights)."""

    def __init__(self, max_entries: int = 16) -> None:
        self.max_entries = max_entries
        self.cache: collections.OrderedDict = collections.OrderedDict()
        self.seen: collections.OrderedDict = collections.OrderedDict()  # shapes met once, not captured yet
        self.captures = 0

    @staticmethod
    def _key(spec, xp, states, weights, mask):
        def sig(t):
            return None if t is None else (tuple(t.shape), t.dtype, t.device, t.stride())

        ptrs = tuple(w.data_ptr() if w is not None else None for w in weights)
        return (spec, sig(xp), tuple(sig(s) for s in states), tuple(sig(w) for w in weights), ptrs, sig(mask))

    def forward(self, spec, xp, states, weights, mask):
        key = self._key(spec, xp, states, weights, mask)
        entry = self.cache.get(key)
        if entry is None and key not in self.seen:  # capture a shape when it comes back, not the first
            self.seen[key] = None  # time: a shape met once (a last short batch) costs no capture
            while len(self.seen) > 4 * self.max_entries:
                self.seen.popitem(last=False)
            return EagerRunner.forward(spec, xp, states, weights, mask)
        if entry is None:
            with torch.cuda.device(xp.device):  # capture on the layer's device, not the current one
                entry = _Captured(spec, xp, states, weights, mask)
            self.captures += 1
            self.cache[key] = entry
            while len(self.cache) > self.max_entries:
                self.cache.popitem(last=False)
        self.cache.move_to_end(key)
        with torch.cuda.device(xp.device):
            outs, saved = entry.forward(xp, states, mask)
        saved["__entry__"] = entry  # carried to backward (not a tensor: kept on ctx, see _Fused)
        return outs, saved

    def backward(self, spec, saved, grads, weights, mask):
        entry = saved.pop("__entry__", None)
        if entry is None:
            return EagerRunner.backward(spec, saved, grads, weights, mask)
        if entry.backward_graph is not None and [g is not None for g in grads] != entry.grad_pattern:
            return EagerRunner.backward(spec, saved, grads, weights, mask)  # other outputs need grads
        with torch.cuda.device(entry.xp.device):
            return entry.backward(saved, grads)


_GRAPH_RUNNERS: dict[torch.device, GraphRunner] = {}


def graph_runner(device: torch.device) -> GraphRunner:
    """The process-wide graph cache of one CUDA device (size: LSTM_ODYSSEY_GRAPH_CACHE, default 16)."""
    if device.index is None:
        device = torch.device(device.type, torch.cuda.current_device())
    if device not in _GRAPH_RUNNERS:
        _GRAPH_RUNNERS[device] = GraphRunner(int(os.environ.get("LSTM_ODYSSEY_GRAPH_CACHE", "16")))
    return _GRAPH_RUNNERS[device]
