"""Where the model of a ``.. shapetrace::`` directive comes from: its file (found the same wherever
``sphinx-build`` runs) and the source files its page depends on.

A relative ``path/to/file.py:factory`` is looked up beside the document first, then in the Sphinx source
folder (the folder of ``conf.py``), as ``literalinclude`` and ``image`` read their paths relative to the
document. The folder ``sphinx-build`` runs in is never searched, so a build gives the same pages wherever it is
started. An absolute path is used as written. Every other spec (an exhibit, ``package.module:factory``, a
torchvision name) is left as it is.

``watched(located)`` lists the source files the figure is drawn from, for the directive to record as the
document's dependencies (``env.note_dependency``), so that editing the model rebuilds the page without ``-E``:
the model file of a ``file.py:factory`` spec, the module file of a ``package.module:factory`` spec when it is a
plain ``.py`` file, and an exhibit's own module. (Other files the model imports are not followed.)

Nothing here imports torch when the extension is imported; ``watched`` imports the gallery (and so torch) to
find an exhibit's module, as tracing it does anyway.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

from .specs.names import names_a_file, split_spec

__all__ = ["Located", "ModelFileNotFound", "locate", "watched"]


class ModelFileNotFound(Exception):
    """A relative model file found in none of the folders searched; the message names them."""

    def __init__(self, path: str, searched: list[Path]) -> None:
        self.path = path
        self.searched = searched
        folders = " and ".join(str(f) for f in dict.fromkeys(searched))
        self.candidates = [folder / path for folder in dict.fromkeys(searched)]  # where it may appear later
        super().__init__(f"no model file {path!r}: looked beside the document and in the source folder "
                         f"({folders}). A relative path is read from the document's folder, then from the "
                         "folder of conf.py; write it from one of them, or give an absolute path.")


@dataclass
class Located:
    """The spec to trace (a relative model file made absolute) and the model file it names, if any."""

    spec: str
    file: Path | None = None


def locate(spec: str, doc_folder: Path, source_folder: Path) -> Located:
    """Resolve the file of a ``file.py:factory`` spec against ``doc_folder``, then ``source_folder``.

    Raises ``ModelFileNotFound`` (naming the folders searched) when a relative file is in neither.
    """
    parts = split_spec(spec)
    if parts is None or not names_a_file(parts[0]):
        return Located(spec)
    where, attr = parts
    path = Path(where).expanduser()
    if path.is_absolute():
        return Located(spec, path)
    folders = [doc_folder, source_folder]
    for folder in folders:
        candidate = (folder / path).resolve()
        if candidate.is_file():
            return Located(f"{candidate}:{attr}", candidate)
    raise ModelFileNotFound(where, folders)


def watched(located: Located) -> list[Path]:
    """The source files the located model is built from (see the module docstring); empty when none is known."""
    if located.file is not None:
        return [located.file]
    parts = split_spec(located.spec)
    found = _module_file(parts[0]) if parts is not None else _exhibit_file(located.spec.strip())
    return [found] if found is not None else []


def _plain_file(filename: str | None) -> Path | None:
    return Path(filename) if filename and filename.endswith(".py") and Path(filename).is_file() else None


def _module_file(name: str) -> Path | None:
    """The ``.py`` file of module ``name``, found without running it (its parent packages are imported)."""
    try:
        spec = importlib.util.find_spec(name)
    except Exception:  # noqa: BLE001 - a parent package that fails to import: tracing reports it
        return None
    return _plain_file(spec.origin) if spec is not None else None


def _exhibit_file(name: str) -> Path | None:
    """The module that defines gallery exhibit ``name``'s model builder."""
    from .gallery.exhibits import exhibit_names, get_exhibit  # noqa: PLC0415 - torch loads on first trace

    if name not in exhibit_names():
        return None
    module = sys.modules.get(getattr(get_exhibit(name).build, "__module__", None) or "")
    return _plain_file(getattr(module, "__file__", None))
