"""Differences, rendered: two traces compared call by call (``shapetrace diff A B``), and a trace compared
with torchinfo or torchview (``shapetrace diff MODEL --against ...``, the ``Comparison`` records).

``diff_traces(a, b)`` aligns the calls of two traces by module name and call order and sorts each pair into
changed (its class, its own parameters, or its output for the same input), carried (only its shapes differ,
because its input does), same, or present on one side only. ``render_trace_diff(d, fmt)`` writes that as
text, Markdown, HTML or JSON; ``diagram_options(d)`` gives the diagram renderer's ``diff`` overlay for B.
Plain data in, text out: no torch. Names (layers, classes, files) are shown as the shape table shows them:
control characters escaped (``units.literal``), padded by display width in text, escaped as text in Markdown
(``markdown.md_cell``) and HTML, so no name can break a row or run as markup.
"""

from __future__ import annotations

import difflib
import html
import json
import math
import shutil
from dataclasses import dataclass, field
from typing import Any

from ..tracer.records import Call, Comparison, TensorMeta, Trace, iter_tensors
from .carried import follows_from_input, windowed
from .markdown import md_cell, md_code
from .table import level_cuts, longest_token, wrap_cell, wrap_words
from .units import display_width, home_device, literal, pad

COLUMNS = ("layer", "what", "shapetrace", "{tool}", "why")


def _rows(comparison: Comparison) -> list[tuple[str, ...]]:
    return [(d.layer, d.what, d.shapetrace, d.other, d.why) for d in comparison.differences]


def _summary(c: Comparison) -> str:
    n = len(c.differences)
    return (f"shapetrace saw {c.our_calls} call{'s' if c.our_calls != 1 else ''}, {c.tool} {c.their_calls}; "
            f"{c.matched} matched; "
            f"{n} difference{'s' if n != 1 else ''}.")


# The narrowest a column is squeezed to when a table is fitted to a width (a shape such as ``(2,1024)`` fits).
MIN_COLUMN = 10


def _column_widths(rows: list[tuple[str, ...]], width: int | None, keep: tuple[int, ...] = ()) -> list[int]:
    """Each column's width: its widest cell's, the widest columns narrowed (never below ``MIN_COLUMN``, nor
    below the column's header) until the table fits in ``width`` columns (``None``: no limit). The ``keep``
    columns (the layer names of a trace diff) give way last: the others first wrap as far as their cells
    allow without cutting a shape or a word (``table.wrap_cell``'s break points)."""
    widths = [max(display_width(r[i]) for r in rows) for i in range(len(rows[0]))]
    if width is None:
        return widths
    floors = [min(w, max(MIN_COLUMN, display_width(rows[0][i]))) for i, w in enumerate(widths)]
    excess = sum(widths) + 2 * (len(widths) - 1) - width
    if keep and excess > 0:
        soft = {i: max(floors[i], max(longest_token(r[i]) for r in rows)) for i in range(len(widths)) if i not in keep}
        cuts = level_cuts({i: max(widths[i] - f, 0) for i, f in reversed(soft.items())}, excess)
        widths = [w - cuts.get(i, 0) for i, w in enumerate(widths)]
        excess -= sum(cuts.values())
    # the table's own leveling (the widest first, the last column on a tie), computed at once: a cell holding a
    # megabyte-long error costs no more than a short one
    cuts = level_cuts({i: widths[i] - floors[i] for i in reversed(range(len(widths)))}, excess)
    return [w - cuts[i] for i, w in enumerate(widths)]


def _aligned(rows: list[tuple[str, ...]], width: int | None = None, keep: tuple[int, ...] = ()) -> list[list[str]]:
    """Rows of cells (already ``literal``) as lines, each column padded to its width (``_column_widths``);
    a cell wider than its column wraps there (``table.wrap_cell``, as the shape table's cells wrap), so a row
    may take several lines."""
    widths = _column_widths(rows, width, keep)
    out = []
    for r in rows:
        pieces = [wrap_cell(c, w) if display_width(c) > w else [c] for c, w in zip(r, widths)]
        out.append(["  ".join(pad(p[k] if k < len(p) else "", w) for p, w in zip(pieces, widths)).rstrip()
                    for k in range(max(map(len, pieces)))])
    return out


def _rule(lines: list[str], width: int | None) -> str:
    longest = max(display_width(line) for line in lines)
    return "─" * (longest if width is None else min(width, longest))


def _fitted(lines: list[str], width: int | None) -> list[str]:
    """Sentences (``literal`` already) wrapped to ``width`` columns as the shape table's notes wrap
    (``table.wrap_words``: at spaces, a continuation indented by two); ``None``: as they are."""
    return lines if width is None else [part for line in lines for part in wrap_words(line, width)]


def render_text(comparison: Comparison, width: int | None = 100) -> str:
    """An aligned table fitted to ``width`` columns (``None``: no limit), long cells and the summary wrapped."""
    head = tuple(h.format(tool=comparison.tool) for h in COLUMNS)
    rows = [tuple(literal(c) for c in r) for r in _rows(comparison)]
    summary = _fitted([_summary(comparison)], width)
    if not rows:
        return "\n".join(summary) + "\n"
    header, *body = _aligned([head, *rows], width)
    lines = [line for row in body for line in row]
    rule = _rule([*header, *lines], width)
    return "\n".join([rule, *header, rule, *lines, rule, *summary]) + "\n"


def render_markdown(comparison: Comparison) -> str:
    """A Markdown table and the summary; the summary alone where there is no difference (no empty table)."""
    if not comparison.differences:
        return md_cell(_summary(comparison)) + "\n"
    head = [h.format(tool=comparison.tool) for h in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(md_cell(c) for c in r) + " |" for r in _rows(comparison)]
    return "\n".join([*lines, "", _summary(comparison)]) + "\n"


def comparison_to_dict(comparison: Comparison) -> dict:
    """The comparison as plain JSON data (``shapetrace.against/1``): the counts, the summary, and one object per
    difference with the columns the table shows (``call``: our call's id, ``None`` for totals)."""
    return {"format": "shapetrace.against/1", "tool": comparison.tool, "our_calls": comparison.our_calls,
            "their_calls": comparison.their_calls, "matched": comparison.matched,
            "differences": [{"layer": d.layer, "what": d.what, "shapetrace": d.shapetrace, "other": d.other,
                             "why": d.why, "call": d.call} for d in comparison.differences],
            "summary": _summary(comparison)}


# the formats a comparison with another tool renders as (``render``)
COMPARISON_FORMATS = ("text", "md", "json")


