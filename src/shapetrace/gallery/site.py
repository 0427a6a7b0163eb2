"""The static gallery site: one page per exhibit, in the chapter's order, and an index with thumbnails.

``build_site(out_dir)`` writes, per exhibit ``NAME``: ``NAME.json`` (the trace), ``NAME.txt`` and ``NAME.md``
(shape tables; most exhibits are built and traced on PyTorch's ``meta`` device, which gives the CPU's
shapes without the arithmetic: see ``Exhibit.device``), ``NAME.svg`` (the diagram, rendered with the exhibit's options), ``NAME.flow.svg`` (the
shape-flow chart, for exhibits with at least ``MIN_FLOW_POINTS`` points), ``NAME.*.png`` (the pictures of an
exhibit about images: the photo and what the layer made of it, and ``NAME.thumb.jpg``, a small copy of the last for
the index) and ``NAME.html``, its page: the question of
the chapter it answers, the caption, the pictures, the diagram (inline, its element ids prefixed with the
exhibit's name so no two ids on a page clash, linked to the full-size SVG), the shape flow, the shape table,
the forward line by line where the lines renderer can show it, and the downloads. A whole-gallery build adds the
comparisons (``shapetrace diff`` of two heads), each a page laid out like an exhibit's. Then ``index.html`` (the
exhibits by chapter section and the comparisons, each a card with a thumbnail) and ``index.md``. Every link is relative
and nothing is fetched from the network, so the site opens from disk; the same build writes the same bytes.

Exhibits build in ``jobs`` worker processes (default: the CPU count), each tracing and rendering whole
exhibits; ``progress(name, ok, message)`` is called as each finishes. A failing exhibit does not stop the
build: the others are written, its page and the index say what failed, and ``GalleryBuildFailed`` is raised
at the end. An interrupted build (``KeyboardInterrupt``) stops its workers at once and raises again; one ended
by SIGTERM or SIGHUP stops them too, then ends by that signal (``_signals_stop_workers``), and a worker whose
main process was killed outright ends with it (Linux). Every file is written atomically, so none is left
half-written. The files written are listed in ``MANIFEST``; a rebuild of the whole gallery into the same folder
removes what the last build wrote and this one did not (a renamed exhibit, a chart that no longer applies),
and nothing else. A partial build into a folder that holds a gallery adds to it: what the index
shows of each exhibit is kept in ``ENTRIES``, and the index and the pages' links take in every page there.
A folder without a manifest that holds files the build would overwrite is refused (``check_site_folder``).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import gc
import html
import json
import multiprocessing
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from ..renderers import diagram, lines
from ..renderers.plots import flow_points, shape_flow
from ..renderers.table import render_html, render_markdown, render_text
from ..session import Loaded, OutputProblem, TraceRequest, trace_model, train_mode, write_output
from ..tracer.api import failure_message
from .exhibits import Exhibit, exhibit_names, get_exhibit, section_of
from .exhibits.diffs import DIFF_EXHIBITS, DiffExhibit, diff_exhibit_files
from .meta_shortcuts import MetaShortcuts
from .photo import thumbnail

__all__ = ["ENTRIES", "MANIFEST", "MIN_FLOW_POINTS", "GalleryBuildFailed", "build_site", "check_site_folder",
           "default_jobs", "prefix_ids"]

MANIFEST = ".shapetrace-gallery"
ENTRIES = ".shapetrace-gallery.json"  # what the index shows of each exhibit, for a later partial build
MIN_FLOW_POINTS = 5  # the input and 4 leaf outputs: a chart of fewer shows nothing the table does not
DIFFS_COST = 2  # the comparisons' build time, in the units of ``Exhibit.cost``
PT_TO_PX = 4 / 3  # Graphviz sizes its SVG in points; a CSS pixel is 3/4 of a point

Progress = Callable[[str, bool, str], None]


class GalleryBuildFailed(RuntimeError):
    """Some exhibits failed; ``failures`` maps their names to the reason, ``written`` lists the files written."""

    def __init__(self, failures: dict[str, str], written: list[Path]) -> None:
        self.failures = failures
        self.written = written
        super().__init__("gallery exhibits failed: " + "; ".join(f"{k}: {v}" for k, v in failures.items()))


@dataclass
class PictureInfo:
    """A picture written beside the page: its file, caption and display size in CSS pixels."""

    file: str
    caption: str
    width: int
    height: int
    zoom: bool


@dataclass
class ExhibitResult:
    """What building one exhibit produced (plain data, sent back from a worker process)."""

    name: str
    files: list[str] = field(default_factory=list)
    error: str | None = None
    svg: str | None = None  # the diagram, ready to inline (ids prefixed)
    svg_size: tuple[float, float] | None = None  # its natural size in points
    flow: str | None = None  # the shape-flow chart's file name
    table: str | None = None  # the shape table as an HTML fragment
    lines: str | None = None  # the root forward line by line, as an HTML fragment
    pictures: list[PictureInfo] = field(default_factory=list)
    thumb: PictureInfo | None = None  # a small copy of the last output picture, for the index


def default_jobs() -> int:
    """The number of CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


# ---- one exhibit ------------------------------------------------------------------------------------------
# Graphviz's <svg width="...pt" height="...pt">: a diagram's natural size in points.
_SVG_SIZE = re.compile(r'<svg width="([\d.]+)pt" height="([\d.]+)pt"')


def _svg_size(svg: str) -> tuple[float, float] | None:
    """A Graphviz SVG's natural size in points (its first ``<svg`` element's), or ``None``."""
    m = _SVG_SIZE.search(svg)
    return (float(m.group(1)), float(m.group(2))) if m else None


def _tall(width: float, height: float) -> bool:
    """Whether a picture is tall enough for its card to show its top only (``img.tall``)."""
    return height > 1.5 * width


