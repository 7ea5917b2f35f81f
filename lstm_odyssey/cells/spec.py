"""The cell family of "LSTM: A Search Space Odyssey" as data: a `CellSpec` of flags, the presets
and `get_spec` (docs/equations.md). The math of each family lives in its own module (lstm.py, gru.py,
rnn.py); this module knows only which flags exist, which combinations make a cell, and the layout the
flags imply. The cells of 2018-2024 (minGRU, minLSTM, sLSTM, IndRNN, IndyLSTM, JANET) are points of the
same space: the kind of recurrence, heads, exponential or normalised gates and JANET's coupling shift.

Parameters of one layer-direction are fused so that one matmul computes every block:

* LSTM family: blocks in torch's order ``i f z o`` (those the spec keeps), so that ``np`` is
  bit-for-bit the layout of ``torch.nn.LSTM`` (``weight_ih``, ``weight_hh``, one bias = ``b_ih + b_hh``).
* GRU family: blocks ``r u n`` (torch's ``r z n``); ``gru`` keeps cuDNN's two biases.
* rnn: one block.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Literal

Family = Literal["lstm", "gru", "rnn"]
Activation = Literal["tanh", "identity", "positive"]
INPUT_ACTIVATIONS = ("tanh", "identity", "positive")  # positive: Feng et al.'s g (x + 1/2 for x >= 0, else sigmoid)
OUTPUT_ACTIVATIONS = ("tanh", "identity")
Recurrence = Literal["full", "diagonal", "none"]
RECURRENCES = ("full", "diagonal", "none")


def _lstm_flag(default: bool | str | float, others: bool | str | float) -> dataclasses.Field:
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
    recurrence: Recurrence = "full"  # R y_{t-1}: a matrix, one weight per unit (IndRNN, IndyLSTM), or none (minGRU)
    heads: int = 1  # full recurrence block-diagonal over this many heads (sLSTM); 1 is one full matrix
    exponential_gates: bool = _lstm_flag(False, others=False)  # sLSTM: i = exp(i~), stabiliser m, normaliser n
    normalized_gates: bool = _lstm_flag(False, others=False)  # minLSTM: i, f -> i / (i + f), f / (i + f)
    coupling_shift: float = _lstm_flag(0.0, others=0.0)  # JANET's beta: coupled i = sigmoid(i~ + beta)

    def __post_init__(self) -> None:
        problems = _conflicts(self)
        if problems:
            raise ValueError(f"impossible cell {self.describe()}: {problems[0]}")
        object.__setattr__(self, "coupling_shift", float(self.coupling_shift))  # 1 from a command line is 1.0

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
    def parallel_in_time(self) -> bool:
        """The cell's memory follows c_t = a_t c_{t-1} + b_t with a_t, b_t computed from x_t alone (no
        recurrent weights, no peephole into i or f, no gate recurrence, sigmoid gates): a scan over time
        computes every step at once (minGRU, minLSTM)."""
        return (
            self.family == "lstm" and self.recurrence == "none" and not self.full_gate_recurrence
            and not self.exponential_gates and not {"i", "f"} & set(self.peephole_gates)
        )

    def num_recurrent_weights(self, hidden_size: int) -> int:
        """Entries of R over all blocks: k N²/heads (full), k N (diagonal) or 0 (none)."""
        k, n = len(self.blocks), hidden_size
        return {"full": k * n * n // self.heads, "diagonal": k * n, "none": 0}[self.recurrence]

    def check_hidden_size(self, hidden_size: int) -> None:
        """Heads split the units evenly: refuse a hidden size they do not divide, in one line."""
        if hidden_size % self.heads:
            raise ValueError(f"hidden_size={hidden_size} is not a multiple of heads={self.heads}; choose a multiple of {self.heads} or heads=1")

    @property
    def num_biases(self) -> int:
        """Bias vectors per block: cuDNN's GRU adds b_hh inside the reset product, so it keeps two."""
        return 2 if self.family == "gru" and self.reset == "after" else 1

    def num_parameters(self, input_size: int, hidden_size: int) -> int:
        """Parameters of one layer-direction (docs/equations.md, "Parameter counts"): the closed form of
        the shapes each family module declares (tests hold the two equal for every preset)."""
        self.check_hidden_size(hidden_size)
        m, n, k = input_size, hidden_size, len(self.blocks)
        count = k * n * m + self.num_recurrent_weights(n) + self.num_biases * k * n + len(self.peephole_gates) * n
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
    if isinstance(spec.heads, bool) or not isinstance(spec.heads, int) or spec.heads < 1:
        out.append(f"heads must be a positive integer, not {spec.heads!r}")
    shift = spec.coupling_shift
    if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not math.isfinite(shift):
        out.append(f"coupling_shift must be a finite number, not {shift!r}")
    if out:
        return out
    if spec.family not in ("lstm", "gru", "rnn"):
        out.append(f"family must be lstm, gru or rnn, not {spec.family!r}")
        return out
    if spec.input_activation not in INPUT_ACTIVATIONS:
        out.append(f"input_activation must be one of {INPUT_ACTIVATIONS}, not {spec.input_activation!r}")
    if spec.output_activation not in OUTPUT_ACTIVATIONS:
        out.append(f"output_activation must be one of {OUTPUT_ACTIVATIONS}, not {spec.output_activation!r}")
    if spec.reset not in ("after", "before"):
        out.append(f"reset must be 'after' or 'before', not {spec.reset!r}")
    if spec.recurrence not in RECURRENCES:
        out.append(f"recurrence must be one of {RECURRENCES}, not {spec.recurrence!r}")
    elif spec.heads > 1 and spec.recurrence != "full":
        out.append(f"heads split a full recurrent matrix into blocks; heads={spec.heads} needs recurrence='full', not {spec.recurrence!r}")
    if spec.family == "lstm":
        out += _lstm_conflicts(spec)
    else:
        lstm_only = {f.name: f.metadata["others"] for f in fields if "others" in f.metadata}
        for flag, neutral in lstm_only.items():
            if getattr(spec, flag) != neutral:
                out.append(f"{flag}={getattr(spec, flag)!r} is an LSTM-family flag; use {flag}={neutral!r} with family={spec.family!r}")
        if spec.family == "rnn" and spec.reset != "after":
            out.append("reset placement is a GRU flag; leave reset='after' for the rnn family")
        if spec.family == "gru" and (spec.recurrence != "full" or spec.heads != 1):
            out.append("the gru family has full recurrence only; use recurrence='full', heads=1 (diagonal and heads: lstm, rnn)")
        if spec.family == "rnn" and spec.recurrence == "none":
            out.append("recurrence='none' leaves the rnn no memory (h_t = tanh(W x_t + b)); use 'full' or 'diagonal'")
    return out


