"""A forward's source, line by line, with what each line produced: ``shapetrace lines`` and ``trace.lines()``.

Works from a trace recorded with ``lines=True`` alone (``Call.line``, ``Call.code``, ``Op.line``,
``Trace.sources``). ``build_view(trace, module)`` gathers, for the forward of ``module`` (the root by
default), every child call and functional op with the line that made it, attributes each to the statement
holding that line (a multi-line call or a comprehension belongs to its statement), folds repeated runs of a
line (a loop) into ``×N`` with the shapes of the runs, and marks lines never reached and the line the error
left by. ``render(view, fmt)`` writes it as text, Markdown, HTML (highlighted with pygments, the shapes in a
right-hand column) or JSON.
"""

from __future__ import annotations

import ast
import difflib
import json
import keyword
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..tracer.records import Call, Op, Struct, TensorMeta, Trace, iter_tensors
from .display import MIN_TABLE_WIDTH, save_file
from .finite import ORIGIN_MARK, origin_events
from .html import FAIL_COLOR
from .lines_rows import Row, text_rows
from .rows import uncalled_split
from .units import (
    caught_calls,
    caught_notes,
    display_width,
    error_cell,
    escape_controls,
    failure_place,
    home_device,
    literal,
    markup,
    raised_instead_text,
)

__all__ = ["FORMATS", "LinesError", "LinesView", "build_view", "lines_page", "render"]

FORMATS = ("text", "md", "html", "json")
_MAX_RUNS_SHOWN = 6  # a group with more distinct runs shows the first and last few
CAUGHT = "(caught)"  # a call's run that raised what the forward caught, as the tables write it (no failure mark)


class LinesError(ValueError):
    """The trace cannot show lines for this module (no line information, unknown module); says what to do."""


class NotReached(LinesError):
    """The module has no lines to show because the forward failed before it was called (it was next)."""


# ---- the view: plain data built from the trace --------------------------------------------------------------
@dataclass
class Group:
    """Runs of one kind of event on one line: the same op, or calls of the same (or same-patterned) module."""

    kind: str  # "call" or "op"
    name: str  # relative module name(s) ("embeds.0–4") or op name
    cls: str  # module class ("" for ops)
    outputs: list[str] = field(default_factory=list)  # one formatted output per run
    dtype: str | None = None  # the runs' one dtype, set when it differs from their input's (else per run in outputs)
    members: list[str] = field(default_factory=list)  # the modules called, in order (calls only)
    failed: bool = False  # a run raised the exception that left the forward (or its module's forward)
    caught: bool = False  # a run raised an exception the forward caught and went on from (``units.caught_calls``)

    @property
    def count(self) -> int:
        return len(self.outputs)

    def text(self) -> str:
        """One line: the names with control characters escaped (``units.literal``), so no name breaks a row."""
        name = literal(self.name)
        head = f"{name} {literal(self.cls)}" if self.kind == "call" else name
        runs = _runs_text(self.outputs)
        dtype = f" {literal(self.dtype)}" if self.dtype else ""
        if self.count == 1:
            if self.failed:
                return f"{head} ✗ raised"
            return f"{head} {CAUGHT}" if self.caught else f"{head} → {runs}{dtype}"
        return f"{head} ×{self.count}: {runs}{dtype}"  # a failed run shows as ✗ among the runs, a caught one (caught)


@dataclass
class Line:
    number: int
    text: str
    state: str = "plain"  # "ran" (made something), "plain", "unreached", "raised"
    groups: list[Group] = field(default_factory=list)
    continues: bool = False  # a later line of a statement whose events show on its first line
    error: str | None = None
    outside: bool = False  # a line number the trace recorded outside the source as saved (edited since?)
    nonfinite: bool = False  # ``check_finite``: the first NaN or Inf was made by what ran on this line


@dataclass
class SourceView:
    key: str
    qualname: str
    file: str | None
    first_line: int | None
    lines: list[Line]
    missing: str | None = None  # why there is no source (then ``calls_only`` lists the events)
    calls_only: list[Group] = field(default_factory=list)
    reach_known: bool = False
    outside: list[int] = field(default_factory=list)  # recorded line numbers the saved source does not have


@dataclass
class View:
    module: str
    cls: str
    calls: int
    sources: list[SourceView]
    failure: str | None = None
    note: str | None = None
    caught: list[str] = field(default_factory=list)  # the exceptions raised and caught there (``units.caught_notes``)


def _shape(meta: TensorMeta) -> str:
    return "(" + ",".join(str(s) for s in meta.shape) + ("," if len(meta.shape) == 1 else "") + ")"


_MAX_TENSORS_SHOWN = 6  # a value holding more tensors shows the first ones and "…"


def _value_text(value: Any) -> tuple[str, str | None]:
    """The output shapes of one run and their dtype: one tensor is its shape (``(8,43)``); a value holding
    several keeps its nesting in brackets, as the shape table writes it (an LSTM's ``[(2,72,1152),
    [(1,2,1152), (1,2,1152)]]``), so a repeat count after it (``×2``) is about the whole value. When the
    tensors' dtypes differ, each is named beside its shape (``[(4,200,400) float32, (4,200) bool]``) and no
    dtype is returned."""
    tensors = [m for _, m in iter_tensors(value)]
    if not tensors:
        return "—", None
    mixed = len({m.dtype for m in tensors}) > 1
    dtype = None if mixed else tensors[0].dtype
    if len(tensors) == 1:
        return _shape(tensors[0]) + (f" {literal(tensors[0].dtype)}" if mixed else ""), dtype
    budget = [_MAX_TENSORS_SHOWN]
    return _nested_text(value, mixed, budget) or "—", dtype


