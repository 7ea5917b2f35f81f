"""The cells beyond the paper (minGRU, minLSTM, sLSTM, IndyLSTM, IndRNN, JANET) against their papers'
equations, written out again here independently of lstm_odyssey/cells/.

The references read only the layer's fused parameters, split by block in the documented layout
(docs/equations.md: LSTM blocks i f z o of those kept; the recurrent weight a matrix (k N, N / heads)
whose rows (block, head, unit) hold the weights from that head's units, a diagonal (k N,), or absent),
and re-implement each cell step by step with one matrix per block, in float64.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from helpers import STEPS, K, assert_refused_in_one_line, assert_same, compare, one_trial
from omegaconf import OmegaConf

from lstm_odyssey import RecurrentLayer, backends
from lstm_odyssey.backends import BACKENDS
from lstm_odyssey.cells import FAMILIES, MODERN_CELLS, PRESETS, CellSpec, get_spec, ops

ROOT = Path(__file__).resolve().parents[1]
DTYPE = torch.float64
CPU = torch.device("cpu")

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: one torch thread for tiny tensors


def sigmoid(x):
    return 1 / (1 + torch.exp(-x))


# -- the parameters, block by block ------------------------------------------------------------------


def split(layer: RecurrentLayer, blocks: str, suffix: str = "_l0") -> dict:
    """W, R (one full N x N matrix per block, zeros without recurrence) and b by block name."""
    n, spec = layer.hidden_size, layer.spec
    W = dict(zip(blocks, getattr(layer, f"weight_ih{suffix}").split(n)))
    b = dict(zip(blocks, getattr(layer, f"bias{suffix}").split(n)))
    R = {}
    for j, g in enumerate(blocks):
        if spec.recurrence == "none":
            R[g] = torch.zeros(n, n, dtype=DTYPE)
        elif spec.recurrence == "diagonal":
            R[g] = torch.diag(getattr(layer, f"weight_hh{suffix}")[j * n : (j + 1) * n])
        else:  # block-diagonal over heads: rows of head h hold the weights from head h's units
            rows = getattr(layer, f"weight_hh{suffix}")[j * n : (j + 1) * n]
            d = n // spec.heads
            R[g] = torch.block_diag(*[rows[h * d : (h + 1) * d] for h in range(spec.heads)])
    return {"W": W, "R": R, "b": b}


def pre(P: dict, g: str, x, y):
    return x @ P["W"][g].T + y @ P["R"][g].T + P["b"][g]


# -- each cell from its paper, one step: (state) -> (output, state) ------------------------------------


def min_gru_step(P, x, state):
    """Feng et al. 2024, eq. for minGRU: z = sigmoid(Linear(x)), h~ = Linear(x), h = (1 - z) h + z h~.
    Here z is the coupled input gate (block i) and h~ the identity block input (block z)."""
    _, h = state
    z = sigmoid(x @ P["W"]["i"].T + P["b"]["i"])
    h_tilde = x @ P["W"]["z"].T + P["b"]["z"]
    h = (1 - z) * h + z * h_tilde
    return h, (h, h)


def min_lstm_step(P, x, state):
    """Feng et al. 2024, minLSTM: f, i = sigmoid(Linear(x)); f' = f / (f + i), i' = i / (f + i);
    h = f' h + i' h~, h~ = Linear(x)."""
    _, h = state
    f = sigmoid(x @ P["W"]["f"].T + P["b"]["f"])
    i = sigmoid(x @ P["W"]["i"].T + P["b"]["i"])
    h_tilde = x @ P["W"]["z"].T + P["b"]["z"]
    h = f / (f + i) * h + i / (f + i) * h_tilde
    return h, (h, h)


def slstm_step(P, x, state):
    """Beck et al. 2024 (xLSTM), the stabilised sLSTM: exponential input gate, sigmoid forget gate,
    m = max(log f + m_prev, i~) (m = i~ while the normaliser is still zero, as xLSTM's code starts),
    c = f' c + i' z, n = f' n + i', h = o c / n."""
    y, c, n, m = state
    i_tilde, f_tilde = pre(P, "i", x, y), pre(P, "f", x, y)
    z, o = torch.tanh(pre(P, "z", x, y)), sigmoid(pre(P, "o", x, y))
    log_f = -torch.log1p(torch.exp(-f_tilde))
    m_new = torch.where(n == 0, i_tilde, torch.maximum(log_f + m, i_tilde))
    i = torch.exp(i_tilde - m_new)
    f = torch.exp(log_f + m - m_new)
    c = f * c + i * z
    n = f * n + i
    y = o * c / n
    return y, (y, c, n, m_new)


def indy_lstm_step(P, x, state):
    """Gonnet & Deselaers 2020 (IndyLSTM): the LSTM (no peepholes) with diagonal recurrent weights,
    gate_j = sigma(W_j x + u_j * y_j + b_j) unit by unit."""
    y, c = state
    i, f, o = (sigmoid(pre(P, g, x, y)) for g in "ifo")
    c = f * c + i * torch.tanh(pre(P, "z", x, y))
    y = o * torch.tanh(c)
    return y, (y, c)


def indrnn_step(P, x, state):
    """Li et al. 2018 (IndRNN) with tanh: h = tanh(W x + u * h + b)."""
    (h,) = state
    h = torch.tanh(pre(P, "h", x, h))
    return h, (h,)


def janet_step(P, x, state, beta: float = 1.0):
    """van der Westhuizen & Lasenby 2018 (JANET), eqs. 9-12: s = U_f h + W_f x + b_f,
    c = sigma(s) c + (1 - sigma(s - beta)) tanh(U_c h + W_c x + b_c), h = c. The project stores the
    one gate as CIFG's input gate, whose pre-activation is -s."""
    h, c = state
    s = -pre(P, "i", x, h)
    c = sigmoid(s) * c + (1 - sigmoid(s - beta)) * torch.tanh(pre(P, "z", x, h))
    return c, (c, c)


REFERENCE_STEPS = {
    "min_gru": (min_gru_step, "iz"),
    "min_lstm": (min_lstm_step, "ifz"),
    "slstm": (slstm_step, "ifzo"),
    "indy_lstm": (indy_lstm_step, "ifzo"),
    "indrnn": (indrnn_step, "h"),
    "janet": (janet_step, "iz"),
}


def random_layer(cell, m: int, n: int, seed: int = 0, scale: float = 0.5, **kw) -> RecurrentLayer:
    layer = RecurrentLayer(m, n, cell, **kw).to(DTYPE)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=DTYPE) * scale)
    return layer