def render(comparison: Comparison, fmt: str = "text", width: int | None = 100) -> str:
    """The comparison as ``text`` (fitted to ``width`` columns; ``None``: no limit), ``md`` or ``json``."""
    if fmt == "md":
        return render_markdown(comparison)
    if fmt == "text":
        return render_text(comparison, width)
    if fmt == "json":
        return json.dumps(comparison_to_dict(comparison), indent=1, sort_keys=True) + "\n"
    raise ValueError(f"a comparison renders as {', '.join(COMPARISON_FORMATS)}, not {fmt!r}")


# ==== shapetrace diff A B: two traces, aligned by module name and call order ====================================
def _metas(value: Any) -> list[TensorMeta]:
    return [m for _, m in iter_tensors(value)]


def _shapes(value: Any, start: int = 0) -> str:
    """Up to four tensors' shapes from the ``start``-th (a dtype beside those whose dtype differs from the
    first's), for a cell."""
    metas = _metas(value)
    if not metas:
        return "—"

    def text(m: TensorMeta) -> str:
        return "(" + ",".join(map(str, m.shape)) + ")" + ("" if m.dtype == metas[0].dtype else f" {m.dtype}")

    if start == 0 and isinstance(value, list) and len(value) <= 4 and None in value and \
            all(v is None or isinstance(v, TensorMeta) for v in value):  # a None among tensors, as tables show it
        return ", ".join("None" if v is None else text(v) for v in value)
    shown = ", ".join(text(m) for m in metas[start:start + 4])
    return ("…, " if start else "") + shown + (", …" if len(metas) > start + 4 else "")


def _dtypes(value: Any) -> str:
    return ",".join(sorted({m.dtype for m in _metas(value)}))


def _side_by_side(a: Any, b: Any) -> tuple[str, str]:
    """The cells of two values' tensors: the same text exactly when every tensor's shape and dtype are the same.

    A cell shows four tensors; where they agree and a later one differs, both cells show the tensors from
    the first that differs (``…, (2,8)``), and where only dtypes differ, each cell names its dtypes."""
    ma, mb = _metas(a), _metas(b)
    sig_a, sig_b = [(m.shape, m.dtype) for m in ma], [(m.shape, m.dtype) for m in mb]
    ta, tb = _shapes(a), _shapes(b)
    if sig_a == sig_b or ta != tb:
        return ta, tb
    if [s for s, _ in sig_a] == [s for s, _ in sig_b]:  # the same shapes in other dtypes
        return f"{ta} {_dtypes(a)}", f"{tb} {_dtypes(b)}"
    first = next((i for i, (x, y) in enumerate(zip(sig_a, sig_b)) if x[0] != y[0]), min(len(ma), len(mb)))
    ta, tb = _shapes(a, first), _shapes(b, first)
    if ta == tb:  # one holds more tensors, all others alike
        ta, tb = f"{len(ma)} tensors", f"{len(mb)} tensors"
    return ta, tb


def _elsewhere(value: Any, home: str | None) -> list[str | None]:
    """Each tensor's device where it is not ``home`` (its trace's own device, ``units.home_device``), else
    ``None``: two traces run on different devices compare alike, a tensor moved off the rest's device does not."""
    return [None if home is None or m.device == home else m.device for m in _metas(value)]


def _placed_apart(a: Any, b: Any, homes: tuple[str | None, str | None]) -> bool:
    """Whether two values' tensors are placed differently, each relative to its side's own device: tensor by
    tensor where both hold as many, else by the devices off home either holds (one side failed, or a call
    returns more tensors: a count the shapes already show, not a placement)."""
    ea, eb = _elsewhere(a, homes[0]), _elsewhere(b, homes[1])
    if len(ea) == len(eb):
        return ea != eb
    return {d for d in ea if d} != {d for d in eb if d}


def _cells(a: Any, b: Any, homes: tuple[str | None, str | None]) -> tuple[str, str]:
    """``_side_by_side``, each cell naming the devices of its tensors where they are placed differently on the two
    sides (``_placed_apart``)."""
    ta, tb = _side_by_side(a, b)
    if _placed_apart(a, b, homes):
        ta, tb = ta + _devices_text(a), tb + _devices_text(b)
    return ta, tb


def _devices_text(value: Any) -> str:
    devices = sorted({m.device for m in _metas(value)})
    return " on " + ", ".join(map(literal, devices)) if devices else ""


def _homes(a: Trace, b: Trace) -> tuple[str | None, str | None]:
    """Each side's own device (``units.home_device``); where one side is a shape-only trace, which keeps no
    placement of its own, devices are compared on neither side."""
    homes = (home_device(a), home_device(b))
    return (None, None) if None in homes else homes


def _ms(call: Call | None) -> float | None:
    return call.timing.get("total_ms") if call is not None and call.timing else None


@dataclass
class Row:
    """One aligned call (or a call on one side only) and what differs about it.

    ``status``: ``"changed"`` (class, own parameters, or an output its input does not explain), ``"carried"``
    (only its shapes differ, as its input's do: ``carried.follows_from_input``), ``"contains"`` (a container
    whose output changed only through a changed call inside it), ``"only_a"``, ``"only_b"``,
    ``"unreached_a"`` / ``"unreached_b"`` (a module that side has too, whose forward failed before calling it),
    ``"folded"`` (shown in another row's ``inside``) or ``"same"``. ``changes`` holds
    ``(what, A, B)`` triples; ``inside_a``/``inside_b`` name the one-sided calls folded into this row (the
    insides of a layer whose class changed, or of a call only one side has).
    """

    label: str
    a: Call | None
    b: Call | None
    status: str = "same"
    changes: list[tuple[str, str, str]] = field(default_factory=list)
    inside_a: list[str] = field(default_factory=list)
    inside_b: list[str] = field(default_factory=list)
    # the ids of the calls folded into this row, on each side (``inside_a``/``inside_b`` name them)
    folded_a: list[int] = field(default_factory=list)
    folded_b: list[int] = field(default_factory=list)
    # both sides timed and its self time changed beyond noise (``_mark_time_changes``): (A's, B's) self_ms
    time_change: tuple[float, float] | None = None

    @property
    def calls(self) -> int:
        """How many calls a one-sided row stands for: its own and those folded into it."""
        return 1 + len(self.folded_a if self.status in ("only_a", "unreached_b") else self.folded_b)

    @property
    def cls(self) -> str:
        return (self.b or self.a).cls  # type: ignore[union-attr]