def _nested_text(value: Any, mixed: bool, budget: list[int]) -> str | None:
    """``value``'s tensors in brackets that follow its nesting (containers without tensors left out); after
    ``budget[0]`` tensors the rest is one ``…``. ``None`` for a part with no tensor."""
    if isinstance(value, TensorMeta):
        budget[0] -= 1
        if budget[0] < 0:
            return "…" if budget[0] == -1 else ""
        return _shape(value) + (f" {literal(value.dtype)}" if mixed else "")
    if isinstance(value, Struct):
        items = list(value.fields.values())
    elif isinstance(value, dict):
        items = list(value.values())
    elif isinstance(value, list):
        items = value
    else:
        return None
    parts = [t for t in (_nested_text(v, mixed, budget) for v in items) if t]
    return "[" + ", ".join(parts) + "]" if parts else None


def _first_dtype(value: Any) -> str | None:
    for _, m in iter_tensors(value):
        return m.dtype
    return None


def _moved_text(outputs: Any, inputs: Any) -> str:
    """`` on DEVICE`` where a run's first output tensor is on a device none of its input tensors is on (the line
    that moves the data: ``x.to("meta")``, ``h.cpu()``; not ``scale * h``, a CPU scalar times ``h`` elsewhere),
    else nothing."""
    out = next((m.device for _, m in iter_tensors(outputs)), None)
    given = {m.device for _, m in iter_tensors(inputs)}
    return f" on {literal(out)}" if out is not None and given and out not in given else ""


def _runs_text(outputs: list[str]) -> str:
    """Consecutive equal outputs run-length folded: ``(8,6), (4,72,400) ×2``; long lists elided."""
    runs: list[list] = []
    for o in outputs:
        if runs and runs[-1][0] == o:
            runs[-1][1] += 1
        else:
            runs.append([o, 1])
    if len(runs) == 1:
        return runs[0][0]
    parts = [o if n == 1 else f"{o} ×{n}" for o, n in runs]
    if len(parts) > _MAX_RUNS_SHOWN:
        parts = [*parts[:3], f"… {len(parts) - 5} more …", *parts[-2:]]
    return ", ".join(parts)


def _relative(name: str, parent: str) -> str:
    if parent and name.startswith(parent + "."):
        return name[len(parent) + 1:]
    return name


def _pattern(rel: str) -> str:
    """``embeds.3`` -> ``embeds.#``: calls of the items of one ModuleList/Sequential fold together."""
    return re.sub(r"(?<=\.)\d+(?=\.|$)", "#", rel)


def _members_name(members: list[str]) -> str:
    """``embeds.0``..``embeds.4`` -> ``embeds.0–4``; one module -> its name."""
    unique = list(dict.fromkeys(members))
    if len(unique) == 1:
        return unique[0]
    heads = {m.rpartition(".")[0] for m in unique}
    tails = [m.rpartition(".")[2] for m in unique]
    if len(heads) == 1 and all(t.isdigit() for t in tails):
        head = next(iter(heads))
        nums = [int(t) for t in tails]
        span = (f"{nums[0]}–{nums[-1]}" if nums == list(range(nums[0], nums[-1] + 1))
                else "{" + ",".join(tails) + "}")
        return f"{head}.{span}" if head else span
    return ", ".join(unique[:3]) + (", …" if len(unique) > 3 else "")


def _event_key(ev: Call | Op, parent_name: str) -> tuple[str, str, str]:
    """What folds events together: the same op, or calls of one module class whose names differ only in list
    positions (``embeds.0`` and ``embeds.3``)."""
    if isinstance(ev, Call):
        return "call", _pattern(_relative(ev.module, parent_name) or "(self)"), ev.cls
    return "op", ev.name, ""


_MAX_PERIOD = 64  # the longest loop body (in runs of one kind of event) looked for on one line


