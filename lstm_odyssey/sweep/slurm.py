"""SLURM through submitit, where an array task that fails costs only its own job.

hydra-submitit-launcher waits for an array's tasks in order and raises on the first that ended without a result
(`scancel`, a node failure), so the sweeper lost the whole batch, submitted the rest again while the first array
still ran them, and never resubmitted the cancelled one; without accounting (`sacct` failing, common on small
clusters) it waited forever for a task that had left the queue. Here each task is collected on its own: a result,
or `LostTask` when the task has left the queue (`squeue`, which needs no accounting) without writing one. The
sweeper submits a lost task's job once more, and it resumes from its checkpoint. A task requeued by its time
limit or by preemption keeps its job id and stays in the queue, so it is waited for, not lost. The launcher
class is hydra_plugins/odyssey_sweeper/slurm_launcher.py (conf/hydra/launcher/slurm.yaml).
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn, JobStatus

log = logging.getLogger(__name__)

POLL_S = 2.0    # how often the queue is read while tasks run
GRACE_S = 10.0  # a task out of the queue this long without a result file is lost (the file may lag on NFS)


class LostTask(RuntimeError):
    """A SLURM task that left the queue without a result: cancelled, killed with its node, or lost."""


def lost(why: str) -> JobReturn:
    """The result of a task that ended without one, as the sweeper reads it (`is_lost`)."""
    return JobReturn(status=JobStatus.FAILED, _return_value=LostTask(why))


def is_lost(result: JobReturn | None) -> bool:
    """True for a task that ended without running its job to the end, which a resubmission resumes."""
    return result is not None and result.status == JobStatus.FAILED and isinstance(result._return_value, LostTask)


def in_queue(job_ids: Sequence[str]) -> set[str] | None:
    """The ids of these jobs' tasks that SLURM still holds (pending, running, requeued); None when squeue fails."""
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids})
    try:
        proc = subprocess.run(["squeue", "-h", "-r", "-o", "%i", "-j", ",".join(arrays)],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:  # squeue refuses ids that have all left the queue: ask one at a time
        if len(arrays) == 1:
            return set() if "Invalid job id" in proc.stderr else None
        found = [in_queue([a]) for a in arrays]
        return None if any(f is None for f in found) else set().union(*found)
    return set(proc.stdout.split())


def collect(jobs: Sequence[Any], poll_s: float = POLL_S, grace_s: float = GRACE_S) -> list[JobReturn]:
    """Each submitit job's JobReturn, or a `lost` one for a task that left the queue without a result."""
    results: list[JobReturn | None] = [None] * len(jobs)
    gone_since: dict[int, float] = {}
    pending = set(range(len(jobs)))
    while pending:
        queued = in_queue([jobs[i].job_id for i in pending])
        for i in sorted(pending):
            job = jobs[i]
            if job.done():
                results[i] = result_of(job)
            elif queued is not None and job.job_id not in queued:
                if time.monotonic() - gone_since.setdefault(i, time.monotonic()) >= grace_s:
                    log.warning("SLURM task %s left the queue without a result (cancelled or killed)", job.job_id)
                    results[i] = lost(f"SLURM task {job.job_id} left the queue without a result (cancelled or killed)")
            else:
                gone_since.pop(i, None)
            if results[i] is not None:
                pending.discard(i)
        if pending:
            time.sleep(poll_s)
    return [r for r in results if r is not None]


def result_of(job: Any) -> JobReturn:
    try:
        return job.results()[0]
    except Exception as err:  # submitit's UncompletedJobError and kin: the task ended without a result
        return lost(f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}")
