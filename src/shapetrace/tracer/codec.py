"""One JSON codec for every record: encode by type hints, decode with validation and a path to the bad field.

``encode(value, hint)`` turns a record (a dataclass), a list, tuple, dict, ``Optional`` or union of them into
JSON-ready data; ``decode(data, hint)`` builds it back and checks every field against its type hint,
raising :class:`TraceFormatError` that names the first bad field by its path (``calls[17].parent``).

Dataclass fields are written under their own names. A field whose ``metadata`` has ``omit=True`` is left out
of the JSON when it equals its default; fields of a metric record (``shapetrace.tracer.metrics``) are left out
when ``None``. Unknown keys are ignored when decoding (a format may grow fields within its major version);
missing keys take the field's default, and a missing field without a default is an error.

A hint can have its own codec (``register``): the value trees of ``tracer.records`` (tensors, structs,
opaque objects inside nested lists and dicts) use one. This module imports the standard library only.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from typing import Any, Union

__all__ = ["MAX_DEPTH", "OMIT_DEFAULT", "TraceFormatError", "decode", "encode", "register"]

# A field with this metadata is written only when it differs from its default.
OMIT_DEFAULT = {"omit": True}

# Nested JSON deeper than this is refused (a trace has a few levels; a hostile file can have thousands).
MAX_DEPTH = 100


class TraceFormatError(ValueError):
    """A JSON document that is not a valid shapetrace trace; ``path`` names the first bad field."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path or "(top level)"
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


Encoder = Callable[[Any], Any]
Decoder = Callable[[Any, str], Any]
_CUSTOM: dict[Any, tuple[Encoder, Decoder]] = {}
_HINTS: dict[type, dict[str, Any]] = {}


