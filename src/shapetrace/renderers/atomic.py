"""Writing a file atomically: into a hidden temporary file next to it, then renamed into place.

Shared by the display objects' ``save()`` and the command line's outputs. The temporary file is created with
the mode a plain ``open(path, "w")`` would give (0o666 less the umask, applied by the kernel), so the process
umask is never read by changing it (``os.umask`` is process-wide and races with other threads). Replacing an
existing file keeps its mode; a symbolic link is written through, to the file it points to, and kept.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

__all__ = ["resolve_target", "write_atomically"]

_TRIES = 100


def resolve_target(path: Path) -> Path:
    """The file to replace for ``path``: the file a symbolic link points to (the link is kept), else ``path``."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _create_temporary(target: Path, suffix: str) -> tuple[int, Path]:
    """A new, empty, hidden file next to ``target``, opened for writing, with a plain ``open()``'s mode."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(_TRIES):
        temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}{suffix}")
        try:
            return os.open(temporary, flags, 0o666), temporary
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file next to {str(target)!r} after {_TRIES} tries")


def write_atomically(target: Path, payload: bytes, *, suffix: str = "") -> Path:
    """Write ``payload`` to ``target`` (already resolved, see ``resolve_target``) atomically.

    The folder is created when missing. On any failure the temporary file is removed and ``target`` is left
    as it was; ``OSError`` is raised as it came (callers name the user's path in their messages).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = _create_temporary(target, suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        if target.exists():
            os.chmod(temporary, stat.S_IMODE(target.stat().st_mode))
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return target
