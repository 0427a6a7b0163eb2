"""Numbers and codes as people read them, once for every renderer: shapes, bytes, counts, times, and the
English for the short codes records store (timer kinds, call notes, the GPU timer's fallback).

Tables, the graph model and the diagrams all format through here, so a shape or a byte count reads the same
everywhere. Pure functions of plain values; imports ``shapetrace.tracer`` records only. Control characters
in names are shown escaped (``literal``), so no name can break a row or a label.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterable, Sequence

from ..tracer.metrics import (
    DTYPE_MIXED,
    FALLBACK_NO_KERNELS,
    FALLBACK_PROFILER_ERROR,
    KIND_CPU,
    KIND_EVENTS,
    KIND_PROFILER,
    Note,
    TimingSummary,
)
from ..tracer.records import Call, Opaque, Struct, TensorMeta, Trace, Value, iter_tensors, profile_run_text, raiser_name

__all__ = [
    "arguments_text",
    "call_error_text",
    "caught_calls",
    "caught_notes",
    "display_width",
    "ellipsize",
    "ellipsize_middle",
    "error_cell",
    "error_lines",
    "escape_controls",
    "exponent_form",
    "failing_calls",
    "failure_place",
    "fallback_text",
    "fitting_end",
    "fitting_start",
    "format_bytes",
    "format_count",
    "format_ms",
    "format_percent",
    "format_shape",
    "format_si",
    "format_value",
    "home_device",
    "literal",
    "markup",
    "no_timings_reason",
    "note_text",
    "off_home",
    "other_devices",
    "pad",
    "raised_instead_text",
    "run_dtype_text",
    "tensor_text",
    "timer_kind_text",
    "value_text",
]

_KIND_TEXT = {
    KIND_CPU: "cpu-wall",
    KIND_PROFILER: "cuda-kernels (profiler)",
    KIND_EVENTS: "cuda-events (GPU span, includes idle)",
}


def timer_kind_text(kind: str | None) -> str:
    """What a timer kind code means, as the profile tables write it."""
    return _KIND_TEXT.get(kind or "", kind or "unknown timer")


def fallback_text(timing: TimingSummary) -> str | None:
    """Why the CUDA-events timer replaced torch.profiler, or ``None`` when it did not."""
    if timing.fallback is None:
        return None
    if timing.fallback == FALLBACK_PROFILER_ERROR:
        return f"torch.profiler failed: {timing.fallback_error or 'no message'}"
    if timing.fallback == FALLBACK_NO_KERNELS:
        return "torch.profiler recorded no CUDA kernels (CUPTI unavailable?)"
    return timing.fallback


def call_error_text(trace: Trace, call: Call) -> str | None:
    """The exception that left ``call``; for the call a profile's later timed run failed in (``trace.failure``
    names it, while the shape pass the trace holds saw it return), that run's exception; else ``None``."""
    if call.error is not None:
        return call.error
    failure = trace.failure
    if failure is not None and failure.call == call.id:
        return failure.text
    return None


