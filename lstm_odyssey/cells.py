"""The cell family of "LSTM: A Search Space Odyssey" as data: a `CellSpec` of flags, the presets,
and the step math (SPEC.md §1). Nothing else lives here.

Parameters of one layer-direction are fused so that one matmul computes every block:

* LSTM family: blocks in torch's order ``i f z o`` (those the spec keeps), so that ``np`` is
  bit-for-bit the layout of ``torch.nn.LSTM`` (``weight_ih``, ``weight_hh``, one bias = ``b_ih + b_hh``).
* GRU family: blocks ``r u n`` (torch's ``r z n``); ``gru`` keeps cuDNN's two biases.
* rnn: one block.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Family = Literal["lstm", "gru", "rnn"]
Activation = Literal["tanh", "identity"]
ACTIVATIONS = ("tanh", "identity")


@dataclass(frozen=True)
class CellSpec:
    """Flags of one recurrent cell. The defaults are the paper's vanilla LSTM (with peepholes)."""

    family: Family = "lstm"
    input_gate: bool = True  # False: i_t = 1 (NIG)
    forget_gate: bool = True  # False: f_t = 1 (NFG)
    output_gate: bool = True  # False: o_t = 1 (NOG)
    coupled: bool = False  # CIFG: f_t = 1 - i_t, no forget weights
    input_activation: Activation = "tanh"  # g; "identity" is NIAF
    output_activation: Activation = "tanh"  # h; "identity" is NOAF
    peepholes: bool = True  # False is NP
    full_gate_recurrence: bool = False  # FGR
    reset: Literal["after", "before"] = "after"  # GRU: reset after R h (cuDNN) or before (Cho)

    def __post_init__(self) -> None:
        problems = _conflicts(self)
        if problems:
            raise ValueError(f"impossible cell {self.describe()}: {problems[0]}")

    # -- structure derived from the flags -------------------------------------------------
    @property
    def blocks(self) -> tuple[str, ...]:
        """Names of the fused pre-activation blocks, in weight-matrix order."""
        if self.family == "gru":
            return ("r", "u", "n")
        if self.family == "rnn":
            return ("h",)
        return tuple(b for b in ("i", "f", "z", "o") if b == "z" or b in self.computed_gates)

    @property
    def computed_gates(self) -> tuple[str, ...]:
        """LSTM gates that have their own weights (a coupled forget gate has none)."""
        if self.family != "lstm":
            return ()
        gates = []
        if self.input_gate:
            gates.append("i")
        if self.forget_gate and not self.coupled:
            gates.append("f")
        if self.output_gate:
            gates.append("o")
        return tuple(gates)

    @property
    def peephole_gates(self) -> tuple[str, ...]:
        return self.computed_gates if self.peepholes else ()

    @property
    def num_biases(self) -> int:
        return 2 if self.family == "gru" and self.reset == "after" else 1

    def num_parameters(self, input_size: int, hidden_size: int) -> int:
        """Parameters of one layer-direction, SPEC.md's table."""
        m, n, k = input_size, hidden_size, len(self.blocks)
        count = k * n * (m + n) + self.num_biases * k * n + len(self.peephole_gates) * n
        if self.full_gate_recurrence:
            count += (len(self.computed_gates) * n) ** 2
        return count

    @property
    def name(self) -> str:
        """The preset's name when the flags equal one, else the nearest preset plus the changes."""
        for preset, spec in PRESETS.items():
            if spec == self:
                return preset
        return self.describe()

    def describe(self) -> str:
        base = {"lstm": VANILLA, "gru": _GRU, "rnn": _RNN}.get(self.family, VANILLA)
        changes = [
            f"{f.name}={getattr(self, f.name)}"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(base, f.name)
        ]
        label = {"lstm": "vanilla", "gru": "gru", "rnn": "rnn"}.get(self.family, self.family)
        return f"{label}[{', '.join(changes)}]" if changes else label

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _conflicts(spec: CellSpec) -> list[str]:
    """Every reason why the flags cannot make a cell, as sentences that say how to fix them."""
    out = []
    for flag in ("input_gate", "forget_gate", "output_gate", "coupled", "peepholes", "full_gate_recurrence"):
        if not isinstance(getattr(spec, flag), bool):
            out.append(f"{flag} must be true or false, not {getattr(spec, flag)!r}")
    if out:
        return out
    if spec.family not in ("lstm", "gru", "rnn"):
        out.append(f"family must be lstm, gru or rnn, not {spec.family!r}")
        return out
    for act in ("input_activation", "output_activation"):
        if getattr(spec, act) not in ACTIVATIONS:
            out.append(f"{act} must be one of {ACTIVATIONS}, not {getattr(spec, act)!r}")
    if spec.reset not in ("after", "before"):
        out.append(f"reset must be 'after' or 'before', not {spec.reset!r}")
    if spec.family == "lstm":
        if spec.coupled and not spec.input_gate:
            out.append("coupled=True derives the forget gate from the input gate; it needs input_gate=True")
        if spec.coupled and not spec.forget_gate:
            out.append("coupled=True makes f = 1 - i; it contradicts forget_gate=False (f = 1)")
        if spec.full_gate_recurrence and not spec.computed_gates:
            out.append("full_gate_recurrence=True needs at least one gate with its own weights")
        if spec.reset != "after":
            out.append("reset placement is a GRU flag; leave reset='after' for the lstm family")
    else:
        lstm_only = {
            "input_gate": True,
            "forget_gate": True,
            "output_gate": True,
            "coupled": False,
            "input_activation": "tanh",
            "output_activation": "tanh",
            "peepholes": False,
            "full_gate_recurrence": False,
        }
        for flag, neutral in lstm_only.items():
            if getattr(spec, flag) != neutral:
                out.append(f"{flag}={getattr(spec, flag)!r} is an LSTM-family flag; use {flag}={neutral!r} with family={spec.family!r}")
        if spec.family == "rnn" and spec.reset != "after":
            out.append("reset placement is a GRU flag; leave reset='after' for the rnn family")
    return out


