"""A new preset made only of existing flags is one YAML file and no code: defined here in a config
directory of its own, it trains through the real command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lstm_odyssey.cells import CellSpec
from lstm_odyssey.results import read_record

TINY = ["data=adding", "data.length=12", "data.n_train=64", "data.n_val=32", "data.n_test=32", "model.hidden_size=8",
        "trainer.batch_size=16"]


@pytest.mark.slow
def test_a_preset_of_existing_flags_trains_through_the_cli_without_code(tmp_path):
    configs = tmp_path / "configs"
    (configs / "cell").mkdir(parents=True)
    (configs / "cell" / "my_cifg_np.yaml").write_text("name: my_cifg_np\ncoupled: true\npeepholes: false\n")
    train = Path(sys.executable).with_name("lstm-odyssey-train")  # the console script of this environment
    proc = subprocess.run(
        [str(train), f"hydra.searchpath=[file://{configs}]", "cell=my_cifg_np", f"paths.root={tmp_path / 'runs'}",
         "trainer.progress=false", "trainer.epochs=1", *TINY],
        capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "disabled"}, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (path,) = (tmp_path / "runs").rglob("result.json")
    record = read_record(path)
    assert record["status"] == "ok" and record["epochs_run"] == 1
    expected = CellSpec(coupled=True, peepholes=False)  # vanilla with those two flags changed
    assert record["cell_flags"] == expected.to_dict()
    # the layer that trained is that cell: blocks i z o, no peepholes (the adding task has 2 inputs)
    assert record["recurrent_parameters"] == expected.num_parameters(2, 8) == 3 * 8 * (2 + 8) + 3 * 8
