"""Trials per hour: a pack of K trials against K single runs of the fastest backend, JSB Chorales-like shapes.

    python -m benchmarks.packs                       # the table (from the repository root)
    python -m benchmarks.packs --widths 8 16 32 --hidden 24 48 96 128 192 --drawn 40 --json packed.json
    python -m benchmarks.packs --write               # also refit the planner's costs (lstm_odyssey/packed/costs.json)
    python -m benchmarks.packs --device cuda --hidden 32 64 128 256 --widths 8 16 32 64 --drawn 0   # a GPU's widths

Both sides run the real training code on the same synthetic multilabel task (88 binary inputs and targets,
sequences of 50-70 steps, batch 8, Adam): an epoch of the training loop (engine.py) for each single run (its model on
`backend=auto`, which picks the fused or torch backend), and for the pack, on each of
`--trial-axes` (PackedModel's `stacked` trials, the default, and the `vmap` reference). Each case is timed over one
epoch of `--steps` batches, the cases interleaved `--repeats` times in one process (drifting load hits
them alike). Times are medians; "× single runs" is the median over the repeats of the ratio within a
repeat, "(best times)" the ratio of the fastest repeats (the least disturbed on a shared machine, where
the ratios, not the absolute times, are the figures to read). Trials per hour assume a JSB run of
`--epochs` epochs of 29 batches (229 chorales, batch 8), training steps only (evaluation is a few percent
of a run and is vectorised in a pack too). `--hidden` with no sizes times the drawn study alone.

`drawn` rows: `--drawn` hidden sizes drawn log-uniformly from [20, 200] (the paper's range), trained as
single runs, as packs of consecutive sizes after sorting (bucketed: little padding), as packs in the
drawn order (each padded to its largest), all on the first of `--trial-axes`, and as `plan.plan_packs(...,
"auto")` groups them (packs of the small sizes, single runs of the large ones) on every trial axis: the
study-level figure.

`--device cuda` trains every case on the GPU (timings wait for its kernels); the proposed auto width per hidden
size it prints is what costs.json's `gpu_width` should be set from (benchmarks/gpu_check.py runs it).

`--write` refits the planner's cost model to the fixed rows by least squares (ms per training batch: a trial
alone on 1 and n^2, a pack of K padded to N on 1, K and K N^2; needs two hidden sizes and two widths) and
writes it, with this command and the machine, to `plan` in lstm_odyssey/packed/costs.json, the file
`packed.plan` reads; the width caps and the GPU width there stay as they are.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lstm_odyssey import train
from lstm_odyssey.config import load_config
from lstm_odyssey.data.base import MULTILABEL, SequenceSplit, TaskData
from lstm_odyssey.engine import Engine, Setup
from lstm_odyssey.lifecycle import record_head
from lstm_odyssey.packed import costs
from lstm_odyssey.packed.fit import pack_setup
from lstm_odyssey.packed.model import TRIAL_AXES
from lstm_odyssey.packed.plan import plan_packs

FEATURES, BATCH_SIZE, JSB_BATCHES = 88, 8, 29


def jsb_like_task(n_train: int, seed: int = 0) -> TaskData:
    """Random piano rolls shaped like JSB Chorales: 88 notes, 50-70 frames, next-frame targets."""
    g = torch.Generator().manual_seed(seed)

    def split(n: int) -> SequenceSplit:
        rolls = [(torch.rand(int(t) + 1, FEATURES, generator=g) < 0.05).float() for t in torch.randint(50, 71, (n,), generator=g)]
        return SequenceSplit([r[:-1] for r in rolls], [r[1:] for r in rolls])

    return TaskData(name="jsb_like", task_type=MULTILABEL, train=split(n_train), val=split(8), test=split(8),
                    input_size=FEATURES, output_size=FEATURES, metric="nll")


def trial_configs(cell: str, hidden: list[int], device: str = "cpu") -> list[dict]:
    base = load_config([f"cell={cell}", "optim=adam", f"trainer.batch_size={BATCH_SIZE}", f"trainer.device={device}"])
    cfgs = []
    for k, h in enumerate(hidden):
        cfg = json.loads(json.dumps(base))
        cfg["model"]["hidden_size"] = h
        cfg["trainer"]["seed"] = k
        cfgs.append(cfg)
    return cfgs


def engine_for(cfgs: list[dict], folder: Path, setup: Setup) -> Engine:
    """The training loop of `cfgs` (run directories under `folder`), stepped an epoch at a time."""
    dirs = [folder / f"trial{k}" for k in range(len(cfgs))]
    return Engine(cfgs, dirs, [record_head(c, d) for c, d in zip(cfgs, dirs)], setup, folder / "checkpoint.pt")


class Singles:
    """K single runs as `train.run` trains them (`train.SingleRunner`, the fastest backend), one epoch each per call,
    on their `trainer.device`."""

    def __init__(self, cfgs: list[dict], task: TaskData, folder: Path | None = None) -> None:
        folder = folder or Path(tempfile.mkdtemp(prefix="bench-singles-"))
        self.engines = []
        for k, cfg in enumerate(cfgs):
            device = train.pick_device(cfg["trainer"]["device"])
            torch.manual_seed(cfg["trainer"]["seed"])
            model = train.build_model(cfg, task)  # SingleRunner moves it to `device`
            self.engines.append(engine_for([cfg], folder / f"single{k}", Setup(task, device, [model], train.SingleRunner(cfg, task, model, device))))
        self.backend = self.engines[0].runner.backend

    def epoch(self) -> None:
        for engine in self.engines:
            engine.train_epoch()


class Packs:
    """The same trials in packs (lists of positions), one epoch of every pack per call."""

    def __init__(self, cfgs: list[dict], task: TaskData, groups: list[list[int]], folder: Path, trial_axis: str = "stacked") -> None:
        self.packs = [engine_for([cfgs[k] for k in group], folder / f"pack{j}", pack_setup([cfgs[k] for k in group], task, trial_axis))
                      for j, group in enumerate(groups)]

    def epoch(self) -> None:
        for pack in self.packs:
            pack.train_epoch()


def time_into(fn: Callable[[], None], times: list[float]) -> None:
    """Append the seconds `fn` takes; on a GPU, until its queued kernels have finished."""
    synchronize()
    start = time.perf_counter()
    fn()
    synchronize()
    times.append(time.perf_counter() - start)


def synchronize() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


Cases = dict[str, tuple[Callable[[], None], dict]]  # name -> (one epoch of the case, what the row says of it)


def fixed_cases(args: argparse.Namespace, task: TaskData, folder: Path, cases: Cases) -> None:
    """Per fixed hidden size: `--singles` single runs, and a pack of each width on each trial axis."""
    for h in args.hidden:
        singles = Singles(trial_configs(args.cell, [h] * args.singles, args.device), task)
        cases[f"single h={h}"] = (singles.epoch, {"kind": "single", "hidden": h, "width": 1, "trials": args.singles,
                                                   "backend": singles.backend})
        for k in args.widths:
            for trial_axis in args.trial_axes:
                packs = Packs(trial_configs(args.cell, [h] * k, args.device), task, [list(range(k))], folder, trial_axis)
                cases[f"pack h={h} K={k} {trial_axis}"] = (packs.epoch, {"kind": "pack", "hidden": h, "width": k, "trials": k, "trial_axis": trial_axis})


def drawn_cases(args: argparse.Namespace, task: TaskData, folder: Path, cases: Cases) -> None:
    """`--drawn` hidden sizes from log-U[20, 200]: single runs, bucketed and padded packs, the `auto` plan."""
    g = torch.Generator().manual_seed(args.seed)
    drawn = [round(math.exp(math.log(20) + (math.log(200) - math.log(20)) * u)) for u in torch.rand(args.drawn, generator=g).tolist()]
    cfgs = trial_configs(args.cell, drawn, args.device)
    singles = Singles(cfgs, task)
    cases["drawn singles"] = (singles.epoch, {"kind": "drawn", "strategy": "single", "width": 1, "trials": len(drawn),
                                              "hidden_sizes": drawn, "backend": singles.backend})
    for k in args.widths:
        in_order = [list(range(j, min(j + k, len(drawn)))) for j in range(0, len(drawn), k)]
        for strategy, groups in (("bucketed", plan_packs(drawn, k, args.device, cfgs[0]["trainer"]["batch_size"])), ("padded", in_order)):
            packs = Packs(cfgs, task, groups, folder, args.trial_axes[0])
            cases[f"drawn {strategy} K={k} {args.trial_axes[0]}"] = (packs.epoch, {
                "kind": "drawn", "strategy": strategy, "width": k, "trials": len(drawn), "hidden_sizes": drawn,
                "trial_axis": args.trial_axes[0]})
    groups = plan_packs(drawn, "auto", args.device, cfgs[0]["trainer"]["batch_size"])
    for trial_axis in args.trial_axes:
        alone = Singles([cfgs[g[0]] for g in groups if len(g) == 1], task) if any(len(g) == 1 for g in groups) else None
        packs = Packs(cfgs, task, [g for g in groups if len(g) > 1], folder, trial_axis)

        def auto_epoch(packs=packs, alone=alone) -> None:
            packs.epoch()
            if alone is not None:
                alone.epoch()

        cases[f"drawn auto {trial_axis}"] = (auto_epoch, {"kind": "drawn", "strategy": "auto", "width": "auto", "trials": len(drawn),
                                                    "hidden_sizes": drawn, "packs": groups, "trial_axis": trial_axis})


def time_cases(cases: Cases, args: argparse.Namespace) -> list[dict]:
    """One warm-up epoch of every case, then `--repeats` rounds of all of them, interleaved: a row per case."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for fn, _ in cases.values():  # warm-up
        fn()
    for _ in range(args.repeats):
        for name, (fn, _) in cases.items():
            time_into(fn, times[name])
    rows = []
    for name, (_, info) in cases.items():
        seconds = statistics.median(times[name])
        per_trial_step = seconds / args.steps / info["trials"]
        rows.append({**info, "case": name, "epoch_seconds": seconds, "seconds_all": times[name],
                     "ms_per_trial_step": per_trial_step * 1e3,
                     "trials_per_hour": 3600 / (per_trial_step * JSB_BATCHES * args.epochs)})
    return rows


