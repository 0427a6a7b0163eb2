"""Where the model's own code raised, for a message: ``file:line in function``, importing nothing heavy.

``specs.models`` says where an import or a factory raised (``at models.py:3 in build``); the Sphinx directive
says where a forward raised, from the exception the session keeps (``Outcome.cause``). One rule for both.
"""

from __future__ import annotations

import traceback

__all__ = ["where_raised"]


def where_raised(error: BaseException) -> str:
    """``file:line in function`` of the innermost frame that raised ``error`` (for a ``SyntaxError``, the line
    of the source that does not parse; Python's import machinery is skipped, it is never the user's code)."""
    if isinstance(error, SyntaxError) and error.filename:
        return f"{error.filename}:{error.lineno}"
    frames = [f for f in traceback.extract_tb(error.__traceback__) if not f.filename.startswith("<frozen ")]
    if not frames:
        return "an unknown place"
    last = frames[-1]
    return f"{last.filename}:{last.lineno} in {last.name}"
