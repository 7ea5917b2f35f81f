"""The cell family of "LSTM: A Search Space Odyssey" as data: a `CellSpec` of flags, the presets
and `get_spec` (docs/equations.md). The math of each family lives in its own module (lstm.py, gru.py,
rnn.py); this module knows only which flags exist, which combinations make a cell, and the layout the
flags imply.

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

Family = Literal["lstm", "gru", "rnn"]
Activation = Literal["tanh", "identity"]
ACTIVATIONS = ("tanh", "identity")


def _lstm_flag(default: bool | str, others: bool | str) -> dataclasses.Field:
    """A flag only the LSTM family reads: gru and rnn cells must leave it at `others`."""
    return dataclasses.field(default=default, metadata={"others": others})


@dataclass(frozen=True)
class CellSpec:
    """Flags of one recurrent cell. The defaults are the paper's vanilla LSTM (with peepholes)."""

    family: Family = "lstm"
    input_gate: bool = _lstm_flag(True, others=True)  # False: i_t = 1 (NIG)
    forget_gate: bool = _lstm_flag(True, others=True)  # False: f_t = 1 (NFG)
    output_gate: bool = _lstm_flag(True, others=True)  # False: o_t = 1 (NOG)
    coupled: bool = _lstm_flag(False, others=False)  # CIFG: f_t = 1 - i_t, no forget weights
    input_activation: Activation = _lstm_flag("tanh", others="tanh")  # g; "identity" is NIAF
    output_activation: Activation = _lstm_flag("tanh", others="tanh")  # h; "identity" is NOAF
    peepholes: bool = _lstm_flag(True, others=False)  # False is NP
    full_gate_recurrence: bool = _lstm_flag(False, others=False)  # FGR
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
        """LSTM gates with a peephole (one weight per unit from the cell)."""
        return self.computed_gates if self.peepholes else ()

    @property
    def num_biases(self) -> int:
        """Bias vectors per block: cuDNN's GRU adds b_hh inside the reset product, so it keeps two."""
        return 2 if self.family == "gru" and self.reset == "after" else 1

    def num_parameters(self, input_size: int, hidden_size: int) -> int:
        """Parameters of one layer-direction (docs/equations.md, "Parameter counts"): the closed form of
        the shapes each family module declares (tests hold the two equal for every preset)."""
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
    fields = dataclasses.fields(spec)
    for flag in (f.name for f in fields if isinstance(f.default, bool)):
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
        lstm_only = {f.name: f.metadata["others"] for f in fields if "others" in f.metadata}
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
