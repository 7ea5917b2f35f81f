"""data=imdb: Keras's load_data / pad_sequences conventions on a small npz written here in imdb.npz's format,
the validation split, the binary (one-logit) head, and the download machinery's one-line errors."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from lstm_odyssey.data import build_task
from lstm_odyssey.data.base import Batch
from lstm_odyssey.data.download import DownloadError
from lstm_odyssey.data.imdb import SHA256, URL, load_data, pad_sequences
from lstm_odyssey.models import SequenceModel

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = os.environ.get("LSTM_ODYSSEY_DATA")  # read before the fixture below hides it from the other tests


def object_array(lists: list[list[int]]) -> np.ndarray:
    out = np.empty(len(lists), dtype=object)
    for k, x in enumerate(lists):
        out[k] = list(x)
    return out


def write_npz(path: Path, x_train, y_train, x_test, y_test) -> str:
    """imdb.npz's layout: object arrays of int lists and int label arrays; returns the file's sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        np.savez(fh, x_train=object_array(x_train), y_train=np.asarray(y_train, dtype=np.int64),
                 x_test=object_array(x_test), y_test=np.asarray(y_test, dtype=np.int64))
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """No shared data folder and a private cache: every test sees only the files it writes."""
    monkeypatch.delenv("LSTM_ODYSSEY_DATA", raising=False)
    monkeypatch.setenv("LSTM_ODYSSEY_CACHE", str(tmp_path / "cache"))


# -- keras.datasets.imdb.load_data ------------------------------------------------------------------


def test_load_data_marks_shifts_and_caps_the_vocabulary(tmp_path) -> None:
    path = tmp_path / "imdb.npz"
    write_npz(path, [[1, 2, 3], [4, 5, 6, 7, 8]], [0, 1], [[9], [2, 2, 1]], [1, 0])
    (xtr, ytr), (xte, yte) = load_data(path, num_words=8, seed=0)
    # worked by hand: each word w becomes w + 3 (index_from), the review starts with 1 (start_char),
    # indices >= 8 (num_words) become 2 (oov_char). Both splits are shuffled; the pairs stay together.
    expected_train = {(1, 4, 5, 6): 0, (1, 7, 2, 2, 2, 2): 1}
    expected_test = {(1, 2): 1, (1, 5, 5, 4): 0}
    assert {tuple(x): int(y) for x, y in zip(xtr, ytr)} == expected_train
    assert {tuple(x): int(y) for x, y in zip(xte, yte)} == expected_test
    assert len(xtr) == 2 and len(xte) == 2


def test_load_data_shuffles_like_keras_with_seed_113(tmp_path) -> None:
    path = tmp_path / "imdb.npz"
    n = 30
    write_npz(path, [[k + 1] for k in range(n)], [k % 2 for k in range(n)], [[k + 1] for k in range(n)], [0] * n)
    (xtr, ytr), (xte, _) = load_data(path, seed=113)
    # Keras: indices = arange(n); RandomState(seed).shuffle(indices) for train, then the same rng for test
    rng = np.random.RandomState(113)
    order_train = np.arange(n)
    rng.shuffle(order_train)
    order_test = np.arange(n)
    rng.shuffle(order_test)
    assert [x[1] - 3 - 1 for x in xtr] == order_train.tolist()
    assert [x[1] - 3 - 1 for x in xte] == order_test.tolist()
    assert order_train.tolist() != list(range(n))  # it did shuffle
    assert [int(y) for y in ytr] == [k % 2 for k in order_train]  # labels travel with their reviews


