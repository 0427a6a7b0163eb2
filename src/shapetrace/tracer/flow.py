"""Tensor identities, data-flow edges and functional ops: the data flow of one trace, in one place.

Every tensor the tracer sees gets a trace-local id (``tid``). The map from live tensor to ``tid`` holds weak
references, so it neither keeps activations alive nor confuses a new tensor with a freed one whose
``id()`` Python reused. A tensor changed in place is given a new ``tid`` by whatever changed it, so an
edge always names the value that flowed, not just the storage.

``DataFlow`` owns the map, the edges, the recorded ``Op``s, the event clock that orders calls and ops, and
the stack of open calls that side inputs are checked against. The shapes probe (module calls) and the ops
probe (functional ops) both feed it through its methods; neither touches the other's state.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import Any

import torch

from .records import Call, Edge, Op, TensorMeta, iter_tensors
from .values import describe, iter_live_tensors, tensor_meta

_Tensor = torch.Tensor


class TensorIds:
    """Maps live tensors to ``tid``s and remembers who produced each ``tid`` and when."""

    def __init__(self) -> None:
        self._by_id: dict[int, tuple[weakref.ref, int]] = {}
        self.producer: dict[int, str] = {}  # tid -> node name ("input:0", "call:3", "op:7")
        self.produced_at: dict[int, int] = {}  # tid -> event order of the producer
        self._next = 0

    def lookup(self, t: torch.Tensor) -> int | None:
        entry = self._by_id.get(id(t))
        if entry is None or entry[0]() is not t:
            return None
        return entry[1]

    def new(self, t: torch.Tensor, producer: str | None, order: int) -> int:
        """Give ``t`` a fresh ``tid`` produced by ``producer`` at event ``order``.

        The entry of a tensor that dies stays until its ``id()`` is reused (``lookup`` then sees a dead
        reference and says the new tensor is unknown): a map of one trace, dropped with it."""
        tid = self._next
        self._next += 1
        try:
            self._by_id[id(t)] = (weakref.ref(t), tid)
        except TypeError:  # a tensor type without weak references: track nothing for it
            return tid
        if producer is not None:
            self.producer[tid] = producer
            self.produced_at[tid] = order
        return tid

    def produced_since(self, t: torch.Tensor, since: int, producer: str, order: int) -> int:
        """``t``'s ``tid`` if something produced it at or after event ``since``; otherwise (made where no
        hook saw it, passed through unchanged, or changed in place) a fresh ``tid`` produced by ``producer``."""
        tid = self.lookup(t)
        if tid is None or self.produced_at.get(tid, -1) < since:
            return self.new(t, producer, order)
        return tid

    def get_or_new(self, t: torch.Tensor, order: int) -> int:
        """The tensor's ``tid``, or a new one with no known producer (a parameter, a constant)."""
        tid = self.lookup(t)
        return tid if tid is not None else self.new(t, None, order)