def _cycle_at(keys: list[tuple], i: int) -> tuple[int, int]:
    """The loop body starting at ``keys[i]``: ``(period, repeats)`` of the block of distinct keys that repeats
    back to back from there and covers the most keys (the shortest such block on a tie); ``(1, 1)`` when no
    block repeats."""
    best = (1, 1)
    for p in range(2, min(_MAX_PERIOD, (len(keys) - i) // 2) + 1):
        block = keys[i:i + p]
        if len(set(block)) < p:
            continue
        reps = 1
        while keys[i + reps * p:i + (reps + 1) * p] == block:
            reps += 1
        if reps > 1 and p * reps > best[0] * best[1]:
            best = (p, reps)
    return best


def _group_events(events: list[Call | Op], parent_name: str, moves: bool,
                  caught: frozenset[int] = frozenset()) -> list[Group]:
    """Fold one line's events into groups in the order they ran: a run of events of one kind back to back
    (``layers.4–7 UnetBlock ×4``), or a loop body repeated back to back (``x_cat[:, i]`` then ``embeds.i``, five
    times: ``getitem ×5`` and ``embeds.0–4 ×5``), is one group per kind. Events of a kind that comes back after
    others ran in between, outside such a loop, get a group of their own each time, so no group lists a
    call ahead of calls that ran before it. ``moves``: mark the runs that move data to another device
    (``_moved_text``; not in a shape-only trace, where devices are how it works, ``units.home_device``).
    ``caught``: the ids of the calls whose exception the forward caught (``units.caught_calls``)."""
    runs: list[list[Call | Op]] = []  # events of one kind back to back
    keys: list[tuple] = []
    for ev in events:
        key = _event_key(ev, parent_name)
        if keys and keys[-1] == key:
            runs[-1].append(ev)
        else:
            runs.append([ev])
            keys.append(key)
    groups: list[Group] = []
    i = 0
    while i < len(runs):
        period, reps = _cycle_at(keys, i)
        for j in range(period):
            groups.append(_group_of([ev for r in range(reps) for ev in runs[i + r * period + j]], parent_name,
                                    moves, caught))
        i += period * reps
    return groups


def _group_of(events: list[Call | Op], parent_name: str, moves: bool, caught: frozenset[int] = frozenset()) -> Group:
    """One group from events of one kind, in order."""
    first = events[0]
    if isinstance(first, Call):
        g = Group("call", "", first.cls)
    else:
        g = Group("op", first.name, "")
    runs: list[tuple[str | None, bool]] = []  # each run's dtype and whether it changed from its input's
    moved: list[str] = []  # each run's " on DEVICE" where it moved the data (``_moved_text``)
    for ev in events:
        if isinstance(ev, Call):
            g.members.append(_relative(ev.module, parent_name) or "(self)")
            was_caught = ev.error is not None and ev.id in caught
            out, dtype = _value_text(ev.outputs) if ev.error is None else (CAUGHT if was_caught else "✗", None)
            inputs = [ev.inputs, ev.kwargs]
            g.failed = g.failed or (ev.error is not None and not was_caught)
            g.caught = g.caught or was_caught
        else:
            out, dtype = _value_text(ev.outputs)
            inputs = ev.inputs
        moved.append(_moved_text(ev.outputs, inputs) if moves and (not isinstance(ev, Call) or ev.error is None)
                     else "")
        g.outputs.append(out)
        runs.append((dtype, dtype is not None and dtype != _first_dtype(inputs)))
    if g.kind == "call":
        g.name = _members_name(g.members)
    _label_dtypes(g, runs, each=any(moved))
    g.outputs = [o + m for o, m in zip(g.outputs, moved)]  # the device after the dtype, as tables write them
    return g


def _label_dtypes(group: Group, runs: list[tuple[str | None, bool]], each: bool = False) -> None:
    """Show the dtype where it changes: once for the group when its runs share a dtype that differs from their
    input's (an Embedding's float32), beside each run's shape when the runs' dtypes differ (``x.to(dt)`` in a
    loop: ``(2,4) float16, (2,4) bfloat16``), so runs differing only in dtype are not folded together. ``each``
    (a run names its device after it): beside each run whose dtype changed, never once for the group."""
    if len({d for d, _ in runs if d is not None}) > 1:
        group.outputs = [o if d is None else f"{o} {literal(d)}" for o, (d, _) in zip(group.outputs, runs)]
        return
    if each:
        group.outputs = [f"{o} {literal(d)}" if change and d else o for o, (d, change) in zip(group.outputs, runs)]
        return
    changed = [d for d, change in runs if change]
    if changed:
        group.dtype = changed[0]


def _dedent(text: list[str]) -> list[str]:
    """The source lines without the indentation of its first line (the ``def`` or its decorator).

    Not ``textwrap.dedent``: a multi-line string in the body may have lines indented less than the ``def``
    (or not at all); they are part of the string, and keep what they have."""
    first = text[0] if text else ""
    indent = len(first) - len(first.lstrip())
    return [t[indent:] if len(t) - len(t.lstrip()) >= indent else t for t in text]


def _statement_spans(text: list[str], first_line: int) -> tuple[dict[int, tuple[int, int]], set[tuple[int, int]]]:
    """For each source line, the span (first, last line) of the statement (or compound header, or ``case``
    clause) it belongs to, and the spans that never show as unreached: the function's own header, docstrings
    and the statements that compile to nothing (``global``, ``nonlocal``, ``y: T``), which run no line."""
    try:
        tree = ast.parse("\n".join(_dedent(text)))
    except SyntaxError:
        return {}, set()
    offset = first_line - 1
    span_of: dict[int, tuple[int, int]] = {}
    spans: list[tuple[int, int]] = []
    neutral: set[tuple[int, int]] = set()
    top = tree.body[0] if tree.body else None
    for node in ast.walk(tree):
        if not isinstance(node, ast.stmt):
            continue
        start = node.lineno + offset
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.stmt):
            decorators = getattr(node, "decorator_list", [])
            start = min([start, *(d.lineno + offset for d in decorators)])
            end = max(start, body[0].lineno + offset - 1)
            if body[0].lineno == node.lineno:  # `if x: y` on one line
                end = start
        else:
            end = (node.end_lineno or node.lineno) + offset
        if isinstance(node, ast.Match) and node.cases:  # the header; each `case` (pattern and guard) its own
            end = max(start, node.cases[0].pattern.lineno + offset - 1)
            spans += _case_spans(node, offset)
        spans.append((start, end))
        if node is top or _compiles_to_nothing(node):
            neutral.add((start, end))
    # Smallest span wins, so a line maps to its innermost statement.
    for start, end in sorted(spans, key=lambda s: s[1] - s[0], reverse=True):
        for n in range(start, end + 1):
            span_of[n] = (start, end)
    return span_of, neutral


def _spans_without_code(span_of: dict[int, tuple[int, int]], code_lines: Any) -> set[tuple[int, int]]:
    """The statements none of whose lines has an instruction (an ``assert`` or ``if __debug__:`` compiled with
    ``-O``): they cannot run. ``code_lines`` is the source's recorded lines with instructions (older traces
    have none: then no statement is known to be without code)."""
    if not isinstance(code_lines, list):
        return set()
    has_code = set(code_lines)
    return {span for span in span_of.values() if not has_code.intersection(range(span[0], span[1] + 1))}


def _case_spans(match: ast.stmt, offset: int) -> list[tuple[int, int]]:
    """The lines of each ``case`` clause of a ``match`` up to its body: calls in its guard show there."""
    spans = []
    for case in getattr(match, "cases", []):
        start = case.pattern.lineno + offset
        body = case.body[0].lineno + offset
        spans.append((start, start if body == start else max(start, body - 1)))
    return spans


def _compiles_to_nothing(node: ast.stmt) -> bool:
    """A docstring or other bare constant, ``global``, ``nonlocal``, or an annotation of a local name with no
    value (``y: torch.Tensor``): no instruction, so no line runs, and the line is never called unreached."""
    if isinstance(node, ast.Expr):
        return isinstance(node.value, ast.Constant)
    if isinstance(node, ast.AnnAssign):
        return node.value is None and isinstance(node.target, ast.Name)
    return isinstance(node, (ast.Global, ast.Nonlocal))


def _calls_for(trace: Trace, module: str) -> list[Call]:
    calls = [c for c in trace.calls if c.parent is None] if module == "" else trace.calls_of(module)
    if calls:
        return calls
    names = sorted({n for c in trace.calls for n in (c.module, *c.aliases) if n})
    uncalled = {u.module: u.cls for u in trace.uncalled}
    if module in {u.module for u in uncalled_split(trace)[1]}:
        error = error_cell(trace.failure.text) if trace.failure is not None else ""
        raise NotReached(f"module {module!r} ({uncalled[module]}) was not reached: the forward failed "
                         f"{failure_place(trace, with_class=True)} first ({error}), so it has no lines to show")
    if module in uncalled:
        raise LinesError(f"module {module!r} ({uncalled[module]}) was never called in this forward, so it has no "
                         "lines to show")
    close = difflib.get_close_matches(module, names, n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    sample = ", ".join(repr(n) for n in names[:8]) + (", …" if len(names) > 8 else "")
    raise LinesError(f"no module named {module!r} was called in this trace.{hint} Module names are as in "
                     f"named_modules(): {sample or '(none)'}; leave the module name out (t.lines(), or no --module) "
                     "for the model's own forward.")


def _python_path(name: str) -> str:
    """The Python expression for submodule ``name`` of ``model``: ``layer1.0.conv1`` -> ``model.layer1[0].conv1``;
    a name part that is no identifier (a ModuleDict key ``"a-b"``) -> ``model.get_submodule('...')``."""
    parts = name.split(".")
    if not all(p.isdigit() or (p.isidentifier() and not keyword.iskeyword(p)) for p in parts):
        return f"model.get_submodule({name!r})"
    return "model" + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in parts)


def _alone_advice(call: Call) -> str:
    """For a leaf written by the user, inside the model (traced by itself, its ops are recorded): how to trace
    it alone, on inputs like those it got here, and when that cannot work: its forward then gets its inputs and
    nothing else, so one that reads what its parent set on them fails (fastai's MergeLayer and ResizeToOrig
    read ``x.orig``, which SequentialEx sets on the input before calling them)."""
    name = literal(call.module)
    got = ", ".join(f"{_shape(m)} {literal(m.dtype)}" for _, m in iter_tensors(call.inputs))
    return (f"; to see the shape each of its lines makes, trace {name} by itself on inputs like those it got here "
            f"({got or 'no tensors'}): shapetrace.trace({_python_path(call.module)}, ..., lines=True). That gives "
            "its forward those inputs and nothing else, so a forward that reads what its parent sets fails by "
            "itself (fastai's MergeLayer and ResizeToOrig read x.orig, which SequentialEx sets on the input)")


def _is_leaf(trace: Trace, call: Call) -> bool:
    """Whether ``call``'s module has no submodules: no module named under it was called (by any call) or left
    uncalled (a forward that failed before its first child call called no child, yet the module has children)."""
    own = {call.module, *call.aliases}
    prefixes = tuple(f"{n}." if n else "" for n in own)
    names = [u.module for u in trace.uncalled] + [c.module for c in trace.calls if c.module not in own]
    return not any(n.startswith(prefixes) for n in names)


def build_view(trace: Trace, module: str = "") -> View:
    """Gather what ``module``'s forward did, line by line (see the module docstring)."""
    if not trace.meta.get("lines") and not trace.sources:
        raise LinesError("this trace was recorded without line information: trace it with "
                         "shapetrace.trace(model, ..., lines=True) (the CLI's 'shapetrace lines' does)")
    calls = _calls_for(trace, module)
    ids = {c.id for c in calls}
    by_source: dict[str, list[Call]] = {}
    for c in calls:
        by_source.setdefault((c.code or {}).get("source", "?"), []).append(c)
    children = [c for c in trace.calls if c.parent in ids]
    ops = [o for o in trace.ops if o.call in ids]
    failure = None
    if trace.failure is not None and (trace.failure.call in ids or any(c.error for c in calls)):
        failure = trace.failure.text + raised_instead_text(trace)
    note = None
    with_source = [c for c in calls if "text" in trace.sources.get((c.code or {}).get("source", "?"), {})]
    if not children and not ops and with_source and _is_leaf(trace, calls[0]):  # (no source: says why instead)
        note = ("a leaf module: the torch functions inside a leaf's forward are its own implementation and are not "
                "recorded, so its lines show no shapes (its call: " + _value_text(calls[0].outputs)[0] + ")")
        if calls[0].parent is not None and not (calls[0].code or {}).get("torch_layer"):
            note += _alone_advice(calls[0])
    moves = home_device(trace) is not None  # marks where data moves, but not in a shape-only trace
    caught = [c for c in caught_calls(trace) if c.parent in ids]  # raised on its lines, and caught
    caught_ids = frozenset(c.id for c in caught)
    blamed = origin_events(trace)  # once for every source: a walk of the trace's data flow
    views = []
    for key, source_calls in by_source.items():
        sids = {c.id for c in source_calls}
        events: list[Call | Op] = [c for c in children if c.parent in sids] + [o for o in ops if o.call in sids]
        events.sort(key=lambda e: e.start if isinstance(e, Call) else e.order)
        views.append(_source_view(trace, key, source_calls, events, calls[0].module, moves, caught_ids, blamed))
    return View(module, calls[0].cls, len(calls), views, failure, note, caught_notes(trace, caught))


def _placed(anchored: list[tuple[int | None, Call | Op]], by_number: dict[int, Line]
            ) -> tuple[dict[int, list[Call | Op]], dict[int, list[Call | Op]], list[Call | Op]]:
    """Events by the source line they show on; by a recorded line the saved source does not have; and those
    whose line is not known (made by code outside the forward)."""
    at: dict[int, list[Call | Op]] = {}
    outside: dict[int, list[Call | Op]] = {}
    unplaced: list[Call | Op] = []
    for n, ev in anchored:
        if n in by_number:
            at.setdefault(n, []).append(ev)
        elif n is not None:
            outside.setdefault(n, []).append(ev)
        else:
            unplaced.append(ev)
    return at, outside, unplaced


def _outside_lines(outside: dict[int, list[Call | Op]], raised: dict[int, str | None], parent_name: str,
                   moves: bool, caught: frozenset[int] = frozenset()) -> list[Line]:
    """A row for each recorded line the saved source does not have (past its end, or before its start: the file
    changed after the trace, or was edited), with what ran there and the error that left by it."""
    return [Line(n, "", "raised" if n in raised else "ran", _group_events(outside.get(n, []), parent_name, moves, caught),
                 error=raised.get(n), outside=True) for n in sorted({*outside, *raised})]


# A lone surrogate (U+D800 to U+DFFF) is not text: a hand-edited or corrupt JSON trace can hold one in its source,
# which Python can neither parse nor write as UTF-8. It shows as the replacement character U+FFFD.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _source_view(trace: Trace, key: str, calls: list[Call], events: list[Call | Op], parent_name: str,
                 moves: bool, caught: frozenset[int] = frozenset(),
                 blamed: set[tuple[str, int]] | frozenset = frozenset()) -> SourceView:
    """One source's lines with what ran on each (``moves``: mark the data moved to another device, see
    ``_group_events``; ``blamed``: ``finite.origin_events``)."""
    info = trace.sources.get(key) or {"qualname": key.rpartition(".")[2], "missing": "no source was recorded"}
    if "text" not in info:
        return SourceView(key, info.get("qualname", key), info.get("file"), None, [],
                          missing=info.get("missing", "no source was recorded"),
                          calls_only=_group_events(events, parent_name, moves, caught))
    first = int(info["first_line"])
    text = [_SURROGATE.sub("\ufffd", t) for t in info["text"]]
    span_of, neutral = _statement_spans(text, first)
    neutral |= _spans_without_code(span_of, info.get("code_lines"))
    lines = [Line(first + i, t) for i, t in enumerate(_dedent(text))]
    by_number = {ln.number: ln for ln in lines}

    def anchor(n: int | None) -> int | None:
        if n is None:
            return None
        return span_of.get(n, (n, n))[0]

    at, outside, unplaced = _placed([(anchor(ev.line), ev) for ev in events], by_number)
    for n, evs in at.items():
        by_number[n].groups = _group_events(evs, parent_name, moves, caught)
        by_number[n].state = "ran"
        by_number[n].nonfinite = any(("call" if isinstance(ev, Call) else "op", ev.id) in blamed for ev in evs)
    # Reachability: a statement ran when any of its lines ran in any call.
    ran_lines: set[int] = set()
    reach_known = any("ran" in (c.code or {}) for c in calls)
    for c in calls:
        ran_lines.update((c.code or {}).get("ran", []))
    reached_spans = {span_of[n] for n in ran_lines if n in span_of} | {span_of.get(n, (n, n)) for n in at}
    for ln in lines:
        span = span_of.get(ln.number)
        if span is None:
            continue
        if span[0] != ln.number:
            ln.continues = True
        if reach_known and span not in reached_spans and span not in neutral and ln.state == "plain":
            ln.state = "unreached"
    raised_outside: dict[int, str | None] = {}
    for c in calls:
        n = anchor((c.code or {}).get("raised"))
        if n in by_number:
            by_number[n].state = "raised"
            by_number[n].error = c.error
        elif n is not None:
            raised_outside[n] = c.error
    lines += _outside_lines(outside, raised_outside, parent_name, moves, caught)
    if unplaced:  # an event whose line is outside this forward (made by code the forward called elsewhere)
        lines.append(Line(0, "", "ran", _group_events(unplaced, parent_name, moves, caught)))
    return SourceView(key, info.get("qualname", key), info.get("file"), first, lines, reach_known=reach_known,
                      outside=sorted({*outside, *raised_outside}))


