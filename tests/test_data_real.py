"""Real tasks: JSB Chorales (against the shared copy), checked downloads from a local HTTP server,
UEA JapaneseVowels through aeon, character-level LM with truncated BPTT, copy memory, the user's
own .npz format, and one real CLI run per task."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from lstm_odyssey.data import build_task, char_lm, download, jsb_chorales, sequences
from lstm_odyssey.data.base import MULTILABEL, STEP_CLASSIFICATION
from lstm_odyssey.models import SequenceModel
from lstm_odyssey.train import evaluate

DATA = os.environ.get("LSTM_ODYSSEY_DATA")
JSB_FILE = Path(DATA) / "jsb_chorales" / jsb_chorales.FILE if DATA else None
needs_jsb = pytest.mark.skipif(
    not (JSB_FILE and JSB_FILE.is_file()),
    reason="set LSTM_ODYSSEY_DATA to the folder holding jsb_chorales/jsb-chorales-quarter.json (the shared copy)",
)
HAS_AEON = importlib.util.find_spec("aeon") is not None
needs_aeon = pytest.mark.skipif(not HAS_AEON, reason='aeon is not installed (pip install -e ".[uea]"); CI installs it')


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test gets its own user cache, so nothing is read from or written to ~/.cache."""
    monkeypatch.setenv(download.CACHE_ENV, str(tmp_path / "cache"))


# --------------------------------------------------------------------------- JSB Chorales


@pytest.fixture(scope="module")
def jsb_json():
    return json.loads(JSB_FILE.read_text())


@needs_jsb
def test_jsb_splits_rolls_and_frames_match_the_json(jsb_json):
    task = build_task("jsb_chorales")
    assert (len(task.train), len(task.val), len(task.test)) == (229, 76, 77)
    assert task.task_type == MULTILABEL and task.input_size == task.output_size == 88 and task.metric == "nll"
    for ours, theirs in (("train", "train"), ("val", "valid"), ("test", "test")):
        split = task.split(ours)
        for k, chorale in enumerate(jsb_json[theirs]):
            x, y = split.xs[k], split.ys[k]
            assert x.shape == y.shape == (len(chorale) - 1, 88)
            roll = np.zeros((len(chorale), 88), dtype=np.float32)  # independent encoding of the frames
            for t, frame in enumerate(chorale):
                roll[t, [int(p) - 21 for p in frame]] = 1
            np.testing.assert_array_equal(x.numpy(), roll[:-1])
            np.testing.assert_array_equal(y.numpy(), roll[1:])
    assert task.info["predicted_frames"]["test"] == sum(len(c) - 1 for c in jsb_json["test"])


@needs_jsb
def test_jsb_nll_of_note_frequencies_matches_a_hand_computation(jsb_json):
    """A model that predicts each note's training frequency at every frame: the framework's metric
    equals the Bernoulli NLL summed over notes and averaged over the test frames, by hand."""
    train_targets = [f for ch in jsb_json["train"] for f in ch[1:]]
    counts = np.zeros(88)
    for frame in train_targets:
        for p in frame:
            counts[int(p) - 21] += 1
    p = np.clip(counts / len(train_targets), 1e-3, 1 - 1e-3)
    total, frames = 0.0, 0
    for chorale in jsb_json["test"]:
        for frame in chorale[1:]:
            on = np.zeros(88, dtype=bool)
            on[[int(q) - 21 for q in frame]] = True
            total += -(np.log(p[on]).sum() + np.log(1 - p[~on]).sum())
            frames += 1
    expected = total / frames

    task = build_task("jsb_chorales")
    model = SequenceModel(MULTILABEL, 88, 88, hidden_size=4)
    logits = torch.tensor(np.log(p / (1 - p)), dtype=torch.float32)
    sums: dict[str, float] = {}
    for batch in task.test.batches(16, MULTILABEL):
        prediction = logits.expand(batch.y.shape[0], batch.y.shape[1], 88)
        for key, value in model.metric_sums(prediction, batch).items():
            sums[key] = sums.get(key, 0.0) + value
    assert model.finalize_metrics(sums)["nll"] == pytest.approx(expected, rel=1e-5)


