"""A Keras-style `model.summary()`: one row per layer with its output shape and parameter count, then the
totals, so that a model built here can be checked line by line against a Keras table such as seed 000's
(Embedding 320,000 + LSTM 8,320 + Dense 33 = 328,353)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from .cells import FAMILIES
from .data.base import SEQUENCE_TASKS
from .layers import RecurrentLayer

WIDTHS = (29, 26, 10)
KERAS_NAMES = {"np": ("lstm", "LSTM"), "gru": ("gru", "GRU"), "rnn": ("simple_rnn", "SimpleRNN")}


@dataclass(frozen=True)
class Row:
    """One line of the table: `name (type)`, the output shape with None for the batch, parameters."""

    name: str
    kind: str
    shape: tuple
    params: int
    trainable: int

    @property
    def label(self) -> str:
        return f"{self.name} ({self.kind})"


def _count(params) -> tuple[int, int]:
    params = list(params)
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def _cell_names(rnn: nn.Module) -> tuple[str, str]:
    """Keras's layer name and type for the cells Keras has (np = LSTM, gru = GRU, rnn = SimpleRNN); the
    other cells read `LSTM <preset>` so that the table says which variant it is."""
    spec = rnn.spec
    if spec.name in KERAS_NAMES:
        return KERAS_NAMES[spec.name]
    family = FAMILIES[spec.family].keras_name
    return family.lower(), f"{family} {spec.name}"


def is_sequence_model(model: nn.Module) -> bool:
    """A SequenceModel's shape (encoder, RecurrentLayer `rnn`, linear head), recognised without importing
    models.py, which imports this module for `SequenceModel.summary()`."""
    return isinstance(getattr(model, "rnn", None), RecurrentLayer) and isinstance(getattr(model, "head", None), nn.Linear)


def rows(model: nn.Module, seq_len: int | None = None) -> list[Row]:
    """The table's rows. A SequenceModel gives encoder, one row per recurrent layer and the head with
    their output shapes (`seq_len` fills the time axis; None leaves it None as Keras does for variable
    lengths); any other module gives its direct children with parameters and unknown shapes."""
    if not is_sequence_model(model):
        out = [Row(name, type(child).__name__, (), *_count(child.parameters())) for name, child in model.named_children()]
        own = [p for name, p in model.named_parameters(recurse=False)]
        if own:
            out.append(Row("(own)", type(model).__name__, (), *_count(own)))
        return out

    table: list[Row] = []
    rnn = model.rnn
    enc = model.encoder
    if isinstance(enc, nn.Embedding):
        table.append(Row("embedding", "Embedding", (None, seq_len, enc.embedding_dim), *_count(enc.parameters())))
    elif isinstance(enc, nn.Linear):
        table.append(Row("encoder", "Linear", (None, seq_len, enc.out_features), *_count(enc.parameters())))
    name, kind = _cell_names(rnn)
    width = rnn.hidden_size * rnn.num_directions
    if rnn.bidirectional:
        kind = f"Bidirectional {kind}"
    for layer in range(rnn.num_layers):
        layer_params = [p for n, p in rnn.named_parameters() if re.search(r"_l(\d+)", n).group(1) == str(layer)]
        last = layer == rnn.num_layers - 1
        shape = (None, width) if last and model.task_type in SEQUENCE_TASKS else (None, seq_len, width)
        label = name if rnn.num_layers == 1 else f"{name}_{layer}"
        table.append(Row(label, kind, shape, *_count(layer_params)))
    head = model.head
    shape = (None, head.out_features) if model.task_type in SEQUENCE_TASKS else (None, seq_len, head.out_features)
    table.append(Row("dense", "Dense", shape, *_count(head.parameters())))
    listed = sum(r.params for r in table)
    total, trainable = _count(model.parameters())
    if listed != total:  # parameters outside encoder, recurrent layer and head: show them rather than hide them
        seen = {id(p) for m in (enc, rnn, head) for p in m.parameters()}
        rest = [p for p in model.parameters() if id(p) not in seen]
        table.append(Row("other", "Parameters", (), *_count(rest)))
    return table


def _shape(shape: tuple) -> str:
    if not shape:
        return "?"
    return "(" + ", ".join("None" if s is None else str(s) for s in shape) + ")"


def summary(model: nn.Module, seq_len: int | None = None) -> str:
    """The Keras-style table as text (print it). Counts are exact; rows add up to the total."""
    table = rows(model, seq_len)
    total, trainable = _count(model.parameters())
    first = max([WIDTHS[0]] + [len(r.label) + 2 for r in table])
    second = max([WIDTHS[1]] + [len(_shape(r.shape)) + 2 for r in table])
    widths = (first, second, WIDTHS[2])
    line = "_" * sum(widths)
    lines = [f'Model: "{type(model).__name__}"', line,
             f"{'Layer (type)':<{widths[0]}}{'Output Shape':<{widths[1]}}Param #", "=" * sum(widths)]
    for k, r in enumerate(table):
        lines.append(f"{r.label:<{widths[0]}}{_shape(r.shape):<{widths[1]}}{r.params}")
        if k < len(table) - 1:
            lines.append(line)
    lines += ["=" * sum(widths), f"Total params: {total:,}", f"Trainable params: {trainable:,}",
              f"Non-trainable params: {total - trainable:,}", line]
    return "\n".join(lines)
