"""Turn live torch values into plain value trees (``TensorMeta``, lists, dicts, ``Struct``, ``Opaque``).

``describe`` walks whatever a forward takes or returns: tensors, tuples and lists, dicts, namedtuples,
dataclasses (Hugging Face ``ModelOutput`` included), ``PackedSequence``, ``None`` and Python scalars. A
``tid_of`` callback, when given, names each tensor's identity for data-flow tracking (see ``flow``).

A plain object holding a tensor directly among its attributes (torchvision's ``ImageList``, which carries
the batched images from a detector's transform to its backbone) is a ``Struct`` of its attributes, so the
tensor keeps its identity and the data flow stays connected; any other object is an ``Opaque`` with its
repr. The walk is bounded: at most ``MAX_ATTRIBUTES`` attributes, objects inside such an object stay
opaque (a cycle of objects cannot multiply), and ``MAX_DEPTH`` levels in all.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
import types
from collections.abc import Callable, Iterator
from typing import Any

import torch

from .records import Opaque, Struct, TensorMeta, Value, learn_itemsize

# Past this many items a non-tensor sequence is summarised instead of copied into the trace.
MAX_ITEMS = 256
MAX_DEPTH = 32
# An object with more attributes than this stays opaque, tensors or not.
MAX_ATTRIBUTES = 32
# A nested tensor's text lists the shapes of this many components at most.
MAX_NESTED_SHOWN = 4

TidOf = Callable[[torch.Tensor], "int | None"]


_DTYPE_NAMES: dict[torch.dtype, str] = {}
_DEVICE_NAMES: dict[torch.device, str] = {}


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` -> ``"float32"``."""
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype).removeprefix("torch.")
        learn_itemsize(name, dtype.itemsize)  # so sizes are right for a dtype newer than the records' table
    return name


def device_name(device: torch.device) -> str:
    """``torch.device("cuda", 0)`` -> ``"cuda:0"``."""
    name = _DEVICE_NAMES.get(device)
    if name is None:
        name = _DEVICE_NAMES[device] = str(device)
    return name


_Tensor = torch.Tensor


def tensor_meta(t: torch.Tensor, tid: int | None = None) -> TensorMeta | Opaque:
    """The ``TensorMeta`` of one tensor (an ``Opaque`` for tensors without a plain shape, e.g. nested)."""
    try:
        shape = tuple(t.shape)
    except (RuntimeError, TypeError, ValueError):  # a strided nested tensor has no single shape
        if getattr(t, "is_nested", False):
            return Opaque("NestedTensor", nested_text(t))
        return Opaque(type(t).__name__, f"tensor without a static shape ({t.layout})")
    # A plain tensor's sizes are ints, except under ``torch.jit.trace`` (0-dim tensors); a subclass's (fake or
    # symbolic tensors) may be SymInts, and a jagged nested tensor's ragged size is a nested int with no value.
    if ((type(t) is not _Tensor or (shape and type(shape[0]) is not int))
            and not all(type(s) is int for s in shape)):
        try:
            shape = tuple(int(s) for s in shape)
        except Exception:  # noqa: BLE001 - what a subclass's size raises when it has no value is its own
            if getattr(t, "is_nested", False):  # a jagged nested tensor: its ragged size is a nested int
                return Opaque("NestedTensor", nested_text(t))
            sizes = ", ".join(str(s) for s in shape)
            return Opaque(type(t).__name__, f"tensor without a static shape ({t.layout}, sizes ({sizes}))")
    device, dtype = t.device, t.dtype
    return TensorMeta(shape, _DTYPE_NAMES.get(dtype) or dtype_name(dtype),
                      _DEVICE_NAMES.get(device) or device_name(device), tid, t.requires_grad)


def _nested_shapes(t: torch.Tensor) -> list[tuple[int, ...]]:
    """The shapes of a nested tensor's first ``MAX_NESTED_SHOWN`` components, read from its size metadata (a
    strided one's table of sizes, a jagged one's offsets), never its values; ``[]`` when torch offers neither."""
    k = MAX_NESTED_SHOWN
    try:
        if t.layout == torch.strided:
            return [tuple(int(n) for n in row) for row in t._nested_tensor_size()[:k].tolist()]
        ragged = t._ragged_idx  # the dim whose size differs per component, counted with the batch dim
        narrowed = t.lengths()  # a narrowed (non-contiguous) jagged tensor keeps its lengths apart from offsets
        lengths = (narrowed[:k] if narrowed is not None else t.offsets()[:k + 1].diff()).tolist()
        rest = list(t.shape)
        return [tuple(n if i == ragged else int(d) for i, d in enumerate(rest) if i > 0) for n in lengths]
    except Exception:  # noqa: BLE001 - private size metadata of a prototype API: the count is enough
        return []