@needs_jsb
def test_jsb_second_load_comes_from_the_tensor_cache(tmp_path, monkeypatch):
    first = build_task("jsb_chorales", cache_dir=str(tmp_path / "c"))
    cached_files = list((tmp_path / "c" / "processed").glob("jsb_chorales-*.pt"))
    assert len(cached_files) == 1

    def no_parsing(path):
        raise AssertionError("the JSON was parsed again instead of using the cache")

    monkeypatch.setattr(jsb_chorales, "load_rolls", no_parsing)
    second = build_task("jsb_chorales", cache_dir=str(tmp_path / "c"))
    assert all(torch.equal(a, b) for a, b in zip(first.test.ys, second.test.ys))
    with pytest.raises(AssertionError, match="parsed again"):  # another cache key really parses
        build_task("jsb_chorales", cache_dir=str(tmp_path / "other"))


@needs_jsb
def test_jsb_root_option_accepts_the_file_directly_in_the_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(download.DATA_ENV)
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / jsb_chorales.FILE).symlink_to(JSB_FILE)
    task = build_task("jsb_chorales", root=str(tmp_path / "flat"), url="http://127.0.0.1:9/unreachable")
    assert task.info["source"] == str(tmp_path / "flat" / jsb_chorales.FILE)
    assert len(task.val) == 76


# --------------------------------------------------------------------------- downloads


@pytest.fixture
def http_server(tmp_path):
    """A local HTTP server on 127.0.0.1 serving tmp_path/www."""
    www = tmp_path / "www"
    www.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_download_stores_a_verified_file(http_server, tmp_path):
    www, base = http_server
    payload = b"some data\n" * 1000
    (www / "good.bin").write_bytes(payload)
    dest = tmp_path / "store" / "sub" / "good.bin"
    got = download.download(f"{base}/good.bin", dest, hashlib.sha256(payload).hexdigest())
    assert got == dest and dest.read_bytes() == payload
    assert [p.name for p in dest.parent.iterdir()] == ["good.bin"]  # no temporary file left behind


def test_download_refuses_a_corrupted_copy_and_stores_nothing(http_server, tmp_path):
    www, base = http_server
    payload = b"the real thing"
    (www / "bad.bin").write_bytes(payload[:-1] + b"!")
    dest = tmp_path / "store" / "bad.bin"
    with pytest.raises(download.DownloadError, match="checksum mismatch") as err:
        download.download(f"{base}/bad.bin", dest, hashlib.sha256(payload).hexdigest())
    assert "\n" not in str(err.value)
    assert list(dest.parent.iterdir()) == []


def test_download_reports_a_missing_url_in_one_line(http_server, tmp_path):
    _, base = http_server
    with pytest.raises(download.DownloadError, match="download of .*missing.bin failed") as err:
        download.download(f"{base}/missing.bin", tmp_path / "x.bin")
    assert "\n" not in str(err.value) and not (tmp_path / "x.bin").exists()


def test_find_or_download_fetches_into_root_once(http_server, tmp_path, monkeypatch):
    monkeypatch.delenv(download.DATA_ENV, raising=False)
    www, base = http_server
    payload = b"chorales"
    (www / "f.json").write_bytes(payload)
    sha = hashlib.sha256(payload).hexdigest()
    got = download.find_or_download("task/f.json", f"{base}/f.json", sha, root=tmp_path / "root")
    assert got == tmp_path / "root" / "task" / "f.json" and got.read_bytes() == payload
    (www / "f.json").unlink()  # a second call finds the stored file and needs no server
    assert download.find_or_download("task/f.json", f"{base}/f.json", sha, root=tmp_path / "root") == got


def test_offline_error_says_where_it_looked_and_what_to_set(tmp_path, monkeypatch):
    monkeypatch.setenv(download.DATA_ENV, str(tmp_path / "shared"))
    with pytest.raises(download.DownloadError) as err:
        download.find_or_download("task/f.json", "http://127.0.0.1:9/f.json", "0" * 64, root=tmp_path / "mine")
    message = str(err.value)
    assert "\n" not in message
    for place in (tmp_path / "mine" / "task" / "f.json", tmp_path / "shared" / "task" / "f.json", tmp_path / "cache"):
        assert str(place) in message
    assert "failed" in message and "data.root" in message and download.DATA_ENV in message


@needs_jsb
def test_jsb_downloads_from_a_local_server_when_missing(http_server, tmp_path, monkeypatch):
    monkeypatch.delenv(download.DATA_ENV)
    www, base = http_server
    (www / jsb_chorales.FILE).symlink_to(JSB_FILE)
    task = build_task("jsb_chorales", root=str(tmp_path / "r"), url=f"{base}/{jsb_chorales.FILE}")
    stored = tmp_path / "r" / jsb_chorales.RELATIVE
    assert stored.read_bytes() == JSB_FILE.read_bytes() and len(task.train) == 229


