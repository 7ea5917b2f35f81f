"""Hydra only instantiates plugins whose class lives under `hydra_plugins.`; the logic is in lstm_odyssey.sweep."""

from lstm_odyssey.sweep.sweeper import StudySweeper


class OdysseySweeper(StudySweeper):
    """Optuna ask/tell studies over a grid of cells and tasks; see lstm_odyssey.sweep.sweeper."""
