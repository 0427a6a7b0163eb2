"""The renderer registry: a format name -> the function that renders a ``Trace`` in it, and its file suffixes.

Every output a front end can write (the CLI's ``--format`` choices and ``-o`` suffixes, the profile command,
the gallery, the Sphinx directive) is looked up here, so adding a format is one registered function::

    @register("yaml", suffixes=(".yaml", ".yml"))
    def _yaml(trace: Trace, options: RenderOptions) -> str:
        ...

``render(trace, format, options)`` renders; ``format_for_path(path)`` picks the format a file name asks for
(refusing a suffix no renderer claims, with the list of those that are); ``formats()`` lists the names.
Options travel as one frozen ``RenderOptions``; each renderer reads the fields it understands. A diagram
also reads the render hints saved in the trace (``trace.meta["options"]``: an exhibit's layout, fold, cut,
overlays), so a saved JSON re-renders the same picture; options given explicitly win over those hints.

Renderers are pure: ``Trace`` + options -> ``str`` or ``bytes``; writing files happens in the session layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..tracer.records import Trace
from . import diagram, table
from .hints import hints_to_save, merged_options, saved_hints
from .html import render_page

__all__ = [
    "RenderOptions",
    "Renderer",
    "UnknownFormat",
    "format_for_path",
    "formats",
    "get",
    "hints_to_save",
    "register",
    "render",
    "saved_hints",
    "suffixes",
]

DEFAULT_FORMAT = "text"


@dataclass(frozen=True)
class RenderOptions:
    """How to render: one flat set of settings with defaults; every renderer reads the fields it knows.

    ``depth`` folds calls deeper than it (``None``: all). Tables: ``view`` (``calls`` or ``modules``),
    ``width`` (text columns; ``None``: no limit). Diagrams: ``layout``, ``style``, ``unroll``, ``overlays``,
    ``heat`` (time, memory or activations: turns the heat overlay on), ``show_params``, ``all_ops`` (draw
    ops that only index, cast or create constants, which are folded into edges by default); ``None`` and empty
    values defer to the trace's saved render hints, then to the renderer's defaults. The HTML page:
    ``with_diagram`` puts the diagram (with the diagram options) above the table.
    """

    depth: int | None = None
    view: str = "calls"
    width: int | None = 100
    layout: str | None = None
    style: str | None = None
    unroll: bool | None = None
    overlays: tuple[str, ...] = ()
    heat: str | None = None
    show_params: bool = False
    with_diagram: bool = False
    all_ops: bool | None = None  # diagrams: every functional op, not only those that compute with the data
    color: bool = False  # text table: ANSI emphasis (the CLI sets it for a terminal without NO_COLOR)


RenderFunction = Callable[[Trace, RenderOptions], "str | bytes"]


@dataclass(frozen=True)
class Renderer:
    """A registered format: its name, renderer, the file suffixes that ask for it, and what it needs.

    ``binary``: the renderer returns bytes that are not text (PNG, PDF); ``dataflow``: it draws the data
    flow, so the trace should record functional ops (``trace(..., ops=True)``).
    """

    name: str
    function: RenderFunction
    suffixes: tuple[str, ...]
    binary: bool = False
    dataflow: bool = False
    description: str = ""


_REGISTRY: dict[str, Renderer] = {}


class UnknownFormat(ValueError):
    """A format name or file suffix that no renderer claims; the message lists those that are."""


def register(name: str, *, suffixes: tuple[str, ...] = (), binary: bool = False, dataflow: bool = False,
             description: str = "") -> Callable[[RenderFunction], RenderFunction]:
    """Register ``fn(trace, options) -> str | bytes`` as the renderer of format ``name`` (a decorator)."""

    def add(function: RenderFunction) -> RenderFunction:
        if name in _REGISTRY:
            raise ValueError(f"the format {name!r} is registered twice")
        claimed = {s: r.name for r in _REGISTRY.values() for s in r.suffixes}
        for suffix in suffixes:
            if not suffix.startswith(".") or suffix != suffix.lower():
                raise ValueError(f"suffix {suffix!r} of {name!r}: write it lower case with its dot, like '.svg'")
            if suffix in claimed:
                raise ValueError(f"suffix {suffix!r} of {name!r} is already claimed by {claimed[suffix]!r}")
        _REGISTRY[name] = Renderer(name, function, tuple(suffixes), binary, dataflow, description)
        return function

    return add


def formats(*, dataflow: bool | None = None) -> tuple[str, ...]:
    """The registered format names, in registration order (only the diagram ones with ``dataflow=True``)."""
    return tuple(n for n, r in _REGISTRY.items() if dataflow is None or r.dataflow == dataflow)


def suffixes() -> tuple[str, ...]:
    """Every file suffix some renderer claims."""
    return tuple(s for r in _REGISTRY.values() for s in r.suffixes)


def get(name: str) -> Renderer:
    """The renderer of format ``name``; ``UnknownFormat`` naming the registered ones if there is none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownFormat(f"unknown format {name!r}; the formats are {', '.join(_REGISTRY)}") from None