def test_jsb_with_a_wrong_checksum_on_disk_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv(download.DATA_ENV, raising=False)
    (tmp_path / "jsb_chorales").mkdir()
    (tmp_path / jsb_chorales.RELATIVE).write_text('{"train": [], "valid": [], "test": []}')
    with pytest.raises(download.DownloadError, match="wrong sha256"):
        build_task("jsb_chorales", root=str(tmp_path))


# --------------------------------------------------------------------------- UEA JapaneseVowels


@needs_aeon
def test_japanese_vowels_offline_sizes_features_lengths_and_standardisation():
    from aeon.datasets import load_classification

    task = build_task("JapaneseVowels")  # what `data=uea` (name: JapaneseVowels) builds
    assert (len(task.train) + len(task.val), len(task.test)) == (270, 370)
    assert len(task.val) == 54 and task.input_size == 12 and task.output_size == 9 and task.metric == "error"
    raw_test, _ = load_classification("JapaneseVowels", split="test")
    assert [len(x) for x in task.test.xs] == [x.shape[1] for x in raw_test]  # lengths kept, in order
    raw_train, _ = load_classification("JapaneseVowels", split="train")
    assert sorted(len(x) for x in task.train.xs + task.val.xs) == sorted(x.shape[1] for x in raw_train)
    assert min(len(x) for s in (task.train, task.val, task.test) for x in s.xs) == 7
    assert max(len(x) for s in (task.train, task.val, task.test) for x in s.xs) == 29
    steps = torch.cat(task.train.xs)
    torch.testing.assert_close(steps.mean(0), torch.zeros(12), atol=1e-5, rtol=0)
    torch.testing.assert_close(steps.std(0, unbiased=False), torch.ones(12), atol=1e-4, rtol=0)
    again = build_task("uea", dataset="JapaneseVowels")
    assert all(torch.equal(a, b) for a, b in zip(task.val.xs, again.val.xs))  # fixed-seed validation split
    other = build_task("uea", dataset="JapaneseVowels", seed=1)
    assert not all(torch.equal(a, b) for a, b in zip(task.val.xs, other.val.xs))


@needs_aeon
def test_uea_name_and_dataset_must_agree():
    with pytest.raises(ValueError, match="data.name=JapaneseVowels already names the dataset"):
        build_task("JapaneseVowels", dataset="CharacterTrajectories")


def test_uea_without_aeon_names_the_extra(monkeypatch):
    from lstm_odyssey.data import uea

    def missing(name):
        raise uea.PackageNotFoundError(name)

    monkeypatch.setattr(uea, "version", missing)
    with pytest.raises(ImportError, match=r'pip install "lstm-odyssey\[uea\]"'):
        build_task("uea", dataset="JapaneseVowels")


# --------------------------------------------------------------------------- char_lm


@pytest.fixture
def text_file(tmp_path):
    """A small file whose validation and test parts hold characters the training part lacks."""
    train = "the quick brown fox jumps over the lazy dog\n" * 40
    path = tmp_path / "corpus.txt"
    path.write_text(train + "ÉÉ fox Z" * 13 + "dog Q dog" * 12, encoding="utf-8")
    return path


def test_char_lm_file_vocabulary_from_train_and_unknowns_map_to_unk(text_file):
    text = text_file.read_text(encoding="utf-8")
    task = build_task("char_lm", path=str(text_file), val_fraction=0.05, test_fraction=0.05, chunk_length=7)
    n = len(text)
    n_val = n_test = int(n * 0.05)
    train, val, test = text[: n - n_val - n_test], text[n - n_val - n_test : n - n_test], text[n - n_test :]
    vocabulary = [char_lm.UNK_SYMBOL] + sorted(set(train))
    assert task.input_size == task.output_size == len(vocabulary) and task.stateful and task.tokens
    expected_val = [vocabulary.index(c) if c in vocabulary else char_lm.UNK for c in val]
    assert task.val.tokens.tolist() == expected_val
    assert char_lm.UNK in task.val.tokens.tolist() and char_lm.UNK in task.test.tokens.tolist()
    assert char_lm.UNK not in task.train.tokens.tolist()
    assert len(task.test.tokens) == len(test)
    # the chunks in xs/ys are the stream in order, targets shifted by one
    assert torch.equal(torch.cat(task.train.xs), task.train.tokens[:-1])
    assert torch.equal(torch.cat(task.train.ys), task.train.tokens[1:])