@dataclass
class TraceDiff:
    """Two traces compared call by call: ``rows`` in call order (A's calls missing from B where they were)."""

    a_name: str
    b_name: str
    a: Trace
    b: Trace
    rows: list[Row]
    homes: tuple[str | None, str | None] = (None, None)  # each side's own device, as compared (``_homes``)
    # the whole forward's ratio (B over A) when it changed alike in most layers (``_machine_factor``): own times
    # are then compared as shares of the forward
    machine_factor: float | None = None

    @property
    def shown(self) -> list[Row]:
        return [r for r in self.rows if r.status in ("changed", "only_a", "only_b", "unreached_a", "unreached_b")
                or r.time_change is not None]

    @property
    def time_changed(self) -> list[Row]:
        """Aligned calls whose own time changed beyond noise (``_mark_time_changes``), both sides profiled."""
        return [r for r in self.rows if r.time_change is not None]

    @property
    def containing(self) -> list[Row]:
        """Containers whose output changed only through the changed calls inside them."""
        return [r for r in self.rows if r.status == "contains"]

    @property
    def carried(self) -> list[Row]:
        return [r for r in self.rows if r.status == "carried"]

    @property
    def shared(self) -> list[Row]:
        """Aligned calls below the root with the same class on both sides."""
        return [r for r in self.rows
                if r.a is not None and r.b is not None and r.a.parent is not None and r.a.cls == r.b.cls]

    @property
    def common(self) -> bool:
        """Whether the two have enough in common for a call-by-call diff: at least a tenth of the smaller
        side's calls below the root share a name and class with the other side."""
        if not self.a.calls or not self.b.calls:  # nothing recorded on a side: alike only when on both
            return not self.a.calls and not self.b.calls
        smaller = min(len(self.a.calls), len(self.b.calls)) - 1
        if smaller <= 0:  # a model without submodules: the root call is all there is
            return bool(self.a.calls and self.b.calls) and self.a.calls[0].cls == self.b.calls[0].cls
        return bool(self.shared) and len(self.shared) * 10 >= smaller

    @property
    def timed(self) -> bool:
        return _ms(next(iter(self.a.calls), None)) is not None and _ms(next(iter(self.b.calls), None)) is not None

    # ---- display: one line as a value, the rendered diff where a notebook or a print shows it -------------
    def __repr__(self) -> str:
        def side(letter: str, name: str, t: Trace) -> str:
            n = len(t.calls)
            named = letter if name == letter else f"{letter} = {literal(name)}"
            return f"{named} ({t.model.cls}, {n} call{'s' if n != 1 else ''})"

        what = _counted(self) if self.common else "too little in common for a call-by-call diff"
        return f"<TraceDiff of {side('A', self.a_name, self.a)} and {side('B', self.b_name, self.b)}: {what}>"

    def __str__(self) -> str:
        return render_trace_diff_text(self, width=shutil.get_terminal_size((100, 24)).columns)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython and Jupyter's plain-text display: the text diff (``repr`` stays one line). Inside a list or
        another container each diff is its ``repr``, so the container still reads as one."""
        if cycle or len(getattr(printer, "stack", ())) > 1:
            printer.text(repr(self))
            return
        printer.text(render_trace_diff_text(self, width=shutil.get_terminal_size((100, 24)).columns).rstrip("\n"))

    def _repr_html_(self) -> str:
        """Jupyter shows a diff as ``shapetrace diff --format html`` writes it."""
        return render_trace_diff_html(self)


def _key(call: Call) -> tuple[str, int]:
    return (call.module, call.call_index)


def _keys(t: Trace) -> list[tuple[str, int]]:
    """Each call's key for pairing (``_key``), but a module registered under several names (one ``nn.ReLU``
    given to every block) counts its calls under each name apart: its call as ``layers.1.1`` pairs with the
    other side's ``layers.1.1``, whether that one is the same module as ``layers.0.1`` or a module of its own."""
    seen: dict[str, int] = {}
    out = []
    for c in t.calls:
        if c.aliases:
            out.append((c.module, seen.get(c.module, 0)))
            seen[c.module] = seen.get(c.module, 0) + 1
        else:
            out.append(_key(c))
    return out


def _sharing_lines(rows: list[Row]) -> list[str]:
    """The summary's lines on paired calls of a module shared under several names on one side only."""
    out: dict[str, None] = {}
    for r in rows:
        if r.a is None or r.b is None or bool(r.a.aliases) == bool(r.b.aliases):
            continue
        side, call = ("A", r.a) if r.a.aliases else ("B", r.b)
        other = "B" if side == "A" else "A"
        names = " = ".join(sorted({call.module, *call.aliases}))
        out[f"{side} shares one {call.cls} module under several names ({names}), {other} has one per name: "
            "their calls are paired by name"] = None
    return list(out)


def _trainable_change(a: Call, b: Call, children_a: dict[int, list[Call]],
                      children_b: dict[int, list[Call]]) -> tuple[str, str, str] | None:
    """How the trainable parameters registered on a module itself changed (``own_params`` being the same on
    both sides), or ``None``. A trace records each call's subtree counts and its own parameter count, not its
    own trainable count, so that is derived where it can be exactly:

    - everything in the subtree trainable on both sides, or nothing: no change of its own (its own count is
      its ``own_params``, or 0, on both);
    - else its subtree's less those of the modules it called directly (each module once), where the subtree's
      parameters are exactly its own and its children's (``params == own_params + Σ children``, on both
      sides): ``("trainable", own A, own B)``. A child module that was never called is counted as the
      module's own on both sides, so it shows only where it changed;
    - else a parameter is shared (tied between two children, or between the module and a child), and the
      subtraction would count it twice: the subtrees' trainable counts are compared,
      ``("trainable (all)", A, B)``, so a change is never hidden, though it may be a child's."""
    if (a.trainable_params == a.params and b.trainable_params == b.params) or a.trainable_params == b.trainable_params == 0:
        return None

    def kids(call: Call, children: dict[int, list[Call]]) -> list[Call]:
        seen: dict[str, Call] = {}
        for child in children.get(call.id, ()):
            seen.setdefault(child.module, child)
        return list(seen.values())

    ka, kb = kids(a, children_a), kids(b, children_b)
    if all(c.own_params + sum(k.params for k in ks) <= c.params for c, ks in ((a, ka), (b, kb))):
        ta = a.trainable_params - sum(k.trainable_params for k in ka)
        tb = b.trainable_params - sum(k.trainable_params for k in kb)
        return ("trainable", f"{ta:,}", f"{tb:,}") if ta != tb else None
    if a.trainable_params != b.trainable_params:
        return ("trainable (all)", f"{a.trainable_params:,}", f"{b.trainable_params:,}")
    return None


