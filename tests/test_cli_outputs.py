"""Where the commands write: never binary onto a terminal, never over the model's own source file, and a
failed write leaves no folders behind that the command made for it."""

from __future__ import annotations

import errno
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import shapetrace
from shapetrace.cli import main

SRC = str(Path(__file__).resolve().parents[1] / "src")


def shapetrace_cli(*args: str, stdout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "shapetrace", *args], stdout=stdout, stderr=subprocess.PIPE,
                          env=env, timeout=300, check=False)


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(shapetrace.trace(nn.Sequential(nn.Linear(4, 2)), torch.zeros(3, 4), ops=True).to_json())
    return path


# ---- binary formats and a terminal --------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["png", "pdf"])
def test_diff_refuses_writing_a_binary_format_to_a_terminal_and_suggests_o(saved, fmt):
    main_fd, terminal = pty.openpty()
    try:
        r = shapetrace_cli("diff", str(saved), str(saved), "-f", fmt, stdout=terminal)
        os.set_blocking(main_fd, False)
        try:
            written = os.read(main_fd, 1 << 16)
        except BlockingIOError:
            written = b""
    finally:
        os.close(terminal)
        os.close(main_fd)
    assert r.returncode == 2, r.stderr
    assert b"is binary and stdout is a terminal: pass -o FILE" in r.stderr and b"Traceback" not in r.stderr
    assert written == b""


def test_diff_writes_a_binary_format_into_a_pipe(saved):
    """A guard: a pipe (or a file) takes the bytes (it did before the change, by design)."""
    r = shapetrace_cli("diff", str(saved), str(saved), "-f", "png", stdout=subprocess.PIPE)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(b"\x89PNG")


# ---- -o and the model's own file ------------------------------------------------------------------------------------
MODEL_SOURCE = "from torch import nn\n\n\ndef build():\n    return nn.Sequential(nn.Linear(4, 2))\n"


