"""``trace.lines()`` with hostile text: control, bidirectional and unpaired-surrogate characters in the source and
in the error message never reach a terminal or a page as they are, and the failing line's red stays readable."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

import shapetrace
from shapetrace.renderers.lines import _CSS, build_view, render
from shapetrace.tracer.api import trace
from shapetrace.tracer.codec import TraceFormatError

# A model file holding a Trojan Source line (U+2066..U+2069 isolates and U+202E around code) and an error message
# that carries an ANSI colour escape and a right-to-left override.
_MODEL = (
    "import torch\n"
    "from torch import nn\n"
    "\n"
    "\n"
    "class Bidi(nn.Module):\n"
    "    def __init__(self):\n"
    "        super().__init__()\n"
    "        self.lin = nn.Linear(4, 4)\n"
    "\n"
    "    def forward(self, x):\n"
    "        access = \"user\u202e \u2066# admin only\u2069 \u2066\"\n"
    "        x = self.lin(x)\n"
    "        raise ValueError(\"bad \\u202eRTL\\u202c \\x1b[31mred\")\n"
)

# What must never reach the output as it is: C0 controls (ESC), bidi overrides, embeddings and isolates.
_HOSTILE = re.compile("[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _trace(tmp_path: Path):
    path = tmp_path / "bidi_model.py"
    path.write_text(_MODEL, encoding="utf-8")
    ns = {"__name__": "bidi_model"}
    exec(compile(_MODEL, str(path), "exec"), ns)  # noqa: S102 - importing the model file
    return trace(ns["Bidi"](), torch.randn(2, 4), lines=True, strict=False)


def test_the_text_forms_footer_shows_the_errors_control_characters_as_escapes(tmp_path: Path):
    text = render(build_view(_trace(tmp_path)), "text")
    assert not _HOSTILE.search(text)
    assert "the forward failed: ValueError: bad \\u202eRTL\\u202c \\x1b[31mred" in text.splitlines()


def test_the_html_shows_the_sources_and_the_errors_bidi_and_control_characters_as_escapes(tmp_path: Path):
    page = render(build_view(_trace(tmp_path)), "html")
    assert not _HOSTILE.search(page)
    assert "The forward failed: ValueError: bad \\u202eRTL\\u202c \\x1b[31mred" in page
    assert page.count("\\u2066") == 2 and page.count("\\u2069") == 1  # the source line's isolates, escaped


def test_a_trace_whose_source_holds_a_lone_surrogate_shows_a_replacement_character(tmp_path: Path):
    trace = _trace(tmp_path)  # load() refuses such a file; a trace changed in Python can still hold one
    source = next(iter(trace.sources.values()))
    source["text"][0] += "  # \ud800"
    view = trace.lines()
    for text in (str(view), view.render("html"), view.render("md"), view.render("json")):
        text.encode("utf-8")  # no UnicodeEncodeError: the file, page or terminal gets valid text
    assert "def forward(self, x):  # \ufffd" in str(view)


def test_a_saved_trace_whose_source_holds_a_lone_surrogate_is_refused_naming_the_line(tmp_path: Path):
    data = json.loads(_trace(tmp_path).to_json())
    source = next(iter(data["sources"].values()))
    source["text"][0] += "  # \ud800"  # as a hand-edited or corrupt JSON file can hold it
    with pytest.raises(TraceFormatError, match=r"^sources\[.*\]\.text\[0\]: holds '\\ud800'"):
        shapetrace.Trace.from_dict(data)


def _luminance(rgb: tuple[float, float, float]) -> float:
    """WCAG 2 relative luminance of an sRGB colour (0-255 channels)."""
    def linear(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = map(linear, rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _contrast(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def _hex(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))


def test_the_failing_lines_red_is_mixed_with_the_text_colour_to_reach_4_5_to_1_on_light_and_dark_themes():
    rule = re.search(r"tr\.raised td\.shapes\{([^}]*)\}", _CSS).group(1)
    colours = [v.strip() for p, v in (d.split(":", 1) for d in rule.split(";") if d.strip()) if p.strip() == "color"]
    mix = re.fullmatch(r"color-mix\(in srgb, (#[0-9a-f]{6}) (\d+)%, currentColor\)", colours[-1])
    assert mix, colours  # the last colour wins where the browser knows color-mix(); the first is the fallback
    red, share = _hex(mix.group(1)), int(mix.group(2)) / 100
    # (text, background): JupyterLab light and dark, VS Code dark, a plain white page
    for text, background in (("#000000", "#ffffff"), ("#1f2328", "#ffffff"), ("#e0e0e0", "#111111"),
                             ("#cccccc", "#1e1e1e"), ("#d4d4d4", "#1e1e1e")):
        shown = tuple(share * r + (1 - share) * t for r, t in zip(red, _hex(text)))
        # on the raised row's translucent red fill (rgba(220,38,38,.15)) over the page
        fill = tuple(0.15 * r + 0.85 * b for r, b in zip((220, 38, 38), _hex(background)))
        assert _contrast(shown, fill) >= 4.5, (text, background, _contrast(shown, fill))
