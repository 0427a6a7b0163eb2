"""Reading a saved trace's bytes from a path or an open stream, within bounds.

``shapetrace.load(path)`` and the command line's ``session.read_trace`` both read through here, so one rule
holds for both: a path is read when it names a regular file of at most ``MAX_TRACE_BYTES``, or a descriptor
the process already holds (``/dev/stdin``, ``/dev/fd/N``, a shell's ``<(...)``), read until the limit (a name climbing out of those with ``..`` is not one). A FIFO
or a device named by its path (``/dev/zero``, a named pipe) is refused rather than read: one never ends and
fills the memory, the other blocks until some writer comes. An open stream is read up to the limit.

Refusals are ``TraceFileRefused`` (an ``OSError``; ``FolderNotATrace`` for a folder is an
``IsADirectoryError`` too), whose message says what to do; other ``OSError`` s (no such file, no permission)
come as the operating system raised them. This module imports the standard library only.
"""

from __future__ import annotations

import os
import stat
from typing import IO, Any

__all__ = ["INHERITED", "MAX_TRACE_BYTES", "FolderNotATrace", "TraceFileRefused", "read_bounded", "read_path"]

# The largest saved trace read (1 GiB): a model of a million calls writes a few hundred MB.
MAX_TRACE_BYTES = 1 << 30
# Names of descriptors the process already holds (stdin, a shell's <(...)): read as they are, bounded.
INHERITED = ("/dev/stdin", "/dev/fd/", "/proc/self/fd/")
# What a Python caller can do instead of naming a FIFO or a device (the command line says '-').
_FROM_PYTHON = "or pass an open stream (shapetrace.load(sys.stdin)), read up to the same limit"


class TraceFileRefused(OSError):
    """A path not read as a saved trace (a FIFO, a device, a folder, a file over the limit); the message says
    what to do instead."""


class FolderNotATrace(TraceFileRefused, IsADirectoryError):
    """A folder named as a saved trace."""


def read_path(path: str | os.PathLike[str], where: str | None = None, instead: str = _FROM_PYTHON) -> bytes:
    """The bytes of the saved trace at ``path`` (``where``: how messages name it, ``repr(path)`` by default;
    ``instead``: what to suggest for a FIFO or a device). ``TraceFileRefused`` for what is not read, other
    ``OSError`` s as they come."""
    name = os.fsdecode(os.fspath(path))
    where = where or repr(name)
    if _inherited(name):
        with open(name, "rb") as f:
            return read_bounded(f, where)
    info = os.stat(name)
    if stat.S_ISDIR(info.st_mode):
        raise FolderNotATrace(f"{where} is a folder; give the saved trace's file")
    if not stat.S_ISREG(info.st_mode):
        raise TraceFileRefused(f"{where} is not a regular file (a FIFO or a device), so it is not read (it could "
                               f"block or never end): a saved trace is read from a file, {instead}")
    if info.st_size > MAX_TRACE_BYTES:
        raise TraceFileRefused(too_large(where))
    with open(name, "rb") as f:
        return read_bounded(f, where)  # bounded still: the file may have grown since it was looked at


def _inherited(name: str) -> bool:
    """Whether ``name`` names a descriptor the process holds: under one of ``INHERITED``, and without a ``..``
    that climbs out of it (``/dev/fd/../../../dev/zero`` names a device by its path, and is checked as one)."""
    return name.startswith(INHERITED) and ".." not in name.split("/")


def read_bounded(stream: IO[Any], where: str) -> Any:
    """What ``stream`` holds (bytes, or text from a text stream), refused (``TraceFileRefused``) past
    ``MAX_TRACE_BYTES``."""
    data = stream.read(MAX_TRACE_BYTES + 1)
    if len(data) > MAX_TRACE_BYTES:
        raise TraceFileRefused(too_large(where))
    return data


def too_large(where: str) -> str:
    """The message for a trace over the limit."""
    limit = f"{MAX_TRACE_BYTES >> 30} GiB" if MAX_TRACE_BYTES >= 1 << 30 else f"{MAX_TRACE_BYTES:,} bytes"
    return f"{where} is larger than {limit}, the most a saved trace may be; it is not a trace shapetrace wrote"
