"""RecurrentLayer: the time loop around the cells of `cells.py`, with stacking, both directions,
variable lengths, gate recording, torch interop and the choice of backend."""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import backends, cells
from .cells import CellSpec, get_spec

State = Any  # Tensor (gru, rnn) | tuple[Tensor, Tensor] (lstm) | tuple[Tensor, Tensor, Tensor] (fgr)
BACKENDS = backends.BACKENDS  # auto loop torch fused graph: see backends.py


class RecurrentLayer(nn.Module):
    """A stack of recurrent layers of one cell of the family, shaped like torch.nn.LSTM.

    forward(x, lengths=None, state=None, return_gates=False) -> (output, final_state[, gates]).
    States follow torch's layout (num_layers * num_directions, B, N): a tensor for gru/rnn,
    (h, c) for the LSTM family and (h, c, gates) for FGR, whose gate activations are state too.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        cell: str | CellSpec | dict = "vanilla",
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        batch_first: bool = True,
        forget_bias: float = 1.0,
        init: str = "torch",
        peephole_init: str = "uniform",
        backend: str = "auto",
    ) -> None:
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if init not in ("torch", "keras"):
            raise ValueError(f"init must be 'torch' (uniform ±1/√N) or 'keras' (Glorot + orthogonal), not {init!r}")
        if peephole_init not in ("uniform", "zero"):
            raise ValueError(f"peephole_init must be 'uniform' or 'zero', not {peephole_init!r}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.spec = get_spec(cell)
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.num_layers = int(num_layers)
        self.bidirectional = bool(bidirectional)
        self.num_directions = 2 if bidirectional else 1
        self.dropout = float(dropout)
        self.batch_first = batch_first
        self.forget_bias = float(forget_bias)
        self.init = init
        self.peephole_init = peephole_init
        self.backend = backend

        n, k = self.hidden_size, len(self.spec.blocks)
        for layer in range(self.num_layers):
            layer_input = self.input_size if layer == 0 else n * self.num_directions
            for suffix in self._suffixes(layer):
                self.register_parameter(f"weight_ih{suffix}", nn.Parameter(torch.empty(k * n, layer_input)))
                self.register_parameter(f"weight_hh{suffix}", nn.Parameter(torch.empty(k * n, n)))
                self.register_parameter(f"bias{suffix}", nn.Parameter(torch.empty(k * n)))
                if self.spec.num_biases == 2:
                    self.register_parameter(f"bias_hh{suffix}", nn.Parameter(torch.empty(k * n)))
                if self.spec.peephole_gates:
                    self.register_parameter(
                        f"peephole{suffix}", nn.Parameter(torch.empty(len(self.spec.peephole_gates) * n))
                    )
                if self.spec.full_gate_recurrence:
                    g = len(self.spec.computed_gates) * n
                    self.register_parameter(f"weight_gg{suffix}", nn.Parameter(torch.empty(g, g)))
        self.reset_parameters()

    # -- parameters -----------------------------------------------------------------------
    def _suffixes(self, layer: int) -> list[str]:
        return [f"_l{layer}", f"_l{layer}_reverse"][: self.num_directions]

    def _params(self, suffix: str) -> dict[str, Tensor | None]:
        return {
            name: getattr(self, f"{name}{suffix}", None)
            for name in ("weight_ih", "weight_hh", "bias", "bias_hh", "peephole", "weight_gg")
        }

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """torch: U(±1/√N) everywhere; keras: Glorot input, orthogonal recurrent, zero bias.
        Then the forget-gate bias (LSTM family) is set to `forget_bias`; for CIFG, whose
        forget gate is 1 − i, the input-gate bias is set to −forget_bias instead."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for name, param in self.named_parameters():
            kind = name.rsplit("_l", 1)[0]
            if self.init == "torch" or kind == "peephole":
                nn.init.uniform_(param, -bound, bound)
            elif kind == "weight_ih":
                nn.init.xavier_uniform_(param)
            elif kind in ("weight_hh", "weight_gg"):
                nn.init.orthogonal_(param)
            else:
                nn.init.zeros_(param)
            if kind == "peephole" and self.peephole_init == "zero":
                nn.init.zeros_(param)
        if self.spec.family != "lstm":
            return
        n = self.hidden_size
        if "f" in self.spec.blocks:
            gate, value = "f", self.forget_bias
        elif self.spec.coupled:
            gate, value = "i", -self.forget_bias
        else:
            return
        start = self.spec.blocks.index(gate) * n
        for layer in range(self.num_layers):
            for suffix in self._suffixes(layer):
                getattr(self, f"bias{suffix}")[start : start + n] = value

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, cell={self.spec.name}, num_layers={self.num_layers}, "
            f"bidirectional={self.bidirectional}, dropout={self.dropout}, backend={self.backend}"
        )

    # -- forward --------------------------------------------------------------------------
    def forward(
        self,
        x: Tensor | PackedSequence,
        lengths: Tensor | list[int] | None = None,
        state: State | None = None,
        return_gates: bool = False,
    ):
        packed = isinstance(x, PackedSequence)
        if packed:
            if lengths is not None:
                raise ValueError("pass lengths or a PackedSequence, not both")
            x, lengths = pad_packed_sequence(x, batch_first=self.batch_first)
            packed_lengths = lengths  # kept: _check_lengths turns equal lengths into None
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(
                f"expected input of shape ({'B, T' if self.batch_first else 'T, B'}, {self.input_size}), "
                f"got {tuple(x.shape)}"
            )
        x_tm = x.transpose(0, 1) if self.batch_first else x
        steps, batch = x_tm.shape[:2]
        lengths = self._check_lengths(lengths, steps, batch)
        state = self._check_state(state, batch, x_tm)

        chosen = self.select_backend(return_gates=return_gates, device=x_tm.device)
        if chosen == "torch":
            out, final, gates = self._forward_torch(x_tm, lengths, state)
        else:
            out, final, gates = self._forward_loop(x_tm, lengths, state, return_gates, chosen)

        if self.batch_first:
            out = out.transpose(0, 1)
        if packed:
            out = pack_padded_sequence(out, packed_lengths, batch_first=self.batch_first, enforce_sorted=False)
        return (out, final, gates) if return_gates else (out, final)

    def select_backend(self, return_gates: bool = False, device: torch.device | None = None) -> str:
        """The backend a forward runs on: `self.backend`, or for `auto` the fastest that honours the
        request (torch's kernels for np/gru/rnn, CUDA graphs on a GPU, fused, else the loop)."""
        if device is None:
            device = next(self.parameters()).device
        return backends.select(self.backend, self.spec, device, return_gates)

    def _check_lengths(self, lengths, steps: int, batch: int) -> Tensor | None:
        if lengths is None:
            return None
        lengths = torch.as_tensor(lengths, dtype=torch.long).cpu()
        if lengths.shape != (batch,):
            raise ValueError(f"lengths must have one entry per sequence ({batch}), got shape {tuple(lengths.shape)}")
        if lengths.numel() and (lengths.min() < 1 or lengths.max() > steps):
            raise ValueError(f"lengths must lie in [1, {steps}] (the padded length), got {lengths.min()}..{lengths.max()}")
        return None if bool((lengths == steps).all()) else lengths

    def _state_shapes(self, batch: int) -> list[tuple[int, ...]]:
        lead = (self.num_layers * self.num_directions, batch)
        if self.spec.family != "lstm":
            return [lead + (self.hidden_size,)]
        shapes = [lead + (self.hidden_size,)] * 2
        if self.spec.full_gate_recurrence:
            shapes.append(lead + (len(self.spec.computed_gates) * self.hidden_size,))
        return shapes

    def _check_state(self, state, batch: int, like: Tensor) -> list[Tensor]:
        shapes = self._state_shapes(batch)
        if state is None:
            return [like.new_zeros(s) for s in shapes]
        parts = [state] if isinstance(state, Tensor) else list(state)
        got = [tuple(p.shape) for p in parts]
        if got != shapes:
            raise ValueError(f"state for cell {self.spec.name} must be tensors of shapes {shapes}, got {got}")
        return parts

    def _pack_state(self, parts: list[Tensor]) -> State:
        return parts[0] if self.spec.family != "lstm" else tuple(parts)

    # -- the reference loop ---------------------------------------------------------------
    def _forward_loop(
        self, x: Tensor, lengths: Tensor | None, state: list[Tensor], return_gates: bool, backend: str = "loop"
    ):
        steps, batch = x.shape[:2]
        valid = None
        if lengths is not None:
            valid = (torch.arange(steps)[:, None] < lengths[None, :]).to(x.device).unsqueeze(-1)
        finals: list[list[Tensor]] = [[] for _ in state]
        all_gates: list[dict[str, Tensor]] = []
        layer_input = x
        for layer in range(self.num_layers):
            outputs = []
            for direction, suffix in enumerate(self._suffixes(layer)):
                index = layer * self.num_directions + direction
                inp = layer_input if direction == 0 else reverse_padded(layer_input, lengths)
                args = (inp, valid, [s[index] for s in state], self._params(suffix))
                if backend == "loop":
                    out, final, gates = self._run_direction(*args, return_gates)
                else:  # a fused backend runs the same layer-direction
                    out, final, gates = backends.run_direction(self, backend, *args)
                if direction == 1:
                    out = reverse_padded(out, lengths)
                    gates = {k: reverse_padded(v, lengths) for k, v in gates.items()}
                outputs.append(out)
                for acc, f in zip(finals, final):
                    acc.append(f)
                if return_gates:
                    all_gates.append({k: v.transpose(0, 1) if self.batch_first else v for k, v in gates.items()})
            layer_input = torch.cat(outputs, dim=-1) if len(outputs) > 1 else outputs[0]
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
        final_state = self._pack_state([torch.stack(f) for f in finals])
        return layer_input, final_state, all_gates

    def _run_direction(self, x: Tensor, valid: Tensor | None, state: list[Tensor], p: dict, return_gates: bool):
        """One layer in one direction over time-major `x`; steps past a length keep the state."""
        steps, batch, _ = x.shape
        x_proj = torch.addmm(p["bias"], x.reshape(steps * batch, -1), p["weight_ih"].t()).view(steps, batch, -1)
        masks = valid.unbind(0) if valid is not None else [None] * steps
        spec = self.spec
        outputs, recorded = [], []
        for x_t, m in zip(x_proj.unbind(0), masks):
            if spec.family == "lstm":
                y, c, g, acts = cells.lstm_step(
                    spec, x_t, state[0], state[1], state[2] if len(state) > 2 else None,
                    p["weight_hh"], p["peephole"], p["weight_gg"],
                )
                new = [y, c] + ([g] if g is not None else [])
            elif spec.family == "gru":
                y, acts = cells.gru_step(spec, x_t, state[0], p["weight_hh"], p["bias_hh"])
                new = [y]
            else:
                y = cells.rnn_step(x_t, state[0], p["weight_hh"])
                acts, new = {"h": y}, [y]
            if m is not None:
                state = [torch.where(m, s_new, s_old) for s_new, s_old in zip(new, state)]
                y = y * m
                if return_gates:
                    acts = {k: v * m for k, v in acts.items()}
            else:
                state = new
            outputs.append(y)
            if return_gates:
                recorded.append(acts)
        gates = self._stack_gates(recorded, torch.stack(outputs), valid) if return_gates else {}
        return torch.stack(outputs), state, gates

    def _stack_gates(self, recorded: list[dict[str, Tensor]], out: Tensor, valid: Tensor | None) -> dict[str, Tensor]:
        """Per-step activations stacked to (T, B, N); gates the cell removes are ones (zeros past a length)."""
        keys = {"lstm": "zifocy", "gru": "runh", "rnn": "h"}[self.spec.family]
        ones = torch.ones_like(out) if valid is None else valid.expand_as(out).to(out.dtype)
        return {k: torch.stack([a[k] for a in recorded]) if k in recorded[0] else ones for k in keys}

    # -- torch's kernels for np and gru ---------------------------------------------------
    def _forward_torch(self, x: Tensor, lengths: Tensor | None, state: list[Tensor]):
        flat = []
        for layer in range(self.num_layers):
            for suffix in self._suffixes(layer):
                p = self._params(suffix)
                bias_hh = p["bias_hh"] if p["bias_hh"] is not None else torch.zeros_like(p["bias"])
                flat += [p["weight_ih"], p["weight_hh"], p["bias"], bias_hh]
        kernel = {"lstm": torch._VF.lstm, "gru": torch._VF.gru, "rnn": torch._VF.rnn_tanh}[self.spec.family]
        hx = state if self.spec.family == "lstm" else state[0]
        args = (flat, True, self.num_layers, self.dropout, self.training, self.bidirectional)
        with warnings.catch_warnings():  # cuDNN would like one flat weight buffer; it copies instead
            warnings.filterwarnings("ignore", message=".*contiguous chunk of memory.*")
            if lengths is None:
                result = kernel(x, hx, *args, False)
                out = result[0]
                final = list(result[1:])
            else:
                packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
                order, unorder = packed.sorted_indices, packed.unsorted_indices
                hx = tuple(h.index_select(1, order) for h in hx) if isinstance(hx, (list, tuple)) else hx.index_select(1, order)
                result = kernel(packed.data, packed.batch_sizes, hx, *args)
                out, _ = pad_packed_sequence(
                    PackedSequence(result[0], packed.batch_sizes, order, unorder), total_length=x.shape[0]
                )
                final = [h.index_select(1, unorder) for h in result[1:]]
        return out, self._pack_state(final), []

    # -- interop --------------------------------------------------------------------------
    @classmethod
    def from_torch(cls, module: nn.LSTM | nn.GRU | nn.RNN) -> RecurrentLayer:
        """An equal layer from torch.nn.LSTM (cell np), torch.nn.GRU (cell gru) or a tanh torch.nn.RNN (rnn)."""
        if isinstance(module, nn.LSTM):
            if module.proj_size:
                raise ValueError("LSTMs with proj_size > 0 have no equal cell here; use proj_size=0")
            cell = "np"
        elif isinstance(module, nn.GRU):
            cell = "gru"
        elif isinstance(module, nn.RNN):
            if module.nonlinearity != "tanh":
                raise ValueError("only tanh RNNs have an equal cell here (rnn); use nonlinearity='tanh'")
            cell = "rnn"
        else:
            raise TypeError(f"from_torch takes torch.nn.LSTM, nn.GRU or nn.RNN, not {type(module).__name__}")
        ref = next(module.parameters())
        layer = cls(
            module.input_size, module.hidden_size, cell, module.num_layers, module.bidirectional,
            module.dropout, module.batch_first,
        ).to(device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            for name, param in layer.named_parameters():
                kind, suffix = name.split("_l", 1)
                suffix = "_l" + suffix
                if kind.startswith("weight"):
                    param.copy_(getattr(module, f"{kind}{suffix}"))
                elif not module.bias:
                    param.zero_()
                elif kind == "bias_hh":
                    param.copy_(getattr(module, f"bias_hh{suffix}"))
                elif cell != "gru":  # torch's two LSTM/RNN biases only ever appear as their sum
                    param.copy_(getattr(module, f"bias_ih{suffix}") + getattr(module, f"bias_hh{suffix}"))
                else:
                    param.copy_(getattr(module, f"bias_ih{suffix}"))
        return layer

    def to_torch(self) -> nn.LSTM | nn.GRU | nn.RNN:
        """The equal torch.nn.LSTM (cell np), torch.nn.GRU (cell gru) or torch.nn.RNN (cell rnn)."""
        torch_modules = {"np": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
        module_cls = next((m for name, m in torch_modules.items() if self.spec == cells.PRESETS[name]), None)
        if module_cls is None:
            raise ValueError(f"only np, gru and rnn layers have a torch equivalent, not {self.spec.name}")
        ref = next(self.parameters())
        module = module_cls(
            self.input_size, self.hidden_size, self.num_layers, bias=True, batch_first=self.batch_first,
            dropout=self.dropout, bidirectional=self.bidirectional,
        ).to(device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            for layer in range(self.num_layers):
                for suffix in self._suffixes(layer):
                    p = self._params(suffix)
                    getattr(module, f"weight_ih{suffix}").copy_(p["weight_ih"])
                    getattr(module, f"weight_hh{suffix}").copy_(p["weight_hh"])
                    getattr(module, f"bias_ih{suffix}").copy_(p["bias"])
                    getattr(module, f"bias_hh{suffix}").copy_(p["bias_hh"] if p["bias_hh"] is not None else 0)
        return module


def reverse_padded(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence of time-major `x` within its own length; padding stays in place."""
    if lengths is None:
        return x.flip(0)
    steps = x.shape[0]
    t = torch.arange(steps)[:, None]
    index = torch.where(t < lengths[None, :], lengths[None, :] - 1 - t, t).to(x.device)
    return x.gather(0, index.view(steps, -1, *([1] * (x.dim() - 2))).expand_as(x))
