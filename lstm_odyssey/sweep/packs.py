"""Packed trials in a study (`sweep.pack=auto | K | 1`): the jobs of one grid point trained side by side.

The sweeper prepares every job as usual (claim, trial, run directory), then groups the jobs that may share a
pack (same grid point, same `packed.plan.pack_key`: cell, task, architecture, optimiser) and splits each group
by hidden size with `packed.plan.plan_packs` (`auto`: the cheapest cut by the measured cost model; K: K at a
time). A pack of one is launched as the job it is. A wider pack is launched as ONE launcher job, the first member's overrides
plus `++sweep.pack_members=<manifest>`; the manifest (`<sweep dir>/.packs/<id>.json`) lists every member's
resolved config and run directory, and the job runs `packed.fit.fit_pack` on them (`run_pack`). Every member
writes its own `result.json`, so the sweeper reads, counts and tells Optuna about each trial as before.

A pack's id hashes its members' run directories, and its checkpoint lives in `.packs/<id>/`. Rerunning the
same command after a kill resumes it: before planning, the sweeper looks for earlier packs whose checkpoint
holds exactly the pending jobs that were still training in it (the others having left with their records)
and relaunches each such manifest as it is (`launch_plan`, `resumable`), so a pack whose members finish at
different times still resumes from its last epoch instead of starting over. When a worker dies, the
unfinished members are rerun one by one.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import jobstate
from ..files import atomic_write_text
from ..jobstate import SavedPack, finished
from ..packed.fit import fit_pack, pack_id_of
from ..packed.plan import pack_key, plan_packs, unpackable
from ..results import flatten
from ..schema import complete, default
from .worker import running

log = logging.getLogger("lstm_odyssey.sweep")

PACKS_DIR = ".packs"
MANIFEST_KEY = "pack_members"  # sweep.pack_members: the manifest a pack job reads


def check_setting(value: Any) -> str | None:
    """Why `sweep.pack` is wrong, or None: 1 (every trial alone), a width K >= 1, or auto."""
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return None
    return f"sweep.pack={value!r} is not allowed: use auto, 1 (no packing) or a pack width K >= 1"


def _device(cfg: dict) -> str:
    device = str(cfg["trainer"]["device"])
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def plan(configs: Sequence[dict], labels: Sequence[str], setting: int | str) -> list[list[int]]:
    """Positions of the jobs grouped into packs: jobs share a pack only within one grid point (`labels`) and
    `pack_key`; each group is split by hidden size. Packs of one are the jobs that run alone. `auto` runs
    trials that cannot be packed (`packed.plan.unpackable`) alone; an explicit width refuses them."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, (cfg, label) in enumerate(zip(configs, labels)):
        groups.setdefault((label, pack_key(cfg)), []).append(i)
    packs = []
    for members in groups.values():
        sizes = [int(configs[i]["model"]["hidden_size"]) for i in members]
        first = configs[members[0]]
        problem = unpackable(first)
        if problem and setting == "auto":
            log.info("%s: these trials run alone (%s)", labels[members[0]], problem.split(";")[0])
            packs += [[i] for i in members]
            continue
        if problem and setting != 1:
            raise ValueError(problem)
        for part in plan_packs(sizes, setting, _device(first), int(first["trainer"]["batch_size"])):
            packs.append([members[j] for j in part])
    return sorted(packs, key=lambda p: p[0])


def launch_plan(sweep_dir: Path, run_dirs: Sequence[str], configs: Sequence[dict], labels: Sequence[str],
                setting: int | str) -> list[tuple[list[int], Path | None]]:
    """The launch units of a batch of pending jobs, as (positions, manifest): first the earlier packs that
    resume from their checkpoints (`resumable`), then `plan` over the rest, each wider pack with a new
    manifest; a job that runs alone has no manifest."""
    position = {d: i for i, d in enumerate(run_dirs)}
    units: list[tuple[list[int], Path | None]] = []
    for manifest, active in resumable(sweep_dir, dict(zip(run_dirs, configs))):
        units.append(([position[d] for d in active], manifest))
    taken = {i for members, _ in units for i in members}
    rest = [i for i in range(len(run_dirs)) if i not in taken]
    for members in plan([configs[i] for i in rest], [labels[i] for i in rest], setting):
        members = [rest[j] for j in members]
        if len(members) == 1:
            units.append((members, None))
        else:
            units.append((members, write_manifest(sweep_dir, [(configs[i], Path(run_dirs[i])) for i in members])))
    return units


