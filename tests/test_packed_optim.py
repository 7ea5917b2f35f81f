"""The packed optimisers and clipping equal torch.optim / clip_grad_norm_ on each trial alone (float64)."""

from __future__ import annotations

import math

import pytest
import torch

from lstm_odyssey.packed.optim import PackedAdam, PackedOptimizer, PackedSGD, clip_grad_norms_

SHAPES = {"w": (6, 4), "b": (6,), "u": (2, 3, 5)}
PAD = {"w": (8, 5), "b": (7,), "u": (2, 4, 5)}  # each trial's tensors sit in the corner of these


def corner(shape: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(0, n) for n in shape)


def trial_params(k: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + k)
    return {name: torch.randn(shape, generator=g, dtype=torch.float64) for name, shape in SHAPES.items()}


def pack_of(trials: list[dict[str, torch.Tensor]]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Trials' tensors padded with zeros to PAD and stacked; masks mark the real entries."""
    params, masks = {}, {}
    for name in SHAPES:
        p = torch.zeros(len(trials), *PAD[name], dtype=torch.float64)
        m = torch.zeros(len(trials), *PAD[name], dtype=torch.bool)
        for k, t in enumerate(trials):
            p[k][corner(SHAPES[name])] = t[name]
            m[k][corner(SHAPES[name])] = True
        params[name], masks[name] = p.requires_grad_(), m
    return params, masks


def gradient(k: int, step: int, name: str, shape) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 * step + 10 * k + len(name))
    return torch.randn(shape, generator=g, dtype=torch.float64)


SGD_TRIALS = [
    {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.0},
    {"lr": 0.03, "momentum": 0.5, "nesterov": False, "weight_decay": 1e-2},
    {"lr": 0.2, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0},
    {"lr": 0.01 * (1 - 0.99), "momentum": 0.99, "nesterov": True, "weight_decay": 1e-3},  # scale_lr_by_momentum
]
ADAM_TRIALS = [
    {"lr": 1e-3, "betas": (0.9, 0.999), "weight_decay": 0.0},
    {"lr": 3e-2, "betas": (0.5, 0.99), "weight_decay": 1e-2},
    {"lr": 1e-1, "betas": (0.0, 0.9), "eps": 1e-6, "weight_decay": 0.0},
]


@pytest.mark.parametrize("opt_cls", [torch.optim.SGD, torch.optim.Adam])
def test_each_trial_updates_as_torch_optim_on_that_trial_alone(opt_cls):
    settings = SGD_TRIALS if opt_cls is torch.optim.SGD else ADAM_TRIALS
    singles = [trial_params(k) for k in range(len(settings))]
    params, masks = pack_of(singles)
    torch_opts = [opt_cls(list(s.values()), **kw) for s, kw in zip(singles, settings)]
    packed = PackedOptimizer.from_torch(torch_opts)
    assert isinstance(packed, PackedSGD if opt_cls is torch.optim.SGD else PackedAdam)
    for step in range(6):
        for k, (single, opt) in enumerate(zip(singles, torch_opts)):
            for name, p in single.items():
                p.grad = gradient(k, step, name, p.shape)
            opt.step()
        for name, p in params.items():
            grad = torch.randn(p.shape, dtype=torch.float64)  # garbage in the padding: the mask must hold it
            for k in range(len(settings)):
                grad[k][corner(SHAPES[name])] = gradient(k, step, name, SHAPES[name])
            p.grad = grad
        packed.step(params, masks)
        for k, single in enumerate(singles):
            for name, p in params.items():
                real = p[k][corner(SHAPES[name])]
                assert (real - single[name]).abs().max().item() < 1e-12, (k, name, step)
                assert (p[k][~masks[name][k]] == 0).all(), "padded entries must never move"


