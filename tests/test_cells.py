"""The cell family against docs/equations.md, written out again here independently of lstm_odyssey/cells/.

The reference below reads only the layer's fused parameters, split by block name in the documented
layout (LSTM blocks in torch order i f z o of those kept, peepholes i f o of those kept, FGR's gate
matrix with rows = target gate and columns = source gate; GRU blocks r u n; rnn one block), and
re-implements every equation step by step with separate matrices per block.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from helpers import assert_refused_in_one_line
from omegaconf import OmegaConf

from lstm_odyssey import cells
from lstm_odyssey.cells import PRESETS, CellSpec, get_spec
from lstm_odyssey.layers import RecurrentLayer

ROOT = Path(__file__).resolve().parents[1]
ALL = ("vanilla", "nig", "nfg", "nog", "niaf", "noaf", "cifg", "np", "fgr", "gru", "gru_cho", "grupp", "rnn")
DTYPE = torch.float64


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _lstm(gates: str = "ifo", coupled: bool = False, g=torch.tanh, h=torch.tanh, peep: bool = True, fgr: bool = False):
    return {"family": "lstm", "gates": gates, "coupled": coupled, "g": g, "h": h, "peep": peep, "fgr": fgr}


# What each preset is, straight from docs/equations.md (not from cells.PRESETS).
REFERENCE = {
    "vanilla": _lstm(),
    "nig": _lstm(gates="fo"),
    "nfg": _lstm(gates="io"),
    "nog": _lstm(gates="if"),
    "niaf": _lstm(g=_identity),
    "noaf": _lstm(h=_identity),
    "cifg": _lstm(gates="io", coupled=True),
    "np": _lstm(peep=False),
    "fgr": _lstm(fgr=True),
    "grupp": _lstm(gates="if", h=_identity, peep=False),
    "gru": {"family": "gru", "reset": "after"},
    "gru_cho": {"family": "gru", "reset": "before"},
    "rnn": {"family": "rnn"},
}
# Legal combinations beyond the presets (docs/equations.md: each flag changes one thing, independently): flags, and what they mean.
COMBOS = {
    "cifg+np": ({"preset": "cifg", "peepholes": False}, _lstm(gates="io", coupled=True, peep=False)),
    "fgr+nog": ({"preset": "fgr", "output_gate": False}, _lstm(gates="if", fgr=True)),
    "fgr+cifg": ({"preset": "fgr", "coupled": True}, _lstm(gates="io", coupled=True, fgr=True)),
    "nfg+niaf+noaf": (
        {"forget_gate": False, "input_activation": "identity", "output_activation": "identity"},
        _lstm(gates="io", g=_identity, h=_identity),
    ),
    "no_gates": ({"input_gate": False, "forget_gate": False, "output_gate": False}, _lstm(gates="")),
}
REFERENCE.update({name: ref for name, (_, ref) in COMBOS.items()})


def randomise(layer: RecurrentLayer, scale: float = 0.5, seed: int = 0) -> RecurrentLayer:
    """Every parameter (peepholes and biases included) drawn from N(0, scale²), so nothing is trivially zero."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)
    return layer


def make_layer(name: str, m: int, n: int, seed: int = 0, **kw) -> RecurrentLayer:
    cell = COMBOS[name][0] if name in COMBOS else name
    return randomise(RecurrentLayer(m, n, cell, **kw).to(DTYPE), seed=seed)


def state_parts(name: str, state) -> list[torch.Tensor]:
    return [state] if isinstance(state, torch.Tensor) else list(state)


def random_state(name: str, layers: int, n: int, batch: int, seed: int = 1):
    """A random initial state in the layer's layout (FGR: gate activations in (0, 1))."""
    gen = torch.Generator().manual_seed(seed)
    lead = (layers, batch, n)
    ref = REFERENCE[name]
    if ref["family"] != "lstm":
        return torch.randn(lead, generator=gen, dtype=DTYPE)
    h, c = torch.randn(lead, generator=gen, dtype=DTYPE), torch.randn(lead, generator=gen, dtype=DTYPE)
    if not ref["fgr"]:
        return (h, c)
    g = torch.rand((layers, batch, len(ref["gates"]) * n), generator=gen, dtype=DTYPE)
    return (h, c, g)