# ---- rendering ------------------------------------------------------------------------------------------------
def _title(view: View, sv: SourceView) -> str:
    who = f"module {view.module!r}" if view.module else "the model"
    calls = f"{view.calls} call{'s' if view.calls != 1 else ''}"
    file = literal(sv.file or "")
    where = f"  ({file}:{sv.first_line})" if file and sv.first_line else (f"  ({file})" if file else "")
    return f"{literal(sv.qualname)}{where}: {who} ({literal(view.cls)}), {calls}"


# ×N counts the calls (or ops) of one kind the line made: a loop, or one module called twice in a statement
_LEGEND = "· never ran   ✗ the line the error left by   ×N made N times by the line (a loop, a reused module)"
_NONFINITE_LEGEND = f"{ORIGIN_MARK} made the first NaN or Inf (--check-finite)"


def render_text(view: View, width: int | None = None) -> str:
    """The text form, its rows at most ``width`` columns wide (``None``: no limit; see ``lines_rows``)."""
    out: list[str] = []
    for sv in view.sources:
        out.append(_title(view, sv))
        if sv.missing:
            out.append(f"  no source lines: {sv.missing}. The calls and ops it made, in order:")
            out += [f"    {g.text()}" for g in sv.calls_only] or ["    (none recorded: what runs inside is compiled)"]
            out.append("")
            continue
        out += _text_rows(sv.lines, width)
        if (note := _outside_note(sv)) is not None:
            out.append(f"note: {note}")
        out.append("")
    if view.note:
        out.append(f"note: {view.note}")
    for note in view.caught:  # the message, its lines kept (literal already)
        out += [escape_controls(f"note: {part}" if i == 0 else part) for i, part in enumerate(note.splitlines())]
    if view.failure:
        out += [escape_controls(f"the forward failed: {part}" if i == 0 else part)
                for i, part in enumerate(view.failure.splitlines() or [""])]
    out += _legend(width, _marks_nonfinite(view))
    return "\n".join(out) + "\n"


