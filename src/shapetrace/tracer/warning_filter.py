"""One entry in Python's warning filters, added and later removed by itself, everything else left alone.

``warnings.catch_warnings()`` puts back the whole filter list (and ``showwarning``) as it found them: around a
``Tracer`` block, which runs the user's code, that would undo the filters the block set
(``warnings.filterwarnings("error", ...)``) and a ``showwarning`` it replaced (``logging.captureWarnings``); and
with two traces in two threads ending in another order than they began, one would put back a list holding the
other's entry. ``add_filter`` inserts one entry at the front, as ``filterwarnings`` does, and ``remove_filter``
removes exactly that entry (by identity), wherever the list holds it by then.
"""

from __future__ import annotations

import re
import warnings

__all__ = ["FilterEntry", "add_filter", "remove_filter"]

FilterEntry = tuple[str, "re.Pattern[str]", type[Warning], None, int]


def _mutated() -> None:
    """Tell the warnings module its filters changed (it caches what each call site was told)."""
    mutated = getattr(warnings, "_filters_mutated", None) or getattr(warnings, "_filters_mutated_lock_held", None)
    if mutated is not None:
        mutated()


def add_filter(action: str, message: str, category: type[Warning]) -> tuple[FilterEntry, list]:
    """Insert ``(action, message, category)`` first in the filters (``message`` a regular expression, matched
    case-insensitively, as ``filterwarnings`` does); returns the entry and the list it went into."""
    entry: FilterEntry = (action, re.compile(message, re.IGNORECASE), category, None, 0)
    filters = warnings.filters
    filters.insert(0, entry)
    _mutated()
    return entry, filters


def remove_filter(entry: FilterEntry, into: list) -> None:
    """Remove ``entry`` from the list it went into and from the current one (a ``catch_warnings`` entered
    since may have swapped in a copy), by identity; a list that no longer holds it is left alone."""
    for filters in {id(f): f for f in (into, warnings.filters)}.values():
        at = next((i for i, f in enumerate(filters) if f is entry), None)
        if at is not None:
            del filters[at]
    _mutated()
