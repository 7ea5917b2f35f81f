"""Which trials share a pack: the keys they must share, and how wide a pack of given hidden sizes should be.

The CPU width rule is measured (`python -m benchmarks.packs`: one CPU thread, JSB Chorales-like
shapes (input 88, batch 8, 50-70 steps), Adam, vanilla LSTM, PackedModel's stacked trials against single runs
on the fused backend, interleaved in one process). The machine was a 2-core one shared with other jobs
(load 2-5), so the figures are ratios and move by 10-20 % between runs. Trials per hour of a pack over
single runs (two runs of the full table; K=2/4 and 256/384 from shorter runs):

    hidden    K=2    K=4    K=8        K=16       K=32
    24                      3.5-3.7    4.2-4.9    5.0-5.4
    48                      2.6-3.2    3.5-3.9    4.1-4.2
    96                      2.4-2.5    2.5-2.7    2.1-2.5
    128       1.4    1.5    1.6-1.9    1.5-2.3    1.2-1.7
    192       1.1    1.2    1.2-1.5    1.3        1.0
    256              1.0    1.0
    384              0.8    0.9

Wider pays for small trials (the per-op costs are shared); from about 100 units the step's matmuls
(8 rows against each trial's own weights) and pointwise work cost as much per trial as alone, and beyond
200 units a pack no longer pays. Padding costs as well: packs of 40 drawn sizes in drawn order, each padded
to its largest, were 0.9-1.0x (K=8), 0.7-1.0x (16) and 0.6x (32); sorted by size first 1.8x, 1.5-1.6x,
1.0-1.2x.

So `auto` prices every way of cutting the sorted sizes into packs and takes the cheapest (`plan_packs`, a
dynamic programme over contiguous runs). The price of one training batch, in ms on one thread, is fitted
to the table above and to single runs timed in the same way (vanilla, batch 8, load 3: 41, 43, 59, 68, 79
and 120 ms per batch at 24, 48, 96, 128, 192 and 256 units); the numbers the code uses live in costs.json
(`plan` section, with the command that refits them), as first fitted:

    alone:                  40 + 0.0012 n^2
    a pack of K, padded:    36 + K (6 + 0.0015 N^2)      (N: the pack's largest size)

with the n^2 terms scaled by batch / 8 (the flops grow with the batch, the per-op costs do not). The model
gives the table's ratios to within about 15 % (K=8: 3.6x at 24 units, 1.3x at 192, 1.1x at 256, 0.9x at
384). Wider packs of large trials measured slower than the model says (K=32 below K=16 from 96 units), so a
pack is at most 32 wide up to 64 units, 16 up to 200 and 8 beyond (`WIDTH_CAP`). The rule it replaced (as
wide as the largest member allowed) put 10 trials of 34-199 units into one pack of 8 padded to 199 units,
which the model prices at 1.4x the cost of running them alone; the cheapest cut runs the 5 smallest
together and the 3 largest alone, 0.7x. On a GPU nothing was measured yet: `auto` packs `GPU_WIDTH`
trials at a time, a placeholder to be replaced by a measurement.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from ..results import flatten
from . import costs

PER_TRIAL_KEYS = frozenset({
    "trainer.seed", "trainer.input_noise", "trainer.clip", "trainer.patience", "trainer.epochs",
    "trainer.max_minutes", "model.hidden_size", "model.forget_bias",
})
PACKED_GROUPS = ("cell", "data", "model", "optim", "trainer", "kernels")
# The cost model's numbers: costs.json's `plan` section (how they were measured, the command that regenerates
# them, the machine), ms per batch of 8 on one CPU thread.
_PLAN = costs.section("plan")
REFERENCE_BATCH = 8  # the batch the costs were measured at; the n^2 terms scale with batch / 8
ALONE_COST = tuple(float(v) for v in _PLAN["alone_cost_ms"])  # a trial alone: per-op costs, flops * n^2
PACK_COST = tuple(float(v) for v in _PLAN["pack_cost_ms"])  # a pack of K padded to N: shared + K * (per trial + flops * N^2)
WIDTH_CAP = tuple((int(h), int(k)) for h, k in _PLAN["width_cap"])  # (largest hidden size of the pack, widest pack measured to pay)
WIDEST_BEYOND = int(_PLAN["widest_beyond"])  # the cap above the last of WIDTH_CAP
GPU_WIDTH = int(_PLAN["gpu_width"])  # not measured (no GPU was available): replace with a measured rule


def is_per_trial(key: str) -> bool:
    """True for a dotted config key that may differ between the trials of one pack."""
    return key in PER_TRIAL_KEYS or (key.startswith("optim.") and key != "optim.name")


def pack_key(cfg: Mapping) -> str:
    """What the trials of one pack share (cell, task, architecture, optimiser, batch size, ...), as a string:
    jobs with equal keys can share a pack."""
    flat = flatten({g: cfg[g] for g in PACKED_GROUPS if g in cfg})
    return json.dumps({k: v for k, v in sorted(flat.items()) if not is_per_trial(k)}, sort_keys=True, default=str)


def check_packable(cfgs: Sequence[Mapping]) -> None:
    """Refuse trials that cannot share a pack, with the first key that differs."""
    if not cfgs:
        raise ValueError("a pack needs at least one trial")
    keys = [json.loads(pack_key(cfg)) for cfg in cfgs]
    for k, key in enumerate(keys[1:], 1):
        for name in sorted(set(key) | set(keys[0])):
            if key.get(name) != keys[0].get(name):
                raise ValueError(
                    f"trials of one pack must share {name}: trial 0 has {keys[0].get(name)!r}, trial {k} has "
                    f"{key.get(name)!r}; put them in different packs"
                )
    problem = unpackable(cfgs[0])
    if problem:
        raise ValueError(problem)


def unpackable(cfg: Mapping) -> str | None:
    """Why a trial cannot train in a pack, or None: its dropout masks would not be those of its single run."""
    model = cfg["model"]
    if model["dropout"] and model["num_layers"] > 1:
        return "packed trials do not support dropout between layers yet; use model.dropout=0 or sweep.pack=1"
    if model["output_dropout"]:
        return "packed trials do not support output dropout yet; use model.output_dropout=0 or sweep.pack=1"
    return None


def alone_cost(hidden_size: int, batch_size: int) -> float:
    """The modelled time of one training batch of a trial alone (ms, one CPU thread)."""
    overhead, flops = ALONE_COST
    return overhead + flops * hidden_size**2 * batch_size / REFERENCE_BATCH


def pack_cost(width: int, hidden_size: int, batch_size: int) -> float:
    """The modelled time of one training batch of `width` trials padded to `hidden_size` (a pack of one
    runs alone)."""
    if width == 1:
        return alone_cost(hidden_size, batch_size)
    shared, per_trial, flops = PACK_COST
    return shared + width * (per_trial + flops * hidden_size**2 * batch_size / REFERENCE_BATCH)


def auto_width(hidden_size: int, device: str, batch_size: int) -> int:
    """The widest pack that `auto` forms of trials this large (1: they train alone)."""
    if device.startswith("cuda"):
        return GPU_WIDTH
    cap = next((width for largest, width in WIDTH_CAP if hidden_size <= largest), WIDEST_BEYOND)
    pays = [k for k in range(1, cap + 1) if pack_cost(k, hidden_size, batch_size) < k * alone_cost(hidden_size, batch_size)]
    return max(pays, default=1)


def plan_packs(hidden_sizes: Sequence[int], width: int | str, device: str, batch_size: int) -> list[list[int]]:
    """Positions of the trials of one grid point grouped into packs, sorted by hidden size (so that a pack
    pads little): `width` at a time, or with "auto" the cheapest cut into runs of consecutive sizes under
    the cost model above (on a GPU, `GPU_WIDTH` at a time)."""
    order = sorted(range(len(hidden_sizes)), key=lambda k: (hidden_sizes[k], k))
    if width == "auto" and device.startswith("cuda"):
        width = GPU_WIDTH
    if width != "auto":
        if int(width) < 1:
            raise ValueError(f"a pack width must be a positive integer or 'auto', got {width!r}")
        return [order[j : j + int(width)] for j in range(0, len(order), int(width))]
    sizes = [hidden_sizes[k] for k in order]
    best = [0.0] + [float("inf")] * len(sizes)  # best[j]: the cheapest cut of the j smallest
    cut = [0] * (len(sizes) + 1)
    for j in range(1, len(sizes) + 1):
        for k in range(1, min(j, auto_width(sizes[j - 1], device, batch_size)) + 1):  # the last pack: sizes[j-k:j]
            cost = best[j - k] + pack_cost(k, sizes[j - 1], batch_size)
            if cost < best[j]:
                best[j], cut[j] = cost, j - k
    packs: list[list[int]] = []
    j = len(sizes)
    while j:
        packs.append(order[cut[j] : j])
        j = cut[j]
    return packs[::-1]
