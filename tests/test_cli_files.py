"""What the commands read and write: ``-o`` paths (a folder, an input file, ``-`` for stdout) and saved traces
read from files, stdin and things that are not files."""

from __future__ import annotations

import os

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import shapetrace
from shapetrace.cli import main
from shapetrace.tracer import tracefile

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


# ---- '-': stdin and stdout -------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [["render", "-"], ["lines", "-"], ["diff", "-", "{saved}"]])
def test_a_saved_trace_is_read_from_stdin_given_as_dash(saved, command):
    r = invoke(*[a.format(saved=saved) for a in command], stdin=saved.read_bytes())
    assert r.exit_code == 0, r.output
    assert "Linear" in r.output or "same" in r.output or "no difference" in r.output.lower(), r.output


def test_diff_refuses_reading_both_sides_from_stdin(saved):
    r = invoke("diff", "-", "-", stdin=saved.read_bytes())
    assert r.exit_code == 2 and "only one of them can be read from stdin" in r.output


@pytest.mark.parametrize("command", [["render", "{saved}"], ["render", "{saved}", "-f", "json"],
                                     ["lines", "{saved}"], ["diff", "{saved}", "{saved}"],
                                     ["trace", "torch.nn:Linear", "-a", "in_features=4", "-a", "out_features=2",
                                      "-i", "3,4"]])
def test_dash_as_output_writes_to_stdout_not_a_file_named_dash(saved, tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    r = invoke(*[a.format(saved=saved) for a in command], "-o", "-")
    assert r.exit_code == 0, r.output
    assert "wrote" not in r.output and r.output.strip()
    assert not (tmp_path / "-").exists()


# ---- what is not a trace file ------------------------------------------------------------------------------------
@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "pipe.json"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("command", [["render"], ["lines"], ["diff", "{saved}"]])
def test_a_fifo_named_as_a_trace_is_refused_rather_than_waited_on(saved, fifo, command):
    r = invoke(*[a.format(saved=saved) for a in command], str(fifo))
    assert r.exit_code == 2, r.output
    assert "not a regular file" in r.output and "'-'" in r.output and no_traceback(r)


def test_a_device_is_refused_rather_than_read_until_memory_runs_out():
    r = invoke("render", "/dev/zero")
    assert r.exit_code == 2, r.output
    assert "not a regular file" in r.output and no_traceback(r)


@pytest.mark.parametrize("from_stdin", [False, True])
def test_a_trace_larger_than_the_limit_is_refused(saved, monkeypatch, from_stdin):
    monkeypatch.setattr(tracefile, "MAX_TRACE_BYTES", 100)
    r = invoke("render", "-", stdin=saved.read_bytes()) if from_stdin else invoke("render", str(saved))
    assert r.exit_code == 2, r.output
    assert "larger than" in r.output and no_traceback(r)


@pytest.mark.parametrize("command", [["render"], ["diff", "{saved}"], ["lines"]])
def test_an_empty_file_is_said_to_be_empty_with_status_1(saved, tmp_path, command):
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    r = invoke(*[a.format(saved=saved) for a in command], str(empty))
    assert r.exit_code == 1 and "is empty" in r.output and no_traceback(r)


def test_a_folder_named_as_a_trace_is_said_to_be_a_folder(saved, tmp_path):
    folder = tmp_path / "traces.json"
    folder.mkdir()
    r = invoke("diff", str(folder), str(saved))
    assert r.exit_code == 2 and "is a folder" in r.output and no_traceback(r)


# ---- a saved trace of a failed forward ---------------------------------------------------------------------------
@pytest.mark.parametrize("command", [["render"], ["lines"]])
def test_a_saved_failed_trace_is_shown_with_a_note_naming_the_failure_and_status_0(saved_failed, command):
    r = CliRunner().invoke(main, [*command, str(saved_failed)])
    assert r.exit_code == 0, r.output
    assert "note: this trace is of a forward that failed in " in r.stderr and "(RuntimeError: " in r.stderr
    assert "is partial" in r.stderr


# MODEL names a file that is not there: the empty path is refused before MODEL is even looked at.
@pytest.mark.parametrize("command", [["trace", "missing.py:build", "-o", ""], ["render", "missing.json", "-o", ""],
                                     ["lines", "missing.py:build", "-o", ""],
                                     ["lines", "missing.py:build", "--save-trace", ""],
                                     ["profile", "missing.py:build", "-o", ""],
                                     ["profile", "missing.py:build", "--plot", ""],
                                     ["diff", "missing.py:build", "missing.py:build", "-o", ""]],
                         ids=["trace", "render", "lines", "lines --save-trace", "profile", "profile --plot", "diff"])
def test_an_empty_output_path_is_refused_before_anything_runs(command):
    r = invoke(*command)
    assert r.exit_code == 2, r.output
    assert "an empty path names no file" in r.output and "missing" not in r.output.split("Error:")[-1]


def test_save_trace_refuses_a_dash_since_stdout_carries_the_lines_view(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = invoke("lines", "missing.py:build", "--save-trace", "-")
    assert r.exit_code == 2 and "carries the command's own output" in r.output
    assert not (tmp_path / "-").exists()


def test_save_trace_into_another_formats_suffix_gets_the_note_o_gives(tmp_path, saved):
    r = invoke("lines", str(saved), "--save-trace", str(tmp_path / "t.svg"))
    assert r.exit_code == 0, r.output
    assert "note: writing json into t.svg, whose suffix says svg" in r.output
