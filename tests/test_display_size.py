"""A notebook shows a long trace shortened: its first rows, its last and the failing one, saying how many it left
out and how to see them all; files and ``str()`` keep every row (``renderers.rows.elide``)."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
from IPython.lib.pretty import pretty
from torch import nn

import shapetrace
from shapetrace.renderers.html import render_html
from shapetrace.renderers.rows import DISPLAY_MAX_ROWS, elide, table_rows
from shapetrace.renderers.table import elided_note

STEPS = 600  # 1 + 2 * 600 calls: past the display's 1,000 rows


class Loop(nn.Module):
    """One Linear and one ReLU called ``STEPS`` times; ``fail_at`` makes the Linear of that step get a bad shape."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.cell, self.act, self.fail_at = nn.Linear(4, 4), nn.ReLU(), fail_at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for step in range(STEPS):
            x = self.act(self.cell(x if step != self.fail_at else x[:, :3]))
        return x


@pytest.fixture(scope="module")
def long_trace():
    return shapetrace.trace(Loop(), torch.randn(1, 4))


def body_rows(html: str) -> list[str]:
    return re.findall(r"<tr[ >].*?</tr>", html.split("<tbody>")[1].split("</tbody>")[0])


def test_a_long_trace_shows_in_a_notebook_with_a_thousand_rows_and_says_how_many_it_left_out(long_trace):
    calls = len(long_trace.calls)
    assert calls == 1 + 2 * STEPS > DISPLAY_MAX_ROWS
    rows = body_rows(long_trace._repr_html_())
    gaps = [r for r in rows if 'class="gap"' in r]
    assert len(rows) - len(gaps) == DISPLAY_MAX_ROWS
    assert len(gaps) == 1 and f"{calls - DISPLAY_MAX_ROWS:,} rows not shown" in gaps[0]
    assert f"{DISPLAY_MAX_ROWS:,} of {calls:,} rows shown" in long_trace._repr_html_()


def test_the_shortened_display_keeps_the_first_and_the_last_calls(long_trace):
    html = long_trace._repr_html_()
    assert 'title="cell"' in html and f'title="act#{STEPS - 1}"' in html  # the first call of cell, the last of act
    assert 'title="cell#400"' not in html  # row 801: past the first 750 rows, before the last 250


def test_the_failing_call_of_a_long_trace_is_shown_with_its_error():
    with pytest.raises(shapetrace.TraceFailed) as failed:
        shapetrace.trace(Loop(fail_at=STEPS - 60), torch.randn(1, 4))
    trace = failed.value.trace
    assert len(trace.calls) > DISPLAY_MAX_ROWS
    failed_rows = [r for r in body_rows(trace._repr_html_()) if 'failed' in r.split('>')[0]]
    assert len(failed_rows) == 1 and f"cell#{STEPS - 60}" in failed_rows[0] and "mat1 and mat2" in failed_rows[0]


def test_the_text_a_notebook_keeps_beside_the_html_is_shortened_too(long_trace):
    text = pretty(long_trace)
    assert f"⋯ {len(long_trace.calls) - DISPLAY_MAX_ROWS:,} rows not shown" in text
    assert len(text.splitlines()) < DISPLAY_MAX_ROWS + 40
    assert f"act#{STEPS // 2} " in str(long_trace)  # print() and str() give every row


def test_max_rows_none_shows_every_row_and_saved_files_keep_them_all(long_trace, tmp_path):
    table = long_trace.table(max_rows=None)
    assert len(body_rows(table._repr_mimebundle_()["text/html"])) == len(long_trace.calls)
    saved = long_trace.table().save(tmp_path / "t.html").read_text()
    assert len(body_rows(saved)) == len(long_trace.calls)


def test_a_failing_row_is_kept_even_where_the_display_would_leave_it_out(long_trace):
    rows = table_rows(long_trace)
    rows[500] = dataclasses.replace(rows[500], failed=True)  # a failure in the middle (a hand-built trace)
    shown = elide(rows, 100)
    assert shown.rows == rows[:75] + [rows[500]] + rows[-25:]  # the first 75, the failing one, the last 25
    assert shown.gaps == {74: 500 - 75, 75: 1201 - 25 - 501}  # after the 75th row shown, after the failing one
    assert elided_note(shown) == (f"101 of {len(rows):,} rows shown (the first, the last and any failing one): "
                                  "trace.table(max_rows=None) shows them all, a smaller depth folds them")


def test_max_rows_chooses_how_many_rows_the_display_shows(long_trace):
    bundle = long_trace.table(max_rows=40)._repr_mimebundle_()
    assert len([r for r in body_rows(bundle["text/html"]) if 'class="gap"' not in r]) == 40
    assert f"40 of {len(long_trace.calls):,} rows shown" in bundle["text/plain"]


@pytest.mark.parametrize("value", [0, -1])
def test_max_rows_below_one_is_refused_at_the_call(long_trace, value):
    with pytest.raises(ValueError, match="max_rows must be None or a whole number >= 1"):
        long_trace.table(max_rows=value)


def test_a_trace_within_the_limit_shows_every_row_as_before():
    trace = shapetrace.trace(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), torch.randn(1, 4))
    assert trace._repr_html_() == render_html(trace)
    assert "not shown" not in pretty(trace)


def test_the_repeated_calls_note_counts_every_repeat_not_only_those_shown(long_trace):
    more = f"and {STEPS - 2} more"  # cell#1 is named; cell#2 ... cell#599 are the others
    assert more in long_trace._repr_html_() and more in pretty(long_trace).replace("\n  ", " ")


class TwiceInTheMiddle(nn.Module):
    """1,200 different layers, and one layer called twice where a shortened display leaves rows out."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.ReLU() for _ in range(1200))
        self.twice = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i == 800:
                x = self.twice(self.twice(x))
        return x


def test_the_shortened_html_and_text_agree_on_leaving_out_a_call_column_the_rows_shown_leave_empty():
    trace = shapetrace.trace(TwiceInTheMiddle(), torch.randn(1, 4))
    header = pretty(trace).splitlines()[2]
    assert "<th>call</th>" not in trace._repr_html_() and " call " not in header
    assert "<th>call</th>" in trace.table(max_rows=None)._repr_mimebundle_()["text/html"]  # all rows: it has one


def test_a_table_shown_again_reuses_its_shortened_text(long_trace, monkeypatch):
    """A notebook asks for the display each time it shows the table: the shortened text is made once, as the
    HTML is, not again on every display."""
    from shapetrace.renderers import display

    made = []
    real = display.render_text
    monkeypatch.setattr(display, "render_text", lambda *a, **k: made.append(k) or real(*a, **k))
    table = long_trace.table(max_rows=40)
    first, again = table._repr_mimebundle_(), table._repr_mimebundle_()
    assert first == again and "40 of" in first["text/plain"]
    assert len(made) == 1
