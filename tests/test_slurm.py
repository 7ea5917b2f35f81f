"""Studies on a real SLURM cluster: the one-node cluster `.ci/slurm-local.sh` starts from Debian's packages (CI runs
it before the tests). Without a cluster that answers `sinfo` these tests skip with the reason."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def cluster() -> str | None:
    """Why there is no cluster to test against, or None when `sinfo` answers with an idle node."""
    if shutil.which("sinfo") is None:
        return "no SLURM client (sinfo) on this machine; .ci/slurm-local.sh installs and starts a one-node cluster"
    proc = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    states = proc.stdout.split()
    if proc.returncode != 0 or not any(s.rstrip("*").startswith(("idle", "mix", "alloc")) for s in states):
        return f"no SLURM node is up (sinfo: {proc.stderr.strip() or ' '.join(states) or 'nothing'})"
    return None


needs_slurm = pytest.mark.skipif(cluster() is not None, reason=str(cluster()))
TINY = ["data.length=10", "data.n_train=64", "data.n_val=32", "data.n_test=32", "trainer.epochs=2",
        "sweep.params.model.hidden_size.low=4", "sweep.params.model.hidden_size.high=8", "sweep.report=false"]
ON_THIS_NODE = ["hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.gpus_per_node=0",
                "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10"]


@pytest.mark.slow
@needs_slurm
def test_a_study_through_the_slurm_launcher_ends_with_one_ok_record_per_job(tmp_path):
    """The README's cluster command on a real cluster: 2 cells x 2 paired trials go out as SLURM array tasks and
    end as 4 ok records, one per job, with the Optuna journal (the storage a shared file system needs)."""
    env = dict(os.environ, WANDB_MODE="disabled", MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "lstm_odyssey.cli", "-m", "+sweep=quick", f"hydra.sweep.dir={tmp_path}",
         "cell=vanilla,gru", "sweep.n_trials=2", *TINY, *ON_THIS_NODE],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in Path(tmp_path).rglob("result.json")]
    assert sorted((r["cell"], r["trial"], r["status"]) for r in records) == [
        (c, k, "ok") for c in ("gru", "vanilla") for k in (0, 1)]
    assert (tmp_path / "optuna.journal").is_file() and not (tmp_path / "optuna.db").exists()
    assert "4 jobs: ok 4, diverged 0, failed 0 (4 ran now, 0 done before)" in proc.stdout
    assert list(tmp_path.rglob("*_submitted.pkl")), "the jobs did not go through submitit's SLURM executor"



@pytest.mark.parametrize(("limit", "delay", "refused"), [(1, 120, True), (1, 31, True), (1, 30, False), (240, 120, False)])
def test_a_warning_due_in_the_first_half_of_the_time_limit_is_refused(limit, delay, refused):
    """submitit warns a job signal_delay_s before its limit; later than half-way, or it requeues before training."""
    from lstm_odyssey.sweep.jobs import time_limit_problem

    problem = time_limit_problem({"timeout_min": limit, "signal_delay_s": delay})
    assert (problem is not None) == refused
    if refused:
        assert "\n" not in problem and f"signal_delay_s={delay}" in problem and f"at most {limit * 60 // 4}" in problem


def test_the_sweep_refuses_a_time_limit_shorter_than_the_warning_in_one_line_before_submitting(tmp_path):
    """`hydra.launcher.timeout_min=1` with the default 120 s warning failed every job on a real cluster ("timed-out
    too many times"); the sweep now stops before it submits anything, and says what to set."""
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "lstm_odyssey.cli", "-m", "+sweep=quick", f"hydra.sweep.dir={tmp_path}", "cell=vanilla",
         "sweep.n_trials=1", *TINY, *ON_THIS_NODE, "hydra.launcher.timeout_min=1"],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode != 0
    assert "signal_delay_s=120 is more than half of hydra.launcher.timeout_min=1" in proc.stderr
    assert not list(tmp_path.rglob("result.json")) and not list(tmp_path.rglob("*_submitted.pkl"))


# Runs of a few seconds to a few minutes on one core: long enough to be cancelled or cut off by a time limit midway.
LONG_RUNS = ["data.length=20", "data.n_train=1000", "data.n_val=100", "data.n_test=100", "trainer.patience=null",
             "sweep.params.model.hidden_size.low=32", "sweep.params.model.hidden_size.high=33", "sweep.report=false"]


