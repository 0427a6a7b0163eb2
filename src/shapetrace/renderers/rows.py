"""The row model of the shape tables: which rows a view shows, folding by depth, and the totals.

``table_rows(trace, depth, view)`` gives one ``Row`` per module call (``view="calls"``) or per module
(``view="modules"``), with the source values of its cells; the emitters in ``renderers.table`` format them
as text, Markdown, HTML or CSV. ``totals(trace)`` adds up what the table's footer reports. Nothing here
writes English or picks a width: this is the data a table shows, computed once for every format.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..tracer.metrics import CallMemory, CallTiming
from ..tracer.records import Call, Opaque, Trace, Uncalled, Value, iter_tensors, raised_another
from .finite import ORIGIN_MARK, row_marks
from .units import call_error_text, failing_calls, home_device, value_text

__all__ = [
    "DISPLAY_MAX_ROWS",
    "NO_OUTPUT",
    "Elision",
    "Row",
    "Totals",
    "above_own_p90",
    "elide",
    "forward_ms",
    "merged_inputs",
    "table_rows",
    "totals",
    "uncalled_split",
]

# The outputs of a call that raised, in the modules view.
NO_OUTPUT = Opaque("—", "")


@dataclass
class Row:
    """One table row, its cells as the source values (formatted per output format)."""

    depth: int
    name: str          # the qualified name (or ``(root)``), ``#k`` for repeat calls
    short: str         # the name relative to its parent's, for the indented text tree
    cls: str
    call: str          # "" for a module called once, "k/N" otherwise ("×N" in the modules view)
    inputs: Any        # a value tree; in the modules view a list of (value, count)
    outputs: Any
    params: int | None
    trainable: int | None
    repeat: bool = False     # a second or later call of its module: parameters counted at the first
    failed: bool = False     # the call the forward failed in (or, folded by ``depth``, the row it is folded into)
    raised: bool = False     # an exception passed through this call (an enclosing call of the failure)
    caught: bool = False     # it raised, and the forward caught the exception and went on (``units.caught_calls``)
    reraised: bool = False   # it raised another exception than the one that left its child (``raise X from e``)
    error: str | None = None
    side: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    folded: int = 0          # calls below this row hidden by ``depth``
    aliases: list[str] = field(default_factory=list)
    summary: bool = False    # inputs/outputs are lists of (value, count) (modules view)
    call_index: int = 0
    calls: int = 1
    timing: CallTiming | None = None
    flops: int | None = None
    memory: CallMemory | None = None
    first_call: int = 0      # id of the module's first call (the one its parameters are counted at)
    shape_changed: bool = False  # the (first) output's shape differs from the (first) input's
    nonfinite: str = ""      # check_finite: ``finite.ORIGIN_MARK`` or ``finite.PASSED_MARK`` (a NaN/Inf output)
    callers: list[str] = field(default_factory=list)  # modules view: the modules calling it, when several
    listed_under: str = ""   # modules view, with ``callers``: the row it is listed under (the callers' common caller)


def short_name(call: Call, parent: Call | None) -> str:
    """The module name relative to its parent's (``layer1.0.conv1`` under ``layer1.0`` -> ``conv1``)."""
    name = call.module or "(root)"
    if parent is not None and parent.module and name.startswith(parent.module + "."):
        name = name[len(parent.module) + 1:]
    return name if call.call_index == 0 else f"{name}#{call.call_index}"


def descendants(trace: Trace) -> dict[int, int]:
    """How many calls each call encloses, at any depth."""
    count = {c.id: 0 for c in trace.calls}
    for c in reversed(trace.calls):
        if c.parent is not None:
            count[c.parent] += count[c.id] + 1
    return count


def failed_row_call(trace: Trace, depth: int | None) -> int | None:
    """The id of the call whose row shows the failure: the call the forward failed in, or, when ``depth`` folds
    that call away, its ancestor at ``depth`` (the row it is folded into); ``None`` for no failing call."""
    failed_id = trace.failure.call if trace.failure else None
    if failed_id is None or depth is None or not 0 <= failed_id < len(trace.calls):
        return failed_id
    c = trace.calls[failed_id]
    while c.depth > depth and c.parent is not None:
        c = trace.calls[c.parent]
    return c.id


def reraising_calls(trace: Trace) -> set[int]:
    """The calls on the failure's way up that raised another exception than the one that left the call inside
    them (a forward that caught the failure and raised a ``ValueError`` from it)."""
    call = trace.failed_call
    out: set[int] = set()
    while call is not None and call.parent is not None:
        parent = trace.calls[call.parent]
        if raised_another(parent.error, call.error):
            out.add(parent.id)
        call = parent
    return out


