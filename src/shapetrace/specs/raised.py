"""Where the model's own code raised, for a message: ``file:line in function``, importing nothing heavy.

``specs.models`` says where an import or a factory raised (``at models.py:3 in build``); the Sphinx directive
says where a forward raised, from the exception the session keeps (``Outcome.cause``). One rule for both: the
innermost frame in the user's own code, not in an installed library (torch's ``linear.py`` is where a shape
mismatch is *detected*; the line that passed the wrong tensor is the user's), with the library frame it
reached named beside it; the innermost frame of all when no frame is the user's.
"""

from __future__ import annotations

import sysconfig
import traceback
from importlib.util import find_spec
from pathlib import Path

__all__ = ["where_raised"]


def _library_folders() -> tuple[str, ...]:
    """Folders whose code is not the user's: installed packages, the standard library, torch and shapetrace
    (found without importing torch)."""
    folders = {str(Path(__file__).resolve().parents[1])}  # shapetrace's own package
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            folders.add(str(Path(path).resolve()))
    spec = find_spec("torch")
    if spec is not None and spec.origin:
        folders.add(str(Path(spec.origin).resolve().parent))
    return tuple(f.rstrip("/") + "/" for f in folders)


def _in_library(filename: str, folders: tuple[str, ...]) -> bool:
    if filename.startswith("<"):  # <frozen importlib._bootstrap>, <string>
        return filename.startswith("<frozen ")
    try:
        resolved = str(Path(filename).resolve())
    except (OSError, RuntimeError):
        resolved = filename
    return resolved.startswith(folders) or "/site-packages/" in resolved or "/dist-packages/" in resolved


def where_raised(error: BaseException) -> str:
    """``file:line in function`` of the innermost frame of the user's own code that ``error`` passed through
    (for a ``SyntaxError``, the line of the source that does not parse), with the library function it raised
    in when that is deeper; Python's import machinery is skipped, it is never the user's code."""
    if isinstance(error, SyntaxError) and error.filename:
        return f"{error.filename}:{error.lineno}"
    frames = [f for f in traceback.extract_tb(error.__traceback__) if not f.filename.startswith("<frozen ")]
    if not frames:
        return "an unknown place"
    folders = _library_folders()
    own = [f for f in frames if not _in_library(f.filename, folders)]
    if not own:
        last = frames[-1]
        return f"{last.filename}:{last.lineno} in {last.name}"
    mine, last = own[-1], frames[-1]
    place = f"{mine.filename}:{mine.lineno} in {mine.name}"
    if last is not mine:
        place += f", inside {Path(last.filename).name}'s {last.name}"
    return place
