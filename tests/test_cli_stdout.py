"""stdout carries shapetrace's output only: whatever the model's code writes, by any route and at any time,
goes to stderr (docs/cli.rst, "Output"). One subprocess each, running the real console entry, because what is
checked is the process's descriptor 1, which an in-process runner does not have."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SRC_ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}

# Writes below Python's print and outside the trace: descriptor 1 at import, a subprocess in the factory, an
# atexit handler, and a thread started at import that writes once the main thread has finished.
NOISY = """
    import atexit, os, subprocess, sys, threading
    from torch import nn

    os.write(1, b"RAW WRITE AT IMPORT\\n")
    atexit.register(lambda: print("PRINT AT EXIT"))

    def late():
        threading.main_thread().join()
        print("PRINT FROM A LEFTOVER THREAD")

    threading.Thread(target=late).start()

    def build():
        subprocess.run([sys.executable, "-c", "print('SUBPROCESS IN FACTORY')"], check=True)
        return nn.Linear(4, 2)
"""
WRITTEN = ("RAW WRITE AT IMPORT", "SUBPROCESS IN FACTORY", "PRINT AT EXIT")
# The thread waiting for the main thread never ends while the command waits for it (leftover_threads): the
# command exits without it, and what it would print never reaches stdout either.


def shapetrace(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "noisy.py").write_text(textwrap.dedent(NOISY))
    return subprocess.run([sys.executable, "-m", "shapetrace.cli", "trace", "noisy.py:build", "--input", "1,4", *args],
                          cwd=tmp_path, env=SRC_ENV, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.parametrize("output", [[], ["-o", "/dev/stdout"]], ids=["stdout", "-o /dev/stdout"])
def test_json_on_stdout_stays_json_whatever_the_models_code_writes(tmp_path, output):
    done = shapetrace(tmp_path, "--format", "json", *output)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["calls"][0]["cls"] == "Linear"
    for text in WRITTEN:
        assert text in done.stderr
    assert "PRINT FROM A LEFTOVER THREAD" not in done.stdout
    assert "left 1 thread running" in done.stderr


def test_a_command_called_in_process_writes_to_stdout_and_gives_descriptor_1_back(monkeypatch, capfd):
    from shapetrace.cli import main

    stream = open(1, "w", closefd=False)  # noqa: SIM115 - sys.stdout on descriptor 1, as in a console process
    monkeypatch.setattr(sys, "stdout", stream)
    before = os.fstat(1)
    assert main.main(["--help"], standalone_mode=False) == 0
    after = os.fstat(1)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino) and sys.stdout is stream
    out, err = capfd.readouterr()
    assert out.startswith("Usage:") and "Usage:" not in err



@pytest.mark.parametrize(("columns", "width"), [(" 70", 70), ("0", 64), ("-5", 64), ("wide", 64), (None, 64)])
def test_the_table_width_reads_COLUMNS_as_python_does_then_asks_the_terminal_stdout_is(monkeypatch, columns, width):
    """While a command runs descriptor 1 is stderr's (stdout_guard), so the terminal asked is sys.stdout's own."""
    import fcntl
    import pty
    import struct
    import termios

    from shapetrace.cli_options import _columns

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 64, 0, 0))  # a 64-column terminal
    with open(follower, "w", closefd=False) as terminal:
        monkeypatch.setattr(sys, "stdout", terminal)
        if columns is None:
            monkeypatch.delenv("COLUMNS", raising=False)
        else:
            monkeypatch.setenv("COLUMNS", columns)
        try:
            assert _columns() == width
        finally:
            os.close(follower)
            os.close(leader)


def test_the_table_width_off_a_terminal_is_100(monkeypatch):
    from shapetrace.cli_options import _columns

    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr(sys, "stdout", open(os.devnull, "w"))  # noqa: SIM115 - closed with the test's stdout
    try:
        assert _columns() == 100
    finally:
        sys.stdout.close()


def shapetrace_in_shell(tmp_path: Path, redirect: str, *args: str) -> subprocess.CompletedProcess:
    """The console entry run by a shell with ``redirect`` (``>&-``: stdout closed, ``2>&-``: stderr closed)."""
    (tmp_path / "quiet.py").write_text("from torch import nn\n\ndef build():\n    return nn.Linear(4, 2)\n")
    command = '"$0" -m shapetrace.cli "$@" ' + redirect
    return subprocess.run(["sh", "-c", command, sys.executable, *args], cwd=tmp_path, env=SRC_ENV,
                          stdout=None if redirect == ">&-" else subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300,
                          check=False)


@pytest.mark.parametrize("args", [["trace", "quiet.py:build", "--input", "1,4"],
                                  ["trace", "quiet.py:build", "--input", "1,4", "--format", "png"],
                                  ["--help"]], ids=["table", "png", "help"])
def test_a_closed_stdout_is_named_with_what_to_do_instead(tmp_path, args):
    done = shapetrace_in_shell(tmp_path, ">&-", *args)
    assert done.returncode == 1
    assert "standard output is closed" in done.stderr and "-o FILE" in done.stderr
    assert "Traceback" not in done.stderr and "AttributeError" not in done.stderr


def test_with_stdout_closed_output_to_a_file_is_written(tmp_path):
    done = shapetrace_in_shell(tmp_path, ">&-", "trace", "quiet.py:build", "--input", "1,4", "-o", "out.json")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "out.json").read_text())["calls"][0]["cls"] == "Linear"


def test_a_closed_stderr_keeps_error_messages_out_of_stdout(tmp_path):
    done = shapetrace_in_shell(tmp_path, "2>&-", "trace", "no-such-exhibit", "--format", "json")
    assert done.returncode == 2
    assert done.stdout == ""


@pytest.mark.parametrize("path", ["/dev/stdout", "/dev/fd/1"])
def test_with_stdout_closed_output_to_dev_stdout_is_refused_before_the_model_is_built(tmp_path, path):
    (tmp_path / "marks.py").write_text("from pathlib import Path\nfrom torch import nn\n\n"
                                      "def build():\n    Path('built').touch()\n    return nn.Linear(4, 2)\n")
    done = shapetrace_in_shell(tmp_path, ">&-", "trace", "marks.py:build", "--input", "1,4", "-o", path)
    assert done.returncode == 1
    assert "standard output is closed" in done.stderr and "wrote" not in done.stderr
    assert not (tmp_path / "built").exists()


def test_with_stdout_closed_a_gallery_build_that_succeeds_exits_0(tmp_path):
    done = shapetrace_in_shell(tmp_path, ">&-", "gallery", "build", "-o", "site", "--only", "create-head-default",
                               "-j", "1")
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stderr and (tmp_path / "site" / "index.html").exists()