def _compare(row: Row, children_a: dict[int, list[Call]], children_b: dict[int, list[Call]],
             homes: tuple[str | None, str | None]) -> None:
    a, b = row.a, row.b
    assert a is not None and b is not None
    changes = row.changes
    if a.cls != b.cls:
        changes.append(("class", a.cls, b.cls))
        if a.params != b.params:  # a class change: the subtree's parameters, the new layer's insides included
            leaves = a.params == a.own_params and b.params == b.own_params
            changes.append(("params" if leaves else "params (all)", f"{a.params:,}", f"{b.params:,}"))
    elif a.own_params != b.own_params:
        changes.append(("params", f"{a.own_params:,}", f"{b.own_params:,}"))
    elif a.own_params:
        # trainable, like params, counts the module's own parameters: a container is not changed because a
        # layer inside it was frozen, resized or removed (that layer's row shows it)
        trainable = _trainable_change(a, b, children_a, children_b)
        if trainable is not None:
            changes.append(trainable)
    in_a, in_b = _cells([a.inputs, a.kwargs], [b.inputs, b.kwargs], homes)
    out_a, out_b = _cells(a.outputs, b.outputs, homes)
    # its output put on another device than on the other side, from inputs placed alike: its own doing (a
    # ``.to()`` in its forward), which no input explains
    moved = (_placed_apart(a.outputs, b.outputs, homes)
             and not _placed_apart([a.inputs, a.kwargs, a.side_inputs], [b.inputs, b.kwargs, b.side_inputs], homes))
    if a.error != b.error:  # one failed, or both with different errors
        changes.append(("error", a.error or "—", b.error or "—"))
    # a convolution or pooling with a window or stride (not adaptive, not a container, whose calls inside decide
    # its shapes and are judged on their own): its output size follows its input's
    strided = windowed(a.cls) and a.id not in children_a and b.id not in children_b
    # its own change, or an output its new input cannot explain (``carried.follows_from_input``); a side input
    # (a tensor read from an attribute or a hook's storage: a U-Net block's skip) explains like an argument
    own = bool(changes) or moved or ((out_a != out_b or in_a != in_b)
                            and not follows_from_input([a.inputs, a.kwargs, a.side_inputs],
                                                       [b.inputs, b.kwargs, b.side_inputs],
                                                       a.outputs, b.outputs, strided=strided))
    if out_a != out_b or (own and in_a != in_b and not changes):  # the output it kept, beside its new input
        changes.append(("output", out_a, out_b))
    if in_a != in_b and (own or out_a == out_b):
        changes.append(("input", in_a, in_b))
    row.status = "changed" if own else ("carried" if (out_a != out_b or in_a != in_b) else "same")


def _children(t: Trace) -> dict[int, list[Call]]:
    """Each call's direct calls, in start order, by the calling call's id."""
    out: dict[int, list[Call]] = {}
    for c in t.calls:
        if c.parent is not None:
            out.setdefault(c.parent, []).append(c)
    return out


def _value(value: Any) -> Any:
    """A recorded value as comparable data: each tensor as its shape and dtype, lists, tuples and dicts
    walked, any other value (an int, a size given as a list, a string) as it was recorded."""
    if isinstance(value, TensorMeta):
        return ("tensor", tuple(value.shape), value.dtype)
    if isinstance(value, (list, tuple)):
        return [_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _value(v) for k, v in value.items()}
    return value


def _arguments(call: Call) -> Any:
    """Everything the diff sees a call given: its positional arguments, its keyword arguments and its side
    inputs (tensors read from an attribute or a hook's storage), tensors by shape and dtype, other values as
    recorded."""
    return _value([call.inputs, call.kwargs, call.side_inputs])


def _mark_own_code(rows: list[Row], children_a: dict[int, list[Call]], children_b: dict[int, list[Call]],
                   homes: tuple[str | None, str | None]) -> None:
    """A container whose own code changed what it passes to a call inside it is changed.

    On each side, what a container's call can pass to its next call is what it was given (its arguments,
    tensors and other values alike, and its side inputs: a tensor it read from an attribute or a hook's
    storage) and what its earlier calls returned. Where all of those are the same on both sides (and the
    earlier calls are the same calls) but the next call's input does not have the same shapes, nothing the
    diff sees explains that input: the container's own forward made it differently (a slice, a reshape, a
    ``torch.cat`` of its own), so the container is changed (``passes to``, the first such call's input), not
    the calls below it, which carry what they were given. A container given a different size as a number, or
    a different side input, is not judged so: that may be what it passed on."""
    for row in rows:
        a, b = row.a, row.b
        if a is None or b is None:
            continue
        if _arguments(a) != _arguments(b):
            continue
        for ca, cb in zip(children_a.get(a.id, ()), children_b.get(b.id, ())):
            if ca.module != cb.module or (ca.call_index != cb.call_index and not (ca.aliases or cb.aliases)):
                break  # not the same call (a shared module's calls are paired by name: ``_keys``)
            if _signature([ca.inputs, ca.kwargs], homes[0]) != _signature([cb.inputs, cb.kwargs], homes[1]):
                in_a, in_b = _cells([ca.inputs, ca.kwargs], [cb.inputs, cb.kwargs], homes)
                row.changes.append((f"passes to {cb.label}", in_a, in_b))
                row.status = "changed"
                break
            if _signature(ca.outputs, homes[0]) != _signature(cb.outputs, homes[1]) or ca.error != cb.error:
                break


def diff_traces(a: Trace, b: Trace, a_name: str = "A", b_name: str = "B") -> TraceDiff:
    """Align the calls of ``a`` and ``b`` by (module name, call index), in call order, and compare each pair."""
    akeys, bkeys = _keys(a), _keys(b)
    a_by, b_by = dict(zip(akeys, a.calls)), dict(zip(bkeys, b.calls))
    common = set(a_by) & set(b_by)
    rows: list[Row] = []
    done: set[tuple[str, int]] = set()
    children_a, children_b = _children(a), _children(b)
    homes = _homes(a, b)

    def emit(key: tuple[str, int], side: str) -> None:
        if key in done:
            return
        done.add(key)
        ca, cb = a_by.get(key), b_by.get(key)
        if key in common:
            row = Row(cb.label if cb else key[0], ca, cb)  # type: ignore[union-attr]
            _compare(row, children_a, children_b, homes)
        elif side == "a":
            row = Row(ca.label, ca, None, "only_a")  # type: ignore[union-attr]
        else:
            row = Row(cb.label, None, cb, "only_b")  # type: ignore[union-attr]
        rows.append(row)

    matcher = difflib.SequenceMatcher(None, akeys, bkeys, autojunk=False)
    for _, i1, i2, j1, j2 in matcher.get_opcodes():
        for k in akeys[i1:i2]:
            emit(k, "a")
        for k in bkeys[j1:j2]:
            emit(k, "b")
    _mark_own_code(rows, children_a, children_b, homes)
    _mark_unreached(rows, a, b)
    _fold_insides(rows)
    _mark_containers(rows, homes)
    machine = _mark_time_changes(rows, a, b)
    return TraceDiff(a_name, b_name, a, b, rows, homes, machine)


