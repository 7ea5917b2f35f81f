"""A study's jobs: what one is, where it runs, and whether it must run (again).

Each job is trial k of a grid point. Its run directory is `<grid point>/<k>_<key>`, where the key hashes
the job's overrides (minus bookkeeping), so the same command on the same sweep directory finds its
earlier jobs; what their records mean (keep, resume, run again) is jobstate.py's.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .space import format_value

if TYPE_CHECKING:
    import optuna

    from ..locks import Held

# Overrides that never change what a job computes, so they stay out of its key.
UNKEYED_PREFIXES = ("sweep.", "+sweep", "++sweep", "hydra.", "logger", "+logger", "paths.", "trainer.device",
                    "trainer.progress", "trainer.resume")
GRID_FIRST = ("data", "cell")  # the run directory reads task/cell/...


@dataclass
class Job:
    """Trial k of one grid point."""

    point: tuple[tuple[str, str], ...]
    k: int
    study: optuna.Study
    trial_number: int | None = None
    values: dict[str, Any] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    subdir: str = ""
    claim: Held | None = None
    members: list[Job] = field(default_factory=list)  # a pack job: the trials it trains (sweep/packs.py)

    @property
    def trials(self) -> list[Job]:
        """The jobs whose records this launch writes: the pack's members, or the job itself."""
        return self.members or [self]

    @property
    def label(self) -> str:
        return point_label(self.point)

    def place(self, values: dict[str, Any], fixed: list[str], sweep_dir: Path) -> Path:
        """Give the job its sampled values, its overrides and its run directory (returned)."""
        self.values = values
        self.overrides = job_overrides(self.point, values, fixed)
        self.subdir = f"{self.label}/{self.k:03d}_{job_key(self.overrides)}"
        return sweep_dir / self.subdir


def derive_seed(*parts: Any) -> int:
    """A stable 31-bit seed from anything printable (hash() is salted per process)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-") or "_"


def point_label(point: Sequence[tuple[str, str]]) -> str:
    """`adding/vanilla` for the default axes; other axes read `key-value`."""
    parts = [_safe(v) if k in GRID_FIRST else _safe(f"{k}-{v}") for k, v in point]
    return "/".join(parts) or "all"


def job_key(overrides: Sequence[str]) -> str:
    """A stable key of what a job computes: a hash of its sorted overrides minus bookkeeping ones."""
    keyed = sorted(o for o in overrides if not o.startswith(UNKEYED_PREFIXES))
    return hashlib.sha1("\n".join(keyed).encode()).hexdigest()[:10]


def job_overrides(point: Sequence[tuple[str, str]], values: Mapping[str, Any], fixed: list[str]) -> list[str]:
    """A job's overrides: the command line's fixed ones, its grid point's, its sampled values'."""
    return [*fixed, *(f"{k}={v}" for k, v in point), *(f"{k}={format_value(v)}" for k, v in values.items())]


def launcher_width(launcher_cfg: Mapping | None) -> int:
    """How many jobs the launcher runs at once: joblib n_jobs, submitit array_parallelism, else 1."""
    cfg = launcher_cfg or {}
    n_jobs = cfg.get("n_jobs")
    if n_jobs is not None:
        n_jobs = int(n_jobs)
        return max(1, (os.cpu_count() or 1) + 1 + n_jobs if n_jobs < 0 else n_jobs)
    if cfg.get("array_parallelism"):
        return max(1, int(cfg["array_parallelism"]))
    return 1


def time_limit_problem(launcher_cfg: Mapping | None) -> str | None:
    """Why a SLURM launcher's time limit cannot work, or None. submitit warns a job `signal_delay_s` before its
    limit so it can checkpoint and be requeued; a warning due in the first half of the job's time would requeue
    it over and over (with the defaults and `timeout_min=1`, at once) instead of letting it train."""
    cfg = launcher_cfg or {}
    if cfg.get("timeout_min") is None or cfg.get("signal_delay_s") is None:
        return None
    limit, delay = 60 * float(cfg["timeout_min"]), float(cfg["signal_delay_s"])
    if limit <= 0:
        return f"hydra.launcher.timeout_min={cfg['timeout_min']} must be positive: give each job's time limit in minutes"
    if 2 * delay > limit:
        return (f"hydra.launcher.signal_delay_s={cfg['signal_delay_s']} is more than half of hydra.launcher.timeout_min="
                f"{cfg['timeout_min']} ({limit:.0f} s), so SLURM's time-limit warning would requeue each job before it "
                f"trains: set signal_delay_s to at most {int(limit // 4)} or raise timeout_min")
    return None

