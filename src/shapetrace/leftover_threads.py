"""Exit the console command without waiting for threads the model's code left running.

Python waits, at exit, for every thread that is not a daemon: a model whose module starts a worker thread at
import (a prefetcher, a logger, a metrics server) and never stops it would keep ``shapetrace trace`` running
forever after its output was written. When the command is the process (the console entry), ``exit_now`` runs
the hooks Python's exit runs before waiting for threads (the one that ends a ``ThreadPoolExecutor``'s idle
workers), gives the threads still running a short grace to end by themselves, then runs the ``atexit`` handlers, flushes the standard
streams and ends the process with the command's status, saying on stderr which threads it did not wait for.
A command called in-process (a notebook) never comes here: its caller owns the process. A standalone call
in-process (``click.testing.CliRunner``) does, and goes on: with no thread left, nothing is done.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
import time

__all__ = ["GRACE_S", "exit_now", "leftover_threads"]

# How long the threads left running get to end by themselves once the command is done.
GRACE_S = 1.0


def leftover_threads() -> list[threading.Thread]:
    """The live non-daemon threads other than the main thread: those Python would wait for at exit."""
    main = threading.main_thread()
    return [t for t in threading.enumerate() if t is not main and not t.daemon and t.is_alive()]


def _run_thread_exit_hooks(deadline: float) -> None:
    """Run what Python's exit runs before it waits for threads (``threading._register_atexit``'s callbacks,
    newest first, as ``threading._shutdown`` does), once: ``concurrent.futures`` registers one that tells the idle
    workers of every ``ThreadPoolExecutor`` to end, so a pool left open is not taken for threads left running.
    That callback also waits for busy workers: the callbacks run in a daemon thread, waited for until
    ``deadline`` only. A no-op where this Python has no such list."""
    hooks = getattr(threading, "_threading_atexits", None)
    if not isinstance(hooks, list) or not hooks:
        return
    calls, hooks[:] = list(reversed(hooks)), []  # Python's own exit does not run them again

    def run() -> None:
        for call in calls:
            with contextlib.suppress(Exception):
                call()

    runner = threading.Thread(target=run, name="shapetrace-thread-exit-hooks", daemon=True)
    runner.start()
    runner.join(max(0.0, deadline - time.monotonic()))


def exit_now(status: int, grace_s: float = GRACE_S) -> None:
    """Return when no thread is left running after ``grace_s`` (the process then exits as usual); else say which
    threads are left, run the exit handlers and end the process with ``status``, without waiting for them."""
    if not leftover_threads():  # nothing to wait for: the hooks are left to Python's exit (a CliRunner's
        return  # caller goes on: an executor's hook would refuse new work in every pool of the process)
    deadline = time.monotonic() + grace_s
    _run_thread_exit_hooks(deadline)
    for thread in leftover_threads():
        thread.join(max(0.0, deadline - time.monotonic()))
    left = leftover_threads()
    if not left:
        return
    names = ", ".join(repr(t.name) for t in left[:3]) + (f" and {len(left) - 3} more" if len(left) > 3 else "")
    with contextlib.suppress(Exception):
        print(f"note: the model's code left {len(left)} thread{'s' if len(left) != 1 else ''} running ({names}); "
              "shapetrace exits without waiting for "
              f"{'them' if len(left) != 1 else 'it'}", file=sys.stderr)
    with contextlib.suppress(Exception):
        atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)
