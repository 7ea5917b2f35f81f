"""Trials per hour of the reproduction study, packed (`sweep.pack=auto`) against one trial at a time.

    python -m benchmarks.study                                   # both protocols, 16 trials each
    python -m benchmarks.study --protocols adam --trials 40 --repeats 3 --json study.json
    python -m benchmarks.study --protocols adam --trials 50 --device cuda      # on a GPU (the plan follows the device)

For each protocol (`paper`: sweeps/odyssey_jsb.yaml, SGD with Nesterov momentum, batch 1; `adam`:
sweeps/odyssey_jsb_adam.yaml, Adam, batch 8, clipping) it composes the study as `lstm-odyssey-train -m
+sweep=...` would, draws the study's own first `--trials` paired samples (trial k's hyperparameters are what
the sweeper gives trial k), and trains them on JSB Chorales one epoch at a time, both ways, in this process
with the same worker (one thread, or `--device cuda`): every trial alone (`train.train_epoch`, the fastest backend), packed
as `packed.plan.plan_packs(..., "auto")` groups them (the sweeper's plan), and packed with every trial run
to its pack's longest batch (no time cuts: the reference for them). They are interleaved
`--repeats` times, so a drifting load hits them alike; the ratio is the median of the per-repeat ratios.
An epoch is `--steps` training batches of the real chorales (the first steps x batch of the training set),
so that the paper's batch-1 epochs stay short; trials per hour assume `--epochs` full epochs per trial
(229 chorales: 229 batches per epoch at batch 1, 29 at batch 8), training steps only. Each group of the
plan is timed on its own (its trials one at a time, then as the plan runs them), so the second table says
which packs the gain comes from.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.cuts import fixed_cuts
from benchmarks.packs import Packs, Singles, check_device, environment, load_average, print_header, time_into
from lstm_odyssey.data import build_task
from lstm_odyssey.data.base import SequenceSplit, TaskData
from lstm_odyssey.packed.plan import plan_packs

PROTOCOLS = {"paper": "odyssey_jsb", "adam": "odyssey_jsb_adam"}  # protocol -> study (sweeps/<study>.yaml)
CASES = ("one at a time", "packed (auto)", "packed, uncut")


def study_config(study: str, cell: str, overrides: Sequence[str] = (), device: str = "cpu") -> dict[str, Any]:
    """The resolved config of one job of `study` (its defaults, before the searched parameters)."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from lstm_odyssey.config import register_studies

    register_studies()
    with initialize_config_module("lstm_odyssey.conf", version_base="1.3"):
        cfg = compose("train", overrides=[f"+sweep={study}", f"cell={cell}", f"trainer.device={device}", *overrides])
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    return container  # type: ignore[return-value]


def paired_samples(cfg: dict, n: int) -> list[dict[str, Any]]:
    """Trial k's hyperparameters for k < n, as the sweeper of a paired random study draws them."""
    import optuna

    from lstm_odyssey.sweep.jobs import derive_seed
    from lstm_odyssey.sweep.space import distributions, parse_space, to_values

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = parse_space(cfg["sweep"]["params"])
    study = optuna.create_study(direction="minimize")
    samples = []
    for k in range(n):
        study.sampler = optuna.samplers.RandomSampler(seed=derive_seed(cfg["sweep"]["seed"], "paired", k))
        trial = study.ask(distributions(space))
        samples.append(to_values(space, trial.params))
        study.tell(trial, 0.0)
    return samples


def trial_configs(cfg: dict, samples: list[dict[str, Any]]) -> list[dict]:
    """One resolved config per sample (dotted keys set), each with its own seed."""
    cfgs = []
    for k, sample in enumerate(samples):
        trial = json.loads(json.dumps(cfg))
        for key, value in sample.items():
            group, name = key.split(".", 1)
            trial[group][name] = value
        trial["trainer"]["seed"] = k
        cfgs.append(trial)
    return cfgs


def first_batches(task: TaskData, batches: int, batch_size: int) -> TaskData:
    """The task with its training split cut to `batches` batches (a short timed epoch of real data)."""
    n = min(len(task.train), batches * batch_size)
    train = SequenceSplit(task.train.xs[:n], task.train.ys[:n])
    return TaskData(**{**task.__dict__, "train": train})


