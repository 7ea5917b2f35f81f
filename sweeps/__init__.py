"""Study definitions (Hydra configs of group `sweep`, package _global_), installed as lstm_odyssey.studies."""