def test_load_data_skip_top_no_oov_and_long_review_filter(tmp_path) -> None:
    path = tmp_path / "imdb.npz"
    write_npz(path, [[1, 2, 3, 4], [1, 1]], [1, 0], [[5, 6]], [1])
    # skip_top=5: indices below 5 after the shift (the start mark 1 and word 1 -> 4) become oov, as in Keras
    (xtr, _), _ = load_data(path, num_words=100, skip_top=5, seed=0)
    assert sorted(map(tuple, xtr)) == [(2, 2, 2), (2, 2, 5, 6, 7)]
    # oov_char=None drops out-of-vocabulary words instead of marking them
    (xtr, _), (xte, _) = load_data(path, num_words=7, oov_char=None, seed=0)
    assert sorted(map(tuple, xtr)) == [(1, 4, 4), (1, 4, 5, 6)]
    assert [tuple(x) for x in xte] == [(1,)]  # 5 + 3 and 6 + 3 are beyond num_words
    # Keras's maxlen argument of load_data drops reviews of that length or longer (start mark included)
    (xtr, ytr), _ = load_data(path, load_maxlen=4, seed=0)
    assert [tuple(x) for x in xtr] == [(1, 4, 4)] and ytr.tolist() == [0]
    with pytest.raises(ValueError, match="load_maxlen"):
        load_data(path, load_maxlen=2, seed=0)


def test_load_data_without_start_char_only_shifts(tmp_path) -> None:
    path = tmp_path / "imdb.npz"
    write_npz(path, [[1, 2]], [1], [[3]], [0])
    (xtr, _), (xte, _) = load_data(path, start_char=None, seed=0)
    assert xtr == [[4, 5]] and xte == [[6]]
    (xtr, _), _ = load_data(path, start_char=None, index_from=0, seed=0)
    assert xtr == [[1, 2]]


def test_pad_sequences_follows_keras() -> None:
    seqs = [[1, 2, 3, 4, 5], [6, 7]]
    assert pad_sequences(seqs, 3) == [[3, 4, 5], [0, 6, 7]]  # Keras defaults: pre, pre
    assert pad_sequences(seqs, 3, padding="post") == [[3, 4, 5], [6, 7, 0]]
    assert pad_sequences(seqs, 3, truncating="post") == [[1, 2, 3], [0, 6, 7]]
    assert pad_sequences(seqs, 3, padding="none") == [[3, 4, 5], [6, 7]]
    assert pad_sequences(seqs, None) == [[1, 2, 3, 4, 5], [0, 0, 0, 6, 7]]
    with pytest.raises(ValueError, match="data.padding"):
        pad_sequences(seqs, 3, padding="middle")
    with pytest.raises(ValueError, match="data.truncating"):
        pad_sequences(seqs, 3, truncating="middle")


# -- the task ----------------------------------------------------------------------------------------


def fake_reviews(n: int, seed: int = 0) -> tuple[list[list[int]], list[int]]:
    """Review k starts with word 1000 + k (its identity after the shift) and holds a few common words."""
    rng = np.random.default_rng(seed)
    xs = [[1000 + k] + rng.integers(1, 50, size=int(rng.integers(2, 12))).tolist() for k in range(n)]
    return xs, [k % 2 for k in range(n)]


@pytest.fixture
def imdb_root(tmp_path) -> tuple[Path, str]:
    xtr, ytr = fake_reviews(20)
    xte, yte = fake_reviews(10, seed=1)
    sha = write_npz(tmp_path / "data" / "imdb" / "imdb.npz", xtr, ytr, xte, yte)
    return tmp_path / "data", sha


def test_task_pads_pre_to_maxlen_and_splits_like_validation_split(imdb_root) -> None:
    root, sha = imdb_root
    task = build_task("imdb", root=str(root), sha256=sha, num_words=2000, maxlen=6, padding="pre", val_fraction=0.2)
    assert (task.task_type, task.input_size, task.output_size, task.tokens, task.metric) == ("classification", 2000, 1, True, "nll")
    assert (len(task.train), len(task.val), len(task.test)) == (16, 4, 10)
    for split in (task.train, task.val, task.test):
        assert all(len(x) == 6 for x in split.xs)  # pad_sequences(maxlen=6): every review exactly 6 tokens
        assert all(int(x.max()) < 2000 and x.dtype == torch.long for x in split.xs)
    # validation = the last 20 % of Keras's shuffled training order, training = the rest (fit's validation_split)
    rng = np.random.RandomState(113)
    order = np.arange(20)
    rng.shuffle(order)
    xtr, _ = fake_reviews(20)

    def identity(x: torch.Tensor, k: int) -> bool:
        return x.tolist() == pad_sequences([[1] + [w + 3 for w in xtr[k]]], 6)[0]

    assert all(identity(x, int(k)) for x, k in zip(task.train.xs, order[:16]))
    assert all(identity(x, int(k)) for x, k in zip(task.val.xs, order[16:]))
    assert [int(y) for y in task.val.ys] == [int(k) % 2 for k in order[16:]]