def slurm_sweep(sweep_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    env = dict(os.environ, WANDB_MODE="disabled", MPLBACKEND="Agg", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.Popen([sys.executable, "-m", "lstm_odyssey.cli", "-m", "+sweep=quick", f"hydra.sweep.dir={sweep_dir}",
                             *LONG_RUNS, *ON_THIS_NODE, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)


def squeue(state: str) -> list[str]:
    """The ids of this user's SLURM tasks in `state` (RUNNING, PENDING)."""
    proc = subprocess.run(["squeue", "-h", "-r", "-t", state, "-o", "%i"], capture_output=True, text=True, timeout=60)
    return proc.stdout.split()


def poll(condition, what: str, proc: subprocess.Popen, timeout: float = 300.0):
    """Poll `condition()` until it is truthy; fail with the sweep's output if the sweep ends or time runs out."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if proc.poll() is not None:
            raise AssertionError(f"the sweep ended before {what}:\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.5)
    proc.kill()
    raise AssertionError(f"no {what} within {timeout:.0f} s:\n{proc.communicate()[0][-3000:]}")


def no_accounting() -> str | None:
    """Why `sacct` does not answer here (a cluster without accounting), or None."""
    proc = subprocess.run(["sacct", "-n", "-X", "-S", "now-1minutes"], capture_output=True, text=True, timeout=60)
    return None if proc.returncode == 0 else f"this cluster has no accounting (sacct: {proc.stderr.strip()[:200]})"


def sacct_fails(folder: Path) -> dict[str, str]:
    """An environment whose `sacct` fails as it does on a cluster without accounting (slurmdbd), the common case
    on small clusters; squeue, sbatch and scancel are the cluster's own."""
    folder.mkdir()
    shim = folder / "sacct"
    shim.write_text("#!/bin/sh\necho 'sacct: error: Slurm accounting storage is disabled' >&2\nexit 1\n")
    shim.chmod(0o755)
    return {"PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.slow
@needs_slurm
@pytest.mark.parametrize(("accounting", "width"), [(True, 2), (False, 1)], ids=["pack-with-accounting", "alone-without-accounting"])
def test_a_cancelled_task_costs_only_its_own_job_which_resumes_from_its_checkpoint(tmp_path, accounting, width):
    """`scancel` of one running array task: no other task is disturbed or submitted again; the cancelled job (a pack
    of 2 on the cluster with accounting, a trial alone on it without) is submitted once more and resumes from its checkpoint, a pack as the same pack. With
    accounting submitit sees the task CANCELLED through `sacct`; without it (`sacct` fails) the sweep still
    finishes, since a task that left the queue is seen with `squeue`."""
    if accounting and no_accounting():
        pytest.skip(str(no_accounting()))
    sweep_dir, epochs = tmp_path / "sweep", 120  # half a minute of training per task: cancelled well before its end
    env = None if accounting else sacct_fails(tmp_path / "no-accounting")
    trials = width  # 2 tasks either way (2 cells x a pack of 2 trials, or 2 cells x 1 trial), both on the node at once
    sweep = slurm_sweep(sweep_dir, "cell=vanilla,gru", f"sweep.n_trials={trials}", f"sweep.pack={width}",
                        f"trainer.epochs={epochs}", env=env)
    checkpoint = "pack.pt" if width > 1 else "last.pt"
    poll(lambda: len(list(sweep_dir.rglob(checkpoint))) >= 2 and len(squeue("RUNNING")) == 2,
         f"two tasks training with a {checkpoint}", sweep)
    victim = squeue("RUNNING")[0]
    subprocess.run(["scancel", victim], check=True, timeout=60)
    out, _ = sweep.communicate(timeout=900)
    assert sweep.returncode == 0, out[-3000:]
    records = [json.loads(p.read_text()) for p in sweep_dir.rglob("result.json")]
    assert sorted((r["cell"], r["trial"], r["status"]) for r in records) == [
        (c, k, "ok") for c in ("gru", "vanilla") for k in range(trials)]
    assert all(r["epochs_run"] == epochs for r in records)
    resumed = [(r["cell"], r["trial"]) for r in records if r["resumed_from_epoch"]]
    assert len(resumed) == width, records  # only the cancelled task's job(s) resumed: a pack's members, or one trial
    if width > 1:
        assert all(r["pack"]["width"] == width for r in records)
        packs = {r["cell"]: r["pack"]["id"] for r in records}
        assert all(r["pack"]["id"] == packs[r["cell"]] for r in records)  # the cancelled pack resumed as the same pack
    assert "1 SLURM task(s) ended without a result" in out
    submitted = sorted(p.name for p in (sweep_dir / ".submitit").glob("*/*_submitted.pkl"))
    assert len(submitted) == 3, submitted  # the two tasks, then the cancelled one once more: nothing else twice
    if accounting:  # the cluster's own account of the cancelled task
        state = subprocess.run(["sacct", "-n", "-X", "-j", victim, "-o", "State%20"], capture_output=True, text=True,
                               timeout=60).stdout.split()
        assert state and state[0] == "CANCELLED", state
    else:
        assert "left the queue without a result" in out  # seen through squeue, as sacct cannot tell


@pytest.mark.slow
@needs_slurm
def test_a_job_past_its_time_limit_is_requeued_and_resumes_from_its_last_epoch(tmp_path):
    """A 2-minute limit and more work than that: SLURM warns the job (signal_delay_s before the limit, or up to a
    minute earlier), submitit requeues it, and the job resumes from its last epoch's checkpoint; its record counts
    the requeues. (With a 1-minute limit the warning can come in the job's first seconds, every time.)"""
    # The work is the job's own clock, not a count of epochs: trainer.max_minutes=2.2 asks for 132 s of training,
    # kept in the checkpoint across requeues. No run can train that long under a 2-minute limit, on any CPU, so the
    # job is requeued at least once; the warning comes 30-90 s into a run, so a slow machine needs a few more.
    sweep = slurm_sweep(tmp_path, "cell=vanilla", "sweep.n_trials=1", "trainer.epochs=1000000", "trainer.max_minutes=2.2",
                        "hydra.launcher.timeout_min=2", "hydra.launcher.signal_delay_s=30",
                        "hydra.launcher.max_num_timeout=10")
    out, _ = sweep.communicate(timeout=1200)
    assert sweep.returncode == 0, out[-3000:]
    [record] = [json.loads(p.read_text()) for p in tmp_path.rglob("result.json")]
    assert record["status"] == "ok" and record["stopped_by"] == "time_cap", record.get("error")
    assert record["trial_seconds"] >= 132 and record["requeued"] >= 1 and record["resumed_from_epoch"] >= 1
    epochs = record["epochs_run"]
    assert [h["epoch"] for h in record["history"]] == list(range(1, epochs + 1))  # no epoch lost or trained twice


@pytest.mark.slow
@needs_slurm
def test_a_job_requeued_by_the_scheduler_resumes_from_its_last_epoch(tmp_path):
    """`scontrol requeue`, what SLURM does to a requeueable job it preempts: the running task is stopped and queued
    again under the same id. The sweep waits for it instead of counting it lost, and it resumes from its last
    epoch's checkpoint; its record counts the requeue."""
    epochs = 150  # the requeue comes at the first checkpoint: seconds in, long before the end
    sweep = slurm_sweep(tmp_path, "cell=vanilla", "sweep.n_trials=1", f"trainer.epochs={epochs}")
    poll(lambda: list(tmp_path.rglob("last.pt")) and squeue("RUNNING"), "the job training with a checkpoint", sweep)
    [task] = squeue("RUNNING")
    subprocess.run(["scontrol", "requeue", task], check=True, timeout=60)
    out, _ = sweep.communicate(timeout=900)
    assert sweep.returncode == 0, out[-3000:]
    [record] = [json.loads(p.read_text()) for p in tmp_path.rglob("result.json")]
    assert record["status"] == "ok" and record["epochs_run"] == epochs, record.get("error")
    assert record["requeued"] >= 1 and record["resumed_from_epoch"] >= 1
    assert [h["epoch"] for h in record["history"]] == list(range(1, epochs + 1))  # no epoch lost or trained twice
    assert "ended without a result" not in out  # a requeued task stays in the queue: waited for, not lost
    assert len(list((tmp_path / ".submitit").glob("*/*_submitted.pkl"))) == 1
