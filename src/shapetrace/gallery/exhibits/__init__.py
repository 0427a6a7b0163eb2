"""The registry of named gallery exhibits: a builder, example inputs and a caption for each concept.

An exhibit is what ``shapetrace trace <name>`` and ``shapetrace gallery build`` work from. The exhibits
themselves are defined next to their topic (``vision``, ``unet``, ``tabular``, ``text``) and register here
when this package is imported.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EXHIBITS", "Exhibit", "exhibit_names", "get_exhibit", "register"]


@dataclass(frozen=True)
class Exhibit:
    """One gallery exhibit.

    ``build()`` returns the model (an ``nn.Module``, randomly initialised, in eval mode unless the concept
    needs training mode); ``inputs()`` returns ``(args, kwargs)`` for its forward; ``caption`` is a few
    precise sentences saying what the exhibit shows (and where fastai 2.8 differs from the book's text).
    ``options`` holds rendering hints for the gallery (``{"layout": "u", "depth": 2, ...}``).
    """

    name: str
    title: str
    caption: str
    build: Callable[[], Any]
    inputs: Callable[[], tuple[tuple, dict]]
    topic: str = "vision"
    options: dict = field(default_factory=dict)


EXHIBITS: dict[str, Exhibit] = {}


def register(exhibit: Exhibit) -> Exhibit:
    """Add an exhibit to the registry (names are unique)."""
    if exhibit.name in EXHIBITS:
        raise ValueError(f"exhibit {exhibit.name!r} is registered twice")
    EXHIBITS[exhibit.name] = exhibit
    return exhibit


def _load_all() -> None:
    from . import tabular, text, unet, vision  # noqa: F401  (importing registers the exhibits)


def exhibit_names() -> list[str]:
    _load_all()
    return list(EXHIBITS)


def get_exhibit(name: str) -> Exhibit:
    """The exhibit called ``name``; a ``KeyError`` naming the closest matches when there is none."""
    _load_all()
    try:
        return EXHIBITS[name]
    except KeyError:
        close = difflib.get_close_matches(name, EXHIBITS, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise KeyError(f"no gallery exhibit named {name!r}.{hint} "
                       "Run 'shapetrace gallery list' to see them all.") from None
