"""Writing a file atomically: into a hidden temporary file next to it, then renamed into place.

Shared by the display objects' ``save()`` and the command line's outputs. The temporary file is created with
the mode a plain ``open(path, "w")`` would give (0o666 less the umask, applied by the kernel), so the process
umask is never read by changing it (``os.umask`` is process-wide and races with other threads); its name is
cut short where the file system would find it too long. Replacing an
existing file keeps its mode; a symbolic link is written through, to the file it points to, and kept.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

__all__ = ["name_limit", "resolve_target", "write_atomically"]

_TRIES = 100


def resolve_target(path: Path) -> Path:
    """The file to replace for ``path``: the file a symbolic link points to (the link is kept), else ``path``."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def name_limit(folder: Path) -> int:
    """The longest name, in bytes, the file system holding ``folder`` (an existing folder) allows: its
    ``NAME_MAX``, 255 on most, and 255 where it cannot be asked (Windows, an error)."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):
        return 255


def _temporary_name(name: str, tag: str, limit: int) -> str:
    """``.NAME.TAG`` (``TAG``: the random part and the suffix), with ``NAME`` cut short, never inside a
    character, where the whole would be longer than ``limit`` bytes: a name that fits the file system must not
    fail for want of room for its temporary sibling's 15 more bytes."""
    while name and len(os.fsencode(f".{name}.{tag}")) > limit:
        name = name[:-1]
    return f".{name}.{tag}"


def _create_temporary(target: Path, suffix: str) -> tuple[int, Path]:
    """A new, empty, hidden file next to ``target``, opened for writing, with a plain ``open()``'s mode."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    limit = name_limit(target.parent)
    for _ in range(_TRIES):
        temporary = target.with_name(_temporary_name(target.name, f"{secrets.token_hex(4)}{suffix}", limit))
        try:
            return os.open(temporary, flags, 0o666), temporary
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file next to {str(target)!r} after {_TRIES} tries")


def write_atomically(target: Path, payload: bytes, *, suffix: str = "") -> Path:
    """Write ``payload`` to ``target`` (already resolved, see ``resolve_target``) atomically.

    The folder is created when missing. On any failure the temporary file is removed, so are the folders this
    call created (``-o a/b/c.svg`` on a full disk leaves no ``a/b``), and ``target`` is left as it was;
    ``OSError`` is raised as it came (callers name the user's path in their messages).
    """
    created = _make_folders(target.parent)
    try:
        fd, temporary = _create_temporary(target, suffix)
    except BaseException:
        _remove_folders(created)
        raise
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        if target.exists():
            os.chmod(temporary, stat.S_IMODE(target.stat().st_mode))
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        _remove_folders(created)
        raise
    return target


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; the folders made here, outermost first (one made meanwhile by
    someone else is not counted)."""
    missing = [f for f in (folder, *folder.parents) if not f.exists()][::-1]
    created = []
    for f in missing:
        try:
            f.mkdir()
        except FileExistsError:
            continue
        created.append(f)
    return created


def _remove_folders(created: list[Path]) -> None:
    """Remove the folders ``_make_folders`` made, innermost first, each only while it is empty."""
    for f in reversed(created):
        try:
            f.rmdir()
        except OSError:
            return  # not empty (something else wrote there meanwhile) or gone: leave it and its parents
