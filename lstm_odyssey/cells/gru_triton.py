"""Triton kernels for the GRU family (reset after R h, cuDNN's, or before it, Cho's): the pointwise
part of each step in one or two kernels, the matmuls with cuBLAS. Same contract and saved tensors as
gru.py's eager sequence functions, whose math this is element by element; tests hold both equal to the
reference loop, on a GPU and under Triton's CPU interpreter.

One trial only ((T, B, 3N) sequences); stacked trials run the eager path. Imported only where Triton
runs (`ops.triton_runs`). Kernel conventions (elements, rows of 3N: r u n, BLOCK): triton_common.py.
Compile-time flags: AFTER (reset after R h, else before), MASK (variable lengths), HAS_GOUT (the
outputs have a gradient)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .triton_common import BLOCK, elements, grid, tanh


@triton.jit
def _fwd_gates(A, HH, BH, H, HN, total, N, AFTER: tl.constexpr, BLOCK: tl.constexpr):
    """r and u of one step. A (B, 3N): W x + b (before: + R h for r and u already), r and u overwritten.
    HH (B, 3N): R h and BH (3N,): b_hh (after only). H: h_{t-1}. HN: out, R_n h + b_hn (after) or
    r * h (before). total = B N."""
    e, ok, b, j = elements(total, N, BLOCK)
    row = A + b * 3 * N + j
    ar = tl.load(row, mask=ok, other=0.0)
    au = tl.load(row + N, mask=ok, other=0.0)
    if AFTER:
        hrow = HH + b * 3 * N + j
        ar += tl.load(hrow, mask=ok, other=0.0) + tl.load(BH + j, mask=ok, other=0.0)
        au += tl.load(hrow + N, mask=ok, other=0.0) + tl.load(BH + N + j, mask=ok, other=0.0)
        hn = tl.load(hrow + 2 * N, mask=ok, other=0.0) + tl.load(BH + 2 * N + j, mask=ok, other=0.0)
    r = tl.sigmoid(ar)
    u = tl.sigmoid(au)
    tl.store(row, r, mask=ok)
    tl.store(row + N, u, mask=ok)
    if AFTER:
        tl.store(HN + e, hn, mask=ok)
    else:
        tl.store(HN + e, r * tl.load(H + e, mask=ok, other=0.0), mask=ok)


@triton.jit
def _fwd_out(A, H, HN, HS, OUT, M, total, N, AFTER: tl.constexpr, MASK: tl.constexpr, BLOCK: tl.constexpr):
    """n = tanh(x_n + r HN) (after) or tanh(x_n + R_n (r h)) (before, already in A), overwriting A's
    n block; h' = n + u (h - n). H: h_{t-1}; HS: out, the new state (kept where M is 0); OUT: out, h' m
    (MASK); M (B,): the mask."""
    e, ok, b, j = elements(total, N, BLOCK)
    row = A + b * 3 * N + j
    an = tl.load(row + 2 * N, mask=ok, other=0.0)
    u = tl.load(row + N, mask=ok, other=0.0)
    if AFTER:
        an += tl.load(row, mask=ok, other=0.0) * tl.load(HN + e, mask=ok, other=0.0)
    n = tanh(an)
    tl.store(row + 2 * N, n, mask=ok)
    h = tl.load(H + e, mask=ok, other=0.0)
    new = n + u * (h - n)
    if MASK:
        m = tl.load(M + b, mask=ok, other=0.0)
        tl.store(HS + e, tl.where(m > 0.5, new, h), mask=ok)
        tl.store(OUT + e, new * m, mask=ok)
    else:
        tl.store(HS + e, new, mask=ok)


@triton.jit
def _bwd_a(A, D, E, HN, H, DH, GOUT, M, total, N, AFTER: tl.constexpr, MASK: tl.constexpr,
           HAS_GOUT: tl.constexpr, BLOCK: tl.constexpr):
    """dn, du (and for reset after dr) of one step into D (B, 3N), from the activations A (B, 3N), HN
    and h_{t-1} (H). E (B, 3N): out, d(R h + b_hh) (after). DH: the carried dL/dh, in place to the
    pointwise share of dL/dh_{t-1} (the caller adds R^T d). GOUT: dL/d out_t; M (B,): the mask."""
    e, ok, b, j = elements(total, N, BLOCK)
    row = A + b * 3 * N + j
    drow = D + b * 3 * N + j
    dh = tl.load(DH + e, mask=ok, other=0.0)
    if MASK:
        m = tl.load(M + b, mask=ok, other=0.0)
        dnew = dh * m
        if HAS_GOUT:
            dnew += tl.load(GOUT + e, mask=ok, other=0.0) * m
        keep = dh - dh * m
    else:
        dnew = dh
        if HAS_GOUT:
            dnew += tl.load(GOUT + e, mask=ok, other=0.0)
        keep = 0.0
    r = tl.load(row, mask=ok, other=0.0)
    u = tl.load(row + N, mask=ok, other=0.0)
    n = tl.load(row + 2 * N, mask=ok, other=0.0)
    h = tl.load(H + e, mask=ok, other=0.0)
    dan = dnew * (1.0 - u) * (1.0 - n * n)
    dau = dnew * (h - n) * (u - u * u)
    tl.store(drow + N, dau, mask=ok)
    tl.store(drow + 2 * N, dan, mask=ok)
    if AFTER:
        hn = tl.load(HN + e, mask=ok, other=0.0)
        dar = dan * hn * (r - r * r)
        tl.store(drow, dar, mask=ok)
        erow = E + b * 3 * N + j
        tl.store(erow, dar, mask=ok)
        tl.store(erow + N, dau, mask=ok)
        tl.store(erow + 2 * N, dan * r, mask=ok)
    tl.store(DH + e, dnew * u + keep, mask=ok)


@triton.jit
def _bwd_b(A, D, H, DRH, DH, total, N, BLOCK: tl.constexpr):
    """Reset before: d(r * h) = DRH (B, N) gives dr = DRH h (into D's r block, through sigmoid') and
    DH += DRH r. A: the activations; H: h_{t-1}."""
    e, ok, b, j = elements(total, N, BLOCK)
    r = tl.load(A + b * 3 * N + j, mask=ok, other=0.0)
    drh = tl.load(DRH + e, mask=ok, other=0.0)
    h = tl.load(H + e, mask=ok, other=0.0)
    tl.store(D + b * 3 * N + j, drh * h * (r - r * r), mask=ok)
    tl.store(DH + e, tl.load(DH + e, mask=ok, other=0.0) + drh * r, mask=ok)


def triton_sequence_forward(spec, xp, states, weights, mask):
    """Same contract and saved tensors as `gru.eager_sequence_forward`; `xp` is scratch (becomes r, u, n)."""
    (h0,), (weight_hh, bias_hh) = states, weights
    steps, batch, _ = xp.shape
    n = h0.shape[-1]
    after = spec.reset == "after"
    acts = xp
    H = xp.new_empty(steps + 1, batch, n)
    H[0] = h0
    HN = xp.new_empty(steps, batch, n)
    HH = xp.new_empty(batch, 3 * n) if after else None
    out = xp.new_empty(steps, batch, n) if mask is not None else None
    Mk = mask.reshape(steps, batch) if mask is not None else None
    w_t, w_ru_t, w_n_t = weight_hh.t(), weight_hh[: 2 * n].t(), weight_hh[2 * n :].t()
    total = batch * n
    for t in range(steps):
        a = acts[t]
        if after:
            torch.mm(H[t], w_t, out=HH)
            _fwd_gates[grid(total)](a, HH, bias_hh, H[t], HN[t], total, n, AFTER=True, BLOCK=BLOCK)
        else:
            a[:, : 2 * n].addmm_(H[t], w_ru_t)
            _fwd_gates[grid(total)](a, a, a, H[t], HN[t], total, n, AFTER=False, BLOCK=BLOCK)
            a[:, 2 * n :].addmm_(HN[t], w_n_t)
        _fwd_out[grid(total)](
            a, H[t], HN[t], H[t + 1], out[t] if out is not None else a, Mk[t] if Mk is not None else a,
            total, n, AFTER=after, MASK=mask is not None, BLOCK=BLOCK,
        )
    return [H[1:] if mask is None else out, H[steps]], {"acts": acts, "H": H, "HN": HN}


def triton_sequence_backward(spec, saved, grads, weights, mask):
    """Same contract as gru.py's eager reverse sweep: (d xp, d(R h + b_hh) for reset after or None, [dh0])."""
    acts, H, HN = saved["acts"], saved["H"], saved["HN"]
    grad_out, grad_h = [g.contiguous() if g is not None else None for g in grads]  # kernels index densely
    weight_hh, _ = weights
    steps, batch, kn = acts.shape
    n = H.shape[-1]
    after = spec.reset == "after"
    dxp = torch.empty_like(acts)
    dhh = torch.empty_like(acts) if after else None
    drh = None if after else H.new_empty(batch, n)
    dh = grad_h.clone() if grad_h is not None else H.new_zeros(batch, n)
    Mk = mask.reshape(steps, batch) if mask is not None else None
    w_ru, w_n = weight_hh[: 2 * n], weight_hh[2 * n :]
    total = batch * n
    for t in range(steps - 1, -1, -1):
        d = dxp[t]
        _bwd_a[grid(total)](
            acts[t], d, dhh[t] if after else d, HN[t], H[t], dh, grad_out[t] if grad_out is not None else d,
            Mk[t] if Mk is not None else d, total, n, AFTER=after, MASK=mask is not None,
            HAS_GOUT=grad_out is not None, BLOCK=BLOCK,
        )
        if after:
            dh.addmm_(dhh[t], weight_hh)
        else:
            torch.mm(d[:, 2 * n :], w_n, out=drh)
            _bwd_b[grid(total)](acts[t], d, H[t], drh, dh, total, n, BLOCK=BLOCK)
            dh.addmm_(d[:, : 2 * n], w_ru)
    return dxp, dhh, [dh]
