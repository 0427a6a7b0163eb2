"""The English of a ``check_finite`` trace: where the first NaN or Inf came from, and how far it spread.

Reads ``Trace.meta["nonfinite"]`` (the summary the tracer's ``FiniteProbe`` writes: ``first``, ``where``, the
counts) and ``Call.nonfinite`` (each call whose output holds some); every renderer that marks rows or nodes
asks here which calls to mark, and writes the sentences made here. A trace made without ``check_finite`` has
neither: every function then says nothing (``None``, an empty set), so such a trace renders as before. The
meta entry is free-form JSON in a loaded trace: anything malformed there reads as "not checked".
"""

from __future__ import annotations

from typing import Any

from ..tracer.metrics import NONFINITE_INPUT, NONFINITE_OUTSIDE, NONFINITE_OWN_CODE
from ..tracer.records import Call, Trace, labelled_tensors
from .units import literal

__all__ = ["ORIGIN_MARK", "PASSED_MARK", "checked", "counts_text", "is_own_code", "nonfinite_notes", "origin_call",
           "origin_events", "passed_calls", "row_marks", "summary_line"]

ORIGIN_MARK = "‼"  # the row, node or line where the first NaN or Inf was made
PASSED_MARK = "·"  # a later call whose output holds some: passed along, or made anew


def _summary(trace: Trace) -> dict[str, Any] | None:
    summary = trace.meta.get("nonfinite")
    return summary if isinstance(summary, dict) else None


def checked(trace: Trace) -> bool:
    """Whether the trace was made with ``check_finite`` (its outputs were checked for NaN and Inf)."""
    return _summary(trace) is not None


def _count(summary: dict[str, Any], key: str) -> int:
    value = summary.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def origin_call(trace: Trace) -> int | None:
    """The id of the call blamed for the first NaN or Inf (a layer, or a call's own code); ``None`` when there
    is none (all finite, an input held them, or the trace was not checked)."""
    summary = _summary(trace)
    first = summary.get("first") if summary else None
    if isinstance(first, int) and not isinstance(first, bool) and 0 <= first < len(trace.calls):
        return first
    return None


def passed_calls(trace: Trace) -> set[int]:
    """The ids of the calls whose output holds NaN or Inf, the origin's left out."""
    origin = origin_call(trace)
    return {c.id for c in trace.calls if c.nonfinite is not None and c.id != origin}


def row_marks(trace: Trace, depth: int | None = None) -> dict[int, str]:
    """``{call id: mark}`` for the rows of a table folded at ``depth``: ``ORIGIN_MARK`` on the origin's row,
    ``PASSED_MARK`` on the rows of later calls whose output holds NaN or Inf; a call ``depth`` folds away marks
    the row it is folded into (the origin's mark wins). Empty for a trace made without the check."""
    if not checked(trace):
        return {}
    marks: dict[int, str] = {}
    origin = origin_call(trace)
    for cid, mark in [*((i, PASSED_MARK) for i in sorted(passed_calls(trace))),
                      *(((origin, ORIGIN_MARK),) if origin is not None else ())]:
        c = trace.calls[cid]
        while depth is not None and c.depth > depth and c.parent is not None:
            c = trace.calls[c.parent]
        marks[c.id] = mark if marks.get(c.id) != ORIGIN_MARK else ORIGIN_MARK
    return marks


def origin_events(trace: Trace) -> set[tuple[str, int]]:
    """The events a line-by-line view marks as where the first NaN or Inf was made, as ``("call", id)`` and
    ``("op", id)``: the origin's call for a layer; for a call's own code, its functional ops (recorded with
    ``ops`` or ``lines``) that ran after the last child call to end before the values were seen (in the input of
    ``seen_in``, or in its output), and before then: the candidates, in event order."""
    origin = origin_call(trace)
    if origin is None:
        return set()
    if not is_own_code(trace):
        return {("call", origin)}
    call = trace.calls[origin]
    summary = _summary(trace) or {}
    seen_in = summary.get("seen_in")
    seen = (trace.calls[seen_in] if isinstance(seen_in, int) and not isinstance(seen_in, bool)
            and 0 <= seen_in < len(trace.calls) else None)
    limit = seen.start if seen is not None else call.end
    if limit is None:
        return set()
    after = max((c.end for c in trace.calls if c.parent == origin and c.end is not None and c.end < limit),
                default=call.start)
    return {("op", o.id) for o in trace.ops if o.call == origin and after < o.order < limit}


def counts_text(nan: int, posinf: int, neginf: int, values: int) -> str:
    """``3 NaN, 0 Inf of 64 values``; Infs by sign where there are some (``2 +Inf``, ``1 +Inf, 1 -Inf``)."""
    if posinf and neginf:
        inf = f"{posinf:,} +Inf, {neginf:,} -Inf"
    elif posinf or neginf:
        inf = f"{posinf:,} +Inf" if posinf else f"{neginf:,} -Inf"
    else:
        inf = "0 Inf"
    return f"{nan:,} NaN, {inf} of {values:,} value{'s' if values != 1 else ''}"


