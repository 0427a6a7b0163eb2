"""One JSON codec for every record: encode by type hints, decode with validation and a path to the bad field.

``encode(value, hint)`` turns a record (a dataclass), a list, tuple, dict, ``Optional`` or union of them into
JSON-ready data; ``decode(data, hint)`` builds it back and checks every field against its type hint,
raising :class:`TraceFormatError` that names the first bad field by its path (``calls[17].parent``).

Integers must fit in 64 bits and numbers must be finite: JSON cannot write NaN or Infinity (``to_json``
refuses them), so a reader that took them would break the round trip. Strings and keys must be text: a lone
UTF-16 surrogate (JSON's ``"\\ud800"`` escape without its other half) is refused, since no output could write
it, and so is a key that is not a string (a parsed object handed to ``load``). Dataclass fields are written under
their own names. A field whose ``metadata`` has ``omit=True`` is left out
of the JSON when it equals its default; fields of a metric record (``shapetrace.tracer.metrics``) are left out
when ``None``. Unknown keys are ignored when decoding (a format may grow fields within its major version);
missing keys take the field's default, and a missing field without a default is an error.

A hint can have its own codec (``register``): the value trees of ``tracer.records`` (tensors, structs,
opaque objects inside nested lists and dicts) use one. This module imports the standard library only.

Key order: a record's fields and every dict are written in sorted key order, so the same trace gives the
same bytes whatever order a dict was filled in; what a registered codec writes, and a dict of such values
(a forward's keyword arguments), keep their own order, since that order is a fact the codec records (a
forward's dict output, its keywords as given).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable
from typing import Any, Union

__all__ = ["MAX_DEPTH", "OMIT_DEFAULT", "HugeInt", "TraceFormatError", "check_key", "check_text", "decode", "encode",
           "key_path", "register"]

# A field with this metadata is written only when it differs from its default.
OMIT_DEFAULT = {"omit": True}

# Nested JSON deeper than this is refused (a trace has a few levels; a hostile file can have thousands).
MAX_DEPTH = 100

# Integers are sizes, counts and ids: what torch holds in 64 bits. A larger one is an edited file, and would
# break the renderers' arithmetic (a 400-digit size overflows a float) rather than say where it came from.
INT_LIMIT = 2**63

# Half of a UTF-16 surrogate pair: JSON can write one alone (``"\\ud800"``), but it is no character, and
# encoding it as UTF-8 (any output file, a terminal) fails.
_SURROGATE = re.compile("[\ud800-\udfff]")


class TraceFormatError(ValueError):
    """A JSON document that is not a valid shapetrace trace; ``path`` names the first bad field."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path or "(top level)"
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle by the two arguments (an exception pickles by ``args``, here the one message)."""
        return type(self), (self.path, self.problem), self.__dict__


class HugeInt(int):
    """An integer too long for Python to read from JSON text (``sys.get_int_max_str_digits()``, 4300 digits),
    as the reader of a trace's text stands it in (``json.loads``'s ``parse_int``): it holds ``INT_LIMIT`` with
    the sign of the digits, beyond 64 bits like the number it stands for, so every check refuses it, and
    shows as ``a 4,301-digit integer``."""

    digits: int

    def __new__(cls, text: str) -> HugeInt:  # noqa: PYI034 - typing.Self needs Python 3.11; the codec imports the standard library only
        number = super().__new__(cls, -INT_LIMIT if text.startswith("-") else INT_LIMIT)
        number.digits = len(text.lstrip("-"))
        return number

    def __repr__(self) -> str:
        return f"a {self.digits:,}-digit integer"

    __str__ = __repr__

    def __float__(self) -> float:
        raise OverflowError(repr(self))  # beyond any float, as the number it stands for


def check_text(text: str, path: str) -> str:
    """``text``, refused (``TraceFormatError`` at ``path``) when it holds a lone surrogate, which is no character."""
    if text.isascii():  # the common case, answered without looking at the characters
        return text
    found = _SURROGATE.search(text)
    if found is None:
        return text
    return _not_text(text, found.start(), path)


def _not_text(text: str, at: int, path: str) -> Any:
    raise TraceFormatError(path, f"holds {text[at]!r} at character {at}: half of a UTF-16 surrogate pair without "
                                 "its other half, which is no character and cannot be written out; the file was "
                                 "edited or damaged: fix or remove that string")


def check_key(key: Any, path: str) -> str:
    """A key of the object at ``path``: a string and text (``check_text``), else ``TraceFormatError``."""
    if type(key) is str and key.isascii():
        return key
    if not isinstance(key, str):
        raise TraceFormatError(path, f"has the key {_short(key)} ({type(key).__name__}): the keys of a JSON "
                                     "object are strings")
    return check_text(key, key_path(path, key))


Encoder = Callable[[Any], Any]
Decoder = Callable[[Any, str], Any]
_CUSTOM: dict[Any, tuple[Encoder, Decoder]] = {}
_HINTS: dict[type, dict[str, Any]] = {}


def register(hint: Any, encoder: Encoder, decoder: Decoder) -> None:
    """Use ``encoder(value)`` and ``decoder(data, path)`` for fields annotated with ``hint``."""
    _CUSTOM[hint] = (encoder, decoder)
    _ENCODERS.clear()  # compiled coders may have compiled the hint without its codec
    _PLANS.clear()
    _DECODERS.clear()


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
# Encoding is compiled once per hint into a small function (``_encoder``), and a record class once into the
# list of its fields with their encoders (``_plan``): a trace of 20,000 calls is a million values, and
# reading type hints for each of them took longer than writing the JSON.
_ENCODERS: dict[Any, Encoder] = {}
_PLANS: dict[type, tuple[bool, list[tuple[str, Encoder, bool, Any]]]] = {}
_IS_RECORD: dict[type, bool] = {}


def encode(value: Any, hint: Any = Any) -> Any:
    """``value`` (annotated ``hint``) as JSON-ready data: dicts, lists, strings, numbers, booleans, null."""
    return _encoder(hint)(value)


def _encoder(hint: Any) -> Encoder:
    enc = _ENCODERS.get(hint)
    if enc is None:
        enc = _ENCODERS[hint] = _make_encoder(hint)
    return enc


def _is_record(value: Any) -> bool:
    """Whether ``value`` is a dataclass instance (a record), answered once per type."""
    kind = type(value)
    known = _IS_RECORD.get(kind)
    if known is None:
        known = _IS_RECORD[kind] = dataclasses.is_dataclass(kind) and not issubclass(kind, type)
    return known


def _make_encoder(hint: Any) -> Encoder:
    """The encoder of ``hint``: a registered codec's, or the rules below in this order for each value
    (``None``, a record, then by the hint: a union holding a record type that can coerce a mapping, a
    record type, a list, a dict, a number)."""
    if hint in _CUSTOM:
        return _CUSTOM[hint][0]
    args = _union_args(hint)
    if args is not None:  # a mapping given where a record is expected (``call.timing = {...}``)
        record = next((a for a in args if isinstance(a, type) and hasattr(a, "coerce")), None)
        inner = _encoder(record or Any)

        def union(value: Any) -> Any:
            if value is None:
                return None
            if _is_record(value):
                return _encode_record(value)
            return inner(_coerce(value, record) if record is not None else value)

        return union
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):

        def record_of(value: Any) -> Any:
            if value is None:
                return None
            return _encode_record(value if _is_record(value) else _coerce(value, hint))

        return record_of
    origin = typing.get_origin(hint)
    sub = typing.get_args(hint)
    item = _encoder(sub[0] if origin in (list, tuple) and sub else Any) if hint is not Any else None
    entry = _encoder(sub[1] if origin is dict and sub else Any) if hint is not Any else None
    ordered = origin is dict and len(sub) == 2 and sub[1] in _CUSTOM  # a dict of values: their order is a fact

    def plain(value: Any) -> Any:
        if value is None:
            return None
        if _is_record(value):
            return _encode_record(value)
        if isinstance(value, (list, tuple)):
            each = item or plain
            return [each(v) for v in value]
        if isinstance(value, dict):
            each = entry or plain
            items = ((str(k), v) for k, v in value.items())
            return {k: each(v) for k, v in (items if ordered else sorted(items, key=_first))}
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"cannot write {value!r} as JSON")
        return value

    return plain


def _first(pair: tuple[str, Any]) -> str:
    return pair[0]


def _coerce(value: Any, cls: type) -> Any:
    coerce = getattr(cls, "coerce", None)
    if coerce is not None and not isinstance(value, cls):
        return coerce(value)
    return value


def _plan(cls: type) -> tuple[bool, list[tuple[str, Encoder, bool, Any]]]:
    """Whether ``cls`` leaves out ``None`` fields, and each field's name, encoder, whether it is left out at
    its default, and that default."""
    plan = _PLANS.get(cls)
    if plan is None:
        hints = _hints(cls)
        fields = []
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
            fields.append((f.name, _encoder(hints[f.name]), bool(f.metadata.get("omit")), default))
        fields.sort(key=lambda field: field[0])  # written in sorted key order (see the module docstring)
        plan = _PLANS[cls] = (_omit_none(cls), fields)
    return plan


def _encode_record(record: Any) -> dict[str, Any]:
    omit_none, fields = _plan(type(record))
    out: dict[str, Any] = {}
    for name, enc, omit, default in fields:
        v = getattr(record, name)
        if omit_none and v is None:
            continue
        if omit and v == default:
            continue
        out[name] = enc(v)
    return out


# ---- decode ------------------------------------------------------------------------------------------
# Decoding is compiled the same way: one function per hint, ``(data, path, depth) -> value``.
_DECODERS: dict[Any, Callable[[Any, str, int], Any]] = {}  # hint -> Decoder3


def decode(data: Any, hint: Any, path: str = "", depth: int = 0) -> Any:
    """Build a value of type ``hint`` from JSON data, or raise ``TraceFormatError`` at the first bad field."""
    dec = _DECODERS.get(hint)
    if dec is None:
        dec = _DECODERS[hint] = _make_decoder(hint)
    return dec(data, path, depth)


def _too_deep(path: str) -> TraceFormatError:
    return TraceFormatError(path, f"nested more than {MAX_DEPTH} levels deep")


Decoder3 = Callable[[Any, str, int], Any]


def _make_decoder(hint: Any) -> Decoder3:
    if hint in _CUSTOM:
        return _registered_decoder(_CUSTOM[hint][1])
    if hint is Any:
        return _checked(_check_plain)
    args = _union_args(hint)
    if args is not None:
        return _union_decoder(args)
    if hint is type(None):
        return _checked(_null)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _record_decoder(hint)
    origin = typing.get_origin(hint) or hint
    sub = typing.get_args(hint)
    if origin in (list, tuple):
        return _sequence_decoder(sub[0] if sub else Any, origin is tuple)
    if origin is dict:
        return _mapping_decoder(sub[1] if len(sub) == 2 else Any)
    return _scalar_decoder(hint)


def _checked(dec: Decoder3) -> Decoder3:
    """``dec`` after the depth check every decoder starts with."""

    def checked(data: Any, path: str, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise _too_deep(path)
        return dec(data, path, depth)

    return checked


def _scalar_decoder(hint: Any) -> Decoder3:
    """A scalar's decoder: the JSON value itself when it is already of the hinted type (the common case, one
    type check), else ``_decode_scalar``'s conversion or error."""
    if hint is int:
        return _checked(_int_scalar)
    if hint is str:
        return _str_scalar
    exact = hint if hint is bool else None  # a float is checked to be finite: never returned at once

    def scalar(data: Any, path: str, depth: int) -> Any:
        if type(data) is exact and depth <= MAX_DEPTH:
            return data
        if depth > MAX_DEPTH:
            raise _too_deep(path)
        return _decode_scalar(data, hint, path)

    return scalar


