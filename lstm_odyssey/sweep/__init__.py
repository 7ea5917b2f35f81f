"""Studies: the sweeper that drives Optuna from Hydra multirun and the end-of-sweep collection of records
(`runs.parquet` and a task x cell table). The study configs of sweeps/ are registered by
`lstm_odyssey.config.register_studies`.

`lstm_odyssey.cli.register()` makes the studies and the sweeper known to Hydra; the `lstm-odyssey-train` entry
point calls it, and code that composes configs itself (`hydra.compose(..., overrides=["+sweep=quick"])`) calls it
first (`lstm_odyssey.config.load_config` registers the studies itself).
"""