def test_char_lm_tbptt_batches_continue_stream_by_stream(text_file):
    task = build_task("char_lm", path=str(text_file), chunk_length=5)
    stream = task.train.tokens
    batches = list(task.train.batches(3, STEP_CLASSIFICATION))
    per = (len(stream) - 1) // 3
    assert all(b.x.shape[0] == 3 for b in batches) and sum(b.x.shape[1] for b in batches) == per
    assert all(b.x.shape[1] == 5 for b in batches[:-1]) and all((b.lengths == b.x.shape[1]).all() for b in batches)
    for row in range(3):  # row r of batch k+1 continues row r of batch k
        xs = torch.cat([b.x[row] for b in batches])
        ys = torch.cat([b.y[row] for b in batches])
        assert torch.equal(xs, stream[row * per : (row + 1) * per])
        assert torch.equal(ys, stream[row * per + 1 : (row + 1) * per + 1])
    with pytest.raises(ValueError, match="cannot be shuffled"):
        next(task.train.batches(3, STEP_CLASSIFICATION, shuffle=True))
    # validation keeps its fixed number of streams whatever the batch size asked for
    assert {b.x.shape[0] for b in task.val.batches(256, STEP_CLASSIFICATION)} == {task.val.streams}


def test_char_lm_uniform_model_scores_log2_vocabulary(text_file):
    task = build_task("char_lm", path=str(text_file), chunk_length=9)
    model = SequenceModel(STEP_CLASSIFICATION, task.input_size, task.output_size, hidden_size=4, tokens=True)
    sums: dict[str, float] = {}
    for batch in task.test.batches(4, STEP_CLASSIFICATION):
        prediction = torch.zeros(*batch.x.shape, task.output_size)
        for key, value in model.metric_sums(prediction, batch).items():
            sums[key] = sums.get(key, 0.0) + value
    assert model.finalize_metrics(sums)["bpc"] == pytest.approx(math.log2(task.input_size), rel=1e-6)
    assert task.info["bpc_uniform"] == pytest.approx(math.log2(task.input_size), rel=1e-6)


def test_trainer_evaluation_carries_the_state_across_chunks(text_file):
    """Evaluating chunk by chunk with the carried state equals one pass over the whole streams."""
    task = build_task("char_lm", path=str(text_file), chunk_length=6, eval_streams=3)
    torch.manual_seed(0)
    model = SequenceModel(STEP_CLASSIFICATION, task.input_size, task.output_size, hidden_size=8, tokens=True)
    chunked = evaluate(model, task, "val", 99, torch.device("cpu"))
    x, y = task.val.layout(3)
    with torch.no_grad():
        prediction, _ = model(x)
    nll = torch.nn.functional.cross_entropy(prediction.flatten(0, 1), y.flatten())
    assert chunked["nll"] == pytest.approx(float(nll), rel=1e-5)
    stateless = {**task.__dict__, "stateful": False}  # without the state the number differs
    from lstm_odyssey.data.base import TaskData

    assert evaluate(model, TaskData(**stateless), "val", 99, torch.device("cpu"))["nll"] != pytest.approx(float(nll), rel=1e-5)


def test_char_lm_python_stdlib_is_deterministic_and_capped():
    a = build_task("char_lm", max_chars=30000, eval_chars=3000)
    b = build_task("char_lm", max_chars=30000, eval_chars=3000)
    assert a.info["chars"] == {"train": 30000, "val": 3000, "test": 3000}
    assert a.info["sha256"] == b.info["sha256"] and torch.equal(a.val.tokens, b.val.tokens)
    small = build_task("char_lm", max_chars=30000, eval_chars=3000, max_file_chars=1000)
    assert small.info["chars"]["train"] == 30000 and small.info["files"]["train"] >= 30  # no file above 1000 chars
    files = char_lm.stdlib_files()
    assert not any(f"/{rel}".count("/test/") or rel.startswith(("encodings/", "pydoc_data/")) for rel, _ in files)
    splits = {char_lm._split_of(rel, 0.05, 0.05) for rel, _ in files}
    assert splits == {"train", "val", "test"}