def _int_scalar(data: Any, path: str, depth: int) -> Any:
    """An integer field: the JSON value itself when it is a plain integer within 64 bits (the common case)."""
    if type(data) is int and -INT_LIMIT < data < INT_LIMIT:
        return data
    return _decode_scalar(data, int, path)


def _str_scalar(data: Any, path: str, depth: int) -> Any:
    """A string field: the JSON value itself when it is a string of text (``check_text``); an ASCII one (the
    common case) is known to be text at once."""
    if depth > MAX_DEPTH:
        raise _too_deep(path)
    if type(data) is str:
        return data if data.isascii() else check_text(data, path)
    return _decode_scalar(data, str, path)


def _registered_decoder(custom: Decoder) -> Decoder3:
    return _checked(lambda data, path, depth: custom(data, path))


def _null(data: Any, path: str, depth: int) -> None:
    if data is not None:
        raise TraceFormatError(path, f"expected null, got {_kind(data)}")


def _sequence_decoder(item: Any, as_tuple: bool) -> Decoder3:
    def sequence(data: Any, path: str, depth: int) -> Any:
        if not isinstance(data, list):
            raise TraceFormatError(path, f"expected a list, got {_kind(data)}")
        items = [decode(v, item, f"{path}[{i}]", depth + 1) for i, v in enumerate(data)]
        return tuple(items) if as_tuple else items

    return _checked(sequence)


