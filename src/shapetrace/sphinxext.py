"""The ``.. shapetrace::`` Sphinx directive: a diagram, table or shape-flow chart traced when the docs are built.

In ``conf.py``: ``extensions = ["shapetrace.sphinxext"]``. Then, in reStructuredText::

    .. shapetrace:: camvid-unet
       :depth: 2
       :caption: The U-Net of chapter 15.

    .. shapetrace:: torchvision.models:resnet18
       :input: 1,3,64,64
       :show: table diagram
       :depth: 1

or in MyST Markdown (myst-parser)::

    ```{shapetrace} camvid-unet
    :depth: 2
    ```

MODEL and the options mean what they mean for ``shapetrace trace``: ``:input:`` (one spec per line for several
inputs), ``:arg:`` (``KEY=VALUE`` per line), ``:depth:``, ``:layout:`` (tb, lr, u), ``:style:``, ``:overlay:``
(names separated by spaces), ``:unroll:``, ``:train:``; a relative ``path/to/file.py:factory`` is read from the
document's folder, then the source folder (``sphinx_sources``), never from where ``sphinx-build`` runs.
``:show:`` names what to insert, in that order, any of ``diagram`` (the default), ``table`` (the HTML table),
``text`` (the text table, ``:width:`` columns, 80 by default, 0 for no limit) and ``flow`` (the shape-flow chart); ``both``
means ``diagram table``. ``:caption:`` adds a caption, inline markup as a figure's (``exhibit`` takes the
exhibit's own, as plain text); ``:alt:`` the first picture's alt text; ``:name:`` a name to link to the figure by
(as a ``.. _name:`` label before it). Without ``:alt:`` each picture has a short alt text of its own, naming the
model and what the picture shows (never the caption, which the page shows once below the pictures). The figure is
a figure to Sphinx: ``:ref:`name``` takes its caption for the link's text, and it is numbered with the page's
other figures (``numfig``, ``:numref:``).

What each builder gets:

* HTML builders: each picture is an ``<img>`` of an SVG file in ``_images/``, scaled by its ``viewBox`` to the
  content column (never wider than its natural size) and linked to the full-size SVG; so a page's CSS (link
  underlines) never reaches the node labels and the SVG's ids cannot clash with the page's or another
  diagram's. The table is the HTML fragment of ``renderers.html``, its scoped CSS in the stylesheet the
  extension adds (``_static/shapetrace.css``), so no ``<style>`` is in a page's body. EPUB shows each picture
  without the link to its full size (a book's pages may link only to its pages).
* LaTeX: the diagram as PDF, the flow chart as PNG, tables as text (ASCII where pdflatex would stop), all with
  the caption.
* Every other builder (text, man, texinfo, ...): the text table, and a line saying which picture it stands for.

A model that cannot be built, or whose forward fails, is an error naming the document, the line and the
cause, and the build exits non-zero even without ``-W``; with ``:allow-failure:`` the page shows the partial
table and the error instead, and the build goes on. So does an unknown ``:overlay:`` name (checked before the
trace), and a bad or missing option value (``sphinx_options``). Messages are put in the directive's terms at this boundary (``sphinx_messages``: ``:input:``, ``:arg:``,
``sphinx-build -v`` for the traceback, which is logged at that verbosity); on the page, the lines of a message after
its first stay lines (a literal block), and its paths and builder's advice are left out (``sphinx_page_text``).
"""

from __future__ import annotations

import html
import json
import os
import re
import textwrap
import traceback
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from docutils import nodes
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.osutil import relative_uri

from . import __version__
from . import sphinx_images as images
from .renderers import RenderOptions, diagram_settings
from .renderers.diagram import OverlayNeedsOptions
from .renderers.diagram import render as render_diagram
from .renderers.html import CSS as TABLE_CSS
from .renderers.html import render_html
from .renderers.plots import shape_flow
from .renderers.table import render_text
from .session import Outcome, SessionError, TraceRequest, trace_model
from .specs.names import tidy_spec
from .specs.raised import where_raised
from .sphinx_messages import in_directive_terms, overlay_needs_data, overlay_problem
from .sphinx_options import OPTION_SPEC, TEXT_WIDTH, BadOption, first_bad
from .sphinx_page_text import for_readers
from .sphinx_sources import ModelFileNotFound, locate, watched
from .tracer.records import Trace
from .tracer.user_warnings import one_line

