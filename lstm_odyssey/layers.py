"""RecurrentLayer: the time loop around one cell of `lstm_odyssey.cells`, with stacking, both
directions, variable lengths, gate recording, torch interop and the choice of backend. What the cell
computes is its family's business (`FAMILIES[spec.family]`); this module never asks which family."""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import backends
from .cells import DEFAULT_INIT, FAMILIES, CellSpec, Init, get_spec, ops

State = Any  # Tensor (gru, rnn) | tuple[Tensor, Tensor] (lstm) | tuple[Tensor, Tensor, Tensor] (fgr)


class RecurrentLayer(nn.Module):
    """A stack of recurrent layers of one cell of the family, called like torch.nn.LSTM / GRU / RNN.

    forward(input, hx=None, *, lengths=None, return_gates=False) -> (output, final_state[, gates]), with
    torch's arguments in torch's order: input (B, T, M) or (T, B, M), unbatched (T, M), or a PackedSequence;
    hx the initial state. States follow torch's layout (num_layers * num_directions, B, N), (.., N) when
    unbatched: a tensor for gru/rnn, (h, c) for the LSTM family and (h, c, gates) for FGR, whose gate
    activations are state too. `proj_size` (LSTM family) and `nonlinearity` (rnn family) are torch's
    options of nn.LSTM and nn.RNN, so that `from_torch` converts every module torch builds. `triton`, `scan`
    and `graph_cache` choose this layer's kernels on the fused backends (cells/ops.py); None leaves the choice
    to the run's config (kernels.*) or, without one, LSTM_ODYSSEY_TRITON / _SCAN / _GRAPH_CACHE.
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
        forget_bias: float = DEFAULT_INIT.forget_bias,
        init: str = DEFAULT_INIT.scheme,
        peephole_init: str = DEFAULT_INIT.peephole,
        backend: str = "auto",
        proj_size: int = 0,
        nonlinearity: str = "tanh",
        *,
        triton: str | None = None,
        scan: str | None = None,
        graph_cache: int | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(proj_size, bool) or int(proj_size) != proj_size or proj_size < 0:
            raise ValueError(f"proj_size must be a positive integer or zero (no projection), got {proj_size!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        Init(init, peephole_init, float(forget_bias))  # refuses an unknown scheme before anything is built
        if backend not in backends.BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(backends.BACKENDS)}")
        self.kernels = ops.check_kernel_settings(triton, scan, graph_cache)  # None: the environment's, else the default
        self.spec = get_spec(cell)
        self.family = FAMILIES[self.spec.family].with_options(self.spec, int(hidden_size), int(proj_size), nonlinearity)
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.proj_size = int(proj_size)
        self.nonlinearity = nonlinearity
        self.output_size = self.proj_size or self.hidden_size  # of y and h per direction (torch's real_hidden_size)
        self.num_layers = int(num_layers)
        self.bidirectional = bool(bidirectional)
        self.num_directions = 2 if bidirectional else 1
        self.dropout = float(dropout)
        self.batch_first = batch_first
        self.forget_bias = float(forget_bias)
        self.init = init
        self.peephole_init = peephole_init
        self.backend = backend

        for layer in range(self.num_layers):
            layer_input = self.input_size if layer == 0 else self.output_size * self.num_directions
            shapes = self.family.parameter_shapes(self.spec, layer_input, self.hidden_size)
            for suffix in self._suffixes(layer):
                for name, shape in shapes.items():
                    self.register_parameter(f"{name}{suffix}", nn.Parameter(torch.empty(shape)))
        self._parameter_names = tuple(shapes)
        self.reset_parameters()

    # -- parameters -----------------------------------------------------------------------
    def _suffixes(self, layer: int) -> list[str]:
        return [f"_l{layer}", f"_l{layer}_reverse"][: self.num_directions]

    def _params(self, suffix: str) -> dict[str, Tensor]:
        """One layer-direction's parameters by name (the family's names: weight_ih, weight_hh, bias, ...)."""
        return {name: getattr(self, f"{name}{suffix}") for name in self._parameter_names}

    def _all_params(self):
        """(suffix, parameters) of every layer-direction, in order."""
        return [(suffix, self._params(suffix)) for layer in range(self.num_layers) for suffix in self._suffixes(layer)]

    def reset_parameters(self) -> None:
        """The family's initialisation of every layer-direction (`init`, `peephole_init`, `forget_bias`;
        see `lstm_odyssey.cells.Init`)."""
        init = Init(self.init, self.peephole_init, self.forget_bias)
        for _, params in self._all_params():
            self.family.init_parameters(self.spec, params, init)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        options = "".join(f", {k}={v!r}" for k, v in self.family.torch_options().items() if v not in (0, "tanh"))
        return (
            f"{self.input_size}, {self.hidden_size}, cell={self.spec.name}, num_layers={self.num_layers}, "
            f"bidirectional={self.bidirectional}, dropout={self.dropout}, backend={self.backend}{options}"
        )

    # -- forward --------------------------------------------------------------------------
    def forward(
        self,
        input: Tensor | PackedSequence,
        hx: State | None = None,
        *,
        lengths: Tensor | list[int] | None = None,
        state: State | None = None,
        return_gates: bool = False,
    ) -> tuple[Tensor | PackedSequence, State] | tuple[Tensor | PackedSequence, State, list[dict[str, Tensor]]]:
        """torch.nn.LSTM's call: `input` batched (B, T, M) / (T, B, M) by `batch_first`, unbatched (T, M), or
        a PackedSequence; `hx` the initial state in torch's layout ((h0, c0) for the LSTM family, h0 for gru
        and rnn; zeros when None). Keyword-only, beyond torch: `lengths` (the valid steps of each padded
        sequence, instead of packing), `state` (the older name of hx) and `return_gates`.
        Returns (output, final state[, gates]) shaped as torch returns them, unbatched for unbatched input."""
        hx = _initial_state(hx, state)
        x = input
        packed = isinstance(x, PackedSequence)
        if packed:
            if lengths is not None:
                raise ValueError("pass lengths or a PackedSequence, not both")
            x, lengths = pad_packed_sequence(x, batch_first=self.batch_first)
            packed_lengths = lengths  # kept: _check_lengths turns equal lengths into None
        batch_dim = 0 if self.batch_first else 1
        unbatched = not packed and x.dim() == 2
        if unbatched:  # torch's unbatched (T, M): a batch of one, states without their batch axis
            if lengths is not None:
                raise ValueError("lengths need batched input (B, T, M); an unbatched (T, M) sequence is all valid")
            x = x.unsqueeze(batch_dim)
            hx = self._batch_state(hx)
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(
                f"expected input of shape ({'B, T' if self.batch_first else 'T, B'}, {self.input_size}) or, "
                f"unbatched, (T, {self.input_size}), got {tuple(x.shape)}"
            )
        x_tm = x.transpose(0, 1) if self.batch_first else x
        steps, batch = x_tm.shape[:2]
        lengths = self._check_lengths(lengths, steps, batch)
        hx = self._check_state(hx, batch, x_tm)

        chosen = self.select_backend(return_gates=return_gates, device=x_tm.device)
        if chosen == "torch":
            out, final, gates = self._forward_torch(x_tm, lengths, hx)
        else:
            with ops.kernel_settings(**self.kernels):
                out, final, gates = self._forward_layers(x_tm, lengths, hx, return_gates, chosen)

        if self.batch_first:
            out = out.transpose(0, 1)
        if packed:
            out = pack_padded_sequence(out, packed_lengths, batch_first=self.batch_first, enforce_sorted=False)
        if unbatched:
            out = out.squeeze(batch_dim)
            final = final.squeeze(1) if isinstance(final, Tensor) else tuple(f.squeeze(1) for f in final)
            gates = [{k: v.squeeze(batch_dim) for k, v in g.items()} for g in gates]
        return (out, final, gates) if return_gates else (out, final)

    def _batch_state(self, hx: State | None) -> State | None:
        """An unbatched state (num_layers * D, N) with a batch axis of one; torch's error for any other rank."""
        if hx is None:
            return None
        parts = [hx] if isinstance(hx, Tensor) else list(hx)
        if not all(isinstance(p, Tensor) and p.dim() == 2 for p in parts):
            ranks = ", ".join(f"{p.dim()}-D" if isinstance(p, Tensor) else type(p).__name__ for p in parts)
            raise ValueError(f"for unbatched 2-D input the state must be 2-D (num_layers * D, N) too, got {ranks}")
        parts = [p.unsqueeze(1) for p in parts]
        return parts[0] if isinstance(hx, Tensor) else tuple(parts)

    def select_backend(self, return_gates: bool = False, device: torch.device | None = None) -> str:
        """The backend a forward runs on: `self.backend`, or for `auto` the fastest that honours the
        request (torch's kernels for np/gru/rnn, CUDA graphs on a GPU, fused, else the loop). The fused
        sweeps (fused, graph) implement neither proj_size nor relu: such a layer runs torch's kernel where
        its cell is torch's, else the loop, and asking for fused or graph is refused in one line."""
        if device is None:
            device = next(self.parameters()).device
        option = self.family.fused_problem()
        if option is None:
            return backends.select(self.backend, self.spec, device, return_gates)
        if self.backend in ("fused", "graph"):
            raise ValueError(
                f"backend={self.backend!r} cannot run this layer: the fused sweeps have no {option}; "
                "use backend='auto', 'torch' or 'loop'"
            )
        if self.backend == "auto":
            return "torch" if backends.why_not("torch", self.spec, device, return_gates) is None else "loop"
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
        return [(*lead, width) for width in self.family.state_sizes(self.spec, self.hidden_size)]

    def _check_state(self, state, batch: int, like: Tensor) -> list[Tensor]:
        shapes = self._state_shapes(batch)
        if state is None:
            return [like.new_zeros(s) for s in shapes]
        parts = [state] if isinstance(state, Tensor) else list(state)
        got = [tuple(p.shape) if isinstance(p, Tensor) else type(p).__name__ for p in parts]
        if got != shapes:
            raise ValueError(f"state for cell {self.spec.name} must be tensors of shapes {shapes}, got {got}")
        return parts

    # -- layers and directions: each one on the loop, fused or graph backend -------------------
    def _forward_layers(
        self, x: Tensor, lengths: Tensor | None, state: list[Tensor], return_gates: bool, backend: str = "loop"
    ):
        """Every layer and direction in turn (dropout between layers), each layer-direction run by
        `backend`: the reference loop (`_loop_direction`) or a fused one (`backends.run_fused`)."""
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
                params = self._params(suffix)
                xp = self.family.input_projection(inp, params)
                start = [s[index] for s in state]
                if backend == "loop":
                    out, final, gates = self._loop_direction(xp, valid, start, params, return_gates)
                else:  # a fused backend runs the same layer-direction
                    out, final = backends.run_fused(self.spec, backend, xp, valid, start, self.family.recurrent_weights(params))
                    gates = {}
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
        final_state = self.family.join_state([torch.stack(f) for f in finals])
        return layer_input, final_state, all_gates

    # -- the reference loop -----------------------------------------------------------------
    def _loop_direction(self, x_proj: Tensor, valid: Tensor | None, state: list[Tensor], params: dict, return_gates: bool):
        """One layer in one direction, step by step over time-major `x_proj` = W x + b with the family's
        reference `step` (autograd records every op); steps past a length keep the state."""
        masks = valid.unbind(0) if valid is not None else [None] * x_proj.shape[0]
        weights = self.family.recurrent_weights(params)
        outputs, recorded = [], []
        for x_t, m in zip(x_proj.unbind(0), masks):
            y, new, acts = self.family.step(self.spec, x_t, state, weights)
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
        """Per-step activations stacked to (T, B, N); gates the cell removes are ones (zeros past a length).
        N is the cell's width, which a projection's output (T, B, P) does not have."""
        shape = (out.shape[0], *next(iter(recorded[0].values())).shape)
        ones = out.new_ones(shape) if valid is None else valid.expand(shape).to(out.dtype)
        return {k: torch.stack([a[k] for a in recorded]) if k in recorded[0] else ones for k in self.family.gate_names}

    # -- torch's kernels for the cells that are torch's (np, gru, rnn) --------------------------
    def _forward_torch(self, x: Tensor, lengths: Tensor | None, state: list[Tensor]):
        """The whole stack in one call of torch's kernel (cuDNN on a GPU) with our parameters."""
        flat = [w for _, params in self._all_params() for w in self.family.torch_weights(params)]
        kernel, pack = self.family.torch_equivalent.kernel, self.family.join_state
        args = (flat, True, self.num_layers, self.dropout, self.training, self.bidirectional)
        with warnings.catch_warnings():  # cuDNN would like one flat weight buffer; it copies instead
            warnings.filterwarnings("ignore", message=".*contiguous chunk of memory.*")
            if lengths is None:
                result = kernel(x, pack(state), *args, False)
                out = result[0]
                final = list(result[1:])
            else:
                packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
                order, unorder = packed.sorted_indices, packed.unsorted_indices
                hx = pack([h.index_select(1, order) for h in state])
                result = kernel(packed.data, packed.batch_sizes, hx, *args)
                out, _ = pad_packed_sequence(
                    PackedSequence(result[0], packed.batch_sizes, order, unorder), total_length=x.shape[0]
                )
                final = [h.index_select(1, unorder) for h in result[1:]]
        return out, pack(final), []

    # -- interop --------------------------------------------------------------------------
    @classmethod
    def from_torch(cls, module: nn.LSTM | nn.GRU | nn.RNN) -> RecurrentLayer:
        """An equal layer from torch.nn.LSTM (cell np, with its proj_size), torch.nn.GRU (cell gru) or
        torch.nn.RNN (cell rnn, with its nonlinearity), in the module's training mode."""
        family = next((f for f in FAMILIES.values() if f.torch_equivalent is not None and isinstance(module, f.torch_equivalent.module)), None)
        if family is None:
            raise TypeError(f"from_torch takes torch.nn.LSTM, nn.GRU or nn.RNN, not {type(module).__name__}")
        problem = family.torch_problem(module)
        if problem:
            raise ValueError(problem)
        ref = next(module.parameters())
        options = {name: getattr(module, name) for name in family.torch_options()}  # proj_size, nonlinearity
        layer = cls(
            module.input_size, module.hidden_size, family.torch_equivalent.preset, module.num_layers, module.bidirectional,
            module.dropout, module.batch_first, **options,
        ).to(device=ref.device, dtype=ref.dtype)
        for suffix, params in layer._all_params():
            layer.family.load_torch(params, module, suffix)
        return layer.train(module.training)

    def to_torch(self) -> nn.LSTM | nn.GRU | nn.RNN:
        """The equal torch.nn.LSTM (cell np, with proj_size), torch.nn.GRU (cell gru) or torch.nn.RNN
        (cell rnn, with nonlinearity)."""
        if not self.family.torch_runs(self.spec):
            raise ValueError(f"only {', '.join(backends.TORCH_CELLS[:-1])} and {backends.TORCH_CELLS[-1]} layers have a torch equivalent, not {self.spec.name}")
        ref = next(self.parameters())
        module = self.family.torch_equivalent.module(
            self.input_size, self.hidden_size, self.num_layers, bias=True, batch_first=self.batch_first,
            dropout=self.dropout, bidirectional=self.bidirectional, **self.family.torch_options(),
        ).to(device=ref.device, dtype=ref.dtype)
        for suffix, params in self._all_params():
            self.family.save_torch(params, module, suffix)
        return module


