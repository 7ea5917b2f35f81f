"""SequenceModel: input encoder → RecurrentLayer → head, with the loss and metrics of each task type."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cells import DEFAULT_INIT, CellSpec
from .data.base import CLASSIFICATION, MULTILABEL, PAD_CLASS, REGRESSION, SEQUENCE_TASKS, TASK_TYPES, Batch
from .layers import RecurrentLayer
from .summary import summary

# model.encoder: auto = embedding for tokens, identity for real features; linear = a learned projection of real
# features to embedding_dim (or hidden_size) units; embedding = a lookup table of token vectors
ENCODERS = ("auto", "identity", "linear", "embedding")


class SequenceModel(nn.Module):
    """Encoder (identity or linear for real features, embedding for tokens) → recurrent stack → linear head.

    Sequence-level tasks read the final state of the last layer (for a bidirectional layer: the forward
    direction at the last valid step and the backward direction after reading the whole sequence).
    Classification with output_size 1 is binary: one logit, sigmoid and binary cross-entropy (Keras's
    Dense(1, 'sigmoid')); targets are 0/1 class indices either way. `output_dropout` drops features on the
    non-recurrent path from the top layer to the head (Zaremba et al. 2014), the one place a one-layer model
    can be regularised by dropout without touching the recurrence the cells differ in.
    """

    def __init__(
        self,
        task_type: str,
        input_size: int,
        output_size: int,
        hidden_size: int = 64,
        cell: str | CellSpec | dict = "vanilla",
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        output_dropout: float = 0.0,
        tokens: bool = False,
        encoder: str = "auto",
        embedding_dim: int | None = None,
        forget_bias: float = DEFAULT_INIT.forget_bias,
        init: str = DEFAULT_INIT.scheme,
        peephole_init: str = DEFAULT_INIT.peephole,
        backend: str = "auto",
        tolerance: float | None = None,
    ) -> None:
        super().__init__()
        if task_type not in TASK_TYPES:
            raise ValueError(f"unknown task type {task_type!r}; choose one of {', '.join(TASK_TYPES)}")
        if encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {encoder!r}; choose one of {', '.join(ENCODERS)}")
        if encoder == "auto":
            encoder = "embedding" if tokens else "identity"
        if tokens != (encoder == "embedding"):
            raise ValueError(f"encoder={encoder!r} does not fit {'token' if tokens else 'real-valued'} inputs; use encoder=auto")
        if not 0.0 <= output_dropout < 1.0:
            raise ValueError(f"output_dropout must be in [0, 1), got {output_dropout!r}")
        self.task_type = task_type
        self.tokens = tokens
        self.output_dropout = float(output_dropout)
        self.tolerance = tolerance
        if encoder == "identity":
            self.encoder: nn.Module = nn.Identity()
            rnn_input = input_size
        else:  # linear or embedding
            rnn_input = embedding_dim or hidden_size
            layer_cls = nn.Embedding if encoder == "embedding" else nn.Linear
            self.encoder = layer_cls(input_size, rnn_input)
        self.rnn = RecurrentLayer(
            rnn_input, hidden_size, cell, num_layers, bidirectional, dropout, batch_first=True,
            forget_bias=forget_bias, init=init, peephole_init=peephole_init, backend=backend,
        )
        self.head = nn.Linear(hidden_size * self.rnn.num_directions, output_size)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def summary(self, seq_len: int | None = None) -> str:
        """A Keras-style table of layers, output shapes and parameter counts (lstm_odyssey.summary)."""
        return summary(self, seq_len=seq_len)

    def forward(self, x: Tensor, lengths: Tensor | None = None, state=None) -> tuple[Tensor, object]:
        """Logits or predictions: (B, output) for sequence tasks, (B, T, output) per step.

        Per-step tasks on a one-directional stack ignore `lengths`: padding follows each sequence, so it
        cannot reach a valid step, and the loss masks the padded ones. That keeps torch's unpacked (much
        faster) kernels; the final state is then the one after the padding.
        """
        if self.task_type not in SEQUENCE_TASKS and not self.rnn.bidirectional:
            lengths = None
        output, final = self.rnn(self.encoder(x), state, lengths=lengths)
        if self.task_type in SEQUENCE_TASKS:
            h = final if isinstance(final, Tensor) else final[0]
            features = torch.cat(list(h[-self.rnn.num_directions :]), dim=-1)
            return self.head(self._drop(features)), final
        return self.head(self._drop(output)), final

    def _drop(self, features: Tensor) -> Tensor:
        return F.dropout(features, self.output_dropout, self.training) if self.output_dropout else features

    def loss(self, prediction: Tensor, batch: Batch) -> Tensor:
        """The training loss: the mean of what `metric_sums` adds up as its first entry."""
        sums = self.metric_sums(prediction, batch, reduce=False)
        return sums["loss"] / sums["count"]

    def metric_sums(self, prediction: Tensor, batch: Batch, reduce: bool = True) -> dict[str, Tensor | float]:
        """Sums over the batch that `finalize_metrics` turns into metrics; `count` is their unit."""
        y = batch.y
        if self.task_type == CLASSIFICATION and prediction.shape[-1] == 1:  # binary: one logit, sigmoid (Keras Dense(1))
            logit = prediction.squeeze(-1)
            nll = F.binary_cross_entropy_with_logits(logit, y.to(logit.dtype), reduction="sum")
            sums = {"loss": nll, "errors": ((logit > 0).long() != y).sum(), "count": len(y)}
        elif self.task_type == CLASSIFICATION:
            nll = F.cross_entropy(prediction, y, reduction="sum")
            sums = {"loss": nll, "errors": (prediction.argmax(-1) != y).sum(), "count": len(y)}
        elif self.task_type == REGRESSION:
            err = prediction - y.view_as(prediction)
            sums = {"loss": err.pow(2).mean(-1).sum(), "abs": err.abs().mean(-1).sum(), "count": len(y)}
            if self.tolerance is not None:
                sums["solved"] = (err.abs() < self.tolerance).all(-1).sum()
        elif self.task_type == MULTILABEL:
            valid = _valid_steps(batch.lengths, y.shape[1], y.device)
            nll = F.binary_cross_entropy_with_logits(prediction, y, reduction="none").sum(-1)
            sums = {"loss": (nll * valid).sum(), "count": int(batch.lengths.sum())}
        else:  # STEP_CLASSIFICATION
            nll = F.cross_entropy(prediction.flatten(0, 1), y.flatten(), ignore_index=PAD_CLASS, reduction="sum")
            valid = y != PAD_CLASS
            errors = ((prediction.argmax(-1) != y) & valid).sum()
            sums = {"loss": nll, "errors": errors, "count": int(valid.sum())}
        if reduce:
            return {k: float(v) for k, v in sums.items()}
        return sums

    def finalize_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        """Metrics of a whole split from added-up `metric_sums`."""
        n = max(sums["count"], 1)
        if self.task_type == CLASSIFICATION:
            return {"nll": sums["loss"] / n, "error": sums["errors"] / n, "accuracy": 1 - sums["errors"] / n}
        if self.task_type == REGRESSION:
            metrics = {"mse": sums["loss"] / n, "mae": sums["abs"] / n}
            if "solved" in sums:
                metrics["solved"] = sums["solved"] / n
            return metrics
        if self.task_type == MULTILABEL:
            return {"nll": sums["loss"] / n}  # per frame, summed over labels: the JSB literature's number
        nll = sums["loss"] / n
        return {"nll": nll, "bpc": nll / math.log(2), "error": sums["errors"] / n}


def _valid_steps(lengths: Tensor, steps: int, device: torch.device) -> Tensor:
    return (torch.arange(steps)[None, :] < lengths[:, None]).to(device)
