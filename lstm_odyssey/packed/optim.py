"""SGD (momentum, Nesterov, weight decay) and Adam over a leading trial axis, and per-trial gradient clipping.

Every parameter of a pack is one tensor of shape (K, ...): slice k belongs to trial k. Each trial has its
own learning rate, momentum, Nesterov flag, betas, eps and weight decay (tensors of shape (K,)); the update
of slice k is that of `torch.optim.SGD` / `torch.optim.Adam` on trial k alone. An optional boolean mask per
parameter (True = a real entry) leaves padded entries exactly as they are.

The hyperparameters are read from the torch optimisers that `train.build_optimizer` builds for each
trial's own model (`from_torch`), so the config semantics (e.g. `optim.scale_lr_by_momentum`) live in one
place only.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import torch
from torch import Tensor

Params = dict[str, Tensor]


def per_trial(values: Tensor, like: Tensor) -> Tensor:
    """(K,) values shaped (K, 1, ..., 1) to broadcast against a (K, ...) tensor."""
    return values.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.dim() - 1)))


def clip_grad_norms_(params: Params, max_norms: Tensor) -> Tensor:
    """`torch.nn.utils.clip_grad_norm_` for each trial of a pack: trial k's gradients (slice k of every
    parameter) are scaled by min(1, max_norms[k] / (norm_k + 1e-6)). Returns the (K,) norms before clipping;
    `inf` in max_norms is no clipping."""
    grads = [p.grad for p in params.values() if p.grad is not None]
    if not grads:
        return torch.zeros_like(max_norms)
    norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads], dim=1)
    total = torch.linalg.vector_norm(norms, dim=1)
    coef = torch.clamp(max_norms.to(total) / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(per_trial(coef, g))
    return total


class PackedOptimizer(abc.ABC):
    """Shared machinery: per-trial hyperparameters (tensors of shape (K,)), per-parameter state, and
    removal of trials (`select`). Subclasses define `_update`."""

    kind = ""
    hyper_names: tuple[str, ...] = ()

    def __init__(self, **hyper: Sequence[float] | Tensor) -> None:
        self.hyper = {name: torch.as_tensor(hyper[name], dtype=torch.float64) for name in self.hyper_names}
        widths = {len(v) for v in self.hyper.values()}
        if len(widths) != 1:
            raise ValueError(f"every hyperparameter needs one value per trial, got lengths {sorted(widths)}")
        self.state: dict[str, dict[str, Tensor]] = {}  # per parameter: tensors shaped like it
        self.steps = torch.zeros(self.width, dtype=torch.float64)  # updates so far, per trial

    @property
    def width(self) -> int:
        return len(next(iter(self.hyper.values())))

    @torch.no_grad()
    def step(self, params: Params, masks: Params | None = None) -> None:
        """One update of every trial from the gradients in `params[name].grad`."""
        self.steps = self.steps + 1
        for name, p in params.items():
            if p.grad is None:
                continue
            if p.shape[0] != self.width:
                raise ValueError(f"parameter {name} has {p.shape[0]} trials, the optimizer {self.width}")
            new = self._update(name, p, p.grad)
            if masks is not None and name in masks:
                new = torch.where(masks[name], new, p)
            p.copy_(new)

    @abc.abstractmethod
    def _update(self, name: str, p: Tensor, grad: Tensor) -> Tensor:
        """Trial-wise new value of parameter `name` from its gradient (each optimiser's own rule)."""

    def _h(self, name: str, like: Tensor) -> Tensor:
        return per_trial(self.hyper[name], like)

    def select(self, index: Sequence[int]) -> None:
        """Keep only the trials at `index` (in that order): a trial that leaves the pack leaves here too."""
        idx = torch.as_tensor(list(index), dtype=torch.long)
        self.hyper = {k: v[idx] for k, v in self.hyper.items()}
        self.steps = self.steps[idx]
        self.state = {name: {k: v[idx.to(v.device)] for k, v in s.items()} for name, s in self.state.items()}

    def state_dict(self) -> dict:
        """Tensors and plain types only (loadable with torch.load(weights_only=True))."""
        return {"kind": self.kind, "hyper": dict(self.hyper), "steps": self.steps,
                "state": {n: dict(s) for n, s in self.state.items()}}

    def load_state_dict(self, saved: dict, device: torch.device | str | None = None) -> None:
        """Restore `state_dict()`; the per-parameter state goes to `device` (that of the parameters)."""
        if saved["kind"] != self.kind:
            raise ValueError(f"checkpoint holds a {saved['kind']} optimizer state, this pack trains with {self.kind}")
        self.hyper = {k: v.to("cpu", torch.float64) for k, v in saved["hyper"].items()}
        self.steps = saved["steps"].to("cpu", torch.float64)
        self.state = {n: {k: v.to(device) for k, v in s.items()} for n, s in saved["state"].items()}

    @classmethod
    def from_torch(cls, optimizers: Sequence[torch.optim.Optimizer]) -> PackedOptimizer:
        """The packed optimizer whose trial k is `optimizers[k]` (one param group each, SGD or Adam)."""
        kinds = {type(opt) for opt in optimizers}
        if len(kinds) != 1:
            raise ValueError(f"the trials of a pack need one optimiser, got {sorted(k.__name__ for k in kinds)}")
        kind = kinds.pop()
        groups = []
        for opt in optimizers:
            if len(opt.param_groups) != 1:
                raise ValueError("packed optimisers take one parameter group per trial")
            groups.append(opt.param_groups[0])
        packed = {torch.optim.SGD: PackedSGD, torch.optim.Adam: PackedAdam}.get(kind)
        if packed is None:
            raise ValueError(f"no packed version of {kind.__name__}; use optim=sgd or optim=adam")
        return packed.from_groups(groups)


def _refuse(groups: Sequence[dict], flags: dict[str, object]) -> None:
    for group in groups:
        for flag, supported in flags.items():
            if group.get(flag, supported) != supported:
                raise ValueError(f"packed optimisers support {flag}={supported!r} only, got {group[flag]!r}")


class PackedSGD(PackedOptimizer):
    """torch.optim.SGD (dampening 0) per trial: d = g + wd p; b = m b + d (b = d at the first step);
    d = d + m b (Nesterov) or b; p = p - lr d."""

    kind = "sgd"
    hyper_names = ("lr", "momentum", "nesterov", "weight_decay")

    @classmethod
    def from_groups(cls, groups: Sequence[dict]) -> PackedSGD:
        _refuse(groups, {"dampening": 0, "maximize": False})
        return cls(**{name: [float(g[name]) for g in groups] for name in cls.hyper_names})

    def _update(self, name: str, p: Tensor, grad: Tensor) -> Tensor:
        d = grad + self._h("weight_decay", p) * p
        m = self._h("momentum", p)
        state = self.state.setdefault(name, {})
        buf = state["momentum_buffer"] = d.clone() if "momentum_buffer" not in state else state["momentum_buffer"] * m + d
        d = torch.where(self._h("nesterov", p) > 0, d + m * buf, buf)
        return p - self._h("lr", p) * d


class PackedAdam(PackedOptimizer):
    """torch.optim.Adam (no amsgrad) per trial: g = g + wd p; m = lerp(m, g, 1 - b1); v = b2 v + (1 - b2) g²;
    p = p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)."""

    kind = "adam"
    hyper_names = ("lr", "beta1", "beta2", "eps", "weight_decay")

    @classmethod
    def from_groups(cls, groups: Sequence[dict]) -> PackedAdam:
        _refuse(groups, {"amsgrad": False, "maximize": False, "decoupled_weight_decay": False})
        hyper = {name: [float(g[name]) for g in groups] for name in ("lr", "eps", "weight_decay")}
        return cls(beta1=[float(g["betas"][0]) for g in groups], beta2=[float(g["betas"][1]) for g in groups], **hyper)

    def _update(self, name: str, p: Tensor, grad: Tensor) -> Tensor:
        state = self.state.setdefault(name, {})
        if not state:
            state.update(exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
        g = grad + self._h("weight_decay", p) * p
        beta1, beta2 = self._h("beta1", p), self._h("beta2", p)
        state["exp_avg"] = state["exp_avg"].lerp(g, 1 - beta1)
        state["exp_avg_sq"] = state["exp_avg_sq"] * beta2 + (1 - beta2) * g * g
        # bias corrections in Python floats per trial, as torch computes them from its scalar step
        steps = self.steps.tolist()
        b1, b2 = self.hyper["beta1"].tolist(), self.hyper["beta2"].tolist()
        step_size = torch.tensor([lr / (1 - a**t) for lr, a, t in zip(self.hyper["lr"].tolist(), b1, steps)], dtype=torch.float64)
        bc2_sqrt = torch.tensor([(1 - b**t) ** 0.5 for b, t in zip(b2, steps)], dtype=torch.float64)
        denom = state["exp_avg_sq"].sqrt() / per_trial(bc2_sqrt, p) + self._h("eps", p)
        return p - per_trial(step_size, p) * (state["exp_avg"] / denom)
