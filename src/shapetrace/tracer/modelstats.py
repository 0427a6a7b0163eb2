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
from .values import dtype_name

__all__ = ["Stats", "model_stats"]

Stats = tuple[int, int, int, int]  # params (subtree), own params, trainable params (subtree), buffer elements


class _Tensors:
    """Every module's own parameter and buffer counts, each tensor's size, and the model's totals, in one pass.

    Part of every trace's fixed cost, so written as plain loops (no generator or helper call per tensor),
    reading each tensor's size, dtype and grad flag once. What only a model with shared tensors or modules
    needs (registration counts, each module's tensor objects) is left to ``_shared_stats`` and
    ``_shared_params``, which walk the modules again."""

    def __init__(self, index: ModuleIndex) -> None:
        self.own: list[tuple[int, int, int]] = []  # by slot: own params, own trainable params, own buffer elements
        self.numel: dict[int, int] = {}  # id(tensor) -> elements, each parameter and buffer once
        self.param_dtypes: dict[str, int] = {}  # parameter bytes by dtype name, each parameter once
        shared = False
        own, numel, dtypes = self.own, self.numel, self.param_dtypes
        params = trainable = buffers = param_bytes = buffer_bytes = 0
        kinds: dict[torch.dtype, tuple[str, int]] = {}  # the model's few dtypes: name and bytes per element
        for m, names in zip(index.modules, index.names):
            if len(names) > 1:
                shared = True
            own_p = own_t = own_b = 0
            for p in m._parameters.values():
                if p is None:
                    continue
                k = id(p)
                n = numel.get(k)
                grad = p.requires_grad
                if n is None:
                    try:
                        n = p.numel()
                    except (RuntimeError, ValueError):  # an uninitialised lazy parameter
                        n = 0
                    numel[k] = n
                    params += n
                    dtype = p.dtype
                    kind = kinds.get(dtype)
                    if kind is None:
                        kind = kinds[dtype] = (dtype_name(dtype), dtype.itemsize)
                    nbytes = n * kind[1]
                    param_bytes += nbytes
                    dtypes[kind[0]] = dtypes.get(kind[0], 0) + nbytes
                    if grad:
                        trainable += n
                else:
                    shared = True
                own_p += n
                if grad:
                    own_t += n
            for b in m._buffers.values():
                if b is None:
                    continue
                k = id(b)
                n = numel.get(k)
                if n is None:
                    try:
                        n = b.numel()
                    except (RuntimeError, ValueError):  # an uninitialised lazy buffer
                        n = 0
                    numel[k] = n
                    buffers += n
                    dtype = b.dtype
                    kind = kinds.get(dtype)
                    if kind is None:
                        kind = kinds[dtype] = (dtype_name(dtype), dtype.itemsize)
                    buffer_bytes += n * kind[1]
                else:
                    shared = True
                own_b += n
            own.append((own_p, own_t, own_b))
        self.totals = [params, trainable, buffers, param_bytes, buffer_bytes]
        self.shared = shared


def model_stats(index: ModuleIndex) -> tuple[list[Stats], ModelInfo]:
    """``Stats`` of every module of ``index`` (by slot) and the model's totals."""
    tensors = _Tensors(index)
    return _module_stats(index, tensors), _model_info(index, tensors)


def _module_stats(index: ModuleIndex, tensors: _Tensors) -> list[Stats]:
    slot_of = index.slot_of
    own = tensors.own
    out: list[Stats | None] = [None] * len(index)
    if not tensors.shared:
        # A tree without shared tensors: a module's counts are its own plus its children's.
        for slot in range(len(index) - 1, -1, -1):  # pre-order: children come after parents
            params, trainable, bufs = own[slot]
            for c in index.modules[slot]._modules.values():
                if c is not None:
                    child_slot = slot_of.get(id(c))
                    if child_slot is None:  # put in by the forward behind torch's back: not indexed
                        return _shared_stats(index, tensors)
                    child = out[child_slot]
                    if child is None:  # a module registered inside itself: not a tree after all
                        return _shared_stats(index, tensors)
                    params, trainable, bufs = params + child[0], trainable + child[2], bufs + child[3]
            out[slot] = (params, own[slot][0], trainable, bufs)
        return out  # type: ignore[return-value]
    return _shared_stats(index, tensors)


def _shared_stats(index: ModuleIndex, tensors: _Tensors) -> list[Stats]:
    """``_module_stats`` where tensors or modules are registered more than once: each counted once per
    subtree, through sets of tensor ids. A child that is not in the index (one the forward wrote into a
    module's ``_modules`` directly) is left out of its parent's counts."""
    numel, slot_of, own = tensors.numel, index.slot_of, tensors.own
    out: list[Stats | None] = [None] * len(index)
    children = [[slot_of[id(c)] for c in m._modules.values() if c is not None and id(c) in slot_of]
                for m in index.modules]
    subtree: dict[int, tuple[dict[int, torch.Tensor], set[int]]] = {}

    def visit(slot: int) -> tuple[dict[int, torch.Tensor], set[int]]:
        if slot in subtree:
            return subtree[slot]
        m = index.modules[slot]
        params = {id(p): p for p in m._parameters.values() if p is not None}
        bufs = {id(b) for b in m._buffers.values() if b is not None}
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
        modules=len(index) - len(index.wrappers),  # a compiled child's wrapper is not one of the model's
        shared_params=_shared_params(index, tensors),
        param_dtypes=dict(sorted(tensors.param_dtypes.items())),
    )


def _shared_params(index: ModuleIndex, tensors: _Tensors) -> int:
    """Elements of the parameters registered more than once (twice in one module or in a module that has
    several names): 0 without looking again when nothing is shared."""
    if not tensors.shared:
        return 0
    registrations: dict[int, int] = {}
    for m, names in zip(index.modules, index.names):
        for p in m._parameters.values():
            if p is not None:
                registrations[id(p)] = registrations.get(id(p), 0) + len(names)
    return sum(tensors.numel[k] for k, n in registrations.items() if n > 1)