VANILLA = CellSpec()
_GRU = CellSpec(family="gru", peepholes=False)
_RNN = CellSpec(family="rnn", peepholes=False)

PRESETS: dict[str, CellSpec] = {
    "vanilla": VANILLA,
    "nig": CellSpec(input_gate=False),
    "nfg": CellSpec(forget_gate=False),
    "nog": CellSpec(output_gate=False),
    "niaf": CellSpec(input_activation="identity"),
    "noaf": CellSpec(output_activation="identity"),
    "cifg": CellSpec(coupled=True),
    "np": CellSpec(peepholes=False),
    "fgr": CellSpec(full_gate_recurrence=True),
    "gru": _GRU,
    "gru_cho": CellSpec(family="gru", peepholes=False, reset="before"),
    "grupp": CellSpec(output_gate=False, output_activation="identity", peepholes=False),
    "rnn": _RNN,
}
ODYSSEY_VARIANTS = ("vanilla", "nig", "nfg", "nog", "niaf", "noaf", "cifg", "np", "fgr")


def get_spec(cell: str | CellSpec | dict) -> CellSpec:
    """A CellSpec from a preset name, a spec, or a dict of flags on top of `preset` (else of the preset
    called `name`, else of vanilla; a name that is no preset, e.g. `my_cell`, is only a label)."""
    if isinstance(cell, CellSpec):
        return cell
    if isinstance(cell, str):
        if cell not in PRESETS:
            raise ValueError(f"unknown cell {cell!r}; choose one of: {', '.join(PRESETS)}")
        return PRESETS[cell]
    flags = dict(cell)
    label = flags.pop("name", None)  # a preset's name doubles as its base; any other name is a label
    base = get_spec(flags.pop("preset", None) or (label if label in PRESETS else "vanilla"))
    known = {f.name for f in dataclasses.fields(CellSpec)}
    unknown = sorted(set(flags) - known)
    if unknown:
        raise ValueError(f"unknown cell flag {unknown[0]!r}; known flags: {', '.join(sorted(known))}")
    return dataclasses.replace(base, **flags)


