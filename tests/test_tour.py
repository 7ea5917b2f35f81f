"""notebooks/tour.ipynb executes: the seeds' worked examples computed by the framework's own cell (the notebook
asserts every number the notes print) and one short training run per cell with gate-saturation plots."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "tour.ipynb"


@pytest.mark.slow
def test_tour_notebook_executes_and_its_assertions_hold(monkeypatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend renders the figure
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError (with the failing assert) when a number is wrong
    outputs = {k: "".join(o.get("text", "") for o in cell.get("outputs", [])) for k, cell in enumerate(nb.cells)
               if cell.cell_type == "code"}
    text = "\n".join(outputs.values())
    stderr = [o["text"] for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", []) if o.get("name") == "stderr"]
    assert not stderr and "Warning" not in text  # no stray warnings in the outputs
    # the gate histogram has labelled axes: a y axis with the share of activations, an x label
    figure = next(cell.source for cell in nb.cells if "ax.hist(" in cell.source)
    assert "set_yticks([])" not in figure and "set_ylabel(" in figure and "supxlabel(" in figure
    assert "f = [0.7311 0.9526 0.5    0.1192]" in text
    assert "c_t = [ 0.45  0.   -0.5  -0.08]" in text
    assert "Total params: 328,353" in text and "Total params: 322,113" in text
    # the saturation table and the figure were produced
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
               for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", []))
    assert any("saturated" in o.get("data", {}).get("text/plain", "")
               for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", []))


def test_the_gru_to_lstm_study_walks_seed_002s_path() -> None:
    """sweeps/gru_to_lstm.yaml: every grid point composes to the cell of its step of the derivation."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from lstm_odyssey.cells import CellSpec, get_spec
    from lstm_odyssey.cli import register

    register()
    expected = {
        "gru": CellSpec(family="gru", peepholes=False),
        "grupp": CellSpec(output_gate=False, output_activation="identity", peepholes=False),  # y = c
        "nog": CellSpec(output_gate=False, peepholes=False),  # y = tanh(c)
        "np": CellSpec(peepholes=False),  # y = o * tanh(c)
        "vanilla": CellSpec(),  # + peepholes
    }
    with initialize_config_module("lstm_odyssey.conf", version_base="1.3"):
        study = compose("train", overrides=["+sweep=gru_to_lstm"])
        assert list(study.sweep.grid.cell) == list(expected)
        for cell, spec in expected.items():
            cfg = OmegaConf.to_container(compose("train", overrides=["+sweep=gru_to_lstm", f"cell={cell}"]), resolve=True)
            assert get_spec(cfg["cell"]) == spec, cell
            assert cfg["data"]["name"] == "char_lm"  # runs offline
        lvg = compose("train", overrides=["+sweep=seed_lstm_vs_gru"])
        assert list(lvg.sweep.grid.cell) == ["np", "gru"] and len(lvg.sweep.grid["trainer.seed"]) >= 3
        assert lvg.data.name == "char_lm" and lvg.model.embedding_dim is not None  # tokens through an embedding
