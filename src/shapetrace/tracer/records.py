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

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

FORMAT = "shapetrace.trace/1"

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
    tid: int | None = None
    requires_grad: bool = False

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def itemsize(self) -> int:
        return dtype_itemsize(self.dtype)

    @property
    def nbytes(self) -> int:
        return self.numel * self.itemsize

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"shape": list(self.shape), "dtype": self.dtype, "device": self.device}
        if self.tid is not None:
            out["tid"] = self.tid
        if self.requires_grad:
            out["requires_grad"] = True
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> TensorMeta:
        return cls(
            shape=tuple(int(s) for s in obj["shape"]),
            dtype=obj["dtype"],
            device=obj["device"],
            tid=obj.get("tid"),
            requires_grad=bool(obj.get("requires_grad", False)),
        )


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

_ITEMSIZE = {
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "complex128": 16, "complex64": 8,
    "complex32": 4, "int64": 8, "int32": 4, "int16": 2, "int8": 1, "uint8": 1, "uint16": 2,
    "uint32": 4, "uint64": 8, "bool": 1, "float8_e4m3fn": 1, "float8_e5m2": 1, "float8_e4m3fnuz": 1,
    "float8_e5m2fnuz": 1, "quint8": 1, "qint8": 1, "qint32": 4,
}


def dtype_itemsize(dtype: str) -> int:
    """Bytes per element of a dtype named as in ``TensorMeta.dtype`` (4 when unknown)."""
    return _ITEMSIZE.get(dtype, 4)


def value_to_json(value: Value) -> Any:
    """Encode a value tree as JSON-ready data (see the module docstring)."""
    if isinstance(value, TensorMeta):
        return value.to_json()
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


def value_from_json(obj: Any) -> Value:
    """Decode what :func:`value_to_json` wrote."""
    if isinstance(obj, list):
        return [value_from_json(v) for v in obj]
    if isinstance(obj, dict):
        if "__dict__" in obj and len(obj) == 1:
            return {k: value_from_json(v) for k, v in obj["__dict__"].items()}
        if "__struct__" in obj:
            return Struct(obj["__struct__"], {k: value_from_json(v) for k, v in obj["fields"].items()})
        if "__object__" in obj:
            return Opaque(obj["__object__"], obj["repr"])
        if _FLOAT_TAG in obj:
            return float(obj[_FLOAT_TAG])
        if _TENSOR_KEYS <= obj.keys():
            return TensorMeta.from_json(obj)
        return {k: value_from_json(v) for k, v in obj.items()}
    return obj


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


@dataclass
class Call:
    """One invocation of one module's forward.

    ``id`` is the index in ``Trace.calls`` (start order); ``call_index`` counts calls of the same module
    object (0 for the first); ``start``/``end`` are positions in the trace's event order shared with ops.
    ``params`` counts the module's parameters including its children's (each shared parameter once),
    ``own_params`` only those registered on the module itself. ``error`` is the message of the exception
    that left this call (``None`` when it returned); ``side_inputs`` holds tensors the call consumed that
    were not passed in its arguments (read from an attribute or a hook's storage).
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
    inputs: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    outputs: Value = None
    params: int = 0
    own_params: int = 0
    trainable_params: int = 0
    buffers: int = 0
    side_inputs: list = field(default_factory=list)
    error: str | None = None
    timing: dict | None = None
    flops: int | None = None
    memory: dict | None = None
    notes: list[str] = field(default_factory=list)
    # Source lines (``trace(..., lines=True)``): ``line`` is the line of the parent's forward that made this
    # call; ``code`` is ``{"source": key into Trace.sources, "ran": [lines of this call's forward that ran],
    # "raised": the line the exception left by}`` for this call's own forward.
    line: int | None = None
    code: dict | None = None
    op_count: int | None = None  # torch functions run inside this call, children's included (``ops=True``)

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def label(self) -> str:
        """The module name as shown to people: ``(root)`` for the model itself, ``#n`` for repeat calls."""
        name = self.module or "(root)"
        return name if self.call_index == 0 else f"{name}#{self.call_index}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "module": self.module, "cls": self.cls, "call_index": self.call_index,
            "parent": self.parent, "depth": self.depth, "start": self.start, "end": self.end,
            "aliases": list(self.aliases),
            "inputs": value_to_json(self.inputs), "kwargs": value_to_json(self.kwargs),
            "outputs": value_to_json(self.outputs),
            "params": self.params, "own_params": self.own_params,
            "trainable_params": self.trainable_params, "buffers": self.buffers,
            "side_inputs": value_to_json(self.side_inputs),
            "error": self.error, "timing": self.timing, "flops": self.flops, "memory": self.memory,
            "notes": list(self.notes),
        }
        if self.line is not None:
            out["line"] = self.line
        if self.code is not None:
            out["code"] = self.code
        if self.op_count is not None:
            out["op_count"] = self.op_count
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Call:
        return cls(
            id=obj["id"], module=obj["module"], cls=obj["cls"], call_index=obj["call_index"],
            parent=obj["parent"], depth=obj["depth"], start=obj["start"], end=obj.get("end"),
            aliases=list(obj.get("aliases", [])),
            inputs=value_from_json(obj.get("inputs", [])), kwargs=value_from_json(obj.get("kwargs", {})),
            outputs=value_from_json(obj.get("outputs")),
            params=obj.get("params", 0), own_params=obj.get("own_params", 0),
            trainable_params=obj.get("trainable_params", 0), buffers=obj.get("buffers", 0),
            side_inputs=value_from_json(obj.get("side_inputs", [])),
            error=obj.get("error"), timing=obj.get("timing"), flops=obj.get("flops"),
            memory=obj.get("memory"), notes=list(obj.get("notes", [])),
            line=obj.get("line"), code=obj.get("code"), op_count=obj.get("op_count"),
        )