def reverse_padded(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence of time-major `x` within its own length; padding stays in place."""
    if lengths is None:
        return x.flip(0)
    steps = x.shape[0]
    t = torch.arange(steps)[:, None]
    index = torch.where(t < lengths[None, :], lengths[None, :] - 1 - t, t).to(x.device)
    return x.gather(0, index.view(steps, -1, *([1] * (x.dim() - 2))).expand_as(x))


def _initial_state(hx: State | None, state: State | None) -> State | None:
    """The initial state given as hx (torch's name) or `state` (the older one): refused when given twice, or
    when what stands in torch's second place can only be lengths."""
    if state is not None:
        if hx is not None:
            raise ValueError("pass the initial state once: as hx (torch's name, the second argument) or as state=")
        hx = state
    if hx is not None and _looks_like_lengths(hx):
        raise ValueError(
            "the second argument is the initial state hx, as in torch.nn.LSTM; pass lengths by keyword: "
            "layer(x, lengths=lengths)"
        )
    return hx


def _looks_like_lengths(hx: Any) -> bool:
    """True for what can only be lengths passed where torch's second argument, the state, goes: integers,
    a list of them, or a 1-D integer tensor (a state is floating point, 2-D or 3-D)."""
    if isinstance(hx, Tensor):
        return hx.dim() <= 1 and not hx.is_floating_point()
    if isinstance(hx, int):
        return True
    return isinstance(hx, (list, tuple)) and len(hx) > 0 and all(isinstance(v, int) for v in hx)
