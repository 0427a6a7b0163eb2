"""How a MODEL spec is split, importing nothing: ``where:attr``, and whether ``where`` names a Python file.

``specs.models`` (which imports torch) resolves specs by this rule, and the Sphinx directive reads it too (to
find a model file beside the document and watch it), so both agree on what names a file.
"""

from __future__ import annotations

import os

__all__ = ["names_a_file", "split_spec"]


def split_spec(spec: str) -> tuple[str, str] | None:
    """``(where, attr)`` of a ``where:attr`` spec (``attr`` may be empty), else ``None``: a gallery exhibit or
    torchvision name, or a bare Windows path such as ``C:\\models.py``."""
    spec = spec.strip()
    if ":" in spec and not (len(spec) > 1 and spec[1] == ":" and ":" not in spec[2:]):
        where, _, attr = spec.rpartition(":")
        return where, attr
    return None


def names_a_file(where: str) -> bool:
    """Whether the ``where`` of ``where:attr`` is a file path (``models.py``, ``dir/models``) or a module name."""
    return where.endswith(".py") or os.sep in where or "/" in where