def note_text(note: Note, cls: str = "") -> str:
    """One call note in English (``cls`` is the call's class, named by some notes). A note built without the
    number it states (``load`` refuses such a note; a hand-made one may lack it) says ``some``."""
    count = "some" if note.count is None else note.count
    if note.code == "flops-analytic":
        counted = "" if note.count is None else f" (FlopCounterMode counted {note.count})"
        return f"flops: analytic {cls or 'module'} formula{counted}"
    if note.code == "compiled-region":
        return ("torch.compile'd region: timed as a whole; the modules inside it run as compiled code, "
                "where their hooks do not run")
    if note.code == "inside-compiled-region":
        return "inside a torch.compile'd region: not timed separately"
    if note.code == "cuda-graph-launches":
        return (f"{count} CUDA-graph launch(es): their kernels are attributed to the call that replayed "
                "the graph, as one region")
    if note.code == "recomputation-stopped":
        return ("recomputed in the backward pass by torch.utils.checkpoint, which stopped it once it had the "
                "tensors it needed: no output, and not a failure")
    if note.code == "weights-elsewhere":
        return f"own parameters or buffers on {literal(note.text or 'another device')}, where none of its inputs is"
    if note.code == "not-timed":
        return "not called in the timed runs (the shape pass saw it; the timed forward did not)"
    if note.code == "ran-in-some-timed-runs":
        runs = "some" if note.count is None or note.of is None else f"{note.count} of {note.of}"
        return (f"ran in {runs} timed runs (the forward changes from one run to the next): "
                "its ms and self ms are averages per forward, 0 where it did not run; its median is over the "
                "runs where it ran")
    if note.code == "untraced-calls":
        named = f" of {note.text}" if note.text else ""
        return (f"{count} call(s){named} inside it ran in the timed runs but not in the traced forward (the "
                "forward changes from one run to the next): their time is counted in this call's self time")
    if note.code == "children-overlapped":
        return ("its children ran at the same time in the timed runs (threads): its self time is the time none "
                "of them covered, so self times add up to more than the forward's time")
    if note.code == "moved-in-timed-runs":
        return ("called under another parent in the timed runs than in the traced forward (the forward changes "
                "from one run to the next): its time does not nest where the table shows it")
    return note.text or note.code


# ---- shapes and values -------------------------------------------------------------------------------
def format_shape(shape: Sequence[int], sep: str = "×", paren: bool = False) -> str:
    """A shape for diagrams: ``2×3×224×224`` (``scalar`` for ``()``); ``paren=True`` adds brackets."""
    text = sep.join(str(s) for s in shape) if shape else "scalar"
    return f"({text})" if paren else text


def home_device(trace: Trace) -> str | None:
    """The device the trace ran on, which shape texts leave unsaid: its first input tensor's, or for a forward
    given no tensor, the one most of its calls' outputs are on; ``None`` for a trace without tensors. A tensor
    elsewhere (an accidental ``.cpu()``, a part of the model on ``meta`` or on a second GPU) is shown with its
    device (``tensor_text``). ``None`` for a shape-only trace (on ``meta``), whose integer inputs stay real on the
    CPU and everything else is on ``meta``: there, devices are how shape-only tracing works, not the model's."""
    shape_only = trace.meta.get("shape_only")
    if shape_only is None:  # saved before it was recorded: a trace on meta was a shape-only one
        shape_only = trace.meta.get("device") == "meta"
    if shape_only:
        return None
    first = next(iter_tensors([trace.inputs, trace.kwargs]), None)
    if first is not None:
        return first[1].device
    counts: dict[str, int] = {}
    for c in trace.calls:
        for _, m in iter_tensors(c.outputs):
            counts[m.device] = counts.get(m.device, 0) + 1
    return max(counts, key=counts.__getitem__) if counts else None  # the first counted wins a tie


def other_devices(trace: Trace, home: str | None) -> list[str]:
    """The devices, other than ``home`` (``home_device(trace)``), that tensors of the trace's calls are on, in
    first-seen order (none where the home device is ``None``)."""
    if home is None:
        return []
    seen: dict[str, None] = {}
    for c in trace.calls:
        for value in (c.inputs, c.kwargs, c.side_inputs, c.outputs):
            for _, m in iter_tensors(value):
                if m.device != home:
                    seen[m.device] = None
    return list(seen)


def off_home(devices: Iterable[str], home: str | None) -> str:
    """``devices`` as a text (``meta``, ``cpu, meta``) when any of them is not ``home`` (the trace's device,
    ``units.home_device``), as a tooltip says where tensors are; ``""`` when all are on it or ``home`` is
    ``None``."""
    devices = list(devices)
    if home is None or all(d == home for d in devices):
        return ""
    return ", ".join(literal(d) for d in devices)