def nested_text(t: torch.Tensor) -> str:
    """A nested tensor (``torch.nested``) as text: its number of components and the first ones' shapes, with
    its dtype when not float32 and ``jagged`` for that layout: ``nested(2: (5,8), (3,8))``,
    ``nested(64: (5,8), (3,8), (7,8), (2,8), … +60) int64 jagged``."""
    try:
        n: int | None = int(t.size(0))
    except Exception:  # noqa: BLE001 - a nested tensor torch cannot size
        n = None
    shapes = _nested_shapes(t) if n else []
    parts = ["(" + ",".join(map(str, sh)) + ("," if len(sh) == 1 else "") + ")" for sh in shapes]
    if n is not None and n > len(parts) and parts:
        parts.append(f"… +{n - len(parts)}")
    text = f"nested({'?' if n is None else n}{': ' if parts else ''}{', '.join(parts)})"
    if t.dtype != torch.float32:
        text += f" {dtype_name(t.dtype)}"
    return text + (" jagged" if t.layout == torch.jagged else "")


# `` at 0x7f3a...`` in a default repr (``<__main__.Cfg object at 0x7f3a...>``, ``<function f at 0x...>``).
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _without_address(text: str) -> str:
    """A repr without the memory addresses Python's default reprs carry: they differ from run to run, and a
    trace must not (``<__main__.Cfg object at 0x7f3a...>`` -> ``<__main__.Cfg object>``)."""
    return _ADDRESS.sub("", text) if " at 0x" in text else text


# Control characters (a newline in a module's many-line repr) written as Python escapes: a record's text is one line.
_ESCAPES = {c: repr(chr(c))[1:-1] for c in (*range(32), 127)}


