"""Which trials share a pack: the keys they must share, and how wide a pack of given hidden sizes should be.

The CPU width rule is measured (`python -m lstm_odyssey.packed.bench`: one CPU thread, JSB Chorales-like
shapes (input 88, batch 8, 50-70 steps), Adam, vanilla LSTM, PackedModel's fused path against single runs
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
(8 rows against each trial's own weights) and pointwise work cost as much per trial as alone, narrow
packs do as well as wide ones, and beyond 200 units a pack no longer pays. Padding costs as well: packs
of 40 drawn sizes in drawn order, each padded to its largest, were 0.9-1.0x (K=8), 0.7-1.0x (16) and
0.6x (32); sorted by size first 1.8x, 1.5-1.6x, 1.0-1.2x. So trials are sorted by size, a pack whose
largest trial has at most 32 units is 32 wide, at most 64 units 16 wide, at most 200 units 8 wide, and
larger trials run alone. On 40 sizes drawn from log-U[20, 200] (seed 0: packs of 16, 8, 8, 8) this plan
measured 1.7x over single runs at load 3-5 and 1.6-2.1x at load 2-3; the vmap path on the same plan
1.2x; the rule it replaced (32 wide up to 64 units, 16 up to 128, larger alone) 1.4-1.6x on the fused
path. On a GPU nothing was measured yet: `auto_width` answers `GPU_WIDTH` for every size, a placeholder
to be replaced by a measurement.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from ..results import flatten

PER_TRIAL_KEYS = frozenset({
    "trainer.seed", "trainer.input_noise", "trainer.clip", "trainer.patience", "trainer.epochs",
    "trainer.max_minutes", "model.hidden_size", "model.forget_bias",
})
PACKED_GROUPS = ("cell", "data", "model", "optim", "trainer")
CPU_RULE = ((32, 32), (64, 16), (200, 8))  # (largest hidden size of the pack, width), measured on the CPU
GPU_WIDTH = 32  # not measured (no GPU was available): replace with a measured rule


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
    model = cfgs[0]["model"]
    if model.get("dropout") and model.get("num_layers", 1) > 1:
        raise ValueError("packed trials do not support dropout between layers yet; use model.dropout=0 or sweep.pack=1")


def auto_width(hidden_size: int, device: str = "cpu") -> int:
    """The measured width for trials of this hidden size (1: train them alone)."""
    if device.startswith("cuda"):
        return GPU_WIDTH
    return next((width for largest, width in CPU_RULE if hidden_size <= largest), 1)


def plan_packs(hidden_sizes: Sequence[int], width: int | str = "auto", device: str = "cpu") -> list[list[int]]:
    """Positions of the trials of one grid point grouped into packs: sorted by hidden size (so that a pack
    pads little), `width` at a time, or with "auto" as wide as `auto_width` of each pack's largest size."""
    order = sorted(range(len(hidden_sizes)), key=lambda k: (hidden_sizes[k], k))
    if width != "auto":
        if int(width) < 1:
            raise ValueError(f"a pack width must be a positive integer or 'auto', got {width!r}")
        return [order[j : j + int(width)] for j in range(0, len(order), int(width))]
    packs: list[list[int]] = []
    while order:
        k = 1
        while k < len(order) and k < auto_width(hidden_sizes[order[k]], device):
            k += 1  # grow while the width allowed by the pack's largest size still admits one more
        packs.append(order[:k])
        order = order[k:]
    return packs