def register(hint: Any, encoder: Encoder, decoder: Decoder) -> None:
    """Use ``encoder(value)`` and ``decoder(data, path)`` for fields annotated with ``hint``."""
    _CUSTOM[hint] = (encoder, decoder)


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _union_args(hint: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(hint) in (Union, types.UnionType):
        return typing.get_args(hint)
    return None


def _omit_none(cls: type) -> bool:
    return bool(getattr(cls, "_JSON_OMIT_NONE", False))


# ---- encode ------------------------------------------------------------------------------------------
def encode(value: Any, hint: Any = Any) -> Any:
    """``value`` (annotated ``hint``) as JSON-ready data: dicts, lists, strings, numbers, booleans, null."""
    if hint in _CUSTOM:
        return _CUSTOM[hint][0](value)
    if value is None:
        return None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _encode_record(value)
    args = _union_args(hint)
    if args is not None:  # a mapping given where a record is expected (``call.timing = {...}``)
        record = next((a for a in args if isinstance(a, type) and hasattr(a, "coerce")), None)
        return encode(_coerce(value, record) if record is not None else value, record or Any)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _encode_record(_coerce(value, hint))
    origin = typing.get_origin(hint)
    if isinstance(value, (list, tuple)):
        item = typing.get_args(hint)[0] if origin in (list, tuple) and typing.get_args(hint) else Any
        return [encode(v, item) for v in value]
    if isinstance(value, dict):
        item = typing.get_args(hint)[1] if origin is dict and typing.get_args(hint) else Any
        return {str(k): encode(v, item) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"cannot write {value!r} as JSON")
    return value


def _coerce(value: Any, cls: type) -> Any:
    coerce = getattr(cls, "coerce", None)
    if coerce is not None and not isinstance(value, cls):
        return coerce(value)
    return value


def _encode_record(record: Any) -> dict[str, Any]:
    cls = type(record)
    hints = _hints(cls)
    omit_none = _omit_none(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        v = getattr(record, f.name)
        if omit_none and v is None:
            continue
        if f.metadata.get("omit"):
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
            if v == default:
                continue
        out[f.name] = encode(v, hints[f.name])
    return out


# ---- decode ------------------------------------------------------------------------------------------
def decode(data: Any, hint: Any, path: str = "", depth: int = 0) -> Any:
    """Build a value of type ``hint`` from JSON data, or raise ``TraceFormatError`` at the first bad field."""
    if depth > MAX_DEPTH:
        raise TraceFormatError(path, f"nested more than {MAX_DEPTH} levels deep")
    if hint in _CUSTOM:
        return _CUSTOM[hint][1](data, path)
    if hint is Any:
        return _check_plain(data, path, depth)
    args = _union_args(hint)
    if args is not None:
        return _decode_union(data, args, path, depth)
    if hint is type(None):
        if data is not None:
            raise TraceFormatError(path, f"expected null, got {_kind(data)}")
        return None
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _decode_record(data, hint, path, depth)
    origin = typing.get_origin(hint) or hint
    sub = typing.get_args(hint)
    if origin in (list, tuple):
        if not isinstance(data, list):
            raise TraceFormatError(path, f"expected a list, got {_kind(data)}")
        item = sub[0] if sub else Any
        items = [decode(v, item, f"{path}[{i}]", depth + 1) for i, v in enumerate(data)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(data, dict):
            raise TraceFormatError(path, f"expected an object, got {_kind(data)}")
        item = sub[1] if len(sub) == 2 else Any
        return {k: decode(v, item, _key_path(path, k), depth + 1) for k, v in data.items()}
    return _decode_scalar(data, hint, path)


def _key_path(path: str, key: str) -> str:
    return f"{path}.{key}" if key.isidentifier() else f"{path}[{key!r}]"


def _decode_scalar(data: Any, hint: Any, path: str) -> Any:
    if hint is bool:
        if isinstance(data, bool):
            return data
        raise TraceFormatError(path, f"expected true or false, got {_kind(data)}")
    if hint is int:
        if isinstance(data, int) and not isinstance(data, bool):
            return data
        if isinstance(data, float) and data.is_integer():
            return int(data)
        raise TraceFormatError(path, f"expected an integer, got {_kind(data)} {_short(data)}")
    if hint is float:
        if isinstance(data, (int, float)) and not isinstance(data, bool):
            return float(data) if isinstance(data, int) else data
        raise TraceFormatError(path, f"expected a number, got {_kind(data)} {_short(data)}")
    if hint is str:
        if isinstance(data, str):
            return data
        raise TraceFormatError(path, f"expected a string, got {_kind(data)} {_short(data)}")
    raise TypeError(f"the codec cannot decode type {hint!r} (at {path})")


def _short(data: Any) -> str:
    text = repr(data)
    return text if len(text) <= 40 else text[:37] + "..."


def _decode_union(data: Any, args: tuple[Any, ...], path: str, depth: int) -> Any:
    if data is None:
        if type(None) in args:
            return None
        raise TraceFormatError(path, "expected a value, got null")
    candidates = [a for a in args if a is not type(None)]
    if len(candidates) == 1:
        return decode(data, candidates[0], path, depth)
    first: TraceFormatError | None = None
    for arg in candidates:
        try:
            return decode(data, arg, path, depth)
        except TraceFormatError as e:
            first = first or e
    assert first is not None
    raise first


def _decode_record(data: Any, cls: type, path: str, depth: int) -> Any:
    if not isinstance(data, dict):
        raise TraceFormatError(path, f"expected an object ({cls.__name__}), got {_kind(data)}")
    hints = _hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        where = f"{path}.{f.name}" if path else f.name
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise TraceFormatError(where, "missing")
            continue
        values[f.name] = decode(data[f.name], hints[f.name], where, depth + 1)
    return cls(**values)


def _check_plain(data: Any, path: str, depth: int) -> Any:
    """Free-form JSON (``meta``): checked only for depth."""
    if depth > MAX_DEPTH:
        raise TraceFormatError(path, f"nested more than {MAX_DEPTH} levels deep")
    if isinstance(data, list):
        return [_check_plain(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(data)]
    if isinstance(data, dict):
        return {k: _check_plain(v, _key_path(path, k), depth + 1) for k, v in data.items()}
    return data
