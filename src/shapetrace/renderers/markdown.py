"""Text made safe for a Markdown page, once for every renderer that writes Markdown.

``md_cell`` makes any text (a module or class name, an error message, a file name) one line of Markdown that
shows exactly that text: never HTML a docs page would run, never emphasis, a code span or a table cell
boundary; ``md_text`` does the same for text shown as renderers show names already (a table cell made of
``units.literal`` names and shapes). ``md_code`` shows text as a code span, whatever backticks it holds.
Control characters are shown escaped by ``units.literal`` first, as every other renderer shows them. Pure
functions; no torch.
"""

from __future__ import annotations

import re

from .units import escape_controls, literal

__all__ = ["md_cell", "md_code", "md_text"]

# Backslash, pipe, emphasis and code characters; an ``_`` only at the edge of a word (inside one, as in
# ``AWD_LSTM``, CommonMark never reads it as emphasis) and a ``]`` only where it would close a link (``](``,
# ``][``), so class names and the brackets of nested shapes stay as they are in the source.
_SPECIAL = re.compile(r"[\\|*`]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])|\](?=[(\[])")


def md_cell(text: str) -> str:
    """A table cell, summary line or note made of any text (a name, an error message): ``md_text`` of it as
    ``units.literal`` shows it."""
    return md_text(literal(text))


def md_text(shown: str) -> str:
    """Text already shown as renderers show names (``units.literal``, whose backslashes are not doubled again)
    as one line of Markdown: control characters escaped, ``&``, ``<`` and ``>`` as character references (a
    name or an error message is text, never HTML that a docs page would run), pipes and Markdown's emphasis,
    code and link characters backslash-escaped (``__init__`` and ``*x*`` show as they are)."""
    text = escape_controls(shown).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _SPECIAL.sub(r"\\\g<0>", text)


def md_code(text: str) -> str:
    """A code span showing ``text`` as it is, whatever backticks it holds (a longer run of backticks fences
    it, as CommonMark allows); pipes escaped, as GitHub's tables need even inside code spans."""
    text = literal(text)
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}".replace("|", "\\|")
