"""A pack of trials equals each trial's own SequenceModel: predictions, states, losses and gradients (float64),
with different hidden sizes (padding), forget biases, per-trial batches and variable lengths, on both of the
pack's two ways of running its trials (stacked, the default, and vmap, the reference); and the two equal each other."""

from __future__ import annotations

import logging

import pytest
import torch
from torch.func import functional_call, vmap

from lstm_odyssey.data.base import CLASSIFICATION, MULTILABEL, STEP_CLASSIFICATION, collate
from lstm_odyssey.models import SequenceModel
from lstm_odyssey.packed import stacked
from lstm_odyssey.packed.model import TRIAL_AXES, PackedModel, embedding_index, stack_batches
from lstm_odyssey.packed.optim import PackedAdam

CELLS = ["vanilla", "fgr", "gru", "gru_cho", "rnn", "cifg", "min_gru", "min_lstm", "slstm", "indy_lstm", "indrnn", "janet"]
HIDDEN = [3, 5, 4]
FORGET_BIAS = [1.0, 0.0, 2.0]
F_IN, CLASSES, BATCH = 4, 3, 3
SETUPS = {  # name: task type, tokens, layers, bidirectional
    "sequence": (CLASSIFICATION, False, 1, False),
    "sequence-2layer-bidir": (CLASSIFICATION, False, 2, True),
    "per-step": (MULTILABEL, False, 1, False),
    "per-step-bidir": (MULTILABEL, False, 1, True),
    "per-step-2layer-bidir": (MULTILABEL, False, 2, True),
    "tokens": (STEP_CLASSIFICATION, True, 1, False),
    "sequence-linear-encoder": (CLASSIFICATION, False, 1, False),
}
ENCODERS = {"sequence-linear-encoder": "linear"}  # the others: auto (identity, or an embedding for tokens)


pytestmark = pytest.mark.usefixtures("float64_one_thread")  # tests/conftest.py


def make(setup: str, cell: str, hidden: int, forget_bias: float = 1.0, meta: bool = False, dropout: float = 0.0) -> SequenceModel:
    task_type, tokens, layers, bidir = SETUPS[setup]
    out = CLASSES if task_type in (CLASSIFICATION, STEP_CLASSIFICATION) else F_IN
    with torch.device("meta" if meta else "cpu"):
        return SequenceModel(task_type, F_IN, out, hidden_size=hidden, cell=cell, num_layers=layers, bidirectional=bidir,
                             tokens=tokens, forget_bias=forget_bias, backend="loop", dropout=dropout,
                             encoder=ENCODERS.get(setup, "auto"))


def batch_of(setup: str, k: int):
    """Trial k's own batch: its own sequences, lengths and padded length."""
    task_type, tokens, _, _ = SETUPS[setup]
    g = torch.Generator().manual_seed(k)
    lengths = torch.randint(2, 7 + k, (BATCH,), generator=g).tolist()
    xs = [torch.randint(0, F_IN, (n,), generator=g) if tokens else torch.randn(n, F_IN, generator=g) for n in lengths]
    if task_type == CLASSIFICATION:
        ys = [torch.randint(0, CLASSES, (), generator=g) for _ in lengths]
    elif task_type == MULTILABEL:
        ys = [(torch.rand(n, F_IN, generator=g) < 0.3).double() for n in lengths]
    else:
        ys = [torch.randint(0, CLASSES, (n,), generator=g) for n in lengths]
    return collate(xs, ys, task_type)


def rnn_outputs(pack: PackedModel, x: torch.Tensor, lengths):
    """The recurrent stack's outputs at every step for every trial (the pack runs them inside the model),
    (K, B, T, D * N), on the pack's trial axis."""
    rnn_params = {n.removeprefix("rnn."): p for n, p in pack.params.items() if n.startswith("rnn.")}
    encoder = {n.removeprefix("encoder."): p for n, p in pack.params.items() if n.startswith("encoder.")}
    if pack.trial_axis == "stacked":
        inputs = stacked.encode(pack.template.encoder, pack.params, x)
        out, _ = stacked.recurrent(pack.template.rnn, rnn_params, inputs, lengths, None)
        return out.movedim(0, 2), None

    def run(p, e, x, lengths):
        inputs = functional_call(pack.template.encoder, e, (x,))
        return functional_call(pack.template.rnn, p, (inputs,), {"lengths": lengths})

    return vmap(run, in_dims=(0, 0, 0, None if lengths is None else 0))(rnn_params, encoder, x, lengths)