def random_state(layer: RecurrentLayer, batch: int, seed: int = 1) -> list[torch.Tensor]:
    """A state in the cell's domain: the sLSTM's normaliser n >= 1, as from the zero state on."""
    gen = torch.Generator().manual_seed(seed)
    parts = [torch.randn(s, generator=gen, dtype=DTYPE) for s in layer._state_shapes(batch)]
    if layer.spec.exponential_gates:
        parts[2] = 1 + torch.rand(parts[2].shape, generator=gen, dtype=DTYPE)
    return parts


def reference_run(step, P, x, lengths, init):
    """Each sequence alone up to its length; outputs past it are zero, the final state is the state there."""
    batch, steps, _ = x.shape
    out = torch.zeros(batch, steps, P["b"][next(iter(P["b"]))].shape[0], dtype=DTYPE)
    finals = []
    for s in range(batch):
        state = tuple(part[0, s : s + 1] for part in init)
        for t in range(lengths[s]):
            y, state = step(P, x[s : s + 1, t], state)
            out[s, t] = y[0]
        finals.append(state)
    return out, [torch.cat([f[k] for f in finals])[None] for k in range(len(init))]


# -- 1. each preset is its paper's cell ------------------------------------------------------------------


def test_every_new_preset_has_a_reference():
    assert set(REFERENCE_STEPS) == set(MODERN_CELLS) <= set(PRESETS)


@pytest.mark.parametrize("backend", ["loop", "fused"])
@pytest.mark.parametrize("with_state", [False, True], ids=["zero_state", "given_state"])
@pytest.mark.parametrize("cell", MODERN_CELLS)
def test_preset_matches_its_papers_equations(cell, with_state, backend):
    step, blocks = REFERENCE_STEPS[cell]
    m, n, batch, steps = 3, 4, 3, 7
    layer = random_layer(cell, m, n, seed=MODERN_CELLS.index(cell), backend=backend)
    assert layer.spec.blocks == tuple(blocks)
    x = torch.randn(batch, steps, m, dtype=DTYPE, generator=torch.Generator().manual_seed(7))
    lengths = [7, 5, 2]
    state = random_state(layer, batch) if with_state else [torch.zeros(s, dtype=DTYPE) for s in layer._state_shapes(batch)]
    out, final = layer(x, lengths=lengths, state=state if with_state else None)
    expected_out, expected_final = reference_run(step, split(layer, blocks), x, lengths, state)
    torch.testing.assert_close(out, expected_out, rtol=1e-10, atol=1e-10)
    got = [final] if isinstance(final, torch.Tensor) else list(final)
    assert len(got) == len(expected_final)
    for g, e in zip(got, expected_final):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", ["loop", "fused"])
