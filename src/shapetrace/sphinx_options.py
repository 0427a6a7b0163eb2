"""The ``.. shapetrace::`` directive's options: what each takes, and how a value is read or refused.

docutils (and myst-parser) call an option's converter with the text written after the option's name, or
``None`` when nothing was written, and turn whatever it raises into a warning of their own: the build then
exits 0 without ``-W``, and the figure is left out (reST) or drawn without the option (MyST). So no converter
here raises: a value it refuses is returned as a ``BadOption`` (the option's name and the problem in plain
words), which the directive reports as its failure, naming the document, the line and the option, with a
non-zero exit, like any other failure of the directive.

Every option that takes a value refuses a missing one the same way (``:depth:`` alone, ``:show:`` alone);
a flag (``:train:``) refuses a value. ``:width:`` keeps the command line's rule for ``--width``
(``renderers.display.table_width_problem``): 0 (no limit) or at least ``MIN_TABLE_WIDTH`` columns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from docutils.parsers.rst import directives

from .renderers.display import MIN_TABLE_WIDTH, table_width_problem

__all__ = ["OPTION_SPEC", "SHOW", "TEXT_WIDTH", "BadOption", "first_bad", "parse_show"]

SHOW = ("diagram", "table", "text", "flow")
TEXT_WIDTH = 80  # the text table's width when :width: is not given


@dataclass(frozen=True)
class BadOption:
    """An option value refused, kept for the directive to report as its failure."""

    name: str
    problem: str

    def __str__(self) -> str:
        return f":{self.name}: {self.problem}"


def parse_show(value: str) -> list[str]:
    """The names ``:show:`` lists (``both`` is ``diagram table``), in the order written, each once."""
    out: list[str] = []
    for name in value.replace(",", " ").split():
        for n in (("diagram", "table") if name == "both" else (name,)):
            if n not in SHOW:
                raise ValueError(f"{n!r} is not one of {', '.join(SHOW)} (or both)")
            if n not in out:
                out.append(n)
    if not out:
        raise ValueError(f"name one or more of {', '.join(SHOW)}")
    return out


def _whole(value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise ValueError(f"{value.strip()!r} is not a whole number") from None


def _depth(value: str) -> int:
    depth = _whole(value)
    if depth < 0:
        raise ValueError(f"{depth} is below 0; give 0 or more (calls deeper than it are folded)")
    return depth


def _width(value: str) -> int | None:
    try:
        width = _whole(value)
    except ValueError as e:
        raise ValueError(f"{e}; give 0 (no limit) or at least {MIN_TABLE_WIDTH} columns") from None
    problem = table_width_problem(width)
    if problem:
        raise ValueError(problem)
    return width or None  # 0: no limit, as --width 0 is


def _choice(*choices: str) -> Callable[[str], str]:
    return lambda value: directives.choice(value.strip(), choices)


# Each option that takes a value: its converter and what it takes (said when the value is missing).
_VALUED: dict[str, tuple[Callable[[str], Any], str]] = {
    "input": (directives.unchanged, "an input spec such as 1,3,224,224, one per line for several inputs"),
    "arg": (directives.unchanged, "KEY=VALUE for the model factory, one per line"),
    "depth": (_depth, "a whole number, 0 or more"),
    "layout": (_choice("tb", "lr", "u"), "tb, lr or u"),
    "style": (_choice("compact", "detailed"), "compact or detailed"),
    "overlay": (directives.unchanged, "overlay names separated by spaces"),
    "show": (parse_show, f"one or more of {', '.join(SHOW)} (or both)"),
    "caption": (directives.unchanged, "the caption's text, or exhibit for the exhibit's own"),
    "alt": (directives.unchanged, "the first picture's alternative text"),
    "name": (directives.unchanged, "a name to refer to the figure by, as :ref:`text <name>`"),
    "width": (_width, f"0 (no limit) or a number of columns, {MIN_TABLE_WIDTH} or more"),
}
_FLAGS = ("unroll", "train", "allow-failure")


def _valued(name: str, convert: Callable[[str], Any], takes: str) -> Callable[[str | None], Any]:
    def read(value: str | None) -> Any:
        if value is None or not value.strip():
            return BadOption(name, f"needs a value: {takes}. Give one, or leave the option out.")
        try:
            return convert(value)
        except (ValueError, TypeError) as e:
            return BadOption(name, str(e))

    return read


def _flag(name: str) -> Callable[[str | None], Any]:
    def read(value: str | None) -> Any:
        try:
            return directives.flag(value)
        except ValueError as e:
            return BadOption(name, str(e))

    return read


OPTION_SPEC: dict[str, Callable[[str | None], Any]] = {
    **{name: _valued(name, convert, takes) for name, (convert, takes) in _VALUED.items()},
    **{name: _flag(name) for name in _FLAGS},
}


def first_bad(options: dict[str, Any]) -> BadOption | None:
    """The first option whose value was refused, or ``None``."""
    return next((v for v in options.values() if isinstance(v, BadOption)), None)
