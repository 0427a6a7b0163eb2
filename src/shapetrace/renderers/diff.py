"""Render a ``Comparison`` (shapetrace against torchinfo or torchview) as text or Markdown."""

from __future__ import annotations

from ..tracer.records import Comparison

COLUMNS = ("layer", "what", "shapetrace", "{tool}", "why")


def _rows(comparison: Comparison) -> list[tuple[str, ...]]:
    return [(d.layer, d.what, d.shapetrace, d.other, d.why) for d in comparison.differences]


def _summary(c: Comparison) -> str:
    n = len(c.differences)
    return (f"shapetrace saw {c.our_calls} calls, {c.tool} {c.their_calls}; {c.matched} matched; "
            f"{n} difference{'s' if n != 1 else ''}.")


def render_text(comparison: Comparison, width: int = 100) -> str:
    """An aligned table; the ``why`` column wraps at ``width``."""
    head = tuple(h.format(tool=comparison.tool) for h in COLUMNS)
    rows = _rows(comparison)
    if not rows:
        return _summary(comparison) + "\n"
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    lines = []
    for r in [head, *rows]:
        left = "  ".join(cell.ljust(w) for cell, w in zip(r[:4], widths))
        lines.append(f"{left}  {r[4]}".rstrip())
    rule = "─" * min(width, max(len(line) for line in lines))
    return "\n".join([rule, lines[0], rule, *lines[1:], rule, _summary(comparison)]) + "\n"


def _md(cell: str) -> str:
    return cell.replace("|", "\\|").replace("\n", " ")


def render_markdown(comparison: Comparison) -> str:
    head = [h.format(tool=comparison.tool) for h in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_md(c) for c in r) + " |" for r in _rows(comparison)]
    return "\n".join([*lines, "", _summary(comparison)]) + "\n"


def render(comparison: Comparison, fmt: str = "text") -> str:
    if fmt == "md":
        return render_markdown(comparison)
    if fmt == "text":
        return render_text(comparison)
    raise ValueError(f"diff renders as text or md, not {fmt!r}")
