"""A gallery build ended by a signal from outside (a timeout, ``kill``, ``docker stop``, a terminal closed, or
``kill -9``) leaves no worker behind: none keeps running, none writes into the site after the build is gone.
Real builds in real subprocesses, their workers found in /proc."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import process_running

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="finds the workers in /proc")]

# The costliest first (see build_site): the workers are still busy when the first files appear.
EXHIBITS = "model-meta-bodies,superres-unet,transposed-conv-photo,tabular-model"


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``, read from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
    return found


def _state(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file in ``folder`` (hidden ones too) with its size and modification time."""
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


def _build_until_first_files(out: Path, err: Path) -> tuple[subprocess.Popen, list[int]]:
    """Start ``shapetrace gallery build`` on two workers, its stderr into ``err`` (a file: a worker left behind
    would hold a pipe open); return it and its workers once its first exhibit file is written (the build is
    then under way, its workers busy)."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    build = subprocess.Popen([sys.executable, "-m", "shapetrace.cli", "gallery", "build", "-o", str(out),
                              "--only", EXHIBITS, "-j", "2"],
                             stdout=subprocess.DEVNULL, stderr=err.open("w"), env=env)
    deadline = time.monotonic() + 120
    while not any(out.glob("*.json")) and build.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = _children(build.pid)
    assert build.poll() is None and len(workers) == 2, "the build should be under way on two workers"
    return build, workers


def _assert_gone_and_quiet(workers: list[int], out: Path) -> None:
    deadline = time.monotonic() + 5
    while any(process_running(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [p for p in workers if process_running(p)] == []
    before = _state(out)
    time.sleep(3)
    assert _state(out) == before  # nothing written after the build ended


def _cleanup(build: subprocess.Popen, workers: list[int]) -> None:
    for p in workers:  # never leave a worker behind, whatever failed
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    build.kill()
    build.wait()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_build_ended_by_a_signal_stops_its_workers_and_then_ends_by_that_signal(tmp_path, signum):
    out, err = tmp_path / "site", tmp_path / "stderr"
    build, workers = _build_until_first_files(out, err)
    try:
        build.send_signal(signum)
        build.wait(timeout=30)
        _assert_gone_and_quiet(workers, out)
    finally:
        _cleanup(build, workers)
    assert build.returncode == -signum  # ended by the signal: a shell shows 128+N (143 for SIGTERM)
    assert "Traceback" not in err.read_text()
    assert not list(out.glob(".*.part"))  # no write left half-done
    assert not (out / "index.html").exists()


def test_the_workers_end_with_a_main_process_killed_outright(tmp_path):
    if not sys.platform.startswith("linux"):
        pytest.skip("the kernel ends the workers with their parent on Linux only (PR_SET_PDEATHSIG)")
    out = tmp_path / "site"
    build, workers = _build_until_first_files(out, tmp_path / "stderr")
    try:
        build.send_signal(signal.SIGKILL)
        build.wait(timeout=30)
        _assert_gone_and_quiet(workers, out)
    finally:
        _cleanup(build, workers)
