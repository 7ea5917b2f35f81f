"""The training entry point end to end: real CLI runs, records, divergence, failure and resume."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from lstm_odyssey import train
from lstm_odyssey.config import load_config
from lstm_odyssey.data import build_task
from lstm_odyssey.engine import Engine
from lstm_odyssey.lifecycle import identify, stop_reason
from lstm_odyssey.models import SequenceModel
from lstm_odyssey.results import hparams_of, load_results, read_record

TINY = ["data.length=12", "data.n_train=64", "data.n_val=32", "data.n_test=32", "model.hidden_size=8", "trainer.batch_size=16"]
RECORD_KEYS = {
    "status", "cell", "task", "hparams", "num_parameters", "val", "test", "objective", "epochs_run", "wall_seconds",
    "device", "seed", "versions", "git_commit", "stopped_by", "best_epoch", "metric",
}


def cli(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run(
        [sys.executable, "-m", "lstm_odyssey.cli", f"paths.root={tmp_path}", "trainer.progress=false", *overrides],
        capture_output=True, text=True, env=env, timeout=300,
    )


def only_record(tmp_path: Path) -> dict:
    records = sorted(tmp_path.rglob("result.json"))
    assert len(records) == 1, records
    return read_record(records[0])


@pytest.mark.parametrize(
    "task_overrides",
    [
        ["data=adding", *TINY, "cell=vanilla"],
        ["data=adding", "data.form=1997", "data.length=24", "data.n_train=64", "data.n_val=32", "data.n_test=32",
         "model.hidden_size=8", "cell=gru"],
        ["data=temporal_order", "data.n_train=32", "data.n_val=16", "data.n_test=16", "model.hidden_size=8", "cell=cifg"],
    ],
    ids=["adding-bai", "adding-1997", "temporal-order"],
)
@pytest.mark.slow
def test_cli_run_writes_a_valid_record(tmp_path, task_overrides):
    proc = cli(tmp_path, *task_overrides, "trainer.epochs=2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = only_record(tmp_path)
    assert RECORD_KEYS <= set(record)
    assert record["status"] == "ok" and record["epochs_run"] == 2
    assert record["cell"] == task_overrides[-1].split("=")[1]
    assert math.isfinite(record["objective"]) and record["objective"] == record["val"][record["metric"]]
    assert set(record["test"]) == set(record["val"])
    # the parameter count is that of the model the config describes
    cfg = load_config(task_overrides)
    model = train.build_model(cfg, build_task(**cfg["data"]))
    assert record["num_parameters"] == sum(p.numel() for p in model.parameters())
    assert record["hparams"]["model.hidden_size"] == 8
    if "data.form=1997" in task_overrides:
        assert 0.0 <= record["test"]["solved"] <= 1.0


@pytest.mark.slow
def test_loss_that_explodes_is_recorded_as_diverged_not_a_crash(tmp_path):
    proc = cli(tmp_path, *TINY, "optim=sgd", "optim.lr=1e30", "trainer.clip=null", "trainer.epochs=3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = only_record(tmp_path)
    assert record["status"] == "diverged" and record["stopped_by"] == "diverged"
    assert "nan" in record["error"].lower() or "inf" in record["error"].lower()


def test_exception_is_recorded_as_failed_and_exits_nonzero(tmp_path):
    proc = cli(tmp_path, *TINY, "data.form=weird", "trainer.epochs=1")
    assert proc.returncode != 0
    record = only_record(tmp_path)
    assert record["status"] == "failed"
    assert "adding form must be '1997' or 'bai'" in record["error"]


def test_unknown_cell_is_a_one_line_error(tmp_path):
    cfg = load_config([*TINY, "cell.peepholes=maybe"])
    with pytest.raises(ValueError, match="peephole"):
        train.run(cfg, tmp_path)
    with pytest.raises(Exception, match="nig"):  # hydra lists the available presets
        load_config(["cell=nope"])


def _deterministic(epochs: int, **extra) -> dict:
    cfg = load_config([*TINY, "trainer.patience=null", "trainer.deterministic=true", "model.dropout=0.0", "trainer.input_noise=0.1",
                       f"trainer.epochs={epochs}"])
    cfg["trainer"].update(extra)
    return cfg


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)["model"]


def test_resume_after_interruption_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    straight = train.run(_deterministic(4), tmp_path / "straight")

    real_epoch = Engine.train_epoch
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as if the job were killed during epoch 3
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(Engine, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train.run(_deterministic(4), tmp_path / "resumed")
    monkeypatch.setattr(Engine, "train_epoch", real_epoch)
    resumed = train.run(_deterministic(4, resume=True), tmp_path / "resumed")

    assert resumed["history"] == straight["history"]
    assert (resumed["objective"], resumed["test"]) == (straight["objective"], straight["test"])
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_load_results_flattens_and_warns_on_broken_files(tmp_path):
    cfg = load_config([*TINY, "trainer.epochs=1"])
    train.run(cfg, tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "result.json").write_text("{ half a record")
    with pytest.warns(UserWarning, match="skipping unreadable record"):
        frame = load_results(tmp_path)
    assert len(frame) == 1
    row = frame.iloc[0]
    assert row["status"] == "ok" and row["optim.lr"] == cfg["optim"]["lr"]
    assert row["model.hidden_size"] == 8 and row["val_mse"] == row["objective"]
    assert json.loads((tmp_path / "a" / "result.json").read_text())["config"]["data"]["length"] == 12


@pytest.mark.parametrize("task_type", ["classification", "regression", "multilabel", "step_classification"])
def test_losses_match_torch_functional(task_type):
    """Each task type's loss is the standard one, computed independently here."""
    torch.manual_seed(0)
    lengths = torch.tensor([5, 3, 4])
    tokens = task_type == "step_classification"
    model = SequenceModel(task_type, 6 if tokens else 3, 4, hidden_size=5, cell="np", tokens=tokens)
    x = torch.randint(0, 6, (3, 5)) if tokens else torch.randn(3, 5, 3)
    valid = torch.arange(5)[None, :] < lengths[:, None]
    if task_type == "classification":
        y = torch.tensor([0, 3, 1])
    elif task_type == "regression":
        y = torch.randn(3, 4)
    elif task_type == "multilabel":
        y = (torch.rand(3, 5, 4) > 0.5).float()
    else:
        y = torch.randint(0, 4, (3, 5)).masked_fill(~valid, -100)
    from lstm_odyssey.data.base import Batch

    batch = Batch(x, lengths, y)
    pred, _ = model(x, lengths)
    loss = model.loss(pred, batch)
    if task_type == "classification":
        expected = torch.nn.functional.cross_entropy(pred, y)
    elif task_type == "regression":
        expected = ((pred - y) ** 2).mean()
    elif task_type == "multilabel":
        per_frame = torch.nn.functional.binary_cross_entropy(torch.sigmoid(pred), y, reduction="none").sum(-1)
        expected = per_frame[valid].mean()
    else:
        expected = torch.nn.functional.cross_entropy(pred[valid], y[valid])
    assert torch.allclose(loss, expected, atol=1e-5)


