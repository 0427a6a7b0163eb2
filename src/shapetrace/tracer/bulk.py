"""Constructors for the records a trace makes by the thousand: ``TensorMeta``, ``Call`` and ``Edge``.

Each builds the same object as the dataclass's own constructor (``tests/test_engine.py`` checks equality
and that every field reads its value), filling the instance dictionary in one step instead of running the generated
``__init__``: a frozen dataclass sets each field through ``object.__setattr__``, and ``Call``'s metric
fields go through a descriptor. That halves the cost of building the records after the forward, which is
part of what every trace costs. Everything else constructs records the ordinary way.
"""

from __future__ import annotations

from typing import Any

from .records import Call, Edge, TensorMeta

_new = object.__new__


def tensor_meta(shape: tuple[int, ...], dtype: str, device: str, tid: int | None,
                requires_grad: bool) -> TensorMeta:
    """``TensorMeta(shape, dtype, device, tid, requires_grad)``."""
    meta = _new(TensorMeta)
    meta.__dict__.update({"shape": shape, "dtype": dtype, "device": device, "tid": tid,
                          "requires_grad": requires_grad})
    return meta


def call(id: int, module: str, cls: str, call_index: int, parent: int | None, depth: int,  # noqa: PLR0913 - Call's own fields, in its order
         start: int, end: int | None, aliases: list[str], inputs: list[Any], kwargs: dict[str, Any], outputs: Any,
         params: int, own_params: int, trainable_params: int, buffers: int) -> Call:
    """``Call(id, module, ..., kwargs, outputs, params, own_params, trainable_params, buffers)``, every other
    field at its default.

    Only the fields given and the mutable defaults (fresh lists) go into the instance. A field whose
    default is immutable (``None``) reads the dataclass's class attribute until it is assigned, as it would
    for any Python object: a 17-entry instance dictionary costs much less than a 23-entry one, and most
    calls keep ``error``, ``flops``, ``line``, ``code`` and ``op_count`` at their defaults. ``timing`` and
    ``memory``, kept by a descriptor, read ``None`` until set."""
    record = _new(Call)
    record.__dict__ = {
        "id": id, "module": module, "cls": cls, "call_index": call_index, "parent": parent, "depth": depth,
        "start": start, "end": end, "aliases": aliases, "inputs": inputs, "kwargs": kwargs, "outputs": outputs,
        "params": params, "own_params": own_params, "trainable_params": trainable_params, "buffers": buffers,
        "side_inputs": [], "notes": []}
    return record


def edge(src: str, dst: str, tid: int, shape: tuple[int, ...], dtype: str, side: bool) -> Edge:
    """``Edge(src, dst, tid, shape, dtype, side)``."""
    record = _new(Edge)
    record.__dict__.update({"src": src, "dst": dst, "tid": tid, "shape": shape, "dtype": dtype, "side": side})
    return record
