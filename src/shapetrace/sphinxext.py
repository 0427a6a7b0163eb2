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
        from .tracer.api import TraceFailed, failure_message, trace
        from .tracer.inputs import InputSpecError
        from .tracer.models import ModelSpecError, load_model_and_inputs

        spec = self.arguments[0]
        opts = self.options
        try:
            loaded, args, kwargs = load_model_and_inputs(spec, _lines(opts.get("input")), _lines(opts.get("arg")))
            # As the CLI does: an exhibit runs as built, any other model in eval unless :train: is given.
            train = True if "train" in opts else (None if loaded.exhibit is not None else False)
            result = trace(loaded.module, *args, ops=True, train=train, forward_kwargs=kwargs)
        except (ModelSpecError, InputSpecError) as e:
            raise self.error(f"shapetrace: {e}") from e
        except TraceFailed as e:
            raise self.error(f"shapetrace: {failure_message(e.trace)}") from e
        show = opts.get("show", "diagram")
        out: list[nodes.Node] = []
        if show in ("diagram", "both"):
            out.append(nodes.raw("", self._svg(result, loaded.exhibit), format="html"))
        if show in ("table", "both"):
            from .renderers.table import render_text

            text = render_text(result, depth=opts.get("depth"))
            out.append(nodes.literal_block(text, text))
        caption = opts.get("caption")
        if caption == "exhibit" and loaded.exhibit is not None:
            caption = loaded.exhibit.caption
        if caption:
            out.append(nodes.paragraph(caption, caption, classes=["shapetrace-caption"]))
        container = nodes.container("", *out, classes=["shapetrace"])
        return [container]

    def _svg(self, result: Any, exhibit: Any) -> str:
        from .renderers.diagram import GraphvizNotFound, render

        opts = self.options
        overlays = tuple(opts.get("overlay", "").split())
        try:
            svg = render(result, format="svg", depth=opts.get("depth"), layout=opts.get("layout"),
                         style=opts.get("style"), unroll=True if "unroll" in opts else None, overlays=overlays,
                         options=getattr(exhibit, "options", None)).decode("utf-8")
        except GraphvizNotFound as e:
            raise self.error(f"shapetrace: {e}") from e
        # Inline SVG inside HTML: drop the XML prolog and doctype, keep the <svg> element.
        start = svg.find("<svg")
        return svg[start:] if start >= 0 else svg


def setup(app: Any) -> dict[str, Any]:
    """Sphinx entry point."""
    app.add_directive("shapetrace", ShapetraceDirective)
    from . import __version__

    return {"version": __version__, "parallel_read_safe": True, "parallel_write_safe": True}
