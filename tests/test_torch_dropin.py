"""RecurrentLayer as a drop-in for torch.nn.LSTM / GRU / RNN: torch's own module test inputs (`module_db` of
torch.testing._internal.common_modules) run through torch's module and through `RecurrentLayer.from_torch` of
it, called the same way, with outputs, final states and gradients (inputs, initial states, parameters) compared
in float64; then the torch idioms by hand: `layer(x, (h0, c0))`, unbatched input, `proj_size` (LSTMP) and
`nonlinearity="relu"` (IRNN), and the backends that must fall back for them."""

from __future__ import annotations

import functools
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from lstm_odyssey.layers import RecurrentLayer
from lstm_odyssey.models import SequenceModel

DTYPE = torch.float64
TOL = {"atol": 1e-9, "rtol": 1e-9}
MODULES = {"LSTM": nn.LSTM, "GRU": nn.GRU, "RNN": nn.RNN}


# -- torch's module inputs --------------------------------------------------------------------------------


@functools.cache
def _module_db() -> dict[type, Any]:
    """torch's ModuleInfo of nn.LSTM, nn.GRU, nn.RNN (torch's test utilities need `expecttest`, a test extra).
    The import freezes torch.backends' flags for torch's own suite (`disable_global_flags`); they are thawed again
    so that later tests (train.py sets cudnn.benchmark) run as they would without this file."""
    pytest.importorskip("expecttest", reason='torch\'s module test inputs need expecttest: pip install -e ".[test]"')
    frozen = torch.backends.flags_frozen()
    try:
        from torch.testing._internal.common_modules import module_db
    finally:
        if not frozen:  # the flag lives in the globals of torch/backends/__init__.py (the module object is a wrapper)
            torch.backends.flags_frozen.__globals__["__allow_nonbracketed_mutation_flag"] = True
    return {info.module_cls: info for info in module_db if info.module_cls in MODULES.values()}


def module_inputs(cls: type, training: bool) -> list[Any]:
    """torch's samples for `cls` (float64, inputs requiring grad); for GRU and RNN with the PackedSequence
    samples that module_db leaves off by default (`with_packed_sequence`)."""
    info = _module_db()[cls]
    extra = {} if cls is nn.LSTM else {"with_packed_sequence": True}
    return info.module_inputs_func(info, device="cpu", dtype=DTYPE, requires_grad=True, training=training, **extra)


# -- helpers ----------------------------------------------------------------------------------------------


def parts(state: Any) -> list[Tensor]:
    return [state] if isinstance(state, Tensor) else list(state)


def fresh(value: Any) -> Any:
    """A new leaf copy of a forward argument (tensor, tuple of tensors, PackedSequence), so that each run has
    its own gradients."""
    if isinstance(value, PackedSequence):
        data = value.data.detach().clone().requires_grad_(value.data.requires_grad)
        return PackedSequence(data, value.batch_sizes, value.sorted_indices, value.unsorted_indices)
    if isinstance(value, Tensor):
        return value.detach().clone().requires_grad_(value.requires_grad)
    if isinstance(value, tuple):
        return tuple(fresh(v) for v in value)
    return value


def leaves(value: Any) -> list[Tensor]:
    """The tensors of a forward argument whose gradients are compared."""
    if isinstance(value, PackedSequence):
        return [value.data]
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, tuple):
        return [t for v in value for t in leaves(v)]
    return []


def data(out: Tensor | PackedSequence) -> Tensor:
    return out.data if isinstance(out, PackedSequence) else out


def run(module: nn.Module, args: tuple, kwargs: dict) -> tuple[list[Tensor], dict[str, Tensor], list[Tensor]]:
    """Call `module` on fresh copies of the arguments; a fixed weighting of the output and every final state
    as the loss. Returns (output and final states, parameter gradients by name, argument gradients)."""
    args = tuple(fresh(a) for a in args)
    kwargs = {k: fresh(v) for k, v in kwargs.items()}
    module.zero_grad(set_to_none=True)
    out, final = module(*args, **kwargs)
    results = [data(out), *parts(final)]
    gen = torch.Generator().manual_seed(0)
    loss = sum((r * torch.randn(r.shape, generator=gen, dtype=r.dtype)).sum() for r in results)
    loss.backward()
    inputs = [t for a in (*args, *kwargs.values()) for t in leaves(a) if t.requires_grad]
    return [r.detach() for r in results], {n: p.grad for n, p in module.named_parameters()}, [t.grad for t in inputs]