def _marks_nonfinite(view: View) -> bool:
    return any(ln.nonfinite for sv in view.sources for ln in sv.lines)


def _legend(width: int | None, nonfinite: bool = False) -> list[str]:
    """The legend, its items (never split) on as many rows as ``width`` needs (``nonfinite``: with the mark of
    the line that made the first NaN or Inf)."""
    rows: list[str] = []
    for item in _LEGEND.split("   ") + ([_NONFINITE_LEGEND] if nonfinite else []):
        if rows and (width is None or display_width(f"{rows[-1]}   {item}") <= width):
            rows[-1] += f"   {item}"
        else:
            rows.append(item)
    return rows


_OUTSIDE = "(made outside these lines)"
_NOT_IN_SOURCE = "(outside the source as saved)"


def _outside_note(sv: SourceView) -> str | None:
    """The note under a source whose trace recorded lines it does not have."""
    if not sv.outside:
        return None
    numbers = ", ".join(map(str, sv.outside))
    return (f"line{'s' if len(sv.outside) > 1 else ''} {numbers} {'are' if len(sv.outside) > 1 else 'is'} outside the "
            f"source of {literal(sv.qualname)} as saved in the trace: the source may have changed since the trace; "
            "what ran there is shown on its own row")


def _code_text(ln: Line) -> str | None:
    """What a row shows in place of source text (``None``: its own text)."""
    if ln.outside:
        return _NOT_IN_SOURCE
    return None if ln.number else _OUTSIDE


