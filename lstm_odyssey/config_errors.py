"""One line for an error Hydra or OmegaConf raises while composing a config, in the words of the schema's own
checks (`schema.validate`)."""

from __future__ import annotations

import re

from .schema import lookup
from .settings import describe, unknown_key


def one_line(err: BaseException) -> str:
    """One line for an error of composition or validation, in the words `validate` uses where it can:
    a value Hydra could not convert names the key, the value and what is allowed; an unknown key lists the
    known ones; a missing option lists the available ones."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    cause = err.__cause__ if isinstance(err.__cause__, OmegaConfBaseException) else None
    text = str(err)
    override = re.match(r"Error merging override (\S+?)=(.*)", text)
    unknown = isinstance(cause, (ConfigKeyError, ConfigAttributeError))
    if cause is not None and override and not unknown:
        key, value = override.group(1).lstrip("+~"), override.group(2)
        item = lookup(key)
        if item is not None:
            return f"{key}={value} is not allowed: must be {describe(item)}"
    if unknown and cause.full_key:
        parent = getattr(cause, "parent_node", None)
        known = [str(k) for k in parent.keys()] if parent is not None and hasattr(parent, "keys") else []
        group = cause.full_key.rpartition(".")[0] or "the config"
        if known:
            return str(unknown_key(cause.full_key, group, known))
    if isinstance(err, OverrideParseException):
        return f"cannot read the override {err.override!r}: {text.strip().splitlines()[0]}"
    if isinstance(err, MissingConfigException) and getattr(err, "options", None):
        first = text.strip().splitlines()[0]
        return f"{first}; available: {', '.join(err.options)}"
    lines = [line.strip() for line in text.splitlines() + (str(cause).splitlines() if cause else [])]
    keep = [line for line in lines if line and not line.startswith(("full_key:", "object_type=", "reference_type=",
                                                                     "Set the environment variable HYDRA_FULL_ERROR"))]
    return ": ".join(dict.fromkeys(keep)) or type(err).__name__
