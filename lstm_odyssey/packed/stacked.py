"""The pack's fast forward: K trials stacked on a leading axis, each op over every trial at once (no vmap).

Every layer-direction runs through its family's fused `sequence_forward` / `sequence_backward` with the
trial axis (`backends.run_fused`: one batched matmul per step for all trials, the hand-written backward,
no autograd per step); the encoder, the input projections W x + b and the head are one `baddbmm` each
over the trials. Trial k computes what its own `SequenceModel` computes (tests/test_packed_model.py holds
it equal to that and to the vmap path): same lengths rule, same reversal of the backward direction, same
features for sequence tasks. Exact padding works as on the vmap path, since the math is the same.

Shapes: a pack's parameters carry K first (`PackedModel.params`); batches are (K, B, T, ...) per trial,
sequences inside the stack time-major (T, K, B, n), states (K, layers * directions, B, n).

Each trial's batch has its own padded length T_k, and the stack pads them all to the longest. The sweep does
not run those padded steps: `forward` orders the trials longest first (a permutation of every tensor's
trial axis, undone on the way out), and `recurrent` cuts time into segments where a prefix of the trials is
still running (`segments`), so trial k stops after its own T_k steps, as its single run does, or a little
later where one more cut would cost more than it saves (`cut_prices`). Measured on the Adam study's first
50 trials (`python -m benchmarks.study`, idle 2-core CPU): 1.93x trials per hour against one at a time, 1.72x
without the cuts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import backends
from ..layers import RecurrentLayer, reverse_padded
from ..models import SEQUENCE_TASKS, SequenceModel
from . import costs

Params = dict[str, Tensor]


def stacked_problem(template: SequenceModel, device: torch.device) -> str | None:
    """Why the stacked forward cannot run this pack's architecture (vmap then runs it), or None."""
    rnn = template.rnn
    problem = backends.why_not("fused", rnn.spec, device)
    if problem:
        return problem
    if rnn.dropout and rnn.num_layers > 1:
        return "dropout between layers (a trial's dropout mask would not be its single run's)"
    if not isinstance(template.encoder, (nn.Identity, nn.Linear, nn.Embedding)):
        return f"encoder {type(template.encoder).__name__} has no packed version"
    return None


def per_trial_linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """x_k W_k^T + b_k for every trial k in one baddbmm: x (K, ..., in), weight (K, out, in), bias (K, out)."""
    flat = torch.baddbmm(bias.unsqueeze(-2), x.reshape(x.shape[0], -1, x.shape[-1]), weight.mT)
    return flat.view(*x.shape[:-1], -1)


def reverse_trials(x: Tensor, lengths: Tensor | None) -> Tensor:
    """`layers.reverse_padded` for time-major K trials: x (T, K, B, n), lengths (K, B) or None."""
    if lengths is None:
        return x.flip(0)
    return reverse_padded(x.flatten(1, 2), lengths.flatten()).view_as(x)


def encode(encoder: nn.Module, params: Params, x: Tensor) -> Tensor:
    """The template's encoder for every trial: identity, a linear map, or an embedding of tokens (K, B, T)."""
    if isinstance(encoder, nn.Linear):
        return per_trial_linear(x, params["encoder.weight"], params["encoder.bias"])
    if isinstance(encoder, nn.Embedding):
        weight = params["encoder.weight"]
        trials = torch.arange(weight.shape[0], device=x.device).view(-1, *([1] * (x.dim() - 1)))
        return weight[trials, x]
    return x


# The price of a step of the sweep, in microseconds on one CPU thread (vanilla, batch 8, forward + backward),
# measured by `python -m benchmarks.cuts`: costs.json's `cuts` section (the measurements, the command, the
# machine). A cut pays once it saves a few dozen trial-steps.
_CUTS = costs.section("cuts")
STEP_SHARED_US = float(_CUTS["step_shared_us"])  # what every running trial's step shares
TRIAL_STEP_US = tuple(float(v) for v in _CUTS["trial_step_us"])  # a running trial's step: constant + per (hidden units)^2, at batch 8
SEGMENT_US = float(_CUTS["segment_us"])  # one more segment