def _lstm_conflicts(spec: CellSpec) -> list[str]:
    out = []
    if spec.coupled and not spec.input_gate:
        out.append("coupled=True derives the forget gate from the input gate; it needs input_gate=True")
    if spec.coupled and not spec.forget_gate:
        out.append("coupled=True makes f = 1 - i; it contradicts forget_gate=False (f = 1)")
    if spec.full_gate_recurrence and not spec.computed_gates:
        out.append("full_gate_recurrence=True needs at least one gate with its own weights")
    if spec.reset != "after":
        out.append("reset placement is a GRU flag; leave reset='after' for the lstm family")
    if spec.coupling_shift and not spec.coupled:
        out.append("coupling_shift shifts the coupled input gate (JANET); it needs coupled=True")
    if spec.coupling_shift and spec.full_gate_recurrence:
        out.append("coupling_shift with full_gate_recurrence is not implemented; drop one")
    if spec.normalized_gates and not (spec.input_gate and spec.forget_gate and not spec.coupled):
        out.append("normalized_gates=True divides i and f by i + f; it needs input_gate=True, forget_gate=True, coupled=False")
    if spec.exponential_gates:
        if not spec.input_gate or spec.coupled:
            out.append("exponential_gates=True makes the input gate exp(i~); it needs input_gate=True and coupled=False")
        if spec.peepholes:
            out.append("exponential_gates=True keeps a stabilised cell c exp(-m) that a peephole would read; use peepholes=False")
        if spec.full_gate_recurrence or spec.normalized_gates:
            out.append("exponential_gates=True replaces the gates' sigmoids; it excludes full_gate_recurrence and normalized_gates")
    if spec.normalized_gates and spec.full_gate_recurrence:
        out.append("normalized_gates with full_gate_recurrence is not implemented; drop one")
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
    # beyond the paper (docs/equations.md, "Beyond the paper")
    "min_gru": CellSpec(coupled=True, input_activation="identity", output_gate=False, output_activation="identity",
                        peepholes=False, recurrence="none"),
    "min_lstm": CellSpec(normalized_gates=True, input_activation="identity", output_gate=False,
                         output_activation="identity", peepholes=False, recurrence="none"),
    "slstm": CellSpec(exponential_gates=True, output_activation="identity", peepholes=False),
    "indy_lstm": CellSpec(peepholes=False, recurrence="diagonal"),
    "indrnn": CellSpec(family="rnn", peepholes=False, recurrence="diagonal"),
    "janet": CellSpec(coupled=True, coupling_shift=1.0, output_gate=False, output_activation="identity", peepholes=False),
}
MODERN_CELLS = ("min_gru", "min_lstm", "slstm", "indy_lstm", "indrnn", "janet")
ODYSSEY_VARIANTS = ("vanilla", "nig", "nfg", "nog", "niaf", "noaf", "cifg", "np", "fgr")


def get_spec(cell: str | CellSpec | dict) -> CellSpec:
    """A CellSpec from a preset name, a spec, or a dict of flags on top of the preset `preset` or `name` (a
    config's `cell.name`, which `cell=<preset>` sets; default vanilla). `label` is only a name for records."""
    if isinstance(cell, CellSpec):
        return cell
    if isinstance(cell, str):
        if cell not in PRESETS:
            raise ValueError(f"unknown cell {cell!r}; choose one of: {', '.join(PRESETS)}")
        return PRESETS[cell]
    flags = dict(cell)
    name, preset = flags.pop("name", None), flags.pop("preset", None)
    flags.pop("label", None)
    base = get_spec(preset or (name if name in PRESETS else "vanilla"))
    known = {f.name for f in dataclasses.fields(CellSpec)}
    unknown = sorted(set(flags) - known)
    if unknown:
        raise ValueError(f"unknown cell flag {unknown[0]!r}; known flags: {', '.join(sorted(known))}")
    return dataclasses.replace(base, **flags)


def cell_label(cell: str | dict) -> str:
    """The cell's name in records and dashboards: its `label` when the config gives one, else the preset its
    flags equal, else a description of the flags (`CellSpec.name`). A `name` that is no preset still works
    as a label for one release, with a deprecation warning (`cell.name` names the preset; use `cell.label`)."""
    if isinstance(cell, str):
        return cell
    label, name = cell.get("label"), cell.get("name")
    if not label and name and name not in PRESETS:
        warnings.warn(f"cell.name={name} is no preset: a free label is now cell.label={name} (cell.name names the "
                      "preset the flags start from; a label in cell.name goes in the next release)",
                      DeprecationWarning, stacklevel=2)
        label = name
    return label or get_spec(cell).name