def measure_protocol(protocol: str, args: argparse.Namespace, folder: Path) -> dict:
    """Singles against the auto plan for one protocol: the JSON-able row."""
    cfg = study_config(PROTOCOLS[protocol], args.cell, device=args.device)
    cfgs = trial_configs(cfg, paired_samples(cfg, args.trials))
    batch = int(cfg["trainer"]["batch_size"])
    full = build_task(**cfg["data"])
    task = first_batches(full, args.steps, batch)
    sizes = [int(c["model"]["hidden_size"]) for c in cfgs]
    groups = plan_packs(sizes, "auto", args.device, batch)
    # per group of the plan: its trials one at a time, and as the plan runs them (a pack, or alone: a group
    # of one is a single run both ways), cut and uncut; each timed alone, so the row can say where the gain is
    units = []
    for j, group in enumerate(groups):
        members = [cfgs[k] for k in group]
        planned = Packs(cfgs, task, [group], folder / protocol / f"pack{j}").epoch if len(group) > 1 else Singles(members, task).epoch
        units.append({"one at a time": Singles(members, task).epoch, "packed (auto)": planned, "packed, uncut": uncut(planned)})
    times = {name: [[] for _ in units] for name in CASES}  # case -> group -> seconds per repeat
    for unit in units:  # warm-up
        for fn in unit.values():
            fn()
    for _ in range(args.repeats):
        for j, unit in enumerate(units):
            for name, fn in unit.items():
                time_into(fn, times[name][j])
    totals = {name: [sum(per[r] for per in times[name]) for r in range(args.repeats)] for name in CASES}
    steps_per_epoch = math.ceil(len(full.train) / batch)
    row: dict[str, Any] = {"protocol": protocol, "study": PROTOCOLS[protocol], "optimizer": cfg["optim"]["name"],
                           "batch_size": batch, "trials": len(cfgs), "hidden_sizes": sizes, "packs": groups,
                           "steps_timed": math.ceil(len(task.train) / batch), "steps_per_epoch": steps_per_epoch,
                           "backend": Singles(cfgs[:1], task).backend}
    for name, seconds in totals.items():
        per_trial_step = statistics.median(seconds) / row["steps_timed"] / len(cfgs)
        row[name] = {"seconds_all": seconds, "trials_per_hour": 3600 / (per_trial_step * steps_per_epoch * args.epochs)}
    row["speedup"] = median_ratio(totals["one at a time"], totals["packed (auto)"])
    row["speedup_uncut"] = median_ratio(totals["one at a time"], totals["packed, uncut"])
    row["per_pack"] = [{"hidden_sizes": [sizes[k] for k in group], "share_alone": statistics.median(times["one at a time"][j]) / statistics.median(totals["one at a time"]),
                        "speedup": median_ratio(times["one at a time"][j], times["packed (auto)"][j]),
                        "speedup_uncut": median_ratio(times["one at a time"][j], times["packed, uncut"][j])}
                       for j, group in enumerate(groups)]
    return row


def median_ratio(reference: list[float], case: list[float]) -> float:
    """The median over repeats of reference / case (within a repeat, so a drifting load hits both alike)."""
    return statistics.median(a / b for a, b in zip(reference, case))


def uncut(epoch: Callable[[], None]) -> Callable[[], None]:
    """`epoch` with every trial of a pack run to the pack's longest batch (one segment: the reference that
    shows what stopping each trial at its own length gains)."""

    def run() -> None:
        with fixed_cuts(lambda steps: [(0, steps[0], len(steps))]):
            epoch()

    return run


def measure(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp(prefix="study-bench-"))
    load_before = load_average()
    rows = [measure_protocol(p, args, folder) for p in args.protocols]
    env = environment("python -m benchmarks.study " + " ".join(args.argv), load_before, args.device)
    return {"config": {k: v for k, v in vars(args).items() if k not in ("json", "argv")}, "env": env, "rows": rows}


def format_table(result: dict) -> str:
    epochs = result["config"]["epochs"]
    lines = ["| protocol | optimiser, batch | trials | packs (widths) | one at a time: trials / hour | packed: trials / hour | × "
             "| × without time cuts |", "|---|---|---:|---|---:|---:|---:|---:|"]
    for r in result["rows"]:
        widths = "+".join(str(len(g)) for g in r["packs"])
        lines.append(f"| {r['protocol']} ({r['study']}) | {r['optimizer']}, {r['batch_size']} | {r['trials']} | {widths} | "
                     f"{r['one at a time']['trials_per_hour']:.1f} | {r['packed (auto)']['trials_per_hour']:.1f} | "
                     f"{r['speedup']:.2f} | {r['speedup_uncut']:.2f} |")
    on = result["env"].get("gpu") or f"the CPU, {result['env']['threads']} thread(s)"
    lines.append(f"(trials per hour at {epochs} epochs per trial, training steps only, on {on})")
    for r in result["rows"]:
        lines += ["", f"{r['protocol']}, by group of the plan (share: of the time one at a time):", "",
                  "| trials | hidden sizes | share | × | × without time cuts |", "|---:|---|---:|---:|---:|"]
        for g in r["per_pack"]:
            lines.append(f"| {len(g['hidden_sizes'])} | {min(g['hidden_sizes'])}-{max(g['hidden_sizes'])} | {g['share_alone']:.0%} | "
                         f"{g['speedup']:.2f} | {g['speedup_uncut']:.2f} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.study", description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=list(PROTOCOLS))
    parser.add_argument("--cell", default="vanilla")
    parser.add_argument("--trials", type=int, default=16, help="the study's first paired trials to time")
    parser.add_argument("--steps", type=int, default=8, help="training batches per timed epoch")
    parser.add_argument("--epochs", type=int, default=100, help="epochs per trial that trials per hour assume")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where every trial trains (the plan follows it)")
    parser.add_argument("--json", metavar="FILE", help="also write every number here")
    args = parser.parse_args(argv)
    check_device(parser, args.device)
    if args.trials < 1 or args.steps < 1 or args.repeats < 1:
        parser.error("--trials, --steps and --repeats must be at least 1")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = measure(args)
    print_header(result["env"])
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
