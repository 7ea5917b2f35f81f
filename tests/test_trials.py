"""Every family's reference step and fused sequence functions take a leading trial axis (K trials of one
cell side by side: states (K, B, N), weights (K, rows, cols), vectors (K, 1, n), sequences (T, K, B, kN)):
K stacked trials compute exactly what K separate single-trial calls compute, in float64."""

from __future__ import annotations

import pytest
import torch
from helpers import STEPS, K, assert_same, one_trial

from lstm_odyssey.cells import FAMILIES, get_spec

CELLS = ["vanilla", "fgr", "gru", "gru_cho", "rnn", "cifg"]  # LSTM with peepholes, FGR, both GRU resets, tanh RNN
BATCH, N = 2, 4  # K trials, STEPS time steps: tests/helpers.py


def stacked_inputs(cell: str, seed: int = 0):
    """Random per-trial weights and states with the trial axis first (FGR's gate state in (0, 1))."""
    spec = get_spec(cell)
    family = FAMILIES[spec.family]
    gen = torch.Generator().manual_seed(seed)
    shapes = family.parameter_shapes(spec, 3, N)

    def draw(*shape):
        return torch.randn(shape, generator=gen, dtype=torch.float64) * 0.5

    weights = []
    for name in family.recurrent_names:
        shape = shapes.get(name)
        weights.append(None if shape is None else draw(K, *shape) if len(shape) == 2 else draw(K, 1, *shape))
    widths = family.state_sizes(spec, N)
    states = [draw(K, BATCH, w) for w in widths]
    if spec.full_gate_recurrence:
        states[2] = torch.rand((K, BATCH, widths[2]), generator=gen, dtype=torch.float64)
    kn = len(spec.blocks) * N
    return spec, family, draw(STEPS, K, BATCH, kn), states, weights, gen


@pytest.mark.parametrize("cell", CELLS)
def test_one_step_of_stacked_trials_equals_each_trial_alone(cell):
    spec, family, xp, states, weights, _ = stacked_inputs(cell)
    y, new_state, acts = family.step(spec, xp[0], states, weights)
    assert y.shape == (K, BATCH, N)
    for k in range(K):
        y_k, state_k, acts_k = family.step(spec, xp[0, k], [s[k] for s in states], one_trial(weights, k))
        assert_same(y[k], y_k, f"{cell} y, trial {k}")
        for j, (s, s_k) in enumerate(zip(new_state, state_k)):
            assert_same(s[k], s_k, f"{cell} state {j}, trial {k}")
        assert set(acts) == set(acts_k)
        for name in acts:
            assert_same(acts[name][k], acts_k[name], f"{cell} activation {name}, trial {k}")


@pytest.mark.parametrize("with_mask", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("final_grads", [True, False], ids=["all-grads", "output-grad-only"])
@pytest.mark.parametrize("cell", CELLS)
def test_fused_sequence_of_stacked_trials_equals_each_trial_alone(cell, with_mask, final_grads):
    spec, family, xp, states, weights, gen = stacked_inputs(cell)
    mask = None
    if with_mask:  # each trial its own lengths (T, K, B, 1)
        lengths = torch.randint(1, STEPS + 1, (K, BATCH), generator=gen)
        mask = (torch.arange(STEPS)[:, None, None] < lengths).to(torch.float64).unsqueeze(-1)
    outs, saved = family.sequence_forward(spec, xp.clone(), states, weights, mask)
    grads = [torch.randn(o.shape, generator=gen, dtype=torch.float64) for o in outs]
    if not final_grads:
        grads = grads[:1] + [None] * (len(grads) - 1)
    dxp, dstates, dweights = family.sequence_backward(spec, saved, list(grads), weights, mask)
    assert outs[0].shape == (STEPS, K, BATCH, N) and dxp.shape == xp.shape
    for w, dw in zip(weights, dweights):
        assert (w is None) == (dw is None) and (w is None or dw.shape == w.shape)
    for k in range(K):
        mask_k = mask[:, k] if mask is not None else None
        outs_k, saved_k = family.sequence_forward(spec, xp[:, k].clone(), [s[k] for s in states], one_trial(weights, k), mask_k)
        grads_k = [grads[0][:, k]] + [g[k] if g is not None else None for g in grads[1:]]
        dxp_k, dstates_k, dweights_k = family.sequence_backward(spec, saved_k, grads_k, one_trial(weights, k), mask_k)
        assert_same(outs[0][:, k], outs_k[0], f"{cell} outputs, trial {k}")
        for j, (f, f_k) in enumerate(zip(outs[1:], outs_k[1:])):
            assert_same(f[k], f_k, f"{cell} final state {j}, trial {k}")
        assert_same(dxp[:, k], dxp_k, f"{cell} d xp, trial {k}")
        assert len(dstates) == len(dstates_k)
        for j, (d, d_k) in enumerate(zip(dstates, dstates_k)):
            assert_same(d[k], d_k, f"{cell} d state {j}, trial {k}")
        for j, (d, d_k) in enumerate(zip(dweights, dweights_k)):
            if d is not None:
                assert_same(d[k].reshape(d_k.shape), d_k, f"{cell} d weight {family.recurrent_names[j]}, trial {k}")


def test_single_trial_fused_sequence_matches_autograd_through_the_reference_step():
    """The stacked test above compares the fused path with itself; this anchors it to the equations:
    one trial's fused gradients equal autograd through `step` (tests/test_backends.py does it for the
    whole layer)."""
    spec, family, xp, states, weights, gen = stacked_inputs("fgr")
    xp1, states1, weights1 = xp[:, 0].clone().requires_grad_(), [s[0].clone().requires_grad_() for s in states], one_trial(weights, 0)
    weights1 = [w.clone().requires_grad_() for w in weights1]
    state, outs = states1, []
    for t in range(STEPS):
        y, state, _ = family.step(spec, xp1[t], state, weights1)
        outs.append(y)
    out = torch.stack(outs)
    g_out = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    expected = torch.autograd.grad((out * g_out).sum(), [xp1, *states1, *weights1])
    fouts, saved = family.sequence_forward(spec, xp1.detach().clone(), [s.detach() for s in states1], [w.detach() for w in weights1], None)
    assert_same(fouts[0], out.detach(), "outputs")
    dxp, dstates, dweights = family.sequence_backward(spec, saved, [g_out, None, None, None], [w.detach() for w in weights1], None)
    for got, want in zip([dxp, *dstates, *dweights], expected):
        assert_same(got, want, "gradient")
