"""Shape tables: a ``Trace`` rendered as text, Markdown, HTML or CSV.

Every function here is pure (``Trace`` + options -> ``str``), imports ``shapetrace.tracer.records`` only
(never torch), and gives the same bytes for the same trace.

Views
-----
* ``view="calls"`` (default): one row per module call, in start order, indented by depth. A module called
  several times has one row per call (``call`` column ``k/N``). ``depth=N`` hides calls deeper than ``N``;
  the row of a call at depth ``N`` then notes how many calls it folds.
* ``view="modules"``: one row per module (first-call order) with its number of calls and the distinct
  input/output shapes of its calls (``×k`` when a shape repeats).

Columns: layer, class, call, input shapes, output shapes, params (the module's parameters including its
children's, each shared parameter once; ``(recursive)`` on repeat calls, as torchinfo writes it),
trainable. When calls carry ``timing`` / ``flops`` / ``memory`` (filled by profiling) the columns ``ms``,
``%`` (share of the forward), ``self ms``, ``host ms`` (on a GPU: the launching host time), ``FLOPs``,
``FLOP/s`` (achieved, with an SI prefix: FLOPs over the call's total time; FLOPs are inclusive),
``act mem`` and, on CUDA, ``peak mem`` (the allocator's peak during the call) are added.

Totals follow torchinfo's summary: total / trainable / non-trainable parameters (shared parameters once),
params size, forward/backward pass size (output bytes of the leaf calls that own parameters, ×2 for the
gradients, torchinfo's estimate), input size and their sum, all in MB (10^6 bytes). A profile adds how it
was timed, the plain and profiled forward with the overhead, the sum of the self times and, on a GPU, the
kernel time and idle share. Modules the forward never called are listed, and the calls' own notes (an
analytic FLOP count, a ``torch.compile``d region, CUDA-graph launches); a failed forward shows the partial
table with the failing call marked ``✗``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..tracer.records import Call, Opaque, Struct, TensorMeta, Trace, Value, iter_tensors
from .units import fallback_text, note_text, timer_kind_text

__all__ = [
    "FORMATS",
    "Totals",
    "format_value",
    "render",
    "render_csv",
    "render_html",
    "render_markdown",
    "render_text",
    "totals",
]

FORMATS = ("text", "md", "html", "csv")
MB = 1_000_000
FAIL_MARK = "✗"


# ---- values ------------------------------------------------------------------------------------------
def _shape(m: TensorMeta) -> str:
    s = "(" + ",".join(str(d) for d in m.shape) + ("," if len(m.shape) == 1 else "") + ")"
    return s if m.dtype == "float32" else f"{s} {m.dtype}"


def _full(value: Value) -> str:
    """The whole value tree, structure kept: ``[(4,72,400), [(1,4,400), (1,4,400)]]``."""
    if isinstance(value, TensorMeta):
        return _shape(value)
    if isinstance(value, Struct):
        return f"{value.kind}(" + ", ".join(f"{k}={_full(v)}" for k, v in value.fields.items()) + ")"
    if isinstance(value, Opaque):
        return value.kind.rpartition(".")[2]
    if isinstance(value, list):
        return "[" + ", ".join(_full(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_full(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return repr(value) if len(value) <= 12 else repr(value[:9]) + "…"
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value)


def _top(value: Value) -> str:
    """A call's positional inputs without the outer brackets when there is one argument."""
    if isinstance(value, list) and len(value) == 1:
        return _full(value[0])
    if isinstance(value, list):
        return ", ".join(_full(v) for v in value)
    return _full(value)


def format_value(value: Value, max_len: int | None = None, *, top: bool = False) -> str:
    """A value tree as text; longer than ``max_len`` -> the first tensors shown and ``+k more``.

    With ``top=True`` a one-element list (a call's single argument) is shown without brackets.
    """
    text = _top(value) if top else _full(value)
    if max_len is None or len(text) <= max_len:
        return text
    tensors = [_shape(m) for _, m in iter_tensors(value)]
    if not tensors:
        return text[: max(max_len - 1, 1)] + "…"
    shown: list[str] = []
    for i, t in enumerate(tensors):
        rest = len(tensors) - i - 1
        tail = f" +{rest} more" if rest else ""
        candidate = ", ".join([*shown, t]) + tail
        if len(candidate) > max_len and shown:
            break
        shown.append(t)
    rest = len(tensors) - len(shown)
    out = ", ".join(shown) + (f" +{rest} more" if rest else "")
    if len(out) > max_len:  # even one shape is too long
        more = f" +{rest} more" if rest else ""
        out = shown[0][: max(max_len - len(more) - 1, 1)] + "…" + more
    return out