def test_removing_a_trial_leaves_the_others_unchanged():
    singles = [trial_params(k) for k in range(len(ADAM_TRIALS))]
    params, masks = pack_of(singles)
    packed = PackedOptimizer.from_torch([torch.optim.Adam(list(s.values()), **kw) for s, kw in zip(singles, ADAM_TRIALS)])
    kept = PackedOptimizer.from_torch([torch.optim.Adam(list(singles[k].values()), **ADAM_TRIALS[k]) for k in (0, 2)])
    params_kept = {n: p.detach()[[0, 2]].clone().requires_grad_() for n, p in params.items()}
    masks_kept = {n: m[[0, 2]] for n, m in masks.items()}
    for step in range(4):
        if step == 2:  # trial 1 leaves the big pack mid-training
            packed.select([0, 2])
            params = {n: p.detach()[[0, 2]].clone().requires_grad_() for n, p in params.items()}
            masks = masks_kept
        for current, opt, mask in ((params, packed, masks), (params_kept, kept, masks_kept)):
            rows = [0, 1, 2] if next(iter(current.values())).shape[0] == 3 else [0, 2]
            for name, p in current.items():
                p.grad = torch.stack([torch.zeros(PAD[name], dtype=torch.float64) for _ in rows])
                for j, k in enumerate(rows):
                    p.grad[j][corner(SHAPES[name])] = gradient(k, step, name, SHAPES[name])
            opt.step(current, mask)
    for name in SHAPES:
        assert torch.equal(params[name], params_kept[name])


def test_state_dict_round_trip_continues_identically(tmp_path):
    singles = [trial_params(k) for k in range(len(SGD_TRIALS))]
    params, masks = pack_of(singles)
    make = lambda: PackedOptimizer.from_torch([torch.optim.SGD(list(s.values()), **kw) for s, kw in zip(singles, SGD_TRIALS)])  # noqa: E731
    a = make()

    def grads(step):
        for name, p in params.items():
            p.grad = torch.stack([gradient(k, step, name, PAD[name]) for k in range(len(SGD_TRIALS))])

    grads(0)
    a.step(params, masks)
    torch.save(a.state_dict(), tmp_path / "opt.pt")
    b = make()
    b.load_state_dict(torch.load(tmp_path / "opt.pt", weights_only=True))
    snapshot = {n: p.detach().clone().requires_grad_() for n, p in params.items()}
    grads(1)
    a.step(params, masks)
    for name, p in snapshot.items():
        p.grad = params[name].grad
    b.step(snapshot, masks)
    for name in SHAPES:
        assert torch.equal(params[name], snapshot[name])


def test_unsupported_settings_are_refused_with_the_fix():
    p = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match="amsgrad"):
        PackedOptimizer.from_torch([torch.optim.Adam(p, amsgrad=True)])
    with pytest.raises(ValueError, match="one optimiser"):
        PackedOptimizer.from_torch([torch.optim.Adam(p), torch.optim.SGD(p, lr=0.1)])
    with pytest.raises(ValueError, match="optim=sgd or optim=adam"):
        PackedOptimizer.from_torch([torch.optim.RMSprop(p)])


@pytest.mark.parametrize("max_norms", [[0.5, 1.0, math.inf], [1e-3, 1e-3, 1e-3], [math.inf] * 3])
def test_per_trial_clipping_equals_clip_grad_norm_on_each_trial(max_norms):
    singles = [trial_params(k) for k in range(3)]
    params, _ = pack_of(singles)
    for k, single in enumerate(singles):
        for name, p in single.items():
            p.requires_grad_()
            p.grad = gradient(k, 0, name, p.shape)
    for name, p in params.items():
        p.grad = torch.zeros_like(p)
        for k in range(3):
            p.grad[k][corner(SHAPES[name])] = gradient(k, 0, name, SHAPES[name])
    norms = clip_grad_norms_(params, torch.tensor(max_norms, dtype=torch.float64))
    for k, single in enumerate(singles):
        expected = torch.nn.utils.clip_grad_norm_(list(single.values()), max_norms[k])
        assert abs(norms[k].item() - expected.item()) < 1e-12
        for name, p in single.items():
            assert (params[name].grad[k][corner(SHAPES[name])] - p.grad).abs().max().item() < 1e-12
