"""What a pack's time cuts cost and save: the prices behind `stacked.cut_prices`.

    python -m benchmarks.cuts                          # the grid, and the fitted prices (from the repository root)
    python -m benchmarks.cuts --trials 4 16 --hidden 32 128 --steps 100 --repeats 9
    python -m benchmarks.cuts --write                  # also write them to lstm_odyssey/packed/costs.json

For each pack of K trials of `--hidden` units (vanilla, input 88, batch 8, `--steps` steps, one thread),
`stacked.recurrent` forward + backward is timed three ways, interleaved: one segment of all K trials; the
same sweep cut in `--segments` equal segments, all trials running (so the difference is what segments
cost); and half the trials leaving at half time (so the difference is what a running trial's step costs).
From these it fits a step's shared cost, a running trial's step (a constant and a term in hidden^2) and a
segment's cost, in microseconds: the constants `stacked.py` reads from `cuts` in lstm_odyssey/packed/costs.json,
which `--write` replaces (with this command and the machine).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from benchmarks.packs import environment, least_squares, load_average, print_header, time_into, write_costs
from lstm_odyssey.data.base import MULTILABEL
from lstm_odyssey.models import SequenceModel
from lstm_odyssey.packed import stacked

FEATURES, BATCH = 88, 8


@contextmanager
def fixed_cuts(rule: Callable[[list[int]], list[tuple[int, int, int]]]) -> Iterator[None]:
    """`stacked.recurrent` cuts by `rule` (the trials' steps -> the cuts) instead of `stacked.segments`."""
    chosen = stacked.segments
    stacked.segments = lambda steps, *prices: rule(steps)
    try:
        yield
    finally:
        stacked.segments = chosen


def sweep(trials: int, hidden: int, steps: int) -> Callable[[list[tuple[int, int, int]]], None]:
    """A forward + backward of `trials` random vanilla trials through `stacked.recurrent`, for given cuts."""
    with torch.device("meta"):
        template = SequenceModel(MULTILABEL, FEATURES, FEATURES, hidden_size=hidden, cell="vanilla", backend="loop")
    params = {name.removeprefix("rnn."): (0.1 * torch.randn(trials, *p.shape)).requires_grad_()
              for name, p in template.named_parameters() if name.startswith("rnn.")}
    x = torch.randn(trials, BATCH, steps, FEATURES)

    def run(cuts: list[tuple[int, int, int]]) -> None:
        with fixed_cuts(lambda steps: cuts):
            out, _ = stacked.recurrent(template.rnn, params, x, None, None, [steps] * trials)
        out.sum().backward()

    return run


def measure(args: argparse.Namespace) -> list[dict]:
    torch.set_num_threads(1)
    rows = []
    for k in args.trials:
        for n in args.hidden:
            t, run = args.steps, sweep(k, n, args.steps)
            bounds = [round(t * j / args.segments) for j in range(args.segments + 1)]
            cases = {"one": [(0, t, k)], "segments": [(a, b, k) for a, b in zip(bounds, bounds[1:])],
                     "half": [(0, t // 2, k), (t // 2, t, k - k // 2)]}
            times: dict[str, list[float]] = {name: [] for name in cases}
            for cuts in cases.values():
                run(cuts)  # warm-up
            for _ in range(args.repeats):
                for name, cuts in cases.items():
                    time_into(functools.partial(run, cuts), times[name])
            us = {name: statistics.median(v) * 1e6 for name, v in times.items()}
            trial_step = (us["one"] - us["half"]) / ((t - t // 2) * (k // 2))
            rows.append({"trials": k, "hidden": n, "steps": t, **{f"{name}_us": v for name, v in us.items()},
                         "segment_us": (us["segments"] - us["one"]) / (args.segments - 1), "trial_step_us": trial_step,
                         "shared_step_us": us["one"] / t - k * trial_step})
    return rows


def fit(rows: list[dict]) -> dict[str, float | list[float]]:
    """costs.json's `cuts` numbers from the grid: medians for the shared step and the segment, least squares
    of a trial's step on (1, hidden^2)."""
    trial_step = least_squares([[1.0, r["hidden"] ** 2] for r in rows], [r["trial_step_us"] for r in rows])
    return {"step_shared_us": statistics.median(r["shared_step_us"] for r in rows), "trial_step_us": trial_step,
            "segment_us": statistics.median(r["segment_us"] for r in rows)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cuts", description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[4, 10, 20])
    parser.add_argument("--hidden", type=int, nargs="+", default=[32, 64, 100, 140, 200])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--segments", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--write", nargs="?", const="", metavar="FILE",
                        help="write the fitted prices to costs.json's cuts section (FILE: a copy of it; default: the package's own)")
    args = parser.parse_args(argv)
    if min(args.trials) < 2 or args.steps < args.segments or args.segments < 2:
        parser.error("--trials must be at least 2 and --steps at least --segments (itself at least 2)")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    load_before = load_average()
    rows = measure(args)
    env = environment(" ".join(["python -m benchmarks.cuts", *args.argv]), load_before)
    print_header(env)
    print("| trials | hidden | one segment (ms) | shared step (us) | trial step (us) | segment (us) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['trials']} | {r['hidden']} | {r['one_us'] / 1e3:.1f} | {r['shared_step_us']:.0f} | {r['trial_step_us']:.1f} | {r['segment_us']:.0f} |")
    prices = fit(rows)
    const, per_unit2 = prices["trial_step_us"]
    print(f"step_shared_us = {prices['step_shared_us']:.0f}, trial_step_us = [{const:.1f}, {per_unit2:.5f}], segment_us = {prices['segment_us']:.0f}")
    if args.write is not None:
        print(f"# wrote them to {write_costs('cuts', prices, env, args.write)}")


if __name__ == "__main__":
    main()
