"""Keep stdout for shapetrace's output: while a command runs, file descriptor 1 points at stderr.

``session._user_code`` sends the model's Python ``print`` to stderr, but that swaps ``sys.stdout`` only: what the
model's code writes below Python (a subprocess it starts, ``os.write(1, ...)``, a C extension's ``printf``) and
what it prints once its code has returned (an ``atexit`` handler, a thread started at import) would still land in
stdout, before or after the ``--format json`` there, and break it. So, for the whole command, ``guard_stdout``:

* keeps a duplicate of the real stdout, and makes ``sys.stdout`` a stream on it: what shapetrace writes (the
  output, ``--help``) still goes to stdout; a write from another thread than the command's goes to stderr;
* points descriptor 1 at stderr, so anything else writing to descriptor 1 writes to stderr (the docs' promise:
  the model's own prints go to stderr, never into output written to stdout);
* afterwards gives ``sys.stdout`` back; when the command is the process (the console entry, where click exits
  once the command ends) descriptor 1 stays on stderr until the process ends, so ``atexit`` handlers and
  leftover threads cannot write into the output either; a command called in-process gets descriptor 1 back.

Where ``sys.stdout`` is not descriptor 1 (a test runner's capture, ``click.testing.CliRunner``), nothing changes.
``-o /dev/stdout`` (and ``/dev/fd/1``) still means the real stdout: ``reroute``.

A command started with stdout or stderr closed (``>&-``, ``2>&-``; Python then sets ``sys.stdout`` or
``sys.stderr`` to ``None``) gets ``/dev/null`` on the closed descriptor, so that no file the command or the
model opens takes it (and gets what is written to descriptor 1 or 2). A closed stderr stays silent: messages
go nowhere, and click does not fall back to writing them into stdout. A closed stdout refuses to be written,
with a message that says so and what to do (``-o FILE`` still works); so does ``-o /dev/stdout`` (``reroute``),
which would otherwise write into that ``/dev/null``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import threading
from collections.abc import Iterator

import click

__all__ = ["guard_stdout", "reroute"]

# The real stdout's duplicate while a guard is active (None otherwise).
_saved: int | None = None
# Whether the command started with stdout closed (descriptor 1 then holds /dev/null, not the real stdout).
_stdout_closed = False

CLOSED_MESSAGE = ("standard output is closed, so the output has nowhere to go: redirect it to a file (> FILE) or, "
                  "where the command takes it, give -o FILE")

# Names of descriptor 1 as a path: /dev/fd/1, /proc/self/fd/1, /proc/<pid>/fd/1 (/dev/stdout links to one).
_FD1 = r"/(?:dev/fd|proc/(?:self|thread-self|{pid})(?:/task/\d+)?/fd)/1"


class _CommandStdout(io.TextIOWrapper):
    """``sys.stdout`` while the guard is active: the real stdout for the thread that runs the command; what any
    other thread prints (one the model's code started) goes to stderr instead."""

    owner: int = 0

    def write(self, s: str) -> int:
        if threading.get_ident() != self.owner:
            err = sys.stderr
            return err.write(s) if err is not None and err is not self else len(s)
        return super().write(s)


def _fd1_stream() -> io.TextIOBase | None:
    """``sys.stdout`` when it writes to descriptor 1 (else ``None``: captured, replaced or closed)."""
    stream = sys.stdout
    try:
        return stream if stream is not None and stream.fileno() == 1 else None
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return None


class ClosedStdout(io.TextIOBase):
    """``sys.stdout`` for a command started with stdout closed: not a terminal, and writing to it fails with a
    message a user can act on: click reports it as an error, exit status 1."""

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, s: str) -> int:
        raise click.ClickException(CLOSED_MESSAGE)

    @property
    def buffer(self) -> ClosedStdout:  # what binary output (PNG, -o -) writes to
        return self