@pytest.mark.parametrize("trial_axis", TRIAL_AXES)
@pytest.mark.parametrize("setup", list(SETUPS))
@pytest.mark.parametrize("cell", CELLS)
def test_trial_k_of_a_pack_equals_its_own_model(cell, setup, trial_axis, monkeypatch):
    monkeypatch.setattr(stacked, "cut_prices", lambda hidden, batch: (0.0, 0.0))  # a segment per trial length
    torch.manual_seed(0)
    singles = [make(setup, cell, n, fb) for n, fb in zip(HIDDEN, FORGET_BIAS)]
    width = max(HIDDEN)
    pack = PackedModel(make(setup, cell, width, meta=True), singles, trial_axis=trial_axis)
    assert pack.trial_axis == trial_axis
    batches = [batch_of(setup, k) for k in range(len(singles))]
    x, lengths = stack_batches(batches, [b.x for b in batches])
    assert lengths is not None  # variable lengths and different padded lengths per trial
    steps = lengths.amax(dim=1).tolist()
    assert steps != sorted(steps, reverse=True) and len(set(steps)) > 1  # permuted, then cut at each length

    prediction, final = pack(x, lengths)
    pack.losses(prediction, batches).sum().backward()
    per_step = SETUPS[setup][0] not in (CLASSIFICATION,)
    for k, (model, batch) in enumerate(zip(singles, batches)):
        out, own_final = model(batch.x, batch.lengths)
        model.loss(out, batch).backward()
        assert (pack.own_steps(prediction[k], batch) - out).abs().max() < 1e-12
        if not per_step or trial_axis == "stacked":  # vmap runs per-step tasks past a trial's own padded length
            finals = final if isinstance(final, tuple) else (final,)
            own = own_final if isinstance(own_final, tuple) else (own_final,)
            n = HIDDEN[k]
            for f, o in zip(finals[:2], own[:2]):  # h and c: the units are the last axis
                assert (f[k][..., :n] - o).abs().max() < 1e-12
                assert (f[k][..., n:] == 0).all(), "padded units must stay zero"
        for name, p in model.named_parameters():
            ix = pack.index[k][name]
            assert (pack.params[name].grad[k][ix] - p.grad).abs().max() < 1e-12, name
            padded = torch.ones_like(pack.params[name][k], dtype=torch.bool)
            padded[ix] = False
            grad = pack.params[name].grad[k][padded]
            if cell == "fgr" and "weight_gg" in name and grad.numel():
                assert grad.abs().max() > 0  # the padded gates' sigmoid(0) reaches these columns: the mask's job
            else:
                assert (grad == 0).all(), f"padded entries of {name} got a gradient"
    pack.mask_gradients_()
    for name, mask in pack.masks.items():
        assert (pack.params[name].grad[~mask] == 0).all()


@pytest.mark.parametrize("trial_axis", TRIAL_AXES)
@pytest.mark.parametrize("cell", CELLS)
def test_padded_units_stay_zero_at_every_step_and_are_never_updated(cell, trial_axis):
    torch.manual_seed(1)
    singles = [make("per-step-bidir", cell, n, fb) for n, fb in zip(HIDDEN, FORGET_BIAS)]
    pack = PackedModel(make("per-step-bidir", cell, max(HIDDEN), meta=True), singles, trial_axis=trial_axis)
    opt = PackedAdam(lr=[0.1] * 3, beta1=[0.9] * 3, beta2=[0.99] * 3, eps=[1e-8] * 3, weight_decay=[0.01] * 3)
    for step in range(3):
        batches = [batch_of("per-step-bidir", k + 10 * step) for k in range(3)]
        x, lengths = stack_batches(batches, [b.x for b in batches])
        out, _ = rnn_outputs(pack, x, lengths)
        width = max(HIDDEN)
        for k, n in enumerate(HIDDEN):
            for direction in range(2):
                assert (out[k][..., direction * width + n : (direction + 1) * width] == 0).all()
        prediction, _ = pack(x, lengths)
        pack.losses(prediction, batches).sum().backward()
        pack.mask_gradients_()
        opt.step(pack.params, pack.masks)
        for name, mask in pack.masks.items():
            assert (pack.params[name].detach()[~mask] == 0).all(), f"{name} moved in its padding"
        for p in pack.params.values():
            p.grad = None


