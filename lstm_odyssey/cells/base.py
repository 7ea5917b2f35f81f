"""What a family of cells is to the rest of the package: the `Family` base class that lstm.py, gru.py
and rnn.py each subclass once, and the initialisation options. `RecurrentLayer`, the backends and the
summary ask a family object; none of them branches on `spec.family`.

A family owns its parameters (names, shapes, initialisation), its state, the gate activations
``return_gates`` records, the reference step (the equations, with autograd), the fused sequence
forward/backward (no autograd, optionally Triton), and the mapping onto torch's kernel where one exists.
torch's module options that are not cells (nn.LSTM's proj_size, nn.RNN's nonlinearity) configure a copy of
the family object (`with_options`); the shared objects in `FAMILIES` keep the defaults.
Shapes follow ops.py: one trial is 2-D, stacked trials carry a leading axis K.
"""

from __future__ import annotations

import abc
import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from . import ops
from .spec import PRESETS, CellSpec

Params = dict[str, Tensor]  # one layer-direction's parameters by name (weight_ih, weight_hh, bias, ...)
Weights = list[Tensor | None]  # the recurrent tensors a step reads, in the family's `recurrent_names` order
INIT_SCHEMES = ("torch", "keras")  # the first is the default (Init, and the config's model.init)
PEEPHOLE_INITS = ("uniform", "zero")  # the first is the default
FORGET_BIAS = 1.0  # Jozefowicz et al. 2015 (Keras's unit_forget_bias=True); 0.0 for none


@dataclass(frozen=True)
class Init:
    """How parameters start (docs/equations.md, "Initialisation").

    `scheme`: ``torch`` draws every parameter from U(±1/√N); ``keras`` draws input weights Glorot-uniform,
    recurrent matrices orthogonal and biases zero. `peephole`: U(±1/√N) or zero. `forget_bias`: the LSTM
    forget gate's bias (a CIFG cell, whose forget gate is 1 - i, gets -forget_bias on its input gate)."""

    scheme: str = INIT_SCHEMES[0]
    peephole: str = PEEPHOLE_INITS[0]
    forget_bias: float = FORGET_BIAS

    def __post_init__(self) -> None:
        if self.scheme not in INIT_SCHEMES:
            raise ValueError(f"init must be 'torch' (uniform ±1/√N) or 'keras' (Glorot + orthogonal), not {self.scheme!r}")
        if self.peephole not in PEEPHOLE_INITS:
            raise ValueError(f"peephole_init must be 'uniform' or 'zero', not {self.peephole!r}")


DEFAULT_INIT = Init()  # the defaults of the layer, the model and the config's model.init, peephole_init, forget_bias


@dataclass(frozen=True)
class TorchEquivalent:
    """The one preset of a family that torch computes too: its module and its fused kernel (cuDNN on a GPU).
    torch keeps two biases b_ih, b_hh; a cell with one bias holds their sum."""

    preset: str
    module: type[nn.RNNBase]
    kernel: Callable[..., Any]  # torch._VF.lstm / gru / rnn_tanh