def _mapping_decoder(value: Any) -> Decoder3:
    def mapping(data: Any, path: str, depth: int) -> Any:
        if not isinstance(data, dict):
            raise TraceFormatError(path, f"expected an object, got {_kind(data)}")
        return {check_key(k, path): decode(v, value, key_path(path, k), depth + 1) for k, v in data.items()}

    return _checked(mapping)


def key_path(path: str, key: str) -> str:
    """Where ``key`` of the value at ``path`` is, as error messages name it: ``model.params``, ``x['a b']``."""
    if not isinstance(key, str):
        return f"{path}[{_short(key)}]"
    return f"{path}.{key}" if key.isidentifier() else f"{path}[{key!r}]"


def _decode_scalar(data: Any, hint: Any, path: str) -> Any:
    if hint is bool:
        if isinstance(data, bool):
            return data
        raise TraceFormatError(path, f"expected true or false, got {_kind(data)}")
    if hint is int:
        if isinstance(data, float) and data.is_integer():
            data = int(data)
        if isinstance(data, int) and not isinstance(data, bool):
            if -INT_LIMIT < data < INT_LIMIT:
                return data
            raise TraceFormatError(path, f"{_short(data)} does not fit in 64 bits")
        raise TraceFormatError(path, f"expected an integer, got {_kind(data)} {_short(data)}")
    if hint is float:
        if isinstance(data, (int, float)) and not isinstance(data, bool):
            try:
                number = float(data) if isinstance(data, int) else data
            except OverflowError:  # an integer beyond any float
                number = math.inf
            if math.isfinite(number):
                return number
            raise TraceFormatError(path, f"expected a finite number, got {data!r}")
        raise TraceFormatError(path, f"expected a number, got {_kind(data)} {_short(data)}")
    if hint is str:
        if isinstance(data, str):
            return data
        raise TraceFormatError(path, f"expected a string, got {_kind(data)} {_short(data)}")
    raise TypeError(f"the codec cannot decode type {hint!r} (at {path})")


