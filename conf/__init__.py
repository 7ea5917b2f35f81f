"""conf/ is the package `lstm_odyssey.conf`: Hydra imports it before it reads a YAML file, and the YAMLs extend the
schema dataclasses of lstm_odyssey/schema.py, so they are put in Hydra's ConfigStore here."""

from lstm_odyssey.schema import register_schemas

register_schemas()
