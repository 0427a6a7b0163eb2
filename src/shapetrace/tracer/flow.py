"""Tensor identities and data-flow edges, shared by the module hooks and the functional-op recorder.

Every tensor the tracer sees gets a trace-local id (``tid``). The map from live tensor to ``tid`` holds weak
references, so it neither keeps activations alive nor confuses a new tensor with a freed one whose
``id()`` Python reused. A tensor changed in place is given a new ``tid`` by whatever changed it, so an
edge always names the value that flowed, not just the storage.
"""

from __future__ import annotations

import weakref

import torch

from .records import Edge, TensorMeta


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
        """Give ``t`` a fresh ``tid`` produced by ``producer`` at event ``order``."""
        tid = self._next
        self._next += 1
        key = id(t)
        by_id = self._by_id

        def forget(ref: weakref.ref, key: int = key) -> None:
            entry = by_id.get(key)
            if entry is not None and entry[0] is ref:
                del by_id[key]

        try:
            ref = weakref.ref(t, forget)
        except TypeError:  # a tensor type without weak references: track nothing for it
            return tid
        by_id[key] = (ref, tid)
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