# -- the step math ------------------------------------------------------------------------


def activation(name: str, x: Tensor) -> Tensor:
    return torch.tanh(x) if name == "tanh" else x


def lstm_step(
    spec: CellSpec,
    x_proj: Tensor,
    y_prev: Tensor,
    c_prev: Tensor,
    gates_prev: Tensor | None,
    weight_hh: Tensor,
    peephole: Tensor | None,
    weight_gg: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor | None, dict[str, Tensor]]:
    """One step of the LSTM family (SPEC.md §1).

    `x_proj` is W x_t + b for all blocks, precomputed for the whole sequence. Returns
    (y_t, c_t, gate activations for FGR or None, every computed activation by name).
    """
    pre = torch.addmm(x_proj, y_prev, weight_hh.t())
    n = y_prev.shape[-1]
    blocks = dict(zip(spec.blocks, pre.split(n, dim=-1)))
    if weight_gg is not None:  # FGR: previous gate activations feed every gate
        recurrent = (gates_prev @ weight_gg.t()).split(n, dim=-1)
        for gate, extra in zip(spec.computed_gates, recurrent):
            blocks[gate] = blocks[gate] + extra
    peep = dict(zip(spec.peephole_gates, peephole.split(n))) if peephole is not None else {}

    acts: dict[str, Tensor] = {}
    z = acts["z"] = activation(spec.input_activation, blocks["z"])
    if spec.input_gate:
        i = acts["i"] = torch.sigmoid(blocks["i"] + peep["i"] * c_prev if "i" in peep else blocks["i"])
        c = z * i
    else:
        c = z
    if spec.coupled:
        acts["f"] = 1 - acts["i"]
        c = c + c_prev * acts["f"]
    elif spec.forget_gate:
        f = acts["f"] = torch.sigmoid(blocks["f"] + peep["f"] * c_prev if "f" in peep else blocks["f"])
        c = c + c_prev * f
    else:
        c = c + c_prev
    acts["c"] = c
    y = activation(spec.output_activation, c)
    if spec.output_gate:
        o = acts["o"] = torch.sigmoid(blocks["o"] + peep["o"] * c if "o" in peep else blocks["o"])
        y = y * o
    acts["y"] = y
    gates = torch.cat([acts[g] for g in spec.computed_gates], dim=-1) if weight_gg is not None else None
    return y, c, gates, acts


def gru_step(
    spec: CellSpec,
    x_proj: Tensor,
    h_prev: Tensor,
    weight_hh: Tensor,
    bias_hh: Tensor | None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """One GRU step; `x_proj` is W x_t + b_i. Reset after R h (cuDNN) or before it (Cho et al.)."""
    n = h_prev.shape[-1]
    x_r, x_u, x_n = x_proj.split(n, dim=-1)
    if spec.reset == "after":
        h_r, h_u, h_n = torch.addmm(bias_hh, h_prev, weight_hh.t()).split(n, dim=-1)
        r = torch.sigmoid(x_r + h_r)
        u = torch.sigmoid(x_u + h_u)
        cand = torch.tanh(x_n + r * h_n)
    else:
        h_r, h_u = (h_prev @ weight_hh[: 2 * n].t()).split(n, dim=-1)
        r = torch.sigmoid(x_r + h_r)
        u = torch.sigmoid(x_u + h_u)
        cand = torch.tanh(x_n + (r * h_prev) @ weight_hh[2 * n :].t())
    h = (1 - u) * cand + u * h_prev
    return h, {"r": r, "u": u, "n": cand, "h": h}


def rnn_step(x_proj: Tensor, h_prev: Tensor, weight_hh: Tensor) -> Tensor:
    """Elman / SimpleRNN: h_t = tanh(W x_t + R h_{t-1} + b)."""
    return torch.tanh(torch.addmm(x_proj, h_prev, weight_hh.t()))
