"""RecurrentLayer: torch interop, the torch fast path against the reference loop, variable lengths,
gradients and initialisation (docs/equations.md)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lstm_odyssey.cells import PRESETS
from lstm_odyssey.data.base import CLASSIFICATION, MULTILABEL
from lstm_odyssey.layers import RecurrentLayer
from lstm_odyssey.models import SequenceModel

ALL = ("vanilla", "nig", "nfg", "nog", "niaf", "noaf", "cifg", "np", "fgr", "gru", "gru_cho", "grupp", "rnn")
TORCH_CELLS = {"np": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
DTYPE = torch.float64


def randomise(module: nn.Module, scale: float = 0.5, seed: int = 0) -> nn.Module:
    """All parameters, biases and peepholes included, from N(0, scale²)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)
    return module


def parts(state) -> list[torch.Tensor]:
    return [state] if isinstance(state, torch.Tensor) else list(state)


def random_state(layer: RecurrentLayer, batch: int, seed: int = 1, dtype=DTYPE):
    gen = torch.Generator().manual_seed(seed)
    shapes = layer._state_shapes(batch)
    state = [torch.rand(s, generator=gen, dtype=dtype) * 2 - 1 for s in shapes]
    return state[0] if layer.spec.family != "lstm" else tuple(state)


def assert_state_close(a, b, **kw) -> None:
    pa, pb = parts(a), parts(b)
    assert len(pa) == len(pb)
    for x, y in zip(pa, pb):
        torch.testing.assert_close(x, y, **kw)


# -- 4. np == nn.LSTM and gru == nn.GRU, both ways ------------------------------------------------

LENGTHS = torch.tensor([3, 7, 5, 1])


def _torch_run(module: nn.Module, x: torch.Tensor, lengths: torch.Tensor, state):
    packed = pack_padded_sequence(x, lengths, batch_first=module.batch_first, enforce_sorted=False)
    out, final = module(packed, state)
    out, _ = pad_packed_sequence(out, batch_first=module.batch_first, total_length=x.shape[1 if module.batch_first else 0])
    return out, final


