"""The common format every task hands to the trainer: splits of variable-length sequences, a task
type that fixes the loss and metrics, and batches padded only to their own longest sequence."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

# Task types (the model's head, loss and metrics follow from these)
CLASSIFICATION = "classification"  # one class per sequence, read at its last valid step; y: (B,) long
REGRESSION = "regression"  # one real vector per sequence; y: (B, D) float
MULTILABEL = "multilabel"  # per step, D independent Bernoulli targets (piano rolls); y: (B, T, D) float
STEP_CLASSIFICATION = "step_classification"  # per step, one class (language models); y: (B, T) long
TASK_TYPES = (CLASSIFICATION, REGRESSION, MULTILABEL, STEP_CLASSIFICATION)
SEQUENCE_TASKS = (CLASSIFICATION, REGRESSION)  # one target per sequence, read from the final state
PAD_CLASS = -100  # per-step class target past a sequence's length (ignored by the loss)


@dataclass
class Batch:
    x: Tensor  # (B, T, F) float features or (B, T) long tokens
    lengths: Tensor  # (B,) long, on the CPU
    y: Tensor

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.x.to(device), self.lengths, self.y.to(device))

    def __len__(self) -> int:
        return self.x.shape[0]


@dataclass
class SequenceSplit:
    """One split: `xs[k]` is (T_k, F) float or (T_k,) long; `ys[k]` the target of sequence k
    (a scalar/vector for sequence tasks, (T_k, ...) for per-step tasks)."""

    xs: list[Tensor]
    ys: list[Tensor]

    def __post_init__(self) -> None:
        if len(self.xs) != len(self.ys):
            raise ValueError(f"split has {len(self.xs)} inputs but {len(self.ys)} targets")

    def __len__(self) -> int:
        return len(self.xs)

    @classmethod
    def from_tensors(cls, x: Tensor, y: Tensor, lengths: Tensor | None = None) -> SequenceSplit:
        """From padded (N, T, ...) inputs; per-step targets are cut to each length too."""
        if lengths is None:
            return cls(list(x.unbind(0)), list(y.unbind(0)))
        per_step = y.dim() >= 2 and y.shape[1] == x.shape[1]
        xs = [x[k, :n] for k, n in enumerate(lengths.tolist())]
        ys = [y[k, :n] if per_step else y[k] for k, n in enumerate(lengths.tolist())]
        return cls(xs, ys)

    def batches(
        self,
        batch_size: int,
        task_type: str,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
    ) -> Iterator[Batch]:
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        for start in range(0, len(self), batch_size):
            idx = order[start : start + batch_size].tolist()
            yield collate([self.xs[i] for i in idx], [self.ys[i] for i in idx], task_type)


def collate(xs: list[Tensor], ys: list[Tensor], task_type: str) -> Batch:
    lengths = torch.tensor([len(x) for x in xs], dtype=torch.long)
    x = pad_sequence(xs, batch_first=True)
    if task_type == STEP_CLASSIFICATION:
        y = pad_sequence(ys, batch_first=True, padding_value=PAD_CLASS)
    elif task_type == MULTILABEL:
        y = pad_sequence(ys, batch_first=True)
    else:
        y = torch.stack(ys)
    return Batch(x, lengths, y)


@dataclass
class TaskData:
    """A task ready to train on: three splits plus what the model and the record need to know."""

    name: str
    task_type: str
    train: SequenceSplit
    val: SequenceSplit
    test: SequenceSplit
    input_size: int  # feature size, or the vocabulary size when `tokens`
    output_size: int  # classes, regression dims or labels
    metric: str  # the primary metric; the objective is its validation value (minimised)
    tokens: bool = False
    tolerance: float | None = None  # regression: a sequence is "solved" when every |error| < tolerance
    stateful: bool = False  # batches are consecutive chunks of B streams: carry the state (TBPTT)
    info: dict = field(default_factory=dict)  # baselines and facts for the record (e.g. mse_baseline)

    def __post_init__(self) -> None:
        if self.task_type not in TASK_TYPES:
            raise ValueError(f"unknown task type {self.task_type!r}; choose one of {', '.join(TASK_TYPES)}")

    def split(self, name: str) -> SequenceSplit:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


def split_sizes(n_train: int, n_val: int, n_test: int) -> dict[str, int]:
    """The sizes of generated splits by name, refusing empty ones with the option to fix."""
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    for split, n in sizes.items():
        if n < 1:
            raise ValueError(f"n_{split} must be at least 1, got {n}")
    return sizes


Builder = Callable[..., TaskData]
REGISTRY: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    """Register `build(**options) -> TaskData` under `name` (the `data.name` config key). Its keyword arguments
    are the task's `data.*` options, and their defaults the config's (schema.task_defaults)."""

    def wrap(fn: Builder) -> Builder:
        REGISTRY[name] = fn
        return fn

    return wrap