def test_slstm_over_heads_is_block_diagonal_as_written(backend):
    """heads=2: the reference builds each block's R as block_diag(head 0, head 1) from the documented rows."""
    layer = random_layer({"preset": "slstm", "heads": 2}, 3, 6, seed=3, backend=backend)
    assert layer.weight_hh_l0.shape == (4 * 6, 3)
    x = torch.randn(2, 6, 3, dtype=DTYPE, generator=torch.Generator().manual_seed(2))
    state = random_state(layer, 2)
    out, _ = layer(x, lengths=[6, 4], state=state)
    expected, _ = reference_run(slstm_step, split(layer, "ifzo"), x, [6, 4], state)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


# -- 2. gradients --------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["loop", "fused"])
@pytest.mark.parametrize("cell", MODERN_CELLS)
def test_gradcheck(cell, backend):
    layer = random_layer(cell, 2, 3, seed=11, backend=backend)
    x = torch.randn(2, 5, 2, dtype=DTYPE, generator=torch.Generator().manual_seed(4), requires_grad=True)
    params = list(layer.parameters())
    names = [name for name, _ in layer.named_parameters()]

    def run(x, *values):
        out, final = torch.func.functional_call(layer, dict(zip(names, values)), (x,), {"lengths": [5, 3]})
        finals = [final] if isinstance(final, torch.Tensor) else list(final)
        return (out, *finals)

    assert torch.autograd.gradcheck(run, (x, *[p.detach().requires_grad_() for p in params]), eps=1e-6, atol=1e-6)


# -- 3. the flag space's invariants ----------------------------------------------------------------------


def gates_of(cell, steps: int = 6, **kw):
    layer = random_layer(cell, 3, 4, seed=5, backend="loop", **kw)
    x = torch.randn(2, steps, 3, dtype=DTYPE, generator=torch.Generator().manual_seed(6))
    return layer(x, return_gates=True)[2][0]


def test_min_gru_forget_gate_is_one_minus_its_update_gate_and_output_is_the_cell():
    g = gates_of("min_gru")
    torch.testing.assert_close(g["f"], 1 - g["i"])
    torch.testing.assert_close(g["y"], g["c"])
    assert torch.all(g["o"] == 1)


def test_min_lstm_normalised_gates_sum_to_one():
    g = gates_of("min_lstm")
    torch.testing.assert_close(g["i"] + g["f"], torch.ones_like(g["i"]))


def test_janet_input_gate_is_the_shifted_complement_of_its_forget_gate():
    g = gates_of("janet")
    s = torch.logit(1 - g["f"])  # the input gate's pre-activation: f = 1 - sigmoid(s)
    torch.testing.assert_close(g["i"], sigmoid(s + 1.0))
    torch.testing.assert_close(g["y"], g["c"])


def test_slstm_stabilised_and_unstabilised_forms_agree_where_both_are_finite():
    """The unstabilised sLSTM (i = exp(i~), f = sigmoid(f~), raw c and n) gives the same outputs as the
    stabilised one while exp(i~) is finite; with large pre-activations it overflows, the layer does not."""
    for scale, finite in ((1.0, True), (800.0, False)):  # exp(800) overflows float64
        layer = random_layer("slstm", 3, 4, seed=8, backend="loop")
        with torch.no_grad():
            layer.bias_l0[:4].fill_(scale)  # the input gate's bias
        x = torch.randn(2, 6, 3, dtype=DTYPE, generator=torch.Generator().manual_seed(9))
        out, _ = layer(x)
        P = split(layer, "ifzo")
        y = c = n = torch.zeros(2, 4, dtype=DTYPE)
        expected = []
        for t in range(6):
            i = torch.exp(pre(P, "i", x[:, t], y))
            f = sigmoid(pre(P, "f", x[:, t], y))
            c = f * c + i * torch.tanh(pre(P, "z", x[:, t], y))
            n = f * n + i
            y = sigmoid(pre(P, "o", x[:, t], y)) * c / n
            expected.append(y)
        expected = torch.stack(expected, 1)
        assert torch.isfinite(out).all()
        if finite:
            assert torch.isfinite(expected).all()
            torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
        else:
            assert not torch.isfinite(expected).all()