# A call's own time changed when it is at least TIME_RATIO times the other side's, by at least TIME_SHARE of
# the slower whole forward and TIME_FLOOR_MS, and by more than either side's own spread (p90 - p10 of the
# call's inclusive time over the repeats, where recorded): a change two runs of one model would not show.
TIME_RATIO = 1.5
TIME_SHARE = 0.01
TIME_FLOOR_MS = 0.05


def _spread(call: Call) -> float:
    t = call.timing or {}
    lo, hi = t.get("p10_ms"), t.get("p90_ms")
    return float(hi - lo) if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) else 0.0


def _own_times(row: Row) -> tuple[float, float] | None:
    """An aligned row's self times (A's, B's), where both sides timed it."""
    if row.a is None or row.b is None or row.status == "folded" or not row.a.timing or not row.b.timing:
        return None
    sa, sb = row.a.timing.get("self_ms"), row.b.timing.get("self_ms")
    if not isinstance(sa, (int, float)) or not isinstance(sb, (int, float)):
        return None
    return float(sa), float(sb)


def _beyond_noise(row: Row, sa: float, sb: float, floor: float, factor: float) -> bool:
    """Whether B's self time ``sb`` differs beyond noise from what A's ``sa`` becomes when the whole forward
    changed by ``factor`` (1: compared as they are)."""
    expected = sa * factor
    lo, hi = sorted((expected, sb))
    return hi - lo >= floor and hi >= TIME_RATIO * lo and hi - lo > max(_spread(row.a) * factor, _spread(row.b))


def _machine_factor(rows: list[Row], whole: tuple[float, float], floor: float) -> float | None:
    """The whole forward's ratio (B's time over A's) when the forward changed alike in most of its layers (a
    machine-wide change: another load, machine or thread count, not a layer's): beyond ``TIME_RATIO``, and more
    than half of the three or more layers timed above ``floor`` changed about as much (``_alike``). By their
    ratios, not each layer's spread over its repeats: a profile of few repeats has spreads as wide as the change,
    and a forward that ran twice as slow throughout is no layer's doing. ``None`` else."""
    ratio = whole[1] / whole[0] if whole[0] > 0 else 0.0
    if not ratio or 1 / TIME_RATIO < ratio < TIME_RATIO:
        return None
    timed = [own for row in rows if (own := _own_times(row)) is not None and max(own) >= floor]
    alike = [1 for sa, sb in timed if _alike(sa, sb, ratio)]
    return ratio if len(timed) >= 3 and 2 * len(alike) > len(timed) else None


def _alike(sa: float, sb: float, ratio: float) -> bool:
    """Whether a layer's time changed about as the whole forward's did: its ratio within half the forward's change
    of it, on a log scale (the forward 4× slower: a layer 2–8× slower; an unchanged layer never)."""
    if sa <= 0 or sb <= 0:
        return False
    return abs(math.log(sb / sa) - math.log(ratio)) <= abs(math.log(ratio)) / 2


def _mark_time_changes(rows: list[Row], a: Trace, b: Trace) -> float | None:
    """Set ``Row.time_change`` on the aligned calls whose self time (outside their child modules, so a slower
    layer is named once, not with every container around it) changed beyond noise (``TIME_RATIO``...). When
    the whole forward changed alike in most layers (``_machine_factor``), a layer changed when its share of the
    forward did: its time is compared with A's times that factor. Returns that factor (``None``: none)."""
    whole = [_ms(t.calls[0]) for t in (a, b) if t.calls]
    if len(whole) < 2 or None in whole:
        return None
    floor = max(TIME_FLOOR_MS, TIME_SHARE * max(whole))  # type: ignore[type-var]
    factor = _machine_factor(rows, (whole[0], whole[1]), floor)  # type: ignore[arg-type]
    for row in rows:
        own = _own_times(row)
        if own is not None and _beyond_noise(row, *own, floor, factor or 1.0):
            row.time_change = own
    return factor


def _mark_unreached(rows: list[Row], a: Trace, b: Trace) -> None:
    """A call only one side has is *not reached* on the other when that side's forward failed, has the module,
    and no later call of the first side has a counterpart there (the failure stopped it before getting there):
    a layer the failure skipped, not one added or removed."""
    for failed, side, status in ((a, "b", "unreached_a"), (b, "a", "unreached_b")):
        if not failed.failed:
            continue
        modules = {c.module for c in failed.calls} | {u.module for u in failed.uncalled}
        last_paired = max((getattr(r, side).id for r in rows if r.a is not None and r.b is not None), default=-1)
        one_sided = "only_b" if side == "b" else "only_a"
        for row in rows:
            call = getattr(row, side)
            if row.status == one_sided and call.module in modules and call.id > last_paired:
                row.status = status


# What a row shows about a call inside a container: the container's own output may differ because of it.
_CHANGED_INSIDE = ("changed", "contains", "only_a", "only_b", "unreached_a", "unreached_b", "folded")
# The changes a container's row may have and still owe them to a changed call inside it (an error, only when
# a call inside it failed with the same error on the same side: the exception went up through the container).
_CARRIED_CHANGES = ("output", "input")


def _signature(value: Any, home: str | None) -> list[tuple[tuple[int, ...], str, str | None]]:
    """Each tensor's shape, dtype and device where not ``home`` (``_elsewhere``)."""
    return [(tuple(m.shape), m.dtype, d) for m, d in zip(_metas(value), _elsewhere(value, home))]


def _reshaped_inside(row: Row) -> bool:
    """Whether a row below a container changes shapes there: its output (or an error) changed, or it is a call
    one side has (added, removed, not reached), or a container that contains such a change."""
    return row.status != "changed" or any(what in ("output", "error") for what, _, _ in row.changes)


