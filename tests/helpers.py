"""Helpers and constants shared by several test modules (a plain module, not a test module: pytest collects
nothing here). Tests import it as `helpers`: pytest's default (prepend) import mode puts tests/ on sys.path
when it loads tests/conftest.py, which also registers this module for assertion rewriting, so a failing
assert here reports as it would inside a test. Fixtures live in tests/conftest.py.

No test module imports another test module (tests/test_test_suite.py checks it): what two of them share
belongs here."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

from lstm_odyssey import RecurrentLayer
from lstm_odyssey.cells import get_spec
from lstm_odyssey.config import load_config

if TYPE_CHECKING:
    import optuna

TESTS = Path(__file__).parent


# -- real sweeps (tests/test_sweeps.py, tests/test_reliability.py) -----------------------------------

# A tiny adding problem and one epoch: every job takes well under a second of training.
SWEEP_TINY = [
    "data.length=10", "data.n_train=64", "data.n_val=32", "data.n_test=32", "trainer.epochs=1",
    "sweep.params.model.hidden_size.low=4", "sweep.params.model.hidden_size.high=8", "sweep.report=false",
]


def sweep_cmd(sweep_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "lstm_odyssey.cli", "-m", "+sweep=quick", f"hydra.sweep.dir={sweep_dir}", *SWEEP_TINY, *args]


def env(**extra: str) -> dict[str, str]:
    out = dict(os.environ, WANDB_MODE="disabled", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    # tests/ on the path: hydra callbacks named by the tests (helpers.KillJob, test_reliability.Attempts)
    out["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), out.get("PYTHONPATH")]))
    out.update(extra)
    return out


def run_sweep(sweep_dir: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(sweep_cmd(sweep_dir, *args), capture_output=True, text=True, env=env(), timeout=300)
    if ok and proc.returncode != 0:
        raise AssertionError(f"sweep failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def records(sweep_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) | {"_path": p} for p in sorted(sweep_dir.rglob("result.json"))]


def trials(sweep_dir: Path) -> dict[str, list[optuna.trial.FrozenTrial]]:
    import optuna  # here: most modules importing helpers never read a study

    storage = f"sqlite:///{sweep_dir / 'optuna.db'}"
    return {
        s.study_name: optuna.load_study(study_name=s.study_name, storage=storage).get_trials()
        for s in optuna.get_all_study_summaries(storage)
    }


class KillJob:
    """Hydra callback for these tests: a job whose data.length is `length` dies at its start, leaving no record."""

    def __init__(self, length: int) -> None:
        self.length = length

    def on_job_start(self, config, **kwargs) -> None:
        if config.data.length == self.length:
            os._exit(9)


# -- packs of trials against single runs (tests/test_packed_fit.py, test_engine.py, test_packed_sweep.py) -

PACK_TINY = ["data.length=12", "data.n_train=64", "data.n_val=32", "data.n_test=32", "trainer.batch_size=16",
             "trainer.epochs=4", "trainer.patience=null", "trainer.progress=false"]
TIMING = {"wall_seconds", "trial_seconds", "run_dir", "backend", "pack", "elapsed"}  # what a pack may record differently


def with_keys(base: dict, changes: dict) -> dict:
    cfg = copy.deepcopy(base)
    for key, value in changes.items():
        group, name = key.split(".")
        cfg[group][name] = value
    return cfg


# learning rate, hidden size, noise, seed, clipping, forget bias and patience differ; trial 2 (lr 0) stops
# early at epoch 2, trial 3 (lr 1e30, no clipping) diverges mid-epoch
VARIANTS = [
    {"optim.lr": 0.05, "model.hidden_size": 6, "trainer.input_noise": 0.0, "trainer.seed": 0},
    {"optim.lr": 0.2, "model.hidden_size": 9, "trainer.input_noise": 0.1, "trainer.seed": 1, "trainer.clip": None,
     "model.forget_bias": 0.0},
    {"optim.lr": 0.0, "model.hidden_size": 4, "trainer.input_noise": 0.05, "trainer.seed": 2, "trainer.patience": 1},
    {"optim.lr": 1e30, "model.hidden_size": 5, "trainer.seed": 3, "trainer.clip": None},
]


def trial_cfgs(*overrides: str, variants=VARIANTS) -> list[dict]:
    base = load_config([*PACK_TINY, *overrides])
    return [with_keys(base, v) for v in variants]


def assert_close(a, b, path="record", tol=1e-6):
    """Equal records: same keys and types; floats to `tol` (relative for large values)."""
    if isinstance(a, dict):
        assert isinstance(b, dict), path
        keys_a, keys_b = set(a) - TIMING, set(b) - TIMING
        assert keys_a == keys_b, f"{path}: {sorted(keys_a ^ keys_b)}"
        for k in keys_a:
            assert_close(a[k], b[k], f"{path}.{k}", tol)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for j, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{path}[{j}]", tol)
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=tol, abs_tol=tol), f"{path}: {a} != {b}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


# -- backends against the reference loop (tests/test_backends.py, tests/test_modern_cells.py) ----------


def run_backend(layer: RecurrentLayer, backend: str, x: torch.Tensor, lengths, state):
    """Outputs, final state and gradients of a loss that touches every output and final state."""
    layer.backend = backend
    layer.zero_grad()
    out, final = layer(x, lengths=lengths, state=state)
    finals = list(final) if isinstance(final, tuple) else [final]
    weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device).view_as(out)
    loss = (out * weight).sum() + sum(0.3 * (f * f).sum() for f in finals)
    grads = torch.autograd.grad(loss, [x, *layer.parameters(), *state])
    return [out, *finals, *grads]


def compare(cell: str, backend: str, device: str = "cpu", dtype=torch.float64, tol: float = 1e-10, **options) -> None:
    torch.manual_seed(0)
    batch, steps = 4, 7
    for lengths in (None, [5, 3, 7, 1]):
        for bidirectional in (False, True):
            layer = RecurrentLayer(3, 5, cell, num_layers=2, bidirectional=bidirectional, **options)
            layer = layer.to(device=device, dtype=dtype)
            x = torch.randn(batch, steps, 3, dtype=dtype, device=device, requires_grad=True)
            shapes = layer._state_shapes(batch)
            state = [torch.randn(s, dtype=dtype, device=device, requires_grad=True) for s in shapes]
            torch.manual_seed(1)  # the same dropout masks for both backends
            expected = run_backend(layer, "loop", x, lengths, state)
            for attempt in range(2 if backend == "graph" else 1):  # graph: eager first, captured when seen again
                torch.manual_seed(1)
                got = run_backend(layer, backend, x, lengths, state)
                assert len(got) == len(expected)
                for k, (g, e) in enumerate(zip(got, expected)):
                    err = (g - e).abs().max().item()
                    where = f"{cell}/{backend}#{attempt} lengths={lengths} bidirectional={bidirectional}"
                    assert err < tol, f"{where}: tensor {k} off by {err}"


# -- the trial axis (tests/test_trials.py, tests/test_modern_cells.py) --------------------------------

K, STEPS = 3, 5  # trials side by side, time steps


def one_trial(weights, k: int):
    """Trial k's weights in the single-trial layout: matrices (rows, cols), vectors (n,)."""
    return [None if w is None else w[k] if w.shape[-2] != 1 else w[k, 0] for w in weights]


def assert_same(stacked, separate, what: str):
    assert stacked.shape == separate.shape, what
    torch.testing.assert_close(stacked, separate, rtol=1e-12, atol=1e-12, msg=what)


# -- impossible cells (tests/test_cells.py, tests/test_modern_cells.py) --------------------------------


def assert_refused_in_one_line(flags: dict, words: tuple[str, ...]) -> None:
    """get_spec refuses `flags` with a one-line ValueError naming every one of `words`."""
    with pytest.raises(ValueError) as err:
        get_spec(flags)
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message