def _first_shape(value: Value) -> tuple[int, ...] | None:
    return next((m.shape for _, m in iter_tensors(value)), None)


def _shape_changed(c: Call) -> bool:
    before, after = _first_shape(c.inputs), _first_shape(c.outputs)
    return before is not None and after is not None and before != after and c.error is None


def _call_rows(trace: Trace, depth: int | None) -> list[Row]:
    ncalls: dict[frozenset[str], int] = {}
    first: dict[frozenset[str], int] = {}
    for c in trace.calls:
        key = _module_key(c)
        ncalls[key] = max(ncalls.get(key, 0), c.call_index + 1)
        first.setdefault(key, c.id)
    desc = descendants(trace)
    failed_id = failed_row_call(trace, depth)
    reraised = reraising_calls(trace)
    marks = row_marks(trace, depth)
    failing = failing_calls(trace)
    rows = []
    for c in trace.calls:
        if depth is not None and c.depth > depth:
            continue
        parent = trace.calls[c.parent] if c.parent is not None else None
        n = ncalls[_module_key(c)]
        rows.append(Row(
            depth=c.depth, name=c.label, short=short_name(c, parent), cls=c.cls,
            call=f"{c.call_index + 1}/{n}" if n > 1 else "", inputs=c.inputs, outputs=c.outputs,
            params=c.params, trainable=c.trainable_params, repeat=c.call_index > 0,
            failed=c.id == failed_id, raised=c.error is not None and c.id != failed_id and c.id in failing,
            caught=c.error is not None and c.id not in failing, error=call_error_text(trace, c),
            reraised=c.id in reraised,
            side=list(c.side_inputs), kwargs=dict(c.kwargs),
            folded=desc[c.id] if depth is not None and c.depth == depth else 0, aliases=list(c.aliases),
            call_index=c.call_index, calls=n, timing=c.timing, flops=c.flops, memory=c.memory,
            first_call=first[_module_key(c)], shape_changed=_shape_changed(c), nonfinite=marks.get(c.id, "")))
    return rows


def _summarise(values: Iterable[Value], home: str | None) -> list[tuple[Value, int]]:
    """Distinct values (by their full text, devices off ``home`` included: ``units.tensor_text``) with how often
    each occurs, in first-seen order."""
    counts: dict[str, list] = {}
    for v in values:
        key = value_text(v, home)
        if key in counts:
            counts[key][1] += 1
        else:
            counts[key] = [v, 1]
    return [(v, k) for v, k in counts.values()]


def _sum_field(calls: Sequence[Call], attr: str, key: str | None) -> Any:
    vals = []
    for c in calls:
        v = getattr(c, attr)
        if v is None:
            continue
        vals.append(v.get(key) if key else v)
    vals = [v for v in vals if isinstance(v, (int, float))]
    return sum(vals) if vals else None


def merged_inputs(c: Call) -> Value:
    """A call's positional and keyword inputs as one list (kwargs as a trailing dict)."""
    return list(c.inputs) + ([dict(c.kwargs)] if c.kwargs else []) if isinstance(c.inputs, list) else c.inputs


def _module_key(call: Call) -> frozenset[str]:
    """Which module object made ``call``: all its registered names (a module shared as ``enc.0`` and
    ``dec.0`` is one module, whichever name the call was made under)."""
    return frozenset([call.module, *call.aliases])


def _outermost(trace: Trace, calls: Sequence[Call]) -> list[Call]:
    """The calls not nested inside another of ``calls`` (a module that calls itself, a recursive tree): the
    ones whose inclusive metrics add up without counting a nested call twice."""
    ids = {c.id for c in calls}
    outer = []
    for c in calls:
        parent = c.parent
        while parent is not None and parent not in ids:
            parent = trace.calls[parent].parent
        if parent is None:
            outer.append(c)
    return outer


