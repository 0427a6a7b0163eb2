"""``shapetrace diff`` of two profiles: a layer whose own time changed beyond noise is listed, even when
nothing else about it changed, and never reported as "No differences"; a change within noise is not."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from click.testing import CliRunner
from conftest import Sleeper
from torch import nn

import shapetrace
from shapetrace.cli import main
from shapetrace.renderers.diff import diff_traces, render_trace_diff


class Two(nn.Module):
    def __init__(self, first: float) -> None:
        super().__init__()
        self.first = Sleeper(first)
        self.second = Sleeper(0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))


def _profile(first: float) -> shapetrace.Trace:
    return shapetrace.profile(Two(first).eval(), torch.randn(2, 4), device="cpu", warmup=0, repeat=3)


@pytest.fixture(scope="module")
def fast_and_slow() -> tuple[shapetrace.Trace, shapetrace.Trace]:
    return _profile(0.005), _profile(0.04)


def test_a_layer_eight_times_slower_is_listed_with_both_self_times(fast_and_slow):
    a, b = fast_and_slow
    d = diff_traces(a, b)
    assert [r.label for r in d.time_changed] == ["first"]  # not its containers: their own time did not change
    text = render_trace_diff(d, "text", width=None)
    assert "No differences" not in text
    line = next(x for x in text.splitlines() if "self time" in x)
    assert line.split()[0] == "first" and "× slower" in line
    assert "own time changed beyond noise in 1 layer (1 slower, 0 faster" in text


def test_the_json_rows_carry_the_time_only_change(fast_and_slow):
    a, b = fast_and_slow
    data = json.loads(render_trace_diff(diff_traces(a, b), "json"))
    (row,) = data["rows"]
    first = next(c for c in a.calls if c.module == "first").timing["self_ms"]
    assert row["layer"] == "first" and row["status"] == "same" and row["self_ms"]["a"] == first
    assert row["self_ms"]["b"] > 5 * row["self_ms"]["a"]


def test_markdown_and_html_list_it_too(fast_and_slow):
    d = diff_traces(*fast_and_slow)
    assert "| first | self time |" in render_trace_diff(d, "md")
    assert '<td>first</td><td class="what">self time</td>' in render_trace_diff(d, "html")


def test_a_time_only_diff_exits_0_on_the_command_line(fast_and_slow, tmp_path):
    a, b = fast_and_slow
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    pa.write_text(a.to_json())
    pb.write_text(b.to_json())
    result = CliRunner().invoke(main, ["diff", str(pa), str(pb), "--width", "0"])
    assert result.exit_code == 0, result.output
    assert "No differences" not in result.output and "self time" in result.output


def _with_self(trace: shapetrace.Trace, module: str, ms: float, p10: float | None = None,
               p90: float | None = None) -> shapetrace.Trace:
    """A copy of ``trace`` whose call of ``module`` took ``ms`` by itself (and ``p10``/``p90``, if given)."""
    out = copy.deepcopy(trace)
    call = next(c for c in out.calls if c.module == module)
    timing = dict(call.timing)
    timing.update(self_ms=ms, total_ms=ms + timing["total_ms"] - timing["self_ms"])
    if p10 is not None:
        timing.update(p10_ms=p10, p90_ms=p90)
    call.timing = timing
    return out


def test_a_profile_against_itself_has_no_time_change_and_says_so(fast_and_slow):
    a, _ = fast_and_slow
    d = diff_traces(a, copy.deepcopy(a))
    assert d.time_changed == []
    text = render_trace_diff(d, "text", width=None)
    assert "No differences" in text and "own time: no layer's changed beyond noise" in text


def test_a_change_under_one_and_a_half_times_is_noise(fast_and_slow):
    a, _ = fast_and_slow
    own = next(c for c in a.calls if c.module == "second").timing["self_ms"]
    assert diff_traces(a, _with_self(a, "second", own * 1.4)).time_changed == []
    assert [r.label for r in diff_traces(a, _with_self(a, "second", own * 1.6)).time_changed] == ["second"]


def test_a_change_within_the_calls_own_spread_is_noise(fast_and_slow):
    a, _ = fast_and_slow
    own = next(c for c in a.calls if c.module == "second").timing["self_ms"]
    wide = _with_self(a, "second", own * 2, p10=own * 0.9, p90=own * 3)  # B's repeats ranged over 2.1x its ms
    assert diff_traces(a, wide).time_changed == []


def test_a_change_under_a_hundredth_of_the_forward_is_noise(fast_and_slow):
    a, _ = fast_and_slow
    assert a.calls[0].timing["total_ms"] > 10  # a hundredth of it: over 0.1 ms
    before, after = _with_self(a, "second.lin", 0.02), _with_self(a, "second.lin", 0.09)  # 4.5x, by 0.07 ms
    assert diff_traces(before, after).time_changed == []
    assert [r.label for r in diff_traces(before, _with_self(a, "second.lin", 2.0)).time_changed] == ["second.lin"]


class Four(nn.Module):
    """Four layers, each sleeping a few milliseconds of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(*(Sleeper(s) for s in (0.002, 0.003, 0.004, 0.005)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@pytest.fixture(scope="module")
def four() -> shapetrace.Trace:
    return shapetrace.profile(Four().eval(), torch.randn(2, 4), device="cpu", warmup=0, repeat=3)


def _slower_machine(trace: shapetrace.Trace, factor: float, jitter: float = 0.15,
                    except_module: str | None = None, extra: float = 1.0) -> shapetrace.Trace:
    """``trace`` as a machine ``factor`` times slower would time it: every call's times that factor, give or take
    ``jitter`` (a layer apart, ``except_module``, ``extra`` times more still)."""
    out = copy.deepcopy(trace)
    for i, call in enumerate(out.calls):
        k = factor * (1 + jitter * ((i % 3) - 1)) * (extra if call.module == except_module else 1.0)
        call.timing = {key: v * k if key.endswith("_ms") else v for key, v in call.timing.items()}
    root = out.calls[0].timing
    root["total_ms"] = trace.calls[0].timing["total_ms"] * factor
    return out


def test_a_forward_slower_alike_in_every_layer_lists_no_layer_and_says_so_in_one_line(four):
    d = diff_traces(four, _slower_machine(four, 20.0))
    assert d.time_changed == []
    text = render_trace_diff(d, "text", width=None)
    lines = [x for x in text.splitlines() if "most of its layers alike" in x]
    assert len(lines) == 1 and "the whole forward is 20.00× slower" in lines[0], text
    assert "own time's share of the forward: no layer's changed beyond noise" in text


def test_a_forward_faster_alike_in_every_layer_says_faster(four):
    text = render_trace_diff(diff_traces(four, _slower_machine(four, 0.1)), "text", width=None)
    assert "the whole forward is 10.00× faster, most of its layers alike" in text, text


def test_a_layer_slower_than_the_rest_of_a_slower_forward_is_still_listed(four):
    d = diff_traces(four, _slower_machine(four, 20.0, except_module="layers.2", extra=4.0))
    assert [r.label for r in d.time_changed] == ["layers.2"]
    text = render_trace_diff(d, "text", width=None)
    assert "changed beyond noise in 1 layer (1 slower than the forward, 0 faster" in text, text
    assert "; the whole forward" in next(x for x in text.splitlines() if "self time" in x)


def test_one_layer_taking_most_of_the_forward_is_not_a_machine_wide_change(four):
    slow = _with_self(four, "layers.3", 400.0)
    slow.calls[0].timing = {**slow.calls[0].timing, "total_ms": four.calls[0].timing["total_ms"] + 395.0}
    d = diff_traces(four, slow)
    assert d.machine_factor is None and [r.label for r in d.time_changed] == ["layers.3"]


def test_the_repr_and_the_summary_count_time_only_changes(fast_and_slow):
    d = diff_traces(*fast_and_slow)
    assert repr(d).endswith("0 changed, 0 only in A, 0 only in B, own time changed in 1>"), repr(d)
    text = render_trace_diff(d, "text", width=None)
    assert "0 changed, 0 only in A, 0 only in B, own time changed in 1 (of" in text, text


def test_a_forward_twice_as_slow_throughout_is_a_machine_change_even_where_each_layers_spread_is_wide(four):
    """Two repeats give spreads as wide as the change: the layers are judged alike by their ratios."""
    wide = copy.deepcopy(four)
    for call in wide.calls:
        t = call.timing
        call.timing = {**t, "p10_ms": t["self_ms"] * 0.2, "p90_ms": t["total_ms"] * 5}
    d = diff_traces(wide, _slower_machine(wide, 2.0, jitter=0.0))
    assert d.machine_factor == pytest.approx(2.0) and d.time_changed == []
