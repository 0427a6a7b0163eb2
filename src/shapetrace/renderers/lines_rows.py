"""The rows of the lines view's text form, ``number │ code │ shapes``, laid out to a width.

Each row's two ``│`` stay in one column however the rows are sized: the number column is as wide as the
largest line number shown (at least four digits), a code line wider than the code column continues on the rows
below it, and a note wider than the shapes column is wrapped between its values (after a space: never inside a
shape such as ``(2,16,64)`` unless one value alone is wider than the column). With no width, the code column
is as wide as the widest line up to ``LEGACY_CODE_WIDTH`` and a wider line is shown whole, its notes on the
rows below; notes are not wrapped.
"""

from __future__ import annotations

from dataclasses import dataclass

from .units import display_width, fitting_start, pad

__all__ = ["LEGACY_CODE_WIDTH", "Row", "text_rows", "wrap_words"]

LEGACY_CODE_WIDTH = 100  # with no width: the widest code column; a longer line is shown whole, its notes below
_MIN_CODE = 12  # the narrowest code column at any width
_MIN_NOTES = 16  # the narrowest shapes column the code column leaves, where it can


@dataclass
class Row:
    """One source line as the text form shows it: its number (0: none), mark, code text and notes."""

    number: int
    mark: str
    code: str
    notes: list[str]


def wrap_words(text: str, width: int, indent: str = "") -> list[str]:
    """``text`` in pieces of at most ``width`` display columns, broken after spaces; the pieces after the first
    start with ``indent``; a word wider than a piece is cut where it must be."""
    width = max(width, 1)
    if display_width(text) <= width:
        return [text]
    words = [w + " " for w in text.split(" ")]
    words[-1] = words[-1][:-1]
    def start(word: str) -> str:  # a new piece: indented when the word still fits, else not
        fits = display_width(indent + word.rstrip()) <= width and display_width(indent) < width // 2
        return indent if fits else ""

    pieces: list[str] = []
    current = ""
    for word in words:
        if current.strip() and display_width(current + word.rstrip()) > width:
            pieces.append(current.rstrip())
            current = start(word)
        current += word
        while display_width(current.rstrip()) > width:  # one word wider than a piece: cut where it must be
            head = fitting_start(current, width) or current[:1]
            pieces.append(head)
            current = start(current[len(head):]) + current[len(head):]
    if current.strip() or not pieces:
        pieces.append(current.rstrip())
    return pieces


def _split(rows: list[Row], room: int) -> int:
    """The code column's width when code and notes cannot both be shown whole in ``room`` columns: the one
    that takes the fewest rows in all (the wider code column of two that take as many)."""
    widest_code = max(display_width(r.code) for r in rows)
    low = min(widest_code, max(_MIN_CODE, room // 3))
    high = max(low, min(widest_code, room - _MIN_NOTES))
    step = max(1, (high - low) // 24)  # a few dozen tries at most
    best: tuple[int, int] | None = None
    for code_width in (*range(low, high, step), high):
        total = sum(max(len(wrap_words(r.code, code_width, "    ")),
                        sum(len(wrap_words(n, room - code_width, "  ")) for n in r.notes)) for r in rows)
        if best is None or total <= best[0]:
            best = (total, code_width)
    return best[1] if best else low


def text_rows(rows: list[Row], width: int | None = None) -> list[str]:
    """The rows as lines of text, at most ``width`` display columns each (``None``: no limit)."""
    digits = max(4, *(len(str(r.number)) + 1 for r in rows)) if rows else 4  # a space between mark and number
    lead = digits + 4  # mark, number, " │ "
    widest_code = max((display_width(r.code) for r in rows), default=0)
    widest_note = max((display_width(n) for r in rows for n in r.notes), default=0)
    if width is None:
        code_width, note_width = min(LEGACY_CODE_WIDTH, widest_code), None
    else:
        room = max(width - lead - 3, _MIN_CODE + 1)  # for the code and the notes, less the second " │ "
        code_width = widest_code if widest_code + widest_note <= room else _split(rows, room)
        note_width = max(room - code_width, 1)
    out: list[str] = []
    blank = " " * (digits + 1)
    for r in rows:
        number = f"{r.number:>{digits}}" if r.number else f"{'?':>{digits}}"
        if note_width is None:
            if r.notes and display_width(r.code) <= code_width:
                out.append(f"{r.mark}{number} │ {pad(r.code, code_width)} │ {r.notes[0]}".rstrip())
                notes = r.notes[1:]
            else:
                out.append(f"{r.mark}{number} │ {r.code}".rstrip())
                notes = r.notes
            out += [f"{blank} │ {' ' * code_width} │ {note}".rstrip() for note in notes]
            continue
        indent = r.code[:len(r.code) - len(r.code.lstrip(" "))] + "    "
        codes = wrap_words(r.code, code_width, indent)
        notes = [piece for note in r.notes for piece in wrap_words(note, note_width, "  ")]
        for i in range(max(len(codes), len(notes))):
            head = f"{r.mark}{number}" if i == 0 else blank
            code = codes[i] if i < len(codes) else ""
            row = f"{head} │ {pad(code, code_width)} │ {notes[i]}" if i < len(notes) else f"{head} │ {code}"
            out.append(row.rstrip())
    return out
