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
from ..tracer.records import Call, Trace, iter_tensors, labelled_tensors
from .units import literal

__all__ = [
    "ORIGIN_MARK",
    "PASSED_MARK",
    "checked",
    "counts_text",
    "inside_only",
    "is_own_code",
    "nonfinite_notes",
    "origin_call",
    "origin_events",
    "passed_calls",
    "row_marks",
    "summary_line",
]

ORIGIN_MARK = "‼"  # the row, node or line where the first NaN or Inf was made
PASSED_MARK = "·"  # another call whose output holds some: passed along, made anew, or (before) what it was given


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
    return first if _call_at(trace, first) is not None else None


def _call_at(trace: Trace, value: Any) -> Call | None:
    """The call a summary's call id names (``first``, ``seen_in``); ``None`` for anything else (an input's
    ``"input:K"``, ``None``, a hand-edited value that names no call)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(trace.calls):
        return trace.calls[value]
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
    """The events a line-by-line view or a diagram marks as where the first NaN or Inf was made, as
    ``("call", id)`` and ``("op", id)``: the origin's call for a layer. For a call's own code, its functional ops
    (recorded with ``ops`` or ``lines``) that ran before the values were seen (in the input of ``seen_in``, or
    in its output) and made them: followed back through the data flow from the tensors that held them, through
    the origin's own ops only (a child's output was finite, its input is where the search ends); any of those
    ops may have made the first one, so all are marked. Without the tensors to follow (an older trace), every
    own op of the origin that ran before then is marked."""
    origin = origin_call(trace)
    if origin is None:
        return set()
    if not is_own_code(trace):
        return {("call", origin)}
    call = trace.calls[origin]
    summary = _summary(trace) or {}
    seen_in = summary.get("seen_in")
    seen = _call_at(trace, seen_in)
    limit = seen.start if seen is not None else call.end
    if limit is None:
        return set()
    own = [o for o in trace.ops if o.call == origin and call.start < o.order < limit]
    if seen is None:
        targets = [m.tid for _, m in iter_tensors(call.outputs) if m.tid is not None]
    else:
        tids = summary.get("seen_tensors")
        targets = [t for t in tids if isinstance(t, int)] if isinstance(tids, list) else []
    if not targets:
        return {("op", o.id) for o in own}
    made_by = {m.tid: o for o in own for _, m in iter_tensors(o.outputs) if m.tid is not None}
    marked: set[int] = set()
    todo = list(targets)
    while todo:
        op = made_by.get(todo.pop())
        if op is None or op.id in marked:
            continue
        marked.add(op.id)
        todo += [m.tid for v in op.inputs for _, m in iter_tensors(v) if m.tid is not None]
    return {("op", i) for i in marked}


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
    seen = _call_at(trace, seen_in)
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
        # an Inf made before it (a LayerNorm turning an earlier sibling's Inf into NaN): the first NaN, not the first
        # non-finite output
        early = _before_origin(trace, summary)
        kind = "NaN" if any(trace.calls[i].label in early for i in passed_calls(trace)) else "non-finite"
        text = f"first {kind} output: {_call_name(call)} — {counts}"
    own = summary.get("own_nonfinite")
    if isinstance(own, list) and own and all(isinstance(n, str) for n in own):
        held = ", ".join(literal(n) for n in own[:5]) + (f" +{len(own) - 5} more" if len(own) > 5 else "")
        text += f"; its own {held} {'holds' if len(own) == 1 else 'hold'} NaN or Inf"
    return text + _given_text(trace, summary)


def _given_text(trace: Trace, summary: dict[str, Any]) -> str:
    """``; its inputs already held 10 -Inf (made by ...)``: the other kinds the origin was given, a fact."""
    given = summary.get("given")
    if not isinstance(given, dict):
        return ""
    held = _kinds_text(given)
    if not held:
        return ""
    came = summary.get("given_from")
    source = ""
    if isinstance(came, dict):
        first, where = came.get("first"), came.get("where")
        if where == NONFINITE_INPUT:
            source = f", from {_input_name(trace, first)}"
        elif where == NONFINITE_OUTSIDE:
            source = ", made outside the traced calls"
        elif _call_at(trace, first) is not None:
            own = "the own code of " if where == NONFINITE_OWN_CODE else ""
            source = f", made by {own}{_call_name(trace.calls[first])}"
    return f"; its inputs already held {held}{source}"


def _kinds_text(counts: dict[str, Any]) -> str:
    """``10 -Inf``, ``1 NaN, 2 +Inf``: the kinds present, each with its count."""
    kinds = [(_count(counts, k), name) for k, name in (("nan", "NaN"), ("posinf", "+Inf"), ("neginf", "-Inf"))]
    return ", ".join(f"{n:,} {name}" for n, name in kinds if n)


def _top_level_nonfinite(trace: Trace) -> bool:
    return any(c.nonfinite is not None and c.parent is None for c in trace.calls)


def inside_only(trace: Trace) -> bool:
    """Whether the only non-finite values of a checked trace without an origin were ±Inf that stayed inside
    the model (an attention mask's -inf) or in its inputs: the model's outputs finite, no NaN anywhere."""
    summary = _summary(trace)
    if summary is None or summary.get("first") is not None or summary.get("where") is not None:
        return False
    return not _top_level_nonfinite(trace) and all(not c.nonfinite.nan for c in trace.calls
                                                   if c.nonfinite is not None)


def _inside_text(trace: Trace, summary: dict[str, Any]) -> str | None:
    """``±Inf stayed inside ...``: the inputs' and inner calls' ±Inf of a run whose outputs are finite."""
    parts = []
    inputs = summary.get("inputs")
    if isinstance(inputs, list):
        for i in inputs[:3]:
            if isinstance(i, dict) and isinstance(i.get("input"), int):
                name = _input_name(trace, f"input:{i['input']}")
                parts.append(f"{name} {_kinds_text(i)}")
    inner = sorted((c for c in trace.calls if c.nonfinite is not None), key=lambda c: (c.end is None, c.end or 0))
    if inner:
        n = len(inner)
        parts.append(f"the outputs of {n} call{'s' if n != 1 else ''} (first {_call_name(inner[0])})")
    if not parts:
        return None
    return f"±Inf that did not reach the model's output, as an attention mask's -inf: {'; '.join(parts)}"


def _before_origin(trace: Trace, summary: dict[str, Any]) -> set[str]:
    """The labels of the calls that ended before the first NaN or Inf was seen (the origin layer's end, or the
    start of the call whose input held what its own code made): their non-finite outputs are not "after it"
    (the Inf a LayerNorm turned into NaN, made by an earlier sibling)."""
    origin = origin_call(trace)
    if origin is None:
        return set()
    call = trace.calls[origin]
    limit = call.end
    seen = _call_at(trace, summary.get("seen_in"))
    if summary.get("where") == NONFINITE_OWN_CODE and seen is not None:
        limit = seen.start
    if limit is None:
        return set()
    return {c.label for c in trace.calls if c.nonfinite is not None and c.end is not None and c.end < limit}


def ended_before_origin(trace: Trace) -> set[str]:
    """The labels of the calls whose output held NaN or Inf and that ended before the origin's values were seen
    (``_before_origin``): listed "before it", and ``earlier`` in the CSV."""
    summary = _summary(trace)
    return _before_origin(trace, summary) if summary is not None else set()


def _names(labels: list[str]) -> str:
    more = f" +{len(labels) - 4} more" if len(labels) > 4 else ""
    return ", ".join(literal(label) for label in labels[:4]) + more


def _spread_text(trace: Trace, summary: dict[str, Any], passed: list[str] | None = None) -> str | None:
    """How many calls' outputs held NaN or Inf besides the origin's, the first of them named (``passed``: the
    labels of the rows marked ``PASSED_MARK`` in a table folded by ``depth``, the origin's row not among them)."""
    folded = passed is not None
    if passed is None:
        passed = [trace.calls[i].label for i in sorted(passed_calls(trace))]
    if not passed:
        return None
    unit = "call" if folded is False else "row"
    if summary.get("where") == NONFINITE_INPUT:
        n = len(passed)
        return f"{PASSED_MARK} non-finite outputs in {n} {unit}{'s' if n != 1 else ''}: {_names(passed)}"
    early = _before_origin(trace, summary)
    before = [label for label in passed if label in early]
    after = [label for label in passed if label not in early]
    parts = []
    if after:
        parts.append(f"in {len(after)} {unit}{'s' if len(after) != 1 else ''} after it: {_names(after)}")
    if before:
        parts.append(f"in {len(before)} {unit}{'s' if len(before) != 1 else ''} before it: {_names(before)}")
    return f"{PASSED_MARK} non-finite outputs {'; '.join(parts)}"


def nonfinite_notes(trace: Trace, passed: list[str] | None = None) -> list[str]:
    """The notes under a table of a checked trace: the origin (marked ``ORIGIN_MARK``) and the spread
    (``passed``: the labels of the rows marked ``PASSED_MARK``, when a depth folds calls), or the ±Inf that
    stayed inside a run whose outputs are finite; none when all was finite or the trace was not checked."""
    summary = _summary(trace)
    if summary is None:
        return []
    if inside_only(trace):
        inside = _inside_text(trace, summary)
        return [f"the model's outputs are finite; {inside}"] if inside else []
    origin = _origin_text(trace, summary)
    notes = [] if origin is None else [f"{ORIGIN_MARK} {origin}"]
    spread = _spread_text(trace, summary, passed)
    return notes + ([spread] if spread else [])


def summary_line(trace: Trace) -> str | None:
    """One line for the command line's stderr: where the first NaN or Inf came from and how many calls'
    outputs held some, or that every output was finite; ``None`` for a trace made without the check."""
    summary = _summary(trace)
    if summary is None:
        return None
    checked_calls = sum(1 for c in trace.calls if c.error is None)
    finite = f"all outputs finite ({checked_calls} call{'s' if checked_calls != 1 else ''} checked)"
    if inside_only(trace):
        inside = _inside_text(trace, summary)
        return f"{finite}; {inside}" if inside else finite
    origin = _origin_text(trace, summary)
    n = len(passed_calls(trace))
    if origin is None and n:  # a hand-made or edited trace: calls hold some, the origin is not recorded
        return f"non-finite outputs in {n} call{'s' if n != 1 else ''}; where they came from is not recorded"
    if origin is None:
        return finite
    if not n:
        return origin
    if summary.get("where") == NONFINITE_INPUT:
        return f"{origin}; non-finite outputs in {n} call{'s' if n != 1 else ''}"
    early = _before_origin(trace, summary)
    before = sum(1 for i in passed_calls(trace) if trace.calls[i].label in early)
    parts = [f"{k} call{'s' if k != 1 else ''} {when} it" for k, when in ((n - before, "after"), (before, "before"))
             if k]
    return f"{origin}; non-finite outputs in {' and '.join(parts)}"


def is_own_code(trace: Trace) -> bool:
    """Whether the origin is a call's own code rather than a layer (its children's outputs were finite)."""
    summary = _summary(trace)
    return summary is not None and summary.get("where") == NONFINITE_OWN_CODE
