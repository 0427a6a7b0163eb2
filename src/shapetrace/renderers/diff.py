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
from dataclasses import dataclass, field
from typing import Any

from ..tracer.records import Call, Comparison, TensorMeta, Trace, iter_tensors
from .markdown import md_cell, md_code
from .units import display_width, literal, pad

COLUMNS = ("layer", "what", "shapetrace", "{tool}", "why")


def _rows(comparison: Comparison) -> list[tuple[str, ...]]:
    return [(d.layer, d.what, d.shapetrace, d.other, d.why) for d in comparison.differences]


def _summary(c: Comparison) -> str:
    n = len(c.differences)
    return (f"shapetrace saw {c.our_calls} call{'s' if c.our_calls != 1 else ''}, {c.tool} {c.their_calls}; "
            f"{c.matched} matched; "
            f"{n} difference{'s' if n != 1 else ''}.")


def _aligned(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows of cells (already ``literal``) as lines, each column padded to its widest cell's display width."""
    widths = [max(display_width(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(pad(c, w) for c, w in zip(r, widths)).rstrip() for r in rows]


def render_text(comparison: Comparison, width: int = 100) -> str:
    """An aligned table; the ``why`` column wraps at ``width``."""
    head = tuple(h.format(tool=comparison.tool) for h in COLUMNS)
    rows = [tuple(literal(c) for c in r) for r in _rows(comparison)]
    if not rows:
        return _summary(comparison) + "\n"
    lines = _aligned([head, *rows])
    rule = "─" * min(width, max(display_width(line) for line in lines))
    return "\n".join([rule, lines[0], rule, *lines[1:], rule, _summary(comparison)]) + "\n"


def render_markdown(comparison: Comparison) -> str:
    head = [h.format(tool=comparison.tool) for h in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(md_cell(c) for c in r) + " |" for r in _rows(comparison)]
    return "\n".join([*lines, "", _summary(comparison)]) + "\n"


def render(comparison: Comparison, fmt: str = "text") -> str:
    if fmt == "md":
        return render_markdown(comparison)
    if fmt == "text":
        return render_text(comparison)
    raise ValueError(f"diff renders as text or md, not {fmt!r}")


# ==== shapetrace diff A B: two traces, aligned by module name and call order ====================================
def _metas(value: Any) -> list[TensorMeta]:
    return [m for _, m in iter_tensors(value)]


def _shapes(value: Any, start: int = 0) -> str:
    """Up to four tensors' shapes from the ``start``-th (a dtype beside those whose dtype differs from the
    first's), for a cell."""
    metas = _metas(value)
    if not metas:
        return "—"
    shown = ", ".join("(" + ",".join(map(str, m.shape)) + ")" + ("" if m.dtype == metas[0].dtype else f" {m.dtype}")
                      for m in metas[start:start + 4])
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


def _ms(call: Call | None) -> float | None:
    return call.timing.get("total_ms") if call is not None and call.timing else None


@dataclass
class Row:
    """One aligned call (or a call on one side only) and what differs about it.

    ``status``: ``"changed"`` (class, own parameters, or output for the same input), ``"carried"`` (only its
    shapes differ, because its input does), ``"only_a"``, ``"only_b"`` or ``"same"``. ``changes`` holds
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

    @property
    def shown(self) -> list[Row]:
        return [r for r in self.rows if r.status in ("changed", "only_a", "only_b")]

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
        smaller = min(len(self.a.calls), len(self.b.calls)) - 1
        if smaller <= 0:  # a model without submodules: the root call is all there is
            return bool(self.a.calls and self.b.calls) and self.a.calls[0].cls == self.b.calls[0].cls
        return bool(self.shared) and len(self.shared) * 10 >= smaller

    @property
    def timed(self) -> bool:
        return _ms(next(iter(self.a.calls), None)) is not None and _ms(next(iter(self.b.calls), None)) is not None


def _key(call: Call) -> tuple[str, int]:
    return (call.module, call.call_index)


def _compare(row: Row) -> None:
    a, b = row.a, row.b
    assert a is not None and b is not None
    changes = row.changes
    if a.cls != b.cls:
        changes.append(("class", a.cls, b.cls))
    if a.own_params != b.own_params:
        changes.append(("params", f"{a.own_params:,}", f"{b.own_params:,}"))
    elif a.own_params and a.trainable_params != b.trainable_params and a.cls == b.cls:
        changes.append(("trainable", f"{a.trainable_params:,}", f"{b.trainable_params:,}"))
    in_a, in_b = _side_by_side([a.inputs, a.kwargs], [b.inputs, b.kwargs])
    out_a, out_b = _side_by_side(a.outputs, b.outputs)
    if (a.error is None) != (b.error is None):
        changes.append(("error", a.error or "—", b.error or "—"))
    own = bool(changes) or (out_a != out_b and in_a == in_b)
    if out_a != out_b:
        changes.append(("output", out_a, out_b))
    if in_a != in_b and (own or out_a == out_b):
        changes.append(("input", in_a, in_b))
    row.status = "changed" if own else ("carried" if (out_a != out_b or in_a != in_b) else "same")


def diff_traces(a: Trace, b: Trace, a_name: str = "A", b_name: str = "B") -> TraceDiff:
    """Align the calls of ``a`` and ``b`` by (module name, call index), in call order, and compare each pair."""
    akeys, bkeys = [_key(c) for c in a.calls], [_key(c) for c in b.calls]
    a_by, b_by = dict(zip(akeys, a.calls)), dict(zip(bkeys, b.calls))
    common = set(a_by) & set(b_by)
    rows: list[Row] = []
    done: set[tuple[str, int]] = set()

    def emit(key: tuple[str, int], side: str) -> None:
        if key in done:
            return
        done.add(key)
        ca, cb = a_by.get(key), b_by.get(key)
        if key in common:
            row = Row(cb.label if cb else key[0], ca, cb)  # type: ignore[union-attr]
            _compare(row)
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
    _fold_insides(rows)
    return TraceDiff(a_name, b_name, a, b, rows)


def _fold_insides(rows: list[Row]) -> None:
    """One-sided calls inside a one-sided call, or inside a call whose class changed, fold into that row."""
    owner: dict[tuple[str, int], Row] = {}  # (side, call id) -> the row that shows it
    for row in rows:
        for side, call in (("a", row.a), ("b", row.b)):
            if call is not None:
                owner[(side, call.id)] = row  # type: ignore[index]
    for row in rows:
        side, call = ("a", row.a) if row.status == "only_a" else ("b", row.b) if row.status == "only_b" else (None, None)
        if call is None or call.parent is None:
            continue
        parent_row = owner.get((side, call.parent))  # type: ignore[arg-type]
        if parent_row is None:
            continue
        top = parent_row
        if top.status in ("only_a", "only_b") or (top.a and top.b and top.a.cls != top.b.cls):
            top_module = (top.a if side == "a" else top.b).module  # type: ignore[union-attr]
            label = call.label[len(top_module) + 1:] if top_module and call.label.startswith(top_module + ".") \
                else call.label
            (top.inside_a if side == "a" else top.inside_b).append(f"{label} {call.cls}")
            row.status = "folded"
            owner[(side, call.id)] = top  # type: ignore[index]


# ---- rendering a TraceDiff ---------------------------------------------------------------------------------------
_STATUS_WORD = {"changed": "changed", "only_a": "only in A", "only_b": "only in B"}


def _side(name: str, t: Trace) -> str:
    calls = len(t.calls)
    failed = " (its forward failed)" if t.failed else ""
    return f"{name}: {t.model.cls}, {t.model.params:,} params, {calls} call{'s' if calls != 1 else ''}{failed}"


def _call_text(call: Call) -> str:
    return f"{call.cls} → {_shapes(call.outputs)}" + (f", {call.params:,} params" if call.params else "")


def _row_lines(row: Row, timed: bool) -> list[tuple[str, str, str]]:
    """``(what, A, B)`` lines for one shown row."""
    if row.status == "only_a":
        out = [("only in A", _call_text(row.a), "—")]  # type: ignore[arg-type]
    elif row.status == "only_b":
        out = [("only in B", "—", _call_text(row.b))]  # type: ignore[arg-type]
    else:
        out = list(row.changes)
    if row.inside_a or row.inside_b:
        out.append(("inside", _inside_text(row.inside_a), _inside_text(row.inside_b)))
    if timed and (_ms(row.a) is not None or _ms(row.b) is not None):
        fmt = (lambda v: "—" if v is None else f"{v:.3f} ms")
        out.append(("time", fmt(_ms(row.a)), fmt(_ms(row.b))))
    return out


def _inside_text(names: list[str], limit: int = 4) -> str:
    if not names:
        return "—"
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, … ({len(names)} calls)"


def _signed(n: int) -> str:
    return f"+{n:,}" if n > 0 else f"−{-n:,}" if n < 0 else "±0"


def _summary_lines(d: TraceDiff) -> list[str]:
    shown = d.shown
    counts = {s: sum(1 for r in shown if r.status == s) for s in _STATUS_WORD}
    out = [(f"{counts['changed']} changed, {counts['only_a']} only in A, {counts['only_b']} only in B "
            f"(of {len(d.a.calls)} calls in A and {len(d.b.calls)} in B).")]
    pa, pb = d.a.model.params, d.b.model.params
    out.append(f"parameters: {pa:,} → {pb:,} ({_signed(pb - pa)})" if pa != pb else f"parameters: {pa:,} in both")
    out_a, out_b = _side_by_side(d.a.outputs, d.b.outputs)
    if out_a != out_b:
        out.append(f"model output: {out_a} → {out_b}")
    if d.timed:
        ta, tb = _ms(d.a.calls[0]), _ms(d.b.calls[0])
        out.append(f"time (whole forward): {ta:.3f} ms → {tb:.3f} ms ({tb / ta:.2f}×)" if ta else "")
    carried = d.carried
    if carried:
        names = ", ".join(f"{r.label} {r.cls}" for r in carried[:6]) + (", …" if len(carried) > 6 else "")
        out.append(f"shapes carried through {len(carried)} unchanged layer{'s' if len(carried) != 1 else ''} "
                   f"(their input changed): {names}")
    return [line for line in out if line]


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


def _no_differences(d: TraceDiff) -> str:
    """The sentence for a diff with no changed, added or removed call."""
    out_a, out_b = _side_by_side(d.a.outputs, d.b.outputs)
    if d.carried or out_a != out_b:
        return ("No layer changed: the same calls, classes and parameters; the shapes below differ only because "
                "the input did.")
    return "No differences: the same calls, classes, parameters and shapes."


def render_trace_diff_text(d: TraceDiff, width: int = 100) -> str:
    head = [literal(line) for line in (f"A = {d.a_name}", f"B = {d.b_name}", _side("A", d.a), _side("B", d.b))]
    head.append("")
    if not d.common:
        return "\n".join([*head, *map(literal, [_nothing_in_common(d), *_summary_lines(d)[1:2]])]) + "\n"
    table = [(r.label, *line) for r in d.shown for line in _row_lines(r, d.timed)]
    if not table:
        return "\n".join([*head, *map(literal, [_no_differences(d), *_summary_lines(d)[1:]])]) + "\n"
    cells, last = [], None
    for r in table:
        cells.append(tuple(literal(c) for c in (r[0] if r[0] != last else "", *r[1:])))
        last = r[0]
    header, *lines = _aligned([("layer", "what", "A", "B"), *cells])
    rule = "─" * min(width, max(display_width(line) for line in [header, *lines]))
    out = [*head, rule, header, rule, *lines, rule, *map(literal, _summary_lines(d))]
    return "\n".join(out) + "\n"


def render_trace_diff_markdown(d: TraceDiff) -> str:
    out = [f"- **A** = {md_code(d.a_name)}: {md_cell(_side('A', d.a)[3:])}",
           f"- **B** = {md_code(d.b_name)}: {md_cell(_side('B', d.b)[3:])}", ""]
    if not d.common:
        return "\n".join([*out, md_cell(_nothing_in_common(d))]) + "\n"
    rows = [(r.label, *line) for r in d.shown for line in _row_lines(r, d.timed)]
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
        return "\n".join([*parts, f"<p>{esc(_nothing_in_common(d))}</p>"]) + "\n"
    parts.append('<table class="st-diff"><tr><th>layer</th><th>what</th><th>A</th><th>B</th></tr>')
    for r in d.shown:
        for i, (what, va, vb) in enumerate(_row_lines(r, d.timed)):
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
        if r.status in ("same", "folded"):
            continue
        rows.append({"layer": r.label, "status": r.status, "cls": r.cls,
                     "a": r.a.id if r.a else None, "b": r.b.id if r.b else None,
                     "changes": [{"what": w, "a": va, "b": vb} for w, va, vb in _row_lines(r, d.timed)]})
    return {"format": "shapetrace.diff/1", "a": side(d.a, d.a_name), "b": side(d.b, d.b_name),
            "common": d.common, "params_delta": d.b.model.params - d.a.model.params, "rows": rows,
            "summary": _summary_lines(d)}


def render_trace_diff(d: TraceDiff, fmt: str = "text") -> str:
    if fmt == "text":
        return render_trace_diff_text(d)
    if fmt == "md":
        return render_trace_diff_markdown(d)
    if fmt == "html":
        return render_trace_diff_html(d)
    if fmt == "json":
        return json.dumps(trace_diff_to_dict(d), indent=1, sort_keys=True) + "\n"
    raise ValueError(f"a diff renders as text, md, html or json (or a diagram of B), not {fmt!r}")


def diagram_options(d: TraceDiff) -> dict:
    """Options for the diagram renderer's ``diff`` overlay on B: changed and added calls, removed ones listed."""
    changed = sorted({r.b.module for r in d.shown if r.status == "changed" and r.b is not None})
    added = sorted({r.b.module for r in d.shown if r.status == "only_b" and r.b is not None})
    removed = [f"{r.label} {r.cls}" for r in d.shown if r.status == "only_a"]
    return {"diff": {"changed": changed, "added": added, "removed": removed}}
