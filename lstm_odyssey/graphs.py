"""The ``graph`` backend: a family's fused sequence functions with each sequence's forward and backward
captured as CUDA graphs the second time a shape is met (bounded LRU cache), so that a sequence's
hundreds of per-step launches cost one launch. The first call of a shape pays Triton's compilation
(cached on disk across processes) and the capture. Tested equal to the loop on a GPU."""

from __future__ import annotations

import collections

import torch

from .cells import FAMILIES, ops


class _Captured:
    """A sequence's forward and backward captured as CUDA graphs for one shape.

    The graphs read the weights in place (their addresses are part of the cache key) and read the
    input projection, states, mask, saved activations and incoming gradients from static buffers that
    each call fills; results are cloned out, so two forwards before a backward stay independent."""

    def __init__(self, spec, xp, states, weights, mask) -> None:
        self.spec = spec
        self.xp = xp.clone()
        self.states = [s.clone() for s in states]
        self.weights = weights  # the live parameters: their storage is updated in place by optimisers
        self.mask = mask.clone() if mask is not None else None
        self.backward_graph = None
        fn = FAMILIES[spec.family].sequence_forward
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.no_grad():  # warm-up before capture (allocator, cuBLAS)
            fn(spec, self.xp, self.states, weights, self.mask)
        torch.cuda.current_stream().wait_stream(stream)
        self.forward_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.forward_graph), torch.no_grad():
            self.outs, self.saved = fn(spec, self.xp, self.states, weights, self.mask)

    def forward(self, xp, states, mask):
        self.xp.copy_(xp)
        for static, s in zip(self.states, states):
            static.copy_(s)
        if mask is not None:
            self.mask.copy_(mask)
        self.forward_graph.replay()
        return [o.clone() for o in self.outs], {k: v.clone() for k, v in self.saved.items()}

    def backward(self, saved, grads):
        if self.backward_graph is None:
            self._capture_backward(grads)
        for k, v in saved.items():
            self.saved[k].copy_(v)
        for static, g in zip(self.grads, grads):
            if static is not None:
                static.copy_(g)
        self.backward_graph.replay()
        dxp, dstates, dweights = self.grad_results
        clone = lambda t: t.clone() if t is not None else None  # noqa: E731
        return dxp.clone(), [clone(d) for d in dstates], [clone(d) for d in dweights]

    def _capture_backward(self, grads):
        fn = FAMILIES[self.spec.family].sequence_backward
        self.grads = [g.clone() if g is not None else None for g in grads]
        self.grad_pattern = [g is not None for g in grads]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.no_grad():
            fn(self.spec, self.saved, list(self.grads), self.weights, self.mask)
        torch.cuda.current_stream().wait_stream(stream)
        self.backward_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.backward_graph), torch.no_grad():
            self.grad_results = fn(self.spec, self.saved, list(self.grads), self.weights, self.mask)


class GraphRunner:
    """``graph`` backend: a bounded LRU cache of captured sequences per (cell, shapes, weights)."""

    def __init__(self, max_entries: int = 16) -> None:
        self.max_entries = max_entries
        self.cache: collections.OrderedDict = collections.OrderedDict()
        self.seen: collections.OrderedDict = collections.OrderedDict()  # shapes met once, not captured yet
        self.captures = 0

    @staticmethod
    def _key(spec, xp, states, weights, mask):
        def sig(t):
            return None if t is None else (tuple(t.shape), t.dtype, t.device, t.stride())

        ptrs = tuple(w.data_ptr() if w is not None else None for w in weights)
        return (spec, sig(xp), tuple(sig(s) for s in states), tuple(sig(w) for w in weights), ptrs, sig(mask))

    def sequence_forward(self, spec, xp, states, weights, mask):
        key = self._key(spec, xp, states, weights, mask)
        entry = self.cache.get(key)
        if entry is None and key not in self.seen:  # capture a shape when it comes back, not the first
            self.seen[key] = None  # time: a shape met once (a last short batch) costs no capture
            while len(self.seen) > 4 * self.max_entries:
                self.seen.popitem(last=False)
            return FAMILIES[spec.family].sequence_forward(spec, xp, states, weights, mask)
        if entry is None:
            with torch.cuda.device(xp.device):  # capture on the layer's device, not the current one
                entry = _Captured(spec, xp, states, weights, mask)
            self.captures += 1
            self.cache[key] = entry
            while len(self.cache) > self.max_entries:
                self.cache.popitem(last=False)
        self.cache.move_to_end(key)
        with torch.cuda.device(xp.device):
            outs, saved = entry.forward(xp, states, mask)
        saved["__entry__"] = entry  # carried to backward (not a tensor: kept on ctx, see _Fused)
        return outs, saved

    def sequence_backward(self, spec, saved, grads, weights, mask):
        entry = saved.pop("__entry__", None)
        if entry is None:
            return FAMILIES[spec.family].sequence_backward(spec, saved, grads, weights, mask)
        if entry.backward_graph is not None and [g is not None for g in grads] != entry.grad_pattern:
            return FAMILIES[spec.family].sequence_backward(spec, saved, grads, weights, mask)  # other outputs need grads
        with torch.cuda.device(entry.xp.device):
            return entry.backward(saved, grads)


_GRAPH_RUNNERS: dict[torch.device, GraphRunner] = {}


def graph_runner(device: torch.device) -> GraphRunner:
    """The process-wide graph cache of one CUDA device, holding at most the `graph_cache` setting in force
    (config key kernels.graph_cache; without a config LSTM_ODYSSEY_GRAPH_CACHE, default 16: cells/ops.py)."""
    if device.index is None:
        device = torch.device(device.type, torch.cuda.current_device())
    size = int(ops.kernel_setting("graph_cache"))
    if device not in _GRAPH_RUNNERS:
        _GRAPH_RUNNERS[device] = GraphRunner(size)
    runner = _GRAPH_RUNNERS[device]
    runner.max_entries = size  # a smaller size takes effect as the next capture evicts the oldest
    return runner