@pytest.mark.parametrize("cell", ["min_gru", "min_lstm", {"preset": "cifg", "recurrence": "none"}])
def test_no_recurrence_ignores_the_previous_output(cell):
    """No recurrent weights: the step reads c_{t-1} and x_t only. The same cell with a full R equals it
    when R is zero and differs when it is not."""
    layer = random_layer(cell, 3, 4, seed=12, backend="loop")
    assert "weight_hh_l0" not in dict(layer.named_parameters())
    spec = layer.spec
    with_r = random_layer(dataclasses.replace(spec, recurrence="full"), 3, 4, seed=12, backend="loop")
    with torch.no_grad():
        for name, p in layer.named_parameters():
            getattr(with_r, name).copy_(p)
        with_r.weight_hh_l0.zero_()
    x = torch.randn(2, 6, 3, dtype=DTYPE, generator=torch.Generator().manual_seed(13))
    torch.testing.assert_close(layer(x)[0], with_r(x)[0], rtol=0, atol=0)
    with torch.no_grad():
        with_r.weight_hh_l0.normal_()
    assert (layer(x)[0] - with_r(x)[0]).abs().max() > 1e-3
    # one step: a different y_{t-1} changes nothing, a different c_{t-1} does
    family = FAMILIES[spec.family]
    params = layer._params("_l0")
    xp = family.input_projection(x.transpose(0, 1), params)[0]
    weights = family.recurrent_weights(params)
    y0, c0 = torch.randn(2, 2, 4, dtype=DTYPE, generator=torch.Generator().manual_seed(14))
    a = family.step(spec, xp, [y0, c0], weights)
    b = family.step(spec, xp, [-3 * y0, c0], weights)
    c = family.step(spec, xp, [y0, c0 + 1], weights)
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)
    torch.testing.assert_close(a[1][1], b[1][1], rtol=0, atol=0)
    assert (a[1][1] - c[1][1]).abs().max() > 1e-3


@pytest.mark.parametrize("cell", ["indrnn", "indy_lstm"])
def test_diagonal_recurrence_keeps_units_independent(cell):
    """u * h: a unit's trajectory depends on its own state only (the input is shared)."""
    layer = random_layer(cell, 3, 4, seed=15, backend="loop")
    x = torch.randn(2, 6, 3, dtype=DTYPE, generator=torch.Generator().manual_seed(16))
    state = random_state(layer, 2)
    moved = [s.clone() for s in state]
    for s in moved:
        s[..., 0] += 1.0  # unit 0 of every state part
    out, _ = layer(x, state=state[0] if len(state) == 1 else tuple(state))
    out_moved, _ = layer(x, state=moved[0] if len(moved) == 1 else tuple(moved))
    torch.testing.assert_close(out[..., 1:], out_moved[..., 1:], rtol=0, atol=0)
    assert (out[..., 0] - out_moved[..., 0]).abs().max() > 1e-3


def test_heads_keep_heads_independent():
    """Block-diagonal R over 2 heads: moving head 0's state never reaches head 1."""
    layer = random_layer({"preset": "np", "heads": 2}, 3, 4, seed=17, backend="loop")
    assert layer.weight_hh_l0.shape == (16, 2)
    x = torch.randn(2, 6, 3, dtype=DTYPE, generator=torch.Generator().manual_seed(18))
    state = random_state(layer, 2)
    moved = [s.clone() for s in state]
    for s in moved:
        s[..., :2] += 1.0
    out, _ = layer(x, state=tuple(state))
    out_moved, _ = layer(x, state=tuple(moved))
    torch.testing.assert_close(out[..., 2:], out_moved[..., 2:], rtol=0, atol=0)
    assert (out[..., :2] - out_moved[..., :2]).abs().max() > 1e-3


# -- 4. parameter counts ---------------------------------------------------------------------------------


def formula(cell: str, m: int, n: int, heads: int = 1) -> int:
    """Each cell's count, typed in from its equations: weights, recurrent weights, biases."""
    return {
        "min_gru": 2 * n * m + 2 * n,  # z and h~ from x only
        "min_lstm": 3 * n * m + 3 * n,  # f, i and h~ from x only
        "slstm": 4 * n * m + 4 * n * n // heads + 4 * n,  # i f z o, R block-diagonal over heads
        "indy_lstm": 4 * n * m + 4 * n + 4 * n,  # one recurrent weight per unit and gate
        "indrnn": n * m + n + n,
        "janet": 2 * n * (m + n) + 2 * n,  # one gate and the block input
    }[cell]


@pytest.mark.parametrize("m,n", [(88, 128), (1, 1), (3, 5), (7, 2)])
@pytest.mark.parametrize("cell", MODERN_CELLS)
def test_parameter_counts_by_formula(cell, m, n):
    expected = formula(cell, m, n)
    assert get_spec(cell).num_parameters(m, n) == expected
    assert RecurrentLayer(m, n, cell).num_parameters() == expected
    stacked = RecurrentLayer(m, n, cell, num_layers=2, bidirectional=True).num_parameters()
    assert stacked == 2 * expected + 2 * formula(cell, 2 * n, n)