@pytest.mark.parametrize("backend", ["loop", "torch"])
@pytest.mark.parametrize("name", ["np", "gru", "rnn"])
def test_from_torch_matches_torch_module(name: str, backend: str) -> None:
    torch.manual_seed(0)
    ref = randomise(TORCH_CELLS[name](3, 5, num_layers=2, bidirectional=True, batch_first=True), seed=1)
    layer = RecurrentLayer.from_torch(ref)
    layer.backend = backend
    assert layer.spec == PRESETS[name] and layer.num_layers == 2 and layer.bidirectional
    x = torch.randn(4, 7, 3)
    state = random_state(layer, 4, dtype=torch.float32)
    exp_out, exp_final = _torch_run(ref, x, LENGTHS, state)
    out, final = layer(x, lengths=LENGTHS, state=state)
    torch.testing.assert_close(out, exp_out, atol=1e-5, rtol=1e-5)
    assert_state_close(final, exp_final, atol=1e-5, rtol=1e-5)
    # PackedSequence in, PackedSequence out
    packed = pack_padded_sequence(x, LENGTHS, batch_first=True, enforce_sorted=False)
    p_out, p_final = layer(packed, state=state)
    t_out, t_final = ref(packed, state)
    torch.testing.assert_close(p_out.data, t_out.data, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(p_out.batch_sizes, t_out.batch_sizes)
    assert_state_close(p_final, t_final, atol=1e-5, rtol=1e-5)
    # no lengths, no state
    exp_out, exp_final = ref(x)
    out, final = layer(x)
    torch.testing.assert_close(out, exp_out, atol=1e-5, rtol=1e-5)
    assert_state_close(final, exp_final, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["loop", "torch"])
@pytest.mark.parametrize("name", ["np", "gru", "rnn"])
def test_to_torch_matches_layer(name: str, backend: str) -> None:
    layer = randomise(RecurrentLayer(3, 4, name, num_layers=2, bidirectional=True, batch_first=False, backend=backend), seed=2)
    module = layer.to_torch()
    assert isinstance(module, TORCH_CELLS[name]) and not module.batch_first
    x = torch.randn(6, 4, 3)  # time-major
    lengths = torch.tensor([6, 2, 4, 5])
    state = random_state(layer, 4, seed=3, dtype=torch.float32)
    out, final = layer(x, lengths=lengths, state=state)
    exp_out, exp_final = _torch_run(module, x, lengths, state)
    torch.testing.assert_close(out, exp_out, atol=1e-5, rtol=1e-5)
    assert_state_close(final, exp_final, atol=1e-5, rtol=1e-5)
    # the round trip keeps every parameter (np's bias is torch's b_ih + b_hh)
    back = RecurrentLayer.from_torch(module)
    for (n1, p1), (n2, p2) in zip(layer.named_parameters(), back.named_parameters(), strict=True):
        assert n1 == n2
        torch.testing.assert_close(p1, p2)


def test_from_torch_sums_lstm_biases_and_handles_bias_false() -> None:
    ref = randomise(nn.LSTM(2, 3), seed=4)
    layer = RecurrentLayer.from_torch(ref)
    torch.testing.assert_close(layer.bias_l0, ref.bias_ih_l0 + ref.bias_hh_l0)
    no_bias = RecurrentLayer.from_torch(nn.GRU(2, 3, bias=False))
    assert torch.all(no_bias.bias_l0 == 0) and torch.all(no_bias.bias_hh_l0 == 0)
    assert RecurrentLayer.from_torch(nn.LSTM(2, 3, proj_size=2)).proj_size == 2  # LSTMP: tests/test_torch_dropin.py
    rnn = randomise(nn.RNN(2, 3), seed=5)
    torch.testing.assert_close(RecurrentLayer.from_torch(rnn).bias_l0, rnn.bias_ih_l0 + rnn.bias_hh_l0)
    assert RecurrentLayer.from_torch(nn.RNN(2, 3, nonlinearity="relu")).nonlinearity == "relu"
    with pytest.raises(TypeError, match="nn.RNN"):
        RecurrentLayer.from_torch(nn.Linear(2, 3))
    with pytest.raises(ValueError, match="vanilla"):
        RecurrentLayer(2, 3, "vanilla").to_torch()


@pytest.mark.parametrize("name", ["np", "vanilla"])
def test_packed_input_of_equal_lengths_comes_back_packed(name: str) -> None:
    """Regression: equal lengths collapse to 'no lengths' inside forward; the output must still be re-packed."""
    layer = randomise(RecurrentLayer(2, 3, name).to(DTYPE), seed=3)
    x = torch.randn(3, 4, 2, dtype=DTYPE)
    packed = pack_padded_sequence(x, [4, 4, 4], batch_first=True, enforce_sorted=False)
    out, final = layer(packed)
    full, full_final = layer(x)
    assert isinstance(out, torch.nn.utils.rnn.PackedSequence)
    torch.testing.assert_close(pad_packed_sequence(out, batch_first=True)[0], full)
    assert_state_close(final, full_final)


@pytest.mark.parametrize("lengths", [None, [5, 2, 4]], ids=["full", "lengths"])
@pytest.mark.parametrize("name", ["np", "gru"])
def test_torch_fast_path_equals_loop_with_gradients(name: str, lengths) -> None:
    fast = randomise(RecurrentLayer(3, 4, name, num_layers=2, bidirectional=True).to(DTYPE), seed=5)
    loop = randomise(RecurrentLayer(3, 4, name, num_layers=2, bidirectional=True, backend="loop").to(DTYPE), seed=5)
    assert fast.select_backend() == "torch" and loop.select_backend() == "loop"
    x = torch.randn(3, 5, 3, dtype=DTYPE)
    state = random_state(fast, 3, seed=6)
    results = []
    for layer in (fast, loop):
        xi = x.clone().requires_grad_(True)
        si = [s.clone().requires_grad_(True) for s in parts(state)]
        out, final = layer(xi, lengths=lengths, state=si[0] if len(si) == 1 else tuple(si))
        weights = torch.linspace(-1, 1, out.numel(), dtype=DTYPE).view_as(out)
        loss = (out * weights).sum() + sum((f**2).sum() for f in parts(final))
        loss.backward()
        grads = [xi.grad] + [s.grad for s in si] + [p.grad for p in layer.parameters()]
        results.append((out, parts(final), grads))
    (o1, f1, g1), (o2, f2, g2) = results
    torch.testing.assert_close(o1, o2, atol=1e-10, rtol=1e-10)
    for a, b in zip(f1, f2, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_backend_choice() -> None:
    """auto takes torch's kernels for np and gru, never for a cell torch does not have, and the loop for gates.
    (Which faster backend auto picks for the other cells is tests/test_backends.py's business.)"""
    for name in ALL:
        chosen = RecurrentLayer(2, 3, name).select_backend()
        if name in TORCH_CELLS:
            assert chosen == "torch"
        elif name != "rnn":  # torch.nn.RNN is exactly our rnn, so torch may run it
            assert chosen != "torch"
        assert RecurrentLayer(2, 3, name).select_backend(return_gates=True) == "loop"
        assert RecurrentLayer(2, 3, name, backend="loop").select_backend() == "loop"
    with pytest.raises(ValueError, match="vanilla"):
        RecurrentLayer(2, 3, "vanilla", backend="torch")(torch.randn(1, 2, 2))
    with pytest.raises(ValueError, match="gates"):
        RecurrentLayer(2, 3, "np", backend="torch")(torch.randn(1, 2, 2), return_gates=True)
    with pytest.raises(ValueError, match="backend"):
        RecurrentLayer(2, 3, "np", backend="cudnn")


@pytest.mark.parametrize("backend", ["loop", "auto"])
def test_dropout_acts_between_layers_only_and_only_in_training(backend: str) -> None:
    """As in torch.nn.LSTM: dropout on the outputs of every layer but the last, while training."""
    torch.manual_seed(3)
    x = torch.randn(2, 5, 3)
    one = RecurrentLayer(3, 4, "np", dropout=0.5, backend=backend)
    assert torch.equal(one.train()(x)[0], one.eval()(x)[0])  # nothing between layers to drop
    two = RecurrentLayer(3, 4, "np", num_layers=2, dropout=0.5, backend=backend)
    reference = RecurrentLayer(3, 4, "np", num_layers=2, dropout=0.0, backend=backend)
    reference.load_state_dict(two.state_dict())
    torch.testing.assert_close(two.eval()(x)[0], reference(x)[0])
    assert not torch.allclose(two.train()(x)[0], reference(x)[0])


@pytest.mark.parametrize("task_type", [MULTILABEL, CLASSIFICATION])
def test_output_dropout_drops_what_the_head_reads_only_while_training(task_type: str) -> None:
    """Each feature the head reads is 0 or the recurrent output scaled by 1 / (1 - p), as inverted dropout
    is; the recurrence itself is untouched, and evaluation sees the plain model."""
    torch.manual_seed(4)
    x = torch.randn(3, 6, 5)
    model = SequenceModel(task_type, 5, 7, hidden_size=8, cell="vanilla", output_dropout=0.25, backend="loop")
    plain = SequenceModel(task_type, 5, 7, hidden_size=8, cell="vanilla", backend="loop")
    plain.load_state_dict(model.state_dict())
    read = []
    model.head.register_forward_hook(lambda module, args, out: read.append(args[0]))
    plain.head.register_forward_hook(lambda module, args, out: read.append(args[0]))
    torch.testing.assert_close(model.eval()(x)[0], plain.eval()(x)[0])
    model.train()(x), plain.train()(x)
    dropped, features = read[-2], read[-1]
    kept = dropped != 0
    torch.testing.assert_close(dropped[kept], features[kept] / 0.75)
    assert 0 < (~kept).sum() < kept.sum()  # some features dropped, most kept (p = 0.25)
    with pytest.raises(ValueError, match="output_dropout must be in"):
        SequenceModel(task_type, 5, 7, output_dropout=1.0)


# -- 5. variable lengths -------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["loop", "auto"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("name", ALL)
def test_variable_lengths_equal_running_each_sequence_alone(name: str, bidirectional: bool, backend: str) -> None:
    """The padded batch on `backend` against each sequence alone, unpadded, on the reference loop."""
    kw = {"num_layers": 2, "bidirectional": bidirectional}
    layer = randomise(RecurrentLayer(2, 3, name, backend=backend, **kw).to(DTYPE), seed=7)
    alone_layer = randomise(RecurrentLayer(2, 3, name, backend="loop", **kw).to(DTYPE), seed=7)
    lengths = torch.tensor([2, 6, 4, 1])
    x = torch.randn(4, 6, 2, dtype=DTYPE)
    state = random_state(layer, 4, seed=8)
    out, final = layer(x, lengths=lengths, state=state)
    # padding content must not matter
    junk = x.clone()
    for b, L in enumerate(lengths):
        junk[b, L:] = 1e3 * torch.randn(6 - L, 2, dtype=DTYPE)
    out_junk, final_junk = layer(junk, lengths=lengths, state=state)
    torch.testing.assert_close(out_junk, out)
    assert_state_close(final_junk, final)
    d = 2 if bidirectional else 1
    assert out.shape == (4, 6, d * 3)
    for b, L in enumerate(lengths.tolist()):
        alone_state = [s[:, b : b + 1] for s in parts(state)]
        alone_state = alone_state[0] if len(alone_state) == 1 else tuple(alone_state)
        alone_out, alone_final = alone_layer(x[b : b + 1, :L], state=alone_state)
        torch.testing.assert_close(out[b : b + 1, :L], alone_out, atol=1e-12, rtol=1e-12)
        assert torch.all(out[b, L:] == 0)
        for f, a in zip(parts(final), parts(alone_final), strict=True):
            torch.testing.assert_close(f[:, b : b + 1], a, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("name", ALL)
def test_carrying_the_state_across_chunks_equals_one_run(name: str) -> None:
    """What TBPTT relies on: the final state of chunk k, fed to chunk k+1, continues the sequence exactly."""
    layer = randomise(RecurrentLayer(2, 3, name, num_layers=2).to(DTYPE), seed=16)
    x = torch.randn(3, 7, 2, dtype=DTYPE)
    whole, whole_final = layer(x)
    first, state = layer(x[:, :3])
    second, final = layer(x[:, 3:], state=state)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, atol=1e-12, rtol=1e-12)
    assert_state_close(final, whole_final, atol=1e-12, rtol=1e-12)


def test_time_major_layout_for_outputs_and_gates() -> None:
    layer = randomise(RecurrentLayer(2, 3, "vanilla", bidirectional=True, batch_first=False).to(DTYPE), seed=17)
    x = torch.randn(5, 2, 2, dtype=DTYPE)  # (T, B, M)
    out, _, gates = layer(x, lengths=[5, 3], return_gates=True)
    assert out.shape == (5, 2, 6)
    for gd in gates:
        assert all(v.shape == (5, 2, 3) for v in gd.values())
    torch.testing.assert_close(out[..., :3], gates[0]["y"])
    torch.testing.assert_close(out[..., 3:], gates[1]["y"])
    assert torch.all(out[3:, 1] == 0)
    batch_major = RecurrentLayer(2, 3, "vanilla", bidirectional=True).to(DTYPE)
    batch_major.load_state_dict(layer.state_dict())
    torch.testing.assert_close(batch_major(x.transpose(0, 1), lengths=[5, 3])[0], out.transpose(0, 1))


def test_lengths_validation_and_full_lengths_equal_none() -> None:
    layer = randomise(RecurrentLayer(2, 3, "vanilla").to(DTYPE))
    x = torch.randn(2, 4, 2, dtype=DTYPE)
    full, _ = layer(x, lengths=[4, 4])
    torch.testing.assert_close(full, layer(x)[0])
    for bad in ([0, 4], [5, 4], [4]):
        with pytest.raises(ValueError, match="lengths"):
            layer(x, lengths=bad)
    with pytest.raises(ValueError, match="PackedSequence"):
        layer(pack_padded_sequence(x, [4, 2], batch_first=True), lengths=[4, 2])
    with pytest.raises(ValueError, match=r"\(B, T, 2\)"):
        layer(torch.randn(2, 4, 3, dtype=DTYPE))
    with pytest.raises(ValueError, match="state"):
        layer(x, state=torch.zeros(1, 2, 3, dtype=DTYPE))
    with pytest.raises(ValueError, match="state"):
        RecurrentLayer(2, 3, "fgr")(torch.randn(2, 4, 2), state=(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3)))


# -- 6. gradcheck -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_gradcheck(name: str) -> None:
    layer = randomise(RecurrentLayer(2, 3, name, bidirectional=True, backend="loop").to(DTYPE), seed=9)
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in layer.parameters()]
    x = torch.randn(2, 4, 2, dtype=DTYPE, requires_grad=True)
    state = [s.requires_grad_(True) for s in parts(random_state(layer, 2, seed=10))]
    lengths = torch.tensor([4, 2])

    def run(x, *args):
        st, ps = args[: len(state)], args[len(state) :]
        st = st[0] if len(st) == 1 else tuple(st)
        out, final = functional_call(layer, dict(zip(names, ps)), (x,), {"lengths": lengths, "state": st})
        return (out, *parts(final))

    assert torch.autograd.gradcheck(run, (x, *state, *params), eps=1e-6, atol=1e-6)


