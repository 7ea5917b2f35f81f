"""Speed benchmark: every cell on every backend against torch.nn.LSTM / nn.GRU of the same sizes.

    lstm-odyssey-bench --threads 2 --input 32 --hidden 128 --batch 64 --steps 100 --json bench.json
    python -m lstm_odyssey.bench --device cuda --hidden 512 --cells vanilla np gru

For each (cell, backend) it reports the median forward (no grad) and forward+backward time over
`--repeats` runs after `--warmup` runs, the ratio to torch.nn.LSTM measured in the same process (runs
of all cases are interleaved, so drifting load hits them alike), the first call's cost (compilation or
graph capture), peak GPU memory, and the activation memory kept for backward per time step.

The packed trials' benchmarks (trials per hour of the reproduction study, packs against single runs, the
prices of the time cuts) are developer measurements: they live in the repository's `benchmarks/` folder, not
in the package (`python -m benchmarks.study` from a checkout; benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from . import backends
from .cells import PRESETS, get_spec
from .layers import RecurrentLayer


def saved_bytes(module: nn.Module, batch: int, steps: int, input_size: int | None = None) -> int:
    """Bytes of the tensors autograd keeps for backward after one forward (each storage counted once,
    parameters not counted): the activation memory of a training step."""
    input_size = input_size or module.input_size
    param = next(module.parameters())
    weights = {p.untyped_storage().data_ptr() for p in module.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    x = torch.randn(batch, steps, input_size, device=param.device, dtype=param.dtype)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = module(x)
    del out
    return sum(seen.values())


@dataclass
class Case:
    cell: str
    backend: str
    module: nn.Module
    x: torch.Tensor
    first_ms: float = 0.0
    fwd: list[float] = field(default_factory=list)
    fwd_bwd: list[float] = field(default_factory=list)
    peak_mb: float | None = None
    bytes_per_step: float | None = None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], None], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return (time.perf_counter() - start) * 1e3


def _forward(case: Case) -> None:
    with torch.no_grad():
        case.module(case.x)


def _forward_backward(case: Case) -> None:
    out = case.module(case.x)[0]
    out.sum().backward()
    for p in case.module.parameters():
        p.grad = None


def build_cases(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> tuple[list[Case], list[str]]:
    """The reference modules (nn.LSTM, nn.GRU) and every (cell, backend) that can run here."""
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.steps, args.input, device=device, dtype=dtype)
    cases = [
        Case("reference", "nn.LSTM", nn.LSTM(args.input, args.hidden, batch_first=True).to(device, dtype), x),
        Case("reference", "nn.GRU", nn.GRU(args.input, args.hidden, batch_first=True).to(device, dtype), x),
    ]
    skipped = []
    for cell in args.cells:
        spec = get_spec(cell)
        chosen = []
        for backend in args.backends:
            problem = backends.why_not(backend, spec, device, return_gates=False)
            if problem:
                skipped.append(f"{cell}/{backend}: {problem}")
                continue
            name = backends.select(backend, spec, device)
            if name not in chosen:
                chosen.append(name)
        for name in chosen:
            layer = RecurrentLayer(args.input, args.hidden, cell, backend=name).to(device, dtype)
            cases.append(Case(cell, name, layer, x))
    return cases, skipped


def measure(args: argparse.Namespace) -> dict:
    """Run the benchmark; returns the JSON-able result (config, environment, rows)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = getattr(torch, args.dtype)
    cases, skipped = build_cases(args, device, dtype)
    for case in cases:  # first call: compilation / graph capture, then warm-up
        case.first_ms = _timed(lambda c=case: _forward_backward(c), device)
        for _ in range(args.warmup):
            _forward_backward(case)
            _forward(case)
    for _ in range(args.repeats):  # interleaved, so that load changes hit every case alike
        for case in cases:
            case.fwd.append(_timed(lambda c=case: _forward(c), device))
            case.fwd_bwd.append(_timed(lambda c=case: _forward_backward(c), device))
    for case in cases:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            _forward_backward(case)
            torch.cuda.synchronize(device)
            case.peak_mb = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        if not args.no_memory:
            a = saved_bytes(case.module, args.batch, args.steps, args.input)
            b = saved_bytes(case.module, args.batch, 2 * args.steps, args.input)
            case.bytes_per_step = (b - a) / args.steps
    ref = {c.backend: c for c in cases if c.cell == "reference"}
    rows = []
    for case in cases:
        fwd, fwd_bwd = statistics.median(case.fwd), statistics.median(case.fwd_bwd)
        row = {
            "cell": case.cell,
            "backend": case.backend,
            "fwd_ms": fwd,
            "fwd_bwd_ms": fwd_bwd,
            "ratio_fwd": fwd / statistics.median(ref["nn.LSTM"].fwd),
            "ratio_fwd_bwd": fwd_bwd / statistics.median(ref["nn.LSTM"].fwd_bwd),
            "first_ms": case.first_ms,
            "peak_mb": case.peak_mb,
            "bytes_per_step": case.bytes_per_step,
            "fwd_all_ms": case.fwd,
            "fwd_bwd_all_ms": case.fwd_bwd,
        }
        if case.backend == "nn.GRU" or (case.cell in PRESETS and get_spec(case.cell).family == "gru"):
            row["ratio_fwd_bwd_gru"] = fwd_bwd / statistics.median(ref["nn.GRU"].fwd_bwd)
        rows.append(row)
    env = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "command": "lstm-odyssey-bench " + " ".join(args.argv),
    }
    config = {k: v for k, v in vars(args).items() if k not in ("json", "argv")}
    config["device"] = str(device)
    return {"config": config, "env": env, "rows": rows, "skipped": skipped}


