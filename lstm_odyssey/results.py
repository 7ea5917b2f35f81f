"""The run record: one `result.json` per run, written atomically; many records into one DataFrame."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from .files import atomic_write_text

RECORD_NAME = "result.json"
STATUSES = ("ok", "diverged", "failed")
OK, DIVERGED, FAILED = STATUSES

# What a hyperparameter is, for the record, the sweeper and the analysis alike: every key of these config
# groups (cell flags included: a study may search them), minus the keys that only say how a run is run.
HPARAM_GROUPS = ("cell", "data", "model", "optim", "trainer")
NOT_HPARAMS = frozenset({"trainer.resume", "trainer.device", "trainer.progress", "cell.label"})


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf; a missing metric is null
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_record(run_dir: str | Path, record: dict) -> Path:
    path = Path(run_dir) / RECORD_NAME
    atomic_write_text(path, json.dumps(_jsonable(record), indent=2, sort_keys=False, default=str))
    return path


def read_record(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / RECORD_NAME
    return json.loads(path.read_text())


def versions() -> dict[str, str]:
    import torch

    from . import __version__

    return {"python": sys.version.split()[0], "torch": torch.__version__, "lstm_odyssey": __version__}


def git_commit() -> str | None:
    """The commit of the package's source tree, when it is a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"optim": {"lr": 0.1}} -> {"optim.lr": 0.1}; lists stay values."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def is_hparam(key: str) -> bool:
    """True for a dotted config key (`optim.lr`, `cell.peepholes`) that is a hyperparameter of a run."""
    return key.split(".", 1)[0] in HPARAM_GROUPS and "." in key and key not in NOT_HPARAMS


def hparams_of(cfg: dict) -> dict[str, Any]:
    """The hyperparameters of a resolved run config, flattened to dotted keys."""
    flat = flatten({group: cfg[group] for group in HPARAM_GROUPS if group in cfg})
    return {k: v for k, v in flat.items() if is_hparam(k)}


def flat_metrics(record: dict) -> dict[str, Any]:
    """The record's metrics at the best epoch as flat columns: {"val": {"mse": x}} -> {"val_mse": x}."""
    return {f"{split}_{name}": value for split in ("val", "test") for name, value in (record.get(split) or {}).items()}


def record_row(record: dict) -> dict[str, Any]:
    """One DataFrame row: scalars at the top, `val_*`/`test_*` metrics, hyperparameters as dotted columns."""
    row = {k: v for k, v in record.items() if not isinstance(v, (dict, list))}
    row.update(flat_metrics(record))
    row["pack_id"] = (record.get("pack") or {}).get("id")  # runs trained side by side share one process's time
    row["torch"] = (record.get("versions") or {}).get("torch")
    row.update(record.get("hparams") or {})
    for name, value in (record.get("info") or {}).items():
        if not isinstance(value, (dict, list)):
            row[f"info.{name}"] = value
    return row


def find_records(*paths: str | Path) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(path.rglob(RECORD_NAME)))
        else:
            warnings.warn(f"no such file or folder: {path}", stacklevel=3)
    return found


def load_results(*paths: str | Path) -> pd.DataFrame:
    """Every `result.json` under `paths` as one row each; unreadable files are skipped with a warning."""
    rows = []
    for path in find_records(*paths):
        try:
            record = read_record(path)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as err:
            warnings.warn(f"skipping unreadable record {path}: {err}", stacklevel=2)
            continue
        row = record_row(record)
        row["record_path"] = str(path)
        rows.append(row)
    return pd.DataFrame(rows)
