"""The copy-memory task of Bai et al. (2018), docs/tasks.md: remember 10 symbols across T blank steps.

Input (length T + 20, tokens): 10 symbols drawn from 1..8, then T - 1 blanks (0), then 11 delimiters
(9). Target per step: blank (0) for the first T + 10 steps, then the 10 symbols. This is Bai et al.'s
generator (`copy_memory/utils.py`), so the per-step cross-entropy is comparable with their figures;
the memoryless baseline (blanks, then a uniform guess among 8 symbols) is 10 ln 8 / (T + 20)."""

from __future__ import annotations

import math

import torch

from .base import STEP_CLASSIFICATION, SequenceSplit, TaskData, register, split_sizes

BLANK, DELIMITER = 0, 9
VOCAB = 10  # 0 blank, 1..8 symbols, 9 delimiter
SYMBOLS = 8


def copy_sequences(n: int, blank_length: int, memory_length: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, T + 2m) long inputs and targets (T = blank_length, m = memory_length)."""
    seq = torch.randint(1, SYMBOLS + 1, (n, memory_length), generator=generator)
    blanks = torch.full((n, blank_length - 1), BLANK)
    delimiters = torch.full((n, memory_length + 1), DELIMITER)
    x = torch.cat([seq, blanks, delimiters], dim=1)
    y = torch.cat([torch.full((n, memory_length + blank_length), BLANK), seq], dim=1)
    return x, y


@register("copy_memory")
def build(
    blank_length: int = 100,
    memory_length: int = 10,
    n_train: int = 10000,
    n_val: int = 1000,
    n_test: int = 1000,
    seed: int = 0,
) -> TaskData:
    """Copy memory with T = blank_length blanks; metric: per-step cross-entropy (nll)."""
    if blank_length < 1 or memory_length < 1:
        raise ValueError(f"copy_memory needs blank_length >= 1 and memory_length >= 1, got {blank_length} and {memory_length}")
    generator = torch.Generator().manual_seed(seed)
    splits = {}
    for split, n in split_sizes(n_train, n_val, n_test).items():
        x, y = copy_sequences(n, blank_length, memory_length, generator)
        splits[split] = SequenceSplit.from_tensors(x, y)
    length = blank_length + 2 * memory_length
    info = {
        "length": length,
        "nll_baseline": memory_length * math.log(SYMBOLS) / length,
        "baseline": "blanks, then a uniform guess among the 8 symbols",
    }
    return TaskData(
        name="copy_memory", task_type=STEP_CLASSIFICATION, input_size=VOCAB, output_size=VOCAB, metric="nll",
        tokens=True, info=info, **splits,
    )
