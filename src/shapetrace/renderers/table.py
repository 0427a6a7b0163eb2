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

Totals follow torchinfo's layout: total / trainable / non-trainable parameters (shared parameters once), the
input size, the activations (the output tensors of every call that returned, each distinct tensor once; not
torchinfo's "forward/backward pass size" estimate), the params size (by dtype), buffers when there are any,
and their sum, all in MB (10^6 bytes). A profile adds how it was timed, the plain and profiled forward with
the overhead, the sum of the self times and, on a GPU, the kernel time and idle share. Modules the forward
never called are listed, and the calls' own notes (an analytic FLOP count, a ``torch.compile``d region,
CUDA-graph launches); a failed forward shows the partial table with the failing call marked ``✗``.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable
from typing import TypeVar

from ..tracer.metrics import STATISTIC_IQM
from ..tracer.records import Trace, Uncalled, Value
from .finite import ORIGIN_MARK, PASSED_MARK, checked, ended_before_origin, nonfinite_notes
from .markdown import md_code, md_text
from .rows import Elision, Row, Totals, above_own_p90, elide, forward_ms, table_rows, totals, uncalled_split
from .units import (
    caught_notes,
    display_width,
    ellipsize,
    ellipsize_middle,
    error_cell,
    error_lines,
    exponent_form,
    failure_place,
    fallback_text,
    fitting_end,
    fitting_start,
    format_bytes,
    format_ms,
    format_percent,
    format_si,
    format_value,
    home_device,
    literal,
    note_text,
    other_devices,
    pad,
    raised_instead_text,
    run_dtype_text,
    timer_kind_text,
)

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


def row_mark(r: Row) -> str:
    """What a row's name starts with: ``✗ `` on the failing call, ``finite``'s mark on a call whose output held
    NaN or Inf (``check_finite``), else nothing."""
    if r.failed:
        return f"{FAIL_MARK} "
    return f"{r.nonfinite} " if r.nonfinite else ""


