"""A saved trace whose content is wrong (not JSON, cut short, failing validation, empty) is the file's fault,
not the command line's: one ``Error: ...`` line naming the file, without click's usage banner, exit status 1.
A path that cannot be read as named (no such file) stays a usage error, status 2."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import shapetrace
from shapetrace.cli import main


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(shapetrace.trace(nn.Sequential(nn.Linear(4, 2)), torch.zeros(3, 4), lines=True).to_json())
    return path


def _broken(saved, how: str):
    text = saved.read_text()
    if how == "not json":
        saved.write_text("this is not json")
    elif how == "cut short":
        saved.write_text(text[: len(text) // 2])
    elif how == "invalid":
        data = json.loads(text)
        data["calls"][1]["parent"] = 99
        saved.write_text(json.dumps(data))
    else:
        saved.write_text("")
    return saved


@pytest.mark.parametrize("how", ["not json", "cut short", "invalid", "empty"])
@pytest.mark.parametrize("command", [["render"], ["lines"], ["diff", "{other}"]])
def test_a_saved_trace_with_wrong_content_is_one_error_line_with_status_1(saved, tmp_path, how, command):
    other = tmp_path / "other.json"
    other.write_bytes(saved.read_bytes())
    bad = _broken(saved, how)
    r = CliRunner().invoke(main, [command[0], str(bad), *[a.format(other=other) for a in command[1:]]])
    assert r.exit_code == 1, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {str(bad)!r} is "), r.output
    assert "Usage:" not in r.output and "Try " not in r.output and "Invalid value" not in r.output


def test_a_missing_trace_file_stays_a_usage_error_with_status_2(tmp_path):
    """A guard: naming a file that is not there is a command-line mistake (status 2 before and after)."""
    r = CliRunner().invoke(main, ["render", str(tmp_path / "nope.json")])
    assert r.exit_code == 2 and "no such file" in r.output