def format_table(result: dict) -> str:
    """The rows as a Markdown table (the README's speed table is one)."""
    head = "| cell | backend | fwd ms | fwd+bwd ms | ×LSTM fwd | ×LSTM fwd+bwd | ×GRU fwd+bwd | first call ms | peak MB | saved B/step |"
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def num(v, fmt):
        return "" if v is None else format(v, fmt)

    for r in result["rows"]:
        lines.append(
            f"| {r['cell']} | {r['backend']} | {r['fwd_ms']:.2f} | {r['fwd_bwd_ms']:.2f} | {r['ratio_fwd']:.2f} | "
            f"{r['ratio_fwd_bwd']:.2f} | {num(r.get('ratio_fwd_bwd_gru'), '.2f')} | {r['first_ms']:.0f} | "
            f"{num(r['peak_mb'], '.1f')} | {num(r['bytes_per_step'], ',.0f')} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lstm-odyssey-bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", nargs="+", default=list(PRESETS), help="presets to run (default: all)")
    parser.add_argument(
        "--backends", nargs="+", default=["auto"], choices=list(backends.BACKENDS),
        help="backends per cell (default: auto); ones that cannot run a cell are listed as skipped",
    )
    parser.add_argument("--input", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda[:k]")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16", "float16"])
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per case (median reported)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-memory", action="store_true", help="skip the saved-activation measurement")
    parser.add_argument("--json", metavar="FILE", help="also write every number (and each run's time) here")
    args = parser.parse_args(argv)
    unknown = [c for c in args.cells if c not in PRESETS]
    if unknown:
        parser.error(f"unknown cell {unknown[0]!r}; choose from {', '.join(PRESETS)}")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: list[str] | None = None) -> None:
    """Console entry point: print the table, optionally write JSON (returns None: exit status 0)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--study"]:
        command = " ".join(["python -m benchmarks.study", *argv[1:]])
        raise SystemExit(f"lstm-odyssey-bench: --study moved out of the package; from a checkout of the repository "
                         f"run `{command}` (benchmarks/README.md)")
    args = parse_args(argv)
    result = measure(args)
    env = result["env"]
    print(f"# {env['command']}")
    print(f"# torch {env['torch']} on {env['device']}, {env['threads']} threads, load {env['load_average']}")
    print(format_table(result))
    for line in result["skipped"]:
        print(f"# skipped {line}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
