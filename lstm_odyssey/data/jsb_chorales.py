"""JSB Chorales (docs/tasks.md), the paper's own music task: Bach chorales as quarter-note frames of
88-dim binary piano rolls (MIDI 21..108), next-frame prediction, the Boulanger-Lewandowski et al.
(2012) split of 229/76/77 chorales. The metric is the literature's: Bernoulli NLL summed over the 88
notes, averaged over all predicted frames of a split (comparable with LSTM 8.45 / GRU 8.43)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .base import MULTILABEL, SequenceSplit, TaskData, register
from .download import cached, find_or_download, options_key, sha256_of

FILE = "jsb-chorales-quarter.json"
RELATIVE = f"jsb_chorales/{FILE}"
URL = (
    "https://raw.githubusercontent.com/czhuang/JSB-Chorales-dataset/"
    "9a7f733ddb4ed91f48da64ac7f0f621c34aadd4d/jsb-chorales-quarter.json"
)
SHA256 = "2db9329f1881a1d3f49703ec556bf1d6f84b4f6c1d702c156536e93cf31e1c91"
LOWEST, HIGHEST = 21, 108  # A0 .. C8: the 88 keys of the piano
NOTES = HIGHEST - LOWEST + 1
SPLITS = {"train": "train", "val": "valid", "test": "test"}  # ours -> the JSON's keys
SIZES = {"train": 229, "val": 76, "test": 77}


def piano_roll(chorale: list, where: str = "chorale") -> torch.Tensor:
    """(frames, 88) float 0/1 from a list of frames, each a list of sounding MIDI pitches."""
    roll = torch.zeros(len(chorale), NOTES)
    for t, frame in enumerate(chorale):
        for pitch in frame:
            p = int(pitch)
            if not LOWEST <= p <= HIGHEST:
                raise ValueError(f"{where}, frame {t}: MIDI pitch {pitch} outside the piano range {LOWEST}..{HIGHEST}")
            roll[t, p - LOWEST] = 1.0
    return roll


def load_rolls(path: str | Path) -> dict[str, list[torch.Tensor]]:
    """The JSON's three splits as lists of piano rolls (our split names: train, val, test)."""
    with open(path) as fh:
        data = json.load(fh)
    missing = [key for key in SPLITS.values() if key not in data]
    if missing:
        raise ValueError(f"{path} lacks the split(s) {', '.join(missing)}; expected keys train, valid, test")
    return {
        ours: [piano_roll(ch, f"{theirs}[{k}]") for k, ch in enumerate(data[theirs])]
        for ours, theirs in SPLITS.items()
    }


@register("jsb_chorales")
def build(
    root: str | None = None,
    url: str = URL,
    sha256: str | None = SHA256,
    cache_dir: str | None = None,
    max_chorales: int | None = None,
) -> TaskData:
    """Next-frame prediction on JSB Chorales: x = frames[:-1], y = frames[1:] of each chorale.

    root: folder with jsb_chorales/jsb-chorales-quarter.json (or the file itself); else
    $LSTM_ODYSSEY_DATA, else the user cache, where it is downloaded from `url` when missing.
    max_chorales: keep only the first n chorales of each split (quick tests only).
    """
    path = find_or_download(RELATIVE, url, sha256 or None, root=root, verify=bool(sha256))
    checksum = sha256 if sha256 else sha256_of(path)
    rolls = cached("jsb_chorales", options_key(source=checksum, lowest=LOWEST, highest=HIGHEST, v=1),
                   lambda: load_rolls(path), folder=cache_dir)
    splits = {}
    for split, chorales in rolls.items():
        if max_chorales is not None:
            chorales = chorales[:max_chorales]
        splits[split] = SequenceSplit([roll[:-1] for roll in chorales], [roll[1:] for roll in chorales])
    info = {
        "source": str(path),
        "sha256": checksum,
        "chorales": {split: len(s) for split, s in splits.items()},
        "predicted_frames": {split: int(sum(len(x) for x in s.xs)) for split, s in splits.items()},
        "published_test_nll": {"lstm_bai2018": 8.45, "gru_bai2018": 8.43, "rnn_bai2018": 8.91, "tcn_bai2018": 8.10},
    }
    return TaskData(
        name="jsb_chorales", task_type=MULTILABEL, input_size=NOTES, output_size=NOTES, metric="nll",
        info=info, **splits,
    )
