"""Names in a diff are shown as text: never HTML a Markdown page would run, never a broken row or column."""

from __future__ import annotations

import html

import pytest
import torch
from torch import nn

from shapetrace.renderers.diff import diff_traces, render_markdown, render_trace_diff
from shapetrace.tracer.api import trace
from shapetrace.tracer.records import Comparison, Difference

HOSTILE = "<img src=x onerror=alert(1)>"


class _Named(nn.Module):
    """Its layers under the names given, called in turn (names ``nn.Sequential`` would refuse)."""

    def __init__(self, names: list[str], act: type[nn.Module], width: int = 3) -> None:
        super().__init__()
        self.m = nn.ModuleDict({"base": nn.Linear(3, width), **{n: act() for n in names}})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.m.values():
            x = layer(x)
        return x


def _diff(names: list[str], a_name: str = "a.json", b_name: str = "b.json"):
    x = torch.randn(2, 3)
    return diff_traces(trace(_Named(names, nn.ReLU), x), trace(_Named(names, nn.GELU), x), a_name, b_name)


def _commonmark(text: str) -> str:
    markdown_it = pytest.importorskip("markdown_it")  # a CommonMark renderer, as docs sites use
    return markdown_it.MarkdownIt("commonmark").enable("table").render(text)


def test_diff_markdown_shows_an_html_name_as_text_not_as_markup():
    page = _commonmark(render_trace_diff(_diff([HOSTILE]), "md"))
    assert "<img" not in page
    assert html.escape(f"m.{HOSTILE}", quote=False) in page  # the name, shown as it is


def test_diff_markdown_shows_a_file_name_holding_a_backtick_in_one_code_span():
    page = _commonmark(render_trace_diff(_diff(["x"], a_name="a`.json"), "md"))
    assert "<code>a`.json</code>" in page


def test_comparison_markdown_shows_an_html_name_as_text():
    c = Comparison("torchinfo", 2, 2, 2, [Difference(f"m.{HOSTILE}", "output shape", "(2,4)", "[2, 5]", "why")])
    page = _commonmark(render_markdown(c))
    assert "<img" not in page and html.escape(f"m.{HOSTILE}", quote=False) in page


def test_diff_text_keeps_a_name_with_a_newline_or_escape_on_its_one_row():
    text = render_trace_diff(_diff(["n\nl\x1b[31m"]), "text")
    assert "\x1b" not in text
    assert "m.n\\nl\\x1b[31m  class  ReLU  GELU" in text


def test_diff_text_aligns_rows_of_wide_names_by_display_width():
    wcwidth = pytest.importorskip("wcwidth")  # the terminal's own measure, an oracle independent of ours
    text = render_trace_diff(_diff(["卷积层卷积层", "plain"]), "text")
    rows = [ln for ln in text.splitlines() if "ReLU" in ln]
    assert len(rows) == 2
    assert len({wcwidth.wcswidth(ln[:ln.index("class")]) for ln in rows}) == 1, rows


def test_diff_html_shows_control_characters_escaped():
    page = render_trace_diff(_diff(["n\nl\x1b[2J"]), "html")
    assert "\x1b" not in page and "m.n\\nl\\x1b[2J" in page