def torch_name(name: str, bias: bool) -> str | None:
    """The torch parameter whose gradient ours equals: weights share names; our single bias is b_ih + b_hh
    (its gradient is b_ih's), GRU's bias is b_ih and bias_hh b_hh. None where torch has no bias."""
    if name.startswith("weight") or name.startswith("bias_hh"):
        return name if bias or name.startswith("weight") else None
    return name.replace("bias", "bias_ih", 1) if bias else None


def assert_same_run(ours: tuple, theirs: tuple, bias: bool) -> None:
    (o1, g1, x1), (o2, g2, x2) = ours, theirs
    assert len(o1) == len(o2)
    for a, b in zip(o1, o2):
        torch.testing.assert_close(a, b, **TOL)
    assert len(x1) == len(x2)
    for a, b in zip(x1, x2):
        torch.testing.assert_close(a, b, **TOL)
    for name, grad in g1.items():
        other = torch_name(name, bias)
        if other is not None:
            torch.testing.assert_close(grad, g2[other], **TOL)


# -- 1. module_db: every sample of torch's own module tests ---------------------------------------------------


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", list(MODULES))
def test_torch_module_inputs_equal_torch(name: str, training: bool) -> None:
    """Each module_db sample: torch's module, `from_torch` of it on `auto` (torch's kernel), on the reference
    loop and, where the options allow it, on the fused sweep; outputs, states and gradients equal to 1e-9.
    The fused sweep refuses proj_size and relu in one line, which is asserted instead."""
    cls = MODULES[name]
    samples = module_inputs(cls, training)
    assert samples, f"module_db has no inputs for nn.{name}"
    for sample in samples:
        ctor, forward = sample.constructor_input, sample.forward_input
        torch.manual_seed(0)
        module = cls(*ctor.args, **ctor.kwargs).to(DTYPE).train(training)
        expected = run(module, forward.args, forward.kwargs)
        layer = RecurrentLayer.from_torch(module)
        assert layer.training == training
        options = layer.family.fused_problem()
        for backend in ("auto", "loop", "fused"):
            layer.backend = backend
            if backend == "fused" and options:
                refusal = r"backend='fused' cannot run this layer: the fused sweeps have no (proj_size|nonlinearity)"
                with pytest.raises(ValueError, match=refusal):
                    layer(*forward.args, **forward.kwargs)
                continue
            assert_same_run(run(layer, forward.args, forward.kwargs), expected, module.bias)


def test_module_db_covers_what_the_issue_counts() -> None:
    """80 samples per training mode without the packed ones (LSTM 32, GRU 16, RNN 32), unbatched each, with
    proj_size and relu among them; the packed ones add 16 (GRU) and 32 (RNN)."""
    counts = {name: len(module_inputs(cls, True)) for name, cls in MODULES.items()}
    assert not torch.backends.flags_frozen()  # importing torch's test utilities left torch's flags settable
    assert counts == {"LSTM": 32, "GRU": 32, "RNN": 64}, counts
    lstm = module_inputs(nn.LSTM, True)
    assert any(s.constructor_input.kwargs.get("proj_size") for s in lstm)
    assert any(s.constructor_input.kwargs.get("nonlinearity") == "relu" for s in module_inputs(nn.RNN, True))
    assert all(s.forward_input.args[0].dim() == 2 for s in lstm)


# -- 2. the torch idioms by hand --------------------------------------------------------------------------


def randomised(module: nn.Module, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5)
    return module


@pytest.mark.parametrize("backend", ["auto", "loop"])
def test_state_is_the_second_positional_argument(backend: str) -> None:
    """out, (h, c) = layer(x, (h0, c0)), as nn.LSTM; `state=` still names it; lengths positionally is refused."""
    module = randomised(nn.LSTM(3, 4, num_layers=2, batch_first=True, bidirectional=True).to(DTYPE), seed=1)
    layer = RecurrentLayer.from_torch(module)
    layer.backend = backend
    x = torch.randn(2, 5, 3, dtype=DTYPE)
    h0, c0 = torch.randn(4, 2, 4, dtype=DTYPE), torch.randn(4, 2, 4, dtype=DTYPE)
    out, (h, c) = layer(x, (h0, c0))
    exp_out, (exp_h, exp_c) = module(x, (h0, c0))
    for a, b in ((out, exp_out), (h, exp_h), (c, exp_c)):
        torch.testing.assert_close(a, b, **TOL)
    torch.testing.assert_close(layer(x, state=(h0, c0))[0], out, **TOL)
    with pytest.raises(ValueError, match="once"):
        layer(x, (h0, c0), state=(h0, c0))
    for lengths in ([5, 3], torch.tensor([5, 3])):
        with pytest.raises(ValueError, match=r"initial state hx.*lengths=lengths"):
            layer(x, lengths)
    gru = RecurrentLayer.from_torch(randomised(nn.GRU(3, 4, batch_first=True).to(DTYPE), seed=2))
    with pytest.raises(ValueError, match="state"):
        gru(x, torch.zeros(2, 2, 4, dtype=DTYPE))  # a state of the wrong shape still names the shapes


