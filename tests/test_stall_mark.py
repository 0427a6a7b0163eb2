"""The ``!`` stall mark of a profile's ``ms`` (a time above the call's own p90 and well above its median): the
table and the profile summary mark the same rows in both views, and the mark keeps the decimals in line."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from torch import nn

import shapetrace
from shapetrace.cli_profile import summary
from shapetrace.renderers.html import render_html, render_page
from shapetrace.renderers.rows import above_own_p90, table_rows
from shapetrace.renderers.table import render_text


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.loop = nn.Linear(8, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.a(x)
        for _ in range(3):
            x = self.loop(x)
        return self.head(x)


def _stalled(trace: shapetrace.Trace, label: str) -> None:
    """Make ``label``'s call look stalled: its ms far above its own p90 and median."""
    call = next(c for c in trace.calls if c.label == label)
    call.timing = {**call.timing, "total_ms": 9.0, "self_ms": 9.0, "median_ms": 0.03, "p10_ms": 0.02,
                   "p90_ms": 0.04}


@pytest.fixture(scope="module")
def stalled() -> shapetrace.Trace:
    trace = copy.deepcopy(shapetrace.profile(Net(), torch.randn(2, 8), device="cpu", warmup=0, repeat=3))
    _stalled(trace, "head")    # a module called once
    _stalled(trace, "loop#1")  # one call of a module called three times
    return trace


def _summary_marked(text: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"%  (\S+) \(.*\)  ! above its own p90", text)}


def _table_marked(trace: shapetrace.Trace, view: str) -> set[str]:
    return {r.name for r in table_rows(trace, view=view) if above_own_p90(r.timing)}


@pytest.mark.parametrize("view", ["calls", "modules"])
def test_the_summary_and_the_table_mark_the_same_rows(stalled, view):
    marked = _table_marked(stalled, view)
    assert marked == _summary_marked(summary(stalled, view=view))
    assert "head" in marked  # a module called once keeps its call's quantiles, and so its mark, in both views
    text = render_text(stalled, view=view, width=None)
    assert re.search(r"^  head .* 9\.000 !", text, re.MULTILINE), text


def test_a_module_of_several_calls_is_not_marked_in_the_modules_view(stalled):
    assert "loop" not in _table_marked(stalled, "modules")
    assert "loop#1" in _table_marked(stalled, "calls")


@pytest.mark.parametrize("view", ["calls", "modules"])
def test_the_mark_keeps_the_decimals_of_the_ms_column_in_line(stalled, view):
    lines = render_text(stalled, view=view, width=None).splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("layer"))
    end = lines[header].index(" ms ") + len(" ms")  # the column is right-aligned: its last character
    body = lines[header + 2:lines.index(lines[header + 1], header + 2)]
    assert len(body) >= 4
    for line in body:
        assert line[end - 1] in "! " and line[end - 2] == " " and line[end - 6] == ".", (line, end)


def test_the_html_table_keeps_room_for_the_mark_in_every_ms_cell(stalled):
    html = render_html(stalled)
    ms_cells = re.findall(r'<td class="num">[\d.,]+<span class="stall">(!?)</span></td>', html)
    assert sorted(ms_cells) == [""] * (len(stalled.calls) - 2) + ["!", "!"]
    assert "span.stall" in html and "width: 1.1ch" in html and "span.stall" in render_page(stalled)


def test_a_table_without_a_mark_keeps_its_ms_cells_as_they_were():
    trace = shapetrace.profile(Net(), torch.randn(2, 8), device="cpu", warmup=0, repeat=3)
    if any(r for r in _table_marked(trace, "calls")):
        pytest.skip("a real stall in this run")
    assert 'class="stall"' not in render_html(trace) and "span.stall" not in render_page(trace)