def _mark_containers(rows: list[Row], homes: tuple[str | None, str | None]) -> None:
    """A container whose only changes are its output (and input, and an error raised inside it) *contains*
    changes rather than having one of its own when a call inside it changed shapes and the container returns
    what its last call returned: on each side its output has the shapes of its last direct call's output (a
    container that reshapes, concatenates or repeats its last call's output in its own code changed itself).
    Rows are in start order, so walking them backwards settles every call inside a container before it."""
    owner: dict[tuple[str, int], Row] = {}
    last_child: dict[tuple[str, int], Call] = {}  # (side, call id): its last direct call (start order)
    for row in rows:
        for side, call in (("a", row.a), ("b", row.b)):
            if call is not None:
                owner.setdefault((side, call.id), row)
                if call.parent is not None:
                    prev = last_child.get((side, call.parent))
                    if prev is None or call.id > prev.id:
                        last_child[(side, call.parent)] = call
    inside: dict[int, set[tuple[str, str, str]]] = {}  # id() of a row: the changes of changed calls inside it
    reshaped: set[int] = set()  # id() of rows with a call inside them that changed shapes

    def returns_its_last_call(row: Row) -> bool:
        for side, call, home in (("a", row.a, homes[0]), ("b", row.b, homes[1])):
            last = last_child.get((side, call.id)) if call is not None else None
            if last is None or _signature(call.outputs, home) != _signature(last.outputs, home):  # type: ignore[union-attr]
                return False
        return True

    for row in reversed(rows):
        below = inside.get(id(row))
        if (row.status == "changed" and below is not None and id(row) in reshaped
                and all(what in _CARRIED_CHANGES or (what == "error" and (what, va, vb) in below)
                        for what, va, vb in row.changes)
                and returns_its_last_call(row)):
            row.status = "contains"
        if row.status in _CHANGED_INSIDE:
            errors = {c for c in row.changes if c[0] == "error"} | (below or set())
            for side, call in (("a", row.a), ("b", row.b)):
                if call is not None and call.parent is not None and (side, call.parent) in owner:
                    parent = owner[(side, call.parent)]
                    inside.setdefault(id(parent), set()).update(errors)
                    if _reshaped_inside(row):
                        reshaped.add(id(parent))


def _fold_insides(rows: list[Row]) -> None:
    """One-sided calls inside a one-sided call, or inside a call whose class changed, fold into that row."""
    owner: dict[tuple[str, int], Row] = {}  # (side, call id) -> the row that shows it
    for row in rows:
        for side, call in (("a", row.a), ("b", row.b)):
            if call is not None:
                owner[(side, call.id)] = row  # type: ignore[index]
    for row in rows:
        side, call = (("a", row.a) if row.status in ("only_a", "unreached_b") else
                      ("b", row.b) if row.status in ("only_b", "unreached_a") else (None, None))
        if call is None or call.parent is None:
            continue
        parent_row = owner.get((side, call.parent))  # type: ignore[arg-type]
        if parent_row is None:
            continue
        top = parent_row
        if top.status in ("only_a", "only_b", "unreached_a", "unreached_b") or (top.a and top.b
                                                                                 and top.a.cls != top.b.cls):
            top_module = (top.a if side == "a" else top.b).module  # type: ignore[union-attr]
            label = call.label[len(top_module) + 1:] if top_module and call.label.startswith(top_module + ".") \
                else call.label
            (top.inside_a if side == "a" else top.inside_b).append(f"{label} {call.cls}")
            (top.folded_a if side == "a" else top.folded_b).append(call.id)
            row.status = "folded"
            owner[(side, call.id)] = top  # type: ignore[index]


# ---- rendering a TraceDiff ---------------------------------------------------------------------------------------
_STATUS_WORD = {"changed": "changed", "only_a": "only in A", "only_b": "only in B"}
_UNREACHED = {"unreached_a": "A", "unreached_b": "B"}  # status: the side whose forward failed before the call


def _side(name: str, t: Trace) -> str:
    calls = len(t.calls)
    failed = " (its forward failed)" if t.failed else ""
    return f"{name}: {t.model.cls}, {t.model.params:,} params, {calls} call{'s' if calls != 1 else ''}{failed}"


def _call_text(call: Call) -> str:
    return f"{call.cls} → {_shapes(call.outputs)}" + (f", {call.params:,} params" if call.params else "")


def _row_lines(row: Row, timed: bool, machine: float | None = None) -> list[tuple[str, str, str]]:
    """``(what, A, B)`` lines for one shown row."""
    if row.status == "only_a":
        out = [("only in A", _call_text(row.a), "—")]  # type: ignore[arg-type]
    elif row.status == "only_b":
        out = [("only in B", "—", _call_text(row.b))]  # type: ignore[arg-type]
    elif row.status == "unreached_a":
        out = [("not reached in A", "— (its forward failed first)", _call_text(row.b))]  # type: ignore[arg-type]
    elif row.status == "unreached_b":
        out = [("not reached in B", _call_text(row.a), "— (its forward failed first)")]  # type: ignore[arg-type]
    else:
        out = list(row.changes)
    if row.inside_a or row.inside_b:
        out.append(("inside", _inside_text(row.inside_a), _inside_text(row.inside_b)))
    if row.time_change is not None:
        sa, sb = row.time_change
        against = f"; the whole forward {machine:.2f}×" if machine else ""
        out.append(("self time", f"{sa:.3f} ms", f"{sb:.3f} ms ({_times(sa, sb)}{against})"))
    if timed and (_ms(row.a) is not None or _ms(row.b) is not None):
        fmt = (lambda v: "—" if v is None else f"{v:.3f} ms")
        out.append(("time", fmt(_ms(row.a)), fmt(_ms(row.b))))
    return out


def _times(a: float, b: float) -> str:
    """How B's time compares with A's: ``4.00× slower``, ``2.50× faster``."""
    if a <= 0 or b <= 0:
        return "slower" if b > a else "faster"
    return f"{b / a:.2f}× slower" if b >= a else f"{a / b:.2f}× faster"


def _inside_text(names: list[str], limit: int = 4) -> str:
    if not names:
        return "—"
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, … ({len(names)} calls)"


def _signed(n: int) -> str:
    return f"+{n:,}" if n > 0 else f"−{-n:,}" if n < 0 else "±0"


def _counted(d: TraceDiff) -> str:
    """``3 changed, 2 only in A, 0 only in B`` (and ``, own time changed in 1`` where a layer's own time
    changed beyond noise, ``_mark_time_changes``): calls, not rows (a one-sided row stands for the calls folded
    into it too, and the calls folded into a row whose class changed are calls only that side has)."""
    shown = d.shown
    counts = {s: sum(1 if s == "changed" else r.calls for r in shown if r.status == s) for s in _STATUS_WORD}
    counts["only_a"] += sum(len(r.folded_a) for r in shown if r.status == "changed")
    counts["only_b"] += sum(len(r.folded_b) for r in shown if r.status == "changed")
    timed = f", own time changed in {len(d.time_changed)}" if d.time_changed else ""
    return f"{counts['changed']} changed, {counts['only_a']} only in A, {counts['only_b']} only in B{timed}"