def test_parameter_counts_over_heads():
    spec = get_spec({"preset": "slstm", "heads": 4})
    assert spec.num_parameters(88, 128) == formula("slstm", 88, 128, heads=4) == RecurrentLayer(88, 128, spec).num_parameters()
    with pytest.raises(ValueError, match="hidden_size=130 is not a multiple of heads=4"):
        RecurrentLayer(88, 130, spec)


# -- 5. the scan over time -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["auto", "log"], ids=["cpu_sweep", "log_space"])
def test_linear_scan_equals_the_recurrence(method, monkeypatch):
    """Signed values, gates from ~0 to exactly 1, a long sequence: the scan (the CPU's multiply-add
    sweep, and the parallel log-space scan CUDA runs) equals the recurrence written as a loop."""
    monkeypatch.setenv("LSTM_ODYSSEY_SCAN", method)
    assert ops.scan_in_log_space(torch.zeros(1)) == (method == "log")
    gen = torch.Generator().manual_seed(19)
    steps = 300
    log_a = -torch.rand(steps, 3, 5, generator=gen, dtype=DTYPE) * torch.tensor([0.0, 0.05, 30.0], dtype=DTYPE)[None, :, None]
    b = torch.randn(steps, 3, 5, generator=gen, dtype=DTYPE)
    b[::7] = 0
    h0 = torch.randn(3, 5, generator=gen, dtype=DTYPE)
    h, expected = h0, []
    for t in range(steps):
        h = log_a[t].exp() * h + b[t]
        expected.append(h)
    decay = log_a if method == "log" else log_a.exp()  # the log-space scan takes log a
    torch.testing.assert_close(ops.linear_scan(decay, b, h0), torch.stack(expected), rtol=1e-10, atol=1e-10)
    # its adjoint: lambda_t = dL/dh_t for L = sum(g h) + g_last h_T, from autograd through the loop
    g, g_last = torch.randn(steps, 3, 5, generator=gen, dtype=DTYPE), torch.randn(3, 5, generator=gen, dtype=DTYPE)
    torch.testing.assert_close(ops.linear_scan_adjoint(decay, g, g_last), _adjoint_by_autograd(log_a, b, h0, g, g_last),
                               rtol=1e-10, atol=1e-10)


def _adjoint_by_autograd(log_a, b, h0, g, g_last):
    """dL/dh_t by autograd: each h_t = a_t h_{t-1} + b_t + e_t with a zero e_t to differentiate by."""
    e = torch.zeros_like(b, requires_grad=True)
    h, outs = h0, []
    for t in range(b.shape[0]):
        h = log_a[t].exp() * h + b[t] + e[t]
        outs.append(h)
    loss = (torch.stack(outs) * g).sum() + (outs[-1] * g_last).sum()
    return torch.autograd.grad(loss, e)[0]


