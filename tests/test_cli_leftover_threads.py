"""A model's code that leaves a thread running does not keep the console command alive once its output is
written (``leftover_threads``). One subprocess each: what is checked is when the process itself ends."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from click.testing import CliRunner

from shapetrace.cli import main

SRC_ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}


def shapetrace(tmp_path: Path, model_source: str) -> subprocess.CompletedProcess:
    (tmp_path / "threaded.py").write_text(textwrap.dedent(model_source))
    return subprocess.run([sys.executable, "-m", "shapetrace.cli", "trace", "threaded.py:build", "--input", "1,4"],
                          cwd=tmp_path, env=SRC_ENV, capture_output=True, text=True, timeout=240, check=False)


def test_a_thread_the_model_never_stops_does_not_keep_the_command_running(tmp_path):
    done = shapetrace(tmp_path, """
        import threading, time
        from torch import nn

        threading.Thread(target=time.sleep, args=(3600,), name="prefetcher").start()

        def build():
            return nn.Linear(4, 2)
    """)  # without the fix, subprocess.run's timeout expires: Python waits an hour for "prefetcher"
    assert done.returncode == 0, done.stderr
    assert "Linear" in done.stdout
    assert "left 1 thread running ('prefetcher')" in done.stderr


def test_a_thread_that_ends_soon_after_the_command_is_waited_for(tmp_path):
    done = shapetrace(tmp_path, """
        import pathlib, threading, time
        from torch import nn

        def finish():
            time.sleep(0.2)
            pathlib.Path("flushed.txt").write_text("done")

        threading.Thread(target=finish).start()

        def build():
            return nn.Linear(4, 2)
    """)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "flushed.txt").read_text() == "done"
    assert "thread" not in done.stderr


def test_the_models_exit_handlers_still_run_when_a_thread_is_left(tmp_path):
    done = shapetrace(tmp_path, """
        import atexit, pathlib, threading, time
        from torch import nn

        atexit.register(lambda: pathlib.Path("atexit.txt").write_text("ran"))
        threading.Thread(target=time.sleep, args=(3600,)).start()

        def build():
            return nn.Linear(4, 2)
    """)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "atexit.txt").read_text() == "ran"


def test_the_idle_workers_of_a_thread_pool_left_open_are_not_taken_for_leftover_threads(tmp_path):
    done = shapetrace(tmp_path, """
        from concurrent.futures import ThreadPoolExecutor
        from torch import nn

        POOL = ThreadPoolExecutor(2)

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.a, self.b = nn.Linear(4, 2), nn.Linear(4, 2)

            def forward(self, x):
                fa, fb = POOL.submit(self.a, x), POOL.submit(self.b, x)
                return fa.result() + fb.result()

        def build():
            return Net()
    """)  # plain Python exits at once: its exit tells an executor's idle workers to end
    assert done.returncode == 0, done.stderr
    assert "Net" in done.stdout
    assert "left" not in done.stderr and "ThreadPoolExecutor" not in done.stderr


def test_a_thread_pool_worker_busy_for_good_does_not_keep_the_command_running(tmp_path):
    done = shapetrace(tmp_path, """
        import time
        from concurrent.futures import ThreadPoolExecutor
        from torch import nn

        POOL = ThreadPoolExecutor(1, thread_name_prefix="busy")
        POOL.submit(time.sleep, 3600)

        def build():
            return nn.Linear(4, 2)
    """)  # the executor's exit hook waits for busy workers: shapetrace waits for it a second only
    assert done.returncode == 0, done.stderr
    assert "left 1 thread running ('busy_0')" in done.stderr


def test_a_command_run_in_process_with_no_thread_left_leaves_thread_pools_working():
    from concurrent.futures import ThreadPoolExecutor

    from click.testing import CliRunner

    from shapetrace.cli import main

    assert CliRunner().invoke(main, ["--help"]).exit_code == 0  # standalone: ends in exit_now, in this process
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(int, "1").result() == 1


def test_a_command_called_in_process_leaves_the_callers_threads_and_pools_alone(tmp_path, monkeypatch):
    (tmp_path / "short_thread.py").write_text(textwrap.dedent("""
        import threading, time
        from torch import nn

        def build():
            threading.Thread(target=time.sleep, args=(0.3,)).start()  # still running when the command ends
            return nn.Linear(4, 2)
    """))
    monkeypatch.chdir(tmp_path)
    pool = ThreadPoolExecutor(1)
    try:
        pool.submit(int).result()
        done = CliRunner().invoke(main, ["trace", "short_thread.py:build", "--input", "1,4"])
        assert done.exit_code == 0, done.output
        assert pool.submit(int, "7").result() == 7  # the caller's pool still takes work
        with ThreadPoolExecutor(1) as fresh:
            assert fresh.submit(int, "8").result() == 8
        assert threading.main_thread().is_alive()
    finally:
        pool.shutdown()
