"""The cells: flags and presets (spec.py) and one module per family (lstm.py, gru.py, rnn.py), each
with its family object; `FAMILIES` maps `CellSpec.family` to it. docs/equations.md has the math."""

from .base import DEFAULT_INIT, Family, Init
from .gru import GRU
from .lstm import LSTM
from .rnn import RNN
from .spec import MODERN_CELLS, ODYSSEY_VARIANTS, PRESETS, CellSpec, cell_label, get_spec

FAMILIES: dict[str, Family] = {"lstm": LSTM, "gru": GRU, "rnn": RNN}

__all__ = ["DEFAULT_INIT", "FAMILIES", "MODERN_CELLS", "ODYSSEY_VARIANTS", "PRESETS", "CellSpec", "Family", "Init", "cell_label", "get_spec"]