def _svg_for_page(svg: str, prefix: str) -> tuple[str, tuple[float, float] | None]:
    """The diagram's SVG fit to inline in a page: no XML prolog, doctype or comments; every id (and every
    reference to one) prefixed; sized in CSS pixels with its aspect ratio, so CSS can scale it to the column."""
    start = svg.find("<svg")
    svg = svg[start:] if start >= 0 else svg
    svg = re.sub(r"<!--.*?-->\s*", "", svg, flags=re.DOTALL)
    m = _SVG_SIZE.match(svg)
    size = (float(m.group(1)), float(m.group(2))) if m else None
    if m and size:
        w, h = size
        svg = svg.replace(m.group(0), f'<svg width="{round(w * PT_TO_PX)}" height="{round(h * PT_TO_PX)}" '
                          f'style="aspect-ratio: {w:.2f} / {h:.2f}"', 1)
    return prefix_ids(svg.strip(), prefix), size



def prefix_ids(svg: str, prefix: str) -> str:
    """``svg`` with ``prefix + "-"`` before every ``id`` and every ``#id`` reference (``href``, ``url(#...)``),
    so several inline SVGs on one page never share an id."""
    svg = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}-{m.group(1)}"', svg)
    svg = re.sub(r'((?:xlink:)?href)="#([^"]+)"', lambda m: f'{m.group(1)}="#{prefix}-{m.group(2)}"', svg)
    return re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{prefix}-{m.group(1)})", svg)


def _write(out: Path, result: ExhibitResult, name: str, data: str | bytes) -> None:
    write_output(data, out / name)  # atomically: a failed build leaves no half-written file
    result.files.append(name)


def _failure(what: str, e: BaseException, debug: bool) -> str:
    if debug:
        traceback.print_exc()
    return f"{what} raised {type(e).__name__}: {e}"


def _build_exhibit(name: str, out_dir: str, debug: bool = False, threads: int | None = None) -> ExhibitResult:
    """Trace exhibit ``name`` and write its files into ``out_dir`` (the worker's job; never raises)."""
    if threads:
        torch.set_num_threads(threads)
    out = Path(out_dir)
    ex = get_exhibit(name)
    result = ExhibitResult(name)
    try:
        tr = _trace_exhibit(ex)
    except Exception as e:  # noqa: BLE001  (one broken exhibit must not stop the gallery)
        result.error = _failure("building or tracing", e, debug)
        return result
    depth = ex.options.get("depth")
    _write(out, result, f"{name}.json", tr.to_json())
    _write(out, result, f"{name}.txt", render_text(tr))
    _write(out, result, f"{name}.md", f"# {ex.title}\n\n{ex.question}\n\n{ex.caption}\n\n"
           + render_markdown(tr, depth=depth))
    result.table = render_html(tr, depth=depth)
    if tr.failed:
        result.error = failure_message(tr) or "the forward failed"
        return result
    steps: list[tuple[str, Callable[[], None]]] = [
        ("the diagram", lambda: _diagram(tr, ex, out, result)),
        ("the shape flow", lambda: _flow(tr, ex, out, result)),
        ("the line-by-line view", lambda: _lines(tr, result)),
        ("the pictures", lambda: _pictures(ex, out, result)),
    ]
    for what, step in steps:
        try:
            step()
        except Exception as e:  # noqa: BLE001  (reported per exhibit, the build goes on)
            result.error = _failure(what, e, debug)
            return result
    return result


def _trace_exhibit(ex: Exhibit, shortcuts: bool = True):
    """The exhibit's trace through the session (its train/eval rule, failures, render hints saved in the trace),
    built and run on ``Exhibit.device``: ``meta`` (no arithmetic: the same shapes as on the CPU in a fraction of
    the time; unless ``shortcuts`` is false, the model is built under ``MetaShortcuts``, which skips the weight
    initialisation and answers the builder's own dummy forwards with shape rules) or the CPU."""
    if ex.device != "meta":
        return trace_model(TraceRequest(ex.name, ops=True, lines=True)).trace
    with MetaShortcuts() if shortcuts else contextlib.nullcontext(), torch.device("meta"):
        model = ex.build()
    args, kwargs = ex.inputs()
    request = TraceRequest(ex.name, device="meta", ops=True, lines=True)
    return trace_model(request, Loaded(model, args, kwargs, ex, train_mode(None, ex), ex.name)).trace


def _diagram(tr, ex: Exhibit, out: Path, result: ExhibitResult) -> None:
    if not diagram.dot_available():
        return  # the page says the diagram needs Graphviz
    svg = diagram.render(tr, format="svg", options=dict(ex.options)).decode("utf-8")
    _write(out, result, f"{ex.name}.svg", svg)
    result.svg, result.svg_size = _svg_for_page(svg, ex.name)


def _flow(tr, ex: Exhibit, out: Path, result: ExhibitResult) -> None:
    if len(flow_points(tr)) < MIN_FLOW_POINTS:
        return
    _write(out, result, f"{ex.name}.flow.svg",
           str(shape_flow(tr, title=f"{ex.title}: channels and spatial size along the forward")))
    result.flow = f"{ex.name}.flow.svg"


def _lines(tr, result: ExhibitResult) -> None:
    """The root forward's source with the shapes of each line, where the lines renderer can show it."""
    try:
        view = lines.build_view(tr)
    except lines.LinesError:
        return  # no source for this forward (a built-in container): the page leaves the section out
    result.lines = lines.render(view, "html")


def _pictures(ex: Exhibit, out: Path, result: ExhibitResult) -> None:
    """The exhibit's pictures, and a small copy of its last output picture for the index's card."""
    if ex.pictures is None:
        return
    pictures = ex.pictures(ex.name)
    for pic in pictures:
        _write(out, result, pic.file, pic.png)
        result.pictures.append(PictureInfo(pic.file, pic.caption, pic.width, pic.height, pic.zoom))
    outputs = [pic for pic in pictures if not pic.zoom]
    if outputs:
        jpeg, width, height = thumbnail(outputs[-1].png)
        _write(out, result, f"{ex.name}.thumb.jpg", jpeg)
        result.thumb = PictureInfo(f"{ex.name}.thumb.jpg", "", width, height, zoom=False)


