"""What a failing ``.. shapetrace::`` directive's message says on the published page, as opposed to the build log.

The build log is for whoever builds the docs: full paths, and the advice to run ``sphinx-build -v`` for the
whole traceback. The page is for its readers, on another machine: it shows no path of the machine that built it
and no advice meant for the builder. ``for_readers`` rewrites the absolute paths of the building machine in a
message:

* in the source folder or the project around it (the source folder's parent): relative to the source folder
  (``models/m.py``, ``../src/mypkg/models.py``; the source folder itself is ``.``);
* in an installed package or the standard library (a ``site-packages`` or ``dist-packages`` folder anywhere):
  relative to the folder it is installed in (``torch/nn/modules/linear.py``), as an import names it;
* in the home folder, the temporary folder, a ``.venv``, a folder a machine keeps files in (``/home``,
  ``/Users``, ``/root``, ``/tmp``, ``/opt``, ``/usr``, ``/var``, ``/srv``, ``/mnt``, ``/media``, ``/private``,
  ``/Volumes``, the first folder of the source folder's and the home folder's paths) or on a drive (``C:\\``): the file's name alone.

It is conservative: only what is clearly such a path is rewritten, the rest of the message is the error's own
text. A path in quotes runs to the closing quote (spaces and all: ``'C:\\Program Files\\x\\m.py'``). A path
out of quotes is made of names without spaces, but for a folder's name of up to three words before the next
separator (``/home/john smith/m.py``, ``C:\\Program Files\\m.py``), and a path not in a folder above ends in a
file's name with its extension (``/opt/tools/run.py``): so ``/tmp alone``, ``/home/me`` and ``GET
/api/v1/models`` stay as written. A path inside a word, a URL (``file:///...``, ``https://host/...``) or a
relative path, one starting ``~`` (which names no machine), and ratios (``1/2``, ``N/C/H/W``, ``</s>``,
``stride (/2)``, ``an /a/b split``) are kept.
"""

from __future__ import annotations

import os
import re
import sysconfig
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["for_readers"]

_BUILDER_ADVICE = re.compile(r" ?\(run sphinx-build with -v for the whole traceback\)|"
                             r"[;,.]? ?run sphinx-build with -v for the whole traceback\.?")
# Not inside a word, a URL (``file:///``, ``https://host/``), a relative path or a ``~`` path.
_START = r"(?<![\w.~\\/-])"
_NOT_NAME = r"\s'\"<>|*?:;,()\\/"                  # what ends a name out of quotes (``:`` starts a line number)
_CHAR = rf"[^{_NOT_NAME}]"                         # a character of a folder's or a file's name
_WORD = rf"[^{_NOT_NAME}.]+"                       # a word of a folder's name of several words (no dot)
_NAME = rf"(?:{_WORD}(?: {_WORD}){{1,2}}(?=[\\/])|{_CHAR}+)"  # a folder's name (up to 3 words) or a file's
_FILE = rf"{_CHAR}*\.[A-Za-z]\w*(?=\.*(?:[{_NOT_NAME}]|$))"  # a file's name with its extension
_ROOTS = ("home", "Users", "root", "tmp", "opt", "usr", "var", "srv", "mnt", "media", "private", "Volumes")
_PACKAGES = re.compile(r"^.*[\\/](?:site|dist)-packages[\\/]")


def _variants(folder: str | os.PathLike[str]) -> list[str]:
    """A folder as written and as resolved (a symlinked temporary folder has two names)."""
    return list(dict.fromkeys((os.path.abspath(folder), os.path.realpath(folder))))


def _library_folders() -> list[str]:
    """This Python's standard library and package folders."""
    paths = sysconfig.get_paths()
    return [v for key in ("purelib", "platlib", "stdlib", "platstdlib") if paths.get(key)
            for v in _variants(paths[key])]


def _home() -> list[str]:
    """The home folder's names (none where it cannot be found: no ``HOME`` and no user entry)."""
    try:
        return _variants(Path.home())
    except (RuntimeError, KeyError, OSError):
        return []