@pytest.mark.parametrize("trial_axis", TRIAL_AXES)
def test_shared_batch_and_state_carry_equal_each_model(trial_axis):
    """Evaluation reads one batch for every trial; stateful tasks carry each trial's state."""
    torch.manual_seed(2)
    singles = [make("tokens", "vanilla", n) for n in HIDDEN]
    pack = PackedModel(make("tokens", "vanilla", max(HIDDEN), meta=True), singles, trial_axis=trial_axis)
    batch = batch_of("tokens", 0)
    with torch.no_grad():
        pred, state = pack(batch.x, None, shared=True)
        pred2, _ = pack(batch.x, None, state=state, shared=True)
        for k, model in enumerate(singles):
            out, own = model(batch.x)
            out2, _ = model(batch.x, None, own)
            assert (pred[k] - out).abs().max() < 1e-12 and (pred2[k] - out2).abs().max() < 1e-12


@pytest.mark.parametrize("setup", ["sequence-2layer-bidir", "per-step-2layer-bidir", "tokens", "sequence-linear-encoder"])
@pytest.mark.parametrize("cell", CELLS)
def test_the_stacked_trials_equal_the_vmapped_ones(cell, setup):
    """Same pack, same per-trial batches and a carried-in state: equal predictions, final states (padding
    included) and gradients of every parameter, padded entries included."""
    torch.manual_seed(5)
    singles = [make(setup, cell, n, fb) for n, fb in zip(HIDDEN, FORGET_BIAS)]
    template = make(setup, cell, max(HIDDEN), meta=True)
    packs = {trial_axis: PackedModel(template, singles, trial_axis=trial_axis) for trial_axis in TRIAL_AXES}
    batches = [batch_of(setup, k + 20) for k in range(len(singles))]
    x, lengths = stack_batches(batches, [b.x for b in batches])
    with torch.no_grad():  # a state with every real unit non-zero, as a stateful task carries it
        _, start = packs["vmap"](x, lengths)
    got = {}
    for trial_axis, pack in packs.items():
        prediction, final = pack(x, lengths, start)
        finals = final if isinstance(final, tuple) else (final,)
        (pack.losses(prediction, batches).sum() + sum((f * f).sum() for f in finals)).backward()
        got[trial_axis] = prediction, finals
    assert (got["stacked"][0] - got["vmap"][0]).abs().max() < 1e-10
    for f, v in zip(got["stacked"][1], got["vmap"][1]):
        assert f.shape == v.shape and (f - v).abs().max() < 1e-10
    for name, p in packs["stacked"].params.items():
        assert (p.grad - packs["vmap"].params[name].grad).abs().max() < 1e-10, name


def test_the_stacked_forward_falls_back_to_vmap_with_the_reason(caplog):
    torch.manual_seed(6)
    singles = [make("sequence-2layer-bidir", "gru", n, dropout=0.5) for n in HIDDEN]
    with caplog.at_level(logging.WARNING, logger="lstm_odyssey.packed"):
        pack = PackedModel(make("sequence-2layer-bidir", "gru", max(HIDDEN), meta=True, dropout=0.5), singles)
    assert pack.trial_axis == "vmap" and "dropout between layers" in caplog.text
    with pytest.warns(DeprecationWarning, match='trial_axis="stacked"'):
        old = PackedModel(make("sequence", "vanilla", max(HIDDEN), meta=True), [make("sequence", "vanilla", n) for n in HIDDEN],
                          "fused")
    assert old.trial_axis == "stacked"  # the old name, kept one release
    with pytest.raises(ValueError, match="unknown trial_axis"):
        PackedModel(make("sequence", "gru", max(HIDDEN), meta=True), [make("sequence", "gru", n) for n in HIDDEN], trial_axis="jit")


