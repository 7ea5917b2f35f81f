"""UEA/UCR time-series classification through `aeon` (docs/tasks.md: the open stand-ins for TIMIT and
IAM Online). JapaneseVowels (270/370 utterances, 12 LPC cepstra, lengths 7..29, 9 speakers) ships
inside aeon's wheel and loads offline; other archive names (CharacterTrajectories, SpokenArabicDigits,
...) are fetched by aeon into the data folder where a network is available.

Lengths stay as they are (batches pad only to their own longest sequence), features are
standardised with the training split's statistics, and a validation split is carved from the
training split with a fixed seed. Metric: classification error."""

from __future__ import annotations

from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch

from .base import CLASSIFICATION, SequenceSplit, TaskData, register
from .download import cache_dir as user_cache_dir
from .download import cached, options_key

# The UEA multivariate archive (Bagnall et al. 2018) plus the speech/handwriting stand-ins of docs/tasks.md:
# each is also a task name, so that `data=uea data.name=JapaneseVowels` works. Any other UEA/UCR
# name goes through `data.name=uea data.dataset=<Name>`.
UEA_NAMES = (
    "ArticularyWordRecognition", "AtrialFibrillation", "BasicMotions", "CharacterTrajectories", "Cricket",
    "DuckDuckGeese", "ERing", "EigenWorms", "Epilepsy", "EthanolConcentration", "FaceDetection",
    "FingerMovements", "HandMovementDirection", "Handwriting", "Heartbeat", "InsectWingbeat", "JapaneseVowels",
    "LSST", "Libras", "MotorImagery", "NATOPS", "PEMS-SF", "PenDigits", "PhonemeSpectra", "RacketSports",
    "SelfRegulationSCP1", "SelfRegulationSCP2", "SpokenArabicDigits", "StandWalkJump", "UWaveGestureLibrary",
)
DEFAULT = "JapaneseVowels"


def _aeon_version() -> str:
    """aeon's version, without importing it (slow); the missing-extra error when it is absent."""
    try:
        return version("aeon")
    except PackageNotFoundError:
        raise ImportError(
            'the UEA tasks need the aeon library: pip install "lstm-odyssey[uea]" (or pip install aeon)'
        ) from None


def _aeon_load():
    try:
        from aeon.datasets import load_classification
    except ImportError:
        raise ImportError(
            'the UEA tasks need the aeon library: pip install "lstm-odyssey[uea]" (or pip install aeon)'
        ) from None
    return load_classification


def _shipped(dataset: str) -> bool:
    """Whether aeon's wheel carries the dataset (then it loads offline from there)."""
    try:
        import aeon.datasets

        return (Path(aeon.datasets.__file__).parent / "data" / dataset / f"{dataset}_TRAIN.ts").is_file()
    except ImportError:
        return False


def load_raw(dataset: str, root: str | None = None) -> dict:
    """Train and test series as lists of (T, C) float32 arrays and string labels."""
    load = _aeon_load()
    extract = None if _shipped(dataset) else str(Path(root).expanduser() / "uea" if root else user_cache_dir() / "uea")
    out = {}
    for split in ("train", "test"):
        try:
            X, y = load(dataset, split=split, extract_path=extract)
        except Exception as err:  # aeon raises URLError, ValueError, OSError ... in many wordings
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ValueError(
                f"UEA dataset {dataset!r} could not be loaded ({type(err).__name__}: {message}); check the name "
                f"(e.g. {DEFAULT}) and, for datasets that are not shipped with aeon, the network or data.root"
            ) from None
        series = [np.asarray(x, dtype=np.float32).T for x in X]  # aeon: (channels, time) per case
        out[split] = (series, [str(label) for label in y])
    return out


def _prepare(dataset: str, root: str | None, val_fraction: float, seed: int) -> dict:
    raw = load_raw(dataset, root)
    train_x, train_y = raw["train"]
    test_x, test_y = raw["test"]
    classes = sorted(set(train_y) | set(test_y), key=_label_key)
    index = {c: k for k, c in enumerate(classes)}
    n = len(train_x)
    n_val = int(round(n * val_fraction))
    if not 0 < n_val < n:
        raise ValueError(f"data.val_fraction={val_fraction} leaves no validation or no training series out of {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    val_idx, fit_idx = sorted(order[:n_val]), sorted(order[n_val:])
    # standardise each channel with the statistics of the steps of the training part (NaNs ignored)
    steps = np.concatenate([train_x[i] for i in fit_idx], axis=0)
    mean = np.nanmean(steps, axis=0)
    std = np.nanstd(steps, axis=0)
    std[~(std > 0)] = 1.0

    def tensors(xs, ys, idx):
        return (
            [torch.from_numpy(np.nan_to_num((xs[i] - mean) / std)).float() for i in idx],
            [torch.tensor(index[ys[i]]) for i in idx],
        )

    return {
        "train": tensors(train_x, train_y, fit_idx),
        "val": tensors(train_x, train_y, val_idx),
        "test": tensors(test_x, test_y, range(len(test_x))),
        "classes": classes,
        "mean": torch.from_numpy(mean),
        "std": torch.from_numpy(std),
    }


def _label_key(label: str):
    """Numeric labels in numeric order ("2" before "10"), others alphabetically."""
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def build(
    name: str = "uea",
    dataset: str | None = None,
    root: str | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    cache_dir: str | None = None,
) -> TaskData:
    """A UEA/UCR classification dataset by name: one class per sequence, classification error."""
    if name != "uea" and dataset not in (None, name):
        raise ValueError(f"data.name={name} already names the dataset; drop data.dataset={dataset} or set data.name=uea")
    dataset = dataset or (name if name != "uea" else DEFAULT)
    aeon_version = _aeon_version()  # the missing-extra error before anything else
    key = options_key(dataset=dataset, val_fraction=val_fraction, seed=seed, aeon=aeon_version, v=1)
    prepared = cached(f"uea-{dataset}", key, lambda: _prepare(dataset, root, val_fraction, seed), folder=cache_dir)
    splits = {split: SequenceSplit(*prepared[split]) for split in ("train", "val", "test")}
    lengths = [len(x) for split in splits.values() for x in split.xs]
    info = {
        "dataset": dataset,
        "classes": list(prepared["classes"]),
        "sizes": {split: len(s) for split, s in splits.items()},
        "length_range": [min(lengths), max(lengths)],
    }
    return TaskData(
        name=dataset, task_type=CLASSIFICATION, input_size=splits["train"].xs[0].shape[1],
        output_size=len(prepared["classes"]), metric="error", info=info, **splits,
    )


register("uea")(partial(build, name="uea"))
for _dataset in UEA_NAMES:
    register(_dataset)(partial(build, name=_dataset))