@pytest.mark.parametrize("cell", [
    "min_gru", "min_lstm", {"preset": "min_gru", "output_gate": True, "output_activation": "tanh"},
    {"input_gate": False, "forget_gate": False, "recurrence": "none"},  # c_t = c_{t-1} + z_t, o's peephole on c_t
])
@pytest.mark.parametrize("method", ["auto", "log"], ids=["cpu_sweep", "log_space"])
def test_scan_equals_the_sequential_loop(cell, method, monkeypatch):
    """Outputs, final state and every gradient: the scan (fused; the log-space one as CUDA runs it, or
    the CPU's sweep), the sequential eager LSTM sweep (LSTM_ODYSSEY_SCAN=0) and the reference loop,
    over 200 steps with lengths and a given state."""
    monkeypatch.setenv("LSTM_ODYSSEY_SCAN", method)
    layer = random_layer(cell, 3, 8, seed=20)
    spec = layer.spec
    assert FAMILIES["lstm"].fused_kernel(spec, torch.zeros(1, 1, 1)) == "scan"
    x = torch.randn(4, 200, 3, dtype=DTYPE, generator=torch.Generator().manual_seed(21), requires_grad=True)
    state = [s.requires_grad_() for s in random_state(layer, 4)]

    def results(backend: str):
        layer.backend = backend
        out, final = layer(x, lengths=[200, 150, 37, 1], state=tuple(state))
        loss = (out * torch.linspace(-1, 1, out.numel(), dtype=DTYPE).view_as(out)).sum() + (final[0] ** 2).sum() + final[1].sum()
        return [out, *final, *torch.autograd.grad(loss, [x, *layer.parameters(), *state])]

    scan = results("fused")
    monkeypatch.setenv("LSTM_ODYSSEY_SCAN", "0")
    assert FAMILIES["lstm"].fused_kernel(spec, torch.zeros(1, 1, 1)) == "eager"
    for other in (results("fused"), results("loop")):
        for got, want in zip(scan, other, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_auto_runs_the_scan_for_cells_parallel_in_time_and_says_why_others_run_eager():
    for cell in MODERN_CELLS:
        spec = PRESETS[cell]
        assert backends.select("auto", spec, CPU) == "fused"
        path = backends.fused_kernel(spec, CPU)
        assert path.startswith("scan" if cell in ("min_gru", "min_lstm") else "eager"), path
    assert "exponential_gates" in backends.fused_kernel(PRESETS["slstm"], CPU)
    assert "recurrence='diagonal'" in backends.fused_kernel(PRESETS["indy_lstm"], CPU)
    assert "coupling_shift" in backends.fused_kernel(PRESETS["janet"], CPU)


def test_the_triton_kernel_is_not_asked_to_run_new_flags(monkeypatch):
    """Where Triton would run, a cell with a flag its kernel lacks runs the eager sweep instead."""
    monkeypatch.setattr(ops, "triton_runs", lambda xp: True)
    lstm, xp = FAMILIES["lstm"], torch.zeros(1, 1, 1)
    assert lstm.fused_kernel(PRESETS["vanilla"], xp) == "triton"
    assert lstm.fused_kernel(PRESETS["cifg"], xp) == "triton"
    for cell in ("slstm", "indy_lstm", "janet", {"preset": "np", "heads": 2}, {"preset": "min_lstm", "recurrence": "full"},
                 {"preset": "vanilla", "input_activation": "positive"}):
        assert lstm.fused_kernel(get_spec(cell), xp) == "eager", cell
        assert lstm.kernel_problem(get_spec(cell)).startswith("the LSTM Triton kernel has no")


# -- 6. every backend that claims a cell computes the loop's results --------------------------------------

COMBOS = {
    "vanilla+diagonal": {"preset": "vanilla", "recurrence": "diagonal"},
    "cifg+none": {"preset": "cifg", "recurrence": "none"},
    "vanilla+none": {"preset": "vanilla", "recurrence": "none"},  # peepholes: sequential, not a scan
    "np+heads": {"preset": "np", "heads": 5},  # compare() runs 5 units: 5 heads of one (heads=2: below)
    "rnn+heads": {"preset": "rnn", "heads": 5},
    "slstm+heads": {"preset": "slstm", "heads": 5},
    "slstm+none": {"preset": "slstm", "recurrence": "none"},
    "slstm+nfg+tanh": {"preset": "slstm", "forget_gate": False, "output_activation": "tanh", "input_activation": "identity"},
    "min_lstm+full": {"preset": "min_lstm", "recurrence": "full"},
    "min_lstm+peepholes": {"preset": "min_lstm", "peepholes": True, "output_gate": True},
    "janet+none": {"preset": "janet", "recurrence": "none"},
    "janet+peepholes": {"preset": "janet", "peepholes": True, "output_gate": True, "coupling_shift": -0.5},
    "min_gru+positive": {"preset": "min_gru", "input_activation": "positive"},
    "vanilla+positive": {"preset": "vanilla", "input_activation": "positive"},
}


@pytest.mark.parametrize("cell", [*MODERN_CELLS, *COMBOS])
def test_every_backend_that_claims_a_new_cell_equals_the_loop(cell):
    flags = COMBOS.get(cell, cell)
    if cell in COMBOS:
        assert get_spec(flags).name not in PRESETS
    device = torch.device("cuda") if torch.cuda.is_available() else CPU
    claimed = [b for b in BACKENDS if b not in ("auto", "loop") and backends.why_not(b, get_spec(flags), device) is None]
    assert "fused" in claimed
    for backend in claimed:
        compare(flags, backend, device=device.type)


def test_stacked_trials_of_new_cells_equal_each_trial_alone():
    """The trial axis K (tests/test_trials.py) through the new paths: scan, exponential, diagonal, heads."""
    gen = torch.Generator().manual_seed(22)
    for cell in ("min_gru", "min_lstm", "slstm", "indy_lstm", "indrnn", "janet", {"preset": "slstm", "heads": 2}):
        spec = get_spec(cell)
        family = FAMILIES[spec.family]
        shapes = family.parameter_shapes(spec, 3, 4)
        weights = [None if name not in shapes else torch.randn(K, *shapes[name], generator=gen, dtype=DTYPE) * 0.5
                   if len(shapes[name]) == 2 else torch.randn(K, 1, *shapes[name], generator=gen, dtype=DTYPE) * 0.5
                   for name in family.recurrent_names]
        states = [torch.randn(K, 2, w, generator=gen, dtype=DTYPE) for w in family.state_sizes(spec, 4)]
        if spec.exponential_gates:
            states[2] = 1 + states[2].abs()
        xp = torch.randn(STEPS, K, 2, len(spec.blocks) * 4, generator=gen, dtype=DTYPE)
        mask = (torch.arange(STEPS)[:, None, None] < torch.randint(1, STEPS + 1, (K, 2), generator=gen)).to(DTYPE).unsqueeze(-1)
        outs, saved = family.sequence_forward(spec, xp.clone(), states, weights, mask)
        grads = [torch.randn(o.shape, generator=gen, dtype=DTYPE) for o in outs]
        dxp, dstates, dweights = family.sequence_backward(spec, saved, list(grads), weights, mask)
        for k in range(K):
            outs_k, saved_k = family.sequence_forward(spec, xp[:, k].clone(), [s[k] for s in states], one_trial(weights, k), mask[:, k])
            grads_k = [grads[0][:, k]] + [g[k] for g in grads[1:]]
            dxp_k, dstates_k, dweights_k = family.sequence_backward(spec, saved_k, grads_k, one_trial(weights, k), mask[:, k])
            assert_same(outs[0][:, k], outs_k[0], f"{spec.name} outputs")
            assert_same(dxp[:, k], dxp_k, f"{spec.name} d xp")
            for d, d_k in zip(dstates, dstates_k, strict=True):
                assert_same(d[k], d_k, f"{spec.name} d state")
            for d, d_k in zip(dweights, dweights_k, strict=True):
                if d is not None:
                    assert_same(d[k].reshape(d_k.shape), d_k, f"{spec.name} d weight")


# -- 7. impossible cells -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags,words",
    [
        ({"recurrence": "sparse"}, ("recurrence",)),
        ({"recurrence": "diagonal", "heads": 2}, ("heads", "recurrence='full'")),
        ({"heads": 0}, ("heads",)),
        ({"preset": "gru", "recurrence": "diagonal"}, ("gru", "recurrence='full'")),
        ({"preset": "gru", "heads": 2}, ("gru",)),
        ({"preset": "rnn", "recurrence": "none"}, ("rnn", "no memory")),
        ({"preset": "rnn", "exponential_gates": True}, ("exponential_gates", "LSTM-family")),
        ({"coupling_shift": 1.0}, ("coupling_shift", "coupled=True")),
        ({"preset": "cifg", "coupling_shift": float("nan")}, ("coupling_shift", "finite")),
        ({"preset": "fgr", "coupled": True, "coupling_shift": 1.0}, ("coupling_shift", "full_gate_recurrence")),
        ({"normalized_gates": True, "coupled": True}, ("normalized_gates",)),
        ({"normalized_gates": True, "forget_gate": False}, ("normalized_gates",)),
        ({"preset": "slstm", "peepholes": True}, ("exponential_gates", "peepholes=False")),
        ({"preset": "slstm", "input_gate": False}, ("exponential_gates", "input_gate")),
        ({"preset": "slstm", "full_gate_recurrence": True}, ("exponential_gates", "full_gate_recurrence")),
        ({"output_activation": "positive"}, ("output_activation",)),
        ({"preset": "min_lstm", "full_gate_recurrence": True}, ("normalized_gates", "full_gate_recurrence")),
    ],
)
def test_impossible_new_cells_are_refused_in_one_line(flags, words):
    assert_refused_in_one_line(flags, words)


