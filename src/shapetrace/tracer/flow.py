"""Tensor identities, data-flow edges and functional ops: the data flow of one trace, in one place.

Every tensor the tracer sees gets a trace-local id (``tid``). The map from live tensor to ``tid`` holds weak
references, so it neither keeps activations alive nor confuses a new tensor with a freed one whose
``id()`` Python reused. A tensor changed in place is given a new ``tid`` by whatever changed it (where no
op was recorded, by the call that returned it changed: its version counter differs from the one its ``tid``
was given at), so an edge always names the value that flowed, not just the storage.

``DataFlow`` owns the map, the recorded ``Op``s, the event clock that orders calls and ops, and, after
the forward, the edges. Only what must be known while the forward runs is done then: giving tensors their
ids (which depends on the live objects) and recording ops. Edges and side inputs are derived afterwards
(``connect``) by replaying the recorded events in order, which keeps the per-call work in the hooks small.
The shapes probe (module calls) and the ops probe (functional ops) both feed it through its methods;
neither touches the other's state.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from . import bulk
from .records import Call, Edge, Op, TensorMeta, iter_tensors
from .values import describe, iter_live_tensors, tensor_meta

_Tensor = torch.Tensor


class TensorIds:
    """Maps live tensors to ``tid``s and remembers who produced each ``tid`` and when.

    ``by_id`` (``id(tensor) -> (weak reference, tid, version)``: the version counter when it got that tid) and
    ``produced_at`` are read directly by the shapes probe's hot path; everything else goes through the
    methods."""

    def __init__(self) -> None:
        self.by_id: dict[int, tuple[weakref.ref, int, int | None]] = {}
        self.producer: dict[int, str] = {}  # tid -> node name ("input:0", "call:3", "op:7")
        self.produced_at: dict[int, int] = {}  # tid -> event order of the producer
        # tid -> the first tid of the same unchanged tensor (a call returned a tensor it did not make or change)
        self.same: dict[int, int] = {}
        self._next = 0

    def lookup(self, t: torch.Tensor) -> int | None:
        entry = self.by_id.get(id(t))
        if entry is None or entry[0]() is not t:
            return None
        return entry[1]

    def new(self, t: torch.Tensor, producer: str | None, order: int) -> int:
        """Give ``t`` a fresh ``tid`` produced by ``producer`` at event ``order``.

        The entry of a tensor that dies stays until its ``id()`` is reused (``lookup`` then sees a dead
        reference and says the new tensor is unknown): a map of one trace, dropped with it."""
        tid = self._next
        self._next += 1
        by_id, key = self.by_id, id(t)
        entry = by_id.get(key)
        try:
            version = t._version
        except RuntimeError:  # an inference tensor keeps no version counter
            version = None
        try:
            by_id[key] = (weakref.ref(t), tid, version)
        except TypeError:  # a tensor type without weak references: track nothing for it
            return tid
        if entry is not None and version is not None and entry[2] == version and entry[0]() is t:
            self.same[tid] = self.same.get(entry[1], entry[1])  # the same tensor, unchanged, under a new tid
        if producer is not None:
            self.producer[tid] = producer
            self.produced_at[tid] = order
        return tid

    def produced_since(self, t: torch.Tensor, since: int, producer: str, order: int) -> int:
        """``t``'s ``tid`` if something produced it at or after event ``since`` and it has not changed in place
        since it got that ``tid``; otherwise (made where no hook saw it, passed through unchanged, or changed in
        place where nothing recorded it) a fresh ``tid`` produced by ``producer``."""
        entry = self.by_id.get(id(t))
        if (entry is None or entry[0]() is not t or self.produced_at.get(entry[1], -1) < since
                or (entry[2] is not None and t._version != entry[2])):
            return self.new(t, producer, order)
        return entry[1]

    def get_or_new(self, t: torch.Tensor, order: int) -> int:
        """The tensor's ``tid``, or a new one with no known producer (a parameter, a constant)."""
        tid = self.lookup(t)
        return tid if tid is not None else self.new(t, None, order)


def _written(target: torch.Tensor) -> list[torch.Tensor]:
    """The tensors an in-place op on ``target`` changes, as far as the data flow goes: ``target``, and the
    tensor it is a view of (``y[:, :2].mul_(2)`` changes ``y``: what reads ``y`` next comes from the op, whose
    outputs list ``y``'s new value after the one it returned, so the edge from the op names a value it made)."""
    base = target._base
    return [target] if base is None else [target, base]


