"""Packed trials: K trials of one cell on one task trained side by side in one process.

* `optim`: SGD (momentum, Nesterov, weight decay) and Adam over a leading trial axis, per-trial clipping.
* `model`: `PackedModel`, K trials' parameters with a leading trial axis and exact padding of different
  hidden sizes; its forward runs on the fused path (`fused`: the families' fused sequence functions over
  the trial axis, batched matmuls) or on the reference vmap path (the loop of `layers.py` under
  `torch.func.vmap`).
* `fused`: the fused path's forward (encoder, recurrent stack, head for K trials at once).
* `fit`: `fit_pack([(cfg, run_dir), ...])`, the epoch loop with a life cycle per trial (early stopping,
  divergence, best state), one `result.json` per trial, a checkpoint per pack and resume.
* `plan`: which trials may share a pack (`pack_key`, `check_packable`) and the cheapest cut into
  packs under a measured cost model (`auto_width`, `plan_packs`).
* `bench`: `python -m lstm_odyssey.packed.bench`, trials per hour of packs against single runs.

Packing changes speed, never results: trial k of a pack reproduces `train.run(cfg_k)` (initial weights,
batch order, noise, stopping, record) up to float rounding.
"""

from .fit import fit_pack
from .plan import auto_width, check_packable, pack_key, plan_packs

__all__ = ["auto_width", "check_packable", "fit_pack", "pack_key", "plan_packs"]