def failing_calls(trace: Trace) -> set[int]:
    """The ids of the calls the failure left: its call and the calls around it. Every other call that raised
    was caught by the forward, which went on (``caught_calls``): renderers draw those apart from the failure."""
    failure = trace.failure
    out: set[int] = set()
    on_path: dict[int, int] = {}  # by call on the failure's path: its child on that path
    cid = failure.call if failure is not None else None
    while cid is not None and cid not in out and 0 <= cid < len(trace.calls):
        out.add(cid)
        parent = trace.calls[cid].parent
        if parent is not None:
            on_path[parent] = cid
        cid = parent
    # and the calls the exception that left the forward came up through, where it is not the failure's (a
    # fallback that failed in its except clause): start order puts each call after the one it was called in.
    # Such a call started after its sibling on the failure's path: one that raised the same message before it
    # raised an earlier exception the forward caught (a retry), and the failure is a new one.
    for c in trace.calls:
        parent = c.parent
        if (parent in out and c.error is not None and trace.calls[parent].error == c.error
                and c.id > on_path.get(parent, -1)):
            out.add(c.id)
    return out


def caught_calls(trace: Trace) -> list[Call]:
    """The calls that raised an exception the forward caught and went on from (a fallback after a fast path
    that raised), in call order: every call with an error that the failure did not leave (``failing_calls``)."""
    failing = failing_calls(trace)
    return [c for c in trace.calls if c.error is not None and c.id not in failing]


def caught_notes(trace: Trace, calls: Iterable[Call] | None = None) -> list[str]:
    """One note per exception raised and caught inside the forward (``caught_calls``, or those of ``calls``):
    the calls it left, and the message, its lines kept (``error_lines``). Calls that raised the same message
    share a note."""
    by_error: dict[str, list[str]] = {}
    for c in caught_calls(trace) if calls is None else calls:
        by_error.setdefault(c.error or "", []).append(f"{literal(c.label)} ({literal(c.cls)})")
    notes = []
    for error, labels in by_error.items():
        more = f" +{len(labels) - 4} more" if len(labels) > 4 else ""
        notes.append(f"{', '.join(labels[:4])}{more} raised, and the forward caught it and went on: "
                     f"{error_lines(error)}")
    return notes


def tensor_text(meta: TensorMeta, home: str | None = None) -> str:
    """A tensor for tables: ``(2,3,224,224)``, ``(5,)``, with its dtype when not float32, and its device
    (``on cpu``) when ``home`` is given and the tensor is elsewhere (``home_device``)."""
    s = "(" + ",".join(str(d) for d in meta.shape) + ("," if len(meta.shape) == 1 else "") + ")"
    if meta.dtype != "float32":
        s = f"{s} {literal(meta.dtype)}"
    return s if home is None or meta.device == home else f"{s} on {literal(meta.device)}"


def value_text(value: Value, home: str | None = None) -> str:
    """A whole value tree, structure kept: ``[(4,72,400), [(1,4,400), (1,4,400)]]`` (``home``: see
    ``tensor_text``)."""
    if isinstance(value, TensorMeta):
        return tensor_text(value, home)
    if isinstance(value, Struct):
        return f"{value.kind}(" + ", ".join(f"{k}={value_text(v, home)}" for k, v in value.fields.items()) + ")"
    if isinstance(value, Opaque):
        if value.kind == "NestedTensor" and value.repr.startswith("nested("):  # its components' shapes
            return value.repr
        return value.kind.rpartition(".")[2]
    if isinstance(value, list):
        return "[" + ", ".join(value_text(v, home) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(str(k))}: {value_text(v, home)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return repr(value) if len(value) <= 12 else repr(value[:9]) + "…"  # repr escapes what literal would
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value)


def arguments_text(value: Value, home: str | None = None) -> str:
    """A call's positional inputs: without the outer brackets (one argument: just it)."""
    if isinstance(value, list) and len(value) == 1:
        return value_text(value[0], home)
    if isinstance(value, list):
        return ", ".join(value_text(v, home) for v in value)
    return value_text(value, home)


