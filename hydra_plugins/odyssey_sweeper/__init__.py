"""lstm-odyssey's study sweeper as a Hydra plugin (`hydra/sweeper=odyssey`, chosen by every study in sweeps/)."""