def _module_parents(trace: Trace,
                    groups: dict[frozenset[str], list[Call]]) -> dict[frozenset[str], frozenset[str] | None]:
    """Each module's parent in the modules view: the nearest module that encloses every one of its calls (its
    only caller, or the common caller of the several modules that call it), ``None`` for a module with a call at
    the top. A module's calls nested in its own (recursion) do not count it as their encloser. This is a tree: every
    call of a module lies inside a call of its parent, so a cycle of parents would need an endless chain of ever
    larger calls."""
    parents: dict[frozenset[str], frozenset[str] | None] = {}
    for key, calls in groups.items():
        enclosers: list[frozenset[str]] | None = None  # the first call's, nearest first
        for c in calls:
            chain = []
            p = c.parent
            while p is not None:
                k = _module_key(trace.calls[p])
                if k != key:
                    chain.append(k)
                p = trace.calls[p].parent
            if enclosers is None:
                enclosers = chain
            else:
                kept = set(chain)
                enclosers = [k for k in enclosers if k in kept]
            if not enclosers:
                break
        parents[key] = enclosers[0] if enclosers else None
    return parents


def _depth_first(parents: dict[frozenset[str], frozenset[str] | None]) -> list[tuple[frozenset[str], int]]:
    """The modules in table order with their depths: each module's children (in first-call order: ``parents``
    is keyed in it) right after it, depth first."""
    children: dict[frozenset[str] | None, list[frozenset[str]]] = {}
    for key, parent in parents.items():
        children.setdefault(parent, []).append(key)
    out: list[tuple[frozenset[str], int]] = []
    stack = [(key, 0) for key in reversed(children.get(None, []))]
    while stack:
        key, d = stack.pop()
        out.append((key, d))
        stack.extend((child, d + 1) for child in reversed(children.get(key, [])))
    return out


def _module_metrics(calls: Sequence[Call], outer: Sequence[Call]) -> tuple[CallTiming | None, CallMemory | None]:
    """A module's timing and memory over its ``calls`` (inclusive ones over its ``outer`` calls only)."""
    timing = None
    total = _sum_field(outer, "timing", "total_ms")
    if len(calls) == 1:  # its call's timing, quantiles and all: a stall mark shows as in the calls view
        timing = calls[0].timing
    elif total is not None:
        timing = CallTiming(total_ms=total, self_ms=_sum_field(calls, "timing", "self_ms"),
                            cpu_ms=_sum_field(outer, "timing", "cpu_ms"))
    memory = None
    act = _sum_field(calls, "memory", "activation_bytes")
    if act is not None:
        peaks = [c.memory.peak_bytes for c in calls if c.memory and c.memory.peak_bytes is not None]
        # peaks do not add up: the highest of the calls
        memory = CallMemory(activation_bytes=act, peak_bytes=max(peaks) if peaks else None)
    return timing, memory


def _module_rows(trace: Trace, depth: int | None) -> list[Row]:
    groups: dict[frozenset[str], list[Call]] = {}
    for c in trace.calls:
        groups.setdefault(_module_key(c), []).append(c)
    parents = _module_parents(trace, groups)
    order = _depth_first(parents)
    tree_depth = dict(order)
    failing = failing_calls(trace)
    home = home_device(trace)

    def shown(key: frozenset[str] | None) -> frozenset[str] | None:
        """The module whose row shows ``key``'s: itself, or its ancestor at ``depth`` when folded away."""
        while key is not None and depth is not None and tree_depth[key] > depth:
            key = parents[key]
        return key

    failed_id = trace.failure.call if trace.failure else None
    failed_key = (shown(_module_key(trace.calls[failed_id]))
                  if failed_id is not None and 0 <= failed_id < len(trace.calls) else None)
    marks: dict[frozenset[str], str] = {}
    for cid, mark in row_marks(trace).items():
        key = shown(_module_key(trace.calls[cid]))
        if key is not None and marks.get(key) != ORIGIN_MARK:
            marks[key] = mark
    folded: dict[frozenset[str], int] = {}
    if depth is not None:
        for key, d in tree_depth.items():
            if d > depth:
                at = shown(key)
                if at is not None:
                    folded[at] = folded.get(at, 0) + len(groups[key])
    rows = []
    for key, d in order:
        if depth is not None and d > depth:
            continue
        calls = groups[key]
        first = calls[0]
        parent = parents[key]
        outer = _outermost(trace, calls)  # inclusive metrics: nested calls are already in their caller's
        timing, memory = _module_metrics(calls, outer)
        failed = key == failed_key
        err = next((c.error for c in calls if c.error), None)
        caught = all(c.id not in failing for c in calls if c.error)  # every exception of its calls was caught
        name = first.module or "(root)"
        parent_name = groups[parent][0].module if parent is not None else ""
        short = name[len(parent_name) + 1:] if parent_name and name.startswith(parent_name + ".") else name
        row = Row(
            depth=d, name=name, short=short, cls=first.cls,
            call=f"×{len(calls)}",
            inputs=_summarise((merged_inputs(c) for c in calls), home),
            outputs=_summarise((c.outputs if c.error is None else NO_OUTPUT for c in calls), home),
            params=first.params, trainable=first.trainable_params, failed=failed,
            raised=err is not None and not failed and not caught, caught=err is not None and caught, error=err,
            summary=True, aliases=list(first.aliases), folded=folded.get(key, 0) if d == depth else 0,
            side=[m for c in calls for m in c.side_inputs][:1], calls=len(calls), timing=timing,
            flops=_sum_field(outer, "flops", None), memory=memory, first_call=first.id,
            shape_changed=any(_shape_changed(c) for c in calls), nonfinite=marks.get(key, ""))
        callers = _callers(trace, outer)
        if len(callers) > 1:
            row.callers = callers
            row.listed_under = groups[parent][0].module or "(root)" if parent is not None else ""
        rows.append(row)
    return rows