def test_new_flags_default_to_every_existing_preset_and_combine():
    for name, spec in PRESETS.items():
        if name not in MODERN_CELLS:
            assert (spec.recurrence, spec.heads, spec.exponential_gates, spec.normalized_gates, spec.coupling_shift) == ("full", 1, False, False, 0.0)
    assert get_spec({"preset": "vanilla", "recurrence": "diagonal"}).num_parameters(3, 4) == 4 * 4 * 3 + 16 + 16 + 12
    assert get_spec({"preset": "cifg", "coupling_shift": 1}).coupling_shift == 1.0  # an int from a command line
    assert get_spec({"preset": "janet", "output_gate": True, "output_activation": "tanh"}) == CellSpec(coupled=True, coupling_shift=1.0, peepholes=False)


@pytest.mark.parametrize("cell", MODERN_CELLS)
def test_cell_config_composes_to_its_preset(cell):
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "cell" / f"{cell}.yaml"), resolve=True)
    assert get_spec(cfg) == PRESETS[cell] and get_spec(cfg).name == cell
    flags = {k: v for k, v in cfg.items() if k != "name"}
    assert set(flags) == {f.name for f in dataclasses.fields(CellSpec)}
    assert get_spec(flags) == PRESETS[cell]


# -- 8. reference implementations from the package index (skipped when absent) ----------------------------


