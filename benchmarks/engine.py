"""The training loop before and after a change, in one process: a single run (`train.run`) and a pack of 8
(`fit_pack`) of an earlier commit against today's, alternating, median of N, one thread; the histories must
be identical. Run from the repository root (the earlier code is read with `git show`):

    python -m benchmarks.engine --before bf359f5 --repeats 5

The earlier commit must have the two-loop layout (train.py with its own loop, packed/fit.py with `Pack`)."""

from __future__ import annotations

import argparse
import copy
import importlib.util
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from lstm_odyssey import train
from lstm_odyssey.config import load_config
from lstm_odyssey.packed import fit

OLD_MODULES = {"old_checkpoints": "lstm_odyssey/checkpoints.py", "old_train": "lstm_odyssey/train.py",
               "old_fit": "lstm_odyssey/packed/fit.py"}


def old_code(commit: str, folder: Path) -> tuple:
    """The earlier train and packed.fit modules, their relative imports made absolute (old checkpoints kept)."""
    for name, path in OLD_MODULES.items():
        source = subprocess.run(["git", "show", f"{commit}:{path}"], capture_output=True, text=True, check=True).stdout
        source = re.sub(r"^from \.\. import checkpoints, (\w+(?:, \w+)*), train$",
                        r"import old_checkpoints as checkpoints\nimport old_train as train\nfrom lstm_odyssey import \1",
                        source, flags=re.M)
        source = re.sub(r"^from \. import checkpoints, (.+)$", r"import old_checkpoints as checkpoints\nfrom lstm_odyssey import \1",
                        source, flags=re.M)
        package = "lstm_odyssey.packed." if name == "old_fit" else "lstm_odyssey."
        source = re.sub(r"^from \.\.(\w)", r"from lstm_odyssey.\1", source, flags=re.M)
        source = re.sub(r"^from \.(\w)", rf"from {package}\1", source, flags=re.M)
        (folder / f"{name}.py").write_text(source)
    sys.path.insert(0, str(folder))
    loaded = []
    for name in OLD_MODULES:
        spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        loaded.append(module)
    return loaded[1], loaded[2]


def configs() -> tuple[dict, list[dict]]:
    base = load_config(["data=adding", "data.length=50", "data.n_train=512", "data.n_val=128", "data.n_test=128",
                        "model.hidden_size=32", "trainer.batch_size=32", "trainer.epochs=4", "trainer.patience=null",
                        "trainer.progress=false", "optim=adam", "optim.lr=0.01", "cell=vanilla", "trainer.device=cpu"])
    pack = []
    for k in range(8):
        cfg = copy.deepcopy(base)
        cfg["trainer"]["seed"], cfg["model"]["hidden_size"], cfg["optim"]["lr"] = k, 16 + 4 * k, 0.001 * (k + 1)
        pack.append(cfg)
    return base, pack


def timed(fn) -> tuple[float, list[dict]]:
    folder = Path(tempfile.mkdtemp())
    start = time.perf_counter()
    out = fn(folder)
    return time.perf_counter() - start, out if isinstance(out, list) else [out]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.engine", description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="the earlier commit (two training loops)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    old_train, old_fit = old_code(args.before, Path(tempfile.mkdtemp()))
    base, pack = configs()
    cases = {
        "single run": (lambda d: old_train.run(base, d), lambda d: train.run(base, d)),
        "pack of 8": (lambda d: old_fit.fit_pack([(c, d / str(k)) for k, c in enumerate(pack)]),
                      lambda d: fit.fit_pack([(c, d / str(k)) for k, c in enumerate(pack)])),
    }
    for name, (before, after) in cases.items():
        times: dict[str, list[float]] = {"before": [], "after": []}
        for _ in range(args.repeats):
            t_before, ref = timed(before)
            t_after, out = timed(after)
            times["before"].append(t_before)
            times["after"].append(t_after)
            same = all(a["history"] == b["history"] for a, b in zip(ref, out))
        b, a = statistics.median(times["before"]), statistics.median(times["after"])
        print(f"{name}: before {b:.3f} s, after {a:.3f} s (median of {args.repeats}), after/before {a / b:.3f}; "
              f"{'identical' if same else 'DIFFERENT'} histories")


if __name__ == "__main__":
    main()