def _text_rows(lines: list[Line], width: int | None) -> list[str]:
    """The ``number │ code │ shapes`` rows (``lines_rows.text_rows``), the two ``│`` in one column each in a
    terminal: tabs expanded (stops of 8, as ``expand`` does), other control and format characters of the source
    (a ``\\r``, a right-to-left override) shown as Python escapes as the table shows them, widths in display
    columns (卷积 is 4), each line of a multi-line note on a row of its own."""
    rows = []
    for ln in lines:
        notes = [g.text() for g in ln.groups] + ([f"✗ {ln.error}"] if ln.error else [])
        rows.append(Row(ln.number, ORIGIN_MARK if ln.nonfinite else {"unreached": "·", "raised": "✗"}.get(ln.state, " "),
                        _code_text(ln) or escape_controls(ln.text.expandtabs(8)),
                        [escape_controls(part) for note in notes for part in note.splitlines() or [""]]))
    return text_rows(rows, width)


def render_markdown(view: View, width: int | None = None) -> str:
    out: list[str] = ["```text"]
    out.append(render_text(view, width).rstrip("\n"))
    out.append("```")
    return "\n".join(out) + "\n"


# Every selector is scoped to ``.st-lines`` (nothing restyles the host page), and colours work on light and
# dark themes alike: text in the host's colour, fills translucent. Each token colour is its hue mixed with the
# text colour (``_tint``), and dimmed text is the text colour made translucent (``_DIM``), in shares that keep
# 4.5:1 (WCAG AA) against the page, light or dark, and against the raised row's red fill; browsers without
# color-mix() get the plain hue first. Never-run code is dimmed and in italics, without syntax colours. The
# scope is written ``table.st-lines.st-lines`` so each rule outweighs a host's table rules (JupyterLab's
# ``:not(.jp-RenderedMarkdown).jp-RenderedHTMLCommon td{text-align:right}``, ``table{margin:auto}``, its zebra
# rows) whatever order the style sheets come in; every property such a host sets is set here.
_S = "table.st-lines.st-lines"


def _tint(hue: str, share: int) -> str:
    return f"color:{hue};color:color-mix(in srgb, {hue} {share}%, currentColor)"