def format_value(value: Value, max_len: int | None = None, *, top: bool = False, home: str | None = None) -> str:
    """A value tree as text; longer than ``max_len`` -> the first tensors shown and ``+k more``.

    With ``top=True`` a one-element list (a call's single argument) is shown without brackets; ``home``: see
    ``tensor_text``.
    """
    text = arguments_text(value, home) if top else value_text(value, home)
    if max_len is None or len(text) <= max_len:
        return text
    tensors = [tensor_text(m, home) for _, m in iter_tensors(value)]
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


# ---- text --------------------------------------------------------------------------------------------
# The letters that follow the backslash of an escape ``literal`` writes (``\\n``, ``\\x1b``, ``\\u202e``, ...)
_ESCAPE_LETTERS = frozenset("nrtxuU\\")


def _shown_plain(c: str) -> bool:
    return c.isprintable() or c == " "


def literal(text: str) -> str:
    """Control characters as Python escapes, so a name with a newline shows as ``a\\nb`` on one line.

    A backslash in the name is doubled where it could be read as the start of such an escape (before ``n``,
    ``r``, ``t``, ``x``, ``u``, ``U``, another backslash or an escaped character), so a real newline
    (``a\\nb``) and a backslash followed by ``n`` (``a\\\\nb``) never read the same; a run of backslashes is
    doubled whole. Elsewhere a backslash is shown as it is (``back\\slash``, ``\\N\\G``), and a name without a
    backslash or a control character is unchanged.
    """
    text = str(text)
    if text.isprintable() and "\\" not in text:
        return text
    out = []
    for i, c in enumerate(text):
        if c == "\\":  # doubled before what could be read as an escape, and all along a run of backslashes
            after = text[i + 1:i + 2]
            ambiguous = (after and (after in _ESCAPE_LETTERS or not _shown_plain(after))) or text[i - 1:i] == "\\"
            out.append("\\\\" if ambiguous else "\\")
        else:
            out.append(c if _shown_plain(c) else repr(c)[1:-1])
    return "".join(out)


_TYPE_ONLY = re.compile(r"[\w.]+:")  # an exception's type with an empty first line of its message


def error_cell(text: str) -> str:
    """An error message as one table cell: its first line (``literal``), `` …`` when more lines follow (a
    message written over several lines stays one value; the footer and the CLI's error block give it whole)."""
    lines = [line.rstrip("\r") for line in str(text).split("\n")]
    shown, rest = lines[0].rstrip(), [line for line in lines[1:] if line.strip()]
    if _TYPE_ONLY.fullmatch(shown):  # "ValueError:": the message starts on the lines below, or is blank
        shown = f"{shown} {rest.pop(0).strip()}" if rest else shown[:-1]
    return literal(shown) + (" …" if rest else "")


def error_lines(text: str, indent: str = "  ") -> str:
    """An error message on its own lines: each line ``literal`` (no control character of the message reaches
    the terminal), joined by real line breaks, the lines after the first indented by ``indent``."""
    lines = str(text).rstrip("\n").split("\n")
    return f"\n{indent}".join(literal(line.rstrip("\r")) for line in lines)


def escape_controls(text: str) -> str:
    """Control characters as Python escapes, backslashes left alone: for text that is ``literal`` already (a
    table cell) or holds no names, made safe again where it must stay on one line. Unlike ``literal`` it can be
    applied twice."""
    text = str(text)
    return text if text.isprintable() else "".join(c if _shown_plain(c) else repr(c)[1:-1] for c in text)


def markup(text: str) -> str:
    """``text`` for HTML or SVG markup: control, format and bidirectional characters (U+202E, an ANSI escape, a
    lone surrogate) as Python escapes (``escape_controls``: XML 1.0 forbids most C0 characters, and a name with
    U+202E must not display reversed), then the markup characters, quotes included (safe in an attribute). It
    can be applied twice (backslashes are left alone)."""
    return html.escape(escape_controls(text))