@pytest.fixture
def model_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # ``models:build`` must find this file, not a ``models`` module another test imported or put on sys.path
    monkeypatch.delitem(sys.modules, "models", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "models.py"
    path.write_text(MODEL_SOURCE)
    return path


@pytest.mark.parametrize("command", [
    ["trace", "{spec}", "-i", "3,4", "-f", "text", "-o", "{out}"],  # (without -f, no renderer writes .py)
    ["lines", "{spec}", "-i", "3,4", "-f", "text", "-o", "{out}"],
    ["lines", "{spec}", "-i", "3,4", "--save-trace", "{out}"],
    ["profile", "{spec}", "-i", "3,4", "--device", "cpu", "--repeat", "1", "--warmup", "0", "-f", "text", "-o", "{out}"],
    ["diff", "{spec}", "{spec}", "-i", "3,4", "-f", "text", "-o", "{out}"],
])
@pytest.mark.parametrize("spec", ["models.py:build", "./models.py:build", "models:build"])
def test_an_output_that_is_the_model_spec_file_is_refused_before_tracing(model_file, command, spec):
    args = [a.format(spec=spec, out=str(model_file)) for a in command]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    assert "is the file MODEL" in r.output and "would replace the model's source" in r.output, r.output
    assert model_file.read_text() == MODEL_SOURCE


def test_an_output_beside_the_model_file_is_written(model_file):
    """A guard: another file in the model's folder is written as asked (before and after the change)."""
    r = CliRunner().invoke(main, ["trace", "models.py:build", "-i", "3,4", "-o", "table.txt"])
    assert r.exit_code == 0, r.output
    assert "Linear" in (model_file.parent / "table.txt").read_text()


# ---- a write that fails ---------------------------------------------------------------------------------------------
@pytest.fixture
def full_disk(monkeypatch):
    """Every file renamed into place fails as on a full disk (the temporary file was written, the rename fails)."""
    from shapetrace.renderers import atomic

    def no_space(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", no_space)


@pytest.mark.parametrize("command", [["render", "{saved}"], ["render", "{saved}", "-f", "svg"],
                                     ["diff", "{saved}", "{saved}"], ["lines", "{lines}"]])
def test_a_failed_write_removes_the_folders_the_command_created_for_it(saved, tmp_path, full_disk, command):
    with_lines = tmp_path / "lines.json"
    with_lines.write_text(shapetrace.trace(nn.Sequential(nn.Linear(4, 2)), torch.zeros(3, 4), lines=True).to_json())
    kept = tmp_path / "out"
    kept.mkdir()
    args = [a.format(saved=saved, lines=with_lines) for a in command]
    r = CliRunner().invoke(main, [*args, "-o", str(kept / "a" / "b" / "c.txt")])
    assert r.exit_code != 0 and "No space left on device" in r.output, r.output
    assert kept.is_dir() and list(kept.iterdir()) == []  # a/b made for the write are gone, out/ (not ours) stays


def test_a_write_that_fails_after_the_work_is_an_error_not_a_usage_error(saved, full_disk, tmp_path):
    """The command line was right (the folder could be written when it was checked): exit 1, one line, no
    usage banner, and advice."""
    r = CliRunner().invoke(main, ["render", str(saved), "-o", str(tmp_path / "t.txt")])
    assert r.exit_code == 1, r.output
    assert "Usage:" not in r.output and "No space left on device" in r.output, r.output
    assert "choose another place with -o" in r.output


def test_a_failed_write_keeps_folders_that_something_else_filled_meanwhile(tmp_path, monkeypatch):
    """A guard: a folder the write made but that holds another file by the time it fails is left alone."""
    from shapetrace.renderers import atomic

    def fill_then_fail(temporary: object, target: Path) -> None:
        (target.parent / "someone-elses.txt").write_text("mine")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", fill_then_fail)
    with pytest.raises(OSError):
        atomic.write_atomically(tmp_path / "a" / "b" / "c.txt", b"x")
    assert (tmp_path / "a" / "b" / "someone-elses.txt").read_text() == "mine"


# ---- a long file name -----------------------------------------------------------------------------------------------
# A model whose forward leaves a mark, so a test can tell whether the forward ran.
MARKING_SOURCE = ("from pathlib import Path\nfrom torch import nn\n\n\n"
                  "class Marks(nn.Linear):\n    def forward(self, x):\n"
                  "        Path(__file__).with_name('forward-ran').touch()\n        return super().forward(x)\n\n\n"
                  "def build():\n    return Marks(4, 2)\n")


def _longest_name(folder: Path, suffix: str) -> str:
    """A file name exactly as long as the file system holding ``folder`` allows."""
    return "a" * (os.pathconf(folder, "PC_NAME_MAX") - len(suffix)) + suffix


def test_a_name_as_long_as_the_file_system_allows_is_written(tmp_path):
    """Its temporary sibling (``.NAME.XXXXXXXX.part``) would be 15 bytes longer than the limit: it is cut short."""
    out = tmp_path / _longest_name(tmp_path, ".txt")
    r = CliRunner().invoke(main, ["trace", "torch.nn:Linear", "--arg", "in_features=4", "--arg", "out_features=2",
                                  "-i", "3,4", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "Linear" in out.read_text()
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left


def test_writing_atomically_cuts_the_temporary_name_short_not_inside_a_character(tmp_path):
    from shapetrace.renderers import atomic

    target = tmp_path / ("é" * ((os.pathconf(tmp_path, "PC_NAME_MAX") - 4) // 2) + ".txt")  # two bytes each
    atomic.write_atomically(target, b"x", suffix=".part")
    assert target.read_bytes() == b"x" and [p.name for p in tmp_path.iterdir()] == [target.name]


def test_a_name_too_long_is_refused_before_the_forward_with_advice_to_shorten_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "marking.py").write_text(MARKING_SOURCE)
    long_name = _longest_name(tmp_path, ".txt").replace(".txt", "a.txt")  # one byte over
    r = CliRunner().invoke(main, ["trace", "marking.py:build", "-i", "3,4", "-o", long_name])
    assert r.exit_code == 2, r.output
    assert "choose a shorter name" in r.stderr and f"at most {os.pathconf(tmp_path, 'PC_NAME_MAX')}" in r.stderr
    assert "free some space" not in r.stderr
    assert not (tmp_path / "forward-ran").exists()
