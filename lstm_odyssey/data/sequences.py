"""Your own data: variable-length sequences in one .npz file (`data=sequences data.path=<file>
data.task_type=<type>`).

The format (write it with `save_sequences`), N sequences, S = sum of their lengths:
    lengths  (N,) int >= 1                    the length of each sequence
    x        (S, F) float, or (S,) int tokens the steps of all sequences, concatenated in order
    y        classification:      (N,) int class per sequence
             regression:          (N,) or (N, D) float per sequence
             step_classification: (S,) int class per step
             multilabel:          (S, D) 0/1 labels per step
    split    (N,) optional: "train"/"val"/"test" (or 0/1/2); without it, val_fraction and
             test_fraction of the sequences are drawn with `seed`.
Integer `x` means token inputs (an embedding), with `vocab_size` = max token + 1 unless given."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .base import (
    CLASSIFICATION,
    MULTILABEL,
    REGRESSION,
    STEP_CLASSIFICATION,
    TASK_TYPES,
    SequenceSplit,
    TaskData,
    register,
)

SPLITS = ("train", "val", "test")
DEFAULT_METRIC = {CLASSIFICATION: "error", REGRESSION: "mse", MULTILABEL: "nll", STEP_CLASSIFICATION: "nll"}
METRICS = {
    CLASSIFICATION: ("error", "nll", "accuracy"),
    REGRESSION: ("mse", "mae"),
    MULTILABEL: ("nll",),
    STEP_CLASSIFICATION: ("nll", "bpc", "error"),
}


class FormatError(ValueError):
    """The file does not follow the documented format; the message names the field."""


def save_sequences(
    path: str | Path,
    xs: list,
    ys: list | np.ndarray,
    split: list | np.ndarray | None = None,
    per_step: bool = False,
) -> Path:
    """Write sequences in the format `data=sequences` reads: xs[k] is (T_k, F) or (T_k,) tokens; ys[k]
    is one value or vector per sequence, or with per_step=True a (T_k, ...) target per step."""
    xs = [np.asarray(x) for x in xs]
    lengths = np.array([len(x) for x in xs], dtype=np.int64)
    ys_list = [np.asarray(y) for y in ys]
    arrays = {
        "lengths": lengths,
        "x": np.concatenate(xs, axis=0),
        "y": np.concatenate(ys_list, axis=0) if per_step else np.stack(ys_list),
    }
    if split is not None:
        arrays["split"] = np.asarray(split).astype(str)
    path = Path(path)
    np.savez(path, **arrays)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def _fail(path: Path, field: str, message: str) -> FormatError:
    return FormatError(f"{path}: field {field!r} {message} (see `data=sequences` in the README for the format)")


def load_sequences(path: str | Path, task_type: str) -> tuple[list, list, np.ndarray | None, bool]:
    """Check the file against the format; returns per-sequence inputs and targets, the split column
    (or None) and whether the inputs are tokens. Every malformed field gets a one-line FormatError."""
    path = Path(path).expanduser()
    arrays = _read_arrays(path, task_type)
    x, lengths, y = arrays["x"], arrays["lengths"], arrays["y"]
    tokens = _check_inputs(path, x, lengths)
    total, n = int(lengths.sum()), len(lengths)
    per_step = task_type in (STEP_CLASSIFICATION, MULTILABEL)
    _check_targets(path, y, task_type, total, n)
    split = arrays.get("split")
    if split is not None:
        split = _split_names(path, split, n)

    bounds = np.concatenate([[0], np.cumsum(lengths)])
    xs = [x[bounds[k] : bounds[k + 1]] for k in range(n)]
    ys = [y[bounds[k] : bounds[k + 1]] for k in range(n)] if per_step else [y[k] for k in range(n)]
    return xs, ys, split, tokens


def _read_arrays(path: Path, task_type: str) -> dict[str, np.ndarray]:
    """The file's arrays, read without unpickling; a bad task type, a missing or unreadable file, or a missing
    field is a FormatError before any array is looked at."""
    if task_type not in TASK_TYPES:
        raise FormatError(f"data.task_type={task_type!r} is not a task type; choose one of {', '.join(TASK_TYPES)}")
    if not path.is_file():
        raise FormatError(f"data.path={path} does not exist; give an .npz file in the format of `data=sequences`")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except Exception as err:
        raise FormatError(f"{path} is not a readable .npz file ({type(err).__name__}: {err})") from None
    for key in ("x", "lengths", "y"):
        if key not in arrays:
            raise _fail(path, key, f"is missing (the file has: {', '.join(sorted(arrays)) or 'nothing'})")
    return arrays


def _check_inputs(path: Path, x: np.ndarray, lengths: np.ndarray) -> bool:
    """Check `lengths` and `x` against each other; returns whether `x` holds integer tokens."""
    if lengths.ndim != 1 or not np.issubdtype(lengths.dtype, np.integer):
        raise _fail(path, "lengths", f"must be a 1-D integer array, got shape {lengths.shape} of {lengths.dtype}")
    if len(lengths) == 0 or (lengths < 1).any():
        raise _fail(path, "lengths", "must hold at least one sequence, each of length >= 1")
    total = int(lengths.sum())
    tokens = np.issubdtype(x.dtype, np.integer)
    if tokens and x.ndim != 1:
        raise _fail(path, "x", f"of integer tokens must be 1-D (S,), got shape {x.shape}")
    if not tokens and (x.ndim != 2 or not np.issubdtype(x.dtype, np.floating)):
        raise _fail(path, "x", f"must be (S, F) float or (S,) integer tokens, got shape {x.shape} of {x.dtype}")
    if x.shape[0] != total:
        raise _fail(path, "x", f"has {x.shape[0]} steps but lengths sum to {total}")
    if tokens and (x < 0).any():
        raise _fail(path, "x", "has negative token ids")
    if not tokens and not np.isfinite(x).all():
        raise _fail(path, "x", "has NaN or infinite values")
    return bool(tokens)


def _check_targets(path: Path, y: np.ndarray, task_type: str, total: int, n: int) -> None:
    """Check `y` has the rows (one per step or per sequence) and values the task type needs."""
    per_step = task_type in (STEP_CLASSIFICATION, MULTILABEL)
    rows = total if per_step else n
    if y.shape[:1] != (rows,):
        unit = f"one per step ({total})" if per_step else f"one per sequence ({n})"
        raise _fail(path, "y", f"must have {unit} rows for task_type {task_type}, got shape {y.shape}")
    if task_type in (CLASSIFICATION, STEP_CLASSIFICATION):
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or (y < 0).any():
            raise _fail(path, "y", f"must be 1-D non-negative integer classes for {task_type}, got shape {y.shape} of {y.dtype}")
    elif task_type == MULTILABEL:
        if y.ndim != 2 or not np.isin(y, (0, 1)).all():
            raise _fail(path, "y", f"must be (S, D) 0/1 labels for multilabel, got shape {y.shape}")
    elif y.ndim not in (1, 2) or not np.issubdtype(y.dtype, np.number) or not np.isfinite(y).all():
        raise _fail(path, "y", f"must be (N,) or (N, D) finite numbers for regression, got shape {y.shape} of {y.dtype}")


def _split_names(path: Path, split: np.ndarray, n: int) -> np.ndarray:
    """The split column as names: 0/1/2 become train/val/test; anything else is a FormatError."""
    if split.shape != (n,):
        raise _fail(path, "split", f"must have one entry per sequence ({n}), got shape {split.shape}")
    names = np.array([SPLITS[int(s)] if str(s) in ("0", "1", "2") else str(s) for s in split.tolist()])
    bad = sorted(set(names.tolist()) - set(SPLITS))
    if bad:
        raise _fail(path, "split", f"has values {bad}; use train, val, test (or 0, 1, 2)")
    return names

def _tensor_x(x: np.ndarray, tokens: bool) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).long() if tokens else torch.from_numpy(np.ascontiguousarray(x)).float()


def _tensor_y(y: np.ndarray, task_type: str) -> torch.Tensor:
    t = torch.as_tensor(np.array(y))  # np.ascontiguousarray would turn a scalar into shape (1,)
    if task_type in (CLASSIFICATION, STEP_CLASSIFICATION):
        return t.long()
    t = t.float()
    return t.reshape(1) if task_type == REGRESSION and t.dim() == 0 else t


@register("sequences")
def build(
    path: str | None = None,
    task_type: str | None = None,
    metric: str | None = None,
    num_classes: int | None = None,
    vocab_size: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> TaskData:
    """The user's own sequences from an .npz file (format in the module docstring)."""
    if not path:
        raise FormatError("data=sequences needs data.path=<an .npz file> (format: see `data=sequences` in the README)")
    if not task_type:
        raise FormatError(f"data=sequences needs data.task_type, one of {', '.join(TASK_TYPES)}")
    xs, ys, split, tokens = load_sequences(path, task_type)
    metric = metric or DEFAULT_METRIC[task_type]
    if metric not in METRICS[task_type]:
        raise FormatError(f"data.metric={metric!r} does not fit task_type {task_type}; choose one of {', '.join(METRICS[task_type])}")
    n = len(xs)
    if split is None:
        if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
            raise FormatError(f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} must be in (0, 1) and sum below 1")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
        n_val, n_test = int(round(n * val_fraction)), int(round(n * test_fraction))
        split = np.full(n, "train", dtype=object)
        split[order[:n_val]] = "val"
        split[order[n_val : n_val + n_test]] = "test"
    splits = {}
    for name in SPLITS:
        idx = np.flatnonzero(split == name)
        if len(idx) == 0:
            raise FormatError(f"{path}: field 'split' leaves the {name} split empty; every split needs a sequence")
        splits[name] = SequenceSplit([_tensor_x(xs[k], tokens) for k in idx], [_tensor_y(ys[k], task_type) for k in idx])

    all_y = [y for s in splits.values() for y in s.ys]
    if task_type in (CLASSIFICATION, STEP_CLASSIFICATION):
        seen = int(max(int(y.max()) for y in all_y)) + 1
        if num_classes is not None and num_classes < seen:
            raise FormatError(f"{path}: field 'y' has class {seen - 1} but data.num_classes={num_classes}")
        output_size = num_classes or seen
    else:
        first = all_y[0]
        output_size = int(first.shape[-1]) if first.dim() >= 1 else 1
    if tokens:
        seen = int(max(int(x.max()) for s in splits.values() for x in s.xs)) + 1
        if vocab_size is not None and vocab_size < seen:
            raise FormatError(f"{path}: field 'x' has token {seen - 1} but data.vocab_size={vocab_size}")
        input_size = vocab_size or seen
    else:
        input_size = int(xs[0].shape[1])
    info = {"path": str(Path(path).expanduser()), "sizes": {name: len(s) for name, s in splits.items()}}
    return TaskData(
        name="sequences", task_type=task_type, input_size=input_size, output_size=output_size, metric=metric,
        tokens=tokens, info=info, **splits,
    )
