"""Reliability of long studies: locks, claims, kills, resumes, unsafe files, bad values, signals, storages.

Each numbered fault of issue 11 is reproduced here as a real user meets it (real sweeps and runs through
`python -m lstm_odyssey.cli`, real SIGKILL/SIGTERM), ending with a chaos test that kills a small sweep's main
process and workers at random points until it completes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import multiprocessing
import os
import pickle
import random
import re
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import optuna
import psutil
import pytest
import torch
from helpers import env, records, run_sweep, sweep_cmd, trials
from hydra.experimental.callback import Callback

from lstm_odyssey import train
from lstm_odyssey.config import load_config

ROOT = Path(__file__).resolve().parents[1]
TINY_RUN = ["data.length=10", "data.n_train=64", "data.n_val=32", "data.n_test=32", "model.hidden_size=4",
            "trainer.batch_size=32", "trainer.progress=false"]
LONG = ["trainer.epochs=6", "trainer.patience=null"]  # a few seconds per job: long enough to be killed midway
ATTEMPTS = ["+hydra.callbacks.attempts._target_=test_reliability.Attempts"]


def dead(pid: int) -> bool:
    """Gone or a zombie (an init that does not reap leaves killed orphans as zombies)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class Attempts(Callback):
    """Hydra callback: every start of a job appends {pid, whether it was ok already, which earlier attempts
    of it still run} to <job dir>/attempts.jsonl, so a test can tell whether a job was trained twice."""

    def on_job_start(self, config, **kwargs) -> None:
        run_dir = Path(config.hydra.runtime.output_dir)
        log = run_dir / "attempts.jsonl"
        earlier = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        record = run_dir / "result.json"
        ok_before = record.exists() and json.loads(record.read_text()).get("status") == "ok"
        entry = {"pid": os.getpid(), "ok_before": ok_before, "alive_before": [e["pid"] for e in earlier if not dead(e["pid"])]}
        with open(log, "a") as fh:
            fh.write(json.dumps(entry) + "\n")


class Gate(Callback):
    """Hydra callback: a job waits at its start until the file `open` exists in the sweep directory."""

    def on_job_start(self, config, **kwargs) -> None:
        run_dir = Path(config.hydra.runtime.output_dir)
        (run_dir / "at_gate").touch()
        gate = Path(config.hydra.sweep.dir) / "open"
        deadline = time.monotonic() + 120
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.05)


def attempts(sweep_dir: Path) -> dict[str, list[dict]]:
    return {str(p.parent.relative_to(sweep_dir)): [json.loads(line) for line in p.read_text().splitlines()]
            for p in sorted(sweep_dir.rglob("attempts.jsonl"))}


def wait_for(condition, what: str, timeout: float = 180.0, proc: subprocess.Popen | None = None):
    """Poll `condition()` until it returns something truthy (a condition, not a timing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the sweep ended ({proc.returncode}) before {what}:\n{output(proc)[-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def as_from_a_terminal() -> None:
    """In the child, before it runs: SIGINT and SIGTERM unblocked and at their defaults, as a shell starts a command
    (a child inherits an ignored or blocked signal, and a test runner's worker may have either)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def ctrl_c_at_its_default():
    """In this process: SIGINT unblocked and at Python's Ctrl-C handler, as in a program started from a terminal
    (a pytest-xdist worker has it otherwise); restored afterwards."""
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def start(sweep_dir: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(sweep_cmd(sweep_dir, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
                            preexec_fn=as_from_a_terminal)


def output(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=300)
    proc.out, proc.err = out, err  # type: ignore[attr-defined]
    return (out or "") + (err or "")


def checkpoints(sweep_dir: Path) -> list[Path]:
    return sorted(sweep_dir.rglob("checkpoints/last.pt"))


def loky_workers(pid: int) -> list[psutil.Process]:
    """The joblib workers of a sweep; none once the sweep (or a worker being listed) has already exited."""
    workers = []
    with contextlib.suppress(psutil.NoSuchProcess):
        for child in psutil.Process(pid).children():
            with contextlib.suppress(psutil.NoSuchProcess):
                if "popen_loky_posix" in " ".join(child.cmdline()):
                    workers.append(child)
    return workers


def assert_one_ok_record_per_job(sweep_dir: Path, n_jobs: int) -> list[dict]:
    recs = records(sweep_dir)
    assert len(recs) == n_jobs, [r["_path"] for r in recs]
    assert all(r["status"] == "ok" for r in recs), [(r["_path"], r["status"], r.get("error")) for r in recs]
    for r in recs:  # every epoch trained exactly once, across resumes
        assert [h["epoch"] for h in r["history"]] == list(range(1, r["epochs_run"] + 1))
    return recs


def assert_study_matches_records(sweep_dir: Path, storage_trials: dict | None = None) -> None:
    """The latest trial of every (grid point, k) is COMPLETE with the record's objective; nothing else runs."""
    recs = {(r["cell"], r["trial"]): r for r in records(sweep_dir)}
    for name, ts in (storage_trials or trials(sweep_dir)).items():
        cell = name.split("/")[2].split("@")[0]
        assert not [t for t in ts if t.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)], name
        latest = {}
        for t in ts:
            latest[t.user_attrs["k"]] = t
        for k, t in latest.items():
            assert t.state == optuna.trial.TrialState.COMPLETE and t.value == recs[(cell, k)]["objective"]


# ------------------------------------------------------------------------------ 1. locks and claims


def _hold_then_wait(path: str, results, release) -> None:
    from lstm_odyssey.locks import Held, acquire

    held = acquire(path, "test lock")
    results.put(isinstance(held, Held))
    release.wait(60)


@pytest.mark.slow
def test_lock_refuses_live_holders_and_takes_over_stale_ones(tmp_path, caplog):
    from lstm_odyssey.locks import Held, Holder, acquire

    path = tmp_path / ".sweep.lock"
    mine = acquire(path, "sweep lock")
    assert isinstance(mine, Held)
    again = acquire(path, "sweep lock")  # a live holder (this very process) keeps it
    assert isinstance(again, Holder) and again.pid == os.getpid() and again.token == mine.holder.token

    gone = subprocess.Popen(["true"])
    gone.wait()
    now = time.time()
    stale = {
        "dead PID on this host": Holder(socket.gethostname(), gone.pid, now, now),
        "other host, old heartbeat": Holder("elsewhere.example", os.getpid(), now - 3600, now - 3600),
    }
    for why, holder in stale.items():
        path.write_text(json.dumps(holder.__dict__))
        taken = acquire(path, "sweep lock")
        assert isinstance(taken, Held) and taken.holder.pid == os.getpid(), why
        assert json.loads(path.read_text())["token"] == taken.holder.token
    assert "taking over the stale sweep lock" in caplog.text
    fresh = Holder("elsewhere.example", 1, now, now)  # another host, heartbeat fresh: cannot be checked, so kept
    path.write_text(json.dumps(fresh.__dict__))
    assert isinstance(acquire(path, "sweep lock"), Holder)
    assert taken.beat() is False  # the file changed hands: the heartbeat says so instead of clobbering it

    # four processes taking over one stale lock at once: exactly one wins
    path.write_text(json.dumps(stale["dead PID on this host"].__dict__))
    ctx = multiprocessing.get_context("spawn")
    results, release = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_hold_then_wait, args=(str(path), results, release)) for _ in range(4)]
    for p in procs:
        p.start()
    won = [results.get(timeout=120) for _ in procs]
    release.set()
    for p in procs:
        p.join(60)
    assert sorted(won) == [False, False, False, True]


