"""docs/your-data.md, the tutorial from an .npz to a study to a report, run block by block as a reader would: every
```python and ```bash block in order, in one fresh folder, with the installed commands."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import TESTS

TUTORIAL = TESTS.parent / "docs" / "your-data.md"
BLOCK = re.compile(r"^```(python|bash)\n(.*?)^```", re.S | re.M)


def tutorial_blocks() -> list[tuple[str, str]]:
    return BLOCK.findall(TUTORIAL.read_text())


def test_the_tutorial_has_the_three_steps_as_code():
    kinds = [kind for kind, _ in tutorial_blocks()]
    assert kinds == ["python", "bash", "bash", "bash", "python"], kinds


@pytest.mark.slow
def test_the_tutorial_runs_as_written_and_its_cells_learn_the_task(tmp_path):
    env = dict(os.environ, WANDB_MODE="disabled", MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    env.pop("LSTM_ODYSSEY_RESULTS", None)  # the tutorial's paths are relative to where the reader stands
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    outputs = []
    for kind, code in tutorial_blocks():
        command = [sys.executable, "-c", code] if kind == "python" else ["bash", "-euo", "pipefail", "-c", code]
        proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"tutorial {kind} block failed:\n{code}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        outputs.append(proc.stdout)

    data = np.load(tmp_path / "my_data.npz")
    assert len(data["lengths"]) == 400 and data["x"].shape == (int(data["lengths"].sum()), 3)

    [single] = [json.loads(p.read_text()) for p in (tmp_path / "results" / "runs").rglob("result.json")]
    study = tmp_path / "results" / "sweeps" / "your_data"
    records = [json.loads(p.read_text()) for p in study.rglob("result.json")]
    assert single["status"] == "ok" and single["cell"] == "cifg"
    assert sorted({r["cell"] for r in records}) == ["cifg", "gru", "vanilla"] and len(records) == 12
    assert all(r["status"] == "ok" for r in records)
    # three balanced classes: guessing errs 2/3 of the time; a cell that carries the running sums does far better
    for cell in ("vanilla", "cifg", "gru"):
        assert min(r["objective"] for r in records if r["cell"] == cell) < 0.35, cell
    report = (study / "report" / "report.md").read_text()
    assert "## Analysis plan" in report and "too few pairs" in report
    assert "vanilla" in outputs[-1] and "gru" in outputs[-1]  # the summary table printed by the last block
