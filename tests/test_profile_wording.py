"""How a profile's counts and refusals read: one repeat is "1 repeat", no warm-up is said so, a refusal says only
what applies to what was asked, and a saved profile asked for lines says what gives them."""

from __future__ import annotations

import torch
from click.testing import CliRunner
from torch import nn

import shapetrace
from shapetrace.cli import main
from shapetrace.cli_profile import summary


def _one_repeat():
    return shapetrace.profile(nn.Linear(4, 2), torch.randn(2, 4), device="cpu", warmup=0, repeat=1)


def test_the_stderr_summary_counts_one_repeat_in_the_singular():
    assert "(float32), 1 repeat: forward" in summary(_one_repeat())


def test_the_table_says_a_profile_had_no_warm_up_rather_than_after_0_warm_up():
    table = str(_one_repeat().table(width=0))
    assert "1 repeat, no warm-up" in table and "after 0 warm-up" not in table


def test_heat_time_on_a_trace_without_times_says_nothing_about_plots(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(shapetrace.trace(nn.Linear(4, 2), torch.randn(2, 4)).to_json())
    result = CliRunner().invoke(main, ["render", str(path), "-f", "dot", "--heat", "time"])
    assert result.exit_code == 2, result.output
    assert "shapes only; make it with shapetrace.profile() or 'shapetrace profile'; or use --heat" in result.stderr
    assert "'flow' plot" not in result.stderr


def test_lines_on_a_saved_profile_says_where_lines_come_from_and_that_the_file_keeps_the_times(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(_one_repeat().to_json())
    result = CliRunner().invoke(main, ["lines", str(path)])
    assert result.exit_code == 2, result.output
    assert "this is a saved profile, which has no line information" in result.stderr
    assert f"this file keeps the profile's times (render it: shapetrace render {path})" in result.stderr