def format_for_path(path: str | Path, default: str = DEFAULT_FORMAT) -> str:
    """The format a file name asks for by its suffix (``default`` when it has none).

    Raises ``UnknownFormat`` listing the suffixes renderers claim when no renderer claims this one.
    """
    suffix = Path(path).suffix.lower()
    if not suffix:
        return default
    for r in _REGISTRY.values():
        if suffix in r.suffixes:
            return r.name
    raise UnknownFormat(f"no renderer writes {suffix!r} files ({Path(path).name}); use one of these suffixes: "
                        f"{', '.join(suffixes())}, or give --format")


def render(trace: Trace, format: str = DEFAULT_FORMAT, options: RenderOptions | None = None) -> str | bytes:
    """Render ``trace`` in ``format`` with ``options`` (the defaults when ``None``): ``bytes`` for a binary
    format, ``str`` for the others."""
    renderer = get(format)
    out = renderer.function(trace, options or RenderOptions())
    return out.decode("utf-8") if isinstance(out, bytes) and not renderer.binary else out


# ---- the built-in formats ---------------------------------------------------------------------------------
def _table(fmt: str) -> RenderFunction:
    def render_table(trace: Trace, options: RenderOptions) -> str:
        return table.render(trace, fmt, depth=options.depth, view=options.view, width=options.width,
                            color=options.color)

    return render_table


for _name, _suffixes, _what in (("text", (".txt", ".text"), "the shape table as plain text"),
                                ("md", (".md", ".markdown"), "the shape table in Markdown")):
    register(_name, suffixes=_suffixes, description=_what)(_table(_name))


@register("html", suffixes=(".html", ".htm"),
          description="a standalone HTML page of the shape table (with_diagram: the diagram above it)")
def _html_page(trace: Trace, options: RenderOptions) -> str:
    settings = diagram_settings(trace, options) if options.with_diagram else {}  # a page without one reads no hint
    settings.pop("depth", None)  # the page's diagram folds at the table's depth
    return render_page(trace, depth=options.depth, view=options.view, with_diagram=options.with_diagram,
                       diagram_options=settings)


register("csv", suffixes=(".csv",), description="the shape table as CSV, one row per call")(_table("csv"))


@register("json", suffixes=(".json",), description="the trace itself (reload with shapetrace.load)")
def _json(trace: Trace, options: RenderOptions) -> str:
    return trace.to_json()


def diagram_settings(trace: Trace, options: RenderOptions) -> dict[str, Any]:
    """The keyword arguments of ``diagram.render`` for ``options`` over the trace's saved render hints."""
    overlays = tuple(options.overlays)
    if options.heat:
        overlays = tuple(dict.fromkeys([*overlays, "heat"]))
    given = {"heat": options.heat} if options.heat else None
    return {"depth": options.depth, "layout": options.layout, "style": options.style, "unroll": options.unroll,
            "overlays": list(overlays), "options": merged_options(trace, given), "show_params": options.show_params,
            "all_ops": options.all_ops}


def _diagram(fmt: str) -> RenderFunction:
    def render_diagram(trace: Trace, options: RenderOptions) -> bytes:
        return diagram.render(trace, format=fmt, **diagram_settings(trace, options))

    return render_diagram


for _name, _suffixes, _binary, _what in (
        ("svg", (".svg",), False, "the architecture diagram (Graphviz)"),
        ("png", (".png",), True, "the architecture diagram as a PNG image"),
        ("pdf", (".pdf",), True, "the architecture diagram as a PDF"),
        ("dot", (".dot", ".gv"), False, "the architecture diagram's Graphviz source (needs no Graphviz)"),
        ("jpg", (".jpg", ".jpeg"), True, "the architecture diagram as a JPEG image"),
        ("gif", (".gif",), True, "the architecture diagram as a GIF image"),
        ("webp", (".webp",), True, "the architecture diagram as a WebP image")):
    register(_name, suffixes=_suffixes, binary=_binary, dataflow=True, description=_what)(_diagram(_name))
