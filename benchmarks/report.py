"""How long `lstm-odyssey-report` takes on a published study, with the fANOVA bootstrap's resamples fitted one at a
time against in parallel on every core, and that both give the same tables.

    python -m benchmarks.report                                  # results/odyssey_jsb/adam (450 runs), 1 repeat
    python -m benchmarks.report results/odyssey_uea/adam --repeats 3

Each repeat writes the report of a copy of the study's records twice, alternating (sequential, then parallel),
into a scratch folder; the figures are the medians over the repeats and the median of the per-repeat ratios.
Most of a report's time is the bootstrap of the hyperparameter claims (analysis/bootstrap.py): 200 resamples x
one fANOVA forest per cell.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.packs import environment, load_average, print_header
from lstm_odyssey.analysis import bootstrap, write_report


def copy_study(study: Path, into: Path) -> Path:
    """The study's records and plan (multirun.yaml), without its committed report."""
    copy = into / study.name
    for task in (p for p in study.iterdir() if p.is_dir() and p.name != "report" and not p.name.startswith(".")):
        shutil.copytree(task, copy / task.name)
    if (study / "multirun.yaml").exists():
        shutil.copy(study / "multirun.yaml", copy / "multirun.yaml")
    return copy


def timed_report(copy: Path, out: Path, workers: int | None) -> float:
    """Seconds to write the report with `workers` processes for the resamples (None: every core, the default)."""
    chosen = bootstrap.workers_for
    if workers is not None:
        bootstrap.workers_for = lambda plan: workers
    try:
        start = time.perf_counter()
        write_report([copy], out)
        return time.perf_counter() - start
    finally:
        bootstrap.workers_for = chosen


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", nargs="?", type=Path, default=Path("results/odyssey_jsb/adam"))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write every number to this file")
    args = parser.parse_args(argv)
    if not (args.study / "multirun.yaml").exists() and not any(args.study.rglob("result.json")):
        parser.error(f"{args.study} holds no study records: give a study folder such as results/odyssey_jsb/adam")
    load_before = load_average()
    seconds: dict[str, list[float]] = {"sequential": [], "parallel": []}
    with tempfile.TemporaryDirectory() as scratch:
        copy = copy_study(args.study, Path(scratch))
        for k in range(args.repeats):
            for name, workers in (("sequential", 1), ("parallel", None)):
                seconds[name].append(timed_report(copy, Path(scratch) / f"{name}{k}", workers))
        tables = sorted(p.name for p in (Path(scratch) / "sequential0" / "tables").glob("*.csv"))
        differ = [t for t in tables if (Path(scratch) / "sequential0" / "tables" / t).read_text()
                  != (Path(scratch) / "parallel0" / "tables" / t).read_text()]
    env = environment(" ".join(["python -m benchmarks.report", *(argv if argv is not None else sys.argv[1:])]),
                      load_before)
    env["workers"] = bootstrap.workers_for(bootstrap.AnalysisConfig())
    print_header(env)
    ratio = statistics.median(s / p for s, p in zip(seconds["sequential"], seconds["parallel"], strict=True))
    print(f"\n| study | runs | sequential (s) | parallel, {env['workers']} workers (s) | speed-up |\n|---|---:|---:|---:|---:|")
    runs = sum(1 for _ in args.study.rglob("result.json"))
    print(f"| {args.study} | {runs} | {statistics.median(seconds['sequential']):.1f} | "
          f"{statistics.median(seconds['parallel']):.1f} | {ratio:.2f}x |")
    print(f"\ntables that differ between the two: {differ or 'none'}")
    if args.json:
        args.json.write_text(json.dumps({"environment": env, "seconds": seconds, "differ": differ}, indent=1))
    if differ:
        sys.exit(f"the parallel report's tables differ from the sequential one's: {differ}")


if __name__ == "__main__":
    main()
