"""The Keras IMDB movie reviews (seed 000's sentiment task): 25,000 training and 25,000 test reviews as
lists of word indices (1 = most frequent word), label 1 = positive.

Preprocessing follows `keras.datasets.imdb.load_data` exactly, so the seed's numbers (Embedding(10000, 32),
500 words, LSTM 88.6 % vs SimpleRNN 84 % test accuracy) are reproducible:

* both splits are shuffled with numpy's RandomState(`shuffle_seed` = 113), the Keras default;
* every review starts with `start_char` (1), word indices are shifted by `index_from` (3), so 0 is padding,
  1 the start mark and 2 the out-of-vocabulary mark;
* `load_maxlen` (Keras's `maxlen` argument of load_data) drops longer reviews (None keeps all);
* indices outside [`skip_top`, `num_words`) become `oov_char` (2), or are dropped when oov_char is None;
  `num_words` = 10000 keeps the 9,996 most frequent words (indices 4..9999) and the vocabulary, i.e. the
  embedding's rows, is exactly `num_words`. `num_words` None keeps every word (Keras would turn the single
  largest index into oov there: its default is max(index), not max(index) + 1).

Then the Keras example's `pad_sequences(x, maxlen=500)`: `truncating` 'pre' keeps the last `maxlen` words, and
with `padding` 'pre' (or 'post') every review becomes exactly `maxlen` tokens, zeros included, which the
recurrent layer then reads as Keras does. `padding: none` truncates only and keeps each review's own length:
the framework's layers take lengths, so the final state is read after the last real word and short reviews
cost no steps on padding (about a third of the work at maxlen 500). The seed's numbers come from 'pre'.

The validation split is the last `val_fraction` of the (seeded, shuffled) training set, which is what Keras's
`model.fit(..., validation_split=0.2)` takes: fixed, and the same as the seed's.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch

from .base import CLASSIFICATION, SequenceSplit, TaskData, register
from .download import cached, find_or_download, options_key, sha256_of

FILE = "imdb.npz"
RELATIVE = f"imdb/{FILE}"
URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/imdb.npz"
SHA256 = "69664113be75683a8fe16e3ed0ab59fda8886cb3cd7ada244f7d9544e4676b9f"
KEYS = ("x_train", "y_train", "x_test", "y_test")
PADDINGS = ("pre", "post", "none")
TRUNCATINGS = ("pre", "post")
# What an object array of int lists unpickles to: numpy's array reconstruction and dtypes (and, in pickle
# protocol 2, bytes rebuilt from text), nothing that runs code.
ARRAY_GLOBALS = {(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")}
ARRAY_GLOBALS |= {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class UnsafeFile(ValueError):
    """A data file that would run code if it were unpickled."""


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays of plain Python values only: any other global (os.system, builtins.eval...)
    is refused before it can be called."""

    def find_class(self, module: str, name: str):
        if (module, name) not in ARRAY_GLOBALS:
            raise UnsafeFile(f"it refers to {module}.{name}")
        return super().find_class(module, name)


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an .npz without unpickling code: numeric arrays through np.load(allow_pickle=False),
    object arrays (imdb.npz's reviews: lists of word indices) through an unpickler that builds numpy arrays
    and plain values only. So a file whose checksum is not checked (data.sha256=null, a mirror, a stand-in)
    still cannot run anything; a crafted one is refused with one line."""
    out = {}
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            if not member.endswith(".npy"):
                continue
            with archive.open(member) as fh:
                raw = io.BytesIO(fh.read())
            version = np.lib.format.read_magic(raw)
            header = np.lib.format.read_array_header_2_0 if version >= (2, 0) else np.lib.format.read_array_header_1_0
            shape, _, dtype = header(raw)
            if not dtype.hasobject:
                raw.seek(0)
                out[member[:-4]] = np.load(raw, allow_pickle=False)
                continue
            try:
                array = _ArrayUnpickler(raw, encoding="latin1").load()
            except UnsafeFile as err:
                raise UnsafeFile(f"{path} ({member}) is not read: {err}, which unpickling would run; "
                                 "an IMDB npz holds only arrays of word indices") from None
            if not isinstance(array, np.ndarray) or array.shape != shape:
                raise UnsafeFile(f"{path} ({member}) does not hold the array its header announces")
            out[member[:-4]] = array
    return out


def load_data(
    path: str | Path,
    num_words: int | None = None,
    skip_top: int = 0,
    load_maxlen: int | None = None,
    seed: int = 113,
    start_char: int | None = 1,
    oov_char: int | None = 2,
    index_from: int = 3,
) -> tuple[tuple[list[list[int]], np.ndarray], tuple[list[list[int]], np.ndarray]]:
    """`keras.datasets.imdb.load_data` on a local imdb.npz: ((x_train, y_train), (x_test, y_test)),
    x as lists of word indices. Same arguments and defaults (`load_maxlen` is Keras's `maxlen`)."""
    f = read_npz(path)  # object arrays of int lists, read without running anything pickled
    missing = [k for k in KEYS if k not in f]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}; an IMDB npz holds x_train, y_train, x_test, y_test")
    x_train, labels_train = f["x_train"], f["y_train"]
    x_test, labels_test = f["x_test"], f["y_test"]
    rng = np.random.RandomState(seed)
    indices = np.arange(len(x_train))
    rng.shuffle(indices)
    x_train, labels_train = x_train[indices], labels_train[indices]
    indices = np.arange(len(x_test))
    rng.shuffle(indices)
    x_test, labels_test = x_test[indices], labels_test[indices]

    if start_char is not None:
        x_train = [[start_char] + [w + index_from for w in x] for x in x_train]
        x_test = [[start_char] + [w + index_from for w in x] for x in x_test]
    elif index_from:
        x_train = [[w + index_from for w in x] for x in x_train]
        x_test = [[w + index_from for w in x] for x in x_test]
    else:
        x_train = [list(x) for x in x_train]
        x_test = [list(x) for x in x_test]

    if load_maxlen:
        keep = [k for k, x in enumerate(x_train) if len(x) < load_maxlen]
        x_train, labels_train = [x_train[k] for k in keep], labels_train[keep]
        keep = [k for k, x in enumerate(x_test) if len(x) < load_maxlen]
        x_test, labels_test = [x_test[k] for k in keep], labels_test[keep]
        if not x_train or not x_test:
            raise ValueError(f"data.load_maxlen={load_maxlen} leaves no review in a split; raise it or set it to null")

    xs = x_train + x_test
    if not num_words:
        num_words = max(max(x) for x in xs if x) + 1
    if oov_char is not None:
        xs = [[w if skip_top <= w < num_words else oov_char for w in x] for x in xs]
    else:
        xs = [[w for w in x if skip_top <= w < num_words] for x in xs]
    n = len(x_train)
    return (xs[:n], np.asarray(labels_train)), (xs[n:], np.asarray(labels_test))


def pad_sequences(
    sequences: list[list[int]], maxlen: int | None, padding: str = "pre", truncating: str = "pre", value: int = 0,
) -> list[list[int]]:
    """Keras's `pad_sequences` on lists: cut to `maxlen` ('pre' drops the beginning), then pad to `maxlen`
    ('pre' puts the zeros first); padding 'none' only truncates. maxlen None: the longest sequence."""
    if padding not in PADDINGS:
        raise ValueError(f"data.padding={padding!r}; use one of {', '.join(PADDINGS)}")
    if truncating not in TRUNCATINGS:
        raise ValueError(f"data.truncating={truncating!r}; use one of {', '.join(TRUNCATINGS)}")
    if maxlen is None:
        maxlen = max((len(s) for s in sequences), default=0)
    out = []
    for s in sequences:
        s = list(s)
        if len(s) > maxlen:
            s = s[-maxlen:] if truncating == "pre" else s[:maxlen]
        if padding == "pre":
            s = [value] * (maxlen - len(s)) + s
        elif padding == "post":
            s = s + [value] * (maxlen - len(s))
        out.append(s)
    return out


def _split(xs: list[list[int]], ys: np.ndarray) -> SequenceSplit:
    keep = [k for k, x in enumerate(xs) if len(x) > 0]  # a review emptied by oov_char=None has nothing to read
    return SequenceSplit(
        [torch.tensor(xs[k], dtype=torch.long) for k in keep],
        [torch.tensor(int(ys[k]), dtype=torch.long) for k in keep],
    )


@register("imdb")
def build(
    root: str | None = None,
    url: str = URL,
    sha256: str | None = SHA256,
    cache_dir: str | None = None,
    num_words: int | None = 10000,
    skip_top: int = 0,
    load_maxlen: int | None = None,
    maxlen: int | None = 500,
    padding: str = "none",
    truncating: str = "pre",
    start_char: int | None = 1,
    oov_char: int | None = 2,
    index_from: int = 3,
    shuffle_seed: int = 113,
    val_fraction: float = 0.2,
    head: str = "sigmoid",
    max_reviews: int | None = None,
) -> TaskData:
    """Binary sentiment of IMDB reviews with Keras's conventions (module doc). head 'sigmoid': one logit and
    binary cross-entropy, Keras's Dense(1, 'sigmoid'); 'softmax': two classes. max_reviews: keep the first n
    reviews of each split (quick tests only)."""
    _check_options(val_fraction, head, padding, truncating, num_words, index_from)
    path = find_or_download(RELATIVE, url, sha256 or None, root=root, verify=bool(sha256))
    checksum = sha256 if sha256 else sha256_of(path)
    options = dict(num_words=num_words, skip_top=skip_top, load_maxlen=load_maxlen, seed=shuffle_seed,
                   start_char=start_char, oov_char=oov_char, index_from=index_from)
    x_train, y_train, x_test, y_test = _load_cached(path, checksum, options, cache_dir)
    if max_reviews is not None:
        x_train, y_train, x_test, y_test = x_train[:max_reviews], y_train[:max_reviews], x_test[:max_reviews], y_test[:max_reviews]
    x_train = pad_sequences(x_train, maxlen, padding, truncating)
    x_test = pad_sequences(x_test, maxlen, padding, truncating)
    splits = _splits(x_train, y_train, x_test, y_test, val_fraction)
    vocabulary = num_words or 1 + max(int(x.max()) for s in splits.values() for x in s.xs)
    info = {
        "source": str(path),
        "sha256": checksum,
        "reviews": {split: len(s) for split, s in splits.items()},
        "vocabulary": vocabulary,
        "maxlen": maxlen,
        "padding": padding,
        "positive_fraction": {split: float(torch.stack(s.ys).float().mean()) for split, s in splits.items()},
        "seed000_test_accuracy": {"lstm": 0.886, "simple_rnn": 0.84},
    }
    return TaskData(
        name="imdb", task_type=CLASSIFICATION, input_size=vocabulary, output_size=1 if head == "sigmoid" else 2,
        metric="nll", tokens=True, info=info, **splits,
    )


def _check_options(val_fraction: float, head: str, padding: str, truncating: str, num_words: int | None,
                   index_from: int) -> None:
    """Refuse a bad option with one line before anything is downloaded or read."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"data.val_fraction={val_fraction} must be in [0, 1)")
    if head not in ("sigmoid", "softmax"):
        raise ValueError(f"data.head={head!r}; use sigmoid (one logit, Keras's Dense(1)) or softmax (two classes)")
    if padding not in PADDINGS or truncating not in TRUNCATINGS:
        pad_sequences([], 1, padding, truncating)  # raises the one-line error
    if num_words is not None and num_words <= max(index_from, 2):
        raise ValueError(f"data.num_words={num_words} leaves no word after the reserved indices; use e.g. 10000")


def _load_cached(path: Path, checksum: str, options: dict, cache_dir: str | None
                 ) -> tuple[list[list[int]], np.ndarray, list[list[int]], np.ndarray]:
    """`load_data(path, **options)` as x_train, y_train, x_test, y_test, through the cache (keyed by the file's
    checksum and the options), so the file is read and its words mapped once per set of options."""

    def make() -> dict:
        (x_train, y_train), (x_test, y_test) = load_data(path, **options)
        return {"x_train": [torch.tensor(x, dtype=torch.int32) for x in x_train], "y_train": torch.as_tensor(y_train),
                "x_test": [torch.tensor(x, dtype=torch.int32) for x in x_test], "y_test": torch.as_tensor(y_test)}

    data = cached("imdb", options_key(source=checksum, v=1, **options), make, folder=cache_dir)
    x_train = [x.tolist() for x in data["x_train"]]
    x_test = [x.tolist() for x in data["x_test"]]
    return x_train, data["y_train"].numpy(), x_test, data["y_test"].numpy()


def _splits(x_train: list[list[int]], y_train: np.ndarray, x_test: list[list[int]], y_test: np.ndarray,
            val_fraction: float) -> dict[str, SequenceSplit]:
    """train, val and test; val is the last `val_fraction` of the training reviews, as Keras's validation_split."""
    n_val = int(len(x_train) * val_fraction)  # Keras's validation_split: the last fraction, not shuffled again
    n_fit = len(x_train) - n_val
    splits = {
        "train": _split(x_train[:n_fit], y_train[:n_fit]),
        "val": _split(x_train[n_fit:], y_train[n_fit:]),
        "test": _split(x_test, y_test),
    }
    if len(splits["val"]) == 0:
        raise ValueError(f"data.val_fraction={val_fraction} leaves no validation review; raise it")
    return splits