def _short(data: Any) -> str:
    try:
        text = repr(data)
    except ValueError:  # an integer longer than Python writes (sys.get_int_max_str_digits())
        return f"an integer of {data.bit_length():,} bits"
    return text if len(text) <= 40 else text[:37] + "..."


def _union_decoder(args: tuple[Any, ...]) -> Decoder3:
    nullable = type(None) in args
    candidates = [a for a in args if a is not type(None)]

    def union(data: Any, path: str, depth: int) -> Any:
        if data is None:
            if nullable:
                return None
            raise TraceFormatError(path, "expected a value, got null")
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

    return _checked(union)


def _record_decoder(cls: type) -> Decoder3:
    hints = _hints(cls)
    # Each field given to the constructor: its name, its hint, whether the JSON must have it.
    fields = [(f.name, hints[f.name], f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
              for f in dataclasses.fields(cls) if f.init]

    decoders: list[Decoder3] = []  # the fields' decoders, looked up at the first record (hints may recur)

    def record(data: Any, path: str, depth: int) -> Any:
        if not isinstance(data, dict):
            raise TraceFormatError(path, f"expected an object ({cls.__name__}), got {_kind(data)}")
        if not decoders:
            decoders.extend(_DECODERS.get(h) or _DECODERS.setdefault(h, _make_decoder(h)) for _, h, _ in fields)
        values: dict[str, Any] = {}
        prefix = f"{path}." if path else ""
        for (name, _, required), dec in zip(fields, decoders):
            if name not in data:
                if required:
                    raise TraceFormatError(prefix + name, "missing")
                continue
            values[name] = dec(data[name], prefix + name, depth + 1)
        return cls(**values)

    return _checked(record)


def _check_plain(data: Any, path: str, depth: int) -> Any:
    """Free-form JSON (``meta``, ``meta.options``, a call's ``code``): checked for depth and, as everywhere in a
    trace, for finite numbers (one that is not could not be written back: ``to_json`` refuses NaN)."""
    if depth > MAX_DEPTH:
        raise TraceFormatError(path, f"nested more than {MAX_DEPTH} levels deep")
    if isinstance(data, float) and not math.isfinite(data):
        raise TraceFormatError(path, f"expected a finite number, got {data!r}")
    if isinstance(data, str):
        return check_text(data, path)
    if isinstance(data, HugeInt):
        raise too_long(data, path)
    if isinstance(data, list):
        return [_check_plain(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(data)]
    if isinstance(data, dict):
        return {check_key(k, path): _check_plain(v, key_path(path, k), depth + 1) for k, v in data.items()}
    return data


def too_long(number: HugeInt, path: str) -> TraceFormatError:
    """The error for an integer too long to read (``HugeInt``) where a value may be any integer."""
    return TraceFormatError(path, f"{number!r}, longer than Python reads ({number.digits:,} digits; at most "
                                  "4300): no trace holds such a number; the file was edited or damaged")
