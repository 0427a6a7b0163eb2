"""A KeyboardInterrupt in the model's code (or Ctrl-C) ends a command with status 130, as a shell reports for a
program Ctrl-C ended, and one line saying where it stopped: which run of a profile, or the forward of a trace."""

from __future__ import annotations

from click.testing import CliRunner

from shapetrace.cli import main

MODELS = '''
import torch
from torch import nn


class InterruptsOnCall(nn.Module):
    def __init__(self, call=1):
        super().__init__()
        self.lin, self.call, self.calls = nn.Linear(4, 4), call, 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.call:
            raise KeyboardInterrupt
        return self.lin(x)
'''


def _run(tmp_path, *args: str):
    path = tmp_path / "interrupts.py"
    path.write_text(MODELS)
    return CliRunner().invoke(main, [args[0], f"{path}:InterruptsOnCall", "-i", "2,4", *args[1:]])


def test_an_interrupted_profile_exits_130_naming_the_timed_run(tmp_path):
    # the timed runs start from the state the shape pass started from: call 4 is run 2's instrumented forward
    result = _run(tmp_path, "profile", "--arg", "call=4", "--device", "cpu", "--warmup", "1", "--repeat", "3")
    assert result.exit_code == 130, result.output
    assert "Interrupted: the forward was interrupted (KeyboardInterrupt) in timed run 1 of 3 of the profile\n" \
        in result.stderr
    assert "Aborted!" not in result.stderr and result.stdout == ""


def test_an_interrupt_in_a_profile_s_first_forward_names_the_shape_pass(tmp_path):
    result = _run(tmp_path, "profile", "--device", "cpu")
    assert result.exit_code == 130, result.output
    assert "interrupted (KeyboardInterrupt) in the profile's shape pass" in result.stderr


def test_an_interrupt_in_a_plain_timed_forward_says_it_had_no_hooks(tmp_path):
    result = _run(tmp_path, "profile", "--arg", "call=2", "--device", "cpu", "--warmup", "0", "--repeat", "2")
    assert result.exit_code == 130, result.output
    assert "in timed run 1 of 2 of the profile, a forward without hooks" in result.stderr


def test_an_interrupted_trace_exits_130_saying_the_forward_was_interrupted(tmp_path):
    result = _run(tmp_path, "trace")
    assert result.exit_code == 130, result.output
    assert "Interrupted: the model's code was interrupted (KeyboardInterrupt) while running its forward" \
        in result.stderr


def test_an_interrupted_lines_view_exits_130(tmp_path):
    result = _run(tmp_path, "lines")
    assert result.exit_code == 130, result.output
    assert "interrupted (KeyboardInterrupt) while running its forward" in result.stderr


def test_an_interrupt_early_in_a_gallery_build_exits_130_with_one_line(tmp_path, monkeypatch):
    from shapetrace.gallery import site

    def interrupted() -> int:  # Ctrl-C while the progress bar is made, before the build starts
        raise KeyboardInterrupt

    monkeypatch.setattr(site, "default_jobs", interrupted)
    result = CliRunner().invoke(main, ["gallery", "build", "-o", str(tmp_path / "gal")])
    assert result.exit_code == 130, result.output
    assert "Aborted!" not in result.stderr and result.stderr.count("Interrupted:") == 1


def test_an_interrupted_warm_up_is_named_a_warm_up_not_a_timed_run(tmp_path):
    result = _run(tmp_path, "profile", "--arg", "call=2", "--device", "cpu", "--warmup", "3", "--repeat", "20")
    assert result.exit_code == 130, result.output
    assert "in warm-up run 1 of 3 of the profile" in result.stderr and "timed run" not in result.stderr