def test_equals_mingru_pytorch_after_copying_weights():
    """lucidrains' minGRU / minLSTM (pip install mingru-pytorch): no biases, Feng et al.'s positive
    g(x) on h~ (input_activation=positive here); its parallel (log-space scan) and sequential modes."""
    package = pytest.importorskip("minGRU_pytorch")
    from minGRU_pytorch.minLSTM import minLSTM

    gen = torch.Generator().manual_seed(23)
    n, steps = 6, 9
    x = torch.randn(2, steps, n, generator=gen, dtype=DTYPE)
    h0 = torch.rand(2, 1, n, generator=gen, dtype=DTYPE) + 0.1  # the package's log space needs h > 0
    for name, theirs, order in (("min_gru", package.minGRU(n).double(), ("z", "i")), ("min_lstm", minLSTM(n).double(), ("z", "f", "i"))):
        layer = RecurrentLayer(n, n, {"preset": name, "input_activation": "positive"}).double()
        weight = next(theirs.parameters())  # (hidden, gate[, gate]) rows, each n
        with torch.no_grad():
            for block, rows in zip(order, weight.split(n)):
                layer.weight_ih_l0[list(layer.spec.blocks).index(block) * n :][:n].copy_(rows)
            layer.bias_l0.zero_()
        state = (h0.transpose(0, 1), h0.transpose(0, 1))
        with torch.no_grad():
            ours, _ = layer(x, state=state)
            if name == "min_gru":  # minLSTM's parallel mode applies g to a given h0 as well; its sequential mode does not
                torch.testing.assert_close(theirs(x, prev_hidden=h0), ours, rtol=1e-10, atol=1e-10)
                torch.testing.assert_close(theirs(x), layer(x)[0], rtol=1e-10, atol=1e-10)
            h, stepped = h0, []
            for t in range(steps):
                out, h = theirs(x[:, t : t + 1], prev_hidden=h, return_next_prev_hidden=True)
                stepped.append(out)
            torch.testing.assert_close(torch.cat(stepped, 1), ours, rtol=1e-10, atol=1e-10)


def test_equals_the_xlstm_packages_slstm_cell_after_copying_weights():
    """xLSTM's own sLSTM cell (pip install xlstm; its PyTorch 'vanilla' backend, no CUDA), two heads,
    float64: outputs and the final (y, c, n, m) from the zero state."""
    cell_module = pytest.importorskip("xlstm.blocks.slstm.cell")
    n, heads, steps = 8, 2, 7
    config = cell_module.sLSTMCellConfig(hidden_size=n, num_heads=heads, backend="vanilla", dtype="float32", output_shape="BSH")
    theirs = cell_module.sLSTMCell(config).double()
    layer = random_layer({"preset": "slstm", "heads": heads}, 3, n, seed=24)
    d = n // heads
    with torch.no_grad():  # theirs: R (heads, gate * d + unit, from); ours: rows (gate, head, unit)
        theirs._recurrent_kernel_.copy_(layer.weight_hh_l0.view(4, heads, d, d).transpose(0, 1).reshape(heads, 4 * d, d))
        theirs._bias_.copy_(layer.bias_l0)  # both gate-major: (gate, head, unit)
    x = torch.randn(2, steps, 3, dtype=DTYPE, generator=torch.Generator().manual_seed(25))
    with torch.no_grad():
        ours, final = layer(x)
        wx = x @ layer.weight_ih_l0.T
        out, state = theirs(wx)
    torch.testing.assert_close(out, ours, rtol=1e-10, atol=1e-10)
    for k, part in enumerate(final):
        torch.testing.assert_close(state[k], part[0], rtol=1e-10, atol=1e-10)
    assert math.isfinite(float(ours.abs().max()))


def test_initialisation_of_the_new_recurrent_weights():
    """torch: U(±1/√N) for every recurrence; keras: a diagonal U(0, 1), heads' rows orthogonal."""
    torch.manual_seed(26)
    bound = 1 / math.sqrt(64)
    for cell in ("indrnn", "indy_lstm", {"preset": "slstm", "heads": 4}):
        w = RecurrentLayer(8, 64, cell).weight_hh_l0
        assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    u = RecurrentLayer(8, 64, "indrnn", init="keras").weight_hh_l0
    assert u.min() >= 0 and u.max() <= 1 and u.std() > 0.2
    r = RecurrentLayer(8, 64, {"preset": "slstm", "heads": 4}, init="keras").weight_hh_l0  # (256, 16)
    torch.testing.assert_close(r.T @ r, torch.eye(16), rtol=0, atol=1e-5)
    assert "weight_hh_l0" not in dict(RecurrentLayer(8, 64, "min_gru", init="keras").named_parameters())