def _short_repr(value: Any) -> str:
    """A value's repr on one line, at most 80 characters (``_repr_text``)."""
    try:
        text = _repr_text(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not break a trace
        text = f"<{type(value).__qualname__}>"
    text = text[:400].translate(_ESCAPES)
    return text if len(text) <= 80 else text[:77] + "..."


def _repr_text(value: Any, depth: int = 0) -> str:
    """A value's repr without its memory addresses, except where the repr would walk a model or print a tensor's
    values. A module (an ``nn.Module`` passed as an argument) is its class name: its repr walks every submodule (a
    ResNet-152's runs to 25,000 characters), at every call. So is a module inside a method bound to it
    (``self.body.forward``) or a ``functools.partial`` (whose reprs hold their object's and arguments' reprs),
    a few levels deep; a tensor there is its shape and dtype."""
    if isinstance(value, torch.nn.Module):
        return f"{type(value).__name__} module"
    if isinstance(value, torch.Tensor):
        return _tensor_key(value)
    if depth < 3:
        if isinstance(value, types.MethodType):
            name = getattr(value.__func__, "__qualname__", None) or getattr(value.__func__, "__name__", "?")
            return f"<bound method {name} of {_repr_text(value.__self__, depth + 1)}>"
        if isinstance(value, functools.partial):
            parts = [_repr_text(value.func, depth + 1), *(_repr_text(a, depth + 1) for a in value.args),
                     *(f"{k}={_repr_text(v, depth + 1)}" for k, v in value.keywords.items())]
            return f"{type(value).__module__}.{type(value).__qualname__}({', '.join(parts)})"
    return _without_address(repr(value))


def _is_namedtuple(value: Any) -> bool:
    return isinstance(value, tuple) and hasattr(type(value), "_fields")


def _tensor_key(key: torch.Tensor) -> str:
    """A tensor used as a dict key, by its shape and dtype (``Tensor(8, 64) float32``), never its values:
    a key names a branch of the value tree and ends up in edge names and table cells."""
    meta = tensor_meta(key)
    if isinstance(meta, Opaque):
        return f"{meta.type}: {meta.repr}"
    return f"{type(key).__name__}({', '.join(str(n) for n in meta.shape)}) {meta.dtype}"


def _key_names(mapping: dict) -> list[str]:
    """The keys of a dict as recorded, in order: a string as it is; a tensor by its shape and dtype
    (``_tensor_key``); anything else by its repr, at most 80 characters. The names stay distinct: one that
    is also a string key of the dict gets its type added (``{1: a, "1": b}`` -> ``1 (int)``, ``1``), and one
    an earlier key already has, a number (two tensor keys of one shape: ``Tensor(2) float32``,
    ``Tensor(2) float32 #2``)."""
    strings = {k for k in mapping if isinstance(k, str)}
    taken = set(strings)
    names = []
    for key in mapping:
        if isinstance(key, str):
            names.append(key)
            continue
        name = _tensor_key(key) if isinstance(key, torch.Tensor) else _short_repr(key)
        if name in strings:
            name = f"{name} ({type(key).__name__})"
        base, n = name, 1
        while name in taken:
            n += 1
            name = f"{base} #{n}"
        taken.add(name)
        names.append(name)
    return names


def tensor_attributes(value: Any) -> dict | None:
    """The attributes of a plain object that holds a tensor directly among them (torchvision's ``ImageList``:
    ``tensors``, ``image_sizes``), read from its instance dictionary (its properties and ``__getattr__`` do not run);
    ``None`` for any other value (a module, a class, an object with more than ``MAX_ATTRIBUTES`` attributes or
    whose dictionary cannot be read)."""
    if not type(value).__dictoffset__ or isinstance(value, (type, types.ModuleType, torch.nn.Module)):
        return None
    try:
        attributes = object.__getattribute__(value, "__dict__")
    except Exception:  # noqa: BLE001 - whatever an odd object raises, it stays opaque
        return None
    if type(attributes) is not dict or not attributes or len(attributes) > MAX_ATTRIBUTES:
        return None
    attributes = dict(attributes)  # a snapshot: reading a value must not see the object change under it
    if not any(isinstance(v, torch.Tensor) for v in attributes.values()):
        return None
    return attributes


def describe(value: Any, tid_of: TidOf | None = None, _depth: int = 0, _objects: bool = True) -> Value:
    """The value tree of ``value``; ``tid_of(tensor)`` supplies each tensor's ``tid`` when given."""
    if isinstance(value, torch.Tensor):
        return tensor_meta(value, tid_of(value) if tid_of is not None else None)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if _depth >= MAX_DEPTH:
        return Opaque(type(value).__qualname__, "nested too deeply to record")
    d = _depth + 1
    if isinstance(value, torch.nn.utils.rnn.PackedSequence) or _is_namedtuple(value):
        return Struct(type(value).__name__,
                      {f: describe(getattr(value, f), tid_of, d, _objects) for f in value._fields})
    if isinstance(value, dict):
        # Hugging Face ModelOutput is a dict *and* a dataclass: its items() holds the fields that are set.
        items = {name: describe(v, tid_of, d, _objects) for name, v in zip(_key_names(value), value.values())}
        if dataclasses.is_dataclass(value):
            return Struct(type(value).__name__, items)
        return items
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return Struct(type(value).__name__, {f.name: describe(getattr(value, f.name), tid_of, d, _objects)
                                             for f in dataclasses.fields(value)})
    if isinstance(value, (list, tuple)):
        if len(value) > MAX_ITEMS and not any(isinstance(v, torch.Tensor) for v in value):
            return Opaque(type(value).__name__, f"{type(value).__name__} of {len(value)} items")
        return [describe(v, tid_of, d, _objects) for v in value]
    if isinstance(value, (torch.dtype, torch.device, torch.Size)):
        return Opaque(type(value).__name__, str(value))
    # (a slice, Ellipsis or other built-in value has no instance dictionary: no call for it)
    attributes = tensor_attributes(value) if _objects and type(value).__dictoffset__ else None
    if attributes is not None:  # objects inside it stay opaque: a cycle of objects cannot multiply the walk
        return Struct(type(value).__name__,
                      {name: describe(v, tid_of, d, False) for name, v in zip(_key_names(attributes), attributes.values())})
    return Opaque(type(value).__qualname__, _short_repr(value))


def iter_live_tensors(value: Any, _depth: int = 0, _objects: bool = True) -> Iterator[torch.Tensor]:
    """Every tensor inside a live value, in the order ``describe`` visits them."""
    if isinstance(value, torch.Tensor):
        yield value
        return
    if value is None or isinstance(value, (bool, int, float, str)) or _depth >= MAX_DEPTH:
        return
    d = _depth + 1
    if isinstance(value, torch.nn.utils.rnn.PackedSequence) or _is_namedtuple(value):
        for f in value._fields:
            yield from iter_live_tensors(getattr(value, f), d, _objects)
    elif isinstance(value, dict):
        for v in value.values():
            yield from iter_live_tensors(v, d, _objects)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from iter_live_tensors(getattr(value, f.name), d, _objects)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from iter_live_tensors(v, d, _objects)
    elif _objects and type(value).__dictoffset__:
        attributes = tensor_attributes(value)
        if attributes is not None:
            for v in attributes.values():
                yield from iter_live_tensors(v, d, False)


def map_tensors(value: Any, fn: Callable[[torch.Tensor], torch.Tensor], _path: tuple[int, ...] = ()) -> Any:
    """``value`` with ``fn`` applied to every tensor inside it (used to move inputs to a device).

    Containers are copied only where something inside them changed: what ``fn`` returns unchanged reaches
    the forward as the very object the caller passed (a forward may write into a list or dict it is given).
    A container inside itself is left as it is at the point where it repeats."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if not isinstance(value, (list, tuple, dict)) or id(value) in _path:
        return value
    path = (*_path, id(value))
    if isinstance(value, dict):
        changed = {}
        for k, v in value.items():
            new = map_tensors(v, fn, path)
            if new is not v:
                changed[k] = new
        if not changed:
            return value
        out = copy.copy(value)  # keeps the mapping's type and what it holds besides (a defaultdict's factory)
        for k, v in changed.items():
            out[k] = v
        return out
    items = [map_tensors(v, fn, path) for v in value]
    if all(new is old for new, old in zip(items, value)):
        return value
    if isinstance(value, torch.nn.utils.rnn.PackedSequence) or _is_namedtuple(value):
        return type(value)(*items)
    return type(value)(items)
