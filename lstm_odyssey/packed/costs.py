"""The measured constants of the packed path's cost models, in one data file: `costs.json` beside this module.

Its `cuts` section prices the time cuts of a pack's sweep (`stacked.cut_prices`), its `plan` section the `auto`
cut of trials into packs (`plan.py`). Each section records the command that regenerates it (the benchmarks
in the repository's `benchmarks/` folder, `--write`) and the machine it was measured on. The modules read
the file once, at import.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

COSTS_FILE: Any = resources.files(__package__) / "costs.json"  # a Traversable (a Path where installed as files)


def load(path: str | Path | None = None) -> dict[str, Any]:
    """The whole file as a dict (`path`: another copy of it; None: the package's)."""
    source = COSTS_FILE if path is None else Path(path)
    return json.loads(source.read_text(encoding="utf-8"))


def section(name: str, path: str | Path | None = None) -> dict[str, Any]:
    """One section (`cuts` or `plan`), refusing a file that lacks it."""
    costs = load(path)
    if name not in costs:
        raise KeyError(f"{path or COSTS_FILE} has no {name!r} section")
    return costs[name]