# ---- pages ------------------------------------------------------------------------------------------------
# The table fragment's own style sheet sets the table's font size with a doubled scope (to outweigh a notebook
# host's), so the site's smaller table size is written with more weight than that, after ``.table-wrap``.
_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1f2328; background: #fff;
       line-height: 1.45; }
header.top { background: #f3f5f8; border-bottom: 1px solid #d8dee4; padding: 0.6em 1.2em; font-size: 0.92em; }
header.top a { color: #0b57d0; text-decoration: none; }
header.top { display: flex; flex-wrap: wrap; justify-content: space-between; gap: 0.2em 1.5em; }
header.top .pager { order: 1; }
main { max-width: 1240px; margin: 0 auto; padding: 0.5em 1.2em 3em; }
h1 { font-size: 1.6em; margin: 0.6em 0 0.3em; }
h2 { font-size: 1.2em; margin: 1.6em 0 0.4em; border-bottom: 1px solid #e5e8eb; padding-bottom: 0.2em; }
p.question { font-size: 1.08em; background: #eef4ff; border-left: 4px solid #3b6fd8; padding: 0.5em 0.8em;
             max-width: 60em; }
p.caption { max-width: 60em; }
p.note { font-size: 0.88em; color: #4a5560; max-width: 60em; }
p.downloads code { background: #f3f5f8; padding: 0.1em 0.35em; border-radius: 3px; overflow-wrap: anywhere; }
figure { margin: 0.8em 0; }
figcaption { font-size: 0.9em; color: #4a5560; max-width: 60em; }
figure.diagram { overflow-x: auto; }
figure.diagram svg { display: block; max-width: 100%; height: auto; }
/* On a phone a wide diagram scaled to the column has unreadable labels: it keeps its own size and scrolls. */
@media (max-width: 720px) { figure.diagram svg { max-width: none; } }
figure.diagram svg a { text-decoration: none; }
.pictures { display: flex; flex-wrap: wrap; gap: 1em 1.5em; align-items: flex-start; }
.pictures figure { margin: 0; max-width: 100%; }
.pictures img { display: block; max-width: 100%; height: auto; border: 1px solid #d8dee4; }
.pictures img.zoom { image-rendering: pixelated; }
img.flow { max-width: 100%; height: auto; }
.table-wrap { overflow-x: auto; max-width: 100%; }
table.shapetrace { border-collapse: collapse; font-size: 0.85em; }
.table-wrap .shapetrace-html.shapetrace-html table.shapetrace { font-size: 0.85em; }
table.shapetrace th, table.shapetrace td { border-bottom: 1px solid #eee; padding: 2px 8px; text-align: left; }
table.shapetrace .num { text-align: right; }
tr.failed { background: #fdd; }
.failed-exhibit { color: #a00; white-space: pre-wrap; }
dl.shapetrace-totals { display: grid; grid-template-columns: max-content auto; gap: 0 1em; font-size: 0.85em; }
dl.shapetrace-totals dd { margin: 0; }
.lines-wrap { overflow-x: auto; max-width: 100%; }
ol.cards { list-style: none; padding: 0; display: grid; grid-template-columns: repeat(auto-fill, minmax(270px, 1fr));
           gap: 1em; }
ol.cards li { border: 1px solid #d8dee4; border-radius: 6px; padding: 0.6em; background: #fff; }
ol.cards a { color: inherit; text-decoration: none; display: block; }
ol.cards .thumb { height: 170px; display: flex; align-items: center; justify-content: center; background: #f7f9fc;
                  border-radius: 4px; overflow: hidden; }
ol.cards .thumb img { max-width: 100%; max-height: 170px; object-fit: contain; }
ol.cards .thumb img.tall { width: 100%; height: 170px; max-height: none; object-fit: cover; object-position: center; }
ol.cards h3 { font-size: 1em; margin: 0.5em 0 0.2em; color: #0b57d0; }
ol.cards p { font-size: 0.88em; margin: 0; color: #3d4650; }
.st-diff-wrap { margin: 1em 0; }
"""


def _head(title: str) -> list[str]:
    return ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{html.escape(title)}</title>", f"<style>{_CSS}</style>", "</head><body>"]


def _kind(file: str, name: str) -> str:
    """What a file of an exhibit holds, from its name: ``json``, ``txt``, ``md``, ``svg``, ``flow.svg``, ..."""
    return file[len(name) + 1:] if file.startswith(name + ".") else file


_DOWNLOADS = (("json", "the trace (JSON)"), ("svg", "the diagram (SVG)"), ("txt", "the shape table (text)"),
              ("md", "the shape table (Markdown)"), ("flow.svg", "the shape flow (SVG)"))


_PAGER = re.compile(r'<span class="pager">.*?</span>')


def _pager(prev: Exhibit | DiffExhibit | None, nxt: Exhibit | DiffExhibit | None) -> str:
    """The links of a page's header to the pages before and after it in the site."""
    esc = html.escape
    links = []
    if prev is not None:
        links.append(f'<a href="{esc(prev.name)}.html" rel="prev">← {esc(prev.title)}</a>')
    if nxt is not None:
        links.append(f'<a href="{esc(nxt.name)}.html" rel="next">{esc(nxt.title)} →</a>')
    return f'<span class="pager">{" · ".join(links)}</span>'


def _neighbours(names: list[str], i: int) -> tuple[Exhibit | None, Exhibit | None]:
    """The exhibits before and after ``names[i]`` in the site."""
    return (get_exhibit(names[i - 1]) if i else None, get_exhibit(names[i + 1]) if i + 1 < len(names) else None)


def _header(section: str, prev: Exhibit | DiffExhibit | None, nxt: Exhibit | DiffExhibit | None) -> str:
    """A page's header: the breadcrumb (the index, the section), then the links to the pages around it (on
    the right on a wide screen, on their own line under the breadcrumb on a phone)."""
    return (f'<header class="top"><span class="crumbs"><a href="index.html">shapetrace gallery</a> › '
            f"{html.escape(section)}</span>{_pager(prev, nxt)}</header>")


def _labelled_svg(svg: str, label: str) -> str:
    """An inline diagram as one image to a screen reader: ``role="img"`` and ``label`` as its name."""
    return svg.replace("<svg", f'<svg role="img" aria-label="{html.escape(label)}"', 1)


def _page(ex: Exhibit, r: ExhibitResult, prev: Exhibit | None, nxt: Exhibit | None) -> str:
    esc = html.escape
    n = esc(ex.name)
    parts = _head(f"{ex.title} · shapetrace gallery")
    parts.append(_header(section_of(ex.name), prev, nxt))
    parts.append("<main>")
    parts.append(f'<h1 id="{n}">{esc(ex.title)}</h1>')
    if ex.question:
        parts.append(f'<p class="question"><strong>The question:</strong> {esc(ex.question)}</p>')
    parts.append(f'<p class="caption">{esc(ex.caption)}</p>')
    have = {_kind(f, ex.name) for f in r.files}
    links = [f'<a href="{n}.{k}" download>{esc(what)}</a>' for k, what in _DOWNLOADS if k in have]
    if ex.device == "meta":
        parts.append('<p class="note">Traced on PyTorch\'s <code>meta</code> device: every shape is real, no '
                     f"arithmetic was done. <code>shapetrace trace {n}</code> runs it on the CPU and gives the same "
                     "shapes.</p>")
    parts.append(f"<p class=\"downloads\">Try it: <code>shapetrace trace {n}</code>"
                 + (f" · Download {' · '.join(links)}" if links else "") + "</p>")
    if r.error is not None:
        parts.append(f'<h2>This exhibit failed</h2><pre class="failed-exhibit">{esc(r.error)}</pre>')
    if r.pictures:
        parts.append('<section id="pictures"><h2>The pictures</h2><div class="pictures">')
        for p in r.pictures:
            cls = ' class="zoom"' if p.zoom else ""
            parts.append(f'<figure style="width: {p.width + 2}px"><img{cls} src="{esc(p.file)}" width="{p.width}" '
                         f'height="{p.height}" alt="{esc(p.caption)}"><figcaption>{esc(p.caption)}</figcaption>'
                         "</figure>")
        parts.append("</div></section>")
    if r.svg is not None:
        parts.append('<section id="diagram"><h2>The diagram</h2>')
        parts.append(f'<p class="hint">Hover a box or an arrow for its full shapes and parameters. '
                     f'<a class="full-size" href="{n}.svg">Open the diagram full size</a>.</p>')
        label = f"The diagram of {ex.title}: its layers and the shapes between them"
        parts.append(f'<figure class="diagram">{_labelled_svg(r.svg, label)}</figure></section>')
    elif r.error is None:
        parts.append('<section id="diagram"><h2>The diagram</h2><p>Not drawn: Graphviz\'s <code>dot</code> was '
                     "not installed when this site was built.</p></section>")
    if r.flow is not None:
        parts.append('<section id="flow"><h2>The shape flow</h2>')
        parts.append(f'<figure><img class="flow" src="{esc(r.flow)}" alt="{esc(ex.title)}: channels and spatial '
                     'size along the forward"><figcaption>Channels (top) and spatial size (bottom) of the input '
                     "(unless it holds integers, such as token ids) and of each leaf layer's output, in forward "
                     "order.</figcaption></figure></section>")
    if r.table is not None:
        parts.append('<section id="table"><h2>The shape table</h2>')
        parts.append(f'<div class="table-wrap">{r.table}</div></section>')
    if r.lines is not None:
        parts.append('<section id="lines"><h2>Line by line</h2>')
        parts.append(f'<div class="lines-wrap">{r.lines}</div></section>')
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"


def _thumbnail(r: ExhibitResult) -> tuple[str, int, int] | None:
    """The picture of an exhibit's card on the index, and its size in pixels (0 where unknown): the small
    copy of its output picture, else that picture (a build that made no small copy), else its diagram."""
    outputs = [p for p in r.pictures if not p.zoom]
    if r.thumb is not None:
        return r.thumb.file, r.thumb.width, r.thumb.height
    if outputs:
        return outputs[-1].file, outputs[-1].width, outputs[-1].height
    if f"{r.name}.svg" in r.files:
        w, h = r.svg_size or (0, 0)
        return f"{r.name}.svg", round(w * PT_TO_PX), round(h * PT_TO_PX)
    return None


def _thumb_img(file: str, width: int, height: int, cls: str = "") -> str:
    """A card's picture: loaded only as it scrolls near the window, its size known before it loads."""
    size = f' width="{width}" height="{height}"' if width and height else ""
    return f'<img{cls} src="{html.escape(file)}"{size} alt="" loading="lazy" decoding="async">'


COMPARISONS = "Comparisons"  # the section of the index, and the breadcrumb, of the comparisons' pages
_DIFF_DOWNLOADS = (("svg", "B's diagram, the changes filled (SVG)"), ("txt", "the diff (text)"),
                   ("md", "the diff (Markdown)"))


def _diff_page(ex: DiffExhibit, fragment: str, files: list[str], svg: str | None,
               prev: DiffExhibit | None = None, nxt: DiffExhibit | None = None) -> str:
    """The page of one diff exhibit, laid out as an exhibit's: the header with the breadcrumb and the links to
    the other comparisons, the caption, the downloads, B's diagram with the changes filled (inline, so its boxes
    show their tooltips, linked to the full-size SVG) and the diff's table (scrolling sideways in its own box on
    a narrow screen, as the shape tables do). ``svg`` is the diagram's SVG file text, or ``None``."""
    esc = html.escape
    n = esc(ex.name)
    parts = _head(f"{ex.title} · shapetrace gallery")
    parts.append(_header(COMPARISONS, prev, nxt))
    parts.append(f'<main><h1 id="{n}">{esc(ex.title)}</h1>')
    parts.append(f'<p class="caption">{esc(ex.caption)}</p>')
    parts.append(f"<p><code>shapetrace diff</code> of {esc(ex.a_label)} (A) against {esc(ex.b_label)} (B).</p>")
    links = [f'<a href="{n}.{k}" download>{esc(what)}</a>' for k, what in _DIFF_DOWNLOADS if f"{ex.name}.{k}" in files]
    parts.append(f'<p class="downloads">Try it: <code>{esc(ex.command)}</code>'
                 + (f" · Download {' · '.join(links)}" if links else "") + "</p>")
    if svg is not None:
        inline, _ = _svg_for_page(svg, ex.name)
        label = f"{ex.b_label}: the diagram, the layers that differ from A filled"
        parts.append('<section id="diagram"><h2>The diagram</h2>')
        parts.append(f'<p class="hint">B, with the layers that differ from A filled. Hover a box for its shapes. '
                     f'<a class="full-size" href="{n}.svg">Open the diagram full size</a>.</p>')
        parts.append(f'<figure class="diagram">{_labelled_svg(inline, label)}</figure></section>')
    parts.append('<section id="diff"><h2>The diff</h2>')
    parts.append(f'<div class="table-wrap st-diff-wrap">{fragment}</div></section>')
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"


def _diff_pages(out: Path, written: list[Path]) -> list[DiffExhibit]:
    """A page for each comparison (``shapetrace diff``) of chapter-15 heads, around the files
    ``_write_diffs`` wrote (``written``)."""
    names = {p.name for p in written}
    diffs = list(DIFF_EXHIBITS.values())
    for i, ex in enumerate(diffs):
        page = out / f"{ex.name}.html"  # _write_diffs left the diff's HTML fragment there
        files = sorted(n for n in names if n.startswith(ex.name + "."))
        svg = (out / f"{ex.name}.svg").read_text(encoding="utf-8") if f"{ex.name}.svg" in files else None
        prev = diffs[i - 1] if i else None
        nxt = diffs[i + 1] if i + 1 < len(diffs) else None
        write_output(_diff_page(ex, page.read_text(encoding="utf-8"), files, svg, prev, nxt), page)
    return diffs


def _comparisons_html(diffs: list[DiffExhibit], out: Path | None = None) -> list[str]:
    """The index's section of the comparisons: a card each, as the exhibits have, B's diagram as its picture
    where the build drew it (``out`` holds ``NAME.svg``)."""
    if not diffs:
        return []
    esc = html.escape
    cards = []
    for d in diffs:
        svg = None if out is None else out / f"{d.name}.svg"
        size = _svg_size(svg.read_text("utf-8")) if svg is not None and svg.is_file() else None
        w, h = (round(v * PT_TO_PX) for v in size) if size else (0, 0)
        img = _thumb_img(f"{d.name}.svg", w, h, cls=' class="tall"' if _tall(w, h) else "") if size else ""
        cards.append(f'<li id="{esc(d.name)}"><a href="{esc(d.name)}.html"><div class="thumb">{img}</div>'
                     f"<h3>{esc(d.title)}</h3><p>{esc(d.a_label)} (A) against {esc(d.b_label)} (B)</p></a></li>")
    return [f"<h2>{COMPARISONS}</h2>", '<ol class="cards comparisons">' + "".join(cards) + "</ol>"]


def _index_html(exhibits: list[Exhibit], results: dict[str, ExhibitResult],
                diffs: list[DiffExhibit] | None = None, out: Path | None = None) -> str:
    esc = html.escape
    parts = _head("shapetrace gallery: chapter 15 of Deep Learning for Coders, traced")
    parts.append('<header class="top"><a href="index.html">shapetrace gallery</a></header><main>')
    parts.append("<h1>shapetrace gallery</h1>")
    parts.append('<p class="caption">The architectures of chapter 15 of <em>Deep Learning for Coders</em> '
                 "(fastai 2.8), rebuilt in plain PyTorch and traced with shapetrace, by the chapter's sections in its "
                 "order (its Siamese network, built from the heads, closes the computer vision part here). Each "
                 "page answers one question of the chapter with the model's diagram, its shape table and the "
                 "shapes along its forward.</p>")
    sections: list[tuple[str, list[Exhibit]]] = []
    for ex in exhibits:
        title = section_of(ex.name)
        if not sections or sections[-1][0] != title:
            sections.append((title, []))
        sections[-1][1].append(ex)
    for title, members in sections:
        parts.append(f"<h2>{esc(title)}</h2>")
        parts.append('<ol class="cards">')
        for ex in members:
            r = results[ex.name]
            thumb = _thumbnail(r)
            tall = (r.svg_size is not None and thumb is not None and thumb[0] == f"{ex.name}.svg"
                    and _tall(*r.svg_size))
            img = _thumb_img(*thumb, cls=' class="tall"' if tall else "") if thumb else ""
            mark = ' <span class="failed-exhibit">(failed)</span>' if r.error is not None else ""
            parts.append(f'<li id="{esc(ex.name)}"><a href="{esc(ex.name)}.html"><div class="thumb">{img}</div>'
                         f"<h3>{esc(ex.title)}{mark}</h3><p>{esc(ex.question)}</p></a></li>")
        parts.append("</ol>")
    parts += _comparisons_html(diffs or [], out)
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"


def _index_md(exhibits: list[Exhibit], results: dict[str, ExhibitResult],
              diffs: list[DiffExhibit] | None = None) -> str:
    lines = ["# shapetrace gallery", ""]
    section = None
    for ex in exhibits:
        r = results[ex.name]
        if section_of(ex.name) != section:
            section = section_of(ex.name)
            lines += [f"## {section}", ""]
        lines += [f"### [{ex.title}]({ex.name}.html)", ""]
        if ex.question:
            lines += [f"*{ex.question}*", ""]
        lines += [ex.caption, "", f"`shapetrace trace {ex.name}` — "
                  + ", ".join(f"[{_kind(f, ex.name)}]({f})" for f in r.files if not f.endswith(".thumb.jpg")), ""]
        if r.error is not None:
            lines += ["**Failed:**", "", "```", r.error, "```", ""]
        if f"{ex.name}.svg" in r.files:
            lines += [f"![{ex.title}]({ex.name}.svg)", ""]
    if diffs:
        lines += ["## Comparisons", ""]
        for d in diffs:
            lines += [f"### [{d.title}]({d.name}.html)", "", d.caption, "", f"[the diff as Markdown]({d.name}.md)", ""]
    return "\n".join(lines)


def _replace_manifest(out: Path, written: list[Path], whole: bool) -> None:
    """Record what this build wrote; after a whole-gallery build, remove what only the last one wrote."""
    manifest = out / MANIFEST
    now = {p.name for p in written}
    before = set(manifest.read_text(encoding="utf-8").split()) if manifest.exists() else set()
    if whole:
        for name in sorted(before - now):
            stale = out / name
            if stale.is_file() and stale.parent == out:
                stale.unlink()
    else:
        now |= {n for n in before if (out / n).is_file()}
    write_output("\n".join(sorted(now)) + "\n", manifest)


def _entry(r: ExhibitResult) -> dict:
    """What the index shows of an exhibit (and a later partial build needs to show it again), as JSON data."""
    return {"files": r.files, "error": r.error, "svg_size": list(r.svg_size) if r.svg_size else None,
            "flow": r.flow, "pictures": [dataclasses.asdict(p) for p in r.pictures],
            "thumb": dataclasses.asdict(r.thumb) if r.thumb else None}


def _from_entry(name: str, entry: dict) -> ExhibitResult:
    """The ``ExhibitResult`` (less its page's fragments) an index entry written by ``_entry`` describes."""
    size = entry.get("svg_size")
    return ExhibitResult(name, files=list(entry.get("files", [])), error=entry.get("error"),
                         svg_size=(float(size[0]), float(size[1])) if size else None, flow=entry.get("flow"),
                         pictures=[PictureInfo(**p) for p in entry.get("pictures", [])],
                         thumb=PictureInfo(**entry["thumb"]) if entry.get("thumb") else None)


def _built_before(out: Path) -> dict[str, ExhibitResult]:
    """The exhibits an earlier build left in ``out`` whose page is still there (listed in the manifest and on
    disk, and still registered): their index entries from ``ENTRIES``, or, from a build that wrote none, what
    the manifest's file names tell (their files; not whether they failed or their pictures)."""
    manifest = out / MANIFEST
    if not manifest.is_file():
        return {}
    listed = set(manifest.read_text(encoding="utf-8").split())
    entries: dict = {}
    with contextlib.suppress(OSError, ValueError):
        entries = json.loads((out / ENTRIES).read_text(encoding="utf-8"))
    before = {}
    for name in exhibit_names():
        if f"{name}.html" not in listed or not (out / f"{name}.html").is_file():
            continue
        if isinstance(entries.get(name), dict):
            before[name] = _from_entry(name, entries[name])
        else:
            before[name] = _guessed_result(out, name, [f for f in listed if f.startswith(f"{name}.")])
    return before


_KINDS_ORDER = ("json", "txt", "md", "svg", "flow.svg")  # the order _build_exhibit writes them in


def _guessed_result(out: Path, name: str, files: list[str]) -> ExhibitResult:
    """What the file names of an exhibit built by a shapetrace that kept no ``ENTRIES`` tell of it: its files
    in the order a build writes them, its diagram's size (read from the SVG), which pictures are zooms and the
    index's small copy of a picture (its size read from the file)."""
    def rank(f: str) -> tuple[int, str]:  # the exhibits' pictures come zooms first
        kind = _kind(f, name)
        return (_KINDS_ORDER.index(kind) if kind in _KINDS_ORDER else len(_KINDS_ORDER) + (".zoom-" not in f), f)

    files = sorted((f for f in files if f != f"{name}.html"), key=rank)
    size = None
    with contextlib.suppress(OSError):
        size = _svg_size((out / f"{name}.svg").read_text("utf-8"))
    pictures = [PictureInfo(f, "", 0, 0, zoom=".zoom-" in f) for f in files if f.endswith(".png")]
    thumb = None
    if f"{name}.thumb.jpg" in files:
        with contextlib.suppress(OSError), Image.open(out / f"{name}.thumb.jpg") as im:
            thumb = PictureInfo(f"{name}.thumb.jpg", "", im.width, im.height, zoom=False)
    return ExhibitResult(name, files=files, svg_size=size, pictures=pictures, thumb=thumb)


def _diffs_before(out: Path) -> list[DiffExhibit]:
    """The comparisons whose pages an earlier build left in ``out`` (listed in the manifest and on disk)."""
    manifest = out / MANIFEST
    listed = set(manifest.read_text(encoding="utf-8").split()) if manifest.is_file() else set()
    return [d for d in DIFF_EXHIBITS.values() if f"{d.name}.html" in listed and (out / f"{d.name}.html").is_file()]


def _relink(out: Path, site: list[str], rebuilt: set[str]) -> list[Path]:
    """Point the pager of each page kept from an earlier build at its neighbours in ``site`` (an exhibit added
    between them changes them): the pages rewritten."""
    changed = []
    for i, name in enumerate(site):
        if name in rebuilt:
            continue
        page = out / f"{name}.html"
        text = page.read_text(encoding="utf-8")
        found = _PAGER.search(text)  # the header's, the first on the page
        if found is None:
            continue
        relinked = text[:found.start()] + _pager(*_neighbours(site, i)) + text[found.end():]
        if relinked != text:
            write_output(relinked, page)
            changed.append(page)
    return changed


# ---- the build --------------------------------------------------------------------------------------------
_OUTPUT_KINDS = ("json", "txt", "md", "svg", "flow.svg", "html")  # and pictures, NAME.*.png, NAME.thumb.jpg


def _would_overwrite(out: Path, names: list[str]) -> list[str]:
    """The files in ``out`` a build writing exhibits (or comparisons) ``names`` and the index would replace."""
    if not out.is_dir():
        return []
    found = []
    for f in sorted(p.name for p in out.iterdir()):
        ours = any(f.startswith(f"{n}.") and (_kind(f, n) in _OUTPUT_KINDS or f.endswith((".png", ".jpg"))) for n in names)
        if ours or f in ("index.html", "index.md"):
            found.append(f)
    return found


def check_site_folder(out_dir: str | Path, exhibits: Sequence[str] | None = None) -> None:
    """Refuse (``OutputProblem``) to build ``exhibits`` (default: all) into a folder that holds files the build
    would overwrite when no manifest (``MANIFEST``) says a gallery build wrote what is there: they are someone's
    own (an ``index.html``, notes in ``NAME.txt``)."""
    out = Path(out_dir)
    if (out / MANIFEST).exists():
        return
    names = list(exhibits) if exhibits is not None else exhibit_names() + list(DIFF_EXHIBITS)
    found = _would_overwrite(out, names)
    if found:
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise OutputProblem(f"cannot build the gallery into {str(out_dir)!r}: it holds {shown}, which the build "
                            f"would overwrite, and no {MANIFEST} file says a gallery build wrote them; build into "
                            "an empty or new folder, or move those files away")


def _write_diffs(out_dir: str) -> list[Path]:
    """The comparisons' files (a worker's job, beside the exhibits), written atomically."""
    out = Path(out_dir)
    return [write_output(text, out / name) for name, text in diff_exhibit_files().items()]


# Signals whose default action ends the process: a timeout, ``kill``, ``docker stop`` or systemd (SIGTERM), a
# terminal closed (SIGHUP). Ended by one while its workers run, the build would leave them running, and writing.
_ENDING_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))
_HELD_SIGNALS = (signal.SIGINT, *_ENDING_SIGNALS)


class _EndedBySignal(BaseException):
    """An ending signal (``_ENDING_SIGNALS``) arrived while the workers ran: stop them, then end by it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _signals_stop_workers() -> Iterator[None]:
    """For the block, a SIGTERM or SIGHUP whose action is still the default (end the process) raises
    ``_EndedBySignal`` instead, so the workers are stopped (``_run``'s ``except``) before the process goes; then
    the signal is delivered again with its default action, and the process ends by it (exit status 128+N, 143
    for SIGTERM), as it would have. One that arrives while the workers are being stopped is not acted on twice.
    A signal with a handler of the program's own (whatever it raises stops the workers too) or ignored
    (``nohup``) is left as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only
        return
    taken = [s for s in _ENDING_SIGNALS if signal.getsignal(s) == signal.SIG_DFL]
    arrived: list[int] = []

    def stop(signum: int, frame: object) -> None:
        arrived.append(signum)
        if len(arrived) == 1:
            raise _EndedBySignal(signum)

    for s in taken:
        signal.signal(s, stop)
    try:
        yield
    except _EndedBySignal as e:
        for s in taken:
            signal.signal(s, signal.SIG_DFL)
        signal.raise_signal(e.signum)  # the default action: the process ends here
        raise
    finally:
        for s in taken:
            signal.signal(s, signal.SIG_DFL)


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold off SIGINT, SIGTERM and SIGHUP for the block, then deliver them: one that lands while the pool forks
    its workers would otherwise raise (``KeyboardInterrupt``, ``_EndedBySignal``) between a fork and the pool's
    note of the new worker, leaving a worker nobody stops (and, with one noted, a main process that waits for it
    forever at exit)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only
        return
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in _HELD_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(caught):
            signal.raise_signal(s)  # to the handler that was there: KeyboardInterrupt by default for SIGINT


def _worker_started(parent: int) -> None:
    """A worker ignores SIGINT and SIGHUP: a Ctrl-C on the terminal, or the terminal closing, reaches the whole
    process group, and the main process alone decides what to do (it stops the workers, see ``_stop_workers``).
    SIGTERM ends it at once (the main process's handler, inherited by the fork, is put back to the default):
    that is how ``_stop_workers`` stops it. And it ends with the main process (``_end_with_parent``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _end_with_parent(parent)


def _end_with_parent(parent: int) -> None:
    """On Linux, have the kernel kill this worker when the main process (pid ``parent``) ends without stopping
    it (``kill -9``, a crash), rather than leave it running, and writing, with nobody to wait for it:
    ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, which acts when the thread that forked the worker ends (the build's,
    which stops its workers before it returns). Elsewhere, or where libc has no ``prctl``, nothing is done."""
    if not sys.platform.startswith("linux"):
        return
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    pr_set_pdeathsig = 1  # <linux/prctl.h>
    if prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0) == 0 and os.getppid() != parent:
        os._exit(1)  # the main process ended before the request took hold: nobody will ever want this worker


def _stop_workers(pool: ProcessPoolExecutor, workers: set[multiprocessing.process.BaseProcess], out: Path,
                  names: list[str]) -> None:
    """Stop an interrupted build at once: cancel the work not started, end the workers (those still busy
    too), and remove the temporary files of the writes they were in the middle of (every file is written
    atomically, so no file of the site is ever half-written)."""
    pool.shutdown(wait=False, cancel_futures=True)
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.join(timeout=5)
        if worker.is_alive():
            worker.kill()
            worker.join()
    for partial in out.glob(".*.part"):  # write_output's temporary files: ".NAME.XXXXXXXX.part"
        if any(partial.name.startswith(f".{name}.") for name in names):
            with contextlib.suppress(OSError):
                partial.unlink()


def _submit_all(pool: ProcessPoolExecutor, names: list[str], out: Path, debug: bool, threads: int,
                diffs: bool) -> tuple[dict[Future, str], Future | None]:
    """Queue the exhibits ``names`` (in that order; the costliest first, see ``build_site``) and, with ``diffs``,
    the comparisons where their cost puts them: the futures of the exhibits by name, and the comparisons'."""
    futures: dict[Future, str] = {}
    diff_future = None
    for name in names:
        if diffs and diff_future is None and get_exhibit(name).cost <= DIFFS_COST:
            diff_future = pool.submit(_write_diffs, str(out))
        futures[pool.submit(_build_exhibit, name, str(out), debug, threads)] = name
    if diffs and diff_future is None:
        diff_future = pool.submit(_write_diffs, str(out))
    return futures, diff_future


def _run(names: list[str], out: Path, jobs: int, debug: bool, progress: Progress | None,
         diffs: bool) -> tuple[dict[str, ExhibitResult], list[Path]]:
    """Build ``names`` (in that order) and, with ``diffs``, the comparisons' files: the results by name and the
    comparisons' files. Interrupted (``KeyboardInterrupt``, or any other error here), it stops the workers
    before raising again."""
    results: dict[str, ExhibitResult] = {}

    def done(r: ExhibitResult) -> None:
        results[r.name] = r
        if progress is not None:
            progress(r.name, r.error is None, r.error or "")

    if jobs <= 1 or len(names) <= 1:
        for name in names:
            done(_build_exhibit(name, str(out), debug))
        return results, (_write_diffs(str(out)) if diffs else [])
    threads = max(1, default_jobs() // jobs)
    # fork: the workers start with shapetrace, torch and torchvision already imported (a spawned worker would
    # import them again, seconds each). The objects alive now (the modules, about a million) are frozen first:
    # the collector then never walks them again, neither in the workers (whose memory pages it would otherwise
    # touch and copy) nor here, nor at this process's exit, where that last walk takes a second.
    gc.freeze()
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    before = set(multiprocessing.active_children())
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(names)), mp_context=context, initializer=_worker_started,
                               initargs=(os.getpid(),))
    with _signals_stop_workers():  # SIGTERM, SIGHUP: the workers are stopped first, then the process ends by it
        try:
            with _interrupts_held():  # the first submit forks the workers
                futures, diff_future = _submit_all(pool, names, out, debug, threads, diffs)
            for future in as_completed(futures):
                name = futures[future]
                try:
                    done(future.result())
                except Exception as e:  # noqa: BLE001  (a worker that died: the others go on)
                    done(ExhibitResult(name, error=f"the worker building it failed: {type(e).__name__}: {e}"))
            diff_files = diff_future.result() if diff_future is not None else []
        except BaseException:
            _stop_workers(pool, set(multiprocessing.active_children()) - before, out,
                          names + (list(DIFF_EXHIBITS) if diffs else []))
            raise
    pool.shutdown()
    return results, diff_files


def build_site(out_dir: str | Path, exhibits: Sequence[str] | None = None, *, jobs: int | None = None,
               progress: Progress | None = None, debug: bool = False) -> list[Path]:
    """Build the gallery into ``out_dir`` and return the files written (see the module docstring).

    ``exhibits`` restricts the build to those names (default: all; pages and index follow the chapter's order
    either way); an empty list is a ``ValueError``, not the whole gallery. Built into a folder that holds a
    gallery already, those exhibits join it: the index and the pages' links take in every page there.
    ``jobs`` is the number of worker processes (default: the CPU count; 1 builds in this process).
    ``progress(name, ok, message)`` is called after each exhibit. Raises ``OutputProblem`` before any work
    when the folder holds files of someone else's the build would overwrite (see ``check_site_folder``), and
    ``GalleryBuildFailed`` (after writing everything it could) if any exhibit failed.
    """
    if exhibits is not None and not exhibits:
        raise ValueError("no exhibits named: pass None to build the whole gallery")
    out = Path(out_dir)
    order = exhibit_names()
    requested = list(dict.fromkeys(exhibits)) if exhibits is not None else order
    for name in requested:
        get_exhibit(name)  # an unknown name fails here, before any work
    check_site_folder(out, exhibits)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / MANIFEST).exists():  # the folder is the gallery's from now on, even if this build is stopped
        write_output("", out / MANIFEST)
    names = sorted(requested, key=lambda n: order.index(n) if n in order else len(order))
    # the costliest first, so the last to finish is a small one
    schedule = sorted(names, key=lambda n: -get_exhibit(n).cost)
    whole = exhibits is None  # the comparisons come with a whole-gallery build
    results, diff_files = _run(schedule, out, jobs or default_jobs(), debug, progress, diffs=whole)
    # A partial build adds to the site already in ``out``: its index and its pages' links take in every page
    # there, in the chapter's order, as a build of them all would.
    everything = {**({} if whole else _built_before(out)), **results}
    site = [n for n in order if n in everything]
    written = [out / f for n in names for f in results[n].files]
    for i, name in enumerate(site):
        if name in results:
            write_output(_page(get_exhibit(name), results[name], *_neighbours(site, i)), out / f"{name}.html")
            written.append(out / f"{name}.html")
    if not whole:
        written += _relink(out, site, set(results))
    if whole:
        diffs = _diff_pages(out, diff_files)
        written += diff_files
    else:
        diffs = _diffs_before(out)
    exs = [get_exhibit(n) for n in site]
    for fname, text in (("index.html", _index_html(exs, everything, diffs, out)),
                        ("index.md", _index_md(exs, everything, diffs))):
        write_output(text, out / fname)
        written.append(out / fname)
    write_output(json.dumps({n: _entry(everything[n]) for n in site}, indent=1, sort_keys=True) + "\n",
                 out / ENTRIES)
    _replace_manifest(out, written, whole=whole)
    failures = {n: results[n].error for n in names if results[n].error is not None}
    if failures:
        raise GalleryBuildFailed(failures, written)  # type: ignore[arg-type]
    return written
