"""The gallery's named exhibits: a builder, example inputs and a caption for each concept of chapter 15.

An exhibit is what ``shapetrace trace <name>`` and ``shapetrace gallery build`` work from. The exhibits are
defined next to their topic (``vision``, ``unet``, ``tabular``, ``text``), which register them in ``registry``;
this package is the loader: importing it imports the topic modules. ``SECTIONS`` puts the exhibits in the order
of chapter 15 (computer vision, U-Net, NLP, tabular); ``exhibit_names()`` lists them in that order.
"""

from __future__ import annotations

import difflib

from . import tabular, text, unet, vision  # noqa: F401 - importing a topic registers its exhibits
from .registry import EXHIBITS, SECTIONS, Exhibit, register, section_of

__all__ = ["EXHIBITS", "SECTIONS", "Exhibit", "exhibit_names", "get_exhibit", "register", "section_of"]


def exhibit_names() -> list[str]:
    """Every exhibit's name, in the chapter's order (``SECTIONS``), then any others in registration order."""
    ordered = [n for _, names in SECTIONS for n in names if n in EXHIBITS]
    return ordered + [n for n in EXHIBITS if n not in ordered]


def get_exhibit(name: str) -> Exhibit:
    """The exhibit called ``name``; a ``KeyError`` naming the closest matches when there is none."""
    try:
        return EXHIBITS[name]
    except KeyError:
        close = difflib.get_close_matches(name, EXHIBITS, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise KeyError(f"no gallery exhibit named {name!r}.{hint} "
                       "Run 'shapetrace gallery list' to see them all.") from None
