"""lstm-odyssey: ablate recurrent cells the way Greff et al. did, in an afternoon."""

from .cells import PRESETS, CellSpec, get_spec
from .layers import RecurrentLayer

__version__ = "0.1.0"
__all__ = ["CellSpec", "PRESETS", "RecurrentLayer", "get_spec", "__version__"]
