"""The trace as plain data: ``Trace``, ``Call``, ``Op``, ``Edge``, ``TensorMeta`` and their JSON form.

This module is the interface between the tracer and every renderer. It imports no torch, so a trace saved
as JSON loads and renders on a machine without torch or the model. Records hold facts only (shapes, counts,
names, times); presentation lives in ``shapetrace.renderers``.

Value trees
-----------
The nested inputs, kwargs and outputs of a call are *value trees* built from:

* ``TensorMeta`` for a tensor (JSON ``{"shape": [...], "dtype": "float32", "device": "cpu", ...}``);
* ``list`` for a tuple or list; ``dict`` (string keys) for a dict;
* ``Struct`` for a typed container with named fields: a namedtuple, a dataclass (Hugging Face
  ``ModelOutput``), a ``PackedSequence`` (JSON ``{"__struct__": "PackedSequence", "fields": {...}}``);
* ``Opaque`` for any other object (JSON ``{"__object__": "torch.dtype", "repr": "torch.float32"}``);
* ``None``, ``bool``, ``int``, ``float`` and ``str`` as themselves.

A user dict whose keys would read back as one of the tagged forms is wrapped as ``{"__dict__": {...}}``,
so every tree round-trips exactly. See ``docs/trace-format.md`` for the full format.
"""

from __future__ import annotations

import codecs
import json
import math
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import IO, Any, Union

from . import codec
from .codec import OMIT_DEFAULT, TraceFormatError
from .metrics import (
    FALLBACK_NO_KERNELS,
    FALLBACK_PROFILER_ERROR,
    KIND_EVENTS,
    KIND_PROFILER,
    CallMemory,
    CallNonfinite,
    CallTiming,
    Note,
    TimingSummary,
)
from .sources_check import check_sources
from .tracefile import read_bounded, read_path

FORMAT = "shapetrace.trace/2"
# Older formats ``load`` still reads (upgraded on the way in; see ``_upgrade_v1``).
READABLE_FORMATS = ("shapetrace.trace/1", FORMAT)

# Python's json module writes NaN/Infinity, which strict JSON readers reject; floats of that kind are
# stored as tagged strings instead.
_FLOAT_TAG = "__float__"


@dataclass(frozen=True)
class TensorMeta:
    """What is known of one tensor: shape, dtype, device, and (when data flow is tracked) its identity.

    ``tid`` is a trace-local tensor id: two ``TensorMeta`` with the same ``tid`` are the same tensor value
    (the same object, before any in-place change). ``None`` when data flow was not tracked.
    """

    shape: tuple[int, ...]
    dtype: str
    device: str
    tid: int | None = field(default=None, metadata=OMIT_DEFAULT)
    requires_grad: bool = field(default=False, metadata=OMIT_DEFAULT)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def itemsize(self) -> int:
        return dtype_itemsize(self.dtype)

    @property
    def nbytes(self) -> int:
        return self.numel * self.itemsize


@dataclass(frozen=True)
class Struct:
    """A typed container with named fields (namedtuple, dataclass, ``PackedSequence``, ``ModelOutput``).

    ``kind`` is the type's name; ``fields`` keeps the field order of the original object.
    """

    kind: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class Opaque:
    """A value the tracer does not look inside: its type name and a short ``repr``."""

    kind: str
    repr: str


Value = Union[TensorMeta, Struct, Opaque, list, dict, None, bool, int, float, str]  # noqa: UP007 - a runtime alias

_TENSOR_KEYS = {"shape", "dtype", "device"}
_RESERVED_KEYS = {"__struct__", "__object__", "__dict__", _FLOAT_TAG}

# Bytes per element of every dtype torch (2.14) names (``torch.<name>.itemsize``), for reading traces without
# torch; the tracer adds any other dtype it meets (``learn_itemsize``), a newer torch's included.
_ITEMSIZE = {
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "complex128": 16, "complex64": 8,
    "complex32": 4, "bcomplex32": 4, "int64": 8, "int32": 4, "int16": 2, "int8": 1, "uint8": 1, "uint16": 2,
    "uint32": 4, "uint64": 8, "bool": 1, "float8_e4m3fn": 1, "float8_e5m2": 1, "float8_e4m3fnuz": 1,
    "float8_e5m2fnuz": 1, "float8_e8m0fnu": 1, "float4_e2m1fn_x2": 1, "quint8": 1, "qint8": 1, "qint32": 4,
    "quint4x2": 1, "quint2x4": 1, "bits8": 1, "bits16": 2, "bits1x8": 1, "bits2x4": 1, "bits4x2": 1,
    **{f"{sign}int{bits}": 1 for sign in ("", "u") for bits in range(1, 8)},  # sub-byte ints: a byte each
}


def dtype_itemsize(dtype: str) -> int:
    """Bytes per element of a dtype named as in ``TensorMeta.dtype`` (4 when unknown)."""
    return _ITEMSIZE.get(dtype, 4)


def learn_itemsize(dtype: str, itemsize: int) -> None:
    """Remember the size of a dtype the table above lacks (the tracer tells it torch's ``dtype.itemsize``)."""
    _ITEMSIZE.setdefault(dtype, itemsize)


def value_to_json(value: Value) -> Any:
    """Encode a value tree as JSON-ready data (see the module docstring)."""
    if isinstance(value, TensorMeta):
        out: dict[str, Any] = {"device": value.device, "dtype": value.dtype}  # keys in sorted order
        if value.requires_grad:
            out["requires_grad"] = True
        out["shape"] = list(value.shape)
        if value.tid is not None:
            out["tid"] = value.tid
        return out
    if isinstance(value, Struct):
        return {"__struct__": value.kind, "fields": {k: value_to_json(v) for k, v in value.fields.items()}}
    if isinstance(value, Opaque):
        return {"__object__": value.kind, "repr": value.repr}
    if isinstance(value, (list, tuple)):
        return [value_to_json(v) for v in value]
    if isinstance(value, dict):
        enc = {str(k): value_to_json(v) for k, v in value.items()}
        if _TENSOR_KEYS <= enc.keys() or _RESERVED_KEYS & enc.keys():
            return {"__dict__": enc}
        return enc
    if isinstance(value, float) and not math.isfinite(value):
        return {_FLOAT_TAG: repr(value)}
    return value