class EdgeSet:
    """Collects data-flow edges once each, in the order they were found."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str, int]] = set()
        self.edges: list[Edge] = []

    def add(self, src: str, dst: str, meta: TensorMeta, side: bool = False) -> None:
        key = (src, dst, meta.tid if meta.tid is not None else -1)
        if meta.tid is None or key in self._seen or src == dst:
            return
        self._seen.add(key)
        self.edges.append(Edge(src, dst, meta.tid, meta.shape, meta.dtype, side))


class _OpenCall:
    """A call that has started and not yet ended, as data flow sees it."""

    __slots__ = ("call", "input_tids", "is_leaf", "side_tids")

    def __init__(self, call: Call, is_leaf: bool, input_tids: set[int]) -> None:
        self.call = call
        self.is_leaf = is_leaf
        self.input_tids = input_tids
        self.side_tids: set[int] = set()


class DataFlow:
    """Tensor ids, edges, ops and the event clock of one trace (see the module docstring)."""

    def __init__(self) -> None:
        self.ids = TensorIds()
        self.edges = EdgeSet()
        self.ops: list[Op] = []
        self.order = 0
        self._open: list[_OpenCall] = []
        self.on_op: Callable[[Op], None] | None = None  # told of each op recorded (the lines probe)

    def tick(self) -> int:
        """The next position in the trace's event order (shared by call starts, call ends and ops)."""
        self.order += 1
        return self.order

    # ---- module calls (the shapes probe) --------------------------------------------------------------
    def mark_inputs(self, value: Any, node: str, order: int) -> None:
        """Tensors entering the top-level call: the trace's inputs (unless something traced made them)."""
        ids = self.ids
        for t in iter_live_tensors(value):
            tid = ids.lookup(t)
            if tid is None or ids.producer.get(tid) is None:
                ids.new(t, node, order)

    def describe_in(self, value: tuple | dict, order: int, metas: list[TensorMeta]) -> Any:
        """A call's positional (a tuple: a list comes back) or keyword arguments as value trees, each tensor
        with its ``tid`` (a new one for a tensor not seen yet); every ``TensorMeta`` is appended to ``metas``.

        The hot path of every trace: plain tensors (nearly every argument) are read inline."""
        ids = self.ids
        if type(value) is tuple:
            out: Any = []
            by_id = ids._by_id
            for a in value:
                if type(a) is _Tensor:
                    entry = by_id.get(id(a))
                    tid = entry[1] if entry is not None and entry[0]() is a else ids.new(a, None, order)
                    meta = tensor_meta(a, tid)
                    out.append(meta)
                    if type(meta) is TensorMeta:
                        metas.append(meta)
                else:
                    tree = describe(a, lambda t: ids.get_or_new(t, order), 1)
                    out.append(tree)
                    metas.extend(m for _, m in iter_tensors(tree))
            return out
        tree = describe(dict(value), lambda t: ids.get_or_new(t, order))
        metas.extend(m for _, m in iter_tensors(tree))
        return tree

    def open_call(self, call: Call, is_leaf: bool, metas: list[TensorMeta]) -> None:
        """``call`` started with these input tensors: edges from their producers, side inputs of its parents."""
        self._open.append(_OpenCall(call, is_leaf, {m.tid for m in metas if m.tid is not None}))
        producer = self.ids.producer
        for meta in metas:
            if meta.tid in producer:
                self.consume(metas, f"call:{call.id}", skip_innermost=True)
                return

    def close_call(self, call: Call, output: Any, order: int) -> None:
        """``call`` returned ``output`` at event ``order``: it is no longer open, and its outputs get ids
        produced by the call."""
        if self._open and self._open[-1].call is call:
            self._open.pop()
        ids, node, start = self.ids, f"call:{call.id}", call.start
        if type(output) is _Tensor:
            call.outputs = tensor_meta(output, ids.produced_since(output, start, node, order))
            return
        call.outputs = describe(output, lambda t: ids.produced_since(t, start, node, order))

    def pop_call(self, call: Call) -> None:
        """Forget ``call`` as open (it ended, returning or raising)."""
        if self._open and self._open[-1].call is call:
            self._open.pop()

    @property
    def innermost(self) -> _OpenCall | None:
        return self._open[-1] if self._open else None

    def consume(self, metas: Iterable[TensorMeta], node: str, skip_innermost: bool = False) -> None:
        """Edges from each tensor's producer into ``node``, and side inputs of the open calls around it."""
        producer = self.ids.producer
        for meta in metas:
            src = producer.get(meta.tid)
            if src is not None:
                self.edges.add(src, node, meta)
                self.note_consumed(meta, skip_innermost)

    def note_consumed(self, meta: TensorMeta, skip_innermost: bool = False) -> None:
        """Record ``meta`` as a side input of every open call that uses it without having received it.

        A tensor is a side input of a call when it was produced before the call started and was not among
        the call's arguments: fastai's U-Net blocks read encoder activations stored by hooks this way.
        """
        tid = meta.tid
        at = self.ids.produced_at.get(tid)
        if at is None:
            return
        stack = self._open
        src = self.ids.producer[tid]
        for i in range(len(stack) - (2 if skip_innermost else 1), -1, -1):
            open_ = stack[i]
            call = open_.call
            if at >= call.start:
                break  # produced inside this call, so inside every enclosing call too
            if tid in open_.input_tids or tid in open_.side_tids:
                continue
            open_.side_tids.add(tid)
            call.side_inputs.append(meta)
            self.edges.add(src, f"call:{call.id}", meta, side=True)

    def output_edges(self, outputs: Any) -> None:
        """Edges from the producers of the model's outputs to the ``output:`` nodes."""
        for path, meta in iter_tensors(outputs):
            src = self.ids.producer.get(meta.tid)
            if src is not None:
                self.edges.add(src, f"output:{path or 'out'}", meta)

    # ---- functional ops (the ops probe) ---------------------------------------------------------------
    def record_op(self, name: str, args: Any, out: Any, inplace_target: torch.Tensor | None) -> None:
        """Record one functional op run in a container's forward code (or outside every module)."""
        ids = self.ids
        order = self.tick()
        oid = len(self.ops)
        node = f"op:{oid}"
        inner = self.innermost
        inputs = describe(args, lambda t: ids.get_or_new(t, order))
        self.consume((meta for _, meta in iter_tensors(inputs)), node)
        if inplace_target is not None:
            ids.new(inplace_target, node, order)

        def tid_of(t: torch.Tensor) -> int:
            return ids.produced_since(t, order, node, order)

        outputs = describe(out, tid_of) if out is not None else (
            describe(inplace_target, tid_of) if inplace_target is not None else None)
        self.ops.append(Op(oid, name, inner.call.id if inner else None, order, inputs, outputs))
        if self.on_op is not None:
            self.on_op(self.ops[-1])

    def note_leaf_op(self, args: Any, inplace_target: torch.Tensor | None) -> None:
        """An op inside a leaf module: look only for side inputs among the tensors it touches, and give a
        tensor the leaf was handed and changes in place a new id produced by the leaf."""
        ids = self.ids
        for t in iter_live_tensors(args):
            tid = ids.lookup(t)
            if tid is not None and tid in ids.produced_at:
                self.note_consumed(describe(t, lambda _t, tid=tid: tid))
        inner = self.innermost
        if inplace_target is not None and inner is not None:
            tid = ids.lookup(inplace_target)
            if tid is not None and ids.produced_at.get(tid, -1) < inner.call.start:
                ids.new(inplace_target, f"call:{inner.call.id}", self.order)