# -- the independent reference ----------------------------------------------------------------


def split_params(layer: RecurrentLayer, suffix: str, name: str) -> dict:
    """Separate per-block matrices from the fused parameters of one layer-direction."""
    ref = REFERENCE[name]
    n = layer.hidden_size
    w_ih = getattr(layer, f"weight_ih{suffix}")
    w_hh = getattr(layer, f"weight_hh{suffix}")
    bias = getattr(layer, f"bias{suffix}")
    if ref["family"] == "lstm":
        blocks = [b for b in "ifzo" if b == "z" or b in ref["gates"]]
    elif ref["family"] == "gru":
        blocks = ["r", "u", "n"]
    else:
        blocks = ["h"]
    assert w_ih.shape[0] == len(blocks) * n
    out = {
        "W": dict(zip(blocks, w_ih.split(n))),
        "R": dict(zip(blocks, w_hh.split(n))),
        "b": dict(zip(blocks, bias.split(n))),
    }
    if ref["family"] == "gru" and ref["reset"] == "after":
        out["bh"] = dict(zip(blocks, getattr(layer, f"bias_hh{suffix}").split(n)))
    if ref["family"] == "lstm" and ref["peep"] and ref["gates"]:  # no gate, nothing to peep
        out["p"] = dict(zip(ref["gates"], getattr(layer, f"peephole{suffix}").split(n)))
    if ref["family"] == "lstm" and ref["fgr"]:
        gg = getattr(layer, f"weight_gg{suffix}")
        gl = ref["gates"]
        out["G"] = {
            (src, dst): gg[gl.index(dst) * n : (gl.index(dst) + 1) * n, gl.index(src) * n : (gl.index(src) + 1) * n]
            for src in gl
            for dst in gl
        }
    return out


