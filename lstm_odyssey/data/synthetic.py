"""Long-time-lag probes (docs/tasks.md): the adding problem in the 1997 and Bai et al. forms, and
temporal order 6a. Generated from a seed into fixed train/validation/test splits."""

from __future__ import annotations

import torch

from .base import CLASSIFICATION, REGRESSION, SequenceSplit, TaskData, register, split_sizes


def adding_sequences(n: int, length: int, form: str, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, length, 2) pairs (value, marker) and (n, 1) targets.

    1997 (Hochreiter & Schmidhuber, exp. 4): values U[-1, 1]; the first marker among the first 10
    steps, the second among the first length/2 - 1; target 0.5 + (X1 + X2) / 4.
    bai (Bai et al. 2018): values U[0, 1], one marker in each half, target X1 + X2.
    """
    form = str(form)  # `data.form=1997` arrives from the command line as an int
    if form == "1997":
        if length < 22:
            raise ValueError(f"the 1997 adding problem needs length >= 22 (markers in the first 10 and first T/2-1 steps), got {length}")
        values = torch.rand(n, length, generator=generator) * 2 - 1
        first = torch.randint(0, 10, (n,), generator=generator)
        # second marker: among the first length/2 - 1 steps, different from the first
        second = torch.randint(0, length // 2 - 2, (n,), generator=generator)
        second = second + (second >= first).long()
    elif form == "bai":
        if length < 2:
            raise ValueError(f"the adding problem needs length >= 2, got {length}")
        values = torch.rand(n, length, generator=generator)
        half = length // 2
        first = torch.randint(0, half, (n,), generator=generator)
        second = torch.randint(half, length, (n,), generator=generator)
    else:
        raise ValueError(f"adding form must be '1997' or 'bai', not {form!r}")
    markers = torch.zeros(n, length)
    rows = torch.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    total = values[rows, first] + values[rows, second]
    target = 0.5 + total / 4 if form == "1997" else total
    return torch.stack([values, markers], dim=-1), target.unsqueeze(-1)


@register("adding")
def build(
    length: int = 50,
    form: str = "bai",
    n_train: int = 5000,
    n_val: int = 1000,
    n_test: int = 1000,
    seed: int = 0,
    tolerance: float = 0.04,
) -> TaskData:
    """The adding problem; metric MSE. Bai's form reports the always-answer-1 baseline (≈ 0.1767),
    the 1997 form the share of sequences solved (|error| < tolerance)."""
    form = str(form)
    generator = torch.Generator().manual_seed(seed)
    splits = {}
    for split, n in split_sizes(n_train, n_val, n_test).items():
        x, y = adding_sequences(n, length, form, generator)
        splits[split] = SequenceSplit.from_tensors(x, y)
    test_y = torch.stack(splits["test"].ys)
    if form == "bai":  # always answering 1; Bai et al. quote 0.1767, the expectation is 1/6
        info = {"mse_baseline": float(((test_y - 1) ** 2).mean()), "baseline": "always answer 1", "bai_quoted_baseline": 0.1767}
    else:
        info = {"mse_baseline": float(((test_y - 0.5) ** 2).mean()), "baseline": "always answer 0.5"}
    return TaskData(
        name="adding", task_type=REGRESSION, input_size=2, output_size=1, metric="mse",
        tolerance=tolerance if form == "1997" else None, info=info, **splits,
    )


TEMPORAL_ORDER_SYMBOLS = ("a", "b", "c", "d", "X", "Y", "B", "E")


def temporal_order_sequences(n: int, generator: torch.Generator, min_length: int = 100, max_length: int = 110):
    """Exp. 6a: B, distractors a-d, X/Y at t1 in [10, 20] and t2 in [50, 60], E; class = XX XY YX YY."""
    xs, ys = [], []
    lengths = torch.randint(min_length, max_length + 1, (n,), generator=generator)
    for length in lengths.tolist():
        symbols = torch.randint(0, 4, (length,), generator=generator)
        symbols[0], symbols[-1] = 6, 7  # B ... E
        t1 = int(torch.randint(10, 21, (1,), generator=generator))
        t2 = int(torch.randint(50, 61, (1,), generator=generator))
        pick = torch.randint(0, 2, (2,), generator=generator)
        symbols[t1], symbols[t2] = 4 + pick[0], 4 + pick[1]
        xs.append(torch.nn.functional.one_hot(symbols, len(TEMPORAL_ORDER_SYMBOLS)).float())
        ys.append(pick[0] * 2 + pick[1])
    return xs, ys


@register("temporal_order")
def build_temporal_order(
    n_train: int = 2000, n_val: int = 500, n_test: int = 500, seed: int = 0,
    min_length: int = 100, max_length: int = 110,
) -> TaskData:
    """Temporal order 6a: 4 classes, classification error. Lengths vary (100-110 by default)."""
    if not 61 <= min_length <= max_length:
        raise ValueError(f"temporal order needs 61 <= min_length <= max_length, got {min_length}..{max_length}")
    generator = torch.Generator().manual_seed(seed)
    splits = {
        split: SequenceSplit(*temporal_order_sequences(n, generator, min_length, max_length))
        for split, n in split_sizes(n_train, n_val, n_test).items()
    }
    return TaskData(
        name="temporal_order", task_type=CLASSIFICATION, input_size=len(TEMPORAL_ORDER_SYMBOLS),
        output_size=4, metric="error", info={"error_baseline": 0.75}, **splits,
    )
