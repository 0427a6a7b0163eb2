"""Checking the line information of a saved trace (``Trace.sources`` and each ``Call.code``) as it is read.

A trace recorded with ``lines=True`` stores the source of each forward it saw; ``shapetrace lines t.json``
renders it without the model. A hand-edited or truncated file must fail as it is read, naming the bad field
(``sources['m.Net.forward'].first_line: missing``), not later inside the renderer as a bare ``KeyError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .codec import TraceFormatError

__all__ = ["check_sources"]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_lines(value: Any, where: str) -> None:
    if not isinstance(value, list) or not all(_is_int(n) and n >= 0 for n in value):
        raise TraceFormatError(where, "must be a list of line numbers")


def _check_source(key: str, info: Any) -> None:
    where = f"sources[{key!r}]"
    if not isinstance(info, dict):
        raise TraceFormatError(where, "must be an object ({qualname, file, first_line, text} or {qualname, missing})")
    for name in ("qualname", "file", "missing"):
        if info.get(name) is not None and not isinstance(info[name], str):
            raise TraceFormatError(f"{where}.{name}", "must be a string")
    if "text" not in info:
        if not isinstance(info.get("missing"), str):
            raise TraceFormatError(where, "has neither its source text nor why it is missing")
        return
    text = info["text"]
    if not isinstance(text, list) or not all(isinstance(t, str) for t in text):
        raise TraceFormatError(f"{where}.text", "must be a list of source lines (strings)")
    if "first_line" not in info:
        raise TraceFormatError(f"{where}.first_line", "missing (the line number of the text's first line)")
    if not _is_int(info["first_line"]) or info["first_line"] < 1:
        raise TraceFormatError(f"{where}.first_line", f"must be a line number from 1, not {info['first_line']!r}")
    if "code_lines" in info:
        _check_lines(info["code_lines"], f"{where}.code_lines")


def _check_line(value: Any, where: str) -> None:
    """A line number, or null: a whole number, not negative."""
    if value is not None and not (_is_int(value) and value >= 0):
        raise TraceFormatError(where, f"must be a line number (a whole number from 0), not {value!r}")


def _check_code(code: Any, where: str, sources: dict[str, Any]) -> None:
    if not isinstance(code, dict) or not isinstance(code.get("source"), str):
        raise TraceFormatError(where, 'must be an object with "source", the key of its forward in sources')
    if code["source"] not in sources:
        raise TraceFormatError(f"{where}.source", f"{code['source']!r} names no entry in sources (the source of "
                                                  "each forward, by key): the file was edited or cut")
    if "ran" in code:
        _check_lines(code["ran"], f"{where}.ran")
    _check_line(code.get("raised"), f"{where}.raised")


def check_sources(sources: Any, calls: Sequence[Any], ops: Sequence[Any] = ()) -> None:
    """Raise ``TraceFormatError`` for the first malformed source, call ``code`` or ``line``, or op ``line`` (see
    ``docs/trace-format.md``): a line number is not negative and a ``code.source`` is a key of ``sources``."""
    if not isinstance(sources, dict):
        raise TraceFormatError("sources", "must be an object: the source of each forward, by key")
    for key, info in sources.items():
        _check_source(key, info)
    for i, call in enumerate(calls):
        if call.code is not None:
            _check_code(call.code, f"calls[{i}].code", sources)
        _check_line(call.line, f"calls[{i}].line")
    for i, op in enumerate(ops):
        _check_line(op.line, f"ops[{i}].line")