class Family(abc.ABC):
    """One family of cells (one instance each, in `lstm_odyssey.cells.FAMILIES`)."""

    name: str
    gate_names: str  # activations `return_gates` records, in this order; one the cell lacks reads as ones
    recurrent_names: tuple[str, ...]  # parameters the step reads besides W x + b, in `Weights` order
    keras_name: str  # Keras's layer type (model summaries)
    torch_equivalent: TorchEquivalent | None = None  # torch's module and kernel for one preset

    # -- options of the layer that torch's modules have (LSTM's proj_size, RNN's nonlinearity) ---------
    def with_options(self, spec: CellSpec, hidden_size: int, proj_size: int = 0, nonlinearity: str = "tanh") -> Family:
        """This family configured with a layer's options: itself when they are torch's defaults (so that the
        shared objects of `FAMILIES` run every preset), else a configured copy (see the subclasses). An option
        the family has no meaning for is refused in one line."""
        if proj_size:
            raise ValueError(
                f"proj_size={proj_size} projects an LSTM's output (torch's LSTMP); "
                f"the {self.name} family has no projection, use proj_size=0"
            )
        if nonlinearity != "tanh":
            raise ValueError(
                f"nonlinearity={nonlinearity!r} is an option of the rnn family (torch.nn.RNN); "
                f"the {self.name} family takes 'tanh' only"
            )
        return self

    def _configured(self, **attributes: Any) -> Family:
        """A copy of this family object with `attributes` set (the shared object stays as it is)."""
        family = copy.copy(self)
        for name, value in attributes.items():
            setattr(family, name, value)
        return family

    def torch_options(self) -> dict[str, Any]:
        """The options of this (configured) family as keyword arguments of torch's module (`proj_size` for
        nn.LSTM, `nonlinearity` for nn.RNN): `to_torch` passes them, `from_torch` reads the same names."""
        return {}

    def fused_problem(self) -> str | None:
        """Why the fused sequence functions (and so the fused and graph backends) cannot run this configured
        family, or None: they implement the default options only."""
        return None

    # -- parameters -------------------------------------------------------------------------
    def parameter_shapes(self, spec: CellSpec, input_size: int, hidden_size: int) -> dict[str, tuple[int, ...]]:
        """Names and shapes of one layer-direction's parameters, in registration order. Every family has
        the fused input projection W (k N, M), b (k N) and, over its k blocks, the recurrent R: a matrix
        (k N, N), block-diagonal over heads (k N, N / heads), a diagonal (k N,), or none."""
        spec.check_hidden_size(hidden_size)
        kn = len(spec.blocks) * hidden_size
        recurrent = {"full": (kn, hidden_size // spec.heads), "diagonal": (kn,), "none": None}[spec.recurrence]
        return {"weight_ih": (kn, input_size), **({"weight_hh": recurrent} if recurrent else {}), "bias": (kn,)}

    @torch.no_grad()
    def init_parameters(self, spec: CellSpec, params: Params, init: Init) -> None:
        """Initialise one layer-direction in place (in registration order, so the random stream is fixed)."""
        bound = 1.0 / math.sqrt(params["bias"].shape[-1] // len(spec.blocks))  # 1/√N
        for name, param in params.items():
            self.init_parameter(name, param, init, bound)

    def init_parameter(self, name: str, param: Tensor, init: Init, bound: float) -> None:
        """torch: U(±bound); keras: Glorot input weights, orthogonal recurrent matrices (per head: the
        columns of R's rows), zero vectors; a diagonal recurrence U(0, 1), so that every unit's memory
        decays and none grows."""
        if init.scheme == "torch":
            nn.init.uniform_(param, -bound, bound)
        elif name == "weight_ih":
            nn.init.xavier_uniform_(param)
        elif param.dim() > 1:
            nn.init.orthogonal_(param)
        elif name == "weight_hh":
            nn.init.uniform_(param, 0.0, 1.0)
        else:
            nn.init.zeros_(param)

    def recurrence(self, spec: CellSpec) -> ops.Recurrence:
        """The recurrent term R y_{t-1} of this cell (full, over heads, diagonal or none)."""
        return ops.Recurrence(spec.recurrence, spec.heads, len(spec.blocks))

    def recurrent_weights(self, params: Params) -> Weights:
        """The tensors `step` and the sequence functions take, from a layer-direction's parameters."""
        return [params.get(name) for name in self.recurrent_names]

    def input_projection(self, x: Tensor, params: Params) -> Tensor:
        """W x_t + b for every step of time-major `x` (T, B, M) at once: (T, B, k N)."""
        steps, batch, _ = x.shape
        flat = torch.addmm(params["bias"], x.reshape(steps * batch, -1), params["weight_ih"].t())
        return flat.view(steps, batch, -1)

    # -- state ------------------------------------------------------------------------------
    def state_sizes(self, spec: CellSpec, hidden_size: int) -> list[int]:
        """Width of each state tensor (the last axis; every one is (..., B, width)). Default: h alone."""
        return [hidden_size]

    def join_state(self, parts: list[Tensor]) -> Any:
        """The state as the layer hands it out (torch's layout): a tensor, or a tuple for several parts."""
        return parts[0] if len(parts) == 1 else tuple(parts)

    # -- the math ---------------------------------------------------------------------------
    @abc.abstractmethod
    def step(self, spec: CellSpec, x_proj: Tensor, state: list[Tensor], weights: Weights) -> tuple[Tensor, list[Tensor], dict[str, Tensor]]:
        """One step with autograd, the reference every other path is tested against: from `x_proj`
        (..., B, kN) = W x_t + b and the state, returns (output y_t, new state, activations by name)."""

    @abc.abstractmethod
    def sequence_forward(self, spec: CellSpec, xp: Tensor, states: list[Tensor], weights: Weights, mask: Tensor | None):
        """The whole sequence without autograd: `xp` (T, ..., B, kN) (scratch: overwritten), `mask`
        (T, ..., B, 1) of 0/1 or None. Returns ([out, *final states], saved tensors for backward)."""

    @abc.abstractmethod
    def sequence_backward(self, spec: CellSpec, saved: dict[str, Tensor], grads: list[Tensor | None], weights: Weights, mask: Tensor | None):
        """Gradients of `sequence_forward` from the gradients of its outputs (None: zero):
        (d xp, [d initial states], [d weights] in `weights` order)."""

    def kernel_problem(self, spec: CellSpec) -> str | None:
        """Why the family's Triton kernel does not run this cell (its sequences then run eager), or None."""
        return f"the {self.name} family has no Triton kernel"

    def fused_kernel(self, spec: CellSpec, xp: Tensor) -> str:
        """What `sequence_forward` runs for this cell and sequence: triton, eager or scan."""
        return "triton" if ops.triton_runs(xp) and self.kernel_problem(spec) is None else "eager"

    # -- torch interop ----------------------------------------------------------------------
    def torch_runs(self, spec: CellSpec) -> bool:
        """True when torch's kernel computes exactly this cell."""
        return self.torch_equivalent is not None and spec == PRESETS[self.torch_equivalent.preset]

    def torch_problem(self, module: nn.RNNBase) -> str | None:
        """Why a torch module of this family has no equal cell here, or None."""
        return None

    def torch_weights(self, params: Params) -> list[Tensor]:
        """[w_ih, w_hh, b_ih, b_hh] as torch's kernels take them (our single bias as b_ih, b_hh = 0)."""
        bias_hh = params.get("bias_hh")
        return [params["weight_ih"], params["weight_hh"], params["bias"], bias_hh if bias_hh is not None else torch.zeros_like(params["bias"])]

    @torch.no_grad()
    def load_torch(self, params: Params, module: nn.RNNBase, suffix: str) -> None:
        """Copy one layer-direction of a torch module into `params` (a single bias holds b_ih + b_hh)."""
        for name, param in params.items():
            if name.startswith("weight"):
                param.copy_(getattr(module, f"{name}{suffix}"))
            elif not module.bias:
                param.zero_()
            elif name == "bias_hh":
                param.copy_(getattr(module, f"bias_hh{suffix}"))
            elif "bias_hh" in params:
                param.copy_(getattr(module, f"bias_ih{suffix}"))
            else:
                param.copy_(getattr(module, f"bias_ih{suffix}") + getattr(module, f"bias_hh{suffix}"))

    @torch.no_grad()
    def save_torch(self, params: Params, module: nn.RNNBase, suffix: str) -> None:
        """Copy one layer-direction into a torch module (the inverse of `load_torch`)."""
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")  # weight_hr: an LSTM's projection
        for name, value in zip(names, self.torch_weights(params)):
            getattr(module, f"{name}{suffix}").copy_(value)