def add_speedups(rows: list[dict]) -> None:
    """Each row's speed against its single runs (packs: the same hidden size; drawn: the drawn singles), and a
    stacked pack's against the same case run by vmap."""
    singles = {r["hidden"]: r for r in rows if r["kind"] == "single"}
    drawn_single = next((r for r in rows if r["kind"] == "drawn" and r["strategy"] == "single"), None)
    by_case = {(r["kind"], r.get("hidden"), r.get("strategy"), r["width"], r.get("trial_axis")): r for r in rows}
    for r in rows:
        base = singles.get(r.get("hidden")) if r["kind"] == "pack" else drawn_single if r["kind"] == "drawn" else r
        r["speedup"] = relative_speed(r, base)
        r["speedup_best"] = (min(base["seconds_all"]) / base["trials"]) / (min(r["seconds_all"]) / r["trials"])
        vmap = by_case.get((r["kind"], r.get("hidden"), r.get("strategy"), r["width"], "vmap"))
        if r.get("trial_axis") == "stacked" and vmap is not None:
            r["vs_vmap"] = relative_speed(r, vmap)


def measure(args: argparse.Namespace) -> dict:
    """Every case of the benchmark; returns the JSON-able result."""
    torch.set_num_threads(args.threads)
    task = jsb_like_task(args.steps * BATCH_SIZE)
    folder = Path(tempfile.mkdtemp(prefix="packed-bench-"))
    cases: Cases = {}
    fixed_cases(args, task, folder, cases)
    if args.drawn:
        drawn_cases(args, task, folder, cases)
    load_before = load_average()
    rows = time_cases(cases, args)
    add_speedups(rows)
    env = environment("python -m benchmarks.packs " + " ".join(args.argv), load_before, args.device)
    config = {k: v for k, v in vars(args).items() if k not in ("json", "argv")}
    return {"config": config, "env": env, "rows": rows, "auto_rule": auto_rule(rows, args.trial_axes[0])}


