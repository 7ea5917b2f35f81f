"""Packed trials in a study (`sweep.pack=auto | K | 1`): the jobs of one grid point trained side by side.

The sweeper prepares every job as usual (claim, trial, run directory), then groups the jobs that may share a
pack (same grid point, same `packed.plan.pack_key`: cell, task, architecture, optimiser) and splits each group
by hidden size with `packed.plan.plan_packs` (`auto`: the cheapest cut by the measured cost model; K: K at a
time). A pack of one is launched as the job it is. A wider pack is launched as ONE launcher job, the first member's overrides
plus `++sweep.pack_members=<manifest>`; the manifest (`<sweep dir>/.packs/<id>.json`) lists every member's
resolved config and run directory, and the job runs `packed.fit.fit_pack` on them (`run_pack`). Every member
writes its own `result.json`, so the sweeper reads, counts and tells Optuna about each trial as before.

A pack's id hashes its members' run directories, and its checkpoint lives in `.packs/<id>/`, so rerunning
the same command after a kill finds the same pack and resumes it; if some members finished meanwhile, the
rest form a new pack and start afresh. When a worker dies, the unfinished members are rerun one by one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..files import atomic_write_text
from ..packed.fit import fit_pack
from ..packed.plan import pack_key, plan_packs
from ..results import OK, RECORD_NAME, read_record
from .worker import running

PACKS_DIR = ".packs"
MANIFEST_KEY = "pack_members"  # sweep.pack_members: the manifest a pack job reads


def check_setting(value: Any) -> str | None:
    """Why `sweep.pack` is wrong, or None: 1 (every trial alone), a width K >= 1, or auto."""
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return None
    return f"sweep.pack={value!r} is not allowed: use auto, 1 (no packing) or a pack width K >= 1"


def _device(cfg: dict) -> str:
    device = str(cfg["trainer"].get("device", "auto"))
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def plan(configs: Sequence[dict], labels: Sequence[str], setting: int | str) -> list[list[int]]:
    """Positions of the jobs grouped into packs: jobs share a pack only within one grid point (`labels`) and
    `pack_key`; each group is split by hidden size. Packs of one are the jobs that run alone."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, (cfg, label) in enumerate(zip(configs, labels)):
        groups.setdefault((label, pack_key(cfg)), []).append(i)
    packs = []
    for members in groups.values():
        sizes = [int(configs[i]["model"]["hidden_size"]) for i in members]
        first = configs[members[0]]
        for part in plan_packs(sizes, setting, _device(first), int(first["trainer"].get("batch_size", 8))):
            packs.append([members[j] for j in part])
    return sorted(packs, key=lambda p: p[0])


def pack_id(run_dirs: Sequence[Path]) -> str:
    """A stable id of a pack from its members' run directories."""
    return hashlib.sha1("\n".join(str(d) for d in run_dirs).encode()).hexdigest()[:12]


def write_manifest(sweep_dir: Path, members: Sequence[tuple[dict, Path]]) -> Path:
    """The file a pack job reads: each member's resolved config and run directory."""
    ident = pack_id([d for _, d in members])
    path = sweep_dir / PACKS_DIR / f"{ident}.json"
    atomic_write_text(path, json.dumps({"id": ident, "members": [{"config": c, "run_dir": str(d)} for c, d in members]},
                                       default=str))
    return path


def run_pack(manifest: str | Path, guard: Callable[[Path], Any] = running) -> list[dict]:
    """A pack job (in the worker): train the manifest's members that have no ok record yet, as one pack,
    each holding its run directory's `.running` marker meanwhile. Returns the members' records."""
    manifest = Path(manifest)
    spec = json.loads(manifest.read_text())
    todo, done = [], []
    for member in spec["members"]:
        run_dir = Path(member["run_dir"])
        try:
            record = read_record(run_dir / RECORD_NAME)
        except (OSError, ValueError):
            record = None
        if isinstance(record, dict) and record.get("status") == OK:
            done.append(record)
        else:
            todo.append((member["config"], run_dir))
    if not todo:
        return done
    with contextlib.ExitStack() as stack:
        for _, run_dir in todo:
            stack.enter_context(guard(run_dir))
        pack_dir = manifest.parent / spec["id"]
        return done + fit_pack(todo, pack_id=spec["id"], pack_dir=pack_dir)