def cut_prices(hidden_size: int, batch_size: int) -> tuple[float, float]:
    """(shared, segment): a step's shared cost and one segment's cost, in running-trial steps of this pack
    (hidden size, batch), the units `segments` prices in: a small trial's step is cheap, so a cut must save
    more of them than a large trial's."""
    trial = TRIAL_STEP_US[0] + TRIAL_STEP_US[1] * hidden_size**2 * batch_size / 8
    return STEP_SHARED_US / trial, SEGMENT_US / trial


def segments(steps: list[int], shared: float = 0.0, segment: float = 0.0) -> list[tuple[int, int, int]]:
    """How to cut the sweep of trials with `steps` own steps each, longest first: (start, stop, trials
    running), the running trials a prefix. The cheapest cut by a dynamic programme over the trials' stops,
    a segment costing (stop - start) * (shared + running) + segment: with `cut_prices`, a stop shared by few
    trials near the end is not worth a cut of its own."""
    if any(a < b for a, b in zip(steps, steps[1:])):
        raise ValueError(f"segments takes the trials longest first, got steps {steps}")
    stops = sorted(set(steps))  # candidate segment ends; the last is the longest trial's
    best = {0: (0.0, -1)}  # stop -> (cheapest cost of the steps before it, previous stop)
    for j, stop in enumerate(stops):
        choices = []
        for start in [0, *stops[:j]]:
            running = sum(1 for n in steps if n > start)
            choices.append((best[start][0] + (stop - start) * (shared + running) + segment, start))
        best[stop] = min(choices)
    cuts, stop = [], stops[-1]
    while stop:
        start = best[stop][1]
        cuts.append((start, stop, sum(1 for n in steps if n > start)))
        stop = start
    return cuts[::-1]


def recurrent(rnn: RecurrentLayer, params: Params, x: Tensor, lengths: Tensor | None, state: list[Tensor] | None,
              steps: list[int] | None = None):
    """`RecurrentLayer._forward_layers` on the fused backend for K trials: x (K, B, T, M), lengths (K, B)
    or None, state parts (K, L*D, B, n) or None, `steps` each trial's own padded length, longest first
    (None: all run T steps). Trial k stops at the end of the segment it ends in (`segments`; at steps[k]
    where every length is a cut): its outputs beyond are zero, its final state is the one there (with a
    mask, the one at each sequence's own last step, wherever the cut). Returns (outputs (T, K, B, D*N),
    final state parts)."""
    family, spec = rnn.family, rnn.spec
    trials, batch, total = x.shape[:3]
    cuts = segments(steps, *cut_prices(rnn.hidden_size, batch)) if steps is not None else [(0, total, trials)]
    valid = None
    if lengths is not None:
        lengths = lengths.cpu()  # as RecurrentLayer keeps them (reverse_padded builds its index on the CPU)
        valid = (torch.arange(total)[:, None, None] < lengths).unsqueeze(-1).to(x.device)
    if state is None:
        state = [x.new_zeros((trials, rnn.num_layers * rnn.num_directions, batch, w)) for w in family.state_sizes(spec, rnn.hidden_size)]
    finals: list[list[Tensor]] = [[] for _ in state]
    layer_input = x.movedim(2, 0)
    for layer in range(rnn.num_layers):
        outputs = []
        for direction, suffix in enumerate(rnn._suffixes(layer)):
            index = layer * rnn.num_directions + direction
            inp = layer_input if direction == 0 else reverse_trials(layer_input, lengths)
            own = {name: params[f"{name}{suffix}"] for name in rnn._parameter_names}
            weights = [w.unsqueeze(-2) if w is not None and w.dim() == 2 else w for w in family.recurrent_weights(own)]
            carried = [s[:, index] for s in state]
            pieces, ends = [], [[] for _ in state]  # outputs per segment; final states of the trials that stop
            for j, (start, stop, running) in enumerate(cuts):
                # time-major and contiguous: a step's slice (K, B, kN) is then one block, which baddbmm_ runs
                # as one batched gemm (on a strided slice the CPU kernel loops over the trials)
                xs = inp[start:stop, :running].movedim(0, 2)
                xp = per_trial_linear(xs, own["weight_ih"][:running], own["bias"][:running]).movedim(2, 0).contiguous()
                mask = None if valid is None else valid[start:stop, :running]
                out, carried = backends.run_fused(spec, "fused", xp, mask, [s[:running] for s in carried],
                                                  [None if w is None else w[:running] for w in weights])
                pieces.append(F.pad(out, (0, 0, 0, 0, 0, trials - running)))
                after = cuts[j + 1][2] if j + 1 < len(cuts) else 0
                for acc, f in zip(ends, carried):
                    acc.append(f[after:])
            out = torch.cat(pieces) if len(pieces) > 1 else pieces[0]
            outputs.append(out if direction == 0 else reverse_trials(out, lengths))
            for acc, parts in zip(finals, ends):
                acc.append(torch.cat(parts[::-1]) if len(parts) > 1 else parts[0])
        layer_input = torch.cat(outputs, dim=-1) if len(outputs) > 1 else outputs[0]
    return layer_input, [torch.stack(f, dim=1) for f in finals]


