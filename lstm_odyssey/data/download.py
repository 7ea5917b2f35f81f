"""Finding, downloading and caching data files: where to look (`data.root`, then the environment
variable LSTM_ODYSSEY_DATA, then the user cache), a checked download (sha256, atomic store), and a
cache of preprocessed tensors keyed by the source's checksum and the preprocessing options."""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..files import atomic_write

DATA_ENV = "LSTM_ODYSSEY_DATA"  # folder holding <task>/<file> (e.g. a shared read-only copy)
CACHE_ENV = "LSTM_ODYSSEY_CACHE"  # the user cache: downloads and preprocessed tensors
CHUNK = 1 << 16


class DownloadError(RuntimeError):
    """A data file is missing and could not be fetched, or its checksum is wrong."""


def cache_dir() -> Path:
    """The user cache: $LSTM_ODYSSEY_CACHE, else $XDG_CACHE_HOME/lstm_odyssey, else ~/.cache/lstm_odyssey."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "lstm_odyssey"


def search_roots(root: str | Path | None = None) -> list[Path]:
    """Where data files are looked for, in order: the `root` option, $LSTM_ODYSSEY_DATA, the user cache."""
    roots = []
    if root:
        roots.append(Path(root).expanduser())
    if os.environ.get(DATA_ENV):
        roots.append(Path(os.environ[DATA_ENV]).expanduser())
    roots.append(cache_dir())
    return roots


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: str | Path, sha256: str | None = None, timeout: float = 60.0) -> Path:
    """Fetch `url` into `dest` through a temporary file in the same folder, check its sha256, then
    rename: `dest` is either absent or complete and verified. Raises DownloadError in one line."""
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DownloadError(f"cannot create {dest.parent} to store {url}: {err.strerror or err}") from None
    def fetch(out) -> None:
        digest = hashlib.sha256()
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                for block in iter(lambda: response.read(CHUNK), b""):
                    out.write(block)
                    digest.update(block)
        except OSError as err:  # URLError, HTTPError, timeouts and disk errors are all OSErrors
            reason = getattr(err, "reason", None) or err.strerror or err
            raise DownloadError(f"download of {url} failed: {reason}") from None
        got = digest.hexdigest()
        if sha256 is not None and got != sha256.lower():
            raise DownloadError(f"checksum mismatch for {url}: sha256 {got}, expected {sha256}; the file was not stored")

    atomic_write(dest, fetch, suffix=".part")
    return dest


def find_or_download(
    relative: str,
    url: str,
    sha256: str | None,
    root: str | Path | None = None,
    verify: bool = True,
) -> Path:
    """The data file `relative` (e.g. "jsb_chorales/file.json"): looked for under each search root
    (also directly in the root), else downloaded into the first writable choice (`root` when given,
    else the user cache). The one-line error says where it looked and what to set."""
    name = Path(relative).name
    looked = []
    for base in search_roots(root):
        for candidate in (base / relative, base / name):
            if candidate in looked:
                continue
            looked.append(candidate)
            if candidate.is_file():
                if verify and sha256 and sha256_of(candidate) != sha256:
                    raise DownloadError(
                        f"{candidate} has the wrong sha256 (expected {sha256}); delete it or point data.root elsewhere"
                    )
                return candidate
    dest = (Path(root).expanduser() if root else cache_dir()) / relative
    try:
        return download(url, dest, sha256)
    except DownloadError as err:
        places = ", ".join(str(p) for p in looked)
        raise DownloadError(
            f"{name} not found (looked in {places}) and {err}; "
            f"set data.root or ${DATA_ENV} to a folder holding {relative}, or allow the download"
        ) from None


def options_key(**options: Any) -> str:
    """A short stable hash of preprocessing options (JSON with sorted keys)."""
    text = json.dumps(options, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached(name: str, key: str, make: Callable[[], Any], folder: str | Path | None = None) -> Any:
    """`make()`'s result, stored once as <folder>/processed/<name>-<key>.pt and loaded from there
    afterwards (written atomically; an unreadable cache file is rebuilt)."""
    folder = Path(folder).expanduser() if folder else cache_dir()
    path = folder / "processed" / f"{name}-{key}.pt"
    if path.is_file():
        try:
            return torch.load(path, weights_only=True)
        except Exception:  # a truncated or foreign file: rebuild it
            pass
    value = make()
    try:
        atomic_write(path, lambda fh: torch.save(value, fh))
    except OSError:  # a read-only cache only costs speed
        pass
    return value