logger = logging.getLogger(__name__)

_FAILURES = "shapetrace_failures"  # env attribute: docname -> [message], for the exit status


def _lines(text: str | None) -> tuple[str, ...]:
    return tuple(line.strip() for line in (text or "").splitlines() if line.strip())


@dataclass
class Picture:
    """One rendered picture: its SVG text, and what LaTeX gets (``pdf`` or ``png``, rendered when needed)."""

    kind: str                 # "diagram" or "flow"
    svg: str
    print_format: str         # "pdf" or "png"


@dataclass
class Figure:
    """What one directive renders; stored in the doctree, turned into output per builder."""

    shows: list[str]
    caption: str = ""
    alt: str = ""             # the :alt: option: the first picture's alternative text
    model: str = ""           # the model's class, for the pictures' own alternative texts
    pictures: dict[str, Picture] = field(default_factory=dict)
    table_html: str = ""
    table_text: str = ""
    trace_json: str = ""      # to render the print pictures for LaTeX
    diagram_options: dict = field(default_factory=dict)


class shapetrace_figure(nodes.General, nodes.Element):
    """Placeholder node holding a ``Figure``; replaced by builder-specific nodes once the doctree is resolved."""


class ShapetraceDirective(SphinxDirective):
    """Trace a model while the docs build and insert its diagram, table and/or shape-flow chart."""

    required_arguments = 1
    final_argument_whitespace = True  # `models.py : build`, as the command line takes it (spaces around the colon)
    has_content = False
    # A refused option value is returned by its converter (sphinx_options), not raised: a bad option fails the
    # build like any other failure of the directive, not as a docutils warning that exits 0 without -W.
    option_spec: ClassVar[dict[str, Any]] = OPTION_SPEC

    def run(self) -> list[nodes.Node]:
        spec = tidy_spec(self.arguments[0])
        # A Python warning raised while the model is built, traced and drawn (shapetrace's own, the model's, a
        # library's) is a Sphinx warning at the directive's file:line, as its other problems are: -W fails the
        # build on it, `suppress_warnings = ["shapetrace.trace"]` silences it. The filters in force still apply.
        with warnings.catch_warnings(record=True) as caught:
            out = self._run(spec)
        for w in caught:
            logger.warning(f"shapetrace: {spec}: {one_line(w.message, w.category, w.filename, w.lineno)}",
                           location=self._where(), type="shapetrace", subtype="trace")
        return out

    def _run(self, spec: str) -> list[nodes.Node]:
        opts = self.options
        # A refused value (`:allow-failure: yes`) allows nothing: the build fails, naming the option
        allow_failure = "allow-failure" in opts and not isinstance(opts["allow-failure"], BadOption)
        bad = first_bad(opts)
        if bad is not None:  # before tracing: a bad option costs no trace
            return self._failed(spec, str(bad), None, allow_failure)
        problem = overlay_problem(opts.get("overlay", "").split())
        if problem:  # before tracing: a misspelt overlay costs no trace
            return self._failed(spec, problem, None, allow_failure)
        try:
            outcome = self._trace(spec)
        except _DirectiveFailed as e:
            return self._failed(spec, e.message, None, allow_failure)
        result, exhibit = outcome.trace, outcome.exhibit
        figure = Figure(shows=opts.get("show", ["diagram"]))
        figure.caption = self._caption(spec, exhibit)
        figure.alt = opts.get("alt") or ""
        figure.model = result.model.cls
        if outcome.failed:  # the forward raised: the session keeps the exception, as for `trace --debug`
            message = outcome.error or ""
            if outcome.cause is not None:
                self._log_traceback(outcome.cause)
                message += (f"\n  raised at {where_raised(outcome.cause)} (run sphinx-build with -v for the whole "
                            "traceback)")
            return self._failed(spec, message, result, allow_failure, figure.caption)
        try:
            self._render(figure, result)
        except _DirectiveFailed as e:
            return self._failed(spec, e.message, result, allow_failure, figure.caption)
        # The SVG files the HTML builders will write for it: kept in _images/ while a page shows them.
        images.note(self.env, self.env.docname,
                    [images.file_name(kind, pic.svg, "svg") for kind, pic in figure.pictures.items()])
        node, messages = self._figure_node(figure)
        self.add_name(node)
        return [node, *messages]

    def _figure_node(self, figure: Figure) -> tuple[shapetrace_figure, list[nodes.Node]]:
        """The node holding ``figure``, and its caption as a ``.. figure::``'s is: a caption node, so a ``:ref:``
        without a title and ``:numref:`` find it. ``:caption:``'s text is inline markup, parsed here (its
        problems, as docutils reports them, come after the node); an exhibit's own caption is plain text."""
        node = shapetrace_figure()
        node["figure"] = figure
        self.set_source_info(node)
        messages: list[nodes.Node] = []
        if not figure.caption:
            return node, messages
        if self.options.get("caption") == "exhibit":  # as the gallery shows it: no markup, no smart quotes
            caption = nodes.caption(figure.caption, figure.caption, support_smartquotes=False)
        else:
            inline, messages = self.state.inline_text(figure.caption, self.lineno)
            caption = nodes.caption(figure.caption, "", *inline)
        self.set_source_info(caption)
        node += caption
        return node, messages

    def _caption(self, spec: str, exhibit: Any) -> str:
        """The caption to show: ``:caption:``'s text, or for ``exhibit`` the exhibit's own (a warning, and no
        caption, when MODEL is no exhibit)."""
        caption = self.options.get("caption", "")
        if caption != "exhibit":
            return caption
        if exhibit is None:
            logger.warning(f"shapetrace: {spec}: :caption: exhibit shows a gallery exhibit's own caption, and "
                           f"{spec!r} is not an exhibit, so there is no caption to show; write the caption's text "
                           "instead", location=self._where(), type="shapetrace", subtype="caption")
        return getattr(exhibit, "caption", "") or ""

    # ---- tracing and rendering -----------------------------------------------------------------------
    def _trace(self, spec: str) -> Outcome:
        """The session's outcome for MODEL: its trace (partial when the forward failed, with the failure and its
        exception) and the exhibit, if MODEL is one."""
        opts = self.options
        # The page depends on the model's source: editing it rebuilds the page (and retries a failed directive).
        try:
            located = locate(spec, Path(self.env.doc2path(self.env.docname)).parent, Path(self.env.srcdir))
        except ModelFileNotFound as e:
            for path in e.candidates:  # read again each build until the file is there
                self.env.note_dependency(path)
            raise _DirectiveFailed(str(e)) from e
        for path in watched(located):
            self.env.note_dependency(path)
        # As the CLI does (the session's rule): an exhibit runs as built, any other model in eval unless :train:.
        request = TraceRequest(located.spec, _lines(opts.get("input")), _lines(opts.get("arg")),
                               train=True if "train" in opts else None, ops=True)
        try:
            outcome = trace_model(request)
        except SessionError as e:
            self._log_traceback(e)
            raise _DirectiveFailed(str(e)) from e
        except Exception as e:  # building the model raised: its own error, named
            self._log_traceback(e)
            raise _DirectiveFailed(f"building {spec!r} raised {type(e).__name__}: {e} (run sphinx-build with -v "
                                   "for the whole traceback)") from e
        return outcome

    def _log_traceback(self, error: BaseException) -> None:
        """The whole traceback of a failure (the model's own frames included), shown by ``sphinx-build -v``."""
        whole = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        logger.verbose("shapetrace: %s: the whole traceback:\n%s", self._where(), whole)

    def _where(self) -> str:
        """``file:line`` where the directive is written: for a directive in an ``.. include::``d file, that file
        and its line (``self.lineno`` counts the lines of the document with the included text in it). docutils
        names an included file relative to the folder ``sphinx-build`` runs in: it is made absolute."""
        source, line = self.get_source_info()
        return f"{os.path.abspath(source)}:{line}" if source else self.get_location()

    def _render(self, figure: Figure, result: Any) -> None:
        opts = self.options
        depth = opts.get("depth")
        if "diagram" in figure.shows:
            # An exhibit's render hints travel in the trace (trace.meta["options"]); the directive's options win.
            options = RenderOptions(depth=depth, layout=opts.get("layout"), style=opts.get("style"),
                                    unroll=True if "unroll" in opts else None,
                                    overlays=tuple(opts.get("overlay", "").split()))
            diagram_opts = diagram_settings(result, options)
            try:
                svg = render_diagram(result, format="svg", **diagram_opts).decode("utf-8")
            except OverlayNeedsOptions as e:  # its advice is a Python argument: the directive says what works here
                raise _DirectiveFailed(overlay_needs_data(e.overlay)) from e
            except (RuntimeError, ValueError) as e:  # no Graphviz, or dot failed
                raise _DirectiveFailed(f"the diagram could not be drawn: {e}") from e
            figure.pictures["diagram"] = Picture("diagram", svg, "pdf")
            figure.diagram_options = diagram_opts
        if "flow" in figure.shows:
            figure.pictures["flow"] = Picture("flow", str(shape_flow(result, format="svg")), "png")
        if figure.pictures:
            figure.trace_json = result.to_json(indent=None)
        if "table" in figure.shows:
            figure.table_html = self._table_html(result)
        # Every figure keeps its text table: it is what text-like builders show in place of a picture.
        figure.table_text = self._table_text(result)

    def _table_html(self, result: Any) -> str:
        """The trace's table as HTML, at ``:depth:`` (its CSS: in shapetrace.css)."""
        return render_html(result, depth=self.options.get("depth"), css=False)

    def _table_text(self, result: Any) -> str:
        """The trace's table as text, at ``:depth:`` and ``:width:``."""
        return render_text(result, depth=self.options.get("depth"), width=self.options.get("width", TEXT_WIDTH))

    def _failed(self, spec: str, message: str, partial: Any, allow_failure: bool,
                caption: str = "") -> list[nodes.Node]:
        """The failure logged and shown: with ``:allow-failure:``, ``partial``'s table under ``caption`` (the one
        resolved for the figure) and the error; else an error that fails the build."""
        message = in_directive_terms(message)
        text = f"shapetrace: {spec}: {message}"
        where = self._where()
        if not allow_failure:
            # An error (with document and line) and a recorded failure: the build exits non-zero at the end.
            logger.error(text, location=where, type="shapetrace")
            getattr(self.env, _FAILURES).setdefault(self.env.docname, []).append(f"{where}: {message}")
            return [_error_node(for_readers(text, self.env.srcdir))]
        logger.info(f"shapetrace: {where}: allowed failure: {message}")
        out: list[nodes.Node] = []
        if partial is not None:
            figure = Figure(shows=["table"], caption=caption)
            figure.table_html = self._table_html(partial)  # _render never got to the tables: made here
            figure.table_text = self._table_text(partial)
            node, messages = self._figure_node(figure)
            out += [node, *messages]
        out.append(_error_node(for_readers(text, self.env.srcdir), classes=["shapetrace-error"]))
        if not isinstance(self.options.get("name"), BadOption):  # a refused :name: is the failure shown
            self.add_name(out[0])  # :name: refers to what the page shows in the figure's place
        return out