@pytest.mark.slow
def test_second_sweep_on_a_locked_directory_is_refused_and_nothing_trains_twice(tmp_path):
    args = ["cell=vanilla,gru", "sweep.n_trials=1", "hydra/launcher=basic", *ATTEMPTS,
            "+hydra.callbacks.gate._target_=test_reliability.Gate"]
    first = start(tmp_path, *args)
    try:
        wait_for(lambda: list(tmp_path.rglob("at_gate")), "the first job to start", proc=first)
        second = start(tmp_path, *args)
        try:
            second.wait(timeout=120)
        except subprocess.TimeoutExpired:  # it runs alongside instead of being refused
            pass
        (tmp_path / "open").touch()
        text = output(second)
        assert second.returncode == 1, text[-3000:]
        assert f"is in use by another sweep (PID {first.pid} on {socket.gethostname()}" in second.err
        assert len(second.err.strip().splitlines()) == 1 and "Traceback" not in second.err
        assert first.wait(timeout=300) == 0, output(first)[-3000:]
    finally:
        (tmp_path / "open").touch()
        for proc in (first,):
            if proc.poll() is None:
                proc.kill()
    assert_one_ok_record_per_job(tmp_path, 2)
    assert {k: len(v) for k, v in attempts(tmp_path).items()} == {k: 1 for k in attempts(tmp_path)}
    assert not (tmp_path / ".sweep.lock").exists()  # released at the end


@pytest.mark.slow
def test_cooperating_sweeps_share_a_directory_without_training_a_job_twice(tmp_path):
    args = ["cell=vanilla,gru", "sweep.n_trials=2", "hydra/launcher=basic", "sweep.cooperate=true", *ATTEMPTS]
    procs = [start(tmp_path, *args), start(tmp_path, *args)]
    texts = [output(p) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], texts
    assert_one_ok_record_per_job(tmp_path, 4)
    runs = attempts(tmp_path)
    assert len(runs) == 4 and all(len(v) == 1 for v in runs.values()), runs
    assert_study_matches_records(tmp_path)