def _last_name(path: str) -> str:
    """A path's last name (its file's), a folder's trailing separator left out."""
    parts = [p for p in re.split(r"[\\/]", path) if p]
    return parts[-1] if parts else path


class _Folders:
    """The building machine's folders a message may name, each with what a path in it becomes."""

    def __init__(self, srcdir: str | os.PathLike[str]) -> None:
        src = Path(os.path.abspath(srcdir))
        up = os.path.relpath(src.parent, src).replace(os.sep, "/")
        # folder -> (what it becomes alone, what a path in it becomes given the rest of the path; ``None``: the
        # file's name alone). The home folder alone is ``~``; the temporary and library folders alone name
        # nothing of the machine worth leaving out.
        swaps: dict[str, tuple[str | None, Callable[[str], str] | None]] = {}
        for folder in _home():
            swaps[folder] = ("~", None)
        for folder in _variants(tempfile.gettempdir()):
            swaps[folder] = (None, None)
        for folder in _library_folders():
            swaps[folder] = (None, lambda rest: rest)
        for folder in _variants(src.parent):
            swaps[folder] = (up, lambda rest: f"{up}/{rest}")
        for folder in _variants(src):
            swaps[folder] = (".", lambda rest: rest)
        # a root folder or a drive alone is no folder of the machine to leave out
        self.swaps = {f: s for f, s in swaps.items() if not re.fullmatch(r"(?:[A-Za-z]:)?[\\/]*", f)}
        self.longest_first = sorted(self.swaps, key=len, reverse=True)
        tops = {re.split(r"[\\/]", f.lstrip("\\/"))[0] for f in (*_variants(src), *_home())
                if f.startswith("/")}
        self.roots = sorted({*_ROOTS, *(t for t in tops if t)}, key=len, reverse=True)

    def known(self) -> str:
        """A regex of the known folders, longest first, each ending where a name does."""
        return "|".join(re.escape(f) + rf"(?![^{_NOT_NAME}])" for f in self.longest_first)

    def machine_path(self) -> str:
        """A regex of where a path not in a known folder starts: a drive, a machine folder, a path in a
        ``.venv`` or a package folder."""
        roots = "|".join(re.escape(r) for r in self.roots)
        return (rf"[A-Za-z]:(?=[\\/])|/(?:{roots})(?=[\\/])"
                rf"|(?=[\\/](?:{_CHAR}+[\\/])*(?:\.venv|(?:site|dist)-packages)[\\/])")

    def rewrite(self, path: str) -> str:
        """``path`` (the whole of it, its first part a known folder or a machine path) as readers see it."""
        for folder in self.longest_first:
            alone, inside = self.swaps[folder]
            if path == folder:
                return path if alone is None else alone
            if path.startswith(folder) and path[len(folder)] in "\\/":
                rest = path[len(folder) + 1:]
                if _PACKAGES.match(rest):
                    return _PACKAGES.sub("", rest)
                return _last_name(rest) if inside is None else inside(rest)
        if _PACKAGES.match(path):
            return _PACKAGES.sub("", path)
        return _last_name(path)


def for_readers(text: str, srcdir: str | os.PathLike[str]) -> str:
    """``text`` as the published page shows it: no absolute path of the building machine, no ``-v`` advice."""
    text = _BUILDER_ADVICE.sub("", text)
    folders = _Folders(srcdir)
    known, machine = folders.known(), folders.machine_path()
    # In quotes: the path runs to the closing quote.
    quoted = re.compile(rf"(?P<q>['\"])(?P<path>(?:{known}|{machine})[^'\"\n]*?)(?P=q)")
    text = quoted.sub(lambda m: m["q"] + folders.rewrite(m["path"]) + m["q"], text)
    # Out of quotes: a known folder and the names after it; a machine path, ending in a file's name. What the
    # quoted pass wrote is relative: no match here.
    tail = rf"(?:[\\/]{_NAME})"
    unquoted = re.compile(rf"{_START}(?:(?:{known}){tail}*|(?:{machine}){tail}*[\\/]{_FILE})")
    return unquoted.sub(lambda m: folders.rewrite(m.group(0)), text)
