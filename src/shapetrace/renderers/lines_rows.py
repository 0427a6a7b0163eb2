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


def _words(text: str) -> tuple[str, list[str], list[int]]:
    """``text``'s leading spaces, its words (split at single spaces, so runs of spaces are kept) and their widths."""
    rest = text.lstrip(" ")
    words = rest.split(" ")
    return text[:len(text) - len(rest)], words, [display_width(w) for w in words]


def wrap_words(text: str, width: int, indent: str = "") -> list[str]:
    """``text`` in pieces of at most ``width`` display columns, broken after spaces; the pieces after the first
    start with ``indent`` (unless the word that starts one would then not fit); a word wider than a piece is cut
    where it must be."""
    width = max(width, 1)
    if display_width(text) <= width:
        return [text]
    lead, words, widths = _words(text)
    indent_width = display_width(indent)

    def start(word_width: int) -> tuple[str, int]:  # a new piece: indented when that leaves room for the word
        fits = indent_width < width // 2 and indent_width + word_width <= width
        return (indent, indent_width) if fits else ("", 0)

    pieces: list[str] = []
    current, used, started = lead, display_width(lead), False
    for word, word_width in zip(words, widths):
        if started and used + 1 + word_width > width:
            pieces.append(current.rstrip())
            current, used = start(word_width)
            started = False
        elif not started and used + word_width > width:  # the indentation leaves no room: drop it
            current, used = "", 0
        while used + word_width > width:  # one word wider than a piece: cut where it must be
            head = fitting_start(word, width - used) or word[:1]
            pieces.append(current + head)
            word = word[len(head):]
            word_width = display_width(word)
            current, used = start(word_width)
        current += (" " if started else "") + word
        used += (1 if started else 0) + word_width
        started = True
    if current.strip() or not pieces:
        pieces.append(current.rstrip())
    return pieces


def _count(lead: int, widths: list[int], width: int, indent: int) -> int:
    """How many pieces ``wrap_words`` makes of a text with these leading spaces and word widths (no cut words:
    the count only ranks layouts)."""
    pieces, used, started = 1, lead, False
    indent = indent if indent < width // 2 else 0
    for w in widths:
        if started and used + 1 + w > width:
            pieces += 1
            used = indent if indent + w <= width else 0
            started = False
        used += (1 if started else 0) + w
        started = True
    return pieces


def _split(rows: list[Row], room: int) -> int:
    """The code column's width when code and notes cannot both be shown whole in ``room`` columns: the one
    that takes the fewest rows in all (the wider code column of two that take as many)."""
    widest_code = max(display_width(r.code) for r in rows)
    low = min(widest_code, max(_MIN_CODE, room // 3))
    high = max(low, min(widest_code, room - _MIN_NOTES))
    step = max(1, (high - low) // 16)  # a few dozen tries at most
    measured = []
    for r in rows:
        lead, _, code = _words(r.code)
        notes = [(_words(n)[2], display_width(n)) for n in r.notes]
        measured.append((display_width(r.code), len(lead), code, notes))
    best: tuple[int, int] | None = None
    for code_width in (*range(low, high, step), high):
        note_width = room - code_width
        total = 0
        for whole, lead_width, code, notes in measured:
            code_rows = 1 if whole <= code_width else _count(lead_width, code, code_width, lead_width + 4)
            note_rows = sum(1 if nw <= note_width else _count(0, ws, note_width, 2) for ws, nw in notes)
            total += max(code_rows, note_rows)
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
