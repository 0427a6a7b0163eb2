"""``warn_user``: a warning attributed to the user's line that called into shapetrace.

``warnings.warn`` names the file and line ``stacklevel`` frames up, and shapetrace's warnings are raised at
different depths below the user's call (``trace()`` goes through more of the package than ``with Tracer``,
a renderer's warning through more when a record's display method calls it). A fixed ``stacklevel`` points at
shapetrace's own code on some of those paths; a notebook then shows a line of ``api.py`` instead of the cell.
This counts the package's frames instead. Python 3.12's ``skip_file_prefixes`` does the same, but 3.10 is
supported. Imports nothing of the package, so any layer may use it.
"""

from __future__ import annotations

import os
import sys
import warnings

__all__ = ["ShapetraceWarning", "one_line", "warn_user"]

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # .../shapetrace/


class ShapetraceWarning(UserWarning):
    """Every warning shapetrace gives (``warnings.filterwarnings("ignore", category=shapetrace.ShapetraceWarning)``
    silences them); the command line prints each as one line, without a source location."""


def warn_user(message: str, category: type[Warning] = ShapetraceWarning) -> None:
    """``warnings.warn(message, category)`` attributed to the innermost frame outside the shapetrace package."""
    level, frame = 2, sys._getframe(1)  # stacklevel 2 names the caller of warn_user, frame 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        level += 1
        frame = frame.f_back
    warnings.warn(message, category, stacklevel=level)


def one_line(message: Warning | str, category: type[Warning], filename: str, lineno: int) -> str:
    """A Python warning as one line of text: its message, and where it came from when that is not shapetrace
    itself (a library's deprecation, the model's own code), instead of a path and a source line that read like
    a traceback. The command line and the Sphinx directive show warnings so. A message of several lines, or
    with tabs, is joined onto one line (each run of whitespace a single space)."""
    text = " ".join(str(message).split())
    ours = issubclass(category, ShapetraceWarning) or f"{os.sep}shapetrace{os.sep}" in filename
    origin = "" if ours else f" ({category.__name__} at {os.path.basename(filename)}:{lineno})"
    return f"{text}{origin}"
