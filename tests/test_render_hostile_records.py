"""The renderers hold up against records ``load`` would refuse but Python code can build by hand (a dtype with a
control character, a size beyond any float, a note without its number) and against odd but valid timings (a
time of 5e-324 ms or 1e308 ms, a timing without ``self_ms``): escaped text and plain numbers, never a crash
or a forged row."""

from __future__ import annotations

import json

import torch

import shapetrace
from shapetrace.renderers import diagram, plots, table, units
from shapetrace.renderers.units import format_bytes, note_text, tensor_text
from shapetrace.tracer.metrics import Note
from shapetrace.tracer.records import TensorMeta


def _trace(**timing):
    trace = shapetrace.trace(torch.nn.Linear(3, 2), torch.randn(4, 3))
    if timing:
        trace.calls[0].timing = timing
        trace.calls[0].flops = 10
    return trace


def test_a_tensors_dtype_is_shown_with_its_control_characters_escaped():
    assert tensor_text(TensorMeta((4, 2), "int8\nfake row", "cpu")) == "(4,2) int8\\nfake row"


def test_a_hand_made_dtype_with_a_newline_makes_no_row_of_its_own_in_the_table():
    trace = _trace()
    trace.calls[0].outputs = TensorMeta((4, 2), "float32\nfake    Conv2d", "cpu")
    text = table.render_text(trace, width=0)
    assert "float32\\nfake    Conv2d" in text
    assert not any(line.startswith("fake") for line in text.splitlines())


def test_a_nul_in_a_diagram_tooltip_is_written_as_an_escape():
    assert diagram.quote("float\x0032 →\nnext") == '"float\\\\x0032 →\\nnext"'


def test_sizes_beyond_any_float_are_written_in_exponent_form():
    assert format_bytes(2**1100) == "1.36e+331 B"
    assert units.exponent_form(-(10**400)) == "-1.00e+400"
    assert units.exponent_form(2**63) == f"{2**63:.2e}"


def test_the_table_of_a_hand_made_tensor_beyond_any_float_shows_its_size():
    trace = _trace()
    trace.calls[0].outputs = TensorMeta((2,) * 1100, "float32", "cpu")
    trace.outputs = trace.calls[0].outputs
    assert "Activations (MB):     5.43e+325" in table.render_text(trace, width=0)


def test_a_time_too_short_for_a_float_rate_leaves_the_flops_rate_empty():
    trace = _trace(total_ms=5e-324, self_ms=5e-324)
    row = next(line for line in table.render_text(trace, width=0).splitlines() if line.startswith("(root)"))
    assert row.split()[-1] == "10"  # the FLOPs; no FLOP/s after them
    assert table.render_csv(trace).splitlines()[1].endswith(",10,")


def test_the_time_plots_draw_a_profile_whose_timings_lack_self_ms():
    trace = _trace(total_ms=1.0)
    assert "<svg" in plots.time_bars(trace) and "<svg" in plots.time_vs_flops(trace)


def test_the_time_plots_draw_times_near_the_ends_of_the_float_range():
    for ms in (1e308, 5e-324):
        trace = _trace(total_ms=ms, self_ms=ms)
        assert "<svg" in plots.time_bars(trace) and "<svg" in plots.time_vs_flops(trace)


def test_a_note_built_without_its_count_says_some():
    assert note_text(Note("cuda-graph-launches")).startswith("some CUDA-graph launch(es)")
    assert note_text(Note("ran-in-some-timed-runs", count=2)).startswith("ran in some timed runs")


def test_a_trace_loaded_from_json_renders_a_tiny_time_in_every_table_format():
    trace = shapetrace.load(json.dumps(_trace(total_ms=5e-324, self_ms=5e-324).to_dict()))
    for fmt in table.FORMATS:
        assert table.render(trace, fmt)