def test_char_lm_errors_are_one_line(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        build_task("char_lm", path=str(tmp_path / "nope.txt"))
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9 " * 100)
    with pytest.raises(ValueError, match="not UTF-8"):
        build_task("char_lm", path=str(tmp_path / "latin1.txt"))
    with pytest.raises(ValueError, match="unknown corpus"):
        build_task("char_lm", corpus="wikipedia")


# --------------------------------------------------------------------------- copy memory


def test_copy_memory_structure():
    blank = 7
    task = build_task("copy_memory", blank_length=blank, n_train=50, n_val=5, n_test=5, seed=3)
    assert task.task_type == STEP_CLASSIFICATION and task.tokens and task.input_size == task.output_size == 10
    for x, y in zip(task.train.xs, task.train.ys):
        assert x.shape == y.shape == (blank + 20,)
        symbols = x[:10]
        assert ((symbols >= 1) & (symbols <= 8)).all()
        assert (x[10 : 10 + blank - 1] == 0).all() and (x[9 + blank :] == 9).all()
        assert (y[: blank + 10] == 0).all() and torch.equal(y[blank + 10 :], symbols)
    assert task.info["nll_baseline"] == pytest.approx(10 * math.log(8) / (blank + 20))
    again = build_task("copy_memory", blank_length=blank, n_train=50, n_val=5, n_test=5, seed=3)
    assert torch.equal(torch.stack(task.test.xs), torch.stack(again.test.xs))


# --------------------------------------------------------------------------- sequences (.npz)


def test_sequences_round_trip_classification_with_split(tmp_path):
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(n, 3)).astype(np.float32) for n in (4, 7, 2, 5, 6)]
    ys = [0, 2, 1, 2, 0]
    split = ["train", "train", "val", "test", "train"]
    path = sequences.save_sequences(tmp_path / "mine.npz", xs, ys, split)
    task = build_task("sequences", path=str(path), task_type="classification")
    assert (len(task.train), len(task.val), len(task.test)) == (3, 1, 1)
    assert task.input_size == 3 and task.output_size == 3 and task.metric == "error" and not task.tokens
    np.testing.assert_array_equal(task.train.xs[1].numpy(), xs[1])
    assert [y.item() for y in task.train.ys] == [0, 2, 0] and task.test.ys[0].item() == 2
    assert all(y.shape == () and y.dtype == torch.long for y in task.train.ys)  # one class per sequence


def test_sequences_round_trip_per_step_tokens_and_multilabel(tmp_path):
    xs = [np.array([1, 2, 3]), np.array([4, 0]), np.array([2]), np.array([5, 5, 5, 1])]
    ys = [x % 2 for x in xs]
    path = sequences.save_sequences(tmp_path / "tok.npz", xs, ys, [0, 1, 2, 0], per_step=True)
    task = build_task("sequences", path=str(path), task_type="step_classification", vocab_size=9)
    assert task.tokens and task.input_size == 9 and task.output_size == 2
    assert [x.tolist() for x in task.train.xs] == [[1, 2, 3], [5, 5, 5, 1]]
    assert [y.tolist() for y in task.train.ys] == [[1, 0, 1], [1, 1, 1, 1]]

    rolls = [np.eye(4, dtype=np.float32)[: n] for n in (2, 3, 4, 3, 2, 4, 3, 2, 3, 4)]
    path = sequences.save_sequences(tmp_path / "roll.npz", rolls, rolls, per_step=True)
    task = build_task("sequences", path=str(path), task_type="multilabel", val_fraction=0.2, test_fraction=0.2)
    assert (len(task.train), len(task.val), len(task.test)) == (6, 2, 2) and task.output_size == 4


