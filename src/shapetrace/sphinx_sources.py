"""Where the model of a ``.. shapetrace::`` directive comes from: its file, found the same wherever
``sphinx-build`` runs.

A relative ``path/to/file.py:factory`` is looked up beside the document first, then in the Sphinx source
folder (the folder of ``conf.py``), as ``literalinclude`` and ``image`` read their paths relative to the
document. The folder ``sphinx-build`` runs in is never searched, so a build gives the same pages wherever it is
started. An absolute path is used as written. Every other spec (an exhibit, ``package.module:factory``, a
torchvision name) is left as it is.

This module imports neither torch nor the specs (the extension's import stays light).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .specs.names import names_a_file, split_spec

__all__ = ["Located", "ModelFileNotFound", "locate"]


class ModelFileNotFound(Exception):
    """A relative model file found in none of the folders searched; the message names them."""

    def __init__(self, path: str, searched: list[Path]) -> None:
        self.path = path
        self.searched = searched
        folders = " and ".join(str(f) for f in dict.fromkeys(searched))
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
