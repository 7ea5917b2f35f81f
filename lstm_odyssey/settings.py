"""What a config setting may be and how a group of them is checked: each setting's type and allowed values
(`setting(...)`, a dataclass field with an `Allowed` in its metadata), those values in words (`describe`),
and `check_group`, which refuses an unknown key, a wrong type or a value out of range with one
`ConfigError` line that names the key, the value and what is allowed. The groups themselves are in schema.py.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Union


class ConfigError(ValueError):
    """A value of the config is wrong; the message is one line that names the key and what is allowed."""


@dataclass(frozen=True)
class Allowed:
    """The values a setting may take besides its type: a range (inclusive low/high, exclusive above/below),
    a list of choices, a list length; `null` says what null means where the type allows it."""

    low: float | None = None
    high: float | None = None
    above: float | None = None
    below: float | None = None
    choices: tuple = ()
    length: int | None = None
    null: str | None = None

    def admits(self, value: Any) -> bool:
        if self.choices:
            return value in self.choices and type(value) in {type(c) for c in self.choices}
        if isinstance(value, (list, tuple)):
            return (self.length is None or len(value) == self.length) and all(self.admits(v) for v in value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return math.isfinite(value) and not (
                (self.low is not None and value < self.low) or (self.high is not None and value > self.high)
                or (self.above is not None and value <= self.above) or (self.below is not None and value >= self.below)
            )
        return True

    def bounds(self) -> str:
        low = f"[{_show(self.low)}" if self.low is not None else f"({_show(self.above)}" if self.above is not None else None
        high = f"{_show(self.high)}]" if self.high is not None else f"{_show(self.below)})" if self.below is not None else None
        if low and high:
            return f" in {low}, {high}"
        if low:
            return f" >= {_show(self.low)}" if self.low is not None else f" > {_show(self.above)}"
        if high:
            return f" <= {_show(self.high)}" if self.high is not None else f" < {_show(self.below)}"
        return ""


def setting(default: Any = None, **allowed: Any) -> Any:
    """A dataclass field with its allowed values in the metadata (see Allowed)."""
    spec = Allowed(**{k: tuple(v) if k == "choices" else v for k, v in allowed.items()})
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"allowed": spec})
    return field(default=default, metadata={"allowed": spec})



@dataclass(frozen=True)
class Setting:
    """One key of a group: its type and allowed values."""

    name: str
    type: Any
    allowed: Allowed


def settings_of(schema: type) -> dict[str, Setting]:
    hints = typing.get_type_hints(schema)
    return {f.name: Setting(f.name, hints[f.name], f.metadata.get("allowed", Allowed())) for f in dataclasses.fields(schema)}



def _optional(kind: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    if typing.get_origin(kind) in (Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return (args[0] if len(args) == 1 else Any), len(args) < len(typing.get_args(kind))
    return kind, kind is Any


def _has_type(value: Any, kind: Any) -> bool:
    kind, nullable = _optional(kind)
    if value is None:
        return nullable
    origin = typing.get_origin(kind) or kind
    if kind is Any:
        return True
    if origin in (list, tuple):
        (item,) = typing.get_args(kind)[:1] or (Any,)
        return isinstance(value, (list, tuple)) and all(_has_type(v, item) for v in value)
    if origin in (dict, Mapping):
        return isinstance(value, Mapping)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is str:  # Hydra reads `data.form=1997` as a number; a string option takes it as its text
        return isinstance(value, (str, int, float)) and not isinstance(value, bool)
    return isinstance(value, kind)


_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def describe(item: Setting) -> str:
    """What `item` may be, in words: 'an integer >= 1', 'null (never stop early) or an integer >= 1'."""
    kind, nullable = _optional(item.type)
    allowed = item.allowed
    if allowed.choices:
        text = "one of " + ", ".join(_show(c) for c in allowed.choices)
    elif typing.get_origin(kind) in (list, tuple):
        (inner,) = typing.get_args(kind)[:1] or (Any,)
        count = {2: "two"}.get(allowed.length or 0, "a list of")
        text = f"{count} {_NAMES.get(inner, 'value').split(' ', 1)[-1]}s{allowed.bounds()}"
    elif typing.get_origin(kind) in (dict, Mapping):
        text = "a mapping"
    else:
        text = _NAMES.get(kind, "any value") + allowed.bounds()
    if nullable and kind is not Any:
        text = f"null ({allowed.null}) or {text}" if allowed.null else f"null or {text}"
    return text


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float) and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def not_allowed(key: str, value: Any, item: Setting) -> ConfigError:
    return ConfigError(f"{key}={_show(value)} is not allowed: must be {describe(item)}")


def unknown_key(key: str, group: str, known: list[str]) -> ConfigError:
    return ConfigError(f"{key} is not a key of {group}; known keys: {', '.join(sorted(known))}")


def check_group(group: str, values: Any, known: dict[str, Setting], label: str | None = None,
                extra: tuple[str, ...] = ()) -> None:
    """Every key of `values` is known, of its type and in its range; raises the first problem."""
    label = label or group
    if not isinstance(values, Mapping):
        raise ConfigError(f"{group} must be a mapping of settings, got {_show(values)}")
    for key, value in values.items():
        if key in extra:
            continue
        if key not in known:
            raise unknown_key(f"{group}.{key}", label, [*known, *extra])
        item = known[key]
        if not _has_type(value, item.type) or (value is not None and not item.allowed.admits(value)):
            raise not_allowed(f"{group}.{key}", value, item)