def forward(template: SequenceModel, params: Params, x: Tensor, lengths: Tensor | None, state=None):
    """`SequenceModel.forward` of every trial: x (K, B, T, ...) and lengths (K, B) per trial, state as the
    model takes it with K first. Returns (predictions (K, B, out) or (K, B, T, out), final states)."""
    rnn = template.rnn
    steps = None if lengths is None else lengths.amax(dim=1).tolist()  # each trial's own padded length
    if steps is not None and steps != sorted(steps, reverse=True):
        return longest_first(template, params, x, lengths, state, steps)
    if template.task_type not in SEQUENCE_TASKS and not rnn.bidirectional:
        lengths = None  # as SequenceModel.forward: padding follows each sequence
    parts = None if state is None else [state] if isinstance(state, Tensor) else list(state)
    inputs = encode(template.encoder, params, x)
    out, finals = recurrent(rnn, {n.removeprefix("rnn."): p for n, p in params.items() if n.startswith("rnn.")}, inputs, lengths, parts, steps)
    final = rnn.family.join_state(finals)
    if template.task_type in SEQUENCE_TASKS:
        features = torch.cat(list(finals[0][:, -rnn.num_directions :].unbind(1)), dim=-1)
    else:
        features = out.movedim(0, 2)
    return per_trial_linear(features, params["head.weight"], params["head.bias"]), final


def longest_first(template: SequenceModel, params: Params, x: Tensor, lengths: Tensor, state, steps: list[int]):
    """`forward` with the trials reordered longest first (so that the trials still running are a prefix, which
    `recurrent` cuts by), the predictions and final states put back in the pack's order. The reordering is
    an `index_select` of every parameter, so autograd puts the gradients back too."""
    order = sorted(range(len(steps)), key=lambda k: -steps[k])  # stable: equal lengths keep their order
    perm = torch.tensor(order, device=x.device)
    back = torch.empty_like(perm)
    back[perm] = torch.arange(len(order), device=perm.device)

    def take(t: Tensor | tuple | None, index: Tensor):
        return None if t is None else t[index] if isinstance(t, Tensor) else type(t)(part[index] for part in t)

    params = {name: p.index_select(0, perm) for name, p in params.items()}
    prediction, final = forward(template, params, x[perm], lengths[perm.to(lengths.device)], take(state, perm))
    return prediction[back], take(final, back)