def test_task_without_padding_keeps_lengths_and_truncates_pre(imdb_root) -> None:
    root, sha = imdb_root
    task = build_task("imdb", root=str(root), sha256=sha, num_words=2000, maxlen=5, padding="none")
    full = build_task("imdb", root=str(root), sha256=sha, num_words=2000, maxlen=None, padding="none")
    for cut, whole in zip(task.train.xs, full.train.xs):
        assert cut.tolist() == whole.tolist()[-5:]  # 'pre' truncation keeps the end of the review
        assert 0 not in cut.tolist()  # no padding token anywhere
    assert {len(x) for x in full.train.xs} != {len(full.train.xs[0])}  # the lengths really vary
    # num_words caps the vocabulary: the identity words 1000+k+3 >= 200 become oov (2)
    small = build_task("imdb", root=str(root), sha256=sha, num_words=200, maxlen=None)
    assert all(x[1] == 2 for x in small.train.xs) and small.input_size == 200


def test_task_options_are_checked(imdb_root) -> None:
    root, sha = imdb_root
    with pytest.raises(ValueError, match="data.padding"):
        build_task("imdb", root=str(root), sha256=sha, padding="both")
    with pytest.raises(ValueError, match="data.head"):
        build_task("imdb", root=str(root), sha256=sha, head="tanh")
    softmax = build_task("imdb", root=str(root), sha256=sha, head="softmax", max_reviews=8)
    assert softmax.output_size == 2 and len(softmax.test) == 8


def test_binary_head_is_sigmoid_and_binary_cross_entropy() -> None:
    model = SequenceModel("classification", 30, 1, hidden_size=4, cell="np", tokens=True, embedding_dim=3)
    logits = torch.tensor([[2.0], [-1.0], [0.5], [-3.0]])
    y = torch.tensor([1, 1, 0, 0])
    batch = Batch(torch.zeros(4, 2, dtype=torch.long), torch.tensor([2, 2, 2, 2]), y)
    sums = model.metric_sums(logits, batch)
    p = 1 / (1 + np.exp(-np.array([2.0, -1.0, 0.5, -3.0])))
    expected = -(np.log(p[0]) + np.log(p[1]) + np.log(1 - p[2]) + np.log(1 - p[3]))
    assert sums["loss"] == pytest.approx(expected, rel=1e-6)
    assert sums["errors"] == 2  # -1.0 says negative for a positive review, 0.5 positive for a negative one
    metrics = model.finalize_metrics(sums)
    assert metrics["accuracy"] == 0.5 and metrics["nll"] == pytest.approx(expected / 4, rel=1e-6)


def test_training_on_the_task_end_to_end(imdb_root, tmp_path) -> None:
    from lstm_odyssey.config import load_config
    from lstm_odyssey.train import run

    root, sha = imdb_root
    cfg = load_config(["cell=np", "data=imdb", f"data.root={root}", f"data.sha256={sha}", "data.num_words=2000",
                       "data.maxlen=8", "data.padding=pre", "model.hidden_size=8", "model.embedding_dim=4", "optim=adam",
                       "optim.lr=0.01", "trainer.epochs=2", "trainer.patience=null", "trainer.batch_size=4",
                       "trainer.eval_batch_size=16", "trainer.device=cpu", "trainer.progress=false"])
    record = run(cfg, tmp_path / "run")
    assert record["status"] == "ok" and record["task"] == "imdb"
    assert set(record["test"]) == {"nll", "error", "accuracy"}
    assert 0 <= record["test"]["accuracy"] <= 1 and record["test"]["nll"] > 0
    assert record["num_parameters"] == 2000 * 4 + 4 * 8 * (4 + 8) + 4 * 8 + (8 + 1)


