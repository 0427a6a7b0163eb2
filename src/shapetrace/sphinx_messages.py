"""The ``.. shapetrace::`` directive's error messages in its own terms.

The session and the specs word their messages for the command line (``bad --input '2,x4'``, ``--arg``,
``rerun with --debug``); a directive has ``:input:`` and ``:arg:`` options and is run by ``sphinx-build``. The
directive passes every message through ``in_directive_terms`` at its boundary, so the command line keeps its
wording and the page and the build log get the directive's. ``overlay_problem`` checks ``:overlay:`` names
before anything is traced; ``overlay_needs_data`` says what works in a directive for an overlay whose data the
trace lacks (the renderer's ``OverlayNeedsOptions`` advises a Python argument a directive cannot pass).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

from .renderers.diagram import OVERLAYS

__all__ = ["in_directive_terms", "overlay_needs_data", "overlay_problem"]

# The command line's phrases -> the directive's, in this order (the options last, once the phrases are done).
_PHRASES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"rerun with --debug for the whole traceback"), "run sphinx-build with -v for the whole traceback"),
    (re.compile(r" Trace shapes only with --device meta \(nothing is allocated\), or give a smaller input\."),
     " Give a smaller :input:."),
    (re.compile(r" Meanwhile, format='dot' \(--format dot\) writes the diagram's source\."),
     " Meanwhile, :show: table and :show: text need no Graphviz."),
    (re.compile(r"(?<![\w-])--(input|arg)\b"), r":\1:"),
)


def _exhibits_with(key: str) -> str:
    """The gallery exhibits whose render hints hold ``key`` (a ``cut``, ``param_groups``), for a message."""
    from .gallery.exhibits import exhibit_names, get_exhibit  # noqa: PLC0415 - loaded by the trace already

    return ", ".join(n for n in exhibit_names() if key in get_exhibit(n).options)


def _cut() -> str:
    return (":overlay: cut needs to know which part of the model is the body and which the head, and a directive "
            "cannot say. It works for a model built as nn.Sequential(body, head) (its two children are taken as "
            f"body and head) and for the gallery exhibits that define their cut ({_exhibits_with('cut')}).")


def _groups() -> str:
    return (":overlay: groups needs the model's parameter groups, and a directive cannot give them. It works for "
            f"the gallery exhibits that define theirs ({_exhibits_with('param_groups')}); :overlay: frozen shows "
            "trainable and frozen parameters of any model.")


def _diff() -> str:
    return (":overlay: diff needs a second model to compare with, and a directive draws one. Draw it with "
            "'shapetrace diff A B -o b.svg' and include the SVG with an image directive.")


_NEEDS_DATA = {"cut": _cut, "groups": _groups, "diff": _diff}


def overlay_needs_data(overlay: str) -> str:
    """What works in a directive for ``overlay``, whose data the traced model lacks (``OverlayNeedsOptions``)."""
    explain = _NEEDS_DATA.get(overlay)
    return explain() if explain else f":overlay: {overlay} needs data this model's trace does not hold."


def in_directive_terms(message: str) -> str:
    """``message`` with the command line's options and advice put as the directive's."""
    for pattern, text in _PHRASES:
        message = pattern.sub(text, message)
    return message


def overlay_problem(names: Sequence[str]) -> str | None:
    """What is wrong with the ``:overlay:`` names (the first unknown one, the choices), or ``None``."""
    for name in names:
        if name not in OVERLAYS:
            close = difflib.get_close_matches(name, OVERLAYS, n=1, cutoff=0.6)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            return (f":overlay: unknown overlay {name!r}; choose from {', '.join(OVERLAYS)} (several: separated by "
                    f"spaces).{hint}")
    return None