class EdgeSet:
    """Collects data-flow edges once each, in the order they were found."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str, int]] = set()  # (src, dst, tid) of the edges ``add`` made
        self.edges: list[Edge] = []

    def add(self, src: str, dst: str, meta: TensorMeta, side: bool = False) -> None:
        key = (src, dst, meta.tid if meta.tid is not None else -1)
        if meta.tid is None or key in self.seen or src == dst:
            return
        self.seen.add(key)
        self.edges.append(bulk.edge(src, dst, meta.tid, meta.shape, meta.dtype, side))


class DataFlow:
    """Tensor ids, ops, the event clock and (after the forward) the edges of one trace (see the module
    docstring)."""

    def __init__(self) -> None:
        self.ids = TensorIds()
        self.edges = EdgeSet()
        self.ops: list[Op] = []
        # Tensors a leaf module's own ops touched: (event order, call id, meta), checked for side inputs.
        self.leaf_uses: list[tuple[int, int, TensorMeta]] = []
        self.order = 0
        self.starts: list[int] = []  # by call id: the event order at the call's start (the shapes probe's)
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

    def describe_in(self, value: Any, order: int, depth: int = 0) -> Any:
        """A call argument other than a plain tensor (``depth`` 1), or the keyword arguments as a dict
        (``depth`` 0), as a value tree, each tensor with its ``tid`` (a new one for a tensor not seen yet)."""
        ids = self.ids
        return describe(value, lambda t: ids.get_or_new(t, order), depth)

    def describe_out(self, output: Any, since: int, node: str, order: int) -> Any:
        """A call's output as a value tree: tensors made inside the call (at or after event ``since``) keep
        their ids, the others are given new ones produced by ``node``."""
        ids = self.ids
        return describe(output, lambda t: ids.produced_since(t, since, node, order))

    # ---- functional ops (the ops probe) ---------------------------------------------------------------
    def record_op(self, name: str, args: Any, out: Any, inplace_target: torch.Tensor | None,
                  call: int | None) -> None:
        """Record one functional op run in the forward code of call ``call`` (``None``: outside every module)."""
        ids = self.ids
        order = self.tick()
        oid = len(self.ops)
        node = f"op:{oid}"
        inputs = describe(args, lambda t: ids.get_or_new(t, order))
        written = _written(inplace_target) if inplace_target is not None else ()
        for t in written:
            ids.new(t, node, order)

        def tid_of(t: torch.Tensor) -> int:
            return ids.produced_since(t, order, node, order)

        outputs = describe(out, tid_of) if out is not None else (
            describe(inplace_target, tid_of) if inplace_target is not None else None)
        if len(written) > 1:  # written through a view: the base's new value is this op's too (see ``_written``)
            outputs = [outputs, describe(written[1], tid_of)]
        self.ops.append(Op(oid, name, call, order, inputs, outputs))
        if self.on_op is not None:
            self.on_op(self.ops[-1])

    def note_leaf_op(self, args: Any, inplace_target: torch.Tensor | None, call: int) -> None:
        """An op inside leaf call ``call``: remember the tensors it touches that something traced produced
        (side-input candidates), and give a tensor the leaf was handed and changes in place a new id
        produced by the leaf."""
        ids = self.ids
        for t in iter_live_tensors(args):
            tid = ids.lookup(t)
            if tid is not None and tid in ids.produced_at:
                self.leaf_uses.append((self.order, call, tensor_meta(t, tid)))  # type: ignore[arg-type]
        if inplace_target is not None:
            for written in _written(inplace_target):
                tid = ids.lookup(written)
                if tid is not None and ids.produced_at.get(tid, -1) < self.starts[call]:
                    ids.new(written, f"call:{call}", self.order)

    # ---- after the forward ----------------------------------------------------------------------------
    def connect(self, calls: Sequence[Call]) -> None:
        """Edges and side inputs, found by replaying the forward's events in their order: each call's start
        (its arguments consumed), each op (its inputs consumed) and each tensor a leaf's own ops touched.

        An edge runs from a tensor's producer to each call or op that consumed it. A tensor is a side input
        of a call when the call (or something inside it) used it, it was produced before the call started,
        and it was not among the call's arguments: fastai's U-Net blocks read encoder activations stored by
        hooks this way."""
        replay = _Replay(self, calls)
        ops, uses = self.ops, self.leaf_uses
        o = u = 0
        n_ops, n_uses = len(ops), len(uses)
        for call in [*calls, None]:
            start = call.start if call is not None else None
            # The ops and leaf uses before this call's start, in order (a use shares the order of the last
            # tick before it, so an op with the same order came first).
            while True:
                op_at = ops[o].order if o < n_ops else None
                use_at = uses[u][0] if u < n_uses else None
                if op_at is not None and (use_at is None or op_at <= use_at):
                    if start is not None and op_at >= start:
                        break
                    replay.op(ops[o])
                    o += 1
                elif use_at is not None:
                    if start is not None and use_at >= start:
                        break
                    _, call_id, meta = uses[u]
                    replay.leaf_use(call_id, meta)
                    u += 1
                else:
                    break
            if call is not None:
                replay.call(call)

    def output_edges(self, outputs: Any) -> None:
        """Edges from the producers of the model's outputs to the ``output:`` nodes."""
        for path, meta in iter_tensors(outputs):
            src = self.ids.producer.get(meta.tid)
            if src is not None:
                self.edges.add(src, f"output:{path or 'out'}", meta)