def lin(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return x @ w.t()


def lstm_ref_step(ref: dict, P: dict, x, y, c, prev: dict):
    """docs/equations.md, one step: z, i, f from c_{t-1}; o's peephole sees the NEW cell c_t."""

    def gate(g: str, cell: torch.Tensor) -> torch.Tensor:
        a = lin(x, P["W"][g]) + lin(y, P["R"][g]) + P["b"][g]
        if ref["peep"]:
            a = a + P["p"][g] * cell
        if ref["fgr"]:  # previous step's gate activations feed every gate; z gets none
            for src in ref["gates"]:
                a = a + lin(prev[src], P["G"][(src, g)])
        return torch.sigmoid(a)

    one = torch.ones_like(c)
    z = ref["g"](lin(x, P["W"]["z"]) + lin(y, P["R"]["z"]) + P["b"]["z"])
    i = gate("i", c) if "i" in ref["gates"] else one
    if ref["coupled"]:
        f = 1 - i
    else:
        f = gate("f", c) if "f" in ref["gates"] else one
    c_new = z * i + c * f
    o = gate("o", c_new) if "o" in ref["gates"] else one
    y_new = ref["h"](c_new) * o
    acts = {"i": i, "f": f, "o": o}
    return y_new, c_new, {g: acts[g] for g in ref["gates"]}


def gru_ref_step(ref: dict, P: dict, x, h):
    W, R, b = P["W"], P["R"], P["b"]
    if ref["reset"] == "after":
        bh = P["bh"]
        r = torch.sigmoid(lin(x, W["r"]) + b["r"] + lin(h, R["r"]) + bh["r"])
        u = torch.sigmoid(lin(x, W["u"]) + b["u"] + lin(h, R["u"]) + bh["u"])
        cand = torch.tanh(lin(x, W["n"]) + b["n"] + r * (lin(h, R["n"]) + bh["n"]))
    else:
        r = torch.sigmoid(lin(x, W["r"]) + lin(h, R["r"]) + b["r"])
        u = torch.sigmoid(lin(x, W["u"]) + lin(h, R["u"]) + b["u"])
        cand = torch.tanh(lin(x, W["n"]) + lin(r * h, R["n"]) + b["n"])
    return (1 - u) * cand + u * h


def ref_direction(name: str, P: dict, xs: torch.Tensor, init: list[torch.Tensor]):
    """Run one direction over time-major xs (T, B, M) from init state parts; returns outputs, final parts."""
    ref = REFERENCE[name]
    outs = []
    if ref["family"] == "lstm":
        y, c = init[0], init[1]
        n = y.shape[-1]
        if ref["fgr"]:
            prev = dict(zip(ref["gates"], init[2].split(n, dim=-1)))
        else:
            prev = {}
        for x in xs:
            y, c, prev = lstm_ref_step(ref, P, x, y, c, prev)
            outs.append(y)
        final = [y, c] + ([torch.cat([prev[g] for g in ref["gates"]], dim=-1)] if ref["fgr"] else [])
    else:
        h = init[0]
        for x in xs:
            h = gru_ref_step(ref, P, x, h) if ref["family"] == "gru" else torch.tanh(
                lin(x, P["W"]["h"]) + lin(h, P["R"]["h"]) + P["b"]["h"]
            )
            outs.append(h)
        final = [h]
    return torch.stack(outs), final


def ref_layer(layer: RecurrentLayer, name: str, x: torch.Tensor, state: list[torch.Tensor] | None):
    """Stack and directions as torch.nn.LSTM does, on batch-first x without padding."""
    xs = x.transpose(0, 1)
    batch = x.shape[0]
    dirs = 2 if layer.bidirectional else 1
    n = layer.hidden_size
    finals: list[list[torch.Tensor]] = []
    for lyr in range(layer.num_layers):
        outs = []
        for d in range(dirs):
            idx = lyr * dirs + d
            suffix = f"_l{lyr}" + ("_reverse" if d else "")
            if state is None:
                ref = REFERENCE[name]
                k = 1 if ref["family"] != "lstm" else (3 if ref["fgr"] else 2)
                init = [xs.new_zeros(batch, n) for _ in range(k)]
                if k == 3:
                    init[2] = xs.new_zeros(batch, len(ref["gates"]) * n)
            else:
                init = [s[idx] for s in state]
            inp = xs.flip(0) if d else xs
            out, final = ref_direction(name, split_params(layer, suffix, name), inp, init)
            outs.append(out.flip(0) if d else out)
            finals.append(final)
        xs = torch.cat(outs, dim=-1)
    stacked = [torch.stack([f[k] for f in finals]) for k in range(len(finals[0]))]
    return xs.transpose(0, 1), stacked


# -- 1. every preset equals the reference ----------------------------------------------------


def test_reference_covers_every_preset() -> None:
    # the cells beyond the paper have theirs in tests/test_modern_cells.py (test_every_new_preset_has_a_reference)
    assert set(REFERENCE) - set(COMBOS) == set(ALL) == set(PRESETS) - set(cells.MODERN_CELLS)


@pytest.mark.parametrize("with_state", [False, True], ids=["zero_state", "given_state"])
@pytest.mark.parametrize("name", ALL)
def test_preset_matches_reference_equations(name: str, with_state: bool) -> None:
    m, n, b, t = 3, 4, 3, 6
    layer = make_layer(name, m, n, seed=ALL.index(name), backend="loop")
    x = torch.randn(b, t, m, dtype=DTYPE, generator=torch.Generator().manual_seed(7))
    state = random_state(name, 1, n, b) if with_state else None
    out, final = layer(x, state=state)
    exp_out, exp_final = ref_layer(layer, name, x, state_parts(name, state) if with_state else None)
    assert out.shape == (b, t, n)
    torch.testing.assert_close(out, exp_out, rtol=1e-10, atol=1e-10)
    got = state_parts(name, final)
    assert len(got) == len(exp_final)
    for g, e in zip(got, exp_final):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", sorted(COMBOS))
def test_flag_combination_matches_reference_equations(name: str) -> None:
    m, n, b, t = 3, 4, 2, 5
    layer = make_layer(name, m, n, seed=40, num_layers=2, bidirectional=True, backend="loop")
    assert layer.spec.name not in PRESETS
    x = torch.randn(b, t, m, dtype=DTYPE, generator=torch.Generator().manual_seed(14))
    state = random_state(name, 4, n, b, seed=15)
    out, final = layer(x, state=state)
    exp_out, exp_final = ref_layer(layer, name, x, state_parts(name, state))
    torch.testing.assert_close(out, exp_out, rtol=1e-10, atol=1e-10)
    for g, e in zip(state_parts(name, final), exp_final, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ALL)
def test_preset_matches_reference_stacked_bidirectional(name: str) -> None:
    m, n, b, t = 2, 3, 2, 5
    layer = make_layer(name, m, n, seed=10 + ALL.index(name), num_layers=2, bidirectional=True, backend="loop")
    x = torch.randn(b, t, m, dtype=DTYPE, generator=torch.Generator().manual_seed(8))
    state = random_state(name, 4, n, b, seed=3)
    out, final = layer(x, state=state)
    exp_out, exp_final = ref_layer(layer, name, x, state_parts(name, state))
    assert out.shape == (b, t, 2 * n)
    torch.testing.assert_close(out, exp_out, rtol=1e-10, atol=1e-10)
    for g, e in zip(state_parts(name, final), exp_final, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


def test_fgr_gate_recurrence_matters_and_output_peephole_sees_new_cell() -> None:
    """The reference is sensitive to both details: change either and the layer no longer matches it."""
    m, n, b, t = 3, 4, 2, 6
    x = torch.randn(b, t, m, dtype=DTYPE, generator=torch.Generator().manual_seed(9))
    fgr = make_layer("fgr", m, n, seed=5, backend="loop")
    out, _ = fgr(x)
    with torch.no_grad():
        fgr.weight_gg_l0.zero_()
    out_no_gg, _ = fgr(x)
    assert (out - out_no_gg).abs().max() > 1e-3  # the 9 N×N matrices do something

    # Output-gate peephole on c_{t-1} instead of c_t: a mutated reference that must disagree.
    vanilla = make_layer("vanilla", m, n, seed=6, backend="loop")
    P = split_params(vanilla, "_l0", "vanilla")
    ref = REFERENCE["vanilla"]
    y = c = torch.zeros(b, n, dtype=DTYPE)
    wrong = []
    for x_t in x.transpose(0, 1):
        y_ok, c_new, _ = lstm_ref_step(ref, P, x_t, y, c, {})
        o_old = torch.sigmoid(lin(x_t, P["W"]["o"]) + lin(y, P["R"]["o"]) + P["b"]["o"] + P["p"]["o"] * c)
        wrong.append(torch.tanh(c_new) * o_old)
        y, c = y_ok, c_new
    got, _ = vanilla(x)
    assert (got - torch.stack(wrong, 1)).abs().max() > 1e-3


def test_fgr_gate_state_starts_at_zero_and_is_carried() -> None:
    m, n, b, t = 2, 3, 2, 4
    layer = make_layer("fgr", m, n, seed=4, backend="loop")
    x = torch.randn(b, t, m, dtype=DTYPE)
    out0, (h, c, g) = layer(x)
    zero = (torch.zeros(1, b, n, dtype=DTYPE), torch.zeros(1, b, n, dtype=DTYPE), torch.zeros(1, b, 3 * n, dtype=DTYPE))
    torch.testing.assert_close(layer(x, state=zero)[0], out0)
    # Splitting the sequence in two and carrying the state (gates included) is the same as one run.
    first, state = layer(x[:, :2])
    second, final = layer(x[:, 2:], state=state)
    torch.testing.assert_close(torch.cat([first, second], 1), out0)
    for a, e in zip(final, (h, c, g)):
        torch.testing.assert_close(a, e)
    _, _, gates = layer(x, return_gates=True)
    last = torch.cat([gates[0][k][:, -1] for k in "ifo"], dim=-1)
    torch.testing.assert_close(g[0], last)


# -- 2. invariants through return_gates --------------------------------------------------------


def _sequence_order(v: torch.Tensor, length: int, reverse: bool) -> torch.Tensor:
    v = v[:length]
    return v.flip(0) if reverse else v


@pytest.mark.parametrize("name", ALL)
def test_gate_invariants(name: str) -> None:
    m, n, b, t, layers = 3, 4, 3, 6, 2
    layer = make_layer(name, m, n, seed=20 + ALL.index(name), num_layers=layers, bidirectional=True, backend="loop")
    x = torch.randn(b, t, m, dtype=DTYPE, generator=torch.Generator().manual_seed(11))
    lengths = torch.tensor([6, 3, 1])
    state = random_state(name, layers * 2, n, b, seed=12)
    out, final, gates = layer(x, lengths=lengths, state=state, return_gates=True)
    family = REFERENCE[name]["family"]
    keys = {"lstm": set("zifocy"), "gru": set("runh"), "rnn": {"h"}}[family]
    assert len(gates) == layers * 2
    init = state_parts(name, state)
    for idx, gd in enumerate(gates):
        assert set(gd) == keys
        for k, v in gd.items():
            assert v.shape == (b, t, n), k
        reverse = idx % 2 == 1
        for s in range(b):
            L = int(lengths[s])
            for v in gd.values():  # zero past the length
                assert torch.all(v[s, L:] == 0)
            seq = {k: _sequence_order(v[s], L, reverse) for k, v in gd.items()}
            if family == "lstm":
                c_prev = torch.cat([init[1][idx, s][None], seq["c"][:-1]])
                torch.testing.assert_close(seq["c"], seq["z"] * seq["i"] + c_prev * seq["f"])
                h = REFERENCE[name]["h"]
                torch.testing.assert_close(seq["y"], h(seq["c"]) * seq["o"])
                torch.testing.assert_close(state_parts(name, final)[1][idx, s], seq["c"][-1])
                y_final = seq["y"][-1]
            elif family == "gru":
                h_prev = torch.cat([init[0][idx, s][None], seq["h"][:-1]])
                torch.testing.assert_close(seq["h"], (1 - seq["u"]) * seq["n"] + seq["u"] * h_prev)
                assert torch.all((seq["r"] > 0) & (seq["r"] < 1) & (seq["u"] > 0) & (seq["u"] < 1))
                y_final = seq["h"][-1]
            else:
                y_final = seq["h"][-1]
            torch.testing.assert_close(state_parts(name, final)[0][idx, s], y_final)
        # the last layer's per-direction y is the output
        if idx >= (layers - 1) * 2:
            d = idx % 2
            y_key = "y" if family == "lstm" else "h"
            torch.testing.assert_close(out[..., d * n : (d + 1) * n], gd[y_key])
    if family == "lstm":
        for gd in gates:
            valid = (torch.arange(t)[None, :] < lengths[:, None])[..., None].expand(b, t, n)
            i, f, o = gd["i"][valid], gd["f"][valid], gd["o"][valid]
            gate_flags = {"nig": ("i", i), "nfg": ("f", f), "nog": ("o", o), "grupp": ("o", o)}
            if name in gate_flags:
                assert torch.all(gate_flags[name][1] == 1)
            if name == "cifg":
                torch.testing.assert_close(f, 1 - i)
            if name == "grupp":
                torch.testing.assert_close(gd["y"], gd["c"])
            for g_name, g in (("i", i), ("f", f), ("o", o)):
                assert torch.all((g > 0) & (g <= 1)), g_name


def _large_input_gates(name: str, **kw):
    m, n, b, t = 3, 4, 4, 20
    layer = make_layer(name, m, n, seed=30, backend="loop", **kw)
    gen = torch.Generator().manual_seed(13)
    x = 5.0 * torch.randn(b, 1, m, dtype=DTYPE, generator=gen).expand(b, t, m)  # held input: the cell integrates it
    return layer(x, return_gates=True)[2][0]


def test_niaf_block_input_is_unbounded_where_vanilla_is_bounded() -> None:
    assert _large_input_gates("vanilla")["z"].abs().max() <= 1
    assert _large_input_gates("niaf")["z"].abs().max() > 1


def test_noaf_output_can_exceed_one_where_tanh_bounds_it() -> None:
    assert _large_input_gates("vanilla")["y"].abs().max() <= 1
    assert _large_input_gates("noaf")["y"].abs().max() > 1


# -- 3. parameter counts and impossible cells --------------------------------------------------


def spec_formula(name: str, m: int, n: int) -> int:
    """docs/equations.md's table (the paper's counts), typed in as written there."""
    vanilla = 4 * n * (m + n) + 4 * n + 3 * n
    return {
        "vanilla": vanilla,
        "niaf": vanilla,
        "noaf": vanilla,
        "nig": 3 * n * (m + n) + 3 * n + 2 * n,
        "nfg": 3 * n * (m + n) + 3 * n + 2 * n,
        "nog": 3 * n * (m + n) + 3 * n + 2 * n,
        "cifg": 3 * n * (m + n) + 3 * n + 2 * n,
        "np": 4 * n * (m + n) + 4 * n,
        "fgr": vanilla + 9 * n * n,
        "gru": 3 * n * (m + n) + 6 * n,
        "gru_cho": 3 * n * (m + n) + 3 * n,
        "grupp": 3 * n * (m + n) + 3 * n,
        "rnn": n * (m + n) + n,
    }[name]


@pytest.mark.parametrize("m,n", [(1, 1), (3, 5), (32, 32), (7, 2)])
@pytest.mark.parametrize("name", ALL)
def test_parameter_counts_follow_the_spec_table(name: str, m: int, n: int) -> None:
    expected = spec_formula(name, m, n)
    assert get_spec(name).num_parameters(m, n) == expected
    assert RecurrentLayer(m, n, name).num_parameters() == expected
    # stacked and bidirectional: layer 2 reads 2N inputs, every direction has its own parameters
    stacked = RecurrentLayer(m, n, name, num_layers=2, bidirectional=True).num_parameters()
    assert stacked == 2 * expected + 2 * spec_formula(name, 2 * n, n)


def test_parameter_counts_match_keras_and_torch() -> None:
    assert RecurrentLayer(32, 32, "np").num_parameters() == 8_320  # Keras LSTM(32) on 32-dim inputs
    torch_lstm = sum(p.numel() for p in torch.nn.LSTM(32, 32).parameters())
    assert torch_lstm == 8_448  # two bias vectors
    torch_gru = sum(p.numel() for p in torch.nn.GRU(32, 32).parameters())
    assert torch_gru == 6_336
    assert RecurrentLayer(32, 32, "gru").num_parameters() == torch_gru
    assert RecurrentLayer(32, 32, "gru_cho").num_parameters() == torch_gru - 3 * 32


@pytest.mark.parametrize(
    "flags,words",
    [
        ({"coupled": True, "input_gate": False}, ("coupled", "input_gate")),
        ({"coupled": True, "forget_gate": False}, ("coupled", "forget_gate")),
        ({"preset": "gru", "peepholes": True}, ("peepholes",)),
        ({"preset": "gru", "coupled": True}, ("coupled",)),
        ({"preset": "rnn", "output_activation": "identity"}, ("output_activation",)),
        ({"preset": "rnn", "reset": "before"}, ("reset",)),
        ({"preset": "vanilla", "reset": "before"}, ("reset",)),
        ({"preset": "fgr", "input_gate": False, "forget_gate": False, "output_gate": False}, ("full_gate_recurrence",)),
        ({"input_activation": "relu"}, ("input_activation",)),
        ({"family": "transformer"}, ("family",)),
        ({"preset": "gru", "reset": "middle"}, ("reset",)),
    ],
)
def test_impossible_cells_are_refused_naming_the_conflict(flags: dict, words: tuple[str, ...]) -> None:
    assert_refused_in_one_line(flags, words)


def test_impossible_cells_are_refused_by_the_dataclass_and_the_layer() -> None:
    with pytest.raises(ValueError, match="coupled"):
        CellSpec(coupled=True, input_gate=False)
    with pytest.raises(ValueError, match="coupled"):
        RecurrentLayer(2, 3, {"preset": "cifg", "forget_gate": False})


def test_get_spec_errors_name_the_unknown_thing() -> None:
    with pytest.raises(ValueError, match="unknown cell 'lstm'.*vanilla"):
        get_spec("lstm")
    with pytest.raises(ValueError, match="unknown cell 'vanila'"):
        get_spec({"preset": "vanila"})
    with pytest.raises(ValueError, match="unknown cell flag 'peephole'.*peepholes"):
        get_spec({"peephole": False})


def test_legal_combinations_compose_and_are_named() -> None:
    cifg_np = get_spec({"preset": "cifg", "peepholes": False})
    assert cifg_np.blocks == ("i", "z", "o") and cifg_np.peephole_gates == ()
    assert cifg_np.num_parameters(4, 5) == 3 * 5 * 9 + 3 * 5
    assert cifg_np.name not in PRESETS and "coupled=True" in cifg_np.name and "peepholes=False" in cifg_np.name
    # seed 002's derivation path: GRU++ = NOG+NOAF+NP, then h = tanh(c) (NOG+NP), then the output gate (NP)
    assert get_spec({"preset": "nog", "output_activation": "identity", "peepholes": False}) == PRESETS["grupp"]
    assert get_spec({"preset": "grupp", "output_gate": True, "output_activation": "tanh"}) == PRESETS["np"]
    for name in ALL:
        assert get_spec(name).name == name
        assert get_spec(get_spec(name).to_dict()) == get_spec(name)


def test_presets_are_what_the_spec_table_says() -> None:
    """A direct check of flags, independent of the numerical tests."""
    v = PRESETS["vanilla"]
    assert v.peepholes and v.input_gate and v.forget_gate and v.output_gate and not v.coupled
    expected_changes = {
        "nig": {"input_gate": False},
        "nfg": {"forget_gate": False},
        "nog": {"output_gate": False},
        "niaf": {"input_activation": "identity"},
        "noaf": {"output_activation": "identity"},
        "cifg": {"coupled": True},
        "np": {"peepholes": False},
        "fgr": {"full_gate_recurrence": True},
        "grupp": {"output_gate": False, "output_activation": "identity", "peepholes": False},
    }
    for name, changes in expected_changes.items():
        diff = {k: val for k, val in PRESETS[name].to_dict().items() if val != v.to_dict()[k]}
        assert diff == changes, name
    assert cells.ODYSSEY_VARIANTS == ALL[:9]


# -- 8. conf/cell/*.yaml -------------------------------------------------------------------------


def test_every_preset_has_a_config_file_and_no_more() -> None:
    files = {p.stem for p in (ROOT / "conf" / "cell").glob("*.yaml")}
    assert files == set(PRESETS)


@pytest.mark.parametrize("name", ALL)
def test_cell_config_composes_to_its_preset(name: str) -> None:
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "cell" / f"{name}.yaml"), resolve=True)
    spec = get_spec(cfg)
    assert spec == PRESETS[name]
    assert spec.name == name
    # every flag is spelled out, so an override like cell.peepholes=false edits an existing key
    flags = {k for k in cfg if k not in ("name", "preset")}
    assert flags == set(CellSpec.__dataclass_fields__)
    # and the file's flags alone (without the name as base) give the same cell
    assert get_spec({k: cfg[k] for k in flags}) == PRESETS[name]


