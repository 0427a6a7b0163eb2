"""What the commands read and write: ``-o`` paths (a folder, an input file, ``-`` for stdout) and saved traces
read from files, stdin and things that are not files."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import shapetrace
from shapetrace.cli import main

SAVED_TRACE_COMMANDS = [["render"], ["lines"]]


def invoke(*args: str, stdin: bytes | str | None = None):
    return CliRunner().invoke(main, list(args), input=stdin)


def no_traceback(result) -> bool:
    return "Traceback" not in result.output and (result.exception is None
                                                 or isinstance(result.exception, SystemExit))


@pytest.fixture
def saved(tmp_path):
    """A trace of a small model, saved with its line information (what every command taking a trace reads)."""
    path = tmp_path / "t.json"
    path.write_text(shapetrace.trace(nn.Sequential(nn.Linear(4, 2)), torch.zeros(3, 4), lines=True).to_json())
    return path


@pytest.fixture
def saved_failed(tmp_path):
    """A saved trace of a forward that failed (its second layer takes the wrong width)."""
    path = tmp_path / "failed.json"
    model = nn.Sequential(nn.Linear(4, 8), nn.Linear(5, 2))
    path.write_text(shapetrace.trace(model, torch.zeros(3, 4), lines=True, strict=False).to_json())
    return path


# ---- -o naming a folder ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [["render", "{saved}"], ["lines", "{saved}"], ["diff", "{saved}", "{saved}"],
                                     ["trace", "torch.nn:Linear", "-a", "in_features=4", "-a", "out_features=2",
                                      "-i", "3,4"]])
def test_an_output_ending_in_a_slash_names_a_folder_and_is_refused(saved, tmp_path, command):
    args = [a.format(saved=saved) for a in command]
    r = invoke(*args, "-o", f"{tmp_path / 'newdir'}/")
    assert r.exit_code == 2, r.output
    assert "names a folder" in r.output and "out.txt" in r.output and no_traceback(r)
    assert not (tmp_path / "newdir").exists()


# ---- -o naming an input ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [["render", "{saved}"], ["render", "{saved}", "-f", "json"],
                                     ["lines", "{saved}"], ["diff", "{saved}", "{other}"],
                                     ["diff", "{other}", "{saved}"]])
def test_an_output_that_is_an_input_trace_is_refused_and_the_trace_kept(saved, tmp_path, command):
    other = tmp_path / "other.json"
    other.write_bytes(saved.read_bytes())
    before = saved.read_bytes()
    args = [a.format(saved=saved, other=other) for a in command]
    r = invoke(*args, "-o", str(tmp_path / "." / saved.name))  # the same file, written another way
    assert r.exit_code == 2, r.output
    assert "is the input file" in r.output and "would replace it" in r.output and no_traceback(r)
    assert saved.read_bytes() == before
