"""The LSTM family (docs/equations.md, "LSTM"): vanilla LSTM with peepholes and every Odyssey flag
(NIG NFG NOG NIAF NOAF CIFG NP FGR, GRU++ as a flag path), and the cells beyond the paper that are LSTM
flags (minGRU, minLSTM, sLSTM, IndyLSTM, JANET), as the `LSTM` family object.

Blocks ``i f z o`` (those the flags keep) are fused in one matrix, torch's order. State: (y, c), plus
for FGR the previous gate activations g, for exponential gates the normaliser n and stabiliser m. A layer's
`proj_size` (torch's LSTMP) configures a copy of the family whose y is W_hr times the cell's output.
Shapes: see ops.py (one trial 2-D, stacked trials with K first). Sequences run on Triton's kernel
(lstm_triton.py), the in-place eager sweep (lstm_eager.py), the scan over time for cells that are parallel in
time (lstm_scan.py), or the exponential-gate sweep (lstm_exponential.py).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from . import lstm_eager, lstm_exponential, lstm_scan, ops
from .base import Family, Init, Params, TorchEquivalent, Weights
from .ops import activation
from .spec import CellSpec


class _Layout:
    """Column ranges of each block in the fused pre-activation, of each peephole, and of each gate in
    the FGR state g (its gates in `spec.computed_gates` order); the recurrence; JANET's shift."""

    def __init__(self, spec: CellSpec, n: int) -> None:
        self.spec, self.n = spec, n
        self.col = {b: slice(j * n, (j + 1) * n) for j, b in enumerate(spec.blocks)}
        self.peep = {g: slice(j * n, (j + 1) * n) for j, g in enumerate(spec.peephole_gates)}
        self.gate = {g: slice(j * n, (j + 1) * n) for j, g in enumerate(spec.computed_gates)}
        self.gates_if = [g for g in ("i", "f") if g in self.col]  # adjacent at the front of i f z o
        self.tanh_in = spec.input_activation == "tanh"
        self.tanh_out = spec.output_activation == "tanh"
        self.rec = LSTM.recurrence(spec)
        self.shift = spec.coupling_shift

    def shifted(self, s: Tensor) -> Tensor:
        """JANET's input gate sigmoid(i~ + beta) from s = sigmoid(i~): s e^beta / (1 + s (e^beta - 1))."""
        e = math.exp(self.shift)
        return s * e / (s * (e - 1) + 1)

    def gg_full(self, weight_gg: Tensor) -> Tensor:
        """The FGR matrix (..., G N, G N) as (..., k N, G N) with zero rows for z, so that one matmul adds
        it to every gate block. Built from slices (no index tensor): it runs inside a CUDA graph capture."""
        zeros = weight_gg.new_zeros((*weight_gg.shape[:-2], self.n, weight_gg.shape[-1]))
        return torch.cat([weight_gg[..., self.gate[b], :] if b in self.gate else zeros for b in self.spec.blocks], dim=-2)

    def gg_rows(self, full: Tensor) -> Tensor:
        """The gate rows of a (..., k N, cols) tensor in FGR gate order (the inverse of `gg_full`)."""
        return torch.cat([full[..., self.col[g], :] for g in self.spec.computed_gates], dim=-2)