_DIM = "color:gray;color:color-mix(in srgb, currentColor 70%, transparent)"  # gray: without color-mix()
_CSS = ("""
&{font:13px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;border-collapse:collapse;border:none;
color:inherit;margin:0 0 1em 0;table-layout:auto;width:auto}
& caption{text-align:left;font-weight:600;padding:4px 0;font-family:system-ui,sans-serif}
& tr,& tr:nth-child(n){background:transparent;border:none}
& td{padding:0 10px;vertical-align:top;white-space:pre;text-align:left;line-height:1.45;max-width:none;
border:none;background:transparent;color:inherit}
& td.no{{DIM};text-align:right;user-select:none;border-right:1px solid rgba(127,127,127,.35)}
& td.code{white-space:pre-wrap;overflow-wrap:anywhere;padding-left:calc(10px + 4ch);text-indent:-4ch}
& td.shapes{""" + _tint("#3b82c4", 70) + """;border-left:1px solid rgba(127,127,127,.35);white-space:normal;
min-width:22em}
& td.shapes div{white-space:normal;padding-left:1.5em;text-indent:-1.5em;text-align:left}
& tr.raised td{background:rgba(220,38,38,.15)}
& tr.raised td.shapes{FAIL}
.st-lines-note{font-family:system-ui,sans-serif;{DIM};font-size:12px}
& td.code span[class^="k"],& td.code span.ow{""" + _tint("#a855f7", 70) + """;font-weight:600}
& td.code span[class^="s"]{""" + _tint("#c2410c", 55) + """}
& td.code span[class^="m"]{""" + _tint("#0d9488", 65) + """}
& td.code span[class^="c"]{""" + _tint("#8a8f98", 60) + """;font-style:italic}
& td.code span.nf,& td.code span.fm,& td.code span.nc{""" + _tint("#2f8fd0", 65) + """}
& td.code span.nb,& td.code span.bp,& td.code span.nd{""" + _tint("#16a34a", 60) + """}
& tr.unreached td.code{{DIM};font-style:italic}
& tr.unreached td.code span[class]{color:inherit;font-weight:inherit}
@media (max-width:600px){&,& tbody{display:block}& caption{display:block}
& tr{display:grid;grid-template-columns:calc(5ch + 20px) minmax(0,1fr)}
& td.shapes{grid-column:2;border-left:none;min-width:0;padding-left:calc(10px + 2ch)}
& td.shapes:empty{display:none}}
""").replace("&", _S).replace("{FAIL}", "{" + FAIL_COLOR + "}").replace("{DIM}", _DIM)
# Added only to a view with a line marked by ``check_finite`` (any other view's bytes unchanged): an amber fill.
_NONFINITE_CSS = f"{_S} tr.nonfinite td{{background:rgba(217,119,6,.16)}}"


def _hanging(text: str) -> str:
    """The style that makes a wrapped statement's continuation lines hang from its own indentation (4 columns in
    from it), not from the code column's edge; none for a line that starts at column 0 (the stylesheet's rule)."""
    indent = len(text.expandtabs(8)) - len(text.expandtabs(8).lstrip(" "))
    if not indent or not text.strip():
        return ""
    return f' style="padding-left:calc(10px + {indent + 4}ch);text-indent:-{indent + 4}ch"'


def _highlight(lines: list[str]) -> list[str]:
    """Each source line as HTML, syntax-highlighted with pygments when it is installed."""
    try:
        from pygments.lexers import PythonLexer  # noqa: PLC0415 - optional dependency: plain text without it
        from pygments.token import STANDARD_TYPES  # noqa: PLC0415 - optional dependency: plain text without it
    except ImportError:
        return [markup(t) for t in lines]
    out: list[list[str]] = [[]]
    for ttype, value in PythonLexer(stripnl=False, ensurenl=False).get_tokens("\n".join(lines)):
        cls = STANDARD_TYPES.get(ttype)
        while cls is None and ttype.parent is not None:
            ttype = ttype.parent
            cls = STANDARD_TYPES.get(ttype)
        for i, piece in enumerate(value.split("\n")):
            if i:
                out.append([])
            if piece:
                out[-1].append(f'<span class="{cls}">{markup(piece)}</span>' if cls else markup(piece))
    rows = ["".join(parts) for parts in out]
    return (rows + [""] * len(lines))[:len(lines)]


def _lines_html(text: str) -> str:
    """A message of several lines (an error) as HTML: each line made safe (``units.markup``), on a line of its own."""
    return "<br>".join(markup(part) for part in text.splitlines())


def render_html(view: View) -> str:
    parts = [f"<style>{_CSS}{_NONFINITE_CSS if _marks_nonfinite(view) else ''}</style>"]
    for sv in view.sources:
        parts.append(f'<table class="st-lines"><caption>{markup(_title(view, sv))}</caption>')
        if sv.missing:
            parts.append(f'<tr><td class="shapes">No source lines: {markup(sv.missing)}. The calls and ops '
                         "it made, in order:"
                         + "".join(f"<div>{markup(g.text())}</div>" for g in sv.calls_only) + "</td></tr>")
            parts.append("</table>")
            continue
        code = _highlight([ln.text.expandtabs(8) for ln in sv.lines])
        for ln, hl in zip(sv.lines, code):
            notes = "".join(f"<div>{markup(g.text())}</div>" for g in ln.groups)
            if ln.error:
                notes += f"<div>✗ {_lines_html(ln.error)}</div>"
            title = ' title="never ran"' if ln.state == "unreached" else ""
            state = ln.state
            if ln.nonfinite:  # a class of its own (any other view's bytes unchanged) and its mark before the notes
                state, title = f"{state} nonfinite", ' title="made the first NaN or Inf"'
                notes = f"<div>{ORIGIN_MARK} first NaN or Inf made here</div>" + notes
            parts.append(f'<tr class="{state}"{title}><td class="no">{ln.number or "?"}</td>'
                         f'<td class="code"{_hanging(ln.text)}>{markup(_code_text(ln) or "") or hl}</td>'
                         f'<td class="shapes">{notes}</td></tr>')
        parts.append("</table>")
        if (note := _outside_note(sv)) is not None:
            parts.append(f'<p class="st-lines-note">Note: {markup(note)}</p>')
    if view.note:
        parts.append(f'<p class="st-lines-note">Note: {markup(view.note)}</p>')
    for note in view.caught:
        parts.append(f'<p class="st-lines-note">Note: {_lines_html(note)}</p>')
    if view.failure:
        parts.append(f'<p class="st-lines-note">The forward failed: {_lines_html(view.failure)}</p>')
    amber = f" Amber, {ORIGIN_MARK}: made the first NaN or Inf." if _marks_nonfinite(view) else ""
    parts.append('<p class="st-lines-note">Dimmed, in italics: never ran. Red: the line the error left by. ×N: made N times '
                 f"by the line (a loop, or a module called again), with each one's output shape.{amber}</p>")
    return "\n".join(parts) + "\n"


