"""Every fast backend computes what the reference loop computes (outputs, final state, every
gradient), for every preset, with variable lengths, two layers and both directions; `auto` only
picks a backend that can honour the request."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch
from helpers import compare

from lstm_odyssey import PRESETS, RecurrentLayer, backends
from lstm_odyssey.backends import BACKENDS

CUDA = torch.cuda.is_available()
gpu = pytest.mark.skipif(not CUDA, reason="needs CUDA (CI has no GPU)")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.mark.parametrize("cell", list(PRESETS))
def test_fused_equals_loop(cell):
    compare(cell, "fused")


@pytest.mark.parametrize("cell", ["np", "gru", "rnn"])
def test_torch_equals_loop(cell):
    compare(cell, "torch")


@pytest.mark.parametrize("cell", ["vanilla", "fgr", "gru_cho"])
def test_fused_equals_loop_with_dropout_in_training(cell):
    compare(cell, "fused", dropout=0.5)


def test_fused_in_float32_is_close():
    compare("vanilla", "fused", dtype=torch.float32, tol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton (CUDA builds of torch ship it)")
def test_triton_kernels_equal_loop_under_the_interpreter():
    """The CUDA kernels' math, run by Triton's CPU interpreter (a fresh process: the variable must be
    set before triton is imported)."""
    code = (
        "import sys, torch; sys.path.insert(0, 'tests'); import helpers as t; torch.set_num_threads(1)\n"
        "for cell in ('vanilla', 'cifg', 'nfg', 'noaf', 'fgr', 'gru', 'gru_cho'):\n"
        "    t.compare(cell, 'fused')\n"
        "from lstm_odyssey.cells import ops; assert ops.use_triton(torch.zeros(1))\n"
    )
    env = {**os.environ, "TRITON_INTERPRET": "1", "LSTM_ODYSSEY_TRITON": "force"}
    root = pathlib.Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("cell", list(PRESETS))
def test_auto_picks_a_backend_that_can_run_the_request(cell):
    spec = PRESETS[cell]
    cpu = torch.device("cpu")
    chosen = backends.select("auto", spec, cpu)
    assert chosen == ("torch" if cell in ("np", "gru", "rnn") else "fused")
    assert backends.select("auto", spec, cpu, return_gates=True) == "loop"  # only the loop records gates
    on_gpu = backends.select("auto", spec, torch.device("cuda"))
    if CUDA:
        assert on_gpu == ("torch" if cell in ("np", "gru", "rnn") else "graph")
    else:
        assert on_gpu != "graph"
    for backend in BACKENDS[1:]:  # an explicit choice that can run is kept
        if backends.why_not(backend, spec, cpu, return_gates=False) is None:
            assert backends.select(backend, spec, cpu) == backend


def test_auto_under_autocast_runs_the_loop():
    layer = RecurrentLayer(3, 4, "vanilla")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer.select_backend() == "loop"
        out, _ = layer(torch.randn(2, 5, 3))
    assert out.shape == (2, 5, 4)
    assert layer.select_backend() == "fused"


def test_auto_with_gates_runs_the_loop_and_records_gates():
    layer = RecurrentLayer(3, 4, "vanilla")
    out, _, gates = layer(torch.randn(2, 5, 3), return_gates=True)
    assert set(gates[0]) == set("zifocy") and gates[0]["y"].shape == out.shape


@pytest.mark.parametrize(
    ("cell", "backend", "why"),
    [("vanilla", "torch", "not one of torch's"), ("np", "graph", "CUDA graphs need a CUDA device"), ("np", "fused", "gates")],
)
def test_a_backend_that_cannot_honour_the_request_is_refused(cell, backend, why):
    if backend == "graph" and CUDA:
        pytest.skip("CUDA present: graph can run")
    layer = RecurrentLayer(3, 4, cell, backend=backend)
    with pytest.raises(ValueError, match=why):
        layer(torch.randn(2, 5, 3), return_gates=why == "gates")


def test_unknown_backend_is_refused_in_one_line():
    with pytest.raises(ValueError, match="unknown backend 'cudnn'; choose one of auto, loop"):
        RecurrentLayer(3, 4, backend="cudnn")


@pytest.mark.parametrize("backend", ["loop", "fused"])
def test_activation_memory_grows_linearly_in_steps(backend):
    from lstm_odyssey.bench import saved_bytes

    layer = RecurrentLayer(3, 16, "vanilla", backend=backend)
    sizes = [saved_bytes(layer, batch=8, steps=steps) for steps in (50, 100, 150)]
    per_step = [(b - a) / 50 for a, b in zip(sizes, sizes[1:])]
    assert per_step[1] == pytest.approx(per_step[0], rel=0.01)  # constant bytes per step: linear, not O(T^2)
    if backend == "fused":  # per step: 4 gate activations, cell, output, h(c) (B x N each) and the input x
        assert per_step[0] == pytest.approx((7 * 16 + 3) * 8 * 4, rel=0.01)


def test_fused_backward_refuses_double_backward():
    layer = RecurrentLayer(3, 4, "vanilla", backend="fused")
    out, _ = layer(torch.randn(2, 5, 3, requires_grad=True))
    (grad,) = torch.autograd.grad(out.sum(), layer.weight_hh_l0, create_graph=True)
    with pytest.raises(RuntimeError):
        grad.sum().backward()


@gpu
@pytest.mark.parametrize("cell", list(PRESETS))
def test_gpu_backends_equal_loop(cell):
    compare(cell, "fused", device="cuda")
    compare(cell, "graph", device="cuda")
    if cell in ("np", "gru", "rnn"):
        compare(cell, "torch", device="cuda", dtype=torch.float64, tol=1e-9)


@gpu
def test_graph_float32_and_repeated_forwards_before_backward():
    """Forwards through the same captured graph before one backward keep their own activations."""
    torch.manual_seed(0)
    layer = RecurrentLayer(8, 32, "vanilla", backend="graph").cuda()
    ref = RecurrentLayer(8, 32, "vanilla", backend="loop").cuda()
    ref.load_state_dict(layer.state_dict())
    xs = [torch.randn(16, 20, 8, device="cuda") for _ in range(3)]  # eager, captured, replayed
    loss = sum((layer(x)[0] ** 2).sum() for x in xs)
    loss.backward()
    assert backends.graph_runner(torch.device("cuda")).captures >= 1
    ref_loss = sum((ref(x)[0] ** 2).sum() for x in xs)
    ref_loss.backward()
    assert torch.allclose(loss, ref_loss, rtol=1e-4)
    for a, b in zip(layer.parameters(), ref.parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-3, atol=1e-4)


def test_bench_writes_a_table_and_json(tmp_path, capsys):
    from lstm_odyssey import bench

    out = tmp_path / "bench.json"
    bench.main(["--cells", "vanilla", "np", "--hidden", "8", "--input", "4", "--batch", "2", "--steps", "5",
                "--repeats", "2", "--warmup", "1", "--backends", "auto", "loop", "--device", "cpu", "--json", str(out)])
    table = capsys.readouterr().out
    assert "vanilla" in table and "nn.LSTM" in table
    rows = json.loads(out.read_text())["rows"]
    by_key = {(r["cell"], r["backend"]): r for r in rows}
    assert by_key[("vanilla", "fused")]["fwd_bwd_ms"] > 0
    assert by_key[("vanilla", "loop")]["ratio_fwd_bwd"] > 0
    assert ("reference", "nn.LSTM") in by_key


def test_bench_refuses_an_unknown_cell_in_one_line(capsys):
    from lstm_odyssey import bench

    with pytest.raises(SystemExit):
        bench.main(["--cells", "lstmm"])
    assert "unknown cell 'lstmm'; choose from vanilla" in capsys.readouterr().err