@pytest.mark.parametrize("batch_first", [True, False], ids=["batch_first", "time_major"])
@pytest.mark.parametrize("name", ["np", "vanilla", "gru", "gru_cho", "rnn", "cifg"])
def test_unbatched_input_equals_a_batch_of_one(name: str, batch_first: bool) -> None:
    """(T, M) in, (T, D N) and states (L D, N) out, as torch: the batch of one with the axis squeezed, for
    every family and backend choice (torch's own for np, gru and rnn is module_db's business above)."""
    layer = RecurrentLayer(3, 4, name, num_layers=2, bidirectional=True, batch_first=batch_first)
    layer = randomised(layer.to(DTYPE), seed=3)
    x = torch.randn(5, 3, dtype=DTYPE)
    batched_x = x.unsqueeze(0 if batch_first else 1)
    state = [torch.randn(s, dtype=DTYPE) for s in layer._state_shapes(1)]
    state = state[0] if layer.spec.family != "lstm" else tuple(state)
    unbatched_state = tuple(s.squeeze(1) for s in parts(state))
    unbatched_state = unbatched_state[0] if len(unbatched_state) == 1 else unbatched_state
    out, final, gates = layer(x, unbatched_state, return_gates=True)
    exp_out, exp_final, exp_gates = layer(batched_x, state, return_gates=True)
    torch.testing.assert_close(out, exp_out.squeeze(0 if batch_first else 1), **TOL)
    assert out.shape == (5, 8)
    for a, b in zip(parts(final), parts(exp_final), strict=True):
        assert a.shape == (4, 4)
        torch.testing.assert_close(a, b.squeeze(1), **TOL)
    assert all(v.shape == (5, 4) for g in gates for v in g.values())
    torch.testing.assert_close(layer(x)[0], layer(batched_x)[0].squeeze(0 if batch_first else 1), **TOL)
    with pytest.raises(ValueError, match="2-D"):
        layer(x, state)  # a batched state for unbatched input
    with pytest.raises(ValueError, match="state"):
        layer(batched_x, unbatched_state)
    with pytest.raises(ValueError, match="lengths need batched input"):
        layer(x, lengths=[5])


# -- 3. proj_size: torch's LSTMP ----------------------------------------------------------------------------


def _compare_with_torch(layer: RecurrentLayer, module: nn.Module, x: Tensor, state: Any, lengths: list[int]) -> None:
    """Padded with lengths against torch's packed run, and the gradients of every shared parameter."""
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    exp, exp_final = module(packed, state)
    exp_out = pad_packed_sequence(exp, batch_first=True, total_length=x.shape[1])[0]
    out, final = layer(x, state, lengths=lengths)
    torch.testing.assert_close(out, exp_out, **TOL)
    for a, b in zip(parts(final), parts(exp_final), strict=True):
        torch.testing.assert_close(a, b, **TOL)
    (out.square().sum() + sum(f.sum() for f in parts(final))).backward()
    (exp_out.square().sum() + sum(f.sum() for f in parts(exp_final))).backward()
    theirs = dict(module.named_parameters())
    for name, p in layer.named_parameters():
        torch.testing.assert_close(p.grad, theirs[torch_name(name, True)].grad, **TOL)


@pytest.mark.parametrize("backend", ["auto", "loop"])
def test_proj_size_equals_torch_both_ways(backend: str) -> None:
    module = nn.LSTM(3, 5, num_layers=2, batch_first=True, bidirectional=True, proj_size=2)
    module = randomised(module.to(DTYPE), seed=4)
    layer = RecurrentLayer.from_torch(module)
    layer.backend = backend
    assert layer.select_backend() == ("torch" if backend == "auto" else "loop")
    assert layer.proj_size == 2 and layer.weight_hr_l1_reverse.shape == (2, 5) and layer.weight_hh_l0.shape == (20, 2)
    assert layer.weight_ih_l1.shape == (20, 4)  # layer 2 reads both directions' projected outputs
    x = torch.randn(3, 6, 3, dtype=DTYPE)
    state = (torch.randn(4, 3, 2, dtype=DTYPE), torch.randn(4, 3, 5, dtype=DTYPE))
    _compare_with_torch(layer, module, x, state, [6, 2, 4])
    back = layer.to_torch()
    assert back.proj_size == 2
    for (n1, p1), (n2, p2) in zip(module.named_parameters(), back.named_parameters(), strict=True):
        assert n1 == n2
        if n1.startswith("weight"):
            torch.testing.assert_close(p1, p2)
    torch.testing.assert_close(back(x, state)[0], module(x, state)[0], **TOL)
    assert "proj_size=2" in repr(layer)