def _group_json(g: Group) -> dict:
    out: dict[str, Any] = {"kind": g.kind, "name": g.name, "count": g.count, "outputs": g.outputs}
    if g.kind == "call":
        out["cls"] = g.cls
        out["modules"] = g.members
    if g.dtype:
        out["dtype"] = g.dtype
    if g.failed:
        out["failed"] = True
    if g.caught:
        out["caught"] = True
    return out


def to_dict(view: View) -> dict:
    sources = []
    for sv in view.sources:
        entry: dict[str, Any] = {"key": sv.key, "qualname": sv.qualname, "file": sv.file,
                                 "first_line": sv.first_line}
        if sv.missing:
            entry["missing"] = sv.missing
            entry["events"] = [_group_json(g) for g in sv.calls_only]
        else:
            entry["lines"] = [{"line": ln.number, "text": ln.text, "state": ln.state,
                               "events": [_group_json(g) for g in ln.groups],
                               **({"error": ln.error} if ln.error else {}),
                               **({"outside_source": True} if ln.outside else {})} for ln in sv.lines]
            if sv.outside:
                entry["outside_lines"] = sv.outside
        sources.append(entry)
    out = {"format": "shapetrace.lines/1", "module": view.module, "cls": view.cls, "calls": view.calls,
           "failure": view.failure, "note": view.note, "sources": sources}
    if view.caught:
        out["caught"] = view.caught
    return out


def render(view: View, fmt: str = "text", width: int | None = None) -> str:
    """``view`` as ``fmt``; the text of ``text`` and ``md`` at most ``width`` columns wide (``None``: no limit)."""
    if fmt == "text":
        return render_text(view, width)
    if fmt == "md":
        return render_markdown(view, width)
    if fmt == "html":
        return render_html(view)
    if fmt == "json":
        return json.dumps(to_dict(view), indent=1, sort_keys=True) + "\n"
    raise ValueError(f"lines renders as {', '.join(FORMATS)}, not {fmt!r}")


def _terminal_width() -> int:
    return max(shutil.get_terminal_size((100, 24)).columns, MIN_TABLE_WIDTH)


class LinesView:
    """``trace.lines(module)``: shows as text (``str``), as HTML in Jupyter, and saves by file suffix."""

    def __init__(self, trace: Trace, module: str = "") -> None:
        self.view = build_view(trace, module)

    def __str__(self) -> str:
        """The text form, fitted to the terminal as ``str(trace)`` is (100 columns off a terminal)."""
        return render_text(self.view, _terminal_width())

    def __repr__(self) -> str:
        return f"<LinesView of {self.view.module or '(root)'}: {len(self.view.sources)} source(s)>"

    def _repr_html_(self) -> str:
        return render_html(self.view)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """Terminal IPython's display: the text form (``repr`` stays one line; so is each view in a container)."""
        nested = len(getattr(printer, "stack", ())) > 1
        printer.text(repr(self) if cycle or nested else str(self))

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        """Jupyter shows the HTML; a text front end (nbconvert to text, a console) the text form."""
        return {"text/html": render_html(self.view), "text/plain": str(self)}

    def render(self, fmt: str = "text", width: int | None = None) -> str:
        """The view as ``fmt``; ``text`` and ``md`` rows at most ``width`` columns wide (``None``: no limit)."""
        if width is not None and (width < MIN_TABLE_WIDTH or isinstance(width, bool)):
            raise ValueError(f"width must be None or a whole number >= {MIN_TABLE_WIDTH}, not {width!r}")
        return render(self.view, fmt, width)

    def save(self, path: str | Path, format: str | None = None) -> Path:
        """Write the view to ``path``, the format ``format`` or taken from the suffix (``.html`` a whole page,
        ``.md``/``.markdown``, ``.json``, ``.txt``); written next to its final name and renamed into place,
        creating missing folders, as ``Table.save`` does. Returns the path."""
        target = Path(path)
        format = format.lower() if isinstance(format, str) else format
        fmt = format or _SAVE_FORMATS.get(target.suffix.lower())
        if format is not None and format not in FORMATS:
            raise ValueError(f"lines formats are {', '.join(FORMATS)}; got format={format!r}")
        if fmt not in FORMATS:
            raise ValueError(f"cannot tell the lines format of {target.name!r}: use one of the suffixes "
                             f"{', '.join(_SAVE_FORMATS)}, or pass format= ({', '.join(FORMATS)}); pictures "
                             "(.png, .svg, .pdf) come from trace.diagram()")
        text = render(self.view, fmt)
        return save_file(target, lines_page(text, _page_title(self.view)) if fmt == "html" else text)


_SAVE_FORMATS = {".html": "html", ".htm": "html", ".md": "md", ".markdown": "md", ".json": "json", ".txt": "text",
                 ".text": "text"}


def _page_title(view: View) -> str:
    return f"{view.module or 'forward'}: line by line"


def lines_page(fragment: str, title: str) -> str:
    """A standalone HTML5 page around ``render_html``'s fragment, for a file of its own: doctype, UTF-8, and
    the reader's light or dark colours (``color-scheme``; the fragment's colours work on both)."""
    return ('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            '<meta name="color-scheme" content="light dark">\n'
            f"<title>{markup(title)}</title>\n"
            "<style>body{margin:24px;font-family:system-ui,sans-serif;background:Canvas;color:CanvasText}</style>\n"
            f"</head>\n<body>\n{fragment}</body>\n</html>\n")
