"""How a MODEL spec is split, importing nothing: ``where:attr``, and whether ``where`` names a Python file.

``specs.models`` (which imports torch) resolves specs by this rule, and the Sphinx directive reads it too (to
find a model file beside the document and watch it), so both agree on what names a file.
"""

from __future__ import annotations

import errno
import importlib.machinery
import os
import re
import sys
from pathlib import Path

from ..renderers.atomic import name_limit

__all__ = ["NAME_TOO_LONG", "names_a_file", "path_problem", "source_file", "split_spec", "tidy_spec"]

# How ``path_problem`` begins its answer for a name longer than the file system allows.
NAME_TOO_LONG = "File name too long"

# A Windows drive: one letter, a colon, then a slash or backslash (C:\models.py, c:/work/m.py). A one-letter
# module (m:build) has no slash after its colon.
_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


def split_spec(spec: str) -> tuple[str, str] | None:
    """``(where, attr)`` of a ``where:attr`` spec, each stripped of spaces (``big.py : build`` is ``big.py:build``;
    ``attr`` or ``where`` may be empty),
    else ``None``: a gallery exhibit or torchvision name, or a bare Windows path such as ``C:\\models.py``."""
    spec = spec.strip()
    rest = spec[2:] if _DRIVE.match(spec) else spec
    if ":" not in rest:
        return None
    where, _, attr = spec.rpartition(":")
    return where.strip(), attr.strip()


def tidy_spec(spec: str) -> str:
    """``spec`` as ``split_spec`` reads it, written back: ``where:attr`` without the spaces around its colon
    (``big.py : build`` is ``big.py:build``), any other spec stripped."""
    parts = split_spec(spec)
    return spec.strip() if parts is None else f"{parts[0]}:{parts[1]}"


def names_a_file(where: str) -> bool:
    """Whether the ``where`` of ``where:attr`` is a file path (``models.py``, ``dir/models``) or a module name."""
    return where.endswith(".py") or os.sep in where or "/" in where


def source_file(spec: str) -> str | None:
    """The Python file a MODEL spec's ``where`` is read from, found without running anything: the path of
    ``path/to/file.py:attr``; for ``package.module:attr``, the file the import would load (looked up on
    ``sys.path`` and the working directory, where ``specs.models`` imports from; a package's parents are looked
    up, not imported). ``None`` for an exhibit or torchvision name, or a module not found this way."""
    parts = split_spec(spec)
    if parts is None or not parts[0]:
        return None
    where = parts[0]
    if names_a_file(where):
        return where
    search: list[str] | None = [*sys.path, os.getcwd()]
    found = None
    for i, _ in enumerate(where.split(".")):
        name = ".".join(where.split(".")[: i + 1])
        try:
            found = importlib.machinery.PathFinder.find_spec(name, search)
        except (ImportError, ValueError):
            return None
        if found is None:
            return None
        search = list(found.submodule_search_locations or [])
    return found.origin if found is not None and found.has_location else None


def _name_max(path: str | os.PathLike) -> int:
    """The longest name the file system holding ``path`` allows, in bytes (asked of the nearest folder of
    ``path`` that exists; 255 where it cannot be asked)."""
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    return name_limit(Path(folder))


def path_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be looked up at all (a name in it too long for the file system, a NUL in it, a
    folder on the way that cannot be searched), else ``None``, whether or not anything is there. Checked
    before ``Path.exists()`` and the like, which raise for these (``OSError: [Errno 36] File name too long``)."""
    too_long = False
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        pass
    except ValueError:
        return "the path contains a NUL character"
    except OSError as e:
        if e.errno != errno.ENAMETOOLONG:
            return e.strerror or str(e)
        too_long = True
    longest = max((len(os.fsencode(part)) for part in re.split(r"[\\/]", os.fspath(path))), default=0)
    limit = _name_max(path)
    if longest > limit:  # also where a folder on the way is missing, so the system has not looked at the name yet
        return (f"{NAME_TOO_LONG} (a name in it has {longest} bytes; this file system allows at most {limit} "
                "per name)")
    if too_long:
        return "the path is too long for the file system, though each name in it fits"
    return None