@dataclass
class Op:
    """A functional operation (``torch.cat``, ``+``, ``F.interpolate``, ``view``, indexing, ...) run in the
    forward code of a container module or outside any module. ``call`` is the enclosing call's id."""

    id: int
    name: str
    call: int | None
    order: int
    inputs: list = field(default_factory=list)
    outputs: Value = None
    timing: dict | None = None
    flops: int | None = None
    line: int | None = None  # the line of the enclosing call's forward that ran it (``lines=True``)

    def to_json(self) -> dict[str, Any]:
        out = {
            "id": self.id, "name": self.name, "call": self.call, "order": self.order,
            "inputs": value_to_json(self.inputs), "outputs": value_to_json(self.outputs),
            "timing": self.timing, "flops": self.flops,
        }
        if self.line is not None:
            out["line"] = self.line
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Op:
        return cls(
            id=obj["id"], name=obj["name"], call=obj["call"], order=obj["order"],
            inputs=value_from_json(obj.get("inputs", [])), outputs=value_from_json(obj.get("outputs")),
            timing=obj.get("timing"), flops=obj.get("flops"), line=obj.get("line"),
        )


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
    side: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"src": self.src, "dst": self.dst, "tid": self.tid, "shape": list(self.shape),
                               "dtype": self.dtype}
        if self.side:
            out["side"] = True
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Edge:
        return cls(obj["src"], obj["dst"], obj["tid"], tuple(obj["shape"]), obj["dtype"],
                   bool(obj.get("side", False)))


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

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ModelInfo:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in obj.items() if k in known})


@dataclass
class Uncalled:
    """A module of the model that the forward never called (a fused fast path, an unused layer)."""

    module: str
    cls: str
    params: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"module": self.module, "cls": self.cls, "params": self.params}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Uncalled:
        return cls(obj["module"], obj["cls"], obj.get("params", 0))


@dataclass
class Failure:
    """Where and how the forward failed: the innermost call the exception left, and the exception."""

    call: int | None
    type: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"call": self.call, "type": self.type, "message": self.message}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Failure:
        return cls(obj.get("call"), obj["type"], obj["message"])


