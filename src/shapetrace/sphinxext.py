"""The ``.. shapetrace::`` Sphinx directive: a diagram or shape table traced when the docs are built.

In ``conf.py``: ``extensions = ["shapetrace.sphinxext"]``. Then, in a reStructuredText page::

    .. shapetrace:: camvid-unet
       :depth: 2

    .. shapetrace:: torchvision.models:resnet18
       :input: 1,3,64,64
       :show: table
       :depth: 1

MODEL and the options mean what they mean for ``shapetrace trace``: ``:input:`` (one spec per line for
several inputs), ``:arg:`` (``KEY=VALUE`` per line), ``:depth:``, ``:layout:`` (tb, lr, u), ``:style:``,
``:overlay:`` (names separated by spaces), ``:unroll:``, ``:train:``; ``:show:`` is ``diagram`` (inline
SVG, the default), ``table`` (the text table) or ``both``; ``:caption:`` adds a caption (an exhibit's own
caption is used when it is set to ``exhibit``). The diagram is rebuilt with the docs, so it always shows
the current code. A model that cannot be loaded or traced fails the build with the CLI's message.
"""

from __future__ import annotations

from typing import Any, ClassVar

from docutils import nodes
from docutils.parsers.rst import Directive, directives

SHOW = ("diagram", "table", "both")


def _lines(text: str | None) -> tuple[str, ...]:
    return tuple(line.strip() for line in (text or "").splitlines() if line.strip())


class ShapetraceDirective(Directive):
    """Trace a model while the docs build and insert its diagram and/or shape table."""

    required_arguments = 1
    has_content = False
    option_spec: ClassVar[dict[str, Any]] = {
        "input": directives.unchanged,
        "arg": directives.unchanged,
        "depth": directives.nonnegative_int,
        "layout": lambda v: directives.choice(v, ("tb", "lr", "u")),
        "style": lambda v: directives.choice(v, ("compact", "detailed")),
        "overlay": directives.unchanged,
        "unroll": directives.flag,
        "train": directives.flag,
        "show": lambda v: directives.choice(v, SHOW),
        "caption": directives.unchanged,
    }

    def run(self) -> list[nodes.Node]:
        from .session import SessionError, TraceRequest, trace_model

        spec = self.arguments[0]
        opts = self.options
        # As the CLI does (the session's rule): an exhibit runs as built, any other model in eval unless :train:.
        request = TraceRequest(spec, _lines(opts.get("input")), _lines(opts.get("arg")),
                               train=True if "train" in opts else None, ops=True)
        try:
            outcome = trace_model(request)
        except SessionError as e:
            raise self.error(f"shapetrace: {e}") from e
        if outcome.failed:
            raise self.error(f"shapetrace: {outcome.error}")
        result = outcome.trace
        show = opts.get("show", "diagram")
        out: list[nodes.Node] = []
        if show in ("diagram", "both"):
            out.append(nodes.raw("", self._svg(result), format="html"))
        if show in ("table", "both"):
            from .renderers.table import render_text

            text = render_text(result, depth=opts.get("depth"))
            out.append(nodes.literal_block(text, text))
        caption = opts.get("caption")
        if caption == "exhibit" and outcome.exhibit is not None:
            caption = outcome.exhibit.caption
        if caption:
            out.append(nodes.paragraph(caption, caption, classes=["shapetrace-caption"]))
        container = nodes.container("", *out, classes=["shapetrace"])
        return [container]

    def _svg(self, result: Any) -> str:
        from .renderers import RenderOptions
        from .session import RenderFailed, render_output

        opts = self.options
        # An exhibit's render hints travel in the trace (trace.meta["options"]); the directive's options win.
        options = RenderOptions(depth=opts.get("depth"), layout=opts.get("layout"), style=opts.get("style"),
                                unroll=True if "unroll" in opts else None,
                                overlays=tuple(opts.get("overlay", "").split()))
        try:
            svg = str(render_output(result, "svg", options))
        except RenderFailed as e:
            raise self.error(f"shapetrace: {e}") from e
        # Inline SVG inside HTML: drop the XML prolog and doctype, keep the <svg> element.
        start = svg.find("<svg")
        return svg[start:] if start >= 0 else svg


def setup(app: Any) -> dict[str, Any]:
    """Sphinx entry point."""
    app.add_directive("shapetrace", ShapetraceDirective)
    from . import __version__

    return {"version": __version__, "parallel_read_safe": True, "parallel_write_safe": True}