@pytest.mark.slow
def test_sigkill_of_the_sweep_kills_its_workers_and_an_immediate_rerun_finishes(tmp_path):
    args = ["cell=vanilla,gru", "sweep.n_trials=1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *LONG, *ATTEMPTS]
    first = start(tmp_path, *args)
    wait_for(lambda: len(checkpoints(tmp_path)) >= 1, "a job to write a checkpoint", proc=first)
    workers = loky_workers(first.pid)
    assert workers
    first.kill()
    first.wait()
    gone, alive = psutil.wait_procs(workers, timeout=15)
    alive = [p for p in alive if not dead(p.pid)]
    assert not alive, f"orphaned workers still running: {alive}"
    run_sweep(tmp_path, *args)  # at once: nothing of the killed sweep may still train
    assert_one_ok_record_per_job(tmp_path, 2)
    for job, runs in attempts(tmp_path).items():
        assert all(not r["alive_before"] and not r["ok_before"] for r in runs), (job, runs)
    assert_study_matches_records(tmp_path)


@pytest.mark.slow
def test_sigkill_of_the_sweep_ends_its_idle_workers_within_a_second(tmp_path):
    """An idle pool worker (its job done, the other still training) dies with its sweep as a busy one does: no
    process of a SIGKILLed sweep is alive a second later (each worker asks the kernel for SIGKILL when its parent
    dies, sweep/worker.py: die_with_parent), so nothing holds the sweep's pipes open or lingers until loky's
    idle timeout."""
    args = ["cell=vanilla", "sweep.n_trials=1", "trainer.epochs=2,2000", "trainer.patience=null", "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2", *ATTEMPTS]
    sweep = start(tmp_path, *args)
    wait_for(lambda: len(records(tmp_path)) == 1 and checkpoints(tmp_path), "one job done, the other training",
             proc=sweep)
    workers = loky_workers(sweep.pid)
    assert len(workers) == 2, workers  # the finished job's worker idles beside the training one
    sweep.kill()
    sweep.wait()
    gone, alive = psutil.wait_procs(workers, timeout=1.0)
    alive = [p for p in alive if not dead(p.pid)]
    assert not alive, f"workers still running a second after the sweep's SIGKILL: {alive}"


# ------------------------------------------------------------------------------ 2. a killed worker


@pytest.mark.slow
def test_a_killed_worker_fails_its_job_only_and_the_rerun_resumes_it(tmp_path):
    # a batch of two, one worker killed midway: the other job ends ok; the killed one is resumed in the same
    # sweep (when the other was unfinished too, the batch runs again) or recorded as killed and resumed next
    # (both mid-run when the worker dies: killing the idle worker of a finished job would break the pool
    # under the other job, a different case, so the jobs train long enough to be caught both running)
    longer = ["trainer.epochs=400", "trainer.patience=null"]  # a few ms per epoch: seconds of training
    args = ["cell=vanilla,gru", "sweep.n_trials=1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *longer, *ATTEMPTS]
    sweep = start(tmp_path, *args)
    wait_for(lambda: len(checkpoints(tmp_path)) == 2 and not records(tmp_path), "both jobs to be training", proc=sweep)
    victim, runs = next(iter(attempts(tmp_path).items()))
    os.kill(runs[0]["pid"], signal.SIGKILL)
    output(sweep)
    status = {str(r["_path"].parent.relative_to(tmp_path)): r for r in records(tmp_path)}
    assert len(status) == 2 and all(r["status"] == "ok" for job, r in status.items() if job != victim)
    assert status[victim]["status"] == "ok" or "without writing a record" in status[victim]["error"]
    assert run_sweep(tmp_path, *args).returncode == 0
    recs = {str(r["_path"].parent.relative_to(tmp_path)): r for r in assert_one_ok_record_per_job(tmp_path, 2)}
    assert recs[victim]["resumed_from_epoch"] >= 1  # from its checkpoint, not from scratch
    assert_study_matches_records(tmp_path)

    # a job alone in its batch whose worker is killed: failed (killed), and the rerun resumes it and exits 0
    alone = tmp_path / "alone"
    args = ["cell=vanilla", "sweep.n_trials=1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *longer, *ATTEMPTS]
    sweep = start(alone, *args)
    wait_for(lambda: checkpoints(alone) and not records(alone), "the job to be training", proc=sweep)
    os.kill(next(iter(attempts(alone).values()))[0]["pid"], signal.SIGKILL)
    output(sweep)
    (rec,) = records(alone)
    assert rec["status"] == "failed" and "without writing a record" in rec["error"]
    proc = run_sweep(alone, *args)
    assert proc.returncode == 0
    (rec,) = assert_one_ok_record_per_job(alone, 1)
    assert rec["resumed_from_epoch"] >= 1
    assert_study_matches_records(alone)


@pytest.mark.slow
def test_a_job_that_kills_its_worker_fails_alone(tmp_path):
    proc = run_sweep(
        tmp_path, "cell=vanilla", "sweep.n_trials=1", "~sweep.params", "data.length=10,3", "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2", "+hydra.callbacks.kill._target_=helpers.KillJob", "+hydra.callbacks.kill.length=3",
    )
    status = {r["_path"].parent.parent.name: r for r in records(tmp_path)}
    assert status["data.length-10"]["status"] == "ok"
    assert status["data.length-3"]["status"] == "failed" and "without writing a record" in status["data.length-3"]["error"]
    assert "2 jobs: ok 1, diverged 0, failed 1" in proc.stdout


# ------------------------------------------------------------------------------ 3. unsafe files


class CreatesFile:
    """Unpickling this creates a file: what a crafted checkpoint or data file could do."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path):
    cfg = load_config([*TINY_RUN, "trainer.epochs=1"])
    train.run(cfg, tmp_path / "run")
    marker = tmp_path / "pwned"
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    ckpt["model"] = CreatesFile(marker)
    torch.save(ckpt, last)
    cfg["trainer"].update(resume=True, epochs=2)
    with pytest.raises(Exception) as err:
        train.run(cfg, tmp_path / "run")
    assert not marker.exists()
    assert type(err.value).__name__ == "CheckpointError"
    message = str(err.value)
    assert "\n" not in message and re.search(r"refers to (io|builtins)\.open", message) and "could run code" in message
    record = json.loads((tmp_path / "run" / "result.json").read_text())
    assert record["status"] == "failed" and message in record["error"]


def _crafted_npz(path: Path, marker: Path) -> str:
    """An npz in imdb.npz's layout whose x_train unpickles into a file creation."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|O", "fortran_order": False, "shape": (1,)})
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x_train.npy", header.getvalue() + pickle.dumps(CreatesFile(marker)))
        for name, array in {"y_train": np.zeros(1, np.int64), "y_test": np.zeros(1, np.int64)}.items():
            buf = io.BytesIO()
            np.save(buf, array)
            archive.writestr(f"{name}.npy", buf.getvalue())
        buf = io.BytesIO()
        objects = np.empty(1, dtype=object)
        objects[0] = [1, 2, 3]
        np.save(buf, objects, allow_pickle=True)
        archive.writestr("x_test.npy", buf.getvalue())
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("checked", [True, False], ids=["sha256-matches", "sha256-null"])
def test_a_crafted_imdb_file_is_refused_and_runs_nothing(tmp_path, monkeypatch, checked):
    from lstm_odyssey.data import build_task

    monkeypatch.setenv("LSTM_ODYSSEY_CACHE", str(tmp_path / "cache"))
    marker = tmp_path / "pwned"
    (tmp_path / "imdb").mkdir()
    sha = _crafted_npz(tmp_path / "imdb" / "imdb.npz", marker)
    with pytest.raises(ValueError, match=r"refers to (io|builtins)\.open") as err:
        build_task("imdb", root=str(tmp_path), sha256=sha if checked else None)
    assert not marker.exists() and "\n" not in str(err.value)


# ------------------------------------------------------------------------------ 4. resume with other hyperparameters


def test_resume_with_changed_hyperparameters_is_refused(tmp_path):
    cfg = load_config([*TINY_RUN, "trainer.epochs=1", "optim.lr=0.001"])
    train.run(cfg, tmp_path)
    changed = load_config([*TINY_RUN, "trainer.epochs=2", "optim.lr=0.05", "trainer.resume=true"])
    with pytest.raises(Exception) as err:  # trained on with the old optimizer state, recorded as lr 0.05
        train.run(changed, tmp_path)
    assert type(err.value).__name__ == "CheckpointError"
    message = str(err.value)
    assert "\n" not in message and "optim.lr 0.001 -> 0.05" in message and "trainer.resume=true" in message
    assert "trainer.epochs" not in message  # a longer budget is no other hyperparameter
    bigger = load_config([*TINY_RUN, "trainer.epochs=2", "model.hidden_size=6", "trainer.resume=true"])
    with pytest.raises(Exception) as err:  # a multi-line size-mismatch traceback
        train.run(bigger, tmp_path)
    assert "\n" not in str(err.value) and "model.hidden_size 4 -> 6" in str(err.value)
    longer = train.run(load_config([*TINY_RUN, "trainer.epochs=2", "trainer.resume=true"]), tmp_path)
    assert longer["status"] == "ok" and longer["resumed_from_epoch"] == 1 and longer["epochs_run"] == 2


# ------------------------------------------------------------------------------ 5. failures before training


@pytest.mark.slow
def test_a_failure_before_training_is_recorded_with_its_real_error(tmp_path):
    proc = run_sweep(tmp_path, "cell=gru", "cell.peepholes=true", "sweep.n_trials=2", "hydra/launcher=basic", ok=False)
    recs = records(tmp_path)
    assert len(recs) == 2 and all(r["status"] == "failed" for r in recs)
    assert all("ValueError: impossible cell gru[peepholes=True]" in r["error"] for r in recs), [r["error"] for r in recs]
    assert "every job of study quick failed" in proc.stderr and "Traceback" not in proc.stderr

    single = subprocess.run([sys.executable, "-m", "lstm_odyssey.cli", f"paths.root={tmp_path / 'single'}", *TINY_RUN,
                             "cell=gru", "cell.peepholes=true"], capture_output=True, text=True, env=env(), timeout=300)
    assert single.returncode == 1
    (record,) = (tmp_path / "single").rglob("result.json")
    assert "run failed: ValueError: impossible cell gru[peepholes=True]" in single.stdout
    assert f"(record in {record})" in single.stdout and "Traceback" not in single.stdout + single.stderr


# ------------------------------------------------------------------------------ 6. bad values

CATALOGUE = {  # override -> the one line printed
    "trainer.epochs=0": "trainer.epochs=0 is not allowed: must be an integer >= 1",
    "trainer.patience=-1": "trainer.patience=-1 is not allowed: must be null (never stop early) or an integer >= 1",
    "model.hidden_size=abc": "model.hidden_size=abc is not allowed: must be an integer >= 1",
    "optim.lr=abc": "optim.lr=abc is not allowed: must be a number >= 0",
    "trainer.batch_size=0": "trainer.batch_size=0 is not allowed: must be an integer >= 1",
    "+trainer.foo=1": "trainer.foo is not a key of trainer; known keys: batch_size, clip, deterministic, device, "
                      "epochs, eval_batch_size, input_noise, max_minutes, min_improvement, patience, progress, resume, seed",
    "+optim.foo=1": "optim.foo is not a key of optim (adam); known keys: betas, lr, name, weight_decay",
    "+model.foo=1": "model.foo is not a key of model; known keys: backend, bidirectional, dropout, embedding_dim, "
                    "encoder, forget_bias, hidden_size, init, num_layers, output_dropout, peephole_init",
    "+cell.foo=1": 'cell.foo is not a key of cell; known keys: coupled, coupling_shift, exponential_gates, family, forget_gate, full_gate_recurrence, heads, input_activation, input_gate, label, name, normalized_gates, output_activation, output_gate, peepholes, preset, recurrence, reset',
    "+data.foo=1": "data.foo is not a key of data (adding); known keys: form, length, n_test, n_train, n_val, name, "
                   "seed, tolerance",
    "+logger.foo=1": "logger.foo is not a key of logger (none); known keys: name",
    "+paths.foo=1": "paths.foo is not a key of paths; known keys: root",
    "trainer.foo=1": "trainer.foo is not a key of trainer; known keys: batch_size, clip, deterministic, device, "
                     "epochs, eval_batch_size, input_noise, max_minutes, min_improvement, patience, progress, resume, seed",
}


@pytest.mark.slow
@pytest.mark.parametrize("override", list(CATALOGUE))
def test_each_bad_value_or_key_gives_one_line(tmp_path, override):
    proc = subprocess.run([sys.executable, "-m", "lstm_odyssey.cli", f"paths.root={tmp_path}", override],
                          capture_output=True, text=True, env=env(), timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [CATALOGUE[override]], proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not list(tmp_path.rglob("result.json"))  # refused before anything ran


@pytest.mark.slow
def test_a_sweep_refuses_bad_values_before_any_job(tmp_path):
    proc = run_sweep(tmp_path, "trainer.epochs=0", "cell=vanilla,gru", ok=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "grid point adding/vanilla: trainer.epochs=0 is not allowed: must be an integer >= 1"]
    proc = run_sweep(tmp_path, "+sweep.n_trails=3", ok=False)
    assert proc.returncode == 1 and proc.stderr.startswith("sweep.n_trails is not a key of sweep; known keys:")
    assert not list(tmp_path.rglob("result.json"))


def test_validate_checks_every_group_in_one_place():
    from lstm_odyssey.schema import validate
    from lstm_odyssey.settings import ConfigError

    good = load_config([])
    validate(good)
    validate(load_config(["optim=sgd", "+experiment=imdb_keras"]))
    cases = {
        ("optim", "betas"): ([0.9], "optim.betas=[0.9] is not allowed: must be two numbers in [0, 1)"),
        ("model", "dropout"): (1.0, "model.dropout=1 is not allowed: must be a number in [0, 1)"),
        ("model", "output_dropout"): (-0.1, "model.output_dropout=-0.1 is not allowed: must be a number in [0, 1)"),
        ("trainer", "clip"): (0, "trainer.clip=0 is not allowed: must be null (no clipping) or a number > 0"),
        ("trainer", "progress"): ("sometimes", "trainer.progress=sometimes is not allowed: must be one of auto, true, false"),
        ("data", "n_train"): ("many", "data.n_train=many is not allowed: must be an integer"),
        ("optim", "name"): ("rmsprop", "optim.name=rmsprop is not allowed: must be one of adam, sgd"),
    }
    for (group, key), (value, message) in cases.items():
        cfg = json.loads(json.dumps(good))
        cfg[group][key] = value
        with pytest.raises(ConfigError) as err:
            validate(cfg)
        assert str(err.value) == message


# ------------------------------------------------------------------------------ 7. signals, permissions, CI


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_an_interrupted_sweep_prints_one_line_and_resumes(tmp_path, sig, code):
    args = ["cell=vanilla,gru", "sweep.n_trials=1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *LONG]
    sweep = start(tmp_path, *args)
    wait_for(lambda: checkpoints(tmp_path), "a checkpoint", proc=sweep)
    workers = loky_workers(sweep.pid)
    sweep.send_signal(sig)
    output(sweep)
    assert sweep.returncode == code
    assert sweep.err.strip().splitlines()[-1] == "interrupted; rerun the same command to resume"
    assert "Traceback" not in sweep.err and "KeyboardInterrupt" not in sweep.err
    _, alive = psutil.wait_procs(workers, timeout=15)
    assert not [p for p in alive if not dead(p.pid)]
    run_sweep(tmp_path, *args)
    assert_one_ok_record_per_job(tmp_path, 2)
    assert_study_matches_records(tmp_path)


@pytest.mark.slow
def test_an_interrupted_single_run_says_how_to_resume(tmp_path):
    endless = ["trainer.epochs=100000", "trainer.patience=null"]  # still training when the signal comes
    run = subprocess.Popen([sys.executable, "-m", "lstm_odyssey.cli", f"paths.root={tmp_path}", *TINY_RUN, *endless],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    wait_for(lambda: checkpoints(tmp_path), "a checkpoint", proc=run)
    run.send_signal(signal.SIGTERM)
    output(run)
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run.returncode == 143 and "Traceback" not in run.err
    assert run.err.strip().splitlines() == [
        f"interrupted; resume with the same command plus trainer.resume=true hydra.run.dir={run_dir}"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_an_interrupt_that_a_library_turns_into_another_error_is_still_an_interrupt(tmp_path, monkeypatch, sig,
                                                                                      ctrl_c_at_its_default):
    """torch's C++ core may wrap what a Python callback raised: the run is interrupted, not failed."""
    from lstm_odyssey.engine import Engine
    from lstm_odyssey.signals import Interrupted, interrupts

    def epoch_hit_by_a_signal_inside_a_callback(*args, **kwargs):
        try:
            signal.raise_signal(sig)
        except KeyboardInterrupt as err:
            raise RuntimeError("a callback raised") from err

    monkeypatch.setattr(Engine, "train_epoch", epoch_hit_by_a_signal_inside_a_callback)
    with interrupts(), pytest.raises(Interrupted) as err:
        train.run(load_config([*TINY_RUN, "trainer.epochs=1"]), tmp_path)
    assert err.value.signum == sig and isinstance(err.value.__cause__, RuntimeError)
    assert not (tmp_path / "result.json").exists()  # no failed record: a rerun resumes the run
    monkeypatch.undo()
    with interrupts():  # a new block starts with no signal received
        assert train.run(load_config([*TINY_RUN, "trainer.epochs=1"]), tmp_path)["status"] == "ok"


def test_ctrl_c_is_remembered_and_exits_130_and_an_ignored_one_stays_ignored(ctrl_c_at_its_default):
    """SIGINT goes through the same handler as SIGTERM (so `received` knows of it) where Python's Ctrl-C handler
    had it; a process started with SIGINT ignored (a shell script's background job) keeps ignoring it."""
    from lstm_odyssey.signals import Interrupted, exit_code, interrupts, received

    with interrupts():
        with pytest.raises(Interrupted) as err:
            signal.raise_signal(signal.SIGINT)
        assert received() == signal.SIGINT and exit_code(err.value) == 130
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored after the block
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interrupts():
            signal.raise_signal(signal.SIGINT)  # ignored: nothing is raised
            assert received() is None
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_signal_is_forgotten_when_the_outermost_block_ends(tmp_path, ctrl_c_at_its_default):
    """An enclosing block (the command line's, around the sweep's) still sees a signal an inner block received; once
    the outermost block ends, a later ordinary error in the same process (a notebook, a test worker) is an error,
    not an interrupt. CI once failed a bad-config test because a signal test had run before it in that worker."""
    from lstm_odyssey.signals import Interrupted, interrupts, received, reraise_if_interrupted

    with interrupts():
        with pytest.raises(Interrupted), interrupts():
            signal.raise_signal(signal.SIGTERM)
        assert received() == signal.SIGTERM
        with pytest.raises(Interrupted):
            reraise_if_interrupted(ValueError("a library's wrapper"))
    assert received() is None
    reraise_if_interrupted(ValueError("an ordinary error"))  # raises nothing
    with pytest.raises(ValueError, match="peephole"):
        train.run(load_config([*TINY_RUN, "cell.peepholes=maybe"]), tmp_path)


def test_an_interrupt_that_the_launcher_turns_into_another_error_stops_the_sweep(tmp_path, ctrl_c_at_its_default):
    """A signal that reaches the sweep inside the launcher, where a library (joblib's pickler, submitit) wraps the
    KeyboardInterrupt in an error of its own, stops the sweep; it used to count as a broken batch, whose jobs the
    sweep then ran again one at a time, and the sweep ended 0 as if never interrupted."""
    from types import SimpleNamespace

    from lstm_odyssey.signals import Interrupted, interrupts
    from lstm_odyssey.sweep.jobs import Job
    from lstm_odyssey.sweep.sweeper import StudySweeper

    def launch_hit_by_sigint(overrides, initial_job_idx):
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt as err:
            raise RuntimeError("the pickler raised") from err

    sweeper = StudySweeper()
    sweeper.launcher = SimpleNamespace(launch=launch_hit_by_sigint)
    sweeper.progress = SimpleNamespace(in_flight=[])
    sweeper.job_idx = 0
    job = Job(point=(("cell", "vanilla"),), k=0, study=None, subdir="vanilla/000")
    with interrupts(), pytest.raises(Interrupted) as err:
        sweeper._launch_once([job], tmp_path)
    assert err.value.signum == signal.SIGINT and isinstance(err.value.__cause__, RuntimeError)


def test_records_and_checkpoints_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        train.run(load_config([*TINY_RUN, "trainer.epochs=1"]), tmp_path)
    finally:
        os.umask(old)
    for path in (tmp_path / "result.json", tmp_path / "checkpoints" / "last.pt"):
        assert path.stat().st_mode & 0o777 == 0o644, path


def test_ci_run_removes_its_virtual_environment(tmp_path):
    """.ci/run with stand-ins for python3, pip, ruff and pytest: what it made in $TMPDIR is gone afterwards."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "python3"
    stub.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = -m ] && [ "$2" = venv ]; then mkdir -p "$3/bin"; head -c 1000000 /dev/zero > "$3/bin/big";\n'
        f'  printf \'export PATH="{bin_dir}:$PATH"\\n\' > "$3/bin/activate"; exit 0; fi\n'
        "exit 0\n"
    )
    for name in ("pip", "ruff", "python"):
        (bin_dir / name).write_text("#!/bin/sh\nexit 0\n")
    for path in bin_dir.iterdir():
        path.chmod(0o755)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = subprocess.run([str(ROOT / ".ci" / "run")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "TMPDIR": str(scratch),
                               "LSTM_ODYSSEY_CI_SLURM": "0"})  # no cluster to install or start from a unit test
    assert proc.returncode == 0, proc.stderr
    assert list(scratch.iterdir()) == []


# ------------------------------------------------------------------------------ 8. storages


def test_the_storage_is_a_journal_file_for_slurm_and_sqlite_locally(tmp_path):
    from optuna.storages import JournalStorage

    from lstm_odyssey.cli import register
    from lstm_odyssey.sweep.trials import study_storage

    register()
    from hydra import compose, initialize_config_module

    with initialize_config_module("lstm_odyssey.conf", version_base="1.3"):
        slurm = compose("train", overrides=["+sweep=quick", "hydra/launcher=slurm"], return_hydra_config=True)
        local = compose("train", overrides=["+sweep=quick"], return_hydra_config=True)
    assert isinstance(study_storage(None, slurm.hydra.launcher, tmp_path), JournalStorage)
    assert study_storage(None, local.hydra.launcher, tmp_path).url == f"sqlite:///{(tmp_path / 'optuna.db').resolve()}"
    assert study_storage("postgresql://db/x", slurm.hydra.launcher, tmp_path) == "postgresql://db/x"


def test_a_resumed_tpe_study_does_not_ask_again_for_a_trial_it_has_run(tmp_path):
    """A resumed sweep opens the study with a fresh TPE sampler. Seeded once per sweep, it would replay the first
    session's draws, and trial 1 would get trial 0's parameters again (the dropout tuned study did, and trained
    it twice). Seeded per trial index k, a resume asks what an uninterrupted sweep asks."""
    from lstm_odyssey.sweep.space import make_param
    from lstm_odyssey.sweep.trials import ask, open_study, study_storage

    space = [make_param("optim.lr", {"type": "loguniform", "low": 1e-4, "high": 1e-2}),
             make_param("model.hidden_size", {"type": "int", "low": 16, "high": 256})]
    cfg = {"sampler": "tpe", "seed": 0}

    def run(where: Path, resume_after: int | None) -> list[dict]:
        where.mkdir()
        storage = study_storage("sqlite", None, where)
        study = open_study("s/cell=cifg", "cell=cifg", storage, cfg, exclusive=True)
        asked = []
        for k in range(3):
            if k == resume_after:  # a new session: the study and its sampler are opened afresh
                study = open_study("s/cell=cifg", "cell=cifg", study_storage("sqlite", None, where), cfg, exclusive=True)
            trial = ask(study, space, cfg, "cell=cifg", k)
            study.tell(trial.number, float(k))
            asked.append(trial.params)
        return asked

    straight, resumed = run(tmp_path / "a", None), run(tmp_path / "b", 1)
    assert resumed[1] != resumed[0]
    assert resumed == straight  # a resume changes nothing the sampler draws


def _open_storages(dirs: list[str], barrier, results) -> None:
    """One of several processes opening each fresh sweep directory's SQLite storage at the same moment."""
    from lstm_odyssey.sweep.trials import open_study, study_storage

    for d in dirs:
        barrier.wait(timeout=120)
        try:
            open_study("study/cell=vanilla", "cell=vanilla", study_storage("sqlite", None, Path(d)), {}, exclusive=False)
            results.put("ok")
        except Exception as error:  # noqa: BLE001 - the test reports what went wrong
            results.put(f"{type(error).__name__}: {error}"[:300])


@pytest.mark.slow
def test_sweeps_starting_together_on_a_fresh_sqlite_storage_all_open_it(tmp_path):
    # Without the lock around making the tables, about one round in three loses a process to an
    # IntegrityError or OperationalError (two processes creating the same tables).
    dirs = [str(tmp_path / f"round{i}") for i in range(8)]
    for d in dirs:
        Path(d).mkdir()
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_open_storages, args=(dirs, barrier, results)) for _ in range(4)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=300) for _ in range(4 * len(dirs))]
    for p in procs:
        p.join(60)
    assert outcomes == ["ok"] * len(outcomes), [o for o in outcomes if o != "ok"]
    for d in dirs:  # one study per directory, made once
        assert [s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{d}/optuna.db")] == ["study/cell=vanilla"]


@pytest.mark.slow
def test_a_sweep_on_the_journal_storage_completes_and_reloads(tmp_path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    args = ["cell=vanilla,gru", "sweep.n_trials=2", "hydra/launcher=basic", "sweep.storage=journal"]
    run_sweep(tmp_path, *args)
    assert (tmp_path / "optuna.journal").exists() and not (tmp_path / "optuna.db").exists()
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "optuna.journal")))
    studies = {s.study_name: optuna.load_study(study_name=s.study_name, storage=storage).get_trials()
               for s in optuna.get_all_study_summaries(storage)}
    assert len(studies) == 2 and all(len(ts) == 2 for ts in studies.values())
    assert_study_matches_records(tmp_path, studies)
    again = run_sweep(tmp_path, *args)
    assert "(0 ran now, 4 done before)" in again.stdout


# ------------------------------------------------------------------------------ issue 13.4: a study you can watch


def test_the_progress_line_tells_running_jobs_from_queued_ones(tmp_path):
    """Of a launched batch, a job with a record has ended, one whose running marker a live process holds is
    running, and the rest wait (for a pool worker, or in a SLURM queue): 60 jobs handed to one worker are not
    "60 running"."""
    from lstm_odyssey import jobstate
    from lstm_odyssey.sweep.progress import Progress

    ended, training, waiting = (tmp_path / name for name in ("ended", "training", "waiting"))
    for run_dir in (ended, training, waiting):
        run_dir.mkdir()
    (ended / "result.json").write_text(json.dumps({"status": "ok"}))
    held = jobstate.hold_running(training)
    assert isinstance(held, jobstate.Held)
    progress = Progress("quick", 5, stream=io.StringIO(), read=jobstate.record,
                        is_running=lambda run_dir: jobstate.running_elsewhere(run_dir) is not None)
    progress.in_flight = [ended, training, waiting]
    assert progress.line().startswith("[sweep] quick: 1/5 jobs done (ok 1, diverged 0, failed 0), 1 running, 1 queued, ")
    held.release()
    assert ", 2 queued, " in progress.line() and " running" not in progress.line()


@pytest.mark.slow
def test_the_progress_line_counts_the_jobs(tmp_path):
    # not a terminal: a plain line after each launch, counting right
    proc = run_sweep(tmp_path / "pipe", "cell=vanilla,gru,rnn", "sweep.n_trials=1", "hydra/launcher=basic",
                     "data.length=1,10")
    lines = [line for line in proc.stdout.splitlines() if re.match(r"\[sweep\] quick: \d+/6 jobs done", line)]
    done = [int(re.search(r"(\d+)/6", line).group(1)) for line in lines]
    assert sorted(set(done)) == [1, 2, 3, 4, 5, 6] and done == sorted(done)  # a line per launch (and per minute)
    assert lines[-1].startswith("[sweep] quick: 6/6 jobs done (ok 3, diverged 0, failed 3)")
    assert " - epoch " not in proc.stdout  # per-epoch lines stay in each job's log file
    logs = list((tmp_path / "pipe").rglob("*.log"))
    assert logs and any(" - epoch 1 " in p.read_text() for p in logs)

    # a terminal: one line redrawn in place, ending with every job counted
    import pty

    master, slave = pty.openpty()
    sweep = subprocess.Popen(sweep_cmd(tmp_path / "tty", "cell=vanilla,gru", "sweep.n_trials=2", "hydra/launcher=joblib",
                                       "hydra.launcher.n_jobs=2"), stdout=slave, stderr=slave, env=env())
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the other end closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert sweep.wait(timeout=300) == 0
    text = b"".join(chunks).decode(errors="replace")
    redrawn = [part.strip() for part in text.split("\r\x1b[2K")[1:]]
    assert redrawn and redrawn[-1].splitlines()[0].startswith("[sweep] quick: 4/4 jobs done (ok 4, diverged 0, failed 0)")
    assert "Joblib.Parallel" not in text and " - epoch " not in text and " - record: " not in text


# ------------------------------------------------------------------------------ chaos


@pytest.mark.slow
def test_chaos_random_kills_of_the_sweep_and_its_workers_until_it_completes(tmp_path):
    """SIGKILL the main process or a worker at random moments, restart at once, until the sweep completes:
    one ok record per job, the Optuna study agrees with the records, no job trained again once ok, no two
    attempts of a job at once."""
    rng = random.Random(11)
    args = ["cell=vanilla,gru", "sweep.n_trials=2", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
            "trainer.epochs=100", "trainer.patience=null", *ATTEMPTS]  # jobs that outlast the planned kills
    # (whom, when): early = at a random moment of the sweep's start; in a job = at a random moment once a job runs
    plan = [(rng.choice(["main", "worker"]), rng.choice(["early", "in a job", "in a job"])) for _ in range(6)]
    kills = {"main": 0, "worker": 0}
    starts = 0
    started = time.monotonic()
    def running_job() -> bool:
        markers = [json.loads(p.read_text()) for p in tmp_path.rglob(".running")]
        return any(not dead(m["pid"]) for m in markers)

    while True:
        sweep = start(tmp_path, *args)
        starts += 1
        while plan and sweep.poll() is None:  # a worker's death leaves the sweep running: kill again
            whom, when = plan.pop()
            if when == "in a job":
                with contextlib.suppress(AssertionError):  # the sweep may end first
                    wait_for(running_job, "a running job", timeout=120, proc=sweep)
            time.sleep(rng.uniform(0.0, 2.0) if when == "in a job" else rng.uniform(1.0, 6.0))
            if sweep.poll() is not None:  # it ended (and was reaped) while we waited: nothing to kill
                break
            victims = [psutil.Process(sweep.pid)] if whom == "main" else loky_workers(sweep.pid)
            if victims:
                with contextlib.suppress(psutil.NoSuchProcess):  # the victim may exit on its own first
                    rng.choice(victims).kill()
                    kills[whom] += 1
            if whom == "main":
                break
        output(sweep)
        if sweep.returncode == 0 and len([r for r in records(tmp_path) if r["status"] == "ok"]) == 4:
            break
        assert starts < 20, f"not done after {starts} starts: {sweep.err[-2000:]}"
    recs = assert_one_ok_record_per_job(tmp_path, 4)
    assert_study_matches_records(tmp_path)
    runs = attempts(tmp_path)
    duplicates = sum(r["ok_before"] for v in runs.values() for r in v)
    concurrent = sum(bool(r["alive_before"]) for v in runs.values() for r in v)
    print(f"chaos: kills {kills}, restarts {starts - 1}, jobs {len(runs)}, ok records {len(recs)}, "
          f"attempts {sum(len(v) for v in runs.values())}, duplicates {duplicates}, concurrent {concurrent}, "
          f"{time.monotonic() - started:.0f} s")
    assert sum(kills.values()) >= 3 and duplicates == 0 and concurrent == 0
