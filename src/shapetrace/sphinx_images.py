"""The files the ``.. shapetrace::`` directive writes into an HTML build: each picture's SVG in ``_images/``,
named by its content, and the stylesheet ``_static/shapetrace.css``; and removing the SVGs no page shows any more.

A picture's file is named ``shapetrace-<kind>-<16 hex digits of its SHA-1>.svg``, so a figure drawn again the
same keeps its file, and a model that changes gives a new one. Each document's names are recorded in the build
environment when the directive runs (``note``), kept for the documents an incremental build does not read again,
dropped with a document that is read again or removed (``purge``), and gathered from parallel readers
(``merge``). Once every page is written, ``remove_stale`` deletes the directive's own SVGs (that pattern, and
only in ``_images/``) that no document names any more; nothing else in the folder is touched.

The stylesheet is written as an HTML builder starts, the clean-up once the pages are written, before the
builder finishes (when it collects its extra pages; singlehtml collects none, so at the end of the build too):
the EPUB builder lists and packs the output folder only after that, so the stylesheet is in the ``.epub`` and
the stale SVGs are not.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

__all__ = ["file_name", "merge", "note", "purge", "remove_stale", "write"]

_IMAGES = "shapetrace_images"  # env attribute: docname -> set of the SVG file names its figures show
_OWN_SVG = re.compile(r"shapetrace-(?:diagram|flow)-[0-9a-f]{16}\.svg")


def file_name(kind: str, data: str | bytes, suffix: str) -> str:
    """``shapetrace-<kind>-<digest>.<suffix>``: named by ``data``, the same for the same picture."""
    digest = hashlib.sha1(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()[:16]
    return f"shapetrace-{kind}-{digest}.{suffix}"


def write(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` (its folders made), unless the file already holds exactly that."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    if not path.exists() or path.read_bytes() != payload:
        path.write_bytes(payload)


def _recorded(env: Any) -> dict[str, set[str]]:
    found = getattr(env, _IMAGES, None)
    if found is None:
        found = {}
        setattr(env, _IMAGES, found)
    return found


def note(env: Any, docname: str, names: list[str]) -> None:
    """Record that ``docname`` shows the SVG files ``names``."""
    _recorded(env).setdefault(docname, set()).update(names)


def purge(env: Any, docname: str) -> None:
    """Forget ``docname``'s files (it is read again, or gone)."""
    _recorded(env).pop(docname, None)


def merge(env: Any, docnames: Any, other: Any) -> None:
    """Take the records of ``docnames`` from a parallel reader's environment ``other``."""
    mine, theirs = _recorded(env), getattr(other, _IMAGES, {})
    mine.update({d: names for d, names in theirs.items() if d in docnames})


def remove_stale(env: Any, outdir: Path) -> list[str]:
    """Delete the directive's SVGs in ``outdir/_images`` that no document shows; the names deleted."""
    folder = outdir / "_images"
    if not folder.is_dir():
        return []
    shown = set().union(*_recorded(env).values())
    stale = sorted(p.name for p in folder.iterdir() if _OWN_SVG.fullmatch(p.name) and p.name not in shown)
    for name in stale:
        (folder / name).unlink(missing_ok=True)
    return stale