def _callers(trace: Trace, calls: Sequence[Call]) -> list[str]:
    """The modules that make ``calls`` (one module's outermost calls), in order of their first such call."""
    callers: dict[frozenset[str], str] = {}
    for c in calls:
        if c.parent is not None:
            callers.setdefault(_module_key(trace.calls[c.parent]), trace.calls[c.parent].module or "(root)")
    return list(callers.values())


def table_rows(trace: Trace, depth: int | None = None, view: str = "calls") -> list[Row]:
    """The rows of a shape table: one per call (``"calls"``) or per module (``"modules"``), calls deeper than
    ``depth`` folded into their ancestor at ``depth``."""
    if view not in ("calls", "modules"):
        raise ValueError(f"view must be 'calls' or 'modules', got {view!r}")
    if depth is not None and depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")
    return _call_rows(trace, depth) if view == "calls" else _module_rows(trace, depth)


# How many rows a notebook display of a trace or table shows (``trace.table(max_rows=...)`` chooses): a table of
# tens of thousands of calls (a decoder's generation loop, a deep RNN) would otherwise put megabytes of HTML and
# text into the notebook, and stall the browser that shows it.
DISPLAY_MAX_ROWS = 1000


@dataclass(frozen=True)
class Elision:
    """The rows a display shows of a table's ``total`` rows (``elide``): ``rows`` in order, and ``gaps``, where
    rows were left out: the index (among ``rows``) of the row each gap follows (-1: before the first) -> how many
    rows it stands for."""

    rows: list[Row]
    gaps: dict[int, int]

    @property
    def left_out(self) -> int:
        return sum(self.gaps.values())

    @property
    def total(self) -> int:
        return len(self.rows) + self.left_out


def elide(rows: list[Row], max_rows: int | None) -> Elision:
    """``rows`` as a display shows them: all of them when there are at most ``max_rows`` (or it is ``None``);
    else the first rows and the last quarter of ``max_rows``, and every failing row wherever it is (and the row
    where ``check_finite`` found the first NaN or Inf), with a gap
    in place of each run of rows left out."""
    if max_rows is None or len(rows) <= max_rows:
        return Elision(list(rows), {})
    tail = max_rows // 4
    head = max_rows - tail
    kept = set(range(head)) | set(range(len(rows) - tail, len(rows))) | {
        i for i, r in enumerate(rows) if r.failed or r.nonfinite == ORIGIN_MARK}
    shown: list[Row] = []
    gaps: dict[int, int] = {}
    for i, r in enumerate(rows):
        if i in kept:
            shown.append(r)
        else:
            gaps[len(shown) - 1] = gaps.get(len(shown) - 1, 0) + 1
    return Elision(shown, gaps)


# A call's time is set by a stall (``above_own_p90``) when it lies above its own p90 and is at least STALL_RATIO
# times its median and STALL_FLOOR_MS above it: a jitter of a few microseconds on a tiny layer is not one.
STALL_RATIO = 1.5
STALL_FLOOR_MS = 0.05


def above_own_p90(timing: Any) -> bool:
    """Whether a call's ``total_ms`` (an interquartile mean over the repeats kept) lies above its own ``p90_ms``
    (over all repeats), well above its ``median_ms`` (``STALL_RATIO``, ``STALL_FLOOR_MS``): a stall hit it in a
    kept repeat, so its ``ms`` says more about the stall than the layer, whose usual time the median is nearer.
    ``False`` where the timing lacks any of the three."""
    t = timing or {}
    total, p90, median = t.get("total_ms"), t.get("p90_ms"), t.get("median_ms")
    if not all(isinstance(v, (int, float)) for v in (total, p90, median)):
        return False
    return bool(total > p90 and total >= STALL_RATIO * median and total - median >= STALL_FLOOR_MS)