@contextlib.contextmanager
def _closed_streams_filled(*, whole_process: bool) -> Iterator[None]:
    """While the command runs: ``/dev/null`` on a closed descriptor 1 or 2, ``ClosedStdout`` for a missing
    ``sys.stdout``, a ``/dev/null`` stream for a missing ``sys.stderr`` (module docstring); all put back after,
    except the descriptors when the command is the process (as ``guard_stdout`` keeps descriptor 1 on stderr)."""
    global _stdout_closed
    filled: list[int] = []
    swapped: dict[str, io.TextIOBase | None] = {}
    try:
        for fd, name in ((1, "stdout"), (2, "stderr")):
            if getattr(sys, name) is not None or _is_open(fd):
                continue
            opened = os.open(os.devnull, os.O_WRONLY)
            if opened != fd:
                os.dup2(opened, fd)
                os.close(opened)
            filled.append(fd)
            _stdout_closed = _stdout_closed or fd == 1
            swapped[name] = None
            setattr(sys, name, ClosedStdout() if fd == 1 else open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115
        yield
    finally:
        _stdout_closed = False
        for name, was in swapped.items():
            stand_in = getattr(sys, name)
            setattr(sys, name, was)
            if isinstance(stand_in, io.TextIOWrapper):
                stand_in.close()
        for fd in [] if whole_process else filled:
            with contextlib.suppress(OSError):
                os.close(fd)


@contextlib.contextmanager
def guard_stdout(*, whole_process: bool) -> Iterator[None]:
    """Run a command with descriptor 1 on stderr and ``sys.stdout`` on the real stdout (module docstring).

    ``whole_process``: the command is the process (it exits when the command ends), so descriptor 1 stays on
    stderr afterwards; otherwise everything is put back as it was.
    """
    with _closed_streams_filled(whole_process=whole_process), _stdout_guarded(whole_process=whole_process):
        yield


@contextlib.contextmanager
def _stdout_guarded(*, whole_process: bool) -> Iterator[None]:
    """``guard_stdout`` once closed descriptors are filled."""
    global _saved
    original = _fd1_stream()
    stream = _redirect(original) if original is not None and _saved is None else None
    if stream is None:
        yield
        return
    saved = stream.fileno()
    sys.stdout, _saved = stream, saved
    try:
        yield
    finally:
        _saved = None
        if sys.stdout is stream:
            sys.stdout = original
        _close(stream)
        if not whole_process:
            with contextlib.suppress(OSError):
                os.dup2(saved, 1)
        with contextlib.suppress(OSError):
            os.close(saved)


def _redirect(original: io.TextIOBase) -> _CommandStdout | None:
    """Point descriptor 1 at stderr; the stream on a duplicate of the real stdout, or ``None`` (and nothing
    changed) when that cannot be done."""
    opened = saved = None
    try:
        original.flush()
        # stderr closed (2>&-): what the model writes to descriptor 1 goes nowhere instead. Opened before the
        # duplicate is made, which would otherwise take the free descriptor 2 and pass for stderr.
        opened = None if _is_open(2) else os.open(os.devnull, os.O_WRONLY)
        saved = os.dup(1)
        stream = _CommandStdout(os.fdopen(saved, "wb", closefd=False),
                                encoding=getattr(original, "encoding", None) or "utf-8",
                                errors=getattr(original, "errors", None) or "strict",
                                line_buffering=bool(getattr(original, "line_buffering", False)), write_through=True)
        os.dup2(2 if opened is None else opened, 1)  # last: a failure before leaves descriptor 1 as it was
    except (OSError, ValueError, TypeError, LookupError):
        if saved is not None:
            os.close(saved)
        return None
    finally:
        if opened is not None:
            os.close(opened)
    stream.owner = threading.get_ident()
    return stream


def _close(stream: io.TextIOWrapper) -> None:
    """Flush what is left; a reader that went away (already reported as such) makes the rest go to devnull."""
    try:
        stream.flush()
    except (OSError, ValueError):
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())
            os.close(devnull)
    # the stream does not own the descriptor: the guard closes it, once descriptor 1 has it back if it should
    with contextlib.suppress(OSError, ValueError):
        stream.detach()


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def reroute(path: str) -> str:
    """``path``, or the real stdout's descriptor as a path when ``path`` names descriptor 1 (``/dev/stdout``,
    ``/dev/fd/1``) while the guard points descriptor 1 at stderr. With stdout closed (descriptor 1 filled with
    ``/dev/null``), such a path is refused as ``-o -`` is: a ``ClickException`` (``CLOSED_MESSAGE``)."""
    if _saved is None and not _stdout_closed:
        return path
    fd1 = re.compile(_FD1.format(pid=os.getpid()))
    current = os.path.abspath(path)
    for _ in range(40):  # a chain of symbolic links, as the system follows one
        if fd1.fullmatch(current):
            if _stdout_closed:
                raise click.ClickException(CLOSED_MESSAGE)
            return f"/dev/fd/{_saved}"
        if not os.path.islink(current):
            return path
        try:
            current = os.path.normpath(os.path.join(os.path.dirname(current), os.readlink(current)))
        except OSError:
            return path
    return path
