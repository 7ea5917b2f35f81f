"""The GPU check: everything a lent GPU should tell us, in one command that fits in minutes.

    python -m benchmarks.gpu_check docs/gpu_check/2026-12-07_h100      # on a GPU machine: at most 8 minutes
    python -m benchmarks.gpu_check /tmp/gpu_check --reduced            # anywhere: the same steps, tiny, on the CPU

It writes `gpu_check.md` and `gpu_check.json` into the folder, one section per step, each step on its own time
budget, and a failed or skipped step says why instead of ending the check:

1. the CUDA tests (the test modules with CUDA cases: every backend, the packed model and fit on the GPU);
2. `lstm-odyssey-bench` at hidden 128 and 512 against cuDNN's nn.LSTM / nn.GRU (all cells);
3. the packed study benchmark (`benchmarks.study`, Adam protocol, the study's first 50 paired trials on the GPU):
   trials per hour, packed as the `auto` plan groups them against one run at a time;
4. the GPU's pack widths (`benchmarks.packs --device cuda`): trials per hour of packs of 8-64 trials against
   single runs at hidden 32-256, and the proposed width per hidden size, from which costs.json's `gpu_width`
   (today a placeholder: `auto` packs that many trials on a GPU) is set;
5. FlashRNN (`pip install flashrnn`) beside the fused LSTM where it installs and runs.

`--reduced` runs each step at toy sizes on the CPU; tests/test_gpu_check.py runs it, so the check cannot rot
between the rare sessions that have a GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CUDA_TEST_MODULES = ["tests/test_backends.py", "tests/test_layers.py", "tests/test_modern_cells.py",
                     "tests/test_packed_fit.py", "tests/test_packed_model.py"]


def run_step(name: str, command: list[str], budget_s: float, cwd: Path) -> dict[str, Any]:
    """Run one step's command with its own time limit; what it printed, how it ended, how long it took."""
    start = time.monotonic()
    try:
        proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=budget_s)
        status, output = ("ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"), proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as err:
        status, output = f"out of time ({budget_s:.0f} s)", (err.stdout or "") + (err.stderr or "")
        output = output.decode() if isinstance(output, bytes) else output
    return {"step": name, "command": " ".join(command), "status": status, "seconds": round(time.monotonic() - start, 1),
            "output": output[-20000:]}


def steps(reduced: bool, out: Path) -> list[tuple[str, list[str], float]]:
    """(name, command, time budget in seconds) of each step; `reduced`: toy sizes on the CPU."""
    py = sys.executable
    tests = [py, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *CUDA_TEST_MODULES]
    if reduced:
        tests += ["-k", "cuda or gpu"]  # on the CPU these cases skip: the step's plumbing, not the kernels
        bench = ["--device", "cpu", "--threads", "1", "--cells", "vanilla", "np", "--input", "8", "--batch", "4",
                 "--steps", "10", "--repeats", "2", "--warmup", "1", "--no-memory"]
        sizes, device = [16], "cpu"
        study = ["--trials", "2", "--steps", "1", "--repeats", "1", "--epochs", "10"]
        widths = ["--hidden", "16", "--widths", "2", "--singles", "1", "--steps", "1", "--repeats", "1"]
    else:
        bench = ["--device", "cuda", "--repeats", "30"]
        sizes, device = [128, 512], "cuda"
        study = ["--trials", "50", "--steps", "2", "--repeats", "2"]
        widths = ["--hidden", "32", "64", "128", "256", "--widths", "8", "16", "32", "64", "--steps", "3", "--repeats", "3"]
    on = "CPU" if reduced else "GPU"
    plan = [("CUDA tests", tests, 150.0)]
    plan += [(f"lstm-odyssey-bench, hidden {h}", [py, "-m", "lstm_odyssey.bench", *bench, "--hidden", str(h),
                                                 "--json", str(out / f"bench_{h}.json")], 45.0) for h in sizes]
    plan.append((f"packed study benchmark (Adam protocol, {on})",
                 [py, "-m", "benchmarks.study", "--protocols", "adam", "--threads", "1", "--device", device, *study,
                  "--json", str(out / "study.json")], 120.0))
    plan.append((f"pack widths ({on})", [py, "-m", "benchmarks.packs", "--device", device, "--drawn", "0", "--trial-axes",
                                         "stacked", *widths, "--json", str(out / "widths.json")], 75.0))
    plan.append(("FlashRNN beside the fused LSTM", [py, "-m", "benchmarks.gpu_check", "--flashrnn", "--device", device], 45.0))
    return plan