def _mb(n: int) -> str:
    """Bytes in MB with two decimals; past a float's range (a hand-made record's size) in exponent form."""
    try:
        return f"{n / MB:.2f}"
    except OverflowError:
        return exponent_form(n // MB)


def _totals_lines(t: Totals) -> list[tuple[str, str]]:
    """The totals, each saying what it counts (sizes in MB, 10^6 bytes, as torchinfo writes them)."""
    out = [("Total params", f"{t.params:,}"), ("Trainable params", f"{t.trainable:,}"),
           ("Non-trainable params", f"{t.non_trainable:,}")]
    if t.shared:
        out.append(("Shared params", f"{t.shared:,} (registered under several names, counted once)"))
    inputs = f"{_mb(t.input_bytes)} ({t.input_tensors} tensor{'s' if t.input_tensors != 1 else ''})"
    out.append(("Input size (MB)", inputs))
    tensors = f"{t.activation_tensors} tensor{'s' if t.activation_tensors != 1 else ''}"
    if t.completed == t.calls:
        counted = f"every call's outputs: {tensors}, each once"
    elif t.completed == 0:
        counted = "no call returned, so there are no outputs"
    else:
        returned = "the 1 call that returned" if t.completed == 1 else f"the {t.completed} calls that returned"
        counted = f"outputs of {returned}: {tensors}, each once"
    out.append(("Activations (MB)", f"{_mb(t.activation_bytes)} ({counted})"))
    by_dtype = t.param_bytes_by_dtype
    if len(by_dtype) == 1:
        params = f"{_mb(t.param_bytes)} ({next(iter(by_dtype))})"
    elif by_dtype:
        params = f"{_mb(t.param_bytes)}: " + ", ".join(f"{d} {_mb(n)}" for d, n in by_dtype.items())
    else:
        params = _mb(t.param_bytes)
    out.append(("Params size (MB)", params))
    if t.buffer_bytes:
        out.append(("Buffers size (MB)", _mb(t.buffer_bytes)))
    parts = "inputs + activations + params" + (" + buffers" if t.buffer_bytes else "")
    out.append(("Total size (MB)", f"{_mb(t.total_bytes)} ({parts})"))
    return out


def _summary_lines(trace: Trace, fwd: float | None) -> list[tuple[str, str]]:
    """The totals, then for a profile how it was timed, the plain and profiled forward with the overhead,
    what the self times add up to and, on a GPU, the kernel time and the share the GPU sat idle."""
    out = _totals_lines(totals(trace))
    t = trace.timing or {}

    def ms(key: str) -> str | None:
        v = t.get(key)
        return format_ms(v) if isinstance(v, (int, float)) else None

    restored = trace.meta.get("registrations_restored")
    if isinstance(restored, list) and restored:
        names = ", ".join(str(n) for n in restored[:8]) + (f" and {len(restored) - 8} more" if len(restored) > 8 else "")
        out.append(("Put back", f"what the forward registered on the model ({names}): the model is as found"))
    unavailable = trace.meta.get("flops_unavailable")
    if unavailable:
        first = ellipsize(str(unavailable).splitlines()[0], 160)
        out.append(("FLOPs", f"not counted: torch's FlopCounterMode could not run this forward ({first})"))
    if not t:
        return out + ([("Forward time (ms)", format_ms(fwd))] if fwd is not None else [])
    timed = (f"{timer_kind_text(t.get('kind'))} on {t.get('device')}, {run_dtype_text(trace)}, {_run_mode(trace)}"
             f"{t.get('repeats')} repeat{'' if t.get('repeats') == 1 else 's'}"
             f"{' after ' + str(t.get('warmup')) + ' warm-up' if t.get('warmup') else ', no warm-up'}")
    if t.get("statistic") == STATISTIC_IQM:  # every time below and in the rows: one statistic, said once
        timed += "; times are interquartile means"
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


def _run_mode(trace: Trace) -> str:
    """``train, autograd on, `` / ``eval, no_grad, ``: how the profiled forwards ran, where the trace says."""
    training, grad = trace.meta.get("training"), trace.meta.get("grad")
    parts = [("train" if training else "eval")] if isinstance(training, bool) else []
    parts += [("autograd on" if grad else "no_grad")] if isinstance(grad, bool) else []
    return "".join(f"{p}, " for p in parts)


# ---- cells -------------------------------------------------------------------------------------------
# The spread of each call's time over the repeats (``CallTiming``'s quantiles), after ``self ms`` in the formats
# that have every column (Markdown, HTML, CSV), in the calls view (a module's calls add up no quantiles); the
# text table marks a ``ms`` above its own p90 instead.
SPREAD_COLUMNS = ("median ms", "p10 ms", "p90 ms")
SPREAD_KEYS = {"median ms": "median_ms", "p10 ms": "p10_ms", "p90 ms": "p90_ms"}
STALL_MARK = "!"  # after a ``ms`` above the call's own p90 (``rows.above_own_p90``)


def _extra_columns(trace: Trace, spread: bool = False) -> list[str]:
    """The profile's columns of ``trace``'s table; ``spread``: with ``SPREAD_COLUMNS`` where a call has them."""
    cols = []
    if any(c.timing for c in trace.calls):
        cols += ["ms", "%", "self ms"]
        if spread and any(c.timing.get("p90_ms") is not None for c in trace.calls if c.timing):
            cols += list(SPREAD_COLUMNS)
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


def stall_marked(rows: list[Row]) -> bool:
    """Whether any of ``rows`` has its ``ms`` marked ``STALL_MARK`` (``rows.above_own_p90``)."""
    return any(above_own_p90(r.timing) for r in rows)


def _extra_cells(row: Row, cols: list[str], forward_ms: float | None, raw: bool = False,
                 marked: bool = False) -> list[str | int]:
    """The profile's cells of one row; ``raw`` (CSV): counts and bytes as plain integers, not ``297.12M``.
    ``marked``: some row of the table has a ``STALL_MARK`` (``stall_marked``), so every ``ms`` cell keeps its
    width (two spaces where there is no mark) and the decimals stay in line."""
    t = row.timing or {}
    # a row folding deeper calls (``depth``) keeps its own self time, outside all its child modules, as at any
    # depth (its ``ms`` holds theirs): what the stderr ranking and the diagram say of the same call
    total, self_ms = t.get("total_ms"), t.get("self_ms")
    out = []
    for col in cols:
        if col == "ms":
            mark = f" {STALL_MARK}" if not raw and above_own_p90(t) else " " * (len(STALL_MARK) + 1) if marked else ""
            out.append(format_ms(total) + mark if isinstance(total, (int, float)) else "")
        elif col in SPREAD_COLUMNS:
            v = t.get(SPREAD_KEYS[col])
            out.append(format_ms(v) if isinstance(v, (int, float)) else "")
        elif col == "%":
            ok = isinstance(total, (int, float)) and forward_ms
            out.append(format_percent(100 * total / forward_ms) if ok else "")
        elif col == "self ms":
            out.append(format_ms(self_ms) if isinstance(self_ms, (int, float)) else "")
        elif col == "host ms":
            host = t.get("cpu_ms")
            out.append(format_ms(host) if isinstance(host, (int, float)) else "")
        elif col == "FLOPs":
            out.append("" if row.flops is None else row.flops if raw else format_si(row.flops))
        elif col == "FLOP/s":  # achieved throughput, scaled: 312.45G on a CPU, 1.21T on an H100
            ok = row.flops and isinstance(total, (int, float)) and total > 0
            seconds = total * 1e-3 if ok else 0.0  # 0 for a time too short for a float (5e-324 ms)
            rate = row.flops / seconds if seconds > 0 and math.isfinite(row.flops / seconds) else None
            out.append("" if rate is None else round(rate) if raw else format_si(rate))
        elif col in ("act mem", "peak mem"):
            size = (row.memory or {}).get("activation_bytes" if col == "act mem" else "peak_bytes")
            ok = isinstance(size, (int, float))
            out.append("" if not ok else int(size) if raw else format_bytes(size))
    return out


def _inputs_text(row: Row, home: str | None = None) -> str:
    """A row's inputs, whole: positional, then keyword (``k=...``), then side inputs (``+side ...``); a tensor
    off the ``home`` device with its device (``units.tensor_text``)."""
    if row.summary:
        return _join_summary(row.inputs, home=home)
    parts = [format_value(row.inputs, top=True, home=home)] if row.inputs not in ([], None) else []
    parts += [f"{literal(str(k))}={format_value(v, home=home)}" for k, v in row.kwargs.items()]
    side = f" +side {format_value(row.side, top=True, home=home)}" if row.side else ""
    return ", ".join(parts) + side


def _outputs_text(row: Row, home: str | None = None) -> str:
    """A row's outputs, whole; the error for the failing call, ``(raised)`` for the calls it passed through,
    ``raised`` and its own error for one that raised another exception in its place, ``(caught)`` for one that
    raised an exception the forward caught and went on from (a note gives the message: ``units.caught_notes``)."""
    if row.summary:
        return _join_summary(row.outputs, top=False, home=home)
    if row.failed:
        return f"{FAIL_MARK} {error_cell(row.error or '')}"
    if row.raised:
        return f"raised {error_cell(row.error)}" if row.reraised and row.error else "(raised)"
    if row.caught:
        return "(caught)"
    return format_value(row.outputs, home=home)


def _join_summary(items: list[tuple[Value, int]], top: bool = True, home: str | None = None) -> str:
    """The distinct values of a module's calls, ``×k`` when one repeats: ``(4,18,400) ×4 | (4,1,400)``."""
    return " | ".join(format_value(v, top=top, home=home) + (f" ×{k}" if k > 1 else "") for v, k in items)


def _params_cell(row: Row) -> str:
    """A module's parameters (children included); a repeated call points at the call that counted them."""
    if not row.params:
        return "—"
    return "1st call" if row.repeat else f"{row.params:,}"


def _trainable_cell(row: Row) -> str:
    if not row.params:
        return "—"
    return "1st call" if row.repeat else f"{row.trainable:,}"


def _headers(view: str, extra: list[str]) -> list[str]:
    return ["layer", "class", "calls" if view == "modules" else "call", "input shapes", "output shapes",
            "params", "trainable", *extra]


def _droppable(view: str, extra: list[str]) -> list[str]:
    """The columns a narrow table may leave out, first to last: a profile table's (see ``_DROPPABLE``), else
    only the call column; the modules view's call column is ``calls``."""
    names = [*_DROPPABLE] if extra else ["call"]
    return [("calls" if n == "call" else n) for n in names] if view == "modules" else names


def drop_empty_call(rows: list[Row], view: str, *columns: list) -> list[list]:
    """``columns`` (lists parallel to a table's headers: the headers, a row's cells) without the call column
    where it would be empty: in the calls view, when no row in ``rows`` (the rows shown) is one of several
    calls of its module. The modules view's ``calls`` column always counts something."""
    if view != "calls" or any(r.call for r in rows):
        return [list(c) for c in columns]
    return [[*c[:2], *c[3:]] for c in columns]


def elided_note(shown: Elision, how: str = "trace.table(max_rows=None)") -> str | None:
    """The note under a table that ``rows.elide`` shortened (``None`` when it did not): how many rows it shows of
    how many, which, and ``how`` to see them all."""
    if not shown.left_out:
        return None
    return (f"{len(shown.rows):,} of {shown.total:,} rows shown (the first, the last and any failing one): {how} "
            "shows them all, a smaller depth folds them")


def gap_text(count: int) -> str:
    """The row standing for ``count`` rows ``rows.elide`` left out."""
    return f"⋯ {count:,} row{'s' if count != 1 else ''} not shown"


def _notes(trace: Trace, rows: list[Row], every_row: list[Row] | None = None, *, home: str | None) -> list[str]:
    """Footnotes: folding, repeated calls, aliases, the calls' notes, uncalled modules, devices other than
    ``home`` (``home_device``), the failure. ``rows`` are the rows shown; ``every_row`` the table's rows before a
    display shortened it (``rows.elide``): the repeated calls are counted over those."""
    notes = []
    for r in rows:
        if r.folded:
            notes.append(f"{literal(r.name)}: +{r.folded} deeper call{'s' if r.folded != 1 else ''} folded")
    repeats = [r for r in (rows if every_row is None else every_row) if r.repeat and r.params]
    if repeats:
        first = repeats[0]
        more = f" and {len(repeats) - 1} more" if len(repeats) > 1 else ""
        notes.append(f"\"1st call\" in params: a repeated call (name#k is call k+1: {literal(first.name)} is call "
                     f"{first.call_index + 1} of {first.calls}{more}); its module's parameters are counted once, "
                     "at its first call")
    for r in rows:
        if r.aliases and not r.repeat:
            notes.append(f"{literal(r.name)} is also registered as {', '.join(map(literal, r.aliases))}")
    notes += _caller_notes(rows)
    notes += _stall_notes(rows)
    by_text: dict[str, list[str]] = {}  # the calls' own notes (profiling), each text once with its calls
    for c in trace.calls:
        for n in c.notes:
            by_text.setdefault(note_text(n, c.cls), []).append(literal(c.label))
    for n, labels in by_text.items():
        more = f" +{len(labels) - 4} more" if len(labels) > 4 else ""
        notes.append(f"{n}: {', '.join(labels[:4])}{more}")
    never, unreached = uncalled_split(trace)
    for head, modules in (("never called in the forward", never), ("not reached before the failure", unreached)):
        if modules:
            notes.append(f"{head}: " + ", ".join(_uncalled_parts(modules)))
    elsewhere = other_devices(trace, home)
    if elsewhere:
        notes.append(f"on {', '.join(map(literal, elsewhere))}: these tensors are not on "
                     f"{literal(home or '')}, the device of the rest of the trace")
    every = rows if every_row is None else every_row
    folded = any(r.folded for r in every)  # a depth folds calls: the marked rows, the origin's not among them
    notes += nonfinite_notes(trace, [r.name for r in every if r.nonfinite == PASSED_MARK] if folded else None)
    notes += caught_notes(trace)
    if trace.failure is not None:
        where = failure_place(trace, with_class=True)
        notes.append(f"{FAIL_MARK} the forward failed {where}: {error_lines(trace.failure.text)}"
                     f"{raised_instead_text(trace)}")
    return notes


def _stall_notes(rows: list[Row]) -> list[str]:
    """The note on the rows whose ``ms`` carries ``STALL_MARK``: above their own p90, each with its median."""
    stalled = [r for r in rows if above_own_p90(r.timing)]
    if not stalled:
        return []
    shown = ", ".join(f"{literal(r.name)} (median {format_ms(r.timing['median_ms'])})"  # type: ignore[index]
                      if isinstance((r.timing or {}).get("median_ms"), (int, float)) else literal(r.name)
                      for r in stalled[:4])
    more = f" +{len(stalled) - 4} more" if len(stalled) > 4 else ""
    return [(f"{STALL_MARK} ms above the call's own p90 over the repeats and well above its median: a stall in the "
             f"repeats its ms is averaged over, not its usual time (the median is nearer that): {shown}{more}")]


def _caller_notes(rows: list[Row]) -> list[str]:
    """The modules view's rows of modules called from several modules (``Row.callers``): listed under the
    nearest module enclosing all their calls, not under a caller whose time they are not all part of."""
    out = []
    for r in rows:
        if not r.callers:
            continue
        callers = f"{literal(r.name)} is called from {', '.join(map(literal, r.callers))}"
        if r.listed_under in r.callers:  # one caller calls it directly and through another (a child of its own)
            out.append(f"{callers}: listed under {literal(r.listed_under)}, which makes or encloses every call")
        else:
            out.append(f"{callers}: listed under their common caller, not nested under {literal(r.callers[0])}")
    return out


def _uncalled_parts(uncalled: list[Uncalled]) -> list[str]:
    """Uncalled modules, each with its uncalled submodules folded in (``layer1 (Sequential, ...) +10 inside``)."""
    names = {u.module for u in uncalled}
    inside: dict[str, int] = {}
    tops = []
    for u in uncalled:
        parts = u.module.split(".")
        top = next((".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in names), None)
        if top is None:
            tops.append(u)
        else:
            inside[top] = inside.get(top, 0) + 1
    out = []
    for u in tops:
        more = f", +{inside[u.module]} inside" if inside.get(u.module) else ""
        out.append(f"{literal(u.module or '(root)')} ({literal(u.cls)}, {u.params:,} params{more})")
    return out


# ---- text --------------------------------------------------------------------------------------------
# Profile columns a too-wide table leaves out, in this order: trainable (the totals give it), a row's input is
# (nearly always) the output of the row above, a repeated call's layer name carries "#k" already; then the
# GPU-only peak mem and host ms, FLOP/s (the FLOPs column over the ms column), and last act mem and % (ms over
# the root's). Shapes are never cut.
_DROPPABLE = ("trainable", "input shapes", "params", "call", "peak mem", "host ms", "FLOP/s", "act mem", "%")
# Columns any table leaves out, in this order, when even with its names at their narrowest, its inputs on a
# line of their own and its shapes wrapped inside it would still be wider than the width: every table fits.
_LAST_RESORT = ("trainable", "FLOPs", "self ms", "params", "class")
_SHAPE_FLOOR = 8  # the narrowest a shape column is squeezed to (a shape narrower than that keeps its width)
_SHAPES = ("input shapes", "output shapes")
_LEFT = {"layer", "class", "call", *_SHAPES}
_SEP = "  "
# How narrow the layer and class names may get to fit the width: first, then when nothing else can give way.
_NAME_FLOORS = {"layer": 12, "class": 10}
_LAST_NAME_FLOORS = {"layer": 6, "class": 5}

# ANSI styles, used only with ``color=True``.
_BOLD, _DIM, _RED, _CYAN, _RESET = "\x1b[1m", "\x1b[2m", "\x1b[31m", "\x1b[36m", "\x1b[0m"
_YELLOW = "\x1b[1;33m"  # the row where the first NaN or Inf was made (``check_finite``)


# The most of one cell or note a text table wraps: past it (a megabyte-long error message or dtype of a hand-made
# trace) the text is cut, with a mark saying how much was left out, so wrapping costs no more than for a page.
MAX_CELL_CHARS = 10_000


def _bounded(text: str) -> str:
    """``text``, or its first ``MAX_CELL_CHARS`` characters and how many more there were."""
    if len(text) <= MAX_CELL_CHARS:
        return text
    return text[:MAX_CELL_CHARS] + f"… (+{len(text) - MAX_CELL_CHARS:,} characters)"


def _shape_spans(text: str) -> list[bool]:
    """For each character of ``text``, whether it lies inside a shape: a parenthesis pair holding neither a
    bracket, ``=`` nor a space (``(2,16,32)``), where a value's texts (structs, tuples) always hold one."""
    inside = [False] * len(text)
    opened = -1
    for i, ch in enumerate(text):
        if ch == "(":
            opened = i
        elif ch in "= [":
            opened = -1
        elif ch == ")" and opened >= 0:
            for k in range(opened + 1, i):
                inside[k] = True
            opened = -1
    return inside


def _tokens(text: str) -> list[str]:
    """``text`` split after each space, except between a shape and its dtype: the places a cell may wrap
    (``(2,3), `` | ``(4,5) int64``)."""
    out, cur = [], ""
    for i, ch in enumerate(text):
        cur += ch
        if ch == " " and not (cur.rstrip().endswith(")") and text[i + 1:i + 2].isalpha()):
            out.append(cur)
            cur = ""
    if cur:
        out.append(cur)
    return out


def _pieces(token: str) -> list[str]:
    """A token (``_tokens``) split further, where one is wider than its column: after a struct's ``(`` and a
    ``,`` (``Output(`` | ``last_hidden_state=(2,16,32),``), never inside a shape nor a name (``_humps`` splits
    further)."""
    out, cur = [], ""
    in_shape = _shape_spans(token)
    for i, ch in enumerate(token):
        cur += ch
        after = token[i + 1:i + 2]
        if ch == "(":
            breaks = i > 0 and (token[i - 1].isalnum() or token[i - 1] == "_") and after not in ("", ")")
        else:
            breaks = ch == "," and not in_shape[i] and after not in ("", " ")
        if breaks:
            out.append(cur)
            cur = ""
    if cur:
        out.append(cur)
    return out


def _humps(piece: str) -> list[str]:
    """A piece (``_pieces``) wider than its column split further: a field after its ``=``
    (``last_hidden_state=`` | ``(2,16,32),``), a struct's type name (``BaseModelOutputWithPooling(``) before
    each capital after a small letter, between its words, never inside one."""
    field, eq, rest = piece.partition("=")
    if eq and field.isidentifier() and rest:
        return [field + eq, *_humps(rest)]
    if not (piece.endswith("(") and piece[:-1].isidentifier()):
        return [piece]
    out, cur = [], ""
    for i, ch in enumerate(piece):
        if ch.isupper() and i > 0 and piece[i - 1].islower():
            out.append(cur)
            cur = ""
        cur += ch
    return [*out, cur]


def longest_token(text: str) -> int:
    """The narrowest a column can wrap ``text`` to without cutting a shape, a field's name or a word."""
    return max((display_width(h.rstrip()) for t in _tokens(_bounded(text)) for p in _pieces(t) for h in _humps(p)),
               default=0)


def wrap_cell(text: str, width: int) -> list[str]:
    """``text`` on lines of at most ``width`` characters, every character kept: broken at spaces; a piece
    longer than a line inside a value's text (``_pieces``), then after its commas, and only then anywhere. A
    width below 1 is taken as 1. A text longer than ``MAX_CELL_CHARS`` is cut there first, with a mark."""
    width = max(width, 1)
    text = _bounded(text)
    lines: list[str] = []
    cur = ""
    for word in _tokens(text):
        if display_width((cur + word).rstrip()) <= width:
            cur += word
            continue
        if cur.strip() and display_width(word.rstrip()) <= width:
            lines.append(cur.rstrip())
            cur = word
            continue
        # a word wider than the column: at its break points, filling the line; a struct's name wider than
        # that between its words
        pieces = [h for p in _pieces(word) for h in (_humps(p) if display_width(p) > width else [p])]
        for tok in pieces:
            if display_width((cur + tok).rstrip()) <= width:
                cur += tok
                continue
            if cur.strip():
                lines.append(cur.rstrip())
                cur = ""
            while display_width(tok.rstrip()) > width:  # one piece wider than the column: after a comma, else anywhere
                cut = tok.rfind(",", 0, width) + 1 or max(len(fitting_start(tok, width)), 1)
                lines.append(tok[:cut])
                tok = tok[cut:]
            cur = tok
    if cur.strip() or not lines:
        lines.append(cur.rstrip())
    return lines


def wrap_words(text: str, width: int) -> list[str]:
    """A note wrapped at spaces to ``width`` columns (continuation lines indented by 2), nothing lost."""
    first = wrap_cell(text, width)[0]
    rest = text[len(first):].lstrip(" ")
    return [first] + (["  " + line for line in wrap_cell(rest, width - 2)] if rest else [])


def _shrink_names(widths: dict[str, int], natural: dict[str, int], floor: dict[str, int],
                  excess: int, shown: list[str]) -> None:
    """Narrow the shown layer and class columns (in ``widths``) by ``excess`` columns in all, the wider first
    (the class on a tie), down to ``floor`` (names give way before shapes are squeezed). Computed at once, so a
    megabyte-long name costs no more than a short one."""
    slack = {c: max(widths[c] - min(floor[c], natural[c]), 0) for c in floor if c in shown}
    for col, cut in level_cuts(slack, excess).items():
        widths[col] -= cut


K = TypeVar("K")  # a column's key


def level_cuts(slack: dict[K, int], total: int) -> dict[K, int]:
    """How much to take from each column so that ``total`` (at most all the slack) comes off the ones with the
    most ``slack`` first, leaving them level: what taking one at a time from the widest would give."""
    total = max(min(total, sum(slack.values())), 0)

    def taken(level: int) -> int:
        return sum(max(s - level, 0) for s in slack.values())

    low, high = 0, max(slack.values(), default=0)
    while low < high:  # the lowest level at which no more than ``total`` is taken
        mid = (low + high) // 2
        if taken(mid) <= total:
            high = mid
        else:
            low = mid + 1
    cuts = {c: max(s - low, 0) for c, s in slack.items()}
    left = total - sum(cuts.values())
    for c in sorted((c for c, s in slack.items() if s >= low), key=lambda c: c != "class"):
        if left <= 0 or slack[c] - cuts[c] <= 0:
            break
        cuts[c] += 1
        left -= 1
    return cuts


def _drop_while(shown: list[str], names: Iterable[str], too_wide: Callable[[], bool]) -> list[str]:
    """Take ``names`` out of ``shown``, in order, while ``too_wide()``; the names taken out."""
    dropped = []
    for name in names:
        if not too_wide():
            break
        if name in shown:
            shown.remove(name)
            dropped.append(name)
    return dropped


def _fit(headers: list[str], cells: dict[str, list[str]], limit: int | None, droppable: list[str],
         layer_floor: int = 0) -> tuple[list[str], dict[str, int], list[str], bool]:
    """Columns to show, their widths, the columns left out, and whether the inputs go on a second line.

    In order, until the table fits ``limit``: leave out the ``droppable`` columns (profile tables) while the
    shapes cannot fit at their narrowest; let the shape columns wrap (never narrower than their longest
    shape); elide layer names (to 12) and class names (to 10); put the inputs on a line of their own below
    each row, the names taking back the room that gives first (a wide output cell wraps rather than cut them);
    elide the names further (to 6 and 5); wrap shapes inside (after commas). ``distinct_cuts`` then cuts the
    names so that two different ones never read the same. Before any of this, the
    ``_LAST_RESORT`` columns are left out while even all of it could not make the table fit. Nothing of a shape
    is ever cut. No layer cell is cut narrower than ``layer_floor`` (its deepest indentation and mark, and
    two characters of its name; at most half the ``limit``), so every row keeps its place in the tree.
    """
    layer_floor = min(layer_floor, (limit or 0) // 2)  # a tree too deep for that: its deepest rows cut whole
    name_floors = {**_NAME_FLOORS, "layer": max(_NAME_FLOORS["layer"], layer_floor)}
    last_floors = {**_LAST_NAME_FLOORS, "layer": max(_LAST_NAME_FLOORS["layer"], layer_floor)}
    natural = {h: max([len(h)] + [display_width(c) for c in cells[h]]) for h in headers}
    least = {h: max([longest_token(h)] + [longest_token(c) for c in cells[h]]) for h in _SHAPES if h in headers}
    shown = list(headers)
    widths = dict(natural)
    if limit is None:
        return shown, widths, [], False

    def span(cols: list[str], w: dict[str, int]) -> int:
        return sum(w[c] for c in cols) + len(_SEP) * (len(cols) - 1)

    def narrowest(cols: list[str]) -> int:
        return span(cols, {**widths, **{h: least[h] for h in _SHAPES if h in cols}})

    def tightest(cols: list[str]) -> int:  # names at their last floors, inputs below, shapes squeezed
        names = {c: min(last_floors[c], natural[c]) for c in last_floors if c in cols}
        shapes = {h: min(least[h], _SHAPE_FLOOR) for h in _SHAPES if h in cols}
        return span([c for c in cols if c != "input shapes"], {**widths, **names, **shapes})

    dropped = _drop_while(shown, droppable, lambda: narrowest(shown) > limit)
    dropped += _drop_while(shown, _LAST_RESORT, lambda: tightest(shown) > limit)

    _shrink_names(widths, natural, name_floors, narrowest(shown) - limit, shown)
    inputs_below = False
    if narrowest(shown) > limit and "input shapes" in shown:
        shown.remove("input shapes")
        inputs_below = True
        # the room the inputs left goes to the names first: a wide output cell wraps rather than cut them
        for col in name_floors:
            widths[col] = natural[col]
        _shrink_names(widths, natural, name_floors, narrowest(shown) - limit, shown)
    _shrink_names(widths, natural, last_floors, narrowest(shown) - limit, shown)  # the columns that stay are still too wide: names give way further
    shapes = [h for h in _SHAPES if h in shown]
    room = limit - span([c for c in shown if c not in shapes], widths) - len(_SEP) * len(shapes)
    need = sum(natural[h] for h in shapes)
    if room >= need:
        for h in shapes:
            widths[h] = natural[h]
    elif len(shapes) == 2 and min(natural[h] for h in shapes) <= room // 2:  # the narrower one whole
        small, large = sorted(shapes, key=lambda h: natural[h])
        widths[small], widths[large] = natural[small], room - natural[small]
    elif shapes:
        base = {h: min(least[h], max(room // len(shapes), _SHAPE_FLOOR)) for h in shapes}
        spare = max(room - sum(base.values()), 0)
        extra_need = {h: natural[h] - base[h] for h in shapes}
        total_need = sum(extra_need.values()) or 1
        for h in shapes:
            widths[h] = base[h] + spare * extra_need[h] // total_need
    return shown, widths, dropped, inputs_below


def _cut_variants(text: str, width: int, cut: Callable[[str, int], str]) -> list[str]:
    """Ways to cut ``text`` (an indented name) to ``width`` columns, the column's own ``cut`` first: then the
    last dotted part whole, the start kept, the end kept (the indentation kept while a name still fits)."""
    name = text.lstrip(" ")
    indent = text[:len(text) - len(name)]
    if len(indent) + 4 > width:
        indent = ""
    room = width - len(indent)
    out = [cut(text, width)]
    last = name.rsplit(".", 1)[-1]
    if last != name and display_width(last) + 2 <= room:
        out.append(indent + ellipsize_middle(name, room - display_width(last) - 1).split("…")[0] + "…." + last)
    out += [indent + ellipsize(name, room), indent + "…" + fitting_end(name, room - 1)]
    return out


def _common_ends(names: list[str]) -> tuple[int, int]:
    """How many characters all ``names`` share at their start and at their end (the two not overlapping)."""
    shortest = min(len(n) for n in names)
    start = 0
    while start < shortest and all(n[start] == names[0][start] for n in names):
        start += 1
    end = 0
    while end < shortest - start and all(n[-1 - end] == names[0][-1 - end] for n in names):
        end += 1
    return start, end


def _cut_around_difference(group: list[str], width: int) -> dict[str, str] | None:
    """Each of ``group`` (names that a cut made read the same) cut to ``width`` columns around the part where
    they differ, that part whole: ``blocks.7.attention.output.dense`` among its siblings as ``…7…dense``, the
    end of what follows it kept first, then the start of what precedes it. ``None`` where a differing part does
    not fit (or the names are indented differently)."""
    indents = {len(t) - len(t.lstrip(" ")) for t in group}
    if len(indents) != 1:
        return None
    indent = " " * indents.pop()
    names = [t[len(indent):] for t in group]
    if len(indent) + 6 > width:
        indent = ""
    room = width - len(indent)
    start, end = _common_ends(names)
    while start and any(start < len(n) and display_width(n[start]) == 0 for n in names):
        start -= 1  # names that differ in a combining mark: its letter goes with the part that differs
    out = {}
    for t, name in zip(group, names):
        before, middle, after = name[:start], name[start:len(name) - end], name[len(name) - end:]
        left = room - display_width(middle) - (1 if before else 0)
        if left < (1 if after else 0):
            return None
        tail = after if display_width(after) <= left else "…" + fitting_end(after, left - 1)
        head = ellipsize(before, room - display_width(middle) - display_width(tail))
        out[t] = indent + head + middle + tail
    return out


def distinct_cuts(texts: list[str], width: int, cut: Callable[[str, int], str] = ellipsize_middle) -> list[str]:
    """``texts`` cut to ``width`` columns with ``cut``, except where that makes different texts read the same
    (``input_layernorm`` and ``post_attention_layernorm`` both ``…ernorm``): those are cut the first other way
    (``_cut_variants``) that tells them apart, else around the part where they differ, kept whole
    (``_cut_around_difference``: ``…7…dense`` and ``…17…dense`` among fifty ``blocks.N.attention.output.dense``)."""
    cuts = [cut(t, width) for t in texts]
    positions: dict[str, list[int]] = {}  # each label, where it stands
    for i, c in enumerate(cuts):
        positions.setdefault(c, []).append(i)
    taken = set(cuts)
    for label, where in positions.items():
        group = sorted({texts[i] for i in where})
        if len(group) < 2:
            continue
        variants = {t: _cut_variants(t, width, cut) for t in group}  # each computed once, tried in turn
        candidates: list[dict[str, str] | None] = [{t: v[k] if k < len(v) else label for t, v in variants.items()}
                                                   for k in range(1, 4)]
        candidates.append(_cut_around_difference(group, width))
        for labels in candidates:
            chosen = set(labels.values()) if labels is not None else set()
            if len(chosen) == len(group) and not chosen & (taken - {label}):
                taken |= chosen
                for i in where:
                    cuts[i] = labels[texts[i]]
                break
    return cuts


def _cut_layer_names(cells: list[str], prefixes: list[int], width: int) -> list[str]:
    """The layer cells cut to ``width``, each one's first ``prefixes[i]`` characters (its indentation and
    mark) kept whole and only the name after them cut (``distinct_cuts`` among the names of one indentation),
    so a row never loses its place in the tree; where even the indentation is too wide, the whole cell is cut."""
    out = list(cells)
    groups: dict[int, list[int]] = {}
    for i, (cell, n) in enumerate(zip(cells, prefixes)):
        if display_width(cell) > width:
            groups.setdefault(n if display_width(cell[:n]) + 2 <= width else -1, []).append(i)
    for n, where in groups.items():
        if n < 0:
            cut = distinct_cuts([cells[i] for i in where], width)
        else:
            room = width - display_width(cells[where[0]][:n])
            cut = [cells[i][:n] + c for i, c in zip(where, distinct_cuts([cells[i][n:] for i in where], room))]
        for i, c in zip(where, cut):
            out[i] = c
    return out


def _style(text: str, style: str, color: bool) -> str:
    return f"{style}{text}{_RESET}" if color and style and text.strip() else text


def render_text(trace: Trace, *, depth: int | None = None, view: str = "calls", width: int | None = 100,  # noqa: C901 - to split: column fitting and wrapping from row emission
                color: bool = False, max_rows: int | None = None) -> str:
    """An aligned table (an indented tree in the calls view) that fits ``width`` columns, shapes whole.

    The ``trainable`` column is shown only where it differs from ``params`` somewhere (otherwise the totals
    give it); an empty ``call`` column is left out. A table wider than ``width`` wraps its shape cells onto
    continuation lines, then elides layer and class names, then puts each row's inputs on a line below it
    (``in: ...``); a profile table first leaves out ``trainable``, ``input shapes``, ``params``, ``call``
    (``calls``), ``peak mem``, ``host ms``, ``FLOP/s``, ``act mem`` and ``%``, and any table, where all that is not
    enough, ``trainable``, ``FLOPs``, ``self ms``, ``params`` and ``class`` (every line fits 40 columns or more), and says so below
    the table. ``width=None`` (or 0): one line per row, nothing
    elided. ``color=True`` adds ANSI emphasis: the failing row in red, rows that fold deeper calls in cyan,
    output shapes that differ from the input in bold (callers decide: a terminal, no ``NO_COLOR``).
    ``max_rows`` (a notebook's display): at most that many rows, plus any failing one (``rows.elide``); a line
    says how many were left out where they were, a note how to see them all.
    """
    every_row = table_rows(trace, depth, view)
    home = home_device(trace)
    shown_rows = elide(every_row, max_rows)
    rows = shown_rows.rows
    extra = _extra_columns(trace)
    fwd = forward_ms(trace)
    marked = stall_marked(rows)
    headers = _headers(view, extra)
    base_depth = min((r.depth for r in rows), default=0)
    limit = width or None

    def layer(r: Row) -> str:
        return "  " * (r.depth - base_depth) + row_mark(r) + literal(r.short if view == "calls" else r.name)

    cells: dict[str, list[str]] = {h: [] for h in headers}
    for r in rows:
        for h, c in zip(headers, [layer(r), literal(r.cls), r.call, _inputs_text(r, home), _outputs_text(r, home),
                                  _params_cell(r), _trainable_cell(r), *_extra_cells(r, extra, fwd, marked=marked)]):
            cells[h].append(c)
    # trainable only where it tells something: some row's differs from its params
    redundant = all(t == p for t, p in zip(cells["trainable"], cells["params"]))
    if redundant:
        headers.remove("trainable")
    # as the other formats; here a modules view of no rows (a trace of no calls) leaves its calls column out too
    (headers,) = drop_empty_call(rows, view if rows else "calls", headers)
    # a repeated call's layer name carries "#k" already, so any table may leave the call column out
    droppable = _droppable(view, extra)
    prefixes = [len(layer(r)) - len(literal(r.short if view == "calls" else r.name)) for r in rows]
    layer_floor = max((display_width(c[:n]) + 2 for c, n in zip(cells["layer"], prefixes)), default=0)
    shown, widths, dropped, inputs_below = _fit(headers, cells, limit, droppable, layer_floor)
    if limit is not None:  # names cut to fit, two different names never to the same label
        cells["layer"] = _cut_layer_names(cells["layer"], prefixes, widths["layer"])
        if "class" in shown:
            cells["class"] = distinct_cuts(cells["class"], widths["class"], ellipsize)

    def line(values: dict[str, str], styles: dict[str, str] | None = None) -> str:
        padded = []
        for col in shown:
            w = widths[col]
            c = values.get(col, "")
            if col == "layer":
                c = ellipsize_middle(c, w)
            elif col not in _SHAPES:
                c = ellipsize(c, w)
            padded.append(pad(c, w, left=col in _LEFT))
        while len(padded) > 1 and not padded[-1].strip():
            padded.pop()
        padded[-1] = padded[-1].rstrip()
        return _SEP.join(_style(c, (styles or {}).get(col, ""), color) for c, col in zip(padded, shown)).rstrip()

    table_width = sum(widths[c] for c in shown) + len(_SEP) * (len(shown) - 1)
    rule = "─" * table_width
    def row_lines(values: dict[str, str], styles: dict[str, str]) -> list[str]:
        """One row, its shape cells wrapped onto continuation lines (the other cells on the first)."""
        if limit is None:
            return [line(values, styles)]
        wrapped = {h: wrap_cell(values[h], widths[h]) for h in _SHAPES if h in shown}
        height = max([len(v) for v in wrapped.values()] + [1])
        out = []
        for k in range(height):
            part = values if k == 0 else {}
            out.append(line({**part, **{h: (v[k] if k < len(v) else "") for h, v in wrapped.items()}}, styles))
        return out

    title = _title(trace, every_row, view, depth)
    lines = [*(wrap_words(title, limit) if limit is not None else [title]), rule, *row_lines({h: h for h in shown}, dict.fromkeys(shown, _BOLD)),
             rule]
    indent = widths["layer"] + len(_SEP)
    gaps = shown_rows.gaps
    if -1 in gaps:
        lines.append(_style(gap_text(gaps[-1]), _DIM, color))
    for i, r in enumerate(rows):
        values = {h: cells[h][i] for h in headers}
        lines.extend(row_lines(values, _row_styles(r, shown)))
        if inputs_below and values["input shapes"]:
            room = max(table_width - indent, 20)
            for k, piece in enumerate(wrap_cell(values["input shapes"], room - 4)):
                lines.append(" " * indent + ("in: " if k == 0 else "    ") + piece)
        if i in gaps:
            lines.append(_style(gap_text(gaps[i]), _DIM, color))
    lines.append(rule)
    summary = _summary_lines(trace, fwd)
    label_w = max(len(k) for k, _ in summary)
    for k, v in summary:
        entry = f"{k + ':':<{label_w + 1}} {v}"
        lines.extend(wrap_words(entry, limit) if limit is not None else [entry])
    notes = _notes(trace, rows, every_row, home=home)
    if redundant and any(c not in ("—", "", "1st call") for c in cells["params"]):
        notes.insert(0, "trainable: left out, equal to params in every row (the totals give it)")
    if inputs_below:
        notes.insert(0, f"input shapes: on a line of their own (in: ...) to fit {limit} columns")
    elided = elided_note(shown_rows)
    if elided:
        notes.append(elided)
    if dropped:
        notes.append(f"left out to fit {limit} columns: {', '.join(dropped)} (a wider --width, or the md, csv "
                     "and html formats, show every column)")
    if notes:
        lines.append(rule)
        for n in notes:  # a note's own line breaks (an error message's) kept
            for part in n.split("\n"):
                lines.extend(wrap_words(part, limit) if limit is not None else [part])
    return "\n".join(lines) + "\n"


def _row_styles(r: Row, shown: list[str]) -> dict[str, str]:
    if r.failed:
        return dict.fromkeys(shown, _RED)
    styles = {}
    if r.nonfinite == ORIGIN_MARK:
        styles["layer"] = styles["output shapes"] = _YELLOW
    if r.raised:
        styles["output shapes"] = _RED
    elif r.caught:  # not the failure's red: the forward went on
        styles["output shapes"] = _DIM
    elif r.shape_changed:
        styles["output shapes"] = _BOLD
    if r.folded:
        styles["layer"] = _CYAN
    return styles


def _title(trace: Trace, rows: list[Row], view: str, depth: int | None) -> str:
    """``ResNet: 68 calls``; for a failed forward how many returned and where it failed."""
    n = len(trace.calls)
    title = f"{literal(trace.model.cls)}: {n} call{'s' if n != 1 else ''}"
    if trace.failed:
        done = sum(1 for c in trace.calls if c.error is None)
        title += f" started, {done} returned (the forward failed {failure_place(trace)})"
    if view == "modules":
        title += f" of {len(rows)} module{'s' if len(rows) != 1 else ''}"
    if depth is not None:
        title += f", depth ≤ {depth}"
    return title


# ---- markdown ----------------------------------------------------------------------------------------
def _plain_cells(r: Row, extra: list[str], fwd: float | None, home: str | None = None,
                 marked: bool = False) -> list[str]:
    name = row_mark(r) + literal(r.name)
    return [name, literal(r.cls), r.call, _inputs_text(r, home), _outputs_text(r, home), _params_cell(r),
            _trainable_cell(r), *_extra_cells(r, extra, fwd, marked=marked)]


def render_markdown(trace: Trace, *, depth: int | None = None, view: str = "calls") -> str:
    """A GitHub-flavoured Markdown table (full qualified names, full shapes) with totals and notes; the ``call``
    column is left out when no module was called twice (it would be empty), as in the text and HTML tables."""
    rows = table_rows(trace, depth, view)
    extra = _extra_columns(trace, spread=view == "calls")
    fwd = forward_ms(trace)
    headers = _headers(view, extra)
    home = home_device(trace)
    aligns = ["---:" if i >= 5 else "---" for i in range(len(headers))]  # params onwards: numbers
    cells_of = []
    for r in rows:
        cells = [md_text(c) for c in _plain_cells(r, extra, fwd, home)]
        cells[0] = "&nbsp;" * (2 * r.depth) + md_code(row_mark(r) + r.name)
        cells_of.append(cells)
    headers, aligns, *cells_of = drop_empty_call(rows, view, headers, aligns, *cells_of)
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join(aligns) + "|"]
    out += ["| " + " | ".join(cells) + " |" for cells in cells_of]
    out.append("")
    for k, v in _summary_lines(trace, fwd):
        out.append(f"- {k}: {md_text(v)}")
    notes = _notes(trace, rows, home=home)
    if notes:
        out.append("")
        out += [f"> {md_text(part)}  " for n in notes for part in n.split("\n")]  # a note's line breaks kept
    return "\n".join(out) + "\n"


# ---- html --------------------------------------------------------------------------------------------
def render_html(trace: Trace, *, depth: int | None = None, view: str = "calls") -> str:
    """The scoped HTML table fragment; it lives in ``renderers.html`` (kept here for existing imports)."""
    from .html import render_html as fragment  # noqa: PLC0415 - renderers.html imports this module (a cycle)

    return fragment(trace, depth=depth, view=view)


# ---- csv ---------------------------------------------------------------------------------------------
def render_csv(trace: Trace, *, depth: int | None = None, view: str = "calls") -> str:
    """One row per call (or module): raw numbers (times in ms, FLOPs and FLOP/s as integers, memory in bytes),
    full shapes, no totals and no summary (the JSON has it); parses with the ``csv`` module."""
    rows = table_rows(trace, depth, view)
    extra = _extra_columns(trace, spread=view == "calls")
    fwd = forward_ms(trace)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    # csv quotes a field holding "\n" (the line terminator) but not one holding "\r", which a reader takes for
    # a line end too: a row with one (a module name, an error message) is written with every field quoted.
    quoted = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)
    home = home_device(trace)
    finite = checked(trace)  # check_finite: a last column, ``first`` on the origin's row, ``later`` or ``earlier``
    early = ended_before_origin(trace) if finite else set()  # on the others (those that ended before it)
    w.writerow(["layer", "depth", "class", "call_index" if view == "calls" else "calls", "n_calls",
                "input_shapes", "side_inputs", "output_shapes", "params", "trainable", "error", "folded_calls",
                *extra, *(["nonfinite"] if finite else [])])
    for r in rows:
        row = [r.name, r.depth, r.cls, r.call_index if view == "calls" else r.calls, r.calls,
               _inputs_text(r, home) if r.summary else format_value(
                   list(r.inputs) + list(r.kwargs.values()) if isinstance(r.inputs, list) else r.inputs,
                   top=True, home=home),
               format_value(r.side, top=True, home=home) if r.side else "",
               _outputs_text(r, home) if r.summary else ("" if r.error else format_value(r.outputs, home=home)),
               r.params or 0, r.trainable or 0, r.error or "", r.folded, *_extra_cells(r, extra, fwd, raw=True)]
        if finite:
            row.append("earlier" if r.nonfinite == PASSED_MARK and r.name in early
                       else {ORIGIN_MARK: "first", PASSED_MARK: "later"}.get(r.nonfinite, ""))
        (quoted if any(isinstance(c, str) and "\r" in c for c in row) else w).writerow(row)
    return buf.getvalue()


# ---- dispatch ----------------------------------------------------------------------------------------
def render(trace: Trace, format: str = "text", *, depth: int | None = None, view: str = "calls",
           width: int | None = 100, color: bool = False) -> str:
    """Render a shape table in ``format`` (``text``, ``md``, ``html`` or ``csv``)."""
    if format in ("text", "txt"):
        return render_text(trace, depth=depth, view=view, width=width, color=color)
    if format in ("md", "markdown"):
        return render_markdown(trace, depth=depth, view=view)
    if format == "html":  # a standalone page (renderers.html)
        from .html import render_page  # noqa: PLC0415 - renderers.html imports this module (a cycle)

        return render_page(trace, depth=depth, view=view)
    if format == "csv":
        return render_csv(trace, depth=depth, view=view)
    raise ValueError(f"unknown table format {format!r}; choose one of {', '.join(FORMATS)}")