def test_proj_size_on_every_lstm_flag_runs_the_loop_and_projects_y() -> None:
    """A cell beyond torch's (peepholes) with proj_size runs the loop; with zero peepholes it is np's LSTMP, and
    its gates read `y` as the projected output while the others keep the cell's width."""
    layer = randomised(RecurrentLayer(3, 5, "vanilla", num_layers=2, proj_size=3).to(DTYPE), seed=5)
    assert layer.select_backend() == "loop"
    np_layer = RecurrentLayer(3, 5, "np", num_layers=2, proj_size=3).to(DTYPE)
    with torch.no_grad():
        for name, p in np_layer.named_parameters():
            p.copy_(getattr(layer, name))
        layer.peephole_l0.zero_(), layer.peephole_l1.zero_()
    x = torch.randn(2, 4, 3, dtype=DTYPE)
    out, (h, c), gates = layer(x, lengths=[4, 2], return_gates=True)
    exp_out, (exp_h, exp_c) = np_layer(x, lengths=[4, 2])
    for a, b in ((out, exp_out), (h, exp_h), (c, exp_c)):
        torch.testing.assert_close(a, b, **TOL)
    assert out.shape == (2, 4, 3) and h.shape == (2, 2, 3) and c.shape == (2, 2, 5)
    torch.testing.assert_close(gates[-1]["y"], out)
    assert gates[-1]["c"].shape == (2, 4, 5) and gates[-1]["o"].shape == (2, 4, 5)
    # one step by hand: y_1 = W_hr (o ⊙ tanh(c)) from zero state
    single = RecurrentLayer(3, 5, "vanilla", proj_size=2).to(DTYPE)
    xs = torch.randn(1, 1, 3, dtype=DTYPE)
    pre = xs[0, 0] @ single.weight_ih_l0.T + single.bias_l0
    i, f, z, o = pre.split(5)
    cell = torch.sigmoid(i) * torch.tanh(z)
    o = torch.sigmoid(o + single.peephole_l0[10:] * cell)
    y = (o * torch.tanh(cell)) @ single.weight_hr_l0.T
    torch.testing.assert_close(single(xs)[0][0, 0], y, **TOL)


def test_proj_size_is_refused_where_it_makes_no_sense() -> None:
    for kwargs, message in (
        ({"cell": "gru", "proj_size": 2}, "proj_size=2 projects an LSTM's output"),
        ({"cell": "rnn", "proj_size": 2}, "the rnn family has no projection"),
        ({"cell": "np", "proj_size": 4}, r"proj_size=4 must be smaller than hidden_size=4"),
        ({"cell": "np", "proj_size": -1}, "proj_size must be a positive integer or zero"),
        ({"cell": "indy_lstm", "proj_size": 2}, "proj_size needs one full recurrent matrix"),
        ({"cell": "np", "nonlinearity": "relu"}, "nonlinearity='relu' is an option of the rnn family"),
        ({"cell": "rnn", "nonlinearity": "sigmoid"}, "nonlinearity must be 'tanh' or 'relu'"),
    ):
        with pytest.raises(ValueError, match=message) as info:
            RecurrentLayer(3, 4, **kwargs)
        assert "\n" not in str(info.value)


# -- 4. nonlinearity="relu": torch's RNN(nonlinearity="relu"), IRNN --------------------------------------------


@pytest.mark.parametrize("backend", ["auto", "loop"])
def test_relu_rnn_equals_torch_both_ways(backend: str) -> None:
    module = nn.RNN(3, 4, num_layers=2, nonlinearity="relu", batch_first=True, bidirectional=True)
    module = randomised(module.to(DTYPE), seed=6)
    layer = RecurrentLayer.from_torch(module)
    layer.backend = backend
    assert layer.nonlinearity == "relu" and layer.select_backend() == ("torch" if backend == "auto" else "loop")
    x = torch.randn(3, 6, 3, dtype=DTYPE)
    _compare_with_torch(layer, module, x, torch.randn(4, 3, 4, dtype=DTYPE), [6, 1, 4])
    back = layer.to_torch()
    assert back.nonlinearity == "relu"
    torch.testing.assert_close(back(x)[0], module(x)[0], **TOL)
    assert "nonlinearity='relu'" in repr(layer)