class LSTMFamily(Family):
    name = "lstm"
    gate_names = "zifocy"
    recurrent_names = ("weight_hh", "peephole", "weight_gg")
    keras_name = "LSTM"
    torch_equivalent = TorchEquivalent("np", nn.LSTM, torch._VF.lstm)
    proj_size = 0  # LSTMP (torch's proj_size): y_t = W_hr (o_t ⊙ h(c_t)), of this size; 0 is none

    # -- the projection: an option of the layer (torch's nn.LSTM(proj_size=...)) ---------------
    def with_options(
        self, spec: CellSpec, hidden_size: int, proj_size: int = 0, nonlinearity: str = "tanh"
    ) -> LSTMFamily:
        """With `proj_size` > 0 a copy whose output and recurrent state y are W_hr m_t (size proj_size) of the
        cell output m_t (size hidden_size), as torch's LSTMP. R then reads the projected y (k N × P). Refused
        where torch refuses it (proj_size >= hidden_size) and where R is not one full matrix (a diagonal or
        per-head R pairs y's units with the cell's)."""
        super().with_options(spec, hidden_size, 0, nonlinearity)
        if not proj_size:
            return self
        if isinstance(proj_size, bool) or int(proj_size) != proj_size or proj_size < 0:
            raise ValueError(f"proj_size must be a positive integer or zero (no projection), got {proj_size!r}")
        if proj_size >= hidden_size:
            raise ValueError(f"proj_size={proj_size} must be smaller than hidden_size={hidden_size} (as in nn.LSTM)")
        if spec.recurrence == "diagonal" or spec.heads != 1:
            raise ValueError(
                f"proj_size needs one full recurrent matrix (it reads the projected y); "
                f"cell {spec.name} has recurrence={spec.recurrence!r}, heads={spec.heads}"
            )
        return self._configured(proj_size=int(proj_size))

    def torch_options(self) -> dict[str, int]:
        return {"proj_size": self.proj_size}

    def fused_problem(self) -> str | None:
        return f"proj_size={self.proj_size}" if self.proj_size else None

    def recurrent_weights(self, params: Params) -> Weights:
        """weight_hh, peephole, weight_gg, and with a projection weight_hr last (only the loop reads it)."""
        weights = super().recurrent_weights(params)
        return weights + [params["weight_hr"]] if "weight_hr" in params else weights

    def torch_weights(self, params: Params) -> list[Tensor]:
        """torch's order: w_ih, w_hh, b_ih, b_hh, then w_hr with a projection."""
        weights = super().torch_weights(params)
        return weights + [params["weight_hr"]] if "weight_hr" in params else weights

    def parameter_shapes(self, spec: CellSpec, input_size: int, hidden_size: int) -> dict[str, tuple[int, ...]]:
        """W, R, b over the kept blocks; one peephole vector per gate that has weights (unless NP);
        for FGR the gate-to-gate matrix R_g (G N, G N) over those gates."""
        shapes = super().parameter_shapes(spec, input_size, hidden_size)
        if spec.peephole_gates:
            shapes["peephole"] = (len(spec.peephole_gates) * hidden_size,)
        if spec.full_gate_recurrence:
            g = len(spec.computed_gates) * hidden_size
            shapes["weight_gg"] = (g, g)
        if self.proj_size:  # R reads the projected y; W_hr (P, N) last, as torch registers it
            if "weight_hh" in shapes:
                shapes["weight_hh"] = (shapes["weight_hh"][0], self.proj_size)
            shapes["weight_hr"] = (self.proj_size, hidden_size)
        return shapes

    def init_parameter(self, name: str, param: Tensor, init: Init, bound: float) -> None:
        """Peepholes: U(±1/√N) under either scheme, or zero."""
        if name != "peephole":
            return super().init_parameter(name, param, init, bound)
        nn.init.uniform_(param, -bound, bound)
        if init.peephole == "zero":
            nn.init.zeros_(param)

    @torch.no_grad()
    def init_parameters(self, spec: CellSpec, params: Params, init: Init) -> None:
        """Then the forget gate's bias is `forget_bias`; for CIFG, whose forget gate is 1 - i, the input
        gate's bias is -forget_bias instead (so that f starts where a forget gate with that bias would)."""
        super().init_parameters(spec, params, init)
        col = _Layout(spec, params["bias"].shape[-1] // len(spec.blocks)).col
        if "f" in col:
            params["bias"][col["f"]] = init.forget_bias
        elif spec.coupled:
            params["bias"][col["i"]] = -init.forget_bias

    def state_sizes(self, spec: CellSpec, hidden_size: int) -> list[int]:
        """y and c; FGR adds the previous gate activations (G N); exponential gates the normaliser n
        and the stabiliser m (N each)."""
        gates = [len(spec.computed_gates) * hidden_size] if spec.full_gate_recurrence else []
        normaliser = [hidden_size, hidden_size] if spec.exponential_gates else []
        return [self.proj_size or hidden_size, hidden_size, *gates, *normaliser]

    def join_state(self, parts: list[Tensor]) -> tuple[Tensor, ...]:
        return tuple(parts)

    # -- the equations ----------------------------------------------------------------------
    def step(self, spec: CellSpec, x_proj: Tensor, state: list[Tensor], weights: Weights):
        """One step: z, i, f see c_{t-1} through their peepholes, o sees the new c_t; FGR adds R_g g_{t-1}
        to every gate. Activations by name: z i f o c y (those the cell computes; i and f as they act on
        c: normalised, shifted or stabilised where the flags say so). With a projection (weights end with
        W_hr) y is W_hr of the cell's output, and it is y that the next step's R reads (torch's LSTMP)."""
        y, new_state, acts = self._cell_step(spec, x_proj, state, weights)
        if len(weights) > 3:
            y = acts["y"] = y @ weights[3].mT
            new_state[0] = y
        return y, new_state, acts

    def _cell_step(self, spec: CellSpec, x_proj: Tensor, state: list[Tensor], weights: Weights):
        """`step` up to the projection."""
        y_prev, c_prev, *gates_state = state
        weight_hh, peephole, weight_gg = weights[:3]
        n = c_prev.shape[-1]  # y_prev has the projection's size where there is one
        blocks = dict(zip(spec.blocks, self.recurrence(spec).add(x_proj, y_prev, weight_hh).split(n, dim=-1)))
        if spec.exponential_gates:
            return lstm_exponential.step(spec, blocks, y_prev, c_prev, *gates_state)
        if weight_gg is not None:  # FGR: previous gate activations feed every gate
            for gate, extra in zip(spec.computed_gates, (gates_state[0] @ weight_gg.mT).split(n, dim=-1)):
                blocks[gate] = blocks[gate] + extra
        peep = dict(zip(spec.peephole_gates, peephole.split(n, dim=-1))) if peephole is not None else {}

        acts: dict[str, Tensor] = {}
        z = acts["z"] = activation(spec.input_activation, blocks["z"])
        if spec.input_gate:
            pre_i = blocks["i"] + peep["i"] * c_prev if "i" in peep else blocks["i"]
            acts["i"] = torch.sigmoid(pre_i)
        if spec.coupled:  # f = 1 - sigmoid(i~); JANET shifts the input gate: i = sigmoid(i~ + beta)
            acts["f"] = 1 - acts["i"]
            if spec.coupling_shift:
                acts["i"] = torch.sigmoid(pre_i + spec.coupling_shift)
        elif spec.forget_gate:
            acts["f"] = torch.sigmoid(blocks["f"] + peep["f"] * c_prev if "f" in peep else blocks["f"])
        if spec.normalized_gates:  # minLSTM: i / (i + f), f / (i + f)
            total = acts["i"] + acts["f"]
            acts["i"], acts["f"] = acts["i"] / total, acts["f"] / total
        c = z * acts["i"] if "i" in acts else z
        c = c + c_prev * acts["f"] if "f" in acts else c + c_prev
        acts["c"] = c
        y = activation(spec.output_activation, c)
        if spec.output_gate:
            o = acts["o"] = torch.sigmoid(blocks["o"] + peep["o"] * c if "o" in peep else blocks["o"])
            y = y * o
        acts["y"] = y
        new_state = [y, c]
        if weight_gg is not None:
            new_state.append(torch.cat([acts[g] for g in spec.computed_gates], dim=-1))
        return y, new_state, acts

    # -- the whole sequence, without autograd -------------------------------------------------
    def kernel_problem(self, spec: CellSpec) -> str | None:
        """The Triton kernel computes the Odyssey flags: full recurrence with one head, sigmoid gates
        that are neither exponential, normalised nor shifted, g = tanh or the identity."""
        missing = [
            name for name, present in (
                (f"recurrence={spec.recurrence!r}", spec.recurrence != "full"), (f"heads={spec.heads}", spec.heads != 1),
                ("exponential_gates", spec.exponential_gates), ("normalized_gates", spec.normalized_gates),
                ("coupling_shift", bool(spec.coupling_shift)), ("input_activation='positive'", spec.input_activation == "positive"),
            ) if present
        ]
        return f"the LSTM Triton kernel has no {', '.join(missing)}" if missing else None

    def fused_kernel(self, spec: CellSpec, xp: Tensor) -> str:
        """The scan for cells that are parallel in time (unless LSTM_ODYSSEY_SCAN=0), else Triton or eager."""
        return "scan" if spec.parallel_in_time and ops.scan_enabled() else super().fused_kernel(spec, xp)

    def sequence_forward(self, spec: CellSpec, xp: Tensor, states: list[Tensor], weights: Weights, mask: Tensor | None):
        """Triton's per-step kernel where it runs (lstm_triton.py), the scan over time (lstm_scan.py),
        the exponential-gate sweep (lstm_exponential.py), else the eager sweep (lstm_eager.py). None of them
        projects: a family with proj_size refuses rather than compute an LSTM without W_hr."""
        if self.fused_problem():
            raise ValueError(f"the LSTM's fused sweeps have no {self.fused_problem()}; run backend='loop' or 'torch'")
        lay = _Layout(spec, states[0].shape[-1])
        kernel = self.fused_kernel(spec, xp)
        if kernel == "triton":
            from . import lstm_triton  # imports triton, which only CUDA builds of torch ship

            outs, saved = lstm_triton.triton_sequence_forward(spec, lay, xp, states, weights, mask)
        elif kernel == "scan":
            outs, saved = lstm_scan.sequence_forward(lay, xp, states, weights, mask)
        elif spec.exponential_gates:
            outs, saved = lstm_exponential.sequence_forward(lay, xp, states, weights, mask)
        else:
            outs, saved = lstm_eager.sequence_forward(lay, xp, states, weights, mask)
        return outs, {name: value for name, value in saved.items() if value is not None}

    def sequence_backward(self, spec: CellSpec, saved: dict[str, Tensor], grads: list[Tensor | None], weights: Weights, mask: Tensor | None):
        """The reverse sweep (Triton's kernel, the scan, or eager), then every weight gradient in one reduction."""
        lay = _Layout(spec, saved["C"].shape[-1])
        kernel = self.fused_kernel(spec, saved["acts"])
        if kernel == "scan":
            return lstm_scan.sequence_backward(lay, saved, grads, weights, mask)
        if spec.exponential_gates:
            return lstm_exponential.sequence_backward(lay, saved, grads, weights, mask)
        grads = grads + [None] * (4 - len(grads))  # the FGR state's gradient is absent without FGR
        if kernel == "triton":
            from . import lstm_triton  # imports triton, which only CUDA builds of torch ship

            dpre, dstates = lstm_triton.triton_sequence_backward(spec, lay, saved, grads, weights, mask)
        else:
            dpre, dstates = lstm_eager.sequence_backward(lay, saved, grads, weights, mask)
        return dpre, dstates, lstm_eager.weight_grads(lay, saved, dpre, weights)


LSTM = LSTMFamily()