# -- 7. initialisation ---------------------------------------------------------------------------


@pytest.mark.parametrize("init", ["torch", "keras"])
@pytest.mark.parametrize("forget_bias", [1.0, 0.0, 2.5])
@pytest.mark.parametrize("name", ["vanilla", "cifg", "np", "fgr", "nig", "grupp"])
def test_forget_bias_sets_the_forget_gate_at_rest(name: str, forget_bias: float, init: str) -> None:
    """With zero input and zero state only the biases act: f_0 = σ(forget_bias), CIFG's f = 1 − σ(−forget_bias)."""
    layer = RecurrentLayer(3, 4, name, num_layers=2, forget_bias=forget_bias, init=init).to(DTYPE)
    _, _, gates = layer(torch.zeros(2, 1, 3, dtype=DTYPE), return_gates=True)
    f0 = gates[0]["f"][:, 0]
    torch.testing.assert_close(f0, torch.full_like(f0, 1 / (1 + math.exp(-forget_bias))))
    n = 4
    for suffix in ("_l0", "_l1"):
        bias = getattr(layer, f"bias{suffix}").detach()
        if name == "cifg":  # blocks i z o: the input gate's bias is −forget_bias
            assert torch.all(bias[:n] == -forget_bias)
            rest = bias[n:]
        else:  # blocks i f z o (nig: f z o)
            start = 0 if name == "nig" else n
            assert torch.all(bias[start : start + n] == forget_bias)
            rest = torch.cat([bias[:start], bias[start + n :]])
        if init == "keras":
            assert torch.all(rest == 0)
        else:
            assert rest.abs().max() <= 1 / math.sqrt(n) and rest.abs().max() > 0


