"""A trace's saved render hints (``trace.meta["options"]``: an exhibit's layout, depth, fold, cut, overlays):
``saved_hints`` reads and checks them, blaming the file for what it cannot draw; ``hints_to_save`` writes them.

``shapetrace render`` (through the registry's ``diagram_settings``) and ``Trace.diagram()`` (through
``display.Diagram``) both draw a loaded trace with its hints, the options given winning over them
(``merged_options``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from . import diagram

if TYPE_CHECKING:
    from ..tracer.records import Trace

__all__ = ["hints_to_save", "merged_options", "saved_hints"]


def _strings(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _groups(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and _strings(x) for k, x in v.items())


def _group_pairs(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], str)
                                       and _strings(p[1]) for p in v)


# Hints whose entries' order is a fact (the parameter groups in the splitter's order: gradual unfreezing walks
# them, the legend lists them and their colours follow it). A trace's JSON writes every object with its keys
# sorted, so these are saved as a list of [name, [module names]] pairs; an object (a trace saved before) loads too.
_ORDERED_HINTS = ("param_groups",)


# The saved render hints a trace may carry (``meta["options"]``) and what each must hold; others are left alone.
_HINTS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "depth": (lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0),
              "a whole number >= 0 or null"),
    "layout": (lambda v: isinstance(v, str), "a string"), "style": (lambda v: isinstance(v, str), "a string"),
    "heat": (lambda v: isinstance(v, str), "a string"), "title": (lambda v: isinstance(v, str), "a string"),
    "unroll": (lambda v: isinstance(v, bool), "true or false"), "all_ops": (lambda v: isinstance(v, bool), "true or false"),
    "overlays": (_strings, "a list of strings"), "fold": (_strings, "a list of class names"),
    "cut": (_groups, "an object of lists of module names"), "param_groups": (lambda v: _groups(v) or _group_pairs(v),
                     "an object of lists of module names, or a list of [name, [module names]] pairs"),
    "diff": (lambda v: isinstance(v, dict), "an object"),
}


def saved_hints(trace: Trace) -> dict[str, Any]:
    """The trace's saved render hints, checked: ``ValueError`` naming the hint that a hand-edited JSON broke, of
    the wrong type or a value the diagram cannot draw (``_check_drawable``), and saying it came from the file."""
    hints = trace.meta.get("options") or {}
    if not isinstance(hints, dict):  # ValueError like every bad render input: the session reports those
        raise ValueError(  # noqa: TRY004
            f"the trace's saved render hints (meta.options) must be an object, not {type(hints).__name__}: fix "
            "or remove them")
    for key, value in hints.items():
        check = _HINTS.get(key)
        if check is not None and not check[0](value):
            raise ValueError(f"the trace's saved render hint meta.options.{key} must be {check[1]}, got "
                             f"{value!r:.60}: fix or remove it")
    hints = {k: dict(v) if k in _ORDERED_HINTS and isinstance(v, list) else v for k, v in hints.items()}
    _check_drawable(trace, hints)
    return hints


def merged_options(trace: Trace, given: Any = None) -> Any:
    """The diagram's ``options``: the trace's saved render hints (``saved_hints``, checked) with ``given`` over
    them, key by key; ``None`` when neither holds any. ``given`` that is not a mapping is returned as it is, for
    ``diagram.check_options`` to refuse."""
    hints = saved_hints(trace)
    if given is None:
        return hints or None
    return {**hints, **given} if isinstance(given, Mapping) else given


# The saved hint that holds the data of each overlay that needs some.
_OVERLAY_HINTS = {"cut": "cut", "groups": "param_groups", "diff": "diff"}


def _check_drawable(trace: Trace, hints: dict[str, Any]) -> None:
    """Saved hints of the right types that the diagram still cannot draw (a layout it does not know, an overlay
    whose data the trace lacks) as ``ValueError`` blaming the file, not the command line or the caller; the
    overlays and options go through ``diagram.check_options``, the check ``Trace.diagram()`` makes."""
    for key, choices in (("layout", diagram.LAYOUTS), ("style", diagram.STYLES)):
        if key in hints and hints[key] not in choices:
            raise ValueError(f"the trace's saved render hint meta.options.{key} must be one of {', '.join(choices)}, "
                             f"got {hints[key]!r:.60}: fix or remove it")
    try:
        diagram.check_options(trace, hints.get("overlays"), hints)
    except diagram.OverlayNeedsOptions as e:  # a ValueError whose advice speaks of the command line's --overlay
        data = _OVERLAY_HINTS[e.overlay]
        raise ValueError(f"the trace's saved render hint meta.options.overlays asks for the {e.overlay!r} overlay, "
                         f"but meta.options holds no {data!r} for it" + (
                             " and the model is not nn.Sequential(body, head)" if e.overlay == "cut" else "")
                         + ": fix or remove it") from None
    except (TypeError, ValueError) as e:
        raise ValueError(f"the trace's saved render hints (meta.options) cannot be drawn: {e}: fix or remove "
                         "them") from None


def hints_to_save(options: dict[str, Any]) -> dict[str, Any]:
    """An exhibit's render hints as a trace saves them (``meta["options"]``, JSON values), ``saved_hints``'s
    inverse: the hints sorted by name, and those whose entries' order is a fact (``param_groups``) written as
    a list of ``[name, [module names]]`` pairs, which keeps that order through the trace's JSON."""
    plain = json.loads(json.dumps(options, default=str))
    return {k: [[name, names] for name, names in v.items()] if k in _ORDERED_HINTS and isinstance(v, dict) else v
            for k, v in sorted(plain.items())}
