"""Tasks: one module per task, registered by name; `build_task(name=..., **options)` builds one."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from .base import REGISTRY, Batch, SequenceSplit, TaskData, register

__all__ = ["Batch", "SequenceSplit", "TaskData", "build_task", "register", "available"]


def _load_all() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base":
            importlib.import_module(f"{__name__}.{module.name}")


def available() -> list[str]:
    _load_all()
    return sorted(REGISTRY)


def build_task(name: str, **options: Any) -> TaskData:
    """Build the task registered as `name`; unknown names and options get a one-line error."""
    _load_all()
    if name not in REGISTRY:
        raise ValueError(f"unknown task {name!r}; choose one of: {', '.join(sorted(REGISTRY))}")
    try:
        return REGISTRY[name](**options)
    except TypeError as err:
        if "unexpected keyword argument" in str(err):
            raise ValueError(f"task {name!r}: {err}".replace("build() got an ", "")) from None
        raise