def forward_ms(trace: Trace) -> float | None:
    """The whole forward's time: the top-level calls' totals added (``None`` when not profiled)."""
    roots = [c.timing.total_ms for c in trace.calls if c.parent is None and c.timing]
    roots = [r for r in roots if isinstance(r, (int, float))]
    return float(sum(roots)) if roots else None


# ---- totals ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Totals:
    """What a trace adds up to (sizes in bytes).

    ``params``/``trainable``/``shared`` count parameter elements, each parameter object once.
    ``param_bytes`` is their storage, by dtype in ``param_bytes_by_dtype`` (empty for traces that did not
    record it). ``input_bytes`` counts the forward's input tensors; ``activation_bytes`` the output tensors
    of every call that returned, each distinct tensor once (a container's output is its last child's; a tensor
    changed in place counts again, as a new value; a tensor passed through unchanged, ``Trace.same_tensors``,
    counts once, and an input passed through unchanged is counted as an input). ``calls`` is how many calls started,
    ``completed`` how many returned.
    """

    params: int
    trainable: int
    shared: int
    param_bytes: int
    param_bytes_by_dtype: dict[str, int]
    buffer_bytes: int
    activation_bytes: int
    activation_tensors: int
    input_bytes: int
    input_tensors: int
    calls: int
    completed: int

    @property
    def non_trainable(self) -> int:
        return self.params - self.trainable

    @property
    def total_bytes(self) -> int:
        return self.param_bytes + self.buffer_bytes + self.activation_bytes + self.input_bytes


def _distinct(values: Iterable[Value], skip: set[int], same: dict[int, int]) -> tuple[int, int, set[int]]:
    """Bytes and count of the distinct tensors in ``values`` (by ``tid``, a tensor passed through unchanged
    under its first ``tid`` as ``same`` maps it; untracked ones each count), leaving out tids in ``skip``;
    also the tids seen."""
    seen: set[int] = set()
    nbytes = count = 0
    for value in values:
        for _, m in iter_tensors(value):
            if m.tid is not None:
                tid = same.get(m.tid, m.tid)
                if tid in seen or tid in skip:
                    continue
                seen.add(tid)
            nbytes += m.nbytes
            count += 1
    return nbytes, count, seen


def totals(trace: Trace) -> Totals:
    """Parameter, input and activation totals; see ``Totals`` for what each one counts."""
    same = dict(trace.same_tensors)
    input_bytes, input_count, input_tids = _distinct([trace.inputs, trace.kwargs], set(), same)
    done = [c for c in trace.calls if c.error is None]
    act, act_count, _ = _distinct((c.outputs for c in done), input_tids, same)
    m = trace.model
    return Totals(params=m.params, trainable=m.trainable_params, shared=m.shared_params,
                  param_bytes=m.param_bytes, param_bytes_by_dtype=dict(m.param_dtypes),
                  buffer_bytes=m.buffer_bytes, activation_bytes=act, activation_tensors=act_count,
                  input_bytes=input_bytes, input_tensors=input_count, calls=len(trace.calls), completed=len(done))


def uncalled_split(trace: Trace) -> tuple[list[Uncalled], list[Uncalled]]:
    """The modules the forward did not call, in two lists: those it would never have called, and those it
    did not reach because it failed first.

    A module is *never called* when its nearest called ancestor (by qualified name: ``attn`` for
    ``attn.out_proj``) returned at least once: that forward ran through without it (a fused fast path, an
    unused layer), whatever failed later. The others sit under a call the failure cut short (the root's at
    least), so they may have been next. A forward that did not fail leaves every module in the first list."""
    if not trace.failed:
        return list(trace.uncalled), []
    returned: set[str] = set()
    called: set[str] = set()
    for c in trace.calls:
        names = (c.module, *c.aliases)
        called.update(names)
        if c.error is None:
            returned.update(names)
    never, unreached = [], []
    for u in trace.uncalled:
        parts = u.module.split(".") if u.module else []
        ancestor = next((".".join(parts[:i]) for i in range(len(parts) - 1, -1, -1)
                         if ".".join(parts[:i]) in called), None)
        (never if ancestor is not None and ancestor in returned else unreached).append(u)
    return never, unreached