def _summary_lines(d: TraceDiff) -> list[str]:
    shown = d.shown
    out = [f"{_counted(d)} (of {len(d.a.calls)} calls in A and {len(d.b.calls)} in B)."]
    for status, side in _UNREACHED.items():
        n = sum(r.calls for r in shown if r.status == status)
        if n:
            out.append(f"{n} call{'s' if n != 1 else ''} not reached in {side}, whose forward failed before "
                       "calling {}: the module is there, not added or removed.".format("it" if n == 1 else "them"))
    pa, pb = d.a.model.params, d.b.model.params
    out.append(f"parameters: {pa:,} → {pb:,} ({_signed(pb - pa)})" if pa != pb else f"parameters: {pa:,} in both")
    out_a, out_b = _cells(d.a.outputs, d.b.outputs, d.homes)
    if out_a != out_b:
        out.append(f"model output: {out_a} → {out_b}")
    if d.timed:
        ta, tb = _ms(d.a.calls[0]), _ms(d.b.calls[0])
        out.append(f"time (whole forward): {ta:.3f} ms → {tb:.3f} ms ({tb / ta:.2f}×)" if ta else "")
        if d.machine_factor:
            out.append(f"the whole forward is {_times(1.0, d.machine_factor)}, most of its layers alike: a change of "
                       "the machine (its load, its threads, another machine), not of a layer; each layer's own time "
                       "is compared as its share of the forward")
        out.append(_time_line(d))
    carried = d.carried
    if carried:
        names = ", ".join(f"{r.label} {r.cls}" for r in carried[:6]) + (", …" if len(carried) > 6 else "")
        out.append(f"shapes carried through {len(carried)} unchanged layer{'s' if len(carried) != 1 else ''} "
                   f"(their input changed): {names}")
    containing = d.containing
    if containing:
        names = ", ".join(f"{r.label} {r.cls}" for r in containing[:6]) + (", …" if len(containing) > 6 else "")
        out.append(f"outputs changed only through the changed layers inside {len(containing)} "
                   f"container{'s' if len(containing) != 1 else ''}: {names}")
    out += _sharing_lines(d.rows)
    return [line for line in out if line]


def _time_line(d: TraceDiff) -> str:
    """The summary's line on the layers whose own time changed beyond noise (both sides profiled)."""
    changed = d.time_changed
    rule = (f"at least {TIME_RATIO:g}× and {TIME_SHARE:.0%} of the forward, past both sides' p10-p90 spread")
    factor = d.machine_factor or 1.0
    what = "own time's share of the forward" if d.machine_factor else "own time"
    if not changed:
        return f"{what}: no layer's changed beyond noise ({rule})"
    slower = sum(1 for r in changed if r.time_change[1] > factor * r.time_change[0])  # type: ignore[index]
    n = len(changed)
    than = " than the forward" if d.machine_factor else ""
    return (f"{what} changed beyond noise in {n} layer{'s' if n != 1 else ''} ({slower} slower{than}, "
            f"{n - slower} faster; {rule})")


def _nothing_in_common(d: TraceDiff) -> str:
    shared = d.shared
    what = ("nothing in common: no module below the model has the same name and class in both" if not shared else
            "almost nothing in common: only " + ", ".join(f"{r.label} ({r.cls})" for r in shared[:3])
            + (" and others" if len(shared) > 3 else "") + " has the same name and class in both")
    def calls(t: Trace) -> str:
        return f"{len(t.calls)} call{'' if len(t.calls) == 1 else 's'}"

    return (f"A ({d.a.model.cls}, {calls(d.a)}) and B ({d.b.model.cls}, {calls(d.b)}) have "
            f"{what}, so a call-by-call diff would list nearly every call twice. Compare their tables instead "
            "(shapetrace trace A; shapetrace trace B).")


def _not_comparable(d: TraceDiff) -> str:
    """The sentence for two traces without a call-by-call diff: a side that recorded no call says so; else
    they have (almost) nothing in common."""
    empty = [name for name, t in (("A", d.a), ("B", d.b)) if not t.calls]
    if len(empty) == 1:
        other, t = ("B", d.b) if empty == ["A"] else ("A", d.a)
        return (f"{empty[0]} recorded no calls (no module of it ran while it was traced), so there is nothing to "
                f"compare call by call; {other} ({t.model.cls}) recorded {len(t.calls)} call"
                f"{'s' if len(t.calls) != 1 else ''}. Trace {empty[0]} again with its forward run inside the "
                "tracer.")
    return _nothing_in_common(d)


def _no_differences(d: TraceDiff) -> str:
    """The sentence for a diff with no changed, added or removed call."""
    homes = d.homes
    out_a, out_b = _cells(d.a.outputs, d.b.outputs, homes)
    if d.carried or out_a != out_b:
        ra, rb = (d.a.calls[0], d.b.calls[0]) if d.a.calls and d.b.calls else (None, None)
        if ra and rb and _signature([ra.inputs, ra.kwargs], homes[0]) == _signature([rb.inputs, rb.kwargs], homes[1]):  # never blame
            # the input where it is the same (a change the diff cannot place)
            return ("No layer changed: the same calls, classes and parameters on the same input; the shapes below "
                    "differ through code the diff does not see (a forward's own operations).")
        return ("No layer changed: the same calls, classes and parameters; the shapes below differ only because "
                "the input did.")
    return "No differences: the same calls, classes, parameters and shapes."


def render_trace_diff_text(d: TraceDiff, width: int | None = 100) -> str:
    """The diff as an aligned table fitted to ``width`` columns (``None``: no limit): long cells wrapped, and
    the lines above and below it (the sides, the summary) wrapped to the same width."""
    head = _fitted([literal(line) for line in (f"A = {d.a_name}", f"B = {d.b_name}", _side("A", d.a),
                                               _side("B", d.b))], width)
    head.append("")
    if not d.common:
        return "\n".join([*head, *_fitted([literal(s) for s in [_not_comparable(d), *_summary_lines(d)[1:2]]],
                                           width)]) + "\n"
    table = [(r.label, *line) for r in d.shown for line in _row_lines(r, d.timed, d.machine_factor)]
    if not table:
        return "\n".join([*head, *_fitted([literal(s) for s in [_no_differences(d), *_summary_lines(d)[1:]]],
                                           width)]) + "\n"
    cells, last = [], None
    for r in table:
        cells.append(tuple(literal(c) for c in (r[0] if r[0] != last else "", *r[1:])))
        last = r[0]
    header, *body = _aligned([("layer", "what", "A", "B"), *cells], width, keep=(0,))
    lines = [line for row in body for line in row]
    rule = _rule([*header, *lines], width)
    out = [*head, rule, *header, rule, *lines, rule, *_fitted([literal(s) for s in _summary_lines(d)], width)]
    return "\n".join(out) + "\n"


