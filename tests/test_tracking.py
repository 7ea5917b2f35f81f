"""W&B tracking: one offline run per job of a study, with the study as group; `logger=none` tracks nothing."""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from lstm_odyssey import tracking
from lstm_odyssey.schema import WandbLoggerConfig

pb = pytest.importorskip("wandb.proto.wandb_internal_pb2")


def wandb_records(path: Path) -> list:
    """The records of an offline run file (W&B's LevelDB-style log: 7-byte header, 32 KiB blocks, chunked records)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    out, pos, buf = [], 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:  # block trailer
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            break
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(buf)
            out.append(record)
            buf = b""
    return out


def by_type(records: list, kind: str) -> list:
    return [getattr(r, kind) for r in records if r.WhichOneof("record_type") == kind]


@pytest.mark.slow
def test_wandb_offline_writes_one_run_per_job_with_group_config_metrics_and_status(tmp_path):
    cmd = [
        sys.executable, "-m", "lstm_odyssey.cli", "-m", "+sweep=quick", f"hydra.sweep.dir={tmp_path}", "logger=wandb",
        "hydra/launcher=basic",  # all jobs in one process: the case where W&B runs would merge without finish()
        "logger.project=odyssey-test", "cell=vanilla,gru", "data.length=10,1", "sweep.n_trials=1", "sweep.report=false",
        "data.n_train=64", "data.n_val=32", "data.n_test=32", "trainer.epochs=2",
        "sweep.params.model.hidden_size.low=4", "sweep.params.model.hidden_size.high=8",
    ]
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = sorted(tmp_path.rglob("result.json"))
    assert len(results) == 4  # 2 cells x 2 lengths; length 1 fails inside training
    for path in results:
        record = json.loads(path.read_text())
        runs = list((path.parent / "wandb").glob("offline-run-*/run-*.wandb"))
        assert len(runs) == 1, f"{path.parent}: expected one W&B run, found {runs}"
        recs = wandb_records(runs[0])
        (run,) = by_type(recs, "run")
        assert run.project == "odyssey-test" and run.run_group == "quick" and run.job_type == "adding"
        assert set(run.tags) >= {f"cell:{record['cell']}", "task:adding", "study:quick"}
        assert run.display_name == str(path.parent.relative_to(tmp_path))
        config = {item.key: json.loads(item.value_json) for item in run.config.update}
        assert config["cell"]["name"] == record["cell"] and config["optim"]["lr"] == record["hparams"]["optim.lr"]
        assert "logger" not in config and config["sweep"]["trial"] == 0
        summary = {}
        for update in by_type(recs, "summary"):
            for item in update.update:
                summary[item.key or ".".join(item.nested_key)] = json.loads(item.value_json)
        (exit_record,) = by_type(recs, "exit")
        assert summary["status"] == record["status"]
        if record["status"] == "ok":
            history = [{i.key or ".".join(i.nested_key): json.loads(i.value_json) for i in h.item} for h in by_type(recs, "history")]
            assert [h["epoch"] for h in history] == [1, 2]
            assert summary["num_parameters"] == record["num_parameters"] and summary["objective"] == record["objective"]
            assert exit_record.exit_code == 0
        else:
            assert record["status"] == "failed" and exit_record.exit_code == 1


@pytest.mark.slow
def test_a_pack_of_trials_writes_one_wandb_run_per_trial(tmp_path):
    """Trials trained side by side in one process (sweep.pack) are W&B runs at the same time: each keeps its
    own config, history and summary (one run finishing another's would lose the first trial's epochs)."""
    cmd = [
        sys.executable, "-m", "lstm_odyssey.cli", "-m", "+sweep=quick", f"hydra.sweep.dir={tmp_path}", "logger=wandb",
        "hydra/launcher=basic", "cell=vanilla", "data.length=10", "sweep.n_trials=2", "sweep.pack=2",
        "sweep.report=false", "data.n_train=64", "data.n_val=32", "data.n_test=32", "trainer.epochs=2",
        "trainer.patience=null", "sweep.params.model.hidden_size.low=4", "sweep.params.model.hidden_size.high=8",
    ]
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = sorted(tmp_path.rglob("result.json"))
    assert len(results) == 2
    for path in results:
        record = json.loads(path.read_text())
        assert record["pack"]["width"] == 2 and record["status"] == "ok"
        (run_file,) = (path.parent / "wandb").glob("offline-run-*/run-*.wandb")
        recs = wandb_records(run_file)
        config = {item.key: json.loads(item.value_json) for item in by_type(recs, "run")[0].config.update}
        assert config["optim"]["lr"] == record["hparams"]["optim.lr"]
        history = [{i.key or ".".join(i.nested_key): json.loads(i.value_json) for i in h.item} for h in by_type(recs, "history")]
        assert [h["epoch"] for h in history] == [1, 2]
        assert [h["val_mse"] for h in history] == [e["val_mse"] for e in record["history"]]
        summary = {}
        for update in by_type(recs, "summary"):
            for item in update.update:
                summary[item.key or ".".join(item.nested_key)] = json.loads(item.value_json)
        assert summary["objective"] == record["objective"] and by_type(recs, "exit")[0].exit_code == 0


def test_logger_none_and_errors():
    assert isinstance(tracking.start({"logger": {"name": "none"}}, "unused"), tracking.NullTracker)
    with pytest.raises(ValueError, match="logger=none or logger=wandb"):
        tracking.start({"logger": {"name": "tensorboard"}}, "unused")


def test_a_wandb_failure_never_stops_the_run(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")

    def broken_init(**kwargs):
        raise RuntimeError("no W&B today")

    monkeypatch.setattr(wandb, "init", broken_init)
    cfg = {"logger": dataclasses.asdict(WandbLoggerConfig()), "cell": {"name": "vanilla"}, "data": {"name": "adding"}}
    tracker = tracking.start(cfg, tmp_path)
    assert isinstance(tracker, tracking.NullTracker)
    tracker.log({"x": 1.0}, step=1)
    tracker.finish({"status": "ok"})
