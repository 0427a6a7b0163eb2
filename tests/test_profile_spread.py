"""How a profile's spread reaches the reader: each call's median, p10 and p90 in the Markdown, HTML and CSV
tables, and a mark on a ``ms`` that a stall set (above the call's own p90, well above its median), in every
table and in the summary ``shapetrace profile`` prints."""

from __future__ import annotations

import csv
import io
import time

import pytest
import torch
from torch import nn

import shapetrace
from shapetrace.cli_profile import summary
from shapetrace.renderers.html import render_html
from shapetrace.renderers.rows import above_own_p90
from shapetrace.renderers.table import render_csv, render_markdown, render_text
from shapetrace.renderers.units import format_ms


class Layer(nn.Module):
    """A Linear that stalls 10 ms when the forward says it is its turn."""

    def __init__(self, i: int) -> None:
        super().__init__()
        self.i = i
        self.lin = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor, stall: int) -> torch.Tensor:
        if stall == self.i:
            time.sleep(0.01)
        return self.lin(x)


class Twenty(nn.Module):
    """20 alike layers; in each forward exactly one of them, a different one each time, stalls (a stand-in for
    a garbage collection or a preemption hitting a random layer)."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Layer(i) for i in range(20))
        self.forwards = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forwards += 1
        stall = (self.forwards * 7) % 20
        for layer in self.layers:
            x = layer(x, stall)
        return x


@pytest.fixture(scope="module")
def stalled() -> shapetrace.Trace:
    return shapetrace.profile(Twenty(), torch.randn(4, 16), device="cpu", warmup=0, repeat=10)


def _call(trace: shapetrace.Trace, module: str):
    return next(c for c in trace.calls if c.module == module)


def test_the_layers_a_stall_hit_in_the_kept_repeats_are_marked(stalled):
    layers = [c for c in stalled.calls if c.cls == "Layer"]
    # the oracle: a layer of microseconds whose ms is over a millisecond had its 10 ms stall in a kept repeat
    hit = {c.module for c in layers if c.timing["total_ms"] > 1 and c.timing["median_ms"] < 1}
    assert hit  # every kept repeat stalled some layer
    marked = {c.module for c in layers if above_own_p90(c.timing)}
    assert hit <= marked
    text = render_text(stalled, width=None)
    for name in hit:
        row = next(line for line in text.splitlines() if line.split()[:1] == [name])
        assert " ! " in row + " "


def test_markdown_has_each_calls_median_p10_and_p90(stalled):
    md = render_markdown(stalled)
    header = md.splitlines()[0]
    assert "| self ms | median ms | p10 ms | p90 ms |" in header
    t = _call(stalled, "layers.0").timing
    row = next(line for line in md.splitlines() if "`layers.0`" in line)
    cells = [c.strip() for c in row.split("|")]
    cols = [c.strip() for c in header.split("|")]
    for col, key in (("median ms", "median_ms"), ("p10 ms", "p10_ms"), ("p90 ms", "p90_ms")):
        assert cells[cols.index(col)] == format_ms(t[key])


def test_csv_has_the_spread_as_numbers(stalled):
    rows = list(csv.DictReader(io.StringIO(render_csv(stalled))))
    steady = next(r for r in rows if r["layer"] == "layers.0")
    t = _call(stalled, "layers.0").timing
    assert float(steady["p90 ms"]) == pytest.approx(t["p90_ms"], abs=1e-3)
    assert float(steady["median ms"]) == pytest.approx(t["median_ms"], abs=1e-3)
    assert "!" not in ",".join(r["ms"] for r in rows)  # CSV stays numbers


def test_html_has_the_spread_columns(stalled):
    page = render_html(stalled)
    assert ">median ms</th>" in page and ">p10 ms</th>" in page and ">p90 ms</th>" in page


def test_the_text_table_keeps_its_columns(stalled):
    assert "median ms" not in render_text(stalled, width=None)


def _hand_timed(total: float, median: float, p90: float) -> shapetrace.Trace:
    trace = shapetrace.trace(nn.Sequential(nn.Linear(2, 2)), torch.randn(1, 2))
    for c in trace.calls:
        c.timing = {"total_ms": total, "self_ms": total if c.parent is not None else 0.0, "median_ms": median,
                    "p10_ms": median * 0.9, "p90_ms": p90, "cpu_ms": total, "kind": "cpu-wall"}
    return trace


def test_a_ms_a_stall_set_is_marked_and_the_note_gives_the_median():
    trace = _hand_timed(total=6.0, median=0.04, p90=3.6)  # 20 layers, one stalls 30 ms in each forward
    text = render_text(trace, width=None)
    row = next(line for line in text.splitlines() if line.strip().startswith("0 "))
    assert "6.000 !" in row
    assert "! ms above the call's own p90" in text and "0 (median 0.040)" in text
    assert "6.000 !" in render_markdown(trace) and '6.000<span class="stall">!</span>' in render_html(trace)


def test_a_ms_within_its_spread_or_a_jitter_of_microseconds_is_not_marked():
    assert not above_own_p90({"total_ms": 3.0, "median_ms": 2.9, "p90_ms": 3.5})  # within its spread
    assert not above_own_p90({"total_ms": 0.036, "median_ms": 0.028, "p90_ms": 0.035})  # 8 µs above
    assert not above_own_p90({"total_ms": 0.5, "median_ms": 0.4, "p90_ms": 0.45})  # only 1.25x its median
    assert above_own_p90({"total_ms": 6.0, "median_ms": 0.04, "p90_ms": 3.6})
    assert not above_own_p90({"total_ms": 6.0})  # a hand-made timing without quantiles


def test_the_profile_summary_marks_a_stalled_call_with_its_median():
    trace = _hand_timed(total=6.0, median=0.04, p90=3.6)
    trace.timing = {"kind": "cpu-wall", "device": "cpu", "dtype": "float32", "repeats": 10, "forward_ms": 6.0,
                    "profiled_ms": 6.0, "overhead": 1.0, "attributed_ms": 6.0}
    line = next(x for x in summary(trace).splitlines() if "(Linear)" in x)
    assert line.endswith("! above its own p90 (median 0.040 ms): a stall in the repeats kept")


def test_the_modules_view_whose_rows_add_calls_up_has_no_spread_columns(stalled):
    assert "median ms" not in render_markdown(stalled, view="modules")
    assert "median ms" not in render_csv(stalled, view="modules")
