"""What a failing ``.. shapetrace::`` directive's message says on the published page, as opposed to the build log.

The build log is for whoever builds the docs: full paths, and the advice to run ``sphinx-build -v`` for the
whole traceback. The page is for its readers, on another machine: it shows no path of the machine that built it
and no advice meant for the builder. ``for_readers`` rewrites each absolute path in a message:

* in the source folder or the project around it (the source folder's parent): relative to the source folder
  (``models/m.py``, ``../src/mypkg/models.py``; the source folder itself is ``.``);
* in an installed package or the standard library: relative to the folder it is installed in
  (``torch/nn/modules/linear.py``), as an import names it;
* anywhere else: the file's name alone.

Only what is a path is rewritten, the rest of the message is the error's own text: a ``/`` in ``</script>``,
``ratio 1 /2`` or ``stride (/2)`` is no path (an absolute path here has a folder and a file at least,
``/opt/run.py``, or a drive, ``C:\\run.py``).
"""

from __future__ import annotations

import os
import re
import sysconfig
from pathlib import Path

__all__ = ["for_readers"]

_BUILDER_ADVICE = re.compile(r" ?\(run sphinx-build with -v for the whole traceback\)|"
                             r"[;,.]? ?run sphinx-build with -v for the whole traceback\.?")
# Any folder packages are installed in, on whatever machine: the path up to it is left out.
_PACKAGES = re.compile(r"(?:[A-Za-z]:)?[\\/][^\s'\"()<>,;]*?[\\/](?:site|dist)-packages[\\/]")
# An absolute path left after the known folders are dealt with: its last part is kept (its file name). A path is
# what no message text is: a drive (``C:\\``) and a separator, or ``/`` and a folder's name (starting as a name
# does: a letter, ``_``, ``.`` or ``~``) and at least one more separator (``/opt/tools/run.py``). So ``</script>``,
# ``</s>``, ``1 /2``, ``stride (/2)`` and ``/axes`` stay as the message wrote them; a lone ``/tmp`` names nothing
# of the machine worth leaving out. The page reads the same whatever files the building machine holds.
_CHAR = r"[^\s'\"()<>,;:\\/]"  # a character of a folder's or a file's name (not a space, quote, bracket or :line)
_ABSOLUTE = re.compile(rf"""(?<![\w.:/\\-])               # not inside a word, a URL or a relative path
    (?: [A-Za-z]:[\\/] (?:{_CHAR}+[\\/])*                  # C:\\Users\\me\\ (a drive: a path however short)
      | /[A-Za-z_.~]{_CHAR}*[\\/] (?:{_CHAR}+[\\/])* )      # /opt/tools/ (a first folder, one more separator)
    ({_CHAR}+)                                           # the file's name: what is kept""", re.VERBOSE)


def _variants(folder: str | os.PathLike[str]) -> list[str]:
    """A folder as written and as resolved (a symlinked temporary folder has two names)."""
    return list(dict.fromkeys((os.path.abspath(folder), os.path.realpath(folder))))


def _library_folders() -> list[str]:
    """This Python's standard library and package folders."""
    paths = sysconfig.get_paths()
    return [v for key in ("purelib", "platlib", "stdlib", "platstdlib") if paths.get(key)
            for v in _variants(paths[key])]


def for_readers(text: str, srcdir: str | os.PathLike[str]) -> str:
    """``text`` as the published page shows it: no absolute path of the building machine, no ``-v`` advice."""
    text = _BUILDER_ADVICE.sub("", text)
    src = Path(os.path.abspath(srcdir))
    for folder in _variants(src):  # the source folder itself, not a path in it
        text = re.sub(re.escape(folder) + r"(?![\w.\\/-])", ".", text)
    # folder -> what it becomes; the longest folder first, so a package folder inside the project wins.
    swaps: dict[str, str] = {}
    for folder in _variants(src.parent):
        swaps[folder] = os.path.relpath(src.parent, src).replace(os.sep, "/") + "/"
    for folder in _library_folders():
        swaps[folder] = ""
    for folder in _variants(src):
        swaps[folder] = ""
    for folder in sorted(swaps, key=len, reverse=True):
        text = re.sub(re.escape(folder) + r"[\\/]", lambda _m, to=swaps[folder]: to, text)
    text = _PACKAGES.sub("", text)
    return _ABSOLUTE.sub(lambda m: m.group(1), text)