def render_trace_diff_markdown(d: TraceDiff) -> str:
    out = [f"- **A** = {md_code(d.a_name)}: {md_cell(_side('A', d.a)[3:])}",
           f"- **B** = {md_code(d.b_name)}: {md_cell(_side('B', d.b)[3:])}", ""]
    if not d.common:
        return "\n".join([*out, md_cell(_not_comparable(d))]) + "\n"
    rows = [(r.label, *line) for r in d.shown for line in _row_lines(r, d.timed, d.machine_factor)]
    if rows:
        out += ["| layer | what | A | B |", "|---|---|---|---|"]
        out += ["| " + " | ".join(md_cell(c) for c in r) + " |" for r in rows]
    else:
        out.append(md_cell(_no_differences(d)))
    out += ["", *(f"{md_cell(line)}  " for line in _summary_lines(d))]
    return "\n".join(out).rstrip() + "\n"


_HTML_CSS = """
.st-diff{font:13px/1.4 system-ui,sans-serif;border-collapse:collapse}
.st-diff th,.st-diff td{padding:3px 10px;border-bottom:1px solid #e3e7ee;text-align:left;vertical-align:top}
.st-diff td.shape{font-family:ui-monospace,Menlo,Consolas,monospace}
.st-diff tr.changed td.what{color:#9a5b00}.st-diff tr.only_a td.what{color:#a61b1b}
.st-diff tr.only_b td.what{color:#1b7a2e}
"""


def render_trace_diff_html(d: TraceDiff) -> str:
    def esc(text: str) -> str:
        return html.escape(literal(text))

    parts = [f"<style>{_HTML_CSS}</style>",
             (f"<p><b>A</b> = <code>{esc(d.a_name)}</code>: {esc(_side('A', d.a)[3:])}"
              f"<br><b>B</b> = <code>{esc(d.b_name)}</code>: {esc(_side('B', d.b)[3:])}</p>")]
    if not d.common:
        return "\n".join([*parts, f"<p>{esc(_not_comparable(d))}</p>"]) + "\n"
    parts.append('<table class="st-diff"><tr><th>layer</th><th>what</th><th>A</th><th>B</th></tr>')
    for r in d.shown:
        for i, (what, va, vb) in enumerate(_row_lines(r, d.timed, d.machine_factor)):
            label = esc(r.label) if i == 0 else ""
            parts.append(f'<tr class="{r.status}"><td>{label}</td><td class="what">{esc(what)}</td>'
                         f'<td class="shape">{esc(va)}</td><td class="shape">{esc(vb)}</td></tr>')
    parts.append("</table>")
    parts += [f"<p>{esc(line)}</p>" for line in _summary_lines(d)]
    return "\n".join(parts) + "\n"


def trace_diff_to_dict(d: TraceDiff) -> dict:
    def side(t: Trace, name: str) -> dict:
        return {"name": name, "cls": t.model.cls, "params": t.model.params, "calls": len(t.calls),
                "failed": t.failed}

    rows = []
    for r in d.rows:
        if r.status in ("same", "folded") and r.time_change is None:
            continue
        rows.append({"layer": r.label, "status": r.status, "cls": r.cls,
                     "a": r.a.id if r.a else None, "b": r.b.id if r.b else None,
                     "changes": [{"what": w, "a": va, "b": vb} for w, va, vb in _row_lines(r, d.timed, d.machine_factor)]})
        if r.time_change is not None:
            rows[-1]["self_ms"] = {"a": r.time_change[0], "b": r.time_change[1]}
    return {"format": "shapetrace.diff/1", "a": side(d.a, d.a_name), "b": side(d.b, d.b_name),
            "common": d.common, "params_delta": d.b.model.params - d.a.model.params, "rows": rows,
            "summary": _summary_lines(d)}


def render_trace_diff(d: TraceDiff, fmt: str = "text", width: int | None = 100) -> str:
    """The diff as ``text`` (fitted to ``width`` columns; ``None``: no limit), ``md``, ``html`` or ``json``."""
    if fmt == "text":
        return render_trace_diff_text(d, width)
    if fmt == "md":
        return render_trace_diff_markdown(d)
    if fmt == "html":
        return render_trace_diff_html(d)
    if fmt == "json":
        return json.dumps(trace_diff_to_dict(d), indent=1, sort_keys=True) + "\n"
    raise ValueError(f"a diff renders as text, md, html or json (or a diagram of B), not {fmt!r}")


def diagram_options(d: TraceDiff) -> dict:
    """Options for the diagram renderer's ``diff`` overlay on B: changed and added modules and calls (the
    calls counted in the legend, as in the text), removed ones listed; B's calls that A's failed forward did
    not reach (``unreached``, drawn muted) and A's that B's did not (``unreached_in_b``, listed), counted as
    the text counts them, given only where there are some (a diff of two whole forwards has none). A container
    that only contains changes is none of these."""
    changed = [r.b for r in d.shown if r.status == "changed" and r.b is not None]
    added_rows = [r for r in d.shown if r.status == "only_b" and r.b is not None]
    unreached_rows = [r for r in d.shown if r.status == "unreached_a" and r.b is not None]
    removed = [f"{r.label} {r.cls}" for r in d.shown if r.status == "only_a"]
    # the calls inside a layer whose class changed, folded into its row: added and removed, as the text counts
    changed_rows = [r for r in d.shown if r.status == "changed"]
    removed += [f"{d.a.calls[i].label} {d.a.calls[i].cls}" for r in changed_rows for i in r.folded_a]
    unreached_in_b = [r for r in d.shown if r.status == "unreached_b"]
    # a one-sided row's calls: its own and those folded into it, as the text counts them
    def calls(rows: list[Row]) -> list[int]:
        return sorted(i for r in rows for i in (r.b.id, *r.folded_b))  # type: ignore[union-attr]

    options: dict[str, Any] = {"changed": sorted({c.module for c in changed}),
                               "added": sorted({r.b.module for r in added_rows}),  # type: ignore[union-attr]
                               "removed": removed,
                               "changed_calls": sorted(c.id for c in changed),
                               "added_calls": sorted([*calls(added_rows),
                                                      *(i for r in changed_rows for i in r.folded_b)])}
    if unreached_rows:
        options |= {"unreached": sorted({r.b.module for r in unreached_rows}),  # type: ignore[union-attr]
                    "unreached_calls": calls(unreached_rows)}
    if unreached_in_b:
        options["unreached_in_b"] = [f"{r.label} {r.cls}" for r in unreached_in_b]
        options["unreached_in_b_calls"] = sum(r.calls for r in unreached_in_b)
    return {"diff": options}