class _Replay:
    """``DataFlow.connect``'s state: the calls, the argument tids of the calls side inputs were checked
    against, and the side inputs found so far."""

    def __init__(self, flow: DataFlow, calls: Sequence[Call]) -> None:
        self.calls = calls
        self.edges = flow.edges
        self.producer = flow.ids.producer
        self.produced_at = flow.ids.produced_at
        self.arg_tids: dict[int, set[int]] = {}
        self.side_tids: dict[int, set[int]] = {}
        self.only_tid: dict[int, int | None] = {}  # call id -> the tid of its one tensor argument, if just one

    def call(self, call: Call) -> None:
        """A call started: its arguments are consumed by it (``consume``, inline: this runs once per call)."""
        inputs = call.inputs
        cid, parent = call.id, call.parent
        if not call.kwargs and len(inputs) == 1 and type(inputs[0]) is TensorMeta:
            metas = inputs  # the common case: one tensor
            self.only_tid[cid] = inputs[0].tid
        else:
            metas = _metas(call)
        only = self.only_tid.get(parent)  # type: ignore[arg-type]
        node = f"call:{cid}"
        producer, produced_at, edges = self.producer, self.produced_at, self.edges
        around = self.calls[parent].start if parent is not None else None
        # The edges into this call's node from its arguments are all made here, once per call: no other
        # edge can have the same (src, node, tid) key (side-input edges carry tids that are not arguments),
        # so only a tensor passed twice needs the check, and the keys need not go into ``edges.seen``.
        made: set[tuple[str, int]] | None = set() if len(metas) > 1 else None
        for meta in metas:
            src = producer.get(meta.tid)  # type: ignore[arg-type]
            if src is None:
                continue
            if made is None or (src, meta.tid) not in made:
                if made is not None:
                    made.add((src, meta.tid))  # type: ignore[arg-type]
                edges.edges.append(bulk.edge(src, node, meta.tid, meta.shape, meta.dtype, False))  # type: ignore[arg-type]
            # Made inside the parent (the common case: a sibling's output) cannot be a side input of it; nor
            # can the parent's own argument (the first child of a block), whose check from the parent up
            # was made when the parent started.
            if around is not None and produced_at[meta.tid] < around and meta.tid != only:  # type: ignore[index]
                self.side_input(meta, parent)  # type: ignore[arg-type]

    def op(self, op: Op) -> None:
        self.consume([m for _, m in iter_tensors(op.inputs)], f"op:{op.id}", op.call)

    def leaf_use(self, call: int, meta: TensorMeta) -> None:
        """A leaf call's own op touched ``meta``: a side input of the call if it was not an argument."""
        self.side_input(meta, call)

    def consume(self, metas: Iterable[TensorMeta], node: str, around: int | None) -> None:
        """Edges from each tensor's producer into ``node``; side inputs of the calls open around it
        (``around`` and its ancestors)."""
        producer = self.producer
        for meta in metas:
            src = producer.get(meta.tid)  # type: ignore[arg-type]
            if src is not None:
                self.edges.add(src, node, meta)
                if around is not None:
                    self.side_input(meta, around)

    def side_input(self, meta: TensorMeta, innermost: int) -> None:
        """Record ``meta`` as a side input of ``innermost`` and each of its ancestors that uses it without
        having received it (see ``DataFlow.connect``)."""
        tid = meta.tid
        at = self.produced_at.get(tid)  # type: ignore[arg-type]
        if at is None:
            return
        calls, src = self.calls, self.producer[tid]  # type: ignore[index]
        cid: int | None = innermost
        while cid is not None:
            call = calls[cid]
            if at >= call.start:
                return  # produced inside this call, so inside every enclosing call too
            side = self.side_tids.get(cid)
            args = self.arg_tids.get(cid)
            if args is None:  # looked up only for the calls a side input is checked against
                args = self.arg_tids[cid] = {m.tid for m in _metas(call) if m.tid is not None}
            if tid not in args and (side is None or tid not in side):
                if side is None:
                    side = self.side_tids[cid] = set()
                side.add(tid)  # type: ignore[arg-type]
                call.side_inputs.append(meta)
                self.edges.add(src, f"call:{cid}", meta, side=True)
            cid = call.parent


def _metas(call: Call) -> list[TensorMeta]:
    """The tensors of a call's arguments, positional then keyword (plain tensors read without a walk)."""
    out: list[TensorMeta] = []
    for a in call.inputs:
        if type(a) is TensorMeta:
            out.append(a)
        elif a is not None and not isinstance(a, (bool, int, float, str)):
            out.extend(m for _, m in iter_tensors(a))
    if call.kwargs:
        out.extend(m for _, m in iter_tensors(call.kwargs))
    return out