def test_removing_a_trial_and_unpacking_weights():
    torch.manual_seed(3)
    singles = [make("sequence", "gru", n) for n in HIDDEN]
    pack = PackedModel(make("sequence", "gru", max(HIDDEN), meta=True), singles)
    pack.select([2, 0])
    assert pack.width == 2 and pack.hidden_sizes == [HIDDEN[2], HIDDEN[0]]
    for k, original in zip(range(2), (singles[2], singles[0])):
        state = pack.trial_state_dict(k)
        for name, p in original.state_dict().items():
            assert torch.equal(state[name], p)


def test_embedding_index_places_blocks_at_multiples_of_the_width():
    rows, cols = embedding_index((3 * 2, 7), (3 * 4, 7), n=2, width=4)
    assert rows.flatten().tolist() == [0, 1, 4, 5, 8, 9] and cols.flatten().tolist() == list(range(7))
    with pytest.raises(ValueError, match="cannot pad"):
        embedding_index((5,), (8,), n=2, width=4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (CI has no GPU)")
@pytest.mark.parametrize("cell", CELLS)
def test_a_pack_on_the_gpu_equals_the_pack_on_the_cpu(cell):
    torch.manual_seed(4)
    singles = [make("sequence-2layer-bidir", cell, n, fb) for n, fb in zip(HIDDEN, FORGET_BIAS)]
    template = make("sequence-2layer-bidir", cell, max(HIDDEN), meta=True)
    on_cpu, on_gpu = PackedModel(template, singles), PackedModel(template, singles).to("cuda")
    batches = [batch_of("sequence-2layer-bidir", k) for k in range(3)]
    predictions = []
    for pack, device in ((on_cpu, "cpu"), (on_gpu, "cuda")):
        own = [b.to(device) for b in batches]
        x, lengths = stack_batches(own, [b.x for b in own])
        prediction, _ = pack(x, lengths)
        pack.losses(prediction, own).sum().backward()
        predictions.append(prediction.detach().cpu())
    assert (predictions[0] - predictions[1]).abs().max() < 1e-10
    for name, p in on_cpu.params.items():
        assert (p.grad - on_gpu.params[name].grad.cpu()).abs().max() < 1e-10, name


@pytest.mark.parametrize("shared, segment", [(0, 0), (0, 8), (2.5, 3), (40, 50)])
@pytest.mark.parametrize("seed", range(6))
def test_segments_are_the_cheapest_cut_of_the_sweep(shared, segment, seed):
    """Against brute force over every subset of the trials' stops: the same cost, and a valid cut (it covers
    every step once, and each segment runs exactly the trials still running at its start, a prefix)."""
    import itertools

    g = torch.Generator().manual_seed(seed)
    steps = sorted(torch.randint(1, 30, (int(torch.randint(1, 8, (), generator=g)),), generator=g).tolist(), reverse=True)

    def price(cut):
        return sum((stop - start) * (shared + running) + segment for start, stop, running in cut)

    def cut_at(ends):
        bounds = [0, *ends]
        return [(a, b, sum(1 for n in steps if n > a)) for a, b in zip(bounds, bounds[1:])]

    stops = sorted(set(steps))
    cheapest = min(price(cut_at([*inner, stops[-1]])) for r in range(len(stops)) for inner in itertools.combinations(stops[:-1], r))
    got = stacked.segments(steps, shared, segment)
    assert abs(price(got) - cheapest) < 1e-9
    assert got[0][0] == 0 and got[-1][1] == steps[0]
    assert all(a[1] == b[0] for a, b in zip(got, got[1:]))
    assert got == cut_at([stop for _, stop, _ in got])
    if segment == 0:  # cuts are free: every stop is one, and each trial stops at its own length
        assert [stop for _, stop, _ in got] == stops


def test_cuts_pay_sooner_for_large_trials():
    """The same lengths cut into more segments at 200 units than at 20 (a large trial's step is its own work)."""
    steps = [120, 110, 100, 90, 80, 70, 60, 50]
    small, large = (stacked.segments(steps, *stacked.cut_prices(n, 8)) for n in (20, 200))
    assert len(large) > len(small)


def test_segments_want_the_trials_longest_first():
    with pytest.raises(ValueError, match="longest first"):
        stacked.segments([3, 5])
