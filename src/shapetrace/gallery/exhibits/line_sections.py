"""The gallery's "line by line" sections: which exhibits get one, for which module's forward, and the section.

``render_line_section(name, fmt)`` traces the exhibit with line information and renders the forward of
``LINE_SECTIONS[name]`` with the shapes each line made (``renderers/lines.py``): ``"html"`` (a fragment with
its own style), ``"md"`` or ``"text"``. ``None`` for an exhibit without a section.
"""

from __future__ import annotations

from ...renderers.lines import build_view, render
from ...tracer.api import trace
from . import get_exhibit

__all__ = ["LINE_SECTIONS", "render_line_section"]

# exhibit name -> (module whose forward is shown, "" for the model itself; what the section is about)
LINE_SECTIONS: dict[str, tuple[str, str]] = {
    "tabular-model": ("", "TabularModel.forward"),
    "awd-lstm-classifier": ("0", "SentenceEncoder.forward: BPT3C, one 72-token chunk at a time"),
    "camvid-unet": ("layers.4", "UnetBlock.forward (the first decoder block)"),
}


def render_line_section(name: str, fmt: str = "html") -> str | None:
    """The "line by line" section of exhibit ``name`` in ``fmt``, or ``None`` when it has none."""
    if name not in LINE_SECTIONS:
        return None
    module, about = LINE_SECTIONS[name]
    ex = get_exhibit(name)
    args, kwargs = ex.inputs()
    tr = trace(ex.build(), *args, lines=True, strict=False, forward_kwargs=kwargs)
    body = render(build_view(tr, module), fmt)
    if fmt == "html":
        return f'<section class="line-by-line"><h3>Line by line: {about}</h3>\n{body}</section>\n'
    if fmt == "md":
        return f"## Line by line: {about}\n\n{body}"
    return body