def test_cell_config_override_changes_the_cell() -> None:
    cfg = OmegaConf.load(ROOT / "conf" / "cell" / "cifg.yaml")
    cfg.peepholes = False
    spec = get_spec(OmegaConf.to_container(cfg))
    assert spec.coupled and not spec.peepholes


def test_combinations_are_all_either_legal_or_refused() -> None:
    """Over the whole boolean LSTM flag space: a spec is built or refused with a ValueError, never anything else,
    and every legal one runs one step with finite output and the right parameter count."""
    built = 0
    x = torch.randn(2, 3, 2)
    for ig, fg, og, cp, pe, fr in itertools.product([True, False], repeat=6):
        try:
            spec = CellSpec(input_gate=ig, forget_gate=fg, output_gate=og, coupled=cp, peepholes=pe, full_gate_recurrence=fr)
        except ValueError:
            assert (cp and not (ig and fg)) or (fr and not (ig or (fg and not cp) or og))
            continue
        layer = RecurrentLayer(2, 3, spec, backend="loop")
        assert layer.num_parameters() == spec.num_parameters(2, 3)
        assert torch.isfinite(layer(x)[0]).all()
        built += 1
    # refused: coupled without both i and f (3 of the 4 (i, f) settings × 8) and FGR with no gate at all (2)
    assert built == 64 - 24 - 2