def flashrnn_side_by_side(device: str) -> int:
    """Time FlashRNN's LSTM against this project's `np` cell (the same LSTM) at hidden 128, when it installs."""
    import torch

    try:
        from flashrnn import flashrnn
    except ImportError as err:
        print(f"flashrnn is not installed ({err}); `pip install flashrnn` on a CUDA machine to compare")
        return 0
    if device != "cuda" or not torch.cuda.is_available():
        print("flashrnn runs on CUDA only: nothing to compare on this machine")
        return 0
    from lstm_odyssey import RecurrentLayer

    B, T, N = 64, 100, 128
    ours = RecurrentLayer(N, N, cell="np").cuda()
    x = torch.randn(B, T, N, device="cuda")
    wx = torch.randn(B, T, 4, 1, N, device="cuda")  # FlashRNN's layout: (B, T, gates, heads, head size)
    r = torch.randn(4, 1, N, N, device="cuda") / N ** 0.5
    b = torch.zeros(4, 1, N, device="cuda")

    def timed(fn) -> float:
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(20):
            start = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return sorted(times)[len(times) // 2] * 1e3

    rows = {"lstm_odyssey np (torch/cuDNN)": timed(lambda: ours(x))}
    for backend in ("cuda_fused", "cuda", "triton_fused"):
        try:
            rows[f"flashrnn {backend}"] = timed(lambda backend=backend: flashrnn(wx, r, b, function="lstm", backend=backend))
        except Exception as err:  # a backend that does not build here is reported, not fatal
            print(f"flashrnn backend {backend}: could not run: {type(err).__name__}: {str(err).splitlines()[0][:200]}")
    print("| implementation | forward ms (B 64, T 100, hidden 128) |\n|---|---:|")
    for name, ms in rows.items():
        print(f"| {name} | {ms:.2f} |")
    return 0


def environment() -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "python": platform.python_version(), "torch": torch.__version__,
            "device": torch.cuda.get_device_name(0) if cuda else f"CPU ({platform.processor() or platform.machine()})",
            "cuda": torch.version.cuda if cuda else None, "cpus": len(__import__("os").sched_getaffinity(0))}


def summary_line(output: str) -> str:
    """pytest's counts (passed / skipped / failed), or the step's last line of prose; tables are in the section."""
    lines = [line for line in output.strip().splitlines() if line.strip() and not line.startswith("|")]
    tally = [line for line in lines if re.search(r"\d+ (passed|skipped|failed|error)", line)]
    return (tally or lines or ["(tables below)"])[-1].strip("= ")


def write_report(out: Path, env: dict, results: list[dict], reduced: bool) -> None:
    (out / "gpu_check.json").write_text(json.dumps({"environment": env, "reduced": reduced, "steps": results}, indent=1))
    lines = [f"# GPU check{' (reduced, CPU)' if reduced else ''}", "",
             f"{env['date']}; {env['device']}; torch {env['torch']}, CUDA {env['cuda']}, Python {env['python']}, "
             f"{env['cpus']} CPUs. Command: `python -m benchmarks.gpu_check {out}{' --reduced' if reduced else ''}`.", "",
             "| step | status | seconds | summary |", "|---|---|---:|---|"]
    lines += [f"| {r['step']} | {r['status']} | {r['seconds']} | {summary_line(r['output']).replace('|', '/')} |" for r in results]
    for r in results:
        lines += ["", f"## {r['step']}", "", f"`{r['command']}`", "", "```", r["output"].strip()[-6000:], "```"]
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path, help="folder for gpu_check.md and gpu_check.json")
    parser.add_argument("--reduced", action="store_true", help="every step at toy sizes on the CPU (what the test runs)")
    parser.add_argument("--flashrnn", action="store_true", help=argparse.SUPPRESS)  # step 4, in its own process
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.flashrnn:
        return flashrnn_side_by_side(args.device)
    if args.out is None:
        parser.error("give a folder for the report, e.g. python -m benchmarks.gpu_check docs/gpu_check/<date>_<device>")
    import torch

    if not args.reduced and not torch.cuda.is_available():
        parser.error("no CUDA device here: run it on the GPU machine, or add --reduced to run the steps on the CPU")
    args.out.mkdir(parents=True, exist_ok=True)
    root = Path(__file__).resolve().parent.parent
    results = []
    for name, command, budget in steps(args.reduced, args.out.resolve()):
        results.append(run_step(name, command, budget, root))
        print(f"{name}: {results[-1]['status']} in {results[-1]['seconds']} s", flush=True)
    write_report(args.out, environment(), results, args.reduced)
    return 0 if all(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