@dataclass
class Trace:
    """Everything one traced forward showed. Plain data: no torch, no module references."""

    model: ModelInfo
    calls: list[Call] = field(default_factory=list)
    inputs: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    outputs: Value = None
    ops: list[Op] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    uncalled: list[Uncalled] = field(default_factory=list)
    failure: Failure | None = None
    meta: dict = field(default_factory=dict)
    timing: dict | None = None
    # The forwards' source text by key (``trace(..., lines=True)``): ``{"qualname", "file", "first_line",
    # "text": [lines]}``, or ``{"qualname", "missing": why}`` when there is no Python source to show.
    sources: dict = field(default_factory=dict)
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

    def children(self, call: Call | int | None) -> list[Call]:
        """Calls whose parent is ``call`` (``None`` for the top-level calls)."""
        cid = call.id if isinstance(call, Call) else call
        return [c for c in self.calls if c.parent == cid]

    def calls_of(self, module: str) -> list[Call]:
        """Every call of the module named ``module`` (its qualified name or one of its aliases)."""
        return [c for c in self.calls if c.module == module or module in c.aliases]

    def leaves(self) -> list[Call]:
        parents = {c.parent for c in self.calls}
        return [c for c in self.calls if c.id not in parents]

    def lines(self, module: str = "") -> Any:
        """The source of ``module``'s forward (the root's by default) with what each line produced; needs a
        trace recorded with ``lines=True``. Displays in Jupyter; ``str()`` is the text form; ``.save(path)``."""
        from ..renderers.lines import LinesView

        return LinesView(self, module)

    # ---- display (Jupyter, files): objects from ``shapetrace.renderers.display``, imported on use --------
    def table(self, **options: Any) -> Any:
        """The shape table: shows as HTML in Jupyter, ``str()`` is the text table, ``.save("t.html")``.

        Options: ``depth``, ``view`` (``"calls"``/``"modules"``), ``width`` (text)."""
        from ..renderers.display import Table

        return Table(self, **options)

    def diagram(self, **options: Any) -> Any:
        """The Graphviz diagram: shows as SVG in Jupyter, ``.save("d.svg"|"d.png"|"d.pdf")``.

        Options: ``depth``, ``layout``, ``style``, ``unroll``, ``overlays``, ``options``, ``show_params``."""
        from ..renderers.display import Diagram

        return Diagram(self, **options)

    def flow(self, **options: Any) -> Any:
        """The shape-flow chart (channels and spatial size along the forward): SVG in Jupyter, ``.save()``."""
        from ..renderers.display import Flow

        return Flow(self, **options)

    def _repr_html_(self) -> str:
        """Jupyter shows a trace as its shape table (``shapetrace.renderers.html``, scoped CSS)."""
        from ..renderers.html import render_html

        return render_html(self)

    # ---- JSON ----------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "model": self.model.to_json(),
            "inputs": value_to_json(self.inputs),
            "kwargs": value_to_json(self.kwargs),
            "outputs": value_to_json(self.outputs),
            "calls": [c.to_json() for c in self.calls],
            "ops": [o.to_json() for o in self.ops],
            "edges": [e.to_json() for e in self.edges],
            "uncalled": [u.to_json() for u in self.uncalled],
            "failure": self.failure.to_json() if self.failure else None,
            "timing": self.timing,
            "meta": self.meta,
            **({"sources": self.sources} if self.sources else {}),
        }

    def to_json(self, indent: int | None = 1) -> str:
        """The trace as JSON text (sorted keys, so the same trace gives the same bytes)."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True, allow_nan=False)

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Trace:
        fmt = obj.get("format")
        if not isinstance(fmt, str) or not fmt.startswith("shapetrace.trace/"):
            raise ValueError(f"not a shapetrace trace (format is {fmt!r}, expected {FORMAT!r})")
        if fmt != FORMAT:
            raise ValueError(f"trace format {fmt!r} is not supported by this shapetrace (reads {FORMAT!r})")
        return cls(
            format=fmt,
            model=ModelInfo.from_json(obj["model"]),
            inputs=value_from_json(obj.get("inputs", [])),
            kwargs=value_from_json(obj.get("kwargs", {})),
            outputs=value_from_json(obj.get("outputs")),
            calls=[Call.from_json(c) for c in obj.get("calls", [])],
            ops=[Op.from_json(o) for o in obj.get("ops", [])],
            edges=[Edge.from_json(e) for e in obj.get("edges", [])],
            uncalled=[Uncalled.from_json(u) for u in obj.get("uncalled", [])],
            failure=Failure.from_json(obj["failure"]) if obj.get("failure") else None,
            timing=obj.get("timing"),
            meta=obj.get("meta", {}),
            sources=obj.get("sources", {}),
        )

    @classmethod
    def from_json(cls, text: str) -> Trace:
        return cls.from_dict(json.loads(text))


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


def load(path_or_text: str | Path) -> Trace:
    """Load a trace from a JSON file path or from JSON text."""
    if isinstance(path_or_text, Path):
        return Trace.from_json(path_or_text.read_text(encoding="utf-8"))
    text = path_or_text
    if not text.lstrip().startswith("{"):
        text = Path(text).read_text(encoding="utf-8")
    return Trace.from_json(text)
