"""Display objects: what ``trace.table()``, ``trace.diagram()`` and ``trace.flow()`` return.

Each holds a trace and render options (refused at the call when it cannot render them), renders lazily (once;
a render that failed is remembered and not run again, except for a missing Graphviz, which installing it
mends) and

* shows itself in Jupyter (``_repr_mimebundle_``: ``text/html`` for the table, ``image/svg+xml`` for the
  diagram and the shape-flow chart, always with a ``text/plain`` fallback),
* writes itself with ``.save(path)``, the format taken from the suffix (or ``format=``); the file is written
  next to its final name and renamed into place, so a failed render never leaves a half-written file.

They are thin: every picture and table comes from the pure renderers (``html``, ``table``, ``diagram``,
``plots``); nothing here imports torch.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any, ClassVar

from ..tracer.records import Trace
from .atomic import resolve_target, write_atomically
from .diagram import INSTALL_HINT, LAYOUTS, STYLES, GraphvizNotFound, check_options, dot_available
from .diagram import render as render_diagram
from .hints import merged_options
from .html import render_html, render_page
from .plots import shape_flow
from .rows import DISPLAY_MAX_ROWS
from .table import render as render_table
from .table import render_text

__all__ = ["Diagram", "Flow", "Table", "save_file"]


def _save_problem(path: str | os.PathLike[str], e: OSError) -> OSError:
    """``e`` retold with the user's path (not the hidden temporary file's) and what to do."""
    if isinstance(e, IsADirectoryError) or Path(path).is_dir():
        hint = f"it is a folder; give a file name, e.g. {os.path.join(path, 'out' + Path(path).suffix)}"
    else:
        hint = f"{e.strerror or e}; choose a path in a folder you can write to"
    return OSError(e.errno, f"cannot save {os.fspath(path)!r}: {hint}")


def save_file(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write ``data`` to ``path`` atomically (through a symbolic link, into the file it points to; ``~`` expanded).

    ``OSError`` names ``path`` when it cannot be written (a folder, an unwritable place).
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    path = Path(path).expanduser()  # "~/x.svg" is the user's home, as in a shell, not a folder named "~"
    target = resolve_target(path)
    try:
        if target.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a folder")
        write_atomically(target, payload)
    except OSError as e:
        raise _save_problem(path, e) from e
    return Path(path)


# The narrowest text table: less leaves no room for a row (and wraps the title a character a line).
MIN_TABLE_WIDTH = 40


def table_width_problem(width: int) -> str | None:
    """What is wrong with ``width`` columns for a text table given by a user (``--width``, the Sphinx
    directive's ``:width:``): it must be 0 (no limit) or at least ``MIN_TABLE_WIDTH``; ``None`` when it is."""
    if width < 0 or 0 < width < MIN_TABLE_WIDTH:
        return f"{width}: the width must be 0 (no limit) or at least {MIN_TABLE_WIDTH} columns."
    return None


def _check_names(kind: str, options: dict[str, Any], allowed: tuple[str, ...]) -> None:
    """``TypeError`` for an option ``trace.<kind>()`` does not take (a typo would otherwise be ignored)."""
    unknown = [name for name in options if name not in allowed]
    if unknown:
        raise TypeError(f"trace.{kind}() got unknown option{'s' if len(unknown) > 1 else ''} "
                        f"{', '.join(map(repr, unknown))}; its options are {', '.join(allowed)}")


def _check_whole(name: str, value: Any, least: int, what: str) -> None:
    """``value`` is ``None`` or a whole number >= ``least``: else ``TypeError``/``ValueError`` naming ``name``."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be {what}, got {value!r} ({type(value).__name__})")
    if value < least:
        raise ValueError(f"{name} must be {what}, got {value}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    """``value`` is ``None`` or one of ``choices``: else ``ValueError`` naming ``name`` and the choices."""
    if value is not None and value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


class _Display:
    """A trace plus options, rendered on first use."""

    kind = "display"
    formats: ClassVar[dict[str, str]] = {}  # file suffix -> format name
    default_format = ""

    def __init__(self, trace: Trace, **options: Any) -> None:
        self._check(options)
        self.trace = trace
        self.options = options
        self._cache: dict[str, str | bytes] = {}
        self._failures: dict[str, Exception] = {}  # format -> why it could not be rendered: not tried again

    @classmethod
    def _check(cls, options: dict[str, Any]) -> None:
        """Refuse, at the call, options this display does not take or values it cannot render."""

    def render(self, format: str | None = None) -> str | bytes:
        """The rendering in ``format`` (default: the one Jupyter shows)."""
        fmt = (format or self.default_format).lower()
        allowed = {*self.formats.values(), self.default_format}
        if fmt not in allowed:
            raise ValueError(f"{self.kind} formats are {', '.join(sorted(allowed))} (any case); got {format!r}")
        return self._rendered(fmt)

    def _rendered(self, fmt: str) -> str | bytes:
        """The rendering in ``fmt`` (a format ``render`` takes, or one a display uses inside), made once."""
        if fmt in self._failures:  # a failed render (a dot that ran 300 s) is remembered, not run again
            raise self._failures[fmt]
        if fmt not in self._cache:
            try:
                self._cache[fmt] = self._render(fmt)
            except GraphvizNotFound:  # not the picture's fault: tried again once dot is on PATH
                raise
            except Exception as e:
                self._failures[fmt] = e
                raise
        return self._cache[fmt]

    def _render(self, fmt: str) -> str | bytes:
        raise NotImplementedError

    def save(self, path: str | os.PathLike[str], format: str | None = None) -> Path:
        """Write the rendering to ``path``; the format is ``format`` or follows the suffix. Returns the path."""
        target = Path(path)
        fmt = format.lower() if format else self.formats.get(target.suffix.lower())
        if fmt is None:
            known = ", ".join(sorted(self.formats))
            raise ValueError(f"cannot tell the format of {target.name!r}: use one of the suffixes {known} "
                             f"or pass format=")
        return save_file(path, self.render(fmt))

    def __repr__(self) -> str:
        opts = "".join(f", {k}={v!r}" for k, v in sorted(self.options.items()))
        return f"<shapetrace {self.kind} of {self.trace.model.cls}{opts}>"


# The text table a notebook keeps beside the HTML, shortened to ``max_rows`` as it is: made by ``Table`` for its
# display only (``render`` does not take it).
_SHORT_TEXT = "display text"


class Table(_Display):
    """The shape table: HTML in Jupyter (scoped CSS), ``str()`` is the text table.

    Options: ``depth``, ``view`` (``"calls"`` or ``"modules"``), for the text table ``width``, and for Jupyter's
    display ``max_rows`` (default ``DISPLAY_MAX_ROWS``; ``None``: every row): a longer table shows its first
    rows, its last and any failing one, and says how many it left out. ``str()`` and ``.save()`` give every row.
    """

    kind = "table"
    formats: ClassVar[dict[str, str]] = {".html": "html", ".htm": "html", ".txt": "text", ".md": "md", ".markdown": "md", ".csv": "csv"}
    default_format = "fragment"  # the scoped HTML table Jupyter shows; "html" is the standalone page

    @classmethod
    def _check(cls, options: dict[str, Any]) -> None:
        _check_names("table", options, ("depth", "view", "width", "max_rows"))
        _check_whole("max_rows", options.get("max_rows"), 1, "None or a whole number >= 1")
        _check_whole("depth", options.get("depth"), 0, "None or a whole number >= 0")
        _check_choice("view", options.get("view"), ("calls", "modules"))
        width = options.get("width")
        _check_whole("width", width, 0, f"None or 0 (no limit) or a whole number >= {MIN_TABLE_WIDTH}")
        if width and width < MIN_TABLE_WIDTH:
            raise ValueError(f"width must be None or 0 (no limit) or a whole number >= {MIN_TABLE_WIDTH}, "
                             f"got {width}")

    def _render(self, fmt: str) -> str:
        depth, view = self.options.get("depth"), self.options.get("view", "calls")
        if fmt == "fragment":
            return render_html(self.trace, depth=depth, view=view, max_rows=self._max_rows)
        if fmt == "html":
            return render_page(self.trace, depth=depth, view=view)
        if fmt == _SHORT_TEXT:
            return render_text(self.trace, depth=depth, view=view, width=self.options.get("width", 100),
                               max_rows=self._max_rows)
        return render_table(self.trace, fmt, depth=depth, view=view, width=self.options.get("width", 100))

    def __str__(self) -> str:
        return str(self.render("text"))

    def _repr_html_(self) -> str:
        return str(self.render())

    @property
    def _max_rows(self) -> int | None:
        return self.options.get("max_rows", DISPLAY_MAX_ROWS)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        # the text shortened as the HTML is (a notebook keeps both), made once as the other renderings are
        text = str(self) if self._max_rows is None else str(self._rendered(_SHORT_TEXT))
        return {"text/html": str(self.render()), "text/plain": text}


class _Picture(_Display):
    """An SVG picture; Jupyter shows the SVG, or says why there is none."""

    default_format = "svg"

    def _unavailable(self) -> str | None:
        """Why the SVG cannot be made here (``None`` when it can)."""
        return None

    def _repr_svg_(self) -> str | None:
        # IPython asks for this one too when the bundle has no SVG: a picture that could not be drawn says so
        # once (in the bundle's text), and is not drawn again
        if self._unavailable() or "svg" in self._failures:
            return None
        return str(self.render("svg"))

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        """The SVG; or, where Graphviz is missing or the picture cannot be drawn (dot failed or gave up, an
        overlay lacks its measurements), a text that says why, once, in place of a traceback."""
        why = self._unavailable()
        if why:
            return {"text/plain": why}
        try:
            svg = str(self.render("svg"))
        except (RuntimeError, ValueError, OSError) as e:
            return {"text/plain": f"{self!r} could not be drawn: {e}"}
        return {"image/svg+xml": svg, "text/plain": repr(self)}


class Diagram(_Picture):
    """The Graphviz diagram. Options are ``renderers.diagram.render``'s: ``depth``, ``layout``, ``style``,
    ``unroll``, ``overlays``, ``options``, ``show_params``."""

    kind = "diagram"
    formats: ClassVar[dict[str, str]] = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": "dot", ".gv": "dot"}

    @classmethod
    def _check(cls, options: dict[str, Any]) -> None:
        _check_names("diagram", options, ("depth", "layout", "style", "unroll", "overlays", "options",
                                          "show_params", "all_ops"))
        _check_whole("depth", options.get("depth"), 0, "None or a whole number >= 0")
        _check_choice("layout", options.get("layout"), LAYOUTS)
        _check_choice("style", options.get("style"), STYLES)

    def __init__(self, trace: Trace, **options: Any) -> None:
        super().__init__(trace, **options)
        # the trace's saved render hints (an exhibit's layout, fold, cut, overlays: meta.options) apply as they do
        # to `shapetrace render`; the options given here win, key by key
        self._drawn = {**options, "options": merged_options(trace, options.get("options"))}
        if options.get("options") is not None or options.get("overlays"):  # else: the saved hints alone, which
            check_options(trace, self._drawn.get("overlays"), self._drawn["options"])  # merged_options checked

    def _unavailable(self) -> str | None:
        return None if dot_available() else f"Graphviz's 'dot' was not found. {INSTALL_HINT}"

    def _render(self, fmt: str) -> str | bytes:
        data = render_diagram(self.trace, format=fmt, **self._drawn)
        return data.decode("utf-8") if fmt in ("svg", "dot") else data


class Flow(_Picture):
    """The shape-flow chart (channels and spatial size along the forward). Options: ``title``, ``max_labels``."""

    kind = "flow"
    formats: ClassVar[dict[str, str]] = {".svg": "svg", ".png": "png"}

    @classmethod
    def _check(cls, options: dict[str, Any]) -> None:
        _check_names("flow", options, ("title", "max_labels"))
        _check_whole("max_labels", options.get("max_labels"), 0, "a whole number >= 0 (0: no x labels)")
        title = options.get("title")
        if title is not None and not isinstance(title, str):
            raise TypeError(f"title must be a string or None, got {title!r} ({type(title).__name__})")

    def _render(self, fmt: str) -> str | bytes:
        return shape_flow(self.trace, format=fmt, **self.options)