def test_forget_bias_leaves_cells_without_forget_gate_alone() -> None:
    for name in ("nfg", "gru", "gru_cho", "rnn"):
        torch.manual_seed(0)
        layer = RecurrentLayer(3, 4, name, forget_bias=5.0)
        assert layer.bias_l0.abs().max() <= 0.5  # U(±1/√4) everywhere, nothing set to 5


@pytest.mark.parametrize("name", ["vanilla", "fgr", "gru", "rnn", "cifg"])
def test_keras_init_is_glorot_and_orthogonal(name: str) -> None:
    layer = RecurrentLayer(6, 5, name, num_layers=2, bidirectional=True, init="keras", forget_bias=0.0).to(DTYPE)
    for pname, p in layer.named_parameters():
        p = p.detach()
        if pname.startswith("weight_hh") or pname.startswith("weight_gg"):
            # (kN, N): orthonormal columns, the transpose of Keras's (N, kN) recurrent kernel with orthonormal rows
            eye = torch.eye(p.shape[1], dtype=DTYPE)
            torch.testing.assert_close(p.t() @ p, eye, atol=1e-5, rtol=0)  # drawn in float32
        elif pname.startswith("weight_ih"):
            limit = math.sqrt(6 / (p.shape[0] + p.shape[1]))
            assert p.abs().max() <= limit and p.abs().max() > limit / 2
        elif pname.startswith("bias"):
            assert torch.all(p == 0), pname
        elif pname.startswith("peephole"):
            assert p.abs().max() <= 1 / math.sqrt(5)


