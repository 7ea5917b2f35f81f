"""`python -m lstm_odyssey.analysis SWEEP_DIR --out DIR` is `lstm-odyssey-report`."""

from .report import cli

cli()