# -- the download machinery ----------------------------------------------------------------------------


def test_defaults_name_the_keras_file() -> None:
    from lstm_odyssey.config import load_config

    cfg = load_config(["data=imdb"])["data"]  # the builder's defaults (conf/data/imdb.yaml sets none)
    assert cfg["url"] == URL == "https://storage.googleapis.com/tensorflow/tf-keras-datasets/imdb.npz"
    assert cfg["sha256"] == SHA256 == "69664113be75683a8fe16e3ed0ab59fda8886cb3cd7ada244f7d9544e4676b9f"
    keras = ("num_words", "maxlen", "start_char", "oov_char", "index_from", "shuffle_seed")
    assert tuple(cfg[k] for k in keras) == (10000, 500, 1, 2, 3, 113)


def test_offline_the_error_is_one_line_and_says_what_to_set(tmp_path) -> None:
    with pytest.raises(DownloadError) as err:
        build_task("imdb", root=str(tmp_path / "empty"), url="http://127.0.0.1:9/imdb.npz")
    message = str(err.value)
    assert "\n" not in message
    assert "imdb.npz not found" in message and "data.root" in message and "LSTM_ODYSSEY_DATA" in message
    assert not (tmp_path / "empty" / "imdb" / "imdb.npz").exists()


def test_a_file_with_the_wrong_checksum_is_refused(imdb_root, tmp_path) -> None:
    root, _ = imdb_root
    # found locally but not the real imdb.npz: the default sha256 refuses it
    with pytest.raises(DownloadError, match="wrong sha256") as err:
        build_task("imdb", root=str(root))
    assert "\n" not in str(err.value)
    # downloaded (file:// stands in for the network) with a mismatching checksum: not stored
    source = root / "imdb" / "imdb.npz"
    with pytest.raises(DownloadError, match="checksum mismatch"):
        build_task("imdb", root=str(tmp_path / "fresh"), url=source.as_uri(), sha256="0" * 64)
    assert not (tmp_path / "fresh" / "imdb" / "imdb.npz").exists()
    # with the right checksum the same download is stored and used
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    task = build_task("imdb", root=str(tmp_path / "fresh"), url=source.as_uri(), sha256=sha, maxlen=None)
    assert (tmp_path / "fresh" / "imdb" / "imdb.npz").is_file() and len(task.test) == 10


def test_the_real_file_matches_keras(monkeypatch) -> None:
    """With the real imdb.npz under $LSTM_ODYSSEY_DATA/imdb: what keras.datasets.imdb.load_data(num_words=10000)
    is known to return (Chollet, Deep Learning with Python, 3.4: the first training review)."""
    data = REAL_DATA
    path = Path(data) / "imdb" / "imdb.npz" if data else None
    if path is None or not path.is_file():
        pytest.skip("the real imdb.npz is not under $LSTM_ODYSSEY_DATA/imdb (no network here to fetch it)")
    monkeypatch.setenv("LSTM_ODYSSEY_DATA", data)
    (xtr, ytr), (xte, yte) = load_data(path, num_words=10000)
    assert (len(xtr), len(xte)) == (25000, 25000)
    assert xtr[0][:6] == [1, 14, 22, 16, 43, 530] and len(xtr[0]) == 218 and int(ytr[0]) == 1
    assert max(max(x) for x in xtr) == 9999
    task = build_task("imdb", padding="pre")
    assert (len(task.train), len(task.val), len(task.test)) == (20000, 5000, 25000)
    assert all(len(x) == 500 for x in task.train.xs[:100])
