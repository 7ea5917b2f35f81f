"""Character-level language modelling (docs/tasks.md): bits per character, truncated back-propagation
through time in fixed-length chunks.

Corpora: `python_stdlib`, the source files of the running Python's standard library (real text that
is always present, no download), chosen and split deterministically by a hash of each file's path;
or `path=<any UTF-8 text file>`, split contiguously into train/validation/test. The vocabulary is
built from the training split; characters unseen there map to UNK (index 0) in validation and test.

TBPTT: a split is one long token stream. `StreamSplit.batches(B)` cuts it into B equal streams and
yields consecutive chunks of `chunk_length` steps, so batch k+1 continues batch k stream by stream
and the trainer (TaskData.stateful) carries the recurrent state across them. The training split
uses as many streams as the trainer's batch size, so the two cannot disagree; validation and test
use a fixed number of streams (`eval_streams`) so that their bits per character do not depend on
the batch size being tuned."""

from __future__ import annotations

import hashlib
import os
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

from .base import STEP_CLASSIFICATION, Batch, SequenceSplit, TaskData, register

UNK = 0
UNK_SYMBOL = "\ufffd"
SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test", "encodings", "pydoc_data"}


class StreamSplit(SequenceSplit):
    """A token stream read in order as B parallel streams of consecutive chunks (for TBPTT).

    `xs`/`ys` hold the stream's chunks in reading order (inputs and next-token targets), one stream.
    `streams` fixes the number of parallel streams; None follows the batch size asked for."""

    def __init__(self, tokens: Tensor, chunk_length: int, streams: int | None = None) -> None:
        if tokens.dim() != 1 or len(tokens) < 2:
            raise ValueError(f"a stream split needs a 1-D token tensor of at least 2 tokens, got shape {tuple(tokens.shape)}")
        if chunk_length < 1:
            raise ValueError(f"chunk_length must be at least 1, got {chunk_length}")
        self.tokens = tokens
        self.chunk_length = chunk_length
        self.streams = streams
        super().__init__(list(tokens[:-1].split(chunk_length)), list(tokens[1:].split(chunk_length)))

    def layout(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """(B, L) inputs and targets: the stream cut into B rows of equal length (the tail of fewer than
        B tokens is dropped)."""
        streams = self.streams or batch_size
        n = len(self.tokens) - 1
        if streams < 1:
            raise ValueError(f"the number of streams must be at least 1, got {streams}")
        if streams > n:
            raise ValueError(f"{streams} streams do not fit a split of {n} predicted tokens; lower the batch size or eval_streams")
        per = n // streams
        x = self.tokens[: streams * per].view(streams, per)
        y = self.tokens[1 : streams * per + 1].view(streams, per)
        return x, y

    def batches(
        self,
        batch_size: int,
        task_type: str = STEP_CLASSIFICATION,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
    ) -> Iterator[Batch]:
        if shuffle:
            raise ValueError("a stream split is read in order for truncated BPTT; it cannot be shuffled")
        x, y = self.layout(batch_size)
        for start in range(0, x.shape[1], self.chunk_length):
            cx = x[:, start : start + self.chunk_length].contiguous()
            cy = y[:, start : start + self.chunk_length].contiguous()
            yield Batch(cx, torch.full((cx.shape[0],), cx.shape[1], dtype=torch.long), cy)


def stdlib_files(stdlib: str | Path | None = None) -> list[tuple[str, Path]]:
    """(relative path, path) of the standard library's .py sources, test suites, codec tables and the
    generated pydoc topics left out, ordered by a hash of the relative path (a deterministic shuffle)."""
    stdlib = Path(stdlib or sysconfig.get_paths()["stdlib"])
    if not stdlib.is_dir():
        raise ValueError(f"the standard library sources are not at {stdlib}; use data.path=<a UTF-8 text file> instead")
    found = []
    for folder, dirs, files in os.walk(stdlib):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in files:
            if name.endswith(".py"):
                path = Path(folder) / name
                found.append((path.relative_to(stdlib).as_posix(), path))
    if not found:
        raise ValueError(f"no .py files under {stdlib}; use data.path=<a UTF-8 text file> instead")
    return sorted(found, key=lambda item: _hash(item[0]))


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _split_of(relative: str, val_fraction: float, test_fraction: float) -> str:
    u = int(_hash("split:" + relative)[:12], 16) / 16**12
    return "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"


def stdlib_corpus(
    max_chars: int, eval_chars: int, val_fraction: float, test_fraction: float, stdlib: str | Path | None = None,
    max_file_chars: int | None = 20_000,
) -> tuple[dict[str, str], dict]:
    """The three splits' text: files, each assigned to a split by its path's hash, taken in hash order
    until the split's cap; each file contributes at most its first `max_file_chars` characters, so that
    no single large file dominates a split (the last file is cut at the cap)."""
    caps = {"train": max_chars, "val": eval_chars, "test": eval_chars}
    parts: dict[str, list[str]] = {split: [] for split in caps}
    sizes = dict.fromkeys(caps, 0)
    files = dict.fromkeys(caps, 0)
    for relative, path in stdlib_files(stdlib):
        split = _split_of(relative, val_fraction, test_fraction)
        if sizes[split] >= caps[split]:
            if all(sizes[s] >= caps[s] for s in caps):
                break
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        text = text[: min(caps[split] - sizes[split], max_file_chars or len(text))]
        parts[split].append(text)
        sizes[split] += len(text)
        files[split] += 1
    texts = {split: "".join(chunks) for split, chunks in parts.items()}
    for split, text in texts.items():
        if len(text) < 2:
            raise ValueError(f"the python_stdlib corpus gave no {split} text; raise data.val_fraction/test_fraction or the caps")
    return texts, {"files": files, "python": sys.version.split()[0]}


def file_corpus(path: str | Path, max_chars: int, eval_chars: int, val_fraction: float, test_fraction: float) -> tuple[dict[str, str], dict]:
    """A UTF-8 text file split contiguously: the first part trains, then validation, then test."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"data.path={path} does not exist; give a UTF-8 text file") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"data.path={path} is not UTF-8 text (byte {err.start}); convert it or pick another file") from None
    n = len(text)
    n_test, n_val = int(n * test_fraction), int(n * val_fraction)
    n_train = n - n_val - n_test
    if min(n_train, n_val, n_test) < 2:
        raise ValueError(f"data.path={path} has {n} characters: too few for train/val/test splits of {1 - val_fraction - test_fraction:.2f}/{val_fraction}/{test_fraction}")
    texts = {
        "train": text[:n_train][:max_chars],
        "val": text[n_train : n_train + n_val][:eval_chars],
        "test": text[n_train + n_val :][:eval_chars],
    }
    return texts, {"path": str(path), "file_chars": n}


def build_vocabulary(text: str) -> list[str]:
    """UNK first, then the characters of `text` in code-point order."""
    return [UNK_SYMBOL] + sorted(set(text) - {UNK_SYMBOL})


def encode(text: str, vocabulary: list[str]) -> Tensor:
    index = {ch: k for k, ch in enumerate(vocabulary)}
    return torch.tensor([index.get(ch, UNK) for ch in text], dtype=torch.long)


@register("char_lm")
def build(
    corpus: str = "python_stdlib",
    path: str | None = None,
    max_chars: int = 500_000,
    eval_chars: int = 50_000,
    val_fraction: float = 0.05,
    test_fraction: float = 0.05,
    chunk_length: int = 100,
    eval_streams: int = 8,
    stdlib: str | None = None,
    max_file_chars: int | None = 20_000,
) -> TaskData:
    """Character-level LM; metric bpc. `path` (a UTF-8 file) overrides `corpus`; `max_chars` caps the
    training text, `eval_chars` validation and test, `max_file_chars` each stdlib file's share; `stdlib`
    points at another standard library."""
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} must be in (0, 1) and sum below 1")
    if max_chars < 2 or eval_chars < 2:
        raise ValueError(f"data.max_chars and data.eval_chars must be at least 2, got {max_chars} and {eval_chars}")
    if path:
        texts, facts = file_corpus(path, max_chars, eval_chars, val_fraction, test_fraction)
        corpus = "path"
    elif corpus == "python_stdlib":
        texts, facts = stdlib_corpus(max_chars, eval_chars, val_fraction, test_fraction, stdlib, max_file_chars)
    else:
        raise ValueError(f"unknown corpus {corpus!r}; use data.corpus=python_stdlib or data.path=<a UTF-8 text file>")
    vocabulary = build_vocabulary(texts["train"])
    tokens = {split: encode(text, vocabulary) for split, text in texts.items()}
    splits = {
        "train": StreamSplit(tokens["train"], chunk_length),
        "val": StreamSplit(tokens["val"], chunk_length, streams=eval_streams),
        "test": StreamSplit(tokens["test"], chunk_length, streams=eval_streams),
    }
    info = {
        "corpus": corpus,
        **facts,
        "chars": {split: len(text) for split, text in texts.items()},
        "sha256": {split: _hash(text)[:16] for split, text in texts.items()},
        "vocabulary_size": len(vocabulary),
        "unk_rate": {split: float((t == UNK).float().mean()) for split, t in tokens.items() if split != "train"},
        "bpc_uniform": float(torch.tensor(float(len(vocabulary))).log2()),
    }
    return TaskData(
        name="char_lm", task_type=STEP_CLASSIFICATION, input_size=len(vocabulary), output_size=len(vocabulary),
        metric="bpc", tokens=True, stateful=True, info=info, **splits,
    )