def _write(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize(
    "arrays, task_type, match",
    [
        ({"x": np.zeros((5, 2), np.float32), "y": np.zeros(2, np.int64)}, "classification", "field 'lengths' is missing"),
        ({"x": np.zeros((5, 2), np.float32), "lengths": np.array([2, 2]), "y": np.zeros(2, np.int64)}, "classification", "field 'x' has 5 steps but lengths sum to 4"),
        ({"x": np.zeros((4, 2), np.float32), "lengths": np.array([2.0, 2.0]), "y": np.zeros(2, np.int64)}, "classification", "field 'lengths' must be a 1-D integer"),
        ({"x": np.zeros((4, 2, 1), np.float32), "lengths": np.array([2, 2]), "y": np.zeros(2, np.int64)}, "classification", "field 'x' must be"),
        ({"x": np.zeros((4, 2), np.float32), "lengths": np.array([2, 2]), "y": np.zeros(3, np.int64)}, "classification", "field 'y' must have one per sequence"),
        ({"x": np.zeros((4, 2), np.float32), "lengths": np.array([2, 2]), "y": np.zeros(2, np.float32)}, "classification", "field 'y' must be 1-D non-negative integer"),
        ({"x": np.zeros((4, 2), np.float32), "lengths": np.array([2, 2]), "y": np.zeros(2, np.int64)}, "step_classification", "field 'y' must have one per step"),
        ({"x": np.zeros((4, 2), np.float32), "lengths": np.array([2, 2]), "y": np.full((4, 3), 0.5)}, "multilabel", "field 'y' must be .S, D. 0/1"),
        ({"x": np.zeros((4, 2), np.float32), "lengths": np.array([2, 2]), "y": np.zeros(2, np.int64), "split": np.array(["train", "dev"])}, "classification", "field 'split' has values \\['dev'\\]"),
        ({"x": np.zeros((4, 2), np.float32), "lengths": np.array([2, 2]), "y": np.zeros(2, np.int64), "split": np.array(["train", "val"])}, "classification", "field 'split' leaves the test split empty"),
        ({"x": np.zeros((4, 2), np.float32), "lengths": np.array([2, 2]), "y": np.zeros(2, np.int64)}, "ranking", "data.task_type='ranking' is not a task type"),
    ],
)
def test_sequences_malformed_inputs_name_the_field(tmp_path, arrays, task_type, match):
    path = _write(tmp_path / "bad.npz", **arrays)
    with pytest.raises(sequences.FormatError, match=match) as err:
        build_task("sequences", path=path, task_type=task_type)
    assert "\n" not in str(err.value)


def test_sequences_needs_path_and_task_type(tmp_path):
    with pytest.raises(ValueError, match="needs data.path"):
        build_task("sequences", task_type="classification")
    path = sequences.save_sequences(tmp_path / "ok.npz", [np.zeros((2, 1), np.float32)] * 3, [0, 1, 0], [0, 1, 2])
    with pytest.raises(ValueError, match="needs data.task_type"):
        build_task("sequences", path=str(path))


# --------------------------------------------------------------------------- real CLI runs


def _cli_cases(tmp_path: Path) -> dict[str, list[str]]:
    npz = sequences.save_sequences(
        tmp_path / "user.npz", [np.random.default_rng(k).normal(size=(3 + k % 4, 2)).astype(np.float32) for k in range(12)],
        [k % 3 for k in range(12)],
    )
    return {
        "jsb_chorales": ["data=jsb_chorales", "data.max_chorales=6", "cell=np"],
        "uea": ["data=uea", "cell=np"],
        "char_lm": [
            "data=char_lm", "data.max_chars=800", "data.eval_chars=200", "data.chunk_length=25", "trainer.batch_size=8", "cell=np",
        ],
        "copy_memory": [
            "data=copy_memory", "data.blank_length=5", "data.n_train=32", "data.n_val=8", "data.n_test=8", "cell=np",
        ],
        "sequences": ["data=sequences", f"data.path={npz}", "data.task_type=classification"],
    }


@pytest.mark.slow
@pytest.mark.parametrize("task", ["jsb_chorales", "uea", "char_lm", "copy_memory", "sequences"])
def test_cli_run_writes_a_valid_record(task, tmp_path):
    if task == "jsb_chorales" and not (JSB_FILE and JSB_FILE.is_file()):
        pytest.skip("set LSTM_ODYSSEY_DATA to the folder holding jsb_chorales/ (the shared copy)")
    if task == "uea" and not HAS_AEON:
        pytest.skip('aeon is not installed (pip install -e ".[uea]"); CI installs it')
    env = {**os.environ, "WANDB_MODE": "disabled", download.CACHE_ENV: str(tmp_path / "cache")}
    command = [
        sys.executable, "-m", "lstm_odyssey.cli", *_cli_cases(tmp_path)[task], "model.hidden_size=8",
        "trainer.epochs=2", "trainer.progress=false", f"paths.root={tmp_path / 'results'}",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (record_path,) = (tmp_path / "results").rglob("result.json")
    record = json.loads(record_path.read_text())
    assert record["status"] == "ok" and record["epochs_run"] == 2
    assert math.isfinite(record["objective"]) and math.isfinite(record["test"][record["metric"]])
    assert len(record["history"]) == 2
