"""How a MODEL spec is split, importing nothing: ``where:attr``, and whether ``where`` names a Python file.

``specs.models`` (which imports torch) resolves specs by this rule, and the Sphinx directive reads it too (to
find a model file beside the document and watch it), so both agree on what names a file.
"""

from __future__ import annotations

import os
import re

__all__ = ["names_a_file", "split_spec"]

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


def names_a_file(where: str) -> bool:
    """Whether the ``where`` of ``where:attr`` is a file path (``models.py``, ``dir/models``) or a module name."""
    return where.endswith(".py") or os.sep in where or "/" in where