def _error_node(text: str, classes: Sequence[str] = ()) -> nodes.error:
    """The error on the page: its first line as a paragraph, the lines after it (a failing layer's input and
    error) as a literal block, so they keep their line breaks. The paragraph is the build log's text, not prose:
    no smart quotes, so a command it advises reads as typed (``'shapetrace trace --help'``, not curly quotes
    and an en dash)."""
    first, _, rest = text.partition("\n")
    children: list[nodes.Node] = [nodes.paragraph(first, first, support_smartquotes=False)]
    if rest.strip():
        rest = textwrap.dedent(rest).strip("\n")
        children.append(nodes.literal_block(rest, rest, language="text"))
    return nodes.error("", *children, classes=list(classes))


class _DirectiveFailed(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# ---- output per builder ----------------------------------------------------------------------------------
_CSS = """\
figure.shapetrace-figure { margin: 1em 0 1.5em; padding: 0; max-width: 100%; text-align: center; }
figure.shapetrace-figure .shapetrace-picture { display: block; margin: 0 auto 0.75em; max-width: 100%; }
figure.shapetrace-figure .shapetrace-picture img { display: block; margin: 0 auto; max-width: 100%;
  height: auto; background: #ffffff; border-radius: 4px; }
figure.shapetrace-figure a.shapetrace-picture, figure.shapetrace-figure a.shapetrace-picture:hover {
  text-decoration: none; border: none; }
figure.shapetrace-figure .shapetrace-html { text-align: left; }
figure.shapetrace-figure pre.shapetrace-text { text-align: left; overflow-x: auto; max-width: 100%;
  font-size: 0.78em; line-height: 1.3; padding: 0.6em 0.8em; }
figure.shapetrace-figure figcaption { font-size: 0.9em; opacity: 0.85; display: table; margin: 0 auto;
  text-align: left; }  /* a table shrinks to a short caption (centred) and a long one wraps flush left */
figure.shapetrace-figure figcaption a.shapetrace-full { white-space: nowrap; }
""" + TABLE_CSS  # the tables' own CSS (every selector scoped to .shapetrace-html): no <style> in a page's body

_SIZE = re.compile(r"<svg\b[^>]*?\bviewBox=\"([-\d.]+)[ ,]+([-\d.]+)[ ,]+([-\d.]+)[ ,]+([-\d.]+)\"")
_WIDTH = re.compile(r"<svg\b[^>]*?\bwidth=\"([\d.]+)(pt|px)?\"")
_HEIGHT = re.compile(r"<svg\b[^>]*?\bheight=\"([\d.]+)(pt|px)?\"")


def svg_size(svg: str) -> tuple[float, float]:
    """The natural size of an SVG in CSS pixels (from ``width``/``height``, else the ``viewBox``)."""
    w, h = _WIDTH.search(svg), _HEIGHT.search(svg)
    if w and h:
        scale = 4 / 3 if w.group(2) == "pt" else 1.0
        return float(w.group(1)) * scale, float(h.group(1)) * (4 / 3 if h.group(2) == "pt" else 1.0)
    box = _SIZE.search(svg)
    if box:
        return float(box.group(3)), float(box.group(4))
    return 800.0, 600.0


def _caption_of(node: nodes.Element) -> nodes.caption | None:
    """The caption the directive parsed for ``node`` (its inline markup, references resolved), if it has one."""
    return next((c for c in node.children if isinstance(c, nodes.caption)), None)


def _caption_nodes(caption: nodes.caption | None) -> list[nodes.Node]:
    """The caption as a paragraph after the figure (builders other than HTML)."""
    if caption is None:
        return []
    return [nodes.paragraph(caption.astext(), "", *(c.deepcopy() for c in caption.children),
                            classes=["shapetrace-caption"])]


_PICTURE_ALT = {"diagram": "{model}: the diagram of its layers and the shapes between them",
                "flow": "{model}: channels and spatial size along the forward (shape-flow chart)"}


def _alt(figure: Figure, kind: str) -> str:
    """A picture's alternative text: the ``:alt:`` option for the first picture shown, else a short one of its
    own (two pictures of one figure never share a text, and none repeats the caption)."""
    first = next((k for k in figure.shows if k in figure.pictures), None)
    if figure.alt and kind == first:
        return figure.alt
    return _PICTURE_ALT.get(kind, "{model}: shapetrace " + kind).format(model=figure.model or "the model")


def _html(app: Any, docname: str, figure: Figure, number: int, ids: Sequence[str] = (),
          caption: nodes.caption | None = None) -> list[nodes.Node]:
    """The figure as HTML; ``ids`` are the names it is referred to by (a label before it, ``:name:``): the first
    is the figure's id, any other an empty element at its start, so every ``:ref:`` lands on the figure. A figure
    node, as ``.. figure::`` makes, holds the pictures and tables (HTML written here) and the caption (written by
    the builder, so its markup, its number with ``numfig`` and its permalink are a figure's), the links to the
    full-size pictures at its end."""
    esc = html.escape
    page = app.builder.get_target_uri(docname)
    prefix = "" if app.builder.name == "singlehtml" else relative_uri(page, "")
    slug = re.sub(r"[^A-Za-z0-9]+", "-", docname).strip("-") or "page"
    own, *more = [*ids, f"shapetrace-{slug}-{number}"]
    # An EPUB's pages may link only to the book's pages: the pictures are shown, not linked at full size.
    linked = not app.builder.name.startswith("epub")
    parts = [f'<span id="{esc(i)}"></span>' for i in more]
    full_links = []
    for kind in figure.shows:
        if kind in figure.pictures:
            pic = figure.pictures[kind]
            name = images.file_name(kind, pic.svg, "svg")
            images.write(Path(app.builder.outdir) / "_images" / name, pic.svg)
            uri = f"{prefix}_images/{name}"
            w, h = svg_size(pic.svg)
            label = "diagram" if kind == "diagram" else "shape-flow chart"
            img = (f'<img src="{esc(uri)}" alt="{esc(_alt(figure, kind))}" width="{w:.0f}" height="{h:.0f}" '
                   'loading="lazy" decoding="async" />')  # self-closed: EPUB pages are XHTML
            if not linked:
                parts.append(f'<span class="shapetrace-picture shapetrace-{kind}">{img}</span>')
                continue
            parts.append(f'<a class="shapetrace-picture shapetrace-{kind}" href="{esc(uri)}" '
                         f'title="Open the full-size {label} (SVG)">{img}</a>')
            full_links.append(f'<a class="shapetrace-full" href="{esc(uri)}">full-size {label}</a>')
        elif kind == "table":
            parts.append(figure.table_html)
        elif kind == "text":
            parts.append(f'<pre class="shapetrace-text">{esc(figure.table_text)}</pre>')
    shown = nodes.figure("", nodes.raw("", "\n".join(parts), format="html"), ids=[own],
                         classes=["shapetrace-figure"])
    if caption is not None or full_links:
        below = nodes.caption("", "", *(c.deepcopy() for c in caption.children) if caption is not None else ())
        if full_links:
            below += nodes.raw("", (" " if caption is not None else "") + "(" + ", ".join(full_links) + ")",
                               format="html")
        shown += below
    return [shown]


# Characters the text table writes that pdflatex (Sphinx's default engine) has no declaration for: each becomes
# ASCII that keeps the table's columns where they are (the mark of a failed call stays one character wide), and
# reads the same with any engine. Sphinx and LaTeX's utf8 input declare the others the table uses (─ — … × ·).
_LATEX_SAFE = str.maketrans({"≤": "<=", "≥": ">=", "✗": "x", "−": "-", "⋯": "...", "→": "->"})


def _latex(app: Any, figure: Figure, caption: nodes.caption | None) -> list[nodes.Node]:
    """The pictures as PDF/PNG files and the text table (ASCII where pdflatex would stop), then the caption."""
    out: list[nodes.Node] = []
    table_done = False
    for kind in figure.shows:
        if kind in figure.pictures:
            pic = figure.pictures[kind]
            data = _print_bytes(figure, pic)
            # Named by what it is drawn from, not by its bytes: the same figure keeps its file build after build.
            name = images.file_name(kind, _print_source(figure, pic), pic.print_format)
            images.write(Path(app.builder.outdir) / name, data)
            out.append(nodes.raw("", "\\begin{center}\n\\sphinxincludegraphics[width=\\linewidth,height=0.85"
                                     f"\\textheight,keepaspectratio]{{{name}}}\n\\end{{center}}\n", format="latex"))
        elif not table_done:
            table = figure.table_text.translate(_LATEX_SAFE)
            out.append(nodes.literal_block(table, table))
            table_done = True
    return out + _caption_nodes(caption)


def _print_source(figure: Figure, pic: Picture) -> str:
    """What the print picture is drawn from (its kind, format, trace and diagram options), as one text."""
    return json.dumps([pic.kind, pic.print_format, figure.trace_json, figure.diagram_options], sort_keys=True,
                      default=str)


def _print_bytes(figure: Figure, pic: Picture) -> bytes:
    """The picture for LaTeX: the diagram as Graphviz PDF, the flow chart as PNG, from the saved trace."""
    trace = Trace.from_json(figure.trace_json)
    if pic.kind == "diagram":
        return render_diagram(trace, format="pdf", **figure.diagram_options)
    data = shape_flow(trace, format="png")
    return data if isinstance(data, bytes) else data.encode("utf-8")


def _plain(figure: Figure, caption: nodes.caption | None) -> list[nodes.Node]:
    """Text-like builders: the text table once, and what each picture would have been."""
    out: list[nodes.Node] = []
    pictures = [k for k in figure.shows if k in figure.pictures]
    if pictures:
        said = ", ".join("the diagram" if k == "diagram" else "the shape-flow chart" for k in pictures)
        note = f"[shapetrace: {said} in the HTML and PDF documentation; the shape table here]"
        out.append(nodes.paragraph(note, note))
    out.append(nodes.literal_block(figure.table_text, figure.table_text))
    return out + _caption_nodes(caption)


def _resolve(app: Any, doctree: nodes.document, docname: str) -> None:
    fmt = getattr(app.builder, "format", "")
    for number, node in enumerate(list(doctree.findall(shapetrace_figure)), start=1):
        figure: Figure = node["figure"]
        caption = _caption_of(node)
        if fmt == "html":
            new = _html(app, docname, figure, number, node["ids"], caption)
        elif fmt == "latex":
            new = _latex(app, figure, caption)
        else:
            new = _plain(figure, caption)
        # A label docutils moved onto the figure (`.. _name:` before it, :name:) goes on what replaces it, as an
        # image's or a figure's does; LaTeX already has a \label for a `.. _name:` target written before it.
        if fmt != "html":  # HTML: on the figure element (_html)
            unlabelled = [i for i in node["ids"] if i not in _targeted(node)]
            if unlabelled:
                new = [nodes.target("", "", ids=unlabelled), *new]
        node.replace_self(new)


def _targeted(node: nodes.Element) -> set[str]:
    """The ids of the ``.. _name:`` targets written just before ``node`` (which already label it)."""
    parent = node.parent
    if parent is None:
        return set()
    found: set[str] = set()
    for sibling in reversed(parent.children[:parent.index(node)]):
        if not isinstance(sibling, nodes.target):
            break
        found.add(sibling.get("refid", ""))
    return found


# ---- failures and the exit status ----------------------------------------------------------------------
def _env_init(app: Any, env: Any, docnames: Any, *args: Any) -> None:
    if not hasattr(env, _FAILURES):
        setattr(env, _FAILURES, {})


def _purge(app: Any, env: Any, docname: str) -> None:
    getattr(env, _FAILURES, {}).pop(docname, None)
    images.purge(env, docname)


def _merge(app: Any, env: Any, docnames: Any, other: Any) -> None:
    mine = getattr(env, _FAILURES, None)
    if mine is None:
        mine = {}
        setattr(env, _FAILURES, mine)
    mine.update({d: m for d, m in getattr(other, _FAILURES, {}).items() if d in docnames})
    images.merge(env, docnames, other)


def _stylesheet(app: Any) -> None:
    """Every HTML builder (html, dirhtml, singlehtml, EPUB) links ``_static/shapetrace.css``: written as the
    builder starts, so it is in the output folder before EPUB lists and zips it."""
    if getattr(app.builder, "format", "") == "html":
        images.write(Path(app.outdir) / "_static" / "shapetrace.css", _CSS)


def _remove_stale(app: Any, *args: Any) -> list:
    """Once the pages are written: no SVG of the directive's that no page shows any more. Run when HTML builders
    collect their extra pages (before EPUB packs the folder; singlehtml collects none) and when the build
    finishes. No extra pages."""
    failed = any(isinstance(a, BaseException) for a in args)  # build-finished's exception
    if getattr(app.builder, "format", "") == "html" and app.env is not None and not failed:
        for name in images.remove_stale(app.env, Path(app.outdir)):
            logger.verbose("shapetrace: removed _images/%s, which no page shows any more", name)
    return []


def _finished(app: Any, exception: Exception | None) -> None:
    failures = getattr(app.env, _FAILURES, {}) if app.env is not None else {}
    messages = [m for docname in sorted(failures) for m in failures[docname]]
    if exception is None and messages:
        logger.warning("shapetrace: %d directive(s) failed; the build fails:\n  %s", len(messages),
                       "\n  ".join(messages), type="shapetrace", subtype="failed")
        app.statuscode = 1


def setup(app: Any) -> dict[str, Any]:
    """Sphinx entry point."""
    # A figure, as `.. figure::`'s are: numbered with them (numfig), found by :numref: and by :ref: by its caption.
    app.add_enumerable_node(shapetrace_figure, "figure")
    app.add_directive("shapetrace", ShapetraceDirective)
    app.connect("env-before-read-docs", _env_init)
    app.connect("env-purge-doc", _purge)
    app.connect("env-merge-info", _merge)
    app.connect("doctree-resolved", _resolve)
    app.connect("builder-inited", _stylesheet)
    app.connect("html-collect-pages", _remove_stale)
    app.connect("build-finished", _remove_stale)
    app.connect("build-finished", _finished)
    app.add_css_file("shapetrace.css")
    return {"version": __version__, "parallel_read_safe": True, "parallel_write_safe": True, "env_version": 5}