def test_relu_indrnn_runs_the_loop_and_is_relu() -> None:
    """Li et al.'s IndRNN is relu: h_t = relu(W x_t + u ⊙ h_{t-1} + b), on the loop (no fused relu sweep)."""
    layer = randomised(RecurrentLayer(3, 4, "indrnn", nonlinearity="relu").to(DTYPE), seed=7)
    assert layer.select_backend() == "loop"
    x = torch.randn(2, 5, 3, dtype=DTYPE)
    h = torch.zeros(2, 4, dtype=DTYPE)
    expected = []
    for t in range(5):
        h = torch.relu(x[:, t] @ layer.weight_ih_l0.T + layer.bias_l0 + layer.weight_hh_l0 * h)
        expected.append(h)
    out, final = layer(x)
    torch.testing.assert_close(out, torch.stack(expected, 1), **TOL)
    torch.testing.assert_close(final[0], h, **TOL)
    assert (out == 0).any() and (out > 1).any()  # relu, not tanh


# -- 5. the fast paths: never a different result, refused where they cannot honour an option ------------------


@pytest.mark.parametrize(
    "kwargs",
    [{"cell": "np", "proj_size": 2}, {"cell": "vanilla", "proj_size": 2}, {"cell": "rnn", "nonlinearity": "relu"},
     {"cell": "indrnn", "nonlinearity": "relu"}],
    ids=["np-proj", "vanilla-proj", "rnn-relu", "indrnn-relu"],
)
def test_fused_backends_refuse_options_and_auto_falls_back(kwargs: dict) -> None:
    layer = RecurrentLayer(3, 4, **kwargs)
    torch_cell = kwargs["cell"] in ("np", "rnn")
    assert layer.select_backend() == ("torch" if torch_cell else "loop")
    assert layer.select_backend(return_gates=True) == "loop"
    for backend in ("fused", "graph"):
        layer.backend = backend
        with pytest.raises(ValueError, match=rf"backend='{backend}' cannot run this layer: the fused sweeps have no"):
            layer.select_backend()
    layer.backend = "torch"
    if torch_cell:
        assert layer.select_backend() == "torch"
    else:
        with pytest.raises(ValueError, match="not one of torch's"):
            layer.select_backend()
    # the family's own fused sweep refuses too, rather than compute the cell without the option
    family, params = layer.family, layer._params("_l0")
    xp = torch.zeros(2, 1, params["bias"].shape[0])
    states = [torch.zeros(1, w) for w in family.state_sizes(layer.spec, 4)]
    with pytest.raises(ValueError, match="fused sweep"):
        family.sequence_forward(layer.spec, xp, states, family.recurrent_weights(params), None)


def test_options_leave_the_shared_families_alone() -> None:
    """A configured family is a copy: a layer built after one with proj_size or relu is the plain cell."""
    RecurrentLayer(3, 4, "np", proj_size=2), RecurrentLayer(3, 4, "rnn", nonlinearity="relu")
    plain_lstm, plain_rnn = RecurrentLayer(3, 4, "np"), RecurrentLayer(3, 4, "rnn")
    assert plain_lstm.family.proj_size == 0 and plain_lstm.weight_hh_l0.shape == (16, 4)
    assert plain_rnn.family.nonlinearity == "tanh" and plain_rnn.select_backend() == "torch"
    assert plain_rnn.to_torch().nonlinearity == "tanh"


def test_sequence_model_passes_lengths_by_keyword() -> None:
    """SequenceModel's call of its RecurrentLayer (the one caller in the package): lengths still reach it."""
    torch.manual_seed(8)
    model = SequenceModel("classification", 3, 2, hidden_size=4, cell="np", bidirectional=True).to(DTYPE)
    x = torch.randn(2, 5, 3, dtype=DTYPE)
    logits, final = model(x, torch.tensor([5, 2]))
    _, (h, _) = model.rnn(x, lengths=torch.tensor([5, 2]))
    torch.testing.assert_close(final[0], h)
    _, (h_full, _) = model.rnn(x)
    assert not torch.allclose(h, h_full)
