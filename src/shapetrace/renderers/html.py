"""HTML shape tables: a scoped fragment for notebooks and docs pages, and a standalone page for ``--format html``.

``render_html(trace, ...)`` returns one ``<div class="shapetrace-html">`` holding its own ``<style>`` (every
selector starts with ``.shapetrace-html``, weighted to outweigh a notebook host's own rules for tables, code and
lists (JupyterLab's), so neither the host page nor the fragment restyle each other) and
the table: rows indented by depth, shapes in monospace, the failing call's row marked with its error, then
the totals and the notes. Colours follow the surrounding text (``currentColor`` and translucent fills), so the
same fragment reads on a light or a dark notebook or docs theme.

``render_page(trace, ...)`` wraps it in a standalone HTML5 document (doctype, charset, viewport, embedded CSS,
light and dark colours by ``prefers-color-scheme``) and, with ``with_diagram=True``, puts the Graphviz diagram
above the table, scaled to the page width.

Both are pure functions of the trace and the options (same trace, same bytes) and import the records only;
``with_diagram`` asks ``renderers.diagram`` (Graphviz) for the SVG.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from typing import Any

from ..tracer.records import Trace
from .diagram import render as render_diagram
from .finite import ORIGIN_MARK, PASSED_MARK, row_marks
from .rows import elide
from .rows import forward_ms as _forward_ms
from .rows import table_rows as _rows
from .table import (
    FAIL_MARK,
    STALL_MARK,
    _extra_columns,
    _headers,
    _notes,
    _plain_cells,
    _summary_lines,
    distinct_cuts,
    drop_empty_call,
    elided_note,
    gap_text,
    row_mark,
    stall_marked,
)
from .units import ellipsize, home_device, literal, markup

__all__ = ["CSS", "FAIL_COLOR", "NAME_WIDTH", "PAGE_CSS", "render_html", "render_page", "shape_markup",
           "strip_svg_prolog"]

SCOPE = "shapetrace-html"

# Every selector is scoped to the fragment's own class, written twice (``.shapetrace-html.shapetrace-html``) so
# each rule outweighs a notebook host's rules for tables, code and lists whatever order the style sheets come in
# (JupyterLab's ``:not(.jp-RenderedMarkdown).jp-RenderedHTMLCommon td{text-align:right}``, its striped
# ``tbody tr:nth-child(odd)`` rows, its grey ``:not(pre) > code`` boxes, its ``dt{float:left;width:20%}``), and
# every property such a host sets is set here. Colours are the host's text colour with translucent fills, so one
# stylesheet serves light and dark themes; the failure's red is mixed with the text colour (darker on a light
# theme, lighter on a dark one: 4.5:1 or more on either, on the failed row's red fill too, down to VS Code's
# #cccccc on #1e1e1e), plain #dc2626 where the browser has no color-mix(). The lines view uses the same red.
FAIL_COLOR = "color: #dc2626; color: color-mix(in srgb, #dc2626 55%, currentColor);"
_S = f".{SCOPE}.{SCOPE}"
_T = f"{_S} table.shapetrace"
CSS = f"""\
.{SCOPE} {{ max-width: 100%; overflow-x: auto; margin: 0.5em 0 1em; font-size: 0.9em; line-height: 1.35; }}
{_T} {{ border-collapse: collapse; border-spacing: 0; table-layout: auto; width: auto; margin: 0; border: none;
  color: inherit; font-size: inherit; }}
{_T} thead {{ border: none; vertical-align: bottom; }}
{_T} tr, {_T} tbody tr, {_T} tbody tr:nth-child(n) {{ background: transparent; border: none; padding: 0;
  text-align: left; vertical-align: baseline; line-height: inherit; white-space: normal; max-width: none; }}
{_T} th, {_T} td {{
  padding: 0.2em 0.7em; text-align: left; vertical-align: baseline; border: none; line-height: inherit;
  white-space: normal; max-width: none; border-bottom: 1px solid rgba(127, 127, 127, 0.25);
  background: transparent; color: inherit; }}
{_T} thead th {{ border-bottom: 2px solid rgba(127, 127, 127, 0.6); font-weight: 600; white-space: nowrap; }}
{_T} tbody tr:hover {{ background: rgba(127, 127, 127, 0.08); }}
{_T} th.num, {_T} td.num {{ text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }}
{_T} td.layer {{ white-space: nowrap; }}
{_T} td.cls {{ opacity: 0.85; white-space: nowrap; }}
{_S} code, {_T} td.shape {{ font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono",
  monospace; font-size: 0.92em; line-height: inherit; color: inherit; }}
{_S} code {{ background: none; border: none; padding: 0; white-space: inherit; }}
{_T} td.shape {{ white-space: normal; overflow-wrap: normal; word-break: normal; }}
{_T} td.shape .t {{ white-space: pre; }}
{_T} td.shape.error {{ white-space: pre-wrap; overflow-wrap: anywhere; min-width: 20ch; }}
{_T} tr.repeat td.layer code {{ opacity: 0.75; }}
{_T} tr.gap td {{ text-align: center; font-style: italic; opacity: 0.7; }}
{_T} tbody tr.failed {{ background: rgba(220, 38, 38, 0.13); }}
{_T} tr.failed td:first-child {{ box-shadow: inset 3px 0 0 #dc2626; }}
{_T} tr.failed td.layer code {{ font-weight: 700; }}
{_T} tbody tr.raised {{ background: rgba(220, 38, 38, 0.05); }}
{_T} tr.failed td.error {{ {FAIL_COLOR} }}
{_T} tr.caught td.shape {{ font-style: italic; }}
{_S} dl.totals {{ display: grid; grid-template-columns: max-content auto; gap: 0.1em 1em; margin: 0.8em 0 0;
  padding: 0; width: auto; overflow: visible; }}
{_S} dl.totals dt, {_S} dl.totals dd {{ display: block; float: none; width: auto; padding: 0; margin: 0; }}
{_S} dl.totals dt {{ font-weight: 600; }}
{_S} dl.totals dd {{ font-variant-numeric: tabular-nums; }}
{_S} ul.notes {{ margin: 0.6em 0 0; padding: 0 0 0 1.2em; list-style: disc; opacity: 0.9; }}
{_S} ul.notes li.failure {{ {FAIL_COLOR} }}
"""

# Added to ``CSS`` only for a table with rows marked by ``check_finite`` (any other table's bytes unchanged): the
# row where the first NaN or Inf was made has an amber fill and bar, later calls that held some a faint one.
# A table with a stall mark: every ms cell keeps the mark's room, marked or not, so the decimals line up.
STALL_CSS = f"""\
{_T} td.num span.stall {{ display: inline-block; width: 1.1ch; margin-left: 0.3ch; text-align: left; }}
"""
FINITE_CSS = f"""\
{_T} tbody tr.nonfinite-origin {{ background: rgba(217, 119, 6, 0.16); }}
{_T} tr.nonfinite-origin td:first-child {{ box-shadow: inset 3px 0 0 #d97706; }}
{_T} tr.nonfinite-origin td.layer code {{ font-weight: 700; }}
{_T} tbody tr.nonfinite {{ background: rgba(217, 119, 6, 0.05); }}
{_S} ul.notes li.nonfinite-origin {{ font-weight: 600; }}
"""

PAGE_CSS = """\
:root { color-scheme: light dark; --bg: #ffffff; --fg: #1f2328; --muted: #59636e; }
@media (prefers-color-scheme: dark) { :root { --bg: #0d1117; --fg: #e6edf3; --muted: #9198a1; } }
* { box-sizing: border-box; }
body { margin: 0 auto; padding: 1.5em 2em 3em; max-width: 1400px; background: var(--bg); color: var(--fg);
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
h1 { font-size: 1.4em; margin: 0 0 0.2em; }
p.subtitle { color: var(--muted); margin: 0 0 1.2em; }
figure.diagram { margin: 0 0 1.5em; text-align: center; }
figure.diagram svg { max-width: 100%; height: auto; background: #ffffff; border-radius: 6px; }
figure.diagram figcaption { color: var(--muted); font-size: 0.9em; }
"""

def _text(text: str) -> str:
    """A name escaped for HTML, control and bidirectional-override characters shown as escapes (``literal``, as
    in the text table): a name with U+202E must not display reversed."""
    return html.escape(literal(text))


# The widest name (or class) a cell shows, in display columns: a longer one is cut in the middle as the text
# table cuts names to its column (``table.distinct_cuts``: two names never cut to the same label), the full
# name in the cell's title, so a generated 3,000-character name cannot push the shape columns off the page.
NAME_WIDTH = 60


def _layer_cell(name: str, full_name: str, depth: int) -> str:
    indent = f'<span class="indent" style="padding-left:{depth * 1.2:.1f}em"></span>' if depth else ""
    return f'<td class="layer" title="{_text(full_name)}">{indent}<code>{markup(name)}</code></td>'


# Where a shape cell may break: after the ", " between two values, around the " | " between a module's
# distinct shapes, and before " +side"; never inside a value, so a shape never breaks inside a number.
_SHAPE_BREAK = re.compile(r"(, | \| | (?=\+side ))")


def shape_markup(text: str) -> str:
    """A shape cell's text as HTML: each value in a ``<span class="t">`` that does not wrap, the separators
    between them outside, so a narrow column breaks a list of shapes only between two of them."""
    pieces = _SHAPE_BREAK.split(text)
    out = []
    for i, piece in enumerate(pieces):
        if i % 2:  # a separator
            out.append(html.escape(piece))
        elif piece:
            out.append(f'<span class="t">{html.escape(piece)}</span>')
    return "".join(out)


def _cell(kind: str, text: str) -> str:
    if kind == "shape":
        return f'<td class="shape">{shape_markup(text)}</td>'
    if kind == "error":  # the failing call's error, in place of its outputs: prose, it wraps anywhere
        return f'<td class="shape error">{html.escape(text)}</td>'
    if kind == "num":
        return f'<td class="num">{html.escape(text)}</td>'
    if kind == "ms":  # a table with a stall mark: each ms keeps the mark's room, so the decimals line up
        number = text.rstrip()
        mark = number.endswith(" " + STALL_MARK)
        number = number[:-len(STALL_MARK) - 1] if mark else number
        return (f'<td class="num">{html.escape(number)}<span class="stall">{STALL_MARK if mark else ""}'
                "</span></td>")
    return f'<td class="{kind}">{markup(text)}</td>'


def render_html(trace: Trace, *, depth: int | None = None, view: str = "calls", css: bool = True,
                max_rows: int | None = None) -> str:
    """The shape table as a self-contained HTML fragment (scoped ``<style>`` unless ``css=False``).

    Every text is escaped. Rows are indented by call depth; the failing call's row has ``class="failed"`` (a
    red bar, ``✗`` and its error in place of output shapes); calls the exception left have ``class="raised"``; a
    call that raised what the forward caught and went on from has ``class="caught"`` (an italic ``(caught)``,
    not tinted as a failure; a note gives its message).
    A shape cell wraps only between two values (see ``shape_markup``); the ``call`` column is left out when
    no module was called twice (it would be empty), as in the text table. ``max_rows`` (a notebook's display):
    at most that many rows, plus any failing one (``rows.elide``); a row says how many were left out where they
    were, a note how to see them all.
    """
    esc = html.escape
    every_row = _rows(trace, depth, view)
    shown_rows = elide(every_row, max_rows)
    rows = shown_rows.rows
    extra = _extra_columns(trace, spread=view == "calls")
    fwd = _forward_ms(trace)
    headers = _headers(view, extra)
    kinds = ["layer", "cls", "call", "shape", "shape"] + ["num"] * (len(headers) - 5)
    home = home_device(trace)
    marked = stall_marked(rows)
    if marked:
        kinds[headers.index("ms")] = "ms"
    cells_of = [_plain_cells(r, extra, fwd, home, marked=marked) for r in rows]
    headers, kinds, *cells_of = drop_empty_call(rows, view, headers, kinds, *cells_of)
    out = [f'<div class="{SCOPE}">']
    if css:
        out.append(f"<style>\n{CSS}{FINITE_CSS if any(r.nonfinite for r in rows) else ''}"
                   f"{STALL_CSS if marked else ''}</style>")
    out.append('<table class="shapetrace">')
    out.append("<thead><tr>" + "".join(
        f'<th class="num">{esc(h)}</th>' if kind == "num" else f"<th>{esc(h)}</th>"
        for h, kind in zip(headers, kinds)) + "</tr></thead>")
    out.append("<tbody>")
    names = distinct_cuts([literal(r.short if view == "calls" else r.name) for r in rows], NAME_WIDTH)
    classes_shown = distinct_cuts([cells[1] for cells in cells_of], NAME_WIDTH, ellipsize)
    gap_after = shown_rows.gaps
    gap_row = '<tr class="gap"><td colspan="{}">{}</td></tr>'
    if gap_after.get(-1):
        out.append(gap_row.format(len(headers), esc(gap_text(gap_after[-1]))))
    for i, (r, cells, shown, cls_shown) in enumerate(zip(rows, cells_of, names, classes_shown)):
        name = row_mark(r) + shown
        classes = [c for c, on in (("failed", r.failed), ("raised", r.raised and not r.failed),
                                    ("caught", r.caught and not r.failed),
                                    ("repeat", r.repeat), ("nonfinite-origin", r.nonfinite == ORIGIN_MARK),
                                    ("nonfinite", r.nonfinite == PASSED_MARK)) if on]
        cls = f' class="{" ".join(classes)}"' if classes else ""
        row_kinds = ["error" if r.failed and i == kinds.index("shape") + 1 else kind for i, kind in enumerate(kinds)]
        cls_cell = (f'<td class="cls" title="{_text(r.cls)}">{markup(cls_shown)}</td>' if cls_shown != cells[1]
                    else _cell("cls", cells[1]))
        tds = [_layer_cell(name, r.name, r.depth), cls_cell] + [_cell(kind, text)
                                                                for kind, text in zip(row_kinds[2:], cells[2:])]
        out.append(f"<tr{cls}>" + "".join(tds) + "</tr>")
        if gap_after.get(i):
            out.append(gap_row.format(len(headers), esc(gap_text(gap_after[i]))))
    out.append("</tbody></table>")
    out.append('<dl class="totals">')
    for k, v in _summary_lines(trace, fwd):
        out.append(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>")
    out.append("</dl>")
    notes = _notes(trace, rows, every_row, home=home)
    elided = elided_note(shown_rows)
    if elided:
        notes.append(elided)
    if notes:
        out.append('<ul class="notes">' + "".join(
            f'<li class="failure">{_note_html(n)}</li>' if n.startswith(FAIL_MARK) else
            f'<li class="nonfinite-origin">{_note_html(n)}</li>' if n.startswith(ORIGIN_MARK) else
            f"<li>{_note_html(n)}</li>" for n in notes) + "</ul>")
    out.append("</div>")
    return "\n".join(out) + "\n"


def _note_html(note: str) -> str:
    """A note's text, its own line breaks (an error message's) as ``<br />``: self-closed, as the fragment is
    embedded in Sphinx's EPUB pages, which are XHTML (a bare ``<br>`` there is not well-formed XML)."""
    return "<br />".join(html.escape(part) for part in note.split("\n"))


def strip_svg_prolog(svg: str) -> str:
    """The ``<svg>`` element of an SVG document (no XML declaration, doctype or comments before it)."""
    start = svg.find("<svg")
    return svg[start:] if start >= 0 else svg


def render_page(trace: Trace, *, depth: int | None = None, view: str = "calls", with_diagram: bool = False,
                diagram_options: Mapping[str, Any] | None = None, title: str | None = None) -> str:
    """A standalone HTML5 page: a heading, optionally the diagram (``with_diagram``), then the table.

    ``diagram_options`` go to ``renderers.diagram.render`` (``layout``, ``style``, ``unroll``, ``overlays``,
    ``options``); the diagram folds at the table's ``depth``. Raises ``GraphvizNotFound`` when the diagram is
    asked for and Graphviz is not installed.
    """
    model = trace.model
    heading = title or model.cls
    ran = len([c for c in trace.calls if c.error is None])
    subtitle = f"{model.cls} · {model.params:,} parameters · {ran} completed call{'s' if ran != 1 else ''}"
    if trace.failed:
        subtitle += " · the forward failed"
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{_text(heading)} · shapetrace</title>",
           (f"<style>\n{PAGE_CSS}{CSS}{FINITE_CSS if row_marks(trace, depth) else ''}"
            f"{STALL_CSS if stall_marked(_rows(trace, depth, view)) else ''}</style>"), "</head>",
           "<body>", f"<h1>{_text(heading)}</h1>", f'<p class="subtitle">{_text(subtitle)}</p>']
    if with_diagram:
        svg = render_diagram(trace, format="svg", depth=depth, **dict(diagram_options or {})).decode("utf-8")
        out.append(f'<figure class="diagram">{strip_svg_prolog(svg)}</figure>')
    out.append(render_html(trace, depth=depth, view=view, css=False))
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"