def fit_costs(rows: list[dict], steps: int, trial_axis: str = "stacked") -> dict[str, list[float]]:
    """The planner's cost model (costs.json's `plan` section, ms per training batch of 8) refitted by least
    squares to one run: single runs' time per trial on (1, n^2), packs' on `trial_axis` per pack on (1, K, K N^2)."""
    singles = [r for r in rows if r["kind"] == "single"]
    packs = [r for r in rows if r["kind"] == "pack" and r["trial_axis"] == trial_axis]
    if len({r["hidden"] for r in singles}) < 2 or len({r["width"] for r in packs}) < 2:
        raise ValueError("fitting the cost model needs at least 2 hidden sizes and 2 widths (--hidden, --widths)")
    alone = least_squares([[1.0, r["hidden"] ** 2] for r in singles],
                          [1e3 * r["epoch_seconds"] / steps / r["trials"] for r in singles])
    pack = least_squares([[1.0, r["width"], r["width"] * r["hidden"] ** 2] for r in packs],
                         [1e3 * r["epoch_seconds"] / steps for r in packs])
    return {"alone_cost_ms": alone, "pack_cost_ms": pack}


def least_squares(a: list[list[float]], b: list[float]) -> list[float]:
    """The coefficients x minimising |a x - b| (float64), rounded to 4 significant digits."""
    x = torch.linalg.lstsq(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64).unsqueeze(1)).solution
    return [float(f"{v:.4g}") for v in x.flatten().tolist()]


def write_costs(name: str, values: dict, env: dict, path: str | Path | None = None) -> Path:
    """Replace the numbers `values` of costs.json's section `name` (the package's file, or `path`) and its
    record of how they were measured (the command, the machine, torch): the file the library reads."""
    target = Path(path) if path else Path(str(costs.COSTS_FILE))
    data = costs.load(target)
    unknown = set(values) - set(data[name])
    if unknown:
        raise KeyError(f"{target} section {name!r} has no {sorted(unknown)}")
    data[name].update(values)
    data[name]["measured"] = {
        "command": env["command"],
        "machine": f"{env['cpu']}, {env['cores']} cores, {env['threads']} thread(s), load {env['load_average']} before",
        "torch": env["torch"], "date": datetime.date.today().isoformat(),
        "note": "written by --write: the numbers as fitted, not rounded by hand",
    }
    target.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return target


