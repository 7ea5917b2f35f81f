"""benchmarks/gpu_check.py in its reduced form (every step at toy sizes on the CPU), so that the check a lent GPU
runs in its few minutes works the day one is lent."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import TESTS


@pytest.mark.slow
def test_the_reduced_gpu_check_runs_every_step_and_writes_its_report(tmp_path):
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", str(tmp_path), "--reduced"], cwd=TESTS.parent,
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["reduced"] and [s["status"] for s in report["steps"]] == ["ok"] * 5, report["steps"]
    bench = json.loads((tmp_path / "bench_16.json").read_text())
    assert {"vanilla", "np"} <= {row.get("cell") for row in bench["rows"]}
    assert json.loads((tmp_path / "study.json").read_text())["env"]["device"] == "cpu"
    widths = json.loads((tmp_path / "widths.json").read_text())
    assert [r["hidden"] for r in widths["auto_rule"]] == [16] and widths["auto_rule"][0]["width"] in (1, 2)
    markdown = (tmp_path / "gpu_check.md").read_text()
    assert markdown.startswith("# GPU check (reduced, CPU)") and "## CUDA tests" in markdown


def test_the_full_gpu_check_refuses_to_run_without_cuda_in_one_line(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the full check would run")
    from benchmarks.gpu_check import main

    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path)])
    assert stop.value.code == 2 and not any(tmp_path.iterdir())


@pytest.mark.parametrize("module", ["benchmarks.packs", "benchmarks.study"])
def test_the_pack_benchmarks_refuse_cuda_without_it_in_one_line(module, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the benchmark would run")
    import importlib

    with pytest.raises(SystemExit) as stop:
        importlib.import_module(module).main(["--device", "cuda"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert stop.value.code == 2 and "CUDA is not available here" in err and "--device cpu" in err