def test_torch_init_is_uniform_in_one_over_sqrt_n() -> None:
    torch.manual_seed(1)
    layer = RecurrentLayer(6, 16, "fgr", forget_bias=0.0)
    for pname, p in layer.named_parameters():
        assert p.abs().max() <= 0.25, pname
        assert p.abs().max() > 0.2, pname  # spread over the whole interval, not a smaller one


@pytest.mark.parametrize("name", ["vanilla", "nig", "cifg", "fgr"])
def test_peephole_init(name: str) -> None:
    torch.manual_seed(2)
    zero = RecurrentLayer(3, 4, name, num_layers=2, bidirectional=True, peephole_init="zero")
    uniform = RecurrentLayer(3, 4, name, num_layers=2, bidirectional=True)
    peep = [n for n, _ in zero.named_parameters() if n.startswith("peephole")]
    assert len(peep) == 4
    for n in peep:
        assert torch.all(getattr(zero, n) == 0)
        u = getattr(uniform, n).detach()
        assert 0 < u.abs().max() <= 0.5
    assert not any(n.startswith("peephole") for n, _ in RecurrentLayer(3, 4, "np").named_parameters())


def test_invalid_options_are_refused() -> None:
    for kwargs, word in (
        ({"init": "xavier"}, "init"),
        ({"peephole_init": "normal"}, "peephole_init"),
        ({"dropout": 1.0}, "dropout"),
        ({"num_layers": 0}, "num_layers"),
    ):
        with pytest.raises(ValueError, match=word):
            RecurrentLayer(2, 3, "vanilla", **kwargs)