def load_average() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def environment(command: str, load_before: list[float] | None, device: str = "cpu") -> dict:
    """What a benchmark ran on, and the machine's load before and after (the figures are ratios on a shared
    machine: the load says how much to trust them)."""
    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else None
    return {"torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "load_average": load_before,
            "load_average_after": load_average(), "command": command, "device": device, "gpu": gpu}


def print_header(env: dict) -> None:
    print(f"# {env['command']}")
    on = f"on {env['gpu']}, " if env.get("gpu") else ""
    print(f"# torch {env['torch']}, {on}{env['threads']} thread(s) of {env['cores']} cores, "
          f"load {env['load_average']} before, {env['load_average_after']} after")


def relative_speed(row: dict, base: dict) -> float:
    """Trials per hour of `row` over `base`: the median over the repeats of the ratio of their times per trial
    in the same repeat (timed next to each other, so that a drifting load cancels)."""
    return statistics.median(
        (b / base["trials"]) / (t / row["trials"]) for t, b in zip(row["seconds_all"], base["seconds_all"])
    )


def auto_rule(rows: list[dict], trial_axis: str = "stacked") -> list[dict]:
    """Per measured hidden size, the width with the most trials per hour on `trial_axis` (1 when no pack beats
    single runs)."""
    rule = []
    for h in sorted({r["hidden"] for r in rows if r["kind"] == "pack" and r["trial_axis"] == trial_axis}):
        packs = [r for r in rows if r["kind"] == "pack" and r["hidden"] == h and r["trial_axis"] == trial_axis]
        best = max(packs, key=lambda r: r["speedup"])
        rule.append({"hidden": h, "width": best["width"] if best["speedup"] > 1 else 1, "speedup": max(best["speedup"], 1.0)})
    return rule


def format_table(result: dict) -> str:
    lines = ["| case | hidden | K | trials | ms / trial-step | trials / hour | × single runs | (best times) | × vmap pack |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        hidden = r.get("hidden", f"drawn ({r.get('strategy')})")
        vs_vmap = f"{r['vs_vmap']:.2f}" if "vs_vmap" in r else ""
        lines.append(f"| {r['case']} | {hidden} | {r['width']} | {r.get('trial_axis', '-')} | {r['ms_per_trial_step']:.2f} | "
                     f"{r['trials_per_hour']:.1f} | {r['speedup']:.2f} | {r['speedup_best']:.2f} | {vs_vmap} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.packs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cell", default="vanilla")
    parser.add_argument("--hidden", type=int, nargs="*", default=[24, 48, 96, 128, 192], help="fixed hidden sizes to time")
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 16, 32], help="pack widths K")
    parser.add_argument("--trial-axes", nargs="+", default=list(TRIAL_AXES), choices=TRIAL_AXES,
                        help="how PackedModel runs the trials, the ways to time (the first one also runs the drawn bucketed/padded cases and proposes the rule)")
    parser.add_argument("--singles", type=int, default=2, help="single runs timed per hidden size (their time is per trial)")
    parser.add_argument("--drawn", type=int, default=40, help="trials with hidden sizes drawn from log-U[20, 200] (0: none)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the drawn hidden sizes")
    parser.add_argument("--steps", type=int, default=6, help="training batches per timed epoch")
    parser.add_argument("--epochs", type=int, default=60, help="epochs of the JSB run that trials per hour assume")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where every case trains")
    parser.add_argument("--json", metavar="FILE", help="also write every number here")
    parser.add_argument("--write", nargs="?", const="", metavar="FILE",
                        help="refit the planner's cost model to this run (on the first of --trial-axes) and write it to "
                             "costs.json's plan section (FILE: a copy of it; default: the package's own)")
    args = parser.parse_args(argv)
    check_device(parser, args.device)
    if args.write is not None and args.device != "cpu":
        parser.error("--write refits the CPU cost model: time it with --device cpu (a GPU's width is costs.json's gpu_width)")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def check_device(parser: argparse.ArgumentParser, device: str) -> None:
    """One line, before any case is built, when the asked device is not here."""
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available here: run it on a GPU machine, or use --device cpu")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = measure(args)
    print_header(result["env"])
    print(format_table(result))
    print("# proposed auto width by hidden size: " + ", ".join(f"h={r['hidden']}: K={r['width']} ({r['speedup']:.2f}x)" for r in result["auto_rule"]))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    if args.write is not None:
        fitted = fit_costs(result["rows"], args.steps, args.trial_axes[0])
        target = write_costs("plan", fitted, result["env"], args.write)
        print(f"# wrote {fitted} to {target}")


if __name__ == "__main__":
    main()