def value_from_json(obj: Any, path: str = "", depth: int = 0) -> Value:
    """Decode what :func:`value_to_json` wrote, checking it: a malformed tensor, struct or object, or a tree
    nested deeper than ``codec.MAX_DEPTH``, raises ``TraceFormatError`` naming its path."""
    if depth > codec.MAX_DEPTH:
        raise TraceFormatError(path, f"nested more than {codec.MAX_DEPTH} levels deep")
    if isinstance(obj, list):
        return [value_from_json(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(obj)]
    if not isinstance(obj, dict):
        if type(obj) is str:
            return codec.check_text(obj, path)
        if type(obj) is codec.HugeInt:
            raise codec.too_long(obj, path)
        return obj
    if "__dict__" in obj and len(obj) == 1:
        inner = codec.decode(obj["__dict__"], dict, f"{path}.__dict__")
        return {k: value_from_json(v, f"{path}[{k!r}]", depth + 1) for k, v in inner.items()}  # keys: decode checked them
    if "__struct__" in obj:
        kind = codec.decode(obj["__struct__"], str, f"{path}.__struct__")
        fields = codec.decode(obj.get("fields"), dict, f"{path}.fields")
        return Struct(kind, {k: value_from_json(v, f"{path}.{k}", depth + 1) for k, v in fields.items()})
    if "__object__" in obj:
        return Opaque(codec.decode(obj["__object__"], str, f"{path}.__object__"),
                      codec.decode(obj.get("repr"), str, f"{path}.repr"))
    if _FLOAT_TAG in obj:
        text = codec.decode(obj[_FLOAT_TAG], str, f"{path}.{_FLOAT_TAG}")
        try:
            return float(text)
        except ValueError:
            raise TraceFormatError(f"{path}.{_FLOAT_TAG}", f"not a number: {text!r}") from None
    if _TENSOR_KEYS <= obj.keys():
        meta = codec.decode(obj, TensorMeta, path)
        _check_shape(meta.shape, f"{path}.shape")
        if meta.tid is not None and meta.tid < 0:
            raise TraceFormatError(f"{path}.tid", f"cannot be negative ({meta.tid})")
        _check_name(meta.dtype, f"{path}.dtype")
        _check_name(meta.device, f"{path}.device")
        return meta
    return {codec.check_key(k, path): value_from_json(v, f"{path}[{k!r}]", depth + 1) for k, v in obj.items()}


def _check_shape(shape: tuple[int, ...], path: str) -> None:
    """A shape's sizes are not negative, and they multiply to an element count that fits in 64 bits (torch's
    limit: a tensor's ``numel`` is an ``int64``; a larger count breaks every size the renderers work out)."""
    if not shape:
        return
    if min(shape) < 0:
        bad = next(i for i, d in enumerate(shape) if d < 0)
        raise TraceFormatError(f"{path}[{bad}]", f"a size cannot be negative ({shape[bad]})")
    if len(shape) <= 64:  # each size < 2**63: the product has at most 4,032 bits, cheap to compute
        numel = math.prod(shape)
    else:  # a hostile number of sizes: multiply only up to the limit
        numel = 1
        for d in shape:
            numel = min(numel * d, codec.INT_LIMIT)
    if numel >= codec.INT_LIMIT:
        raise TraceFormatError(path, f"its {len(shape):,} sizes multiply to 2**63 elements or more, more than a "
                                     "tensor can hold (torch counts elements in 64 bits); the file was edited or "
                                     "damaged")


def _check_name(text: str, path: str) -> None:
    """Refuse ``text``, a dtype or device name (``float32``, ``cuda:0``), when it holds a character that is not
    printable."""
    if text.isprintable():
        return
    bad = next(c for c in text if not c.isprintable())
    raise TraceFormatError(path, f"{_quoted(text)} holds the control character {bad!r}: a dtype or device is a "
                                 "short name (float32, cuda:0); the file was edited or damaged")


codec.register(Value, value_to_json, value_from_json)


def iter_tensors(value: Value, path: str = "") -> Iterator[tuple[str, TensorMeta]]:
    """Yield ``(path, TensorMeta)`` for every tensor in a value tree, in order.

    Paths use Python's indexing syntax relative to the value: ``[0]``, ``[1][0]``, ``['logits']``,
    ``.last_hidden_state`` (a ``Struct`` field).
    """
    if isinstance(value, TensorMeta):
        yield path, value
    elif isinstance(value, Struct):
        for k, v in value.fields.items():
            yield from iter_tensors(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from iter_tensors(v, f"{path}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from iter_tensors(v, f"{path}[{k!r}]")


# Tensor names of well-known structures, by class and role: path inside the value -> name.
KNOWN_NAMES: dict[tuple[str, str], dict[str, str]] = {
    ("LSTM", "inputs"): {"[0]": "input", "[1][0]": "h_0", "[1][1]": "c_0"},
    ("LSTM", "outputs"): {"[0]": "output", "[1][0]": "h_n", "[1][1]": "c_n"},
    ("GRU", "inputs"): {"[0]": "input", "[1]": "h_0"},
    ("GRU", "outputs"): {"[0]": "output", "[1]": "h_n"},
    ("RNN", "inputs"): {"[0]": "input", "[1]": "h_0"},
    ("RNN", "outputs"): {"[0]": "output", "[1]": "h_n"},
    ("MultiheadAttention", "inputs"): {"[0]": "query", "[1]": "key", "[2]": "value"},
    ("MultiheadAttention", "outputs"): {"[0]": "attn_output", "[1]": "attn_weights"},
}


def labelled_tensors(value: Value, cls: str = "", role: str = "outputs") -> list[tuple[str, TensorMeta]]:
    """Every tensor of a call's ``inputs`` or ``outputs`` with a label: ``out``, ``out[1][0]``, ``x``,
    ``in[1]``, ``['logits']``, or the conventional name where the structure is a known one (an LSTM's
    ``output``, ``h_n``, ``c_n``; a ``PackedSequence``'s ``.data``)."""
    names = KNOWN_NAMES.get((cls, role), {})
    root = "out" if role == "outputs" else "in"
    found = list(iter_tensors(value))
    out = []
    for path, meta in found:
        if path in names:
            out.append((names[path], meta))
            continue
        if role == "inputs" and path == "[0]" and len(found) == 1:
            out.append(("x", meta))
            continue
        if role == "kwargs":
            out.append((path[2:-2] if path.startswith("['") else path, meta))
            continue
        out.append((root + path, meta))
    return out


class _Metric:
    """A metric field (``timing``, ``memory``): assigning a mapping (``call.timing = {"total_ms": 2.0}``)
    stores the typed record. A data descriptor, so only these fields pay for the check (not every
    attribute of a ``Call``, which the tracer sets on its hot path)."""

    def __init__(self, kind: type) -> None:
        self.kind = kind

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = "_" + name

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return None  # the dataclass field's default
        return obj.__dict__.get(self.slot)

    def __set__(self, obj: Any, value: Any) -> None:
        if value is not None and not isinstance(value, self.kind):
            value = self.kind.coerce(value)  # type: ignore[attr-defined]
        obj.__dict__[self.slot] = value


@dataclass(eq=True)
class Call:
    """One invocation of one module's forward.

    ``id`` is the index in ``Trace.calls`` (start order); ``call_index`` counts calls of the same module
    object (0 for the first); ``start``/``end`` are positions in the trace's event order shared with ops.
    ``params`` counts the module's parameters including its children's (each shared parameter once),
    ``own_params`` only those registered on the module itself. ``error`` is the message of the exception
    that left this call (``None`` when it returned); ``side_inputs`` holds tensors the call consumed that
    were not passed in its arguments (read from an attribute or a hook's storage). ``timing``, ``flops``,
    ``memory`` and ``notes`` are filled by profiling (``shapetrace.tracer.metrics``).
    """

    id: int
    module: str
    cls: str
    call_index: int
    parent: int | None
    depth: int
    start: int
    end: int | None = None
    aliases: list[str] = field(default_factory=list)
    inputs: list[Value] = field(default_factory=list)
    kwargs: dict[str, Value] = field(default_factory=dict)
    outputs: Value = None
    params: int = 0
    own_params: int = 0
    trainable_params: int = 0
    buffers: int = 0
    side_inputs: list[Value] = field(default_factory=list)
    error: str | None = None
    timing: CallTiming | None = _Metric(CallTiming)  # type: ignore[assignment]
    flops: int | None = None
    memory: CallMemory | None = _Metric(CallMemory)  # type: ignore[assignment]
    notes: list[Note] = field(default_factory=list)
    # Source lines (``trace(..., lines=True)``): ``line`` is the line of the parent's forward that made this
    # call; ``code`` is ``{"source": key into Trace.sources, "ran": [lines of this call's forward that ran],
    # "raised": the line the exception left by}`` for this call's own forward.
    line: int | None = field(default=None, metadata=OMIT_DEFAULT)
    code: dict[str, Any] | None = field(default=None, metadata=OMIT_DEFAULT)
    # torch functions run inside this call, children's included (``ops=True``)
    op_count: int | None = field(default=None, metadata=OMIT_DEFAULT)
    # The NaN and Inf values in its output (``check_finite=True``), only where there are some
    nonfinite: CallNonfinite | None = field(default=None, metadata=OMIT_DEFAULT)

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def label(self) -> str:
        """The module name as shown to people: ``(root)`` for the model itself, ``#n`` for repeat calls."""
        name = self.module or "(root)"
        return name if self.call_index == 0 else f"{name}#{self.call_index}"


@dataclass(eq=True)
class Op:
    """A functional operation (``torch.cat``, ``+``, ``F.interpolate``, ``view``, indexing, ...) run in the
    forward code of a container module or outside any module. ``call`` is the enclosing call's id."""

    id: int
    name: str
    call: int | None
    order: int
    inputs: list[Value] = field(default_factory=list)
    outputs: Value = None
    timing: CallTiming | None = _Metric(CallTiming)  # type: ignore[assignment]
    flops: int | None = None
    # the line of the enclosing call's forward that ran it (``lines=True``)
    line: int | None = field(default=None, metadata=OMIT_DEFAULT)


@dataclass(frozen=True)
class Edge:
    """A tensor flowing from a producer to a consumer.

    Nodes are named ``"input:<i>"`` / ``"input:<kwarg>"`` (the forward's arguments), ``"call:<id>"``,
    ``"op:<id>"`` and ``"output:<path>"``. ``tid`` names the tensor (see ``TensorMeta.tid``); ``side`` is
    true when the consumer did not receive the tensor through its arguments.
    """

    src: str
    dst: str
    tid: int
    shape: tuple[int, ...]
    dtype: str
    side: bool = field(default=False, metadata=OMIT_DEFAULT)


@dataclass
class ModelInfo:
    """Facts about the traced model as a whole. Shared and tied parameters are counted once."""

    cls: str
    params: int = 0
    trainable_params: int = 0
    buffers: int = 0
    param_bytes: int = 0
    buffer_bytes: int = 0
    modules: int = 0
    shared_params: int = 0
    param_dtypes: dict[str, int] = field(default_factory=dict)  # parameter bytes by dtype ("float32": ...)


@dataclass
class Uncalled:
    """A module of the model that the forward never called (a fused fast path, an unused layer)."""

    module: str
    cls: str
    params: int = 0


def exception_text(type_name: str, message: str) -> str:
    """An exception as Python's traceback ends with it: ``ValueError: bad size``, or ``ValueError`` alone when
    it says nothing (never ``ValueError:`` with nothing after the colon)."""
    return f"{type_name}: {message}" if message else type_name


def profile_run_text(run: object, of: object, warmup: object = None) -> str:
    """One of a profile's runs in words, warm-ups and timed runs numbered apart: ``warm-up run 2 of 3``,
    ``timed run 1 of 20`` (``run`` of ``of`` counts both, warm-ups first); ``run 4 of 23 (warm-ups first)`` where
    the number of warm-ups is not known (a trace saved before it was kept)."""
    if isinstance(warmup, int) and isinstance(run, int) and isinstance(of, int) and 0 <= warmup <= of:
        if run <= warmup:
            return f"warm-up run {run} of {warmup}"
        return f"timed run {run - warmup} of {of - warmup}"
    return f"run {run} of {of} (warm-ups first)"


def raised_another(error: str | None, passed: str | None) -> bool:
    """Whether a call whose exception ``error`` left it raised another exception than ``passed``, the one that
    left the call inside it (``raise ValueError(...) from e``), not the same one passing through. A message
    ``passed`` extends with ``: ...`` (the trace's explanation added to an embedding's IndexError) is the same."""
    return error is not None and passed is not None and error != passed and not passed.startswith(f"{error}: ")


def raiser_name(call: Call) -> str:
    """Who raised an exception, for a sentence: ``the forward`` (the model's own call) or ``label (Class)``."""
    return "the forward" if call.parent is None else f"{call.label} ({call.cls})"


@dataclass
class Failure:
    """Where and how the forward failed: the innermost call the exception left, and the exception."""

    call: int | None
    type: str
    message: str

    @property
    def text(self) -> str:
        """``Type: message`` (``Type`` alone for an exception without a message); see ``exception_text``."""
        return exception_text(self.type, self.message)


@dataclass(eq=True, repr=False)
class Trace:
    """Everything one traced forward showed. Plain data: no torch, no module references.

    ``str(trace)`` is the shape table (as wide as the terminal, 100 columns when there is none);
    ``repr(trace)`` one line: model class, calls, parameters, format. IPython and Jupyter show the table.
    """

    model: ModelInfo
    calls: list[Call] = field(default_factory=list)
    inputs: list[Value] = field(default_factory=list)
    kwargs: dict[str, Value] = field(default_factory=dict)
    outputs: Value = None
    ops: list[Op] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    uncalled: list[Uncalled] = field(default_factory=list)
    failure: Failure | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    timing: TimingSummary | None = _Metric(TimingSummary)  # type: ignore[assignment]
    # The forwards' source text by key (``trace(..., lines=True)``): ``{"qualname", "file", "first_line",
    # "text": [lines]}``, or ``{"qualname", "missing": why}`` when there is no Python source to show.
    sources: dict[str, Any] = field(default_factory=dict, metadata=OMIT_DEFAULT)
    # ``(tid, first_tid)`` pairs: tensor ``tid`` is tensor ``first_tid`` passed through unchanged (a call returned
    # it as it was given, as ``Identity`` and ``Dropout`` in eval do): the same value, which totals count once.
    same_tensors: list[tuple[int, int]] = field(default_factory=list, metadata=OMIT_DEFAULT)
    format: str = FORMAT

    # ---- queries -------------------------------------------------------------------------------------
    @property
    def failed(self) -> bool:
        return self.failure is not None

    @property
    def failed_call(self) -> Call | None:
        if self.failure is None or self.failure.call is None:
            return None
        return self.calls[self.failure.call]

    def raised_instead(self) -> tuple[Call, str] | None:
        """What the forward finally raised when it is not the exception it failed with: a forward that caught
        the failure and raised another from it (``raise ValueError(...) from e``). The call that raised it
        first (the lowest on the way up from the failing call) and the exception's ``Type: message``; ``None``
        when the failure itself left the forward."""
        call = self.failed_call
        if call is None or self.failure is None:
            return None
        root = call
        while root.parent is not None:
            root = self.calls[root.parent]
        final = root.error
        # the failing call's own text (an interrupted call's "call did not finish", not the failure's "Interrupted")
        if not raised_another(final, call.error if call.error is not None else self.failure.text):
            return None
        raiser = root  # down from the root through the calls that raised the same: the deepest raised it (a
        while True:    # fallback that failed in its except clause, say)
            below = [c for c in self.children(raiser) if c.error == final and c is not call]
            if not below:
                break
            raiser = below[-1]
        return (raiser, final) if raiser is not call else None  # type: ignore[return-value]

    def children(self, call: Call | int | None) -> list[Call]:
        """Calls whose parent is ``call`` (``None`` for the top-level calls)."""
        cid = call.id if isinstance(call, Call) else call
        return [c for c in self.calls if c.parent == cid]

    def calls_of(self, module: str) -> list[Call]:
        """Every call of the module named ``module`` (its qualified name or one of its aliases)."""
        return [c for c in self.calls if c.module == module or module in c.aliases]

    def leaves(self) -> list[Call]:
        """The calls that called no other module (the innermost layers), in start order."""
        parents = {c.parent for c in self.calls}
        return [c for c in self.calls if c.id not in parents]

    def __repr__(self) -> str:
        n = len(self.calls)
        failed = f", failed in {self.failed_call.label}" if self.failed_call is not None else (
            ", failed" if self.failed else "")
        return (f"<Trace of {self.model.cls}: {n} call{'s' if n != 1 else ''}{failed}, "
                f"{self.model.params:,} params, {self.format}>")

    def __str__(self) -> str:
        from ..renderers.table import render_text  # noqa: PLC0415 - a display method's renderer (upward import)

        return render_text(self, width=shutil.get_terminal_size((100, 24)).columns)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython and Jupyter's plain-text display: the table (``repr`` stays one line). Inside a list, dict or
        other container (``[t1, t2]``) each trace is its ``repr``, so the container still reads as one."""
        nested = len(getattr(printer, "stack", ())) > 1
        if cycle or nested:
            printer.text(repr(self))
            return
        from ..renderers.rows import DISPLAY_MAX_ROWS  # noqa: PLC0415 - a display method's renderer (upward import)
        from ..renderers.table import render_text  # noqa: PLC0415 - a display method's renderer (upward import)

        printer.text(render_text(self, width=shutil.get_terminal_size((100, 24)).columns, max_rows=DISPLAY_MAX_ROWS))

    def lines(self, module: str = "") -> Any:
        """The source of ``module``'s forward (the root's by default) with what each line produced; needs a
        trace recorded with ``lines=True``. Displays in Jupyter; ``str()`` is the text form; ``.save(path)``."""
        from ..renderers.lines import LinesView  # noqa: PLC0415 - a display method's renderer (upward import)

        return LinesView(self, module)

    # ---- display (Jupyter, files): objects from ``shapetrace.renderers.display``, imported on use --------
    def table(self, **options: Any) -> Any:
        """The shape table: shows as HTML in Jupyter, ``str()`` is the text table, ``.save("t.html")``.

        Options: ``depth``, ``view`` (``"calls"``/``"modules"``), ``width`` (text), ``max_rows`` (Jupyter's
        display: 1,000 by default, ``None`` for every row)."""
        from ..renderers.display import Table  # noqa: PLC0415 - a display method's renderer (upward import)

        return Table(self, **options)

    def diagram(self, **options: Any) -> Any:
        """The Graphviz diagram: shows as SVG in Jupyter, ``.save("d.svg"|"d.png"|"d.pdf")``.

        Options: ``depth``, ``layout``, ``style``, ``unroll``, ``overlays``, ``options``, ``show_params``."""
        from ..renderers.display import Diagram  # noqa: PLC0415 - a display method's renderer (upward import)

        return Diagram(self, **options)

    def flow(self, **options: Any) -> Any:
        """The shape-flow chart (channels and spatial size along the forward): SVG in Jupyter, ``.save()``."""
        from ..renderers.display import Flow  # noqa: PLC0415 - a display method's renderer (upward import)

        return Flow(self, **options)

    def _repr_html_(self) -> str:
        """Jupyter shows a trace as its shape table (``shapetrace.renderers.html``, scoped CSS), its first
        ``DISPLAY_MAX_ROWS`` rows or so (``trace.table(max_rows=None)`` shows every row)."""
        from ..renderers.html import render_html  # noqa: PLC0415 - a display method's renderer (upward import)
        from ..renderers.rows import DISPLAY_MAX_ROWS  # noqa: PLC0415 - a display method's renderer (upward import)

        return render_html(self, max_rows=DISPLAY_MAX_ROWS)

    def __eq__(self, other: object) -> bool:
        """Equal when every field is, or failing that when both write the same JSON: a NaN recorded in a
        value (``masked_fill(mask, nan)``'s argument) is not equal to itself, yet ``load(t.to_json()) == t``."""
        if not isinstance(other, Trace):
            return NotImplemented
        if self is other:
            return True
        if all(getattr(self, f.name) == getattr(other, f.name) for f in dataclass_fields(Trace)):
            return True
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment] - mutable, compared by value

    # ---- JSON ----------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The trace as JSON-ready data (written by the generic codec from the field types)."""
        out = codec.encode(self, Trace)
        out["format"] = FORMAT
        return dict(sorted(out.items()))

    def to_json(self, indent: int | None = 1) -> str:
        """The trace as JSON text: the keys of records sorted, so the same trace gives the same bytes; the
        dicts and struct fields of values (a forward's dict output, its keyword arguments) in their own
        order, so a loaded trace shows them as the live one did."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, obj: Any) -> Trace:
        """Build a trace from JSON data, checking its structure; ``TraceFormatError`` names the first bad
        field (``calls[17].parent: no call 999``). Format-1 traces are upgraded on the way in."""
        if not isinstance(obj, dict):
            raise TraceFormatError("", f"a trace is a JSON object, this is {codec._kind(obj)}")
        fmt = obj.get("format")
        if not isinstance(fmt, str) or not fmt.startswith("shapetrace.trace/"):
            raise TraceFormatError("format", f"not a shapetrace trace (format is {fmt!r}, expected {FORMAT!r})")
        if fmt not in READABLE_FORMATS:
            raise TraceFormatError("format", f"trace format {fmt!r} is not supported by this shapetrace "
                                             f"(it reads {', '.join(map(repr, READABLE_FORMATS))}); "
                                             "a newer shapetrace may read it")
        if fmt == "shapetrace.trace/1":
            obj = _upgrade_v1(obj)
        trace = codec.decode({k: v for k, v in obj.items() if k != "format"}, Trace)
        _check_links(trace)
        _check_amounts(trace)
        check_sources(trace.sources, trace.calls, trace.ops)
        return trace

    @classmethod
    def from_json(cls, text: str) -> Trace:
        """The ``Trace`` a ``to_json()`` string holds (``shapetrace.load`` reads files); raises
        ``TraceFormatError`` saying which field is wrong when it is not a trace of a known format."""
        try:
            obj = _parse(text)
        except TraceFormatError:
            raise
        except ValueError:  # an integer longer than Python reads: read again, each such one standing in as a HugeInt
            obj = _parse(text, _int_or_huge)
        return cls.from_dict(obj)


def _parse(text: str, parse_int: Any = None) -> Any:
    """The JSON ``text`` parsed; ``TraceFormatError`` when it is not JSON, or nested past Python's recursion limit."""
    try:
        return json.loads(text, parse_int=parse_int)
    except RecursionError:
        raise TraceFormatError("", "the JSON is nested too deeply to read") from None
    except json.JSONDecodeError as e:
        raise TraceFormatError("", _json_problem(e, text)) from None


# What is left where the parser stopped, when the text was cut inside a value: a literal begun (``tru``), a lone
# minus sign, and (right after a number's digits) a fraction's point or an exponent's ``e`` with its sign.
_CUT_LITERAL = re.compile(r"n(?:u(?:l)?)?|t(?:r(?:u)?)?|f(?:a(?:l(?:s)?)?)?|-")
_CUT_NUMBER = re.compile(r"\.|[eE][-+]?")


def _ends_inside_a_value(e: json.JSONDecodeError, text: str) -> bool:
    """Whether ``text`` ends inside a value the parser could not finish: a string, a literal or a number."""
    rest = text[e.pos:].rstrip()
    if not rest or e.msg.startswith("Unterminated string"):
        return True
    after_digits = e.pos > 0 and text[e.pos - 1].isdigit()
    return bool(_CUT_LITERAL.fullmatch(rest) or (after_digits and _CUT_NUMBER.fullmatch(rest)))


def _json_problem(e: json.JSONDecodeError, text: str) -> str:
    """What is wrong with JSON ``text`` the parser stopped in: nothing at all (empty); cut short (it ends where
    more was expected, or inside a string, a literal or a number), said so with where it ends and what to do;
    else the parser's message."""
    if not text.strip():
        return ("empty: a saved trace is the JSON that trace.to_json() or 'shapetrace trace MODEL --format json "
                "-o FILE' writes")
    if not _ends_inside_a_value(e, text):
        return f"not valid JSON: {e}"
    end = text.rstrip()
    line, column = end.count("\n") + 1, len(end) - end.rfind("\n")
    rest = text[e.pos:].rstrip()
    if e.msg.startswith("Unterminated string"):
        inside = f"inside the string that starts at line {e.lineno} column {e.colno}"
    elif rest:
        inside = f"inside a value (a number, true, false or null) that stops at {rest!r}"
    else:
        inside = f"where the parser expected {e.msg.removeprefix('Expecting ')}"
    return (f"not complete JSON: it ends early, at line {line} column {column} after {len(end):,} characters, {inside}; "
            "it was likely cut short (a write or copy interrupted, a full disk): save the trace again (trace.to_json(), "
            "or shapetrace trace MODEL --format json -o FILE)")


# A call or op node: an id is a position in a list, written without leading zeros, in at most 19 digits (64 bits).
_NODE = re.compile(r"(call|op):(0|[1-9]\d{0,18})\Z")
# One with other digits: it names no record (``call:007``, ``call:`` and 5,000 digits).
_ODD_NODE = re.compile(r"(call|op):(\d+)\Z")


def _int_or_huge(text: str) -> int:
    """An integer of JSON text as ``json.loads`` reads it, or a ``HugeInt`` past the digits Python reads."""
    try:
        return int(text)
    except ValueError:
        return codec.HugeInt(text)


def _check_links(trace: Trace) -> None:  # noqa: C901 - one check per kind of link (parent, failure, ops, edges)
    """References between records point at records that exist: ids are positions, a parent starts before
    its children and is one level up, the failure, ops and edges name existing calls and ops."""
    n = len(trace.calls)
    for i, c in enumerate(trace.calls):
        where = f"calls[{i}]"
        if c.id != i:
            raise TraceFormatError(f"{where}.id", f"is {c.id}, expected {i} (a call's id is its position)")
        if c.call_index < 0:
            raise TraceFormatError(f"{where}.call_index", f"cannot be negative ({c.call_index})")
        if c.parent is None:
            if c.depth != 0:
                raise TraceFormatError(f"{where}.depth", f"is {c.depth}, expected 0 for a call without a parent")
            continue
        if not 0 <= c.parent < n:
            raise TraceFormatError(f"{where}.parent", f"no call {c.parent}")
        if c.parent >= i:
            raise TraceFormatError(f"{where}.parent", f"call {c.parent} starts after this call")
        expected = trace.calls[c.parent].depth + 1
        if c.depth != expected:
            raise TraceFormatError(f"{where}.depth", f"is {c.depth}, expected {expected} (its parent's + 1)")
    if trace.failure is not None and trace.failure.call is not None and not 0 <= trace.failure.call < n:
        raise TraceFormatError("failure.call", f"no call {trace.failure.call}")
    for i, op in enumerate(trace.ops):
        if op.id != i:
            raise TraceFormatError(f"ops[{i}].id", f"is {op.id}, expected {i} (an op's id is its position)")
        if op.call is not None and not 0 <= op.call < n:
            raise TraceFormatError(f"ops[{i}].call", f"no call {op.call}")
    sizes = {"call": n, "op": len(trace.ops)}
    for i, e in enumerate(trace.edges):
        for end in ("src", "dst"):
            node = getattr(e, end)
            m = _NODE.match(node)
            if m is None and not node.startswith(("input:", "output:")):
                odd = _ODD_NODE.match(node)
                if odd:
                    raise TraceFormatError(f"edges[{i}].{end}", f"no {odd.group(1)} {_quoted(odd.group(2))} (an id is "
                                                                "written without leading zeros, in at most 19 digits)")
                raise TraceFormatError(f"edges[{i}].{end}", f"{_quoted(node)} names no node (call:<id>, op:<id>, "
                                                            "input:<name> or output:<path>)")
            if m and not int(m.group(2)) < sizes[m.group(1)]:
                raise TraceFormatError(f"edges[{i}].{end}", f"no {m.group(1)} {m.group(2)}")
    for i, pair in enumerate(trace.same_tensors):
        if len(pair) != 2 or not 0 <= pair[1] < pair[0]:
            raise TraceFormatError(f"same_tensors[{i}]", f"expected [tid, an earlier tid], got {list(pair)}")


def _quoted(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


# Fields that count or measure something, so cannot be negative: a call's, and the model's.
_COUNTS = ("params", "own_params", "trainable_params", "buffers", "flops", "op_count")
# The notes that print their ``count`` (and ``of``: ``ran in 3 of 5 timed runs``), which they must then hold.
_NOTE_NUMBERS = {"flops-analytic": ("count",), "cuda-graph-launches": ("count",), "untraced-calls": ("count",),
                 "ran-in-some-timed-runs": ("count", "of")}
_MODEL_COUNTS = ("params", "trainable_params", "buffers", "param_bytes", "buffer_bytes", "modules", "shared_params")


def _check_amounts(trace: Trace) -> None:
    """Counts, sizes and times are not negative: the model's, each call's, op's, uncalled module's and edge's,
    and the trace-level timing.

    (A call's ``end`` may precede its ``start``: a forward as deep as Python allows can cut a call's start
    short, and such a call is given the event order of where it was noticed.)"""
    _check_counts(trace.model, _MODEL_COUNTS, "model")
    _check_counts(trace.model.param_dtypes, trace.model.param_dtypes, "model.param_dtypes")
    for i, c in enumerate(trace.calls):
        where = f"calls[{i}]"
        _check_counts(c, _COUNTS, where)
        for metric, prefix in ((c.timing, "timing"), (c.memory, "memory"), (c.nonfinite, "nonfinite")):
            _check_not_negative(metric, f"{where}.{prefix}")
        if c.notes:
            _check_notes(c.notes, f"{where}.notes")
    for i, op in enumerate(trace.ops):
        _check_counts(op, ("flops",), f"ops[{i}]")
        _check_not_negative(op.timing, f"ops[{i}].timing")
    for i, u in enumerate(trace.uncalled):
        _check_counts(u, ("params",), f"uncalled[{i}]")
    for i, e in enumerate(trace.edges):
        _check_counts(e, ("tid",), f"edges[{i}]")
        _check_shape(e.shape, f"edges[{i}].shape")
        _check_name(e.dtype, f"edges[{i}].dtype")
    _check_not_negative(trace.timing, "timing")
    for name in trace.model.param_dtypes:
        _check_name(name, codec.key_path("model.param_dtypes", name))
    for name in ("dtype", "device"):
        value = getattr(trace.timing, name, None)
        if isinstance(value, str):
            _check_name(value, f"timing.{name}")


def _check_notes(notes: list[Note], path: str) -> None:
    """A note's numbers are not negative, and a note that prints a number (``ran in 3 of 5 timed runs``) has it."""
    for i, note in enumerate(notes):
        _check_counts(note, ("count", "of"), f"{path}[{i}]")
        missing = next((k for k in _NOTE_NUMBERS.get(note.code, ()) if getattr(note, k) is None), None)
        if missing is not None:
            raise TraceFormatError(f"{path}[{i}].{missing}", f"missing: a {note.code!r} note states its {missing}")


def _check_counts(record: Any, names: Iterable[str], path: str) -> None:
    """The fields ``names`` of ``record`` (or the values of a dict ``record``) are not negative."""
    for name in names:
        value = record[name] if isinstance(record, dict) else getattr(record, name)
        if value is not None and value < 0:
            raise TraceFormatError(codec.key_path(path, name), f"cannot be negative ({value})")


def _check_not_negative(metric: Any, path: str) -> None:
    for name, value in (vars(metric).items() if metric is not None else ()):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            raise TraceFormatError(f"{path}.{name}", f"cannot be negative ({value})")


# ---- reading format 1 ----------------------------------------------------------------------------------
_V1_KINDS = {"cuda-kernels (profiler)": KIND_PROFILER, "cuda-events (GPU span, includes idle)": KIND_EVENTS}
_V1_NOTES = (
    (re.compile(r"flops: analytic .* formula \(FlopCounterMode counted (\d+)\)\Z"), "flops-analytic"),
    (re.compile(r"torch\.compile'd region: timed as a whole"), "compiled-region"),
    (re.compile(r"inside a torch\.compile'd region"), "inside-compiled-region"),
    (re.compile(r"(\d+) CUDA-graph launch"), "cuda-graph-launches"),
    (re.compile(r"not called in the timed runs"), "not-timed"),
)


def _v1_note(text: Any) -> Any:
    if not isinstance(text, str):
        return text  # left for the decoder to report
    for pattern, code in _V1_NOTES:
        m = pattern.match(text)
        if m:
            return {"code": code, **({"count": int(m.group(1))} if m.groups() else {})}
    return {"code": "text", "text": text}


def _v1_timing(timing: Any) -> Any:
    if not isinstance(timing, dict):
        return timing
    out = {k: v for k, v in timing.items() if v is not None}
    if out.get("kind") in _V1_KINDS:
        out["kind"] = _V1_KINDS[out["kind"]]
    fallback = out.get("fallback")
    if isinstance(fallback, str):
        if fallback.startswith("torch.profiler failed: "):
            out["fallback"], out["fallback_error"] = FALLBACK_PROFILER_ERROR, fallback.split(": ", 1)[1]
        else:
            out["fallback"] = FALLBACK_NO_KERNELS
    return out


def _upgrade_v1(obj: dict[str, Any]) -> dict[str, Any]:
    """A format-1 trace as format 2: timer kinds and the fallback become codes, notes become ``Note``s.

    Nothing else changed between the two formats; anything malformed is left for the decoder to report.
    """
    out = dict(obj, format=FORMAT, timing=_v1_timing(obj.get("timing")))
    calls = obj.get("calls")
    if isinstance(calls, list):
        out["calls"] = [_upgrade_v1_call(c) for c in calls]
    ops = obj.get("ops")
    if isinstance(ops, list):
        out["ops"] = [dict(o, timing=_v1_timing(o.get("timing"))) if isinstance(o, dict) else o for o in ops]
    if isinstance(obj.get("meta"), dict):
        out["meta"] = {k: v for k, v in obj["meta"].items() if k != "profile_note"}
    return out


def _upgrade_v1_call(call: Any) -> Any:
    if not isinstance(call, dict):
        return call
    out = dict(call, timing=_v1_timing(call.get("timing")))
    if isinstance(call.get("notes"), list):
        out["notes"] = [_v1_note(n) for n in call["notes"]]
    return out


@dataclass(frozen=True)
class Difference:
    """One point where shapetrace and another tool (torchinfo, torchview) disagree about one call (``call`` is ours, ``None`` for totals)."""

    layer: str
    what: str
    shapetrace: str
    other: str
    why: str
    call: int | None = None


@dataclass(frozen=True)
class Comparison:
    """The outcome of one comparison: which tool, how many calls each saw, and the differences."""

    tool: str
    our_calls: int
    their_calls: int
    matched: int
    differences: list[Difference]


def load(path_or_text: str | os.PathLike[str] | bytes | dict[str, Any] | IO[Any]) -> Trace:
    """Load a trace from a JSON file path, JSON text or bytes, an open file, or the parsed JSON object
    (format 2, or format 1 upgraded).

    A path is a ``str`` or any ``os.PathLike``. A ``str`` is JSON text when it starts with ``{`` or ``[``
    and names no existing file (``"[run1].json"`` in the working directory is read as a file).

    A path is read when it names a regular file of at most 1 GiB or a descriptor the process holds
    (``/dev/stdin``, ``/dev/fd/N``); a FIFO or a device (``/dev/zero``) is refused rather than read, and an
    open stream is read up to the same limit (``tracer.tracefile``, the rule the command line follows too).

    Raises ``TraceFormatError`` (a ``ValueError``) naming the first bad field when the JSON is not a trace,
    ``TraceFileRefused`` (an ``OSError``) for a path or stream that is not read, saying what to do, and
    ``OSError`` when a path cannot be read.
    """
    if isinstance(path_or_text, dict):
        return Trace.from_dict(path_or_text)
    if hasattr(path_or_text, "read"):
        path_or_text = read_bounded(path_or_text, "the stream")
    if isinstance(path_or_text, (bytes, bytearray)):
        return Trace.from_json(_utf8(bytes(path_or_text), "the data"))
    if isinstance(path_or_text, os.PathLike):
        path = Path(os.fsdecode(os.fspath(path_or_text)))
        return _from_file(read_path(path), str(path))
    if not isinstance(path_or_text, str):
        raise TypeError(f"shapetrace.load() takes a path, JSON text or bytes, an open file or a dict, not "
                        f"{type(path_or_text).__name__}")
    text = path_or_text.lstrip("\ufeff")
    if not text.strip():
        raise TraceFormatError("", "empty: pass the path of a trace's JSON file, or its JSON text")
    could_be_path = len(text) < 4096 and "\n" not in text
    if text.lstrip().startswith(("{", "[")) and not (could_be_path and os.path.isfile(text)):
        return _from_json_text(text, could_be_path)
    return _from_file(read_path(text), text)


def _from_file(data: bytes, name: str) -> Trace:
    """The trace in the file ``name`` holding ``data``; a file that is not JSON is named in the error."""
    try:
        return Trace.from_json(_utf8(data, name))
    except TraceFormatError as e:
        if e.path == "(top level)" and e.problem.startswith(("not valid JSON", "not complete JSON", "empty:")):
            raise TraceFormatError("", f"{name!r} is {e.problem}") from None
        raise


def _from_json_text(text: str, could_be_path: bool) -> Trace:
    """The trace in JSON ``text``; when it is not JSON but one line that could name a file (``{run}.json``),
    the error says no such file exists either."""
    try:
        return Trace.from_json(text)
    except TraceFormatError as e:
        if could_be_path and e.problem.startswith(("not valid JSON", "not complete JSON")):
            raise TraceFormatError(e.path, f"{e.problem} (and there is no file named {text!r})") from None
        raise


# Byte-order marks of the encodings JSON may come in (RFC 8259 asks for UTF-8, but Windows PowerShell 5's `>`
# writes UTF-16): UTF-32's first, as its little-endian mark starts with UTF-16's.
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF16_LE, "utf-16"),
         (codecs.BOM_UTF16_BE, "utf-16"))


def _utf8(data: bytes, where: str) -> str:
    """JSON bytes as text: UTF-8, or UTF-16 or UTF-32 that start with their byte-order mark (the mark dropped)."""
    encoding = next((name for bom, name in _BOMS if data.startswith(bom)), None)
    if encoding is not None:
        try:
            return data.decode(encoding)
        except UnicodeDecodeError as e:
            raise TraceFormatError("", f"{where} starts with a {encoding.upper()} byte-order mark but is not "
                                       f"{encoding.upper()} text (byte {e.start}); write the trace with -o FILE "
                                       "(UTF-8) rather than a shell's '>'") from None
    if 0 in data[:4]:  # JSON holds no NUL byte: each ASCII character of UTF-16 or UTF-32 text has one or three
        encoding = "UTF-32" if data[:4].count(0) == 3 else "UTF-16"
        raise TraceFormatError("", f"{where} looks like {encoding} text without a byte-order mark (it starts with "
                                   f"{data[:4]!r}), not UTF-8; write the trace with -o FILE (UTF-8) rather than a "
                                   "shell's '>', or convert it to UTF-8")
    try:
        return data.decode("utf-8-sig").lstrip("\ufeff")  # marks after the first too, as load() of text drops them
    except UnicodeDecodeError as e:
        raise TraceFormatError("", f"{where} is not UTF-8 text (byte {e.start}: {data[e.start:e.start + 1]!r}); "
                                   "a trace is JSON, written by shapetrace as UTF-8") from None
