"""The lines view's colours read at WCAG AA (4.5:1, the formula of WCAG 2's relative luminance) on the light
and dark themes it is shown on (a gallery page, JupyterLab light and dark, VS Code dark), on the page and on
the raised line's red fill: token colours are hues mixed with the text colour, dimmed text is the text colour
made translucent, and nothing is dimmed by ``opacity``, which would lower the contrast of everything in it."""

from __future__ import annotations

import re

import pytest
from conftest import css_declarations

from shapetrace.renderers.lines import _CSS

# (text, page background): a plain white page and the gallery's, JupyterLab light and dark, VS Code dark
THEMES = (("#000000", "#ffffff"), ("#1f2328", "#ffffff"), ("#e0e0e0", "#111111"), ("#cccccc", "#1e1e1e"),
          ("#d4d4d4", "#1e1e1e"))
RAISED_FILL = ((220, 38, 38), 0.15)  # tr.raised td's background: rgba(220,38,38,.15) over the page


def _rgb(colour: str) -> tuple[int, ...]:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))


def _mix(a, b, share: float) -> tuple[float, ...]:
    return tuple(share * x + (1 - share) * y for x, y in zip(a, b))


def _luminance(rgb) -> float:
    def linear(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = map(linear, rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _contrast(a, b) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def _shown(value: str, text, background) -> tuple[float, ...] | None:
    """The colour a ``color`` value shows with this text colour over this background (None: the text's own)."""
    tint = re.fullmatch(r"color-mix\(in srgb, (#[0-9a-f]{6}) (\d+)%, currentColor\)", value)
    if tint:
        return _mix(_rgb(tint.group(1)), text, int(tint.group(2)) / 100)
    dim = re.fullmatch(r"color-mix\(in srgb, currentColor (\d+)%, transparent\)", value)
    if dim:
        return _mix(text, background, int(dim.group(1)) / 100)
    assert value in ("inherit", "currentColor"), value  # a fixed colour cannot suit light and dark pages
    return None


def _final_colours() -> dict[str, str]:
    """Each selector's ``color``: the last one given (the earlier ones are fallbacks for older browsers)."""
    return {sel: value for sel, prop, value in css_declarations(_CSS) if prop == "color"}


@pytest.mark.parametrize(("text", "page"), THEMES)
def test_every_colour_of_the_lines_view_has_4_5_to_1_contrast_on_light_and_dark_pages(text, page):
    fill = _mix(RAISED_FILL[0], _rgb(page), RAISED_FILL[1])
    low = {}
    for selector, value in _final_colours().items():
        for background in (_rgb(page), fill):
            shown = _shown(value, _rgb(text), background)
            if shown is not None and _contrast(shown, background) < 4.5:
                low[selector] = round(_contrast(shown, background), 2)
    assert low == {}, low


def test_nothing_in_the_lines_view_is_dimmed_by_opacity():
    assert [d for d in css_declarations(_CSS) if d[1] == "opacity"] == []


def test_never_run_code_is_shown_without_syntax_colours_in_italics():
    rules = {(sel, prop): value for sel, prop, value in css_declarations(_CSS)}
    assert rules[("table.st-lines.st-lines tr.unreached td.code", "font-style")] == "italic"
    assert rules[("table.st-lines.st-lines tr.unreached td.code span[class]", "color")] == "inherit"