def _summary_counts(summary: dict[str, Any]) -> str:
    return counts_text(*(_count(summary, k) for k in ("nan", "posinf", "neginf", "values")))


def _call_name(call: Call) -> str:
    return f"{literal(call.label)} ({literal(call.cls)})"


def _input_name(trace: Trace, first: Any) -> str:
    """``input 0 (x)``: the trace input a ``"input:K"`` names, by its label where the trace knows it."""
    try:
        k = int(str(first).split(":", 1)[1])
    except (IndexError, ValueError):
        return "an input"
    root = trace.calls[0].cls if trace.calls else ""
    labelled = labelled_tensors(trace.inputs, root, "inputs") + labelled_tensors(trace.kwargs, root, "kwargs")
    name = f" ({literal(labelled[k][0])})" if 0 <= k < len(labelled) else ""
    return f"input {k}{name}"


def _origin_text(trace: Trace, summary: dict[str, Any]) -> str | None:
    """The sentence naming where the first NaN or Inf came from, with its counts; ``None`` when all finite."""
    where, first = summary.get("where"), summary.get("first")
    counts = _summary_counts(summary)
    seen_in = summary.get("seen_in")
    seen = (trace.calls[seen_in] if isinstance(seen_in, int) and not isinstance(seen_in, bool)
            and 0 <= seen_in < len(trace.calls) else None)
    if where == NONFINITE_INPUT:
        return (f"non-finite values in the input: {_input_name(trace, first)} already held them ({counts}); "
                "the model did not make them")
    if where == NONFINITE_OUTSIDE:
        into = f" (the input of {_call_name(seen)})" if seen is not None else ""
        return f"first non-finite values made outside the traced calls{into} — {counts}"
    origin = origin_call(trace)
    if origin is None:
        return None
    call = trace.calls[origin]
    if where == NONFINITE_OWN_CODE:
        place = f"in the input of {_call_name(seen)}" if seen is not None else "in its output"
        text = (f"first non-finite values made by the own code of {_call_name(call)}, not by a child layer "
                f"(their outputs were finite) — {counts} {place}")
    else:
        text = f"first non-finite output: {_call_name(call)} — {counts}"
    own = summary.get("own_nonfinite")
    if isinstance(own, list) and own and all(isinstance(n, str) for n in own):
        held = ", ".join(literal(n) for n in own[:5]) + (f" +{len(own) - 5} more" if len(own) > 5 else "")
        text += f"; its own {held} {'holds' if len(own) == 1 else 'hold'} NaN or Inf"
    return text


def _spread_text(trace: Trace, summary: dict[str, Any]) -> str | None:
    """How many calls' outputs held NaN or Inf besides the origin's, the first of them named."""
    passed = sorted(passed_calls(trace))
    if not passed:
        return None
    names = ", ".join(literal(trace.calls[i].label) for i in passed[:4])
    more = f" +{len(passed) - 4} more" if len(passed) > 4 else ""
    n = len(passed)
    after = "" if summary.get("where") == NONFINITE_INPUT else " after it"
    return f"{PASSED_MARK} non-finite outputs in {n} call{'s' if n != 1 else ''}{after}: {names}{more}"


def nonfinite_notes(trace: Trace) -> list[str]:
    """The notes under a table of a checked trace: the origin (marked ``ORIGIN_MARK``) and the spread; none
    when all was finite or the trace was not checked."""
    summary = _summary(trace)
    if summary is None:
        return []
    origin = _origin_text(trace, summary)
    notes = [] if origin is None else [f"{ORIGIN_MARK} {origin}"]
    spread = _spread_text(trace, summary)
    return notes + ([spread] if spread else [])


def summary_line(trace: Trace) -> str | None:
    """One line for the command line's stderr: where the first NaN or Inf came from and how many calls'
    outputs held some, or that every output was finite; ``None`` for a trace made without the check."""
    summary = _summary(trace)
    if summary is None:
        return None
    origin = _origin_text(trace, summary)
    n = len(passed_calls(trace))
    if origin is None and n:  # a hand-made or edited trace: calls hold some, the origin is not recorded
        return f"non-finite outputs in {n} call{'s' if n != 1 else ''}; where they came from is not recorded"
    if origin is None:
        n = sum(1 for c in trace.calls if c.error is None)
        return f"all outputs finite ({n} call{'s' if n != 1 else ''} checked)"
    after = "" if summary.get("where") == NONFINITE_INPUT else " after it"
    return f"{origin}; non-finite outputs in {n} call{'s' if n != 1 else ''}{after}"


def is_own_code(trace: Trace) -> bool:
    """Whether the origin is a call's own code rather than a layer (its children's outputs were finite)."""
    summary = _summary(trace)
    return summary is not None and summary.get("where") == NONFINITE_OWN_CODE