def _char_width(c: str) -> int:
    """Columns a character takes in a terminal: 0 for combining marks and invisible format characters, 2 for
    East Asian wide and full-width ones (CJK, most emoji), 1 otherwise."""
    if unicodedata.combining(c) or unicodedata.category(c) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1


def display_width(text: str) -> int:
    """Columns ``text`` takes in a terminal (``len`` for ASCII; 卷积 is 4 columns, e + U+0301 is 1)."""
    return len(text) if text.isascii() else sum(_char_width(c) for c in text)


def pad(text: str, width: int, left: bool = True) -> str:
    """``text`` padded with spaces to ``width`` columns of display: on the right (``left``) or on the left."""
    fill = " " * max(width - display_width(text), 0)
    return text + fill if left else fill + text


def fitting_start(text: str, width: int) -> str:
    """The longest start of ``text`` that fits ``width`` columns, combining marks kept with their letter."""
    used = 0
    for i, c in enumerate(text):
        used += _char_width(c)
        if used > width:
            return text[:i]
    return text


def ellipsize(text: str, width: int) -> str:
    """``text`` cut to ``width`` columns of display, the last one ``…`` when cut."""
    if display_width(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    return fitting_start(text, width - 1) + "…"


def ellipsize_middle(text: str, width: int) -> str:
    """``text`` cut to ``width`` columns in the middle (``encoder.…blocks.3``)."""
    if display_width(text) <= width or width < 5:
        return ellipsize(text, width)
    left = (width - 1) // 2
    head = fitting_start(text, left)
    return head + "…" + fitting_end(text, width - 1 - display_width(head))


def fitting_end(text: str, width: int) -> str:
    """The longest end of ``text`` that fits ``width`` columns and starts with a letter: a combining mark or
    zero-width character whose letter was cut off is dropped, so none follows a ``…`` alone."""
    tail = fitting_start(text[::-1], width)[::-1]
    while tail and _char_width(tail[0]) == 0:  # a mark whose letter was cut off
        tail = tail[1:]
    return tail


# ---- numbers -----------------------------------------------------------------------------------------
# Past a bound (this one for times and shares), a number is written in exponent form, so that no cell or label
# of a hand-edited or corrupt trace (1e300 ms, which load() accepts) grows to hundreds of digits: every
# formatter below stays within a dozen characters.
_HUGE = 1e6


def exponent_form(n: float, places: int = 2) -> str:
    """``n`` as ``1.23e+15``, an integer beyond any float (``2**1100``, a hand-made record's size) included,
    worked out with integers: ``1.36e+331``."""
    try:
        return f"{n:.{places}e}"
    except OverflowError:
        pass
    sign, n = ("-" if n < 0 else ""), abs(int(n))
    exp = (n.bit_length() - 1) * 30103 // 100000  # log10(2) ~ 0.30103: at most one below the true exponent
    if 10 ** (exp + 1) <= n:
        exp += 1
    head = (n * 10**places * 2 // 10**exp + 1) // 2  # the leading digits, rounded half up
    if head >= 10 ** (places + 1):  # 9.999... rounded up to 10.00
        head, exp = head // 10, exp + 1
    digits = str(head)
    return f"{sign}{digits[0]}.{digits[1:]}e+{exp:02d}" if places else f"{sign}{digits}e+{exp:02d}"


def format_count(n: int) -> str:
    """A count, compact for diagrams: ``1234567`` -> ``1.2M`` (``1.23e+15`` past a thousand billion)."""
    if abs(n) >= 1e12:
        return exponent_form(n)
    for unit, div in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def format_si(n: float, unit: str = "") -> str:
    """A number with an SI prefix and two decimals: ``312.45G``, ``1.21TFLOP/s`` (``1.00e+18FLOP/s`` past
    a thousand T)."""
    if abs(n) >= 1e15:
        return f"{exponent_form(n)}{unit}"
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= factor:
            return f"{n / factor:.2f}{prefix}{unit}"
    return f"{n:.0f}{unit}"


def format_bytes(n: float) -> str:
    """Bytes in binary units: ``512 B``, ``3.0 KiB``, ``14.7 MiB``, ``1.2 GiB``, ``3.0 TiB``
    (``1.23e+18 B`` past a thousand TiB)."""
    if abs(n) >= 2**50:
        return f"{exponent_form(n)} B"
    for unit, div in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n:.0f} B"


def format_ms(ms: float) -> str:
    """Milliseconds with three decimals (microsecond resolution): ``12.345``; from a million (17 minutes) in
    exponent form, ``1.000e+300``, so a corrupt timing cannot widen a table past its width."""
    return f"{ms:.3f}" if abs(ms) < _HUGE else f"{ms:.3e}"


def format_percent(p: float) -> str:
    """A share in percent with one decimal: ``42.5``; ``4.70e+301`` for the absurd ones a corrupt timing
    makes."""
    return f"{p:.1f}" if abs(p) < _HUGE else f"{p:.2e}"


def failure_place(trace: Trace, with_class: bool = False) -> str:
    """Where the forward failed: ``in layer4.0 (BasicBlock)``, with the profile's timed run if that is where, or
    why no layer can be named."""
    fc = trace.failed_call
    timed = trace.meta.get("failed_in_timed_run")  # the profile's shape pass ran through; a timed run failed
    run = (f"in {profile_run_text(timed.get('run'), timed.get('of'), timed.get('warmup'))} of the profile"
           if isinstance(timed, dict) else "")
    if fc is None:
        return f"{run}, in a forward run without hooks, so the layer is not known" if run else "outside any module"
    return f"in {literal(fc.label)}" + (f" ({literal(fc.cls)})" if with_class else "") + (f" {run}" if run else "")


def raised_instead_text(trace: Trace) -> str:
    """``; the forward raised ValueError: ... from it`` for a forward that caught its failure and raised another
    exception (``block (Block) raised ...`` when a submodule did); ``""`` when the failure left the forward."""
    instead = trace.raised_instead()
    if instead is None:
        return ""
    call, error = instead
    who = literal(raiser_name(call))
    return f"; {who} raised {error_lines(error)} from it"


def no_timings_reason(trace: Trace, plot_hint: bool = True) -> str:
    """Why ``trace``'s calls carry no timings, and what to do, read from the facts it records: it ran on the
    meta device (never timed), its forward failed (in the traced run or a profile's timed run), or it was made
    by ``trace()``, which records shapes only (``plot_hint``: adding that the 'flow' plot needs no times, for a
    refused plot)."""
    if trace.meta.get("device") == "meta":
        return ("it ran on device 'meta', where tensors hold no data and nothing is computed, so nothing is "
                "timed; profile it on a real device (shapetrace.profile(model, x, device='cpu'), or "
                "'shapetrace profile MODEL --device cpu')")
    if trace.failure is not None:
        error = ellipsize(literal(trace.failure.text), 120)
        return (f"its forward failed {failure_place(trace, with_class=True)} ({error}), and a profile times only a forward that "
                "runs through every time; fix the forward, then profile it")
    if not trace.meta.get("profiled"):
        return ("it was made by shapetrace.trace(), which records shapes only; make it with shapetrace.profile() "
                "or 'shapetrace profile'" + (" (the 'flow' plot needs shapes only)" if plot_hint else ""))
    return "no call of this profile was timed; profile it again"


def run_dtype_text(trace: Trace) -> str:
    """The dtype a profile ran in, as the Timed line says it: a mixed model's parameter dtypes by share of their
    bytes (``mixed: float32 99%, bfloat16 1% of parameter bytes``)."""
    dtype = (trace.timing or {}).get("dtype")
    if dtype != DTYPE_MIXED:
        return str(dtype)
    shares = trace.model.param_dtypes
    whole = sum(shares.values()) or 1
    parts = [f"{name} {format_percent(100 * n / whole)}%" for name, n in sorted(shares.items(), key=lambda kv: -kv[1])]
    return f"mixed: {', '.join(parts)} of parameter bytes" if parts else "mixed dtypes"