def saved_pack(manifest: Path) -> SavedPack | None:
    """The checkpoint of the manifest's pack, when there is one and it belongs to all of the manifest's members
    (a pack formed again from some of them writes its own); None otherwise, or when it cannot be read."""
    try:
        spec = json.loads(manifest.read_text())
        return jobstate.saved_pack(manifest.parent / spec["id"], [str(m["run_dir"]) for m in spec["members"]])
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, EOFError) as err:
        log.warning("ignoring the pack checkpoint of %s (%s: %s); its members start afresh", manifest, type(err).__name__, err)
        return None


def resumable(sweep_dir: Path, pending: Mapping[str, dict]) -> list[tuple[Path, list[str]]]:
    """Earlier packs that can go on from their checkpoints: every member still training there is pending
    now (`pending`: run directory -> its config now) with the config it had, and none that had left is
    pending. Returns (manifest, the members still training); where two packs share a pending job (a pack
    formed again after an earlier resume failed), the one with more trained epochs wins."""
    candidates = []
    for manifest in sorted((sweep_dir / PACKS_DIR).glob("*.json")):
        try:
            stored = {str(m["run_dir"]): m["config"] for m in json.loads(manifest.read_text())["members"]}
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if pending.keys().isdisjoint(stored):
            continue
        saved = saved_pack(manifest)
        if not saved or not saved.active or not pending.keys().isdisjoint(saved.left):
            continue
        if all(d in pending and unchanged(pending[d], stored[d]) for d in saved.active):  # else the command changed
            candidates.append((saved.epochs, manifest, saved.active))
    chosen, used = [], set()
    for _, manifest, active in sorted(candidates, key=lambda c: -c[0]):
        if used.isdisjoint(active):
            chosen.append((manifest, active))
            used.update(active)
    return chosen


def _as_stored(cfg: dict) -> Any:
    """A config as `write_manifest` stores it (JSON), to compare with a stored one."""
    return json.loads(json.dumps(cfg, default=str))


def unchanged(now: dict, stored: dict) -> bool:
    """Whether a member's config now is the one its pack was stored with. A key the stored config lacks and
    that is at its schema default now is no change: an option a newer release added, left off, so that
    upgrading between sessions does not restart the packs in flight."""
    now_flat, stored_flat = flatten(_as_stored(now)), flatten(stored)
    if any(key not in now_flat or now_flat[key] != value for key, value in stored_flat.items()):
        return False
    return all(value == default(key) for key, value in now_flat.items() if key not in stored_flat)


def write_manifest(sweep_dir: Path, members: Sequence[tuple[dict, Path]]) -> Path:
    """The file a pack job reads: each member's resolved config and run directory."""
    ident = pack_id_of([d for _, d in members])
    path = sweep_dir / PACKS_DIR / f"{ident}.json"
    atomic_write_text(path, json.dumps({"id": ident, "members": [{"config": c, "run_dir": str(d)} for c, d in members]},
                                       default=str))
    return path


def run_pack(manifest: str | Path, guard: Callable[[Path], Any] = running) -> list[dict]:
    """A pack job (in the worker), each training member holding its run directory's `.running` marker.
    When the pack's checkpoint is of all its members and those that had left kept their records, the pack
    resumes from it as a whole (the same id, width and records as if never stopped); otherwise the members
    without an ok record train as a new pack. Returns the members' records."""
    manifest = Path(manifest)
    spec = json.loads(manifest.read_text())
    members = [(complete(member["config"]), Path(member["run_dir"])) for member in spec["members"]]
    pack_dir = manifest.parent / spec["id"]
    saved = saved_pack(manifest)
    if saved and saved.active and all(finished(Path(d)) for d in saved.left):
        to_fit, done = members, []
        held = [Path(d) for d in saved.active]
    else:
        to_fit = [(cfg, d) for cfg, d in members if not jobstate.done(d)]
        done = [r for _, d in members if (r := jobstate.done(d))]
        held = [d for _, d in to_fit]
    if not to_fit:
        return done
    with contextlib.ExitStack() as stack:
        for run_dir in held:
            stack.enter_context(guard(run_dir))
        return done + fit_pack(to_fit, pack_id=spec["id"], pack_dir=pack_dir)
