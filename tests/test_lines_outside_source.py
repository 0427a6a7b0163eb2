"""The lines view shows a call whose recorded line is outside its forward's source as saved (the file edited,
the source changed since the trace) on a row of its own with that line number and a note, rather than
dropping it or passing it off as made outside the forward."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import shapetrace
from shapetrace.renderers.lines import build_view, render


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 2)
        self.c = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.a(x)
        x = self.b(x)
        return self.c(x)  # 2 features into a Linear of 3: raises


def _cut_source(trace: shapetrace.Trace, keep: int) -> shapetrace.Trace:
    """The trace as saved, with its root forward's saved text cut to its first ``keep`` lines."""
    data = json.loads(trace.to_json())
    root_source = data["sources"][data["calls"][0]["code"]["source"]]
    root_source["text"] = root_source["text"][:keep]
    root_source.pop("code_lines", None)
    return shapetrace.load(data)


@pytest.fixture(scope="module")
def failed() -> shapetrace.Trace:
    return shapetrace.trace(Net(), torch.zeros(2, 4), lines=True, strict=False)


def test_a_call_whose_line_is_past_the_saved_source_is_shown_with_its_line_and_a_note(failed):
    line_b = failed.calls_of("b")[0].line
    text = render(build_view(_cut_source(failed, 2)))  # the def line and `x = self.a(x)` only
    row = next(r for r in text.splitlines() if "b Linear" in r)
    assert row.split("│")[0].strip() == str(line_b) and "(outside the source as saved)" in row
    note = next(r for r in text.splitlines() if r.startswith("note: line"))
    assert str(line_b) in note.split(" are ")[0] and "outside the source of Net.forward as saved" in note
    assert "the source may have changed since the trace" in note
    assert "made outside these lines" not in text


def test_the_line_an_error_left_by_is_shown_even_past_the_saved_source(failed):
    raised = failed.calls[0].code["raised"]
    view = build_view(_cut_source(failed, 2))
    row = next(ln for ln in view.sources[0].lines if ln.number == raised)
    assert row.outside and row.state == "raised" and "mat1 and mat2" in (row.error or "")
    assert raised in view.sources[0].outside
    page = render(view, "json")
    assert '"outside_source": true' in page and '"outside_lines"' in page


def test_calls_within_the_saved_source_are_shown_on_their_lines(failed):
    """A guard: with the whole source saved, nothing is said to be outside it (before and after the change)."""
    text = render(build_view(failed))
    assert "outside the source" not in text and "made outside these lines" not in text
    row = next(r for r in text.splitlines() if "b Linear" in r)
    assert "x = self.b(x)" in row