def _ellipsize(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    return text[: width - 1] + "…"


def _ellipsize_middle(text: str, width: int) -> str:
    if len(text) <= width or width < 5:
        return _ellipsize(text, width)
    left = (width - 1) // 2
    right = width - 1 - left
    return text[:left] + "…" + text[len(text) - right:]


def _si(n: float, unit: str = "") -> str:
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= factor:
            return f"{n / factor:.2f}{prefix}{unit}"
    return f"{n:.0f}{unit}"


def _bytes(n: float) -> str:
    for factor, unit in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= factor:
            return f"{n / factor:.1f} {unit}"
    return f"{n:.0f} B"


# ---- totals ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Totals:
    """torchinfo-style totals of a trace (sizes in bytes)."""

    params: int
    trainable: int
    shared: int
    param_bytes: int
    activation_bytes: int
    input_bytes: int

    @property
    def non_trainable(self) -> int:
        return self.params - self.trainable

    @property
    def total_bytes(self) -> int:
        return self.param_bytes + self.activation_bytes + self.input_bytes

    def lines(self) -> list[tuple[str, str]]:
        out = [("Total params", f"{self.params:,}"), ("Trainable params", f"{self.trainable:,}"),
               ("Non-trainable params", f"{self.non_trainable:,}")]
        if self.shared:
            out.append(("Shared params (counted once)", f"{self.shared:,}"))
        out += [("Input size (MB)", f"{self.input_bytes / MB:.2f}"),
                ("Forward/backward pass size (MB)", f"{self.activation_bytes / MB:.2f}"),
                ("Params size (MB)", f"{self.param_bytes / MB:.2f}"),
                ("Estimated total size (MB)", f"{self.total_bytes / MB:.2f}")]
        return out


def _summary_lines(trace: Trace, fwd: float | None) -> list[tuple[str, str]]:
    """The totals, then for a profile how it was timed, the plain and profiled forward with the overhead,
    what the self times add up to and, on a GPU, the kernel time and the share the GPU sat idle."""
    out = totals(trace).lines()
    t = trace.timing or {}

    def ms(key: str) -> str | None:
        v = t.get(key)
        return f"{v:.3f}" if isinstance(v, (int, float)) else None

    if not t:
        return out + ([("Forward time (ms)", f"{fwd:.3f}")] if fwd is not None else [])
    timed = (f"{timer_kind_text(t.get('kind'))} on {t.get('device')}, {t.get('dtype')}, {t.get('repeats')} "
             f"repeats after {t.get('warmup')} warm-up")
    out.append(("Timed", timed))
    why = fallback_text(trace.timing) if trace.timing else None
    if why:
        out.append(("GPU timer", f"CUDA events instead of torch.profiler: {why}"))
    if ms("forward_ms") and ms("profiled_ms"):
        over = t.get("overhead")
        over_text = f" ({over:.2f}× overhead)" if isinstance(over, (int, float)) else ""
        out.append(("Forward time (ms)", f"{ms('forward_ms')} plain, {ms('profiled_ms')} profiled{over_text}"))
    for key, label in (("attributed_ms", "Self times add up to (ms)"), ("kernel_ms", "GPU kernel time (ms)")):
        value = ms(key)
        if value is not None:
            out.append((label, value))
    if isinstance(t.get("gpu_idle_fraction"), (int, float)):
        out.append(("GPU idle", f"{100 * t['gpu_idle_fraction']:.1f}% of the forward"))
    return out


def _nbytes(value: Value) -> int:
    return sum(m.nbytes for _, m in iter_tensors(value))


def totals(trace: Trace) -> Totals:
    """Parameter and size totals; see the module docstring for what each one counts."""
    parents = {c.parent for c in trace.calls}
    act = sum(2 * _nbytes(c.outputs) for c in trace.calls
              if c.id not in parents and c.params > 0 and c.error is None)
    m = trace.model
    return Totals(params=m.params, trainable=m.trainable_params, shared=m.shared_params,
                  param_bytes=m.param_bytes, activation_bytes=act,
                  input_bytes=_nbytes([trace.inputs, trace.kwargs]))


# ---- rows --------------------------------------------------------------------------------------------
@dataclass
class _Row:
    """One table row, its cells as the source values (formatted per output format)."""

    depth: int
    name: str          # the qualified name (or ``(root)``), ``#k`` for repeat calls
    short: str         # the name relative to its parent's, for the indented text tree
    cls: str
    call: str          # "" for a module called once, "k/N" otherwise ("×N" in the modules view)
    inputs: Value | list[str]
    outputs: Value | list[str]
    params: int | None
    trainable: int | None
    repeat: bool = False
    failed: bool = False
    raised: bool = False
    error: str | None = None
    side: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    folded: int = 0
    aliases: list[str] = field(default_factory=list)
    summary: bool = False   # inputs/outputs are lists of already formatted summaries (modules view)
    call_index: int = 0
    calls: int = 1
    timing: dict | None = None
    flops: int | None = None
    memory: dict | None = None


def _short_name(call: Call, parent: Call | None) -> str:
    name = call.module or "(root)"
    if parent is not None and parent.module and name.startswith(parent.module + "."):
        name = name[len(parent.module) + 1:]
    return name if call.call_index == 0 else f"{name}#{call.call_index}"


def _descendants(trace: Trace) -> dict[int, int]:
    count = {c.id: 0 for c in trace.calls}
    for c in reversed(trace.calls):
        if c.parent is not None:
            count[c.parent] += count[c.id] + 1
    return count


def _call_rows(trace: Trace, depth: int | None) -> list[_Row]:
    ncalls: dict[str, int] = {}
    for c in trace.calls:
        ncalls[c.module] = max(ncalls.get(c.module, 0), c.call_index + 1)
    desc = _descendants(trace)
    failed_id = trace.failure.call if trace.failure else None
    rows = []
    for c in trace.calls:
        if depth is not None and c.depth > depth:
            continue
        parent = trace.calls[c.parent] if c.parent is not None else None
        n = ncalls[c.module]
        rows.append(_Row(
            depth=c.depth, name=c.label, short=_short_name(c, parent), cls=c.cls,
            call=f"{c.call_index + 1}/{n}" if n > 1 else "", inputs=c.inputs, outputs=c.outputs,
            params=c.params, trainable=c.trainable_params, repeat=c.call_index > 0,
            failed=c.id == failed_id, raised=c.error is not None and c.id != failed_id, error=c.error,
            side=list(c.side_inputs), kwargs=dict(c.kwargs),
            folded=desc[c.id] if depth is not None and c.depth == depth else 0, aliases=list(c.aliases),
            call_index=c.call_index, calls=n, timing=c.timing, flops=c.flops, memory=c.memory))
    return rows


def _summarise(values: Iterable[Value]) -> list[tuple[Value, int]]:
    """Distinct values (by their full text) with how often each occurs, in first-seen order."""
    counts: dict[str, list] = {}
    for v in values:
        key = _full(v)
        if key in counts:
            counts[key][1] += 1
        else:
            counts[key] = [v, 1]
    return [(v, k) for v, k in counts.values()]


_NO_OUTPUT = Opaque("—", "")


def _sum_field(calls: Sequence[Call], attr: str, key: str | None) -> Any:
    vals = []
    for c in calls:
        v = getattr(c, attr)
        if v is None:
            continue
        vals.append(v.get(key) if key else v)
    vals = [v for v in vals if isinstance(v, (int, float))]
    return sum(vals) if vals else None


def _module_rows(trace: Trace, depth: int | None) -> list[_Row]:
    groups: dict[str, list[Call]] = {}
    for c in trace.calls:
        groups.setdefault(c.module, []).append(c)
    failed_id = trace.failure.call if trace.failure else None
    desc = _descendants(trace)
    rows = []
    for module, calls in groups.items():
        first = calls[0]
        d = min(c.depth for c in calls)
        if depth is not None and d > depth:
            continue
        parent = trace.calls[first.parent] if first.parent is not None else None
        timing = None
        total = _sum_field(calls, "timing", "total_ms")
        if total is not None:
            timing = {"total_ms": total, "self_ms": _sum_field(calls, "timing", "self_ms"),
                      "cpu_ms": _sum_field(calls, "timing", "cpu_ms")}
        memory = None
        act = _sum_field(calls, "memory", "activation_bytes")
        if act is not None:
            memory = {"activation_bytes": act}
            peaks = [c.memory["peak_bytes"] for c in calls if c.memory and "peak_bytes" in c.memory]
            if peaks:
                memory["peak_bytes"] = max(peaks)  # peaks do not add up: the highest of the calls
        failed = any(c.id == failed_id for c in calls)
        err = next((c.error for c in calls if c.error), None)
        rows.append(_Row(
            depth=d, name=module or "(root)", short=_short_name(first, parent).split("#")[0], cls=first.cls,
            call=f"×{len(calls)}",
            inputs=_summarise(_merged_inputs(c) for c in calls),
            outputs=_summarise(c.outputs if c.error is None else _NO_OUTPUT for c in calls),
            params=first.params, trainable=first.trainable_params, failed=failed,
            raised=err is not None and not failed, error=err, summary=True, aliases=list(first.aliases),
            folded=sum(desc[c.id] for c in calls) if depth is not None and d == depth else 0,
            side=[m for c in calls for m in c.side_inputs][:1], calls=len(calls), timing=timing,
            flops=_sum_field(calls, "flops", None), memory=memory))
    return rows


# ---- cells -------------------------------------------------------------------------------------------
def _extra_columns(trace: Trace) -> list[str]:
    cols = []
    if any(c.timing for c in trace.calls):
        cols += ["ms", "%", "self ms"]
        if any(str(c.timing.kind or "").startswith("cuda") for c in trace.calls if c.timing):
            cols += ["host ms"]  # on a GPU the device time and the launching (host) time differ
    if any(c.flops is not None for c in trace.calls):
        cols += ["FLOPs"]
        if any(c.timing for c in trace.calls):
            cols += ["FLOP/s"]
    if any(c.memory for c in trace.calls):
        cols += ["act mem"]
        if any("peak_bytes" in c.memory for c in trace.calls if c.memory):
            cols += ["peak mem"]  # CUDA profiles: the allocator's peak during the call
    return cols


def _forward_ms(trace: Trace) -> float | None:
    if trace.timing and isinstance(trace.timing.get("total_ms"), (int, float)):
        return float(trace.timing["total_ms"])
    roots = [c.timing.get("total_ms") for c in trace.calls if c.parent is None and c.timing]
    roots = [r for r in roots if isinstance(r, (int, float))]
    return float(sum(roots)) if roots else None


def _extra_cells(row: _Row, cols: list[str], forward_ms: float | None) -> list[str]:
    t = row.timing or {}
    total, self_ms = t.get("total_ms"), t.get("self_ms")
    if row.folded:  # the calls below are folded into this row, so their time is this row's own
        self_ms = total
    out = []
    for col in cols:
        if col == "ms":
            out.append(f"{total:.3f}" if isinstance(total, (int, float)) else "")
        elif col == "%":
            ok = isinstance(total, (int, float)) and forward_ms
            out.append(f"{100 * total / forward_ms:.1f}" if ok else "")
        elif col == "self ms":
            out.append(f"{self_ms:.3f}" if isinstance(self_ms, (int, float)) else "")
        elif col == "host ms":
            host = t.get("cpu_ms")
            out.append(f"{host:.3f}" if isinstance(host, (int, float)) else "")
        elif col == "FLOPs":
            out.append(_si(row.flops) if row.flops is not None else "")
        elif col == "FLOP/s":  # achieved throughput, scaled: 312.45G on a CPU, 1.21T on an H100
            ok = row.flops and isinstance(total, (int, float)) and total > 0
            out.append(_si(row.flops / (total * 1e-3)) if ok else "")
        elif col == "act mem":
            act = (row.memory or {}).get("activation_bytes")
            out.append(_bytes(act) if isinstance(act, (int, float)) else "")
        elif col == "peak mem":
            peak = (row.memory or {}).get("peak_bytes")
            out.append(_bytes(peak) if isinstance(peak, (int, float)) else "")
    return out


def _inputs_text(row: _Row, max_len: int | None) -> str:
    if row.summary:
        return _join_summary(row.inputs, max_len)  # type: ignore[arg-type]
    value: Value = row.inputs
    extra = []
    if row.kwargs:
        extra.append(", ".join(f"{k}={format_value(v)}" for k, v in row.kwargs.items()))
    side = f" +side {format_value(row.side, top=True)}" if row.side else ""
    full = ", ".join([s for s in [format_value(value, top=True)] if s] + extra) + side
    if max_len is None or len(full) <= max_len:
        return full
    side_short = f" +side {format_value(row.side, 18, top=True)}" if row.side else ""
    budget = max(max_len - len(side_short), 8)
    merged = list(value) + list(row.kwargs.values()) if isinstance(value, list) else [value, row.kwargs]
    return format_value(merged, budget, top=True) + side_short


def _outputs_text(row: _Row, max_len: int | None) -> str:
    if row.summary:
        return _join_summary(row.outputs, max_len, top=False)  # type: ignore[arg-type]
    if row.failed:
        text = f"{FAIL_MARK} {row.error}"
        return text if max_len is None else _ellipsize(text, max_len)
    if row.raised:
        return "(raised)"
    return format_value(row.outputs, max_len)


def _merged_inputs(c: Call) -> Value:
    """A call's positional and keyword inputs as one list (kwargs as a trailing dict)."""
    return list(c.inputs) + ([dict(c.kwargs)] if c.kwargs else []) if isinstance(c.inputs, list) else c.inputs


def _join_summary(items: list[tuple[Value, int]], max_len: int | None, top: bool = True) -> str:
    def one(value: Value, count: int, budget: int | None = None) -> str:
        suffix = f" ×{count}" if count > 1 else ""
        budget = None if budget is None else max(budget - len(suffix), 6)
        return format_value(value, budget, top=top) + suffix

    text = " | ".join(one(v, k) for v, k in items)
    if max_len is None or len(text) <= max_len:
        return text
    shown: list[str] = []
    for i, (v, k) in enumerate(items):
        rest = len(items) - i - 1
        more = f" | +{rest} more" if rest else ""
        cand = " | ".join([*shown, one(v, k)]) + more
        if len(cand) > max_len:
            if not shown:
                shown.append(one(v, k, max_len - len(more)))
            break
        shown.append(one(v, k))
    rest = len(items) - len(shown)
    return _ellipsize(" | ".join(shown) + (f" | +{rest} more" if rest else ""), max_len)


def _params_cell(row: _Row) -> str:
    if row.repeat:
        return "(recursive)"
    return "—" if not row.params else f"{row.params:,}"


def _trainable_cell(row: _Row) -> str:
    if row.repeat:
        return ""
    if not row.params:
        return "—"
    return f"{row.trainable:,}"


def _rows(trace: Trace, depth: int | None, view: str) -> list[_Row]:
    if view not in ("calls", "modules"):
        raise ValueError(f"view must be 'calls' or 'modules', got {view!r}")
    if depth is not None and depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")
    return _call_rows(trace, depth) if view == "calls" else _module_rows(trace, depth)


def _headers(view: str, extra: list[str]) -> list[str]:
    return ["layer", "class", "calls" if view == "modules" else "call", "input shapes", "output shapes",
            "params", "trainable", *extra]


def _notes(trace: Trace, rows: list[_Row]) -> list[str]:
    """Footnotes: folding, aliases, the calls' notes, uncalled modules, the failure."""
    notes = []
    for r in rows:
        if r.folded:
            notes.append(f"{r.name}: +{r.folded} deeper call{'s' if r.folded != 1 else ''} folded")
    for r in rows:
        if r.aliases and not r.repeat:
            notes.append(f"{r.name} is also registered as {', '.join(r.aliases)}")
    by_text: dict[str, list[str]] = {}  # the calls' own notes (profiling), each text once with its calls
    for c in trace.calls:
        for n in c.notes:
            by_text.setdefault(note_text(n, c.cls), []).append(c.label)
    for n, labels in by_text.items():
        more = f" +{len(labels) - 4} more" if len(labels) > 4 else ""
        notes.append(f"{n}: {', '.join(labels[:4])}{more}")
    if trace.uncalled:
        head = "not reached before the failure" if trace.failed else "never called in the forward"
        notes.append(f"{head}: " + ", ".join(_uncalled_parts(trace)))
    if trace.failure is not None:
        fc = trace.failed_call
        where = f"{fc.label} ({fc.cls})" if fc else "outside any module"
        notes.append(f"{FAIL_MARK} the forward failed in {where}: {trace.failure.type}: {trace.failure.message}")
    return notes


def _uncalled_parts(trace: Trace) -> list[str]:
    """Uncalled modules, each with its uncalled submodules folded in (``layer1 (Sequential, ...) +10 inside``)."""
    names = {u.module for u in trace.uncalled}
    inside: dict[str, int] = {}
    tops = []
    for u in trace.uncalled:
        parts = u.module.split(".")
        top = next((".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in names), None)
        if top is None:
            tops.append(u)
        else:
            inside[top] = inside.get(top, 0) + 1
    out = []
    for u in tops:
        more = f", +{inside[u.module]} inside" if inside.get(u.module) else ""
        out.append(f"{u.module or '(root)'} ({u.cls}, {u.params:,} params{more})")
    return out


# ---- text --------------------------------------------------------------------------------------------
# Columns a too-wide profile table leaves out, in this order (after an empty "call" column): the totals
# below the table give the trainable count, a row's input is (nearly always) the output of the row above,
# a repeated call's layer name carries "#k" already; then the GPU-only peak mem and host ms, and last
# FLOP/s (the FLOPs column over the ms column).
_DROPPABLE = ("trainable", "input shapes", "params", "call", "peak mem", "host ms", "FLOP/s")


def _fit_columns(headers: list[str], natural: dict[str, int], limit: int | None, sep: int, droppable: list[str]
                 ) -> tuple[list[str], dict[str, int], list[str]]:
    """Which columns to show and how wide, for a table of ``limit`` characters (``None``: no limit).

    In order, until the table fits: leave out the ``droppable`` columns one by one; elide the shape
    columns (never below their header's width, nor below 12); elide layer names (to 10) and class names
    (to 8). Returns the shown columns, every column's width and the columns left out.
    """
    shown = list(headers)
    widths = dict(natural)
    if limit is None:
        return shown, widths, []
    widths["layer"] = min(widths["layer"], 34)
    widths["class"] = min(widths["class"], 20)

    def span(cols: list[str]) -> int:
        return sum(widths[c] for c in cols) + sep * (len(cols) - 1)

    dropped = []
    for name in droppable:
        if span(shown) <= limit:
            break
        if name in shown:
            shown.remove(name)
            dropped.append(name)
    shape_cols = [c for c in ("input shapes", "output shapes") if c in shown]
    if span(shown) > limit and shape_cols:
        room = max(limit - span([c for c in shown if c not in shape_cols]) - sep * len(shape_cols),
                   sum(len(c) for c in shape_cols))
        if len(shape_cols) == 1:
            widths[shape_cols[0]] = max(min(natural[shape_cols[0]], room), 12)
        else:
            need_in, need_out = natural["input shapes"], natural["output shapes"]
            half = room // 2
            if need_in <= half:
                w_in, w_out = need_in, room - need_in
            elif need_out <= room - half:
                w_in, w_out = room - need_out, need_out
            else:
                w_in, w_out = half, room - half
            widths["input shapes"], widths["output shapes"] = max(w_in, 12), max(w_out, 12)
    over = span(shown) - limit
    for col, floor in (("layer", 10), ("class", 8)):
        cut = min(max(over, 0), max(widths[col] - floor, 0))
        widths[col] -= cut
        over -= cut
    return shown, widths, dropped


def render_text(trace: Trace, *, depth: int | None = None, view: str = "calls", width: int | None = 100) -> str:
    """An aligned table (an indented tree in the calls view) that fits ``width`` columns when it can.

    Shapes are elided to fit (``+2 more``, ``…``). A table with profile columns that would still overflow
    leaves out an empty ``call`` column, then ``trainable``, ``input shapes``, ``params``, ``call``,
    ``peak mem``, ``host ms`` and ``FLOP/s`` until it fits, and says so below the table; then layer and
    class names are elided (``_fit_columns``). ``width=None`` (or 0) never elides nor leaves anything out.
    """
    rows = _rows(trace, depth, view)
    extra = _extra_columns(trace)
    fwd = _forward_ms(trace)
    headers = _headers(view, extra)
    base_depth = min((r.depth for r in rows), default=0)
    limit = width or None

    def layer(r: _Row) -> str:
        mark = f"{FAIL_MARK} " if r.failed else ""
        return "  " * (r.depth - base_depth) + mark + (r.short if view == "calls" else r.name)

    cells: dict[str, list[str]] = {h: [] for h in headers}  # the shape columns are filled once widths are known
    for r in rows:
        for h, c in zip(headers, [layer(r), r.cls, r.call, "", "", _params_cell(r), _trainable_cell(r),
                                  *_extra_cells(r, extra, fwd)]):
            cells[h].append(c)
    natural = {h: max([len(h)] + [len(c) for c in cells[h]]) for h in headers}
    natural[headers[3]] = max([len(headers[3])] + [len(_inputs_text(r, None)) for r in rows])
    natural[headers[4]] = max([len(headers[4])] + [len(_outputs_text(r, None)) for r in rows])
    sep = "  "
    # Only a profile table leaves columns out: first an empty "call"/"calls" column (not worth a note).
    empty = [h for h in headers[2:3] if not any(cells[h])] if extra else []
    droppable = [*empty, *_DROPPABLE] if extra else []
    shown, widths, dropped = _fit_columns(headers, natural, limit, len(sep), droppable)
    dropped = [d for d in dropped if d not in empty]

    left = {"layer", "class", "call", "input shapes", "output shapes"}

    def line(values: dict[str, str]) -> str:
        out = []
        for col in shown:
            w = widths[col]
            c = values[col]
            c = _ellipsize_middle(c, w) if col == "layer" else _ellipsize(c, w)
            out.append(c.ljust(w) if col in left else c.rjust(w))
        return sep.join(out).rstrip()

    table_width = sum(widths[c] for c in shown) + len(sep) * (len(shown) - 1)
    rule = "─" * (min(table_width, limit) if limit is not None else table_width)
    title = f"{trace.model.cls}: {len(trace.calls)} call{'s' if len(trace.calls) != 1 else ''}"
    if view == "modules":
        title += f" of {len(rows)} module{'s' if len(rows) != 1 else ''}"
    if depth is not None:
        title += f", depth ≤ {depth}"
    lines = [title, rule, line({h: h for h in headers}), rule]
    for i, r in enumerate(rows):
        values = {h: cells[h][i] for h in headers}
        values["input shapes"] = _inputs_text(r, widths["input shapes"] if limit is not None else None)
        values["output shapes"] = _outputs_text(r, widths["output shapes"] if limit is not None else None)
        lines.append(line(values))
    lines.append(rule)
    summary = _summary_lines(trace, fwd)
    label_w = max(len(k) for k, _ in summary)
    for k, v in summary:
        entry = f"{k + ':':<{label_w + 1}} {v}"
        lines.extend(_wrap(entry, limit) if limit is not None else [entry])
    notes = _notes(trace, rows)
    if dropped:
        notes.append(f"left out to fit {limit} columns: {', '.join(dropped)} (a wider --width, or the md, csv "
                     "and html formats, show every column)")
    if notes:
        lines.append(rule)
        for n in notes:
            lines.extend(_wrap(n, limit) if limit is not None else [n])
    return "\n".join(lines) + "\n"


def _wrap(text: str, width: int) -> list[str]:
    """Wrap a note at spaces to ``width`` columns (continuation lines indented by 2)."""
    words = text.split(" ")
    out: list[str] = []
    cur = ""
    for w in words:
        cand = w if not cur else f"{cur} {w}"
        if len(cand) > width and cur:
            out.append(cur)
            cur = "  " + w
        else:
            cur = cand
    if cur:
        out.append(cur)
    return out


# ---- markdown ----------------------------------------------------------------------------------------
def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _plain_cells(r: _Row, extra: list[str], fwd: float | None) -> list[str]:
    name = (f"{FAIL_MARK} " if r.failed else "") + r.name
    return [name, r.cls, r.call, _inputs_text(r, None), _outputs_text(r, None), _params_cell(r),
            _trainable_cell(r), *_extra_cells(r, extra, fwd)]


def render_markdown(trace: Trace, *, depth: int | None = None, view: str = "calls") -> str:
    """A GitHub-flavoured Markdown table (full qualified names, full shapes) with totals and notes."""
    rows = _rows(trace, depth, view)
    extra = _extra_columns(trace)
    fwd = _forward_ms(trace)
    headers = _headers(view, extra)
    right = {5, 6, *range(7, len(headers))}
    out = ["| " + " | ".join(headers) + " |",
           "|" + "|".join("---:" if i in right else "---" for i in range(len(headers))) + "|"]
    for r in rows:
        cells = _plain_cells(r, extra, fwd)
        cells[0] = "&nbsp;" * (2 * r.depth) + f"`{cells[0]}`"
        out.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    out.append("")
    for k, v in _summary_lines(trace, fwd):
        out.append(f"- {k}: {_md_cell(v)}")
    notes = _notes(trace, rows)
    if notes:
        out.append("")
        out += [f"> {_md_cell(n)}  " for n in notes]
    return "\n".join(out) + "\n"


# ---- html --------------------------------------------------------------------------------------------
def render_html(trace: Trace, *, depth: int | None = None, view: str = "calls") -> str:
    """The scoped HTML table fragment; it lives in ``renderers.html`` (kept here for existing imports)."""
    from .html import render_html as fragment

    return fragment(trace, depth=depth, view=view)


# ---- csv ---------------------------------------------------------------------------------------------
def render_csv(trace: Trace, *, depth: int | None = None, view: str = "calls") -> str:
    """One row per call (or module): raw numbers, full shapes, no totals; parses with the ``csv`` module."""
    rows = _rows(trace, depth, view)
    extra = _extra_columns(trace)
    fwd = _forward_ms(trace)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["layer", "depth", "class", "call_index" if view == "calls" else "calls", "n_calls",
                "input_shapes", "side_inputs", "output_shapes", "params", "trainable", "error", "folded_calls",
                *extra])
    for r in rows:
        w.writerow([r.name, r.depth, r.cls, r.call_index if view == "calls" else r.calls, r.calls,
                    _inputs_text(r, None) if r.summary else format_value(
                        list(r.inputs) + list(r.kwargs.values()) if isinstance(r.inputs, list) else r.inputs,
                        top=True),
                    format_value(r.side, top=True) if r.side else "",
                    _outputs_text(r, None) if r.summary else ("" if r.error else format_value(r.outputs)),
                    r.params or 0, r.trainable or 0, r.error or "", r.folded, *_extra_cells(r, extra, fwd)])
    return buf.getvalue()


# ---- dispatch ----------------------------------------------------------------------------------------
def render(trace: Trace, format: str = "text", *, depth: int | None = None, view: str = "calls",
           width: int | None = 100) -> str:
    """Render a shape table in ``format`` (``text``, ``md``, ``html`` or ``csv``)."""
    if format in ("text", "txt"):
        return render_text(trace, depth=depth, view=view, width=width)
    if format in ("md", "markdown"):
        return render_markdown(trace, depth=depth, view=view)
    if format == "html":  # a standalone page (renderers.html)
        from .html import render_page

        return render_page(trace, depth=depth, view=view)
    if format == "csv":
        return render_csv(trace, depth=depth, view=view)
    raise ValueError(f"unknown table format {format!r}; choose one of {', '.join(FORMATS)}")