@pytest.mark.parametrize("cell", ["np", "vanilla"])
def test_per_step_predictions_at_valid_steps_do_not_depend_on_padding(cell):
    """A causal per-step model skips `lengths`; its valid-step outputs must equal each sequence run alone."""
    torch.manual_seed(0)
    model = SequenceModel("multilabel", 3, 4, hidden_size=5, cell=cell).double()
    lengths = torch.tensor([6, 2, 4])
    x = torch.randn(3, 6, 3, dtype=torch.float64)
    x[1, 2:] = 7.0  # garbage in the padding
    batched, _ = model(x, lengths)
    for k, n in enumerate(lengths.tolist()):
        alone, _ = model(x[k : k + 1, :n])
        assert torch.allclose(batched[k, :n], alone[0], atol=1e-12)


def _loop(best_by_epoch, bad_epochs=0, epoch=None, elapsed=0.0):
    epoch = len(best_by_epoch) if epoch is None else epoch
    return {"epoch": epoch, "best": {"objective": best_by_epoch[-1]} if best_by_epoch else None,
            "bad_epochs": bad_epochs, "history": [], "elapsed": elapsed, "best_by_epoch": list(best_by_epoch)}


def test_stop_reason_follows_the_rules_in_order():
    """Hand-worked cases of lifecycle.stop_reason: patience, the plateau rule (relative gain of the best objective
    over the last `patience` epochs), time cap, epoch cap."""
    trainer = {"epochs": 10, "patience": 3, "min_improvement": 0.01, "max_minutes": None}
    # best 10.0 three epochs ago, now 9.95: a gain of 0.5 % < 1 % -> plateau
    assert stop_reason(trainer, _loop([10.0, 9.99, 9.97, 9.95])) == "plateau"
    # now 9.8: 2 % >= 1 % -> go on
    assert stop_reason(trainer, _loop([10.0, 9.9, 9.85, 9.8])) is None
    # too few epochs to judge a plateau
    assert stop_reason(trainer, _loop([10.0, 9.999, 9.998])) is None
    # without the rule the slow run goes on
    assert stop_reason({**trainer, "min_improvement": None}, _loop([10.0, 9.99, 9.97, 9.95])) is None
    # patience wins over everything else
    assert stop_reason(trainer, _loop([10.0, 9.0, 9.0, 9.0], bad_epochs=3)) == "early_stopping"
    assert stop_reason({**trainer, "max_minutes": 1}, _loop([5.0, 4.0], elapsed=61.0)) == "time_cap"
    assert stop_reason(trainer, _loop([5.0, 4.0], epoch=10)) == "epoch_cap"


def test_a_labelled_cell_keeps_its_label_in_the_record(tmp_path):
    """`cell.label` names the cell in the record (and is no hyperparameter); a preset with changed flags is
    described; the old way, a `cell.name` that is no preset, still labels it, with a deprecation warning."""
    record = {}
    cfg = load_config(["cell=cifg", "cell.label=my_cifg_np", "cell.peepholes=false"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        identify(record, cfg)
    assert record["cell"] == "my_cifg_np" and record["cell_flags"]["coupled"] is True
    assert record["cell_flags"]["peepholes"] is False and "cell.label" not in hparams_of(cfg)
    record = {}
    with pytest.warns(DeprecationWarning, match="cell.label=my_cifg_np"):
        identify(record, load_config(["cell=cifg", "cell.name=my_cifg_np", "cell.peepholes=false"]))
    assert record["cell"] == "my_cifg_np" and record["cell_flags"]["coupled"] is True
    record = {}
    identify(record, load_config(["cell=vanilla", "cell.peepholes=false"]))
    assert record["cell"] == "np"  # the flags equal a preset: its name, not the stale label