# -- on CUDA (skipped without it): cuDNN's kernels against the same loop -----------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("name", ["np", "gru"])
def test_cudnn_fast_path_equals_loop_on_cuda(name: str) -> None:
    """float64 so that TF32 cannot blur the comparison."""
    cpu = randomise(RecurrentLayer(3, 4, name, num_layers=2, bidirectional=True).to(DTYPE), seed=11)
    fast = RecurrentLayer(3, 4, name, num_layers=2, bidirectional=True).to("cuda", DTYPE)
    fast.load_state_dict(cpu.state_dict())
    loop = RecurrentLayer(3, 4, name, num_layers=2, bidirectional=True, backend="loop").to("cuda", DTYPE)
    loop.load_state_dict(cpu.state_dict())
    x = torch.randn(3, 5, 3, dtype=DTYPE)
    lengths = torch.tensor([5, 2, 4])
    state = random_state(cpu, 3, seed=12)
    results = []
    for layer, device in ((fast, "cuda"), (loop, "cuda"), (cpu, "cpu")):
        xi = x.to(device).requires_grad_(True)
        st = [s.to(device) for s in parts(state)]
        out, final = layer(xi, lengths=lengths.to(device), state=st[0] if len(st) == 1 else tuple(st))
        (out.square().sum() + sum(f.sum() for f in parts(final))).backward()
        grads = [xi.grad] + [p.grad for p in layer.parameters()]
        results.append([t.detach().cpu() for t in (out, *parts(final), *grads)])
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("name", ALL)
def test_loop_on_cuda_equals_cpu(name: str) -> None:
    cpu = randomise(RecurrentLayer(2, 3, name, num_layers=2, bidirectional=True).to(DTYPE), seed=13)
    gpu = RecurrentLayer(2, 3, name, num_layers=2, bidirectional=True).to("cuda", DTYPE)
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(3, 5, 2, dtype=DTYPE)
    lengths = torch.tensor([5, 1, 3])
    out_c, final_c, gates_c = cpu(x, lengths=lengths, return_gates=True)
    out_g, final_g, gates_g = gpu(x.cuda(), lengths=lengths.cuda(), return_gates=True)
    torch.testing.assert_close(out_g.cpu(), out_c)
    for a, b in zip(parts(final_g), parts(final_c), strict=True):
        torch.testing.assert_close(a.cpu(), b)
    for dg, dc in zip(gates_g, gates_c, strict=True):
        for k in dc:
            torch.testing.assert_close(dg[k].cpu(), dc[k])
