"""The Keras-style summary and the `imdb_keras` experiment: seed 000's table (Embedding 320,000, LSTM 8,320,
Dense 33, total 328,353) reproduced from the preset, and the SimpleRNN model it is compared with."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from lstm_odyssey.models import SequenceModel
from lstm_odyssey.summary import rows, summary

ROOT = Path(__file__).resolve().parents[1]

# seed 000's table, as printed by Keras's model.summary()
SEED_TABLE = [("embedding", "(None, 500, 32)", 320000), ("lstm", "(None, 32)", 8320), ("dense", "(None, 1)", 33)]


def table_rows(text: str) -> list[tuple[str, str, int]]:
    """(name, shape, params) of each layer line of a printed summary."""
    found = []
    for line in text.splitlines():
        m = re.match(r"^(\S+) \(([^)]*)\)\s+(\([^)]*\)|\?)\s+(\d+)$", line.strip())
        if m:
            found.append((m.group(1), m.group(3), int(m.group(4))))
    return found


def write_fake_imdb(folder: Path) -> None:
    rng = np.random.default_rng(0)
    def reviews(n: int) -> np.ndarray:
        out = np.empty(n, dtype=object)
        for k in range(n):
            out[k] = rng.integers(1, 12000, size=int(rng.integers(5, 40))).tolist()
        return out
    (folder / "imdb").mkdir(parents=True)
    np.savez(folder / "imdb" / "imdb.npz", x_train=reviews(10), y_train=np.arange(10) % 2,
             x_test=reviews(5), y_test=np.arange(5) % 2)


def experiment_model(tmp_path, monkeypatch, *overrides: str) -> tuple[SequenceModel, dict]:
    """The model `lstm-odyssey-train +experiment=imdb_keras ...` builds, on a stand-in imdb.npz."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from lstm_odyssey.data import build_task
    from lstm_odyssey.train import build_model

    monkeypatch.delenv("LSTM_ODYSSEY_DATA", raising=False)
    monkeypatch.setenv("LSTM_ODYSSEY_CACHE", str(tmp_path / "cache"))
    write_fake_imdb(tmp_path / "data")
    with initialize_config_module("lstm_odyssey.conf", version_base="1.3"):
        cfg = compose("train", overrides=["+experiment=imdb_keras", f"data.root={tmp_path / 'data'}", "data.sha256=null",
                                          *overrides])
    cfg = OmegaConf.to_container(cfg, resolve=True)
    task = build_task(**cfg["data"])
    return build_model(cfg, task), cfg


def test_imdb_keras_preset_reproduces_the_seed_table(tmp_path, monkeypatch) -> None:
    model, cfg = experiment_model(tmp_path, monkeypatch)
    text = model.summary(seq_len=cfg["data"]["maxlen"])
    assert table_rows(text) == SEED_TABLE
    assert "lstm (LSTM)" in text and "embedding (Embedding)" in text and "dense (Dense)" in text
    assert "Total params: 328,353" in text
    assert "Trainable params: 328,353" in text
    assert "Non-trainable params: 0" in text
    # the seed's arithmetic: 8320 = 2080 x 4, 2080 = 32 x (32 + 32) + 32
    assert 8320 == 4 * (32 * (32 + 32) + 32) == model.rnn.num_parameters()
    assert model.num_parameters() == 328353
    assert cfg["cell"]["name"] == "np" and cfg["data"]["padding"] == "pre" and cfg["model"]["init"] == "keras"


def test_simple_rnn_in_its_place(tmp_path, monkeypatch) -> None:
    model, cfg = experiment_model(tmp_path, monkeypatch, "cell=rnn")
    text = model.summary(seq_len=500)
    # Keras's SimpleRNN(32) on 32-dim embeddings: 32 x (32 + 32) + 32 = 2,080; the LSTM has 4 times as many
    assert table_rows(text) == [("embedding", "(None, 500, 32)", 320000), ("simple_rnn", "(None, 32)", 2080),
                                ("dense", "(None, 1)", 33)]
    assert "Total params: 322,113" in text
    assert 4 * 2080 == 8320


def test_gru_row_matches_torch_gru() -> None:
    model = SequenceModel("classification", 10000, 1, hidden_size=32, cell="gru", tokens=True, embedding_dim=32)
    torch_gru = sum(p.numel() for p in nn.GRU(32, 32).parameters())  # Keras GRU(reset_after=True) too: 6,336
    assert [r.params for r in rows(model, 500)] == [320000, torch_gru, 33]
    assert torch_gru == 6336


def test_stacked_bidirectional_rows_add_up_and_shapes_follow_the_task() -> None:
    model = SequenceModel("step_classification", 50, 50, hidden_size=8, cell="vanilla", tokens=True, embedding_dim=4,
                          num_layers=2, bidirectional=True)
    table = rows(model)
    assert [r.name for r in table] == ["embedding", "lstm_0", "lstm_1", "dense"]
    assert sum(r.params for r in table) == model.num_parameters()
    # per layer and direction the vanilla count 4N(M+N) + 4N + 3N; layer 1 reads both directions (2N)
    assert table[1].params == 2 * (4 * 8 * (4 + 8) + 4 * 8 + 3 * 8)
    assert table[2].params == 2 * (4 * 8 * (16 + 8) + 4 * 8 + 3 * 8)
    assert [r.shape for r in table] == [(None, None, 4), (None, None, 16), (None, None, 16), (None, None, 50)]
    assert "Bidirectional LSTM vanilla" in summary(model)


def test_frozen_parameters_count_as_non_trainable() -> None:
    model = SequenceModel("regression", 3, 1, hidden_size=4, cell="np")
    model.head.weight.requires_grad_(False)
    text = summary(model, seq_len=7)
    total = model.num_parameters()
    assert f"Total params: {total:,}" in text
    assert f"Trainable params: {total - 4:,}" in text and "Non-trainable params: 4" in text
    assert table_rows(text) == [("lstm", "(None, 4)", 4 * 4 * (3 + 4) + 4 * 4), ("dense", "(None, 1)", 5)]


def test_any_module_gets_its_children() -> None:
    text = summary(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)))
    assert table_rows(text) == [("0", "?", 16), ("1", "?", 0), ("2", "?", 10)]
    assert "Total params: 26" in text


@pytest.mark.parametrize("cell", ["vanilla", "cifg", "fgr", "grupp", "gru_cho"])
def test_rows_add_up_for_every_family(cell: str) -> None:
    model = SequenceModel("classification", 20, 3, hidden_size=6, cell=cell, tokens=True, embedding_dim=5)
    assert sum(r.params for r in rows(model)) == model.num_parameters()
    assert rows(model)[1].params == model.rnn.spec.num_parameters(5, 6)
