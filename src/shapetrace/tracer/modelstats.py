"""Parameter and buffer counts per module and for the whole model, from a ``ModuleIndex`` after the forward.

``model_stats`` gives each module object its parameter count (its children's included, each tensor object
once), its own parameters, its trainable parameters and its buffer elements, and the model's totals. Both are computed once per trace, after the forward, from the modules' registries: no module is
called and nothing is copied. The common case (no tensor or module registered twice) is plain sums over the
tree; shared tensors fall back to sets of tensor ids, so a tensor shared by two children counts once in
their parent.
"""

from __future__ import annotations

import torch

from .engine import ModuleIndex
from .records import ModelInfo

__all__ = ["Stats", "model_stats"]

Stats = tuple[int, int, int, int]  # params (subtree), own params, trainable params (subtree), buffer elements


def _numel(t: torch.Tensor) -> int:
    try:
        return t.numel()
    except (RuntimeError, ValueError):  # an uninitialised lazy parameter
        return 0


class _Tensors:
    """Every module's own parameters and buffers, their sizes, and the model's totals, in one pass."""

    def __init__(self, index: ModuleIndex) -> None:
        self.params: list[list[torch.Tensor]] = []
        self.buffers: list[list[torch.Tensor]] = []
        self.registrations: dict[int, int] = {}  # id(param) -> registrations (a shared module's count each)
        self.numel: dict[int, int] = {}
        self.totals = [0, 0, 0, 0, 0]  # params, trainable, buffer elements, param bytes, buffer bytes
        self.param_dtypes: dict[str, int] = {}  # parameter bytes by dtype name, each parameter once
        shared = any(len(n) > 1 for n in index.names)
        numel, registrations, totals = self.numel, self.registrations, self.totals
        for m, names in zip(index.modules, index.names):
            ps = [p for p in m._parameters.values() if p is not None]
            bs = [b for b in m._buffers.values() if b is not None]
            self.params.append(ps)
            self.buffers.append(bs)
            for p in ps:
                k = id(p)
                if k in numel:
                    shared = True
                else:
                    n = numel[k] = _numel(p)
                    totals[0] += n
                    totals[1] += n if p.requires_grad else 0
                    nbytes = n * p.element_size() if n else 0
                    totals[3] += nbytes
                    dtype = str(p.dtype).replace("torch.", "")
                    self.param_dtypes[dtype] = self.param_dtypes.get(dtype, 0) + nbytes
                registrations[k] = registrations.get(k, 0) + len(names)
            for b in bs:
                k = id(b)
                if k in numel:
                    shared = True
                else:
                    n = numel[k] = _numel(b)
                    totals[2] += n
                    totals[4] += n * b.element_size()
        self.shared = shared


def model_stats(index: ModuleIndex) -> tuple[list[Stats], ModelInfo]:
    """``Stats`` of every module of ``index`` (by slot) and the model's totals."""
    tensors = _Tensors(index)
    return _module_stats(index, tensors), _model_info(index, tensors)


def _module_stats(index: ModuleIndex, tensors: _Tensors) -> list[Stats]:
    numel = tensors.numel
    slot_of = index.slot_of
    children = [[slot_of[id(c)] for c in m._modules.values() if c is not None and id(c) in slot_of]
                for m in index.modules]
    own = [(sum(numel[id(p)] for p in ps), sum(numel[id(p)] for p in ps if p.requires_grad),
            sum(numel[id(b)] for b in bs)) for ps, bs in zip(tensors.params, tensors.buffers)]
    out: list[Stats | None] = [None] * len(index)
    if not tensors.shared:
        # A tree without shared tensors: a module's counts are its own plus its children's.
        for slot in range(len(index) - 1, -1, -1):  # named_modules is pre-order: children come after parents
            params, trainable, bufs = own[slot]
            for c in children[slot]:
                cp, _, ct, cb = out[c]  # type: ignore[misc]
                params, trainable, bufs = params + cp, trainable + ct, bufs + cb
            out[slot] = (params, own[slot][0], trainable, bufs)
        return out  # type: ignore[return-value]
    subtree: dict[int, tuple[dict[int, torch.Tensor], set[int]]] = {}

    def visit(slot: int) -> tuple[dict[int, torch.Tensor], set[int]]:
        if slot in subtree:
            return subtree[slot]
        params = {id(p): p for p in tensors.params[slot]}
        bufs = {id(b) for b in tensors.buffers[slot]}
        subtree[slot] = (params, bufs)  # a module containing itself stops here
        for c in children[slot]:
            cp, cb = visit(c)
            params.update(cp)
            bufs |= cb
        out[slot] = (sum(numel[k] for k in params), own[slot][0],
                     sum(numel[k] for k, p in params.items() if p.requires_grad), sum(numel[k] for k in bufs))
        return params, bufs

    for slot in range(len(index)):
        visit(slot)
    return out  # type: ignore[return-value]


def _model_info(index: ModuleIndex, tensors: _Tensors) -> ModelInfo:
    """Totals for the whole model: each tensor object counted once, however often it is registered."""
    params, trainable, buffers, param_bytes, buffer_bytes = tensors.totals
    return ModelInfo(
        cls=type(index.model).__name__,
        params=params,
        trainable_params=trainable,
        buffers=buffers,
        param_bytes=param_bytes,
        buffer_bytes=buffer_bytes,
        modules=len(index),
        shared_params=sum(tensors.numel[k] for k, n in tensors.registrations.items() if n > 1),
        param_dtypes=dict(sorted(tensors.param_dtypes.items())),
    )
