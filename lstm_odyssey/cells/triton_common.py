"""What the Triton kernels of every family share (a leaf: imports only triton). Imported only where
Triton runs (see `ops.use_triton`).

Every kernel here is pointwise over one step's (B, N) units: program p handles the flat element indices
[p BLOCK, (p + 1) BLOCK) of B N, element e being unit j = e % N of sequence b = e // N. A tensor that
holds several N-wide blocks per sequence (the fused pre-activations, (B, k N)) is addressed as
row base + b * row stride + block * N + j."""

from __future__ import annotations

import triton
import triton.language as tl

BLOCK = 512  # elements per program


def grid(total: int) -> tuple[int]:
    """Programs for `total` = B N elements."""
    return (triton.cdiv(total, BLOCK),)


@triton.jit
def elements(total, N, BLOCK: tl.constexpr):
    """This program's flat indices e, which of them exist (ok), and each one's sequence b and unit j."""
    e = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    return e, e < total, e // N, e % N


@triton.jit
def tanh(x):
    """tanh as 2 sigmoid(2x) - 1 (what the eager CPU path computes, too)."""
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0
