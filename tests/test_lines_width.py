"""``shapetrace lines`` fits its rows to a width as ``trace`` fits its table: the terminal's (``COLUMNS`` first),
100 columns off a terminal, or ``--width N`` (0: no limit); the ``│`` columns stay aligned however rows wrap."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from click.testing import CliRunner

from shapetrace.cli import main
from shapetrace.renderers.units import display_width

SRC = Path(__file__).resolve().parents[1] / "src"

_WIDE = """import torch
from torch import nn


class Wide(nn.Module):
    def __init__(self):
        super().__init__()
        self.embeds = nn.ModuleList([nn.Embedding(10, n) for n in (6, 5, 8, 3, 21, 7)])
        self.head = nn.Linear(50, 2)

    def forward(self, x):
        x = torch.cat([embedding_layer(x[:, i]) for i, embedding_layer in enumerate(self.embeds)], dim=1)  # wide
        return self.head(x)
"""


def _model(tmp_path: Path, source: str = _WIDE, name: str = "wide.py") -> str:
    path = tmp_path / name
    path.write_text(source)
    return f"{path}:{source.split('class ')[1].split('(')[0]}"


def _rows(text: str) -> list[str]:
    return [row for row in text.splitlines() if "│" in row]


def _bar_columns(rows: list[str]) -> tuple[set[int], set[int]]:
    """The display columns of the first and the second ``│`` of the rows."""
    first = {display_width(r[:r.index("│")]) for r in rows}
    second = {display_width(r[:r.index("│", r.index("│") + 1)]) for r in rows if r.count("│") > 1}
    return first, second


def _lines(*args: str) -> str:
    result = CliRunner().invoke(main, ["lines", *args, "--input", "long:2,7"])
    assert result.exit_code == 0, result.output
    return result.output


def _on_a_terminal(columns: int, *args: str) -> str:
    """``shapetrace lines ARGS`` run with stdout on a terminal ``columns`` wide, as a user runs it."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"} | {"PYTHONPATH": str(SRC), "NO_COLOR": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "shapetrace.cli", "lines", *args, "--input", "long:2,7"],
                            stdout=follower, stderr=subprocess.DEVNULL, env=env)
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal is gone once the command exits
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    assert proc.wait(timeout=120) == 0
    return out.decode().replace("\r\n", "\n")


def test_on_a_terminal_every_row_fits_its_width_with_the_bars_aligned(tmp_path):
    rows = _rows(_on_a_terminal(72, _model(tmp_path)))
    assert rows and max(map(display_width, rows)) <= 72
    first, second = _bar_columns(rows)
    assert len(first) == 1 and len(second) == 1


def test_off_a_terminal_rows_fit_100_columns_as_the_trace_table_does(tmp_path):
    rows = _rows(_lines(_model(tmp_path)))
    assert max(map(display_width, rows)) <= 100
    assert len(_bar_columns(rows)[1]) == 1


@pytest.mark.parametrize("width", [40, 60, 90])
def test_width_sets_how_wide_the_rows_are(tmp_path, width):
    rows = _rows(_lines(_model(tmp_path), "--width", str(width)))
    assert max(map(display_width, rows)) <= width
    first, second = _bar_columns(rows)
    assert len(first) == 1 and len(second) == 1


def test_width_0_shows_each_line_and_each_note_whole(tmp_path):
    text = _lines(_model(tmp_path), "--width", "0")
    code = "x = torch.cat([embedding_layer(x[:, i]) for i, embedding_layer in enumerate(self.embeds)], dim=1)  # wide"
    assert any(row.endswith(code) for row in text.splitlines())
    assert "embeds.0–5 Embedding ×6: (2,6), (2,5), (2,8), (2,3), (2,21), (2,7) float32" in text


def test_a_wrapped_note_breaks_between_values_never_inside_a_shape(tmp_path):
    rows = _rows(_lines(_model(tmp_path), "--width", "60"))
    shapes = [r[r.index("│", r.index("│") + 1) + 1:].strip() for r in rows if r.count("│") > 1]
    note = " ".join(s for s in shapes if s.startswith("embeds") or not re.match(r"[a-z]", s))
    assert note.startswith("embeds.0–5 Embedding ×6: (2,6), (2,5), (2,8), (2,3), (2,21), (2,7) float32")
    assert all(re.fullmatch(r"[^()]*(\([0-9,]*\)[^()]*)*", s) for s in shapes)  # every "(" closed on its row


def test_a_width_under_the_table_minimum_is_refused(tmp_path):
    result = CliRunner().invoke(main, ["lines", _model(tmp_path), "--input", "long:2,7", "--width", "20"])
    assert result.exit_code == 2 and "at least 40" in result.output


_FAR_DOWN = "\n" * 10_050 + """import torch
from torch import nn


class FarDown(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(7, 7)

    def forward(self, x):
        y = self.lin(x.float())
        if y.sum() > 1e9:
            y = y * 2
        return y
"""


@pytest.mark.parametrize("width", ["0", "60"])
def test_line_numbers_past_9999_keep_the_mark_apart_and_the_bars_aligned(tmp_path, width):
    text = _lines(_model(tmp_path, _FAR_DOWN, "far_down.py"), "--width", width)
    assert "· 10063 │         y = y * 2" in text
    assert len(_bar_columns(_rows(text))[0]) == 1


_CJK = """import torch
from torch import nn


class Cjk(nn.Module):
    def __init__(self):
        super().__init__()
        self.卷积层 = nn.ModuleList([nn.Embedding(10, n) for n in (6, 5, 8, 3, 21, 7)])

    def forward(self, x):
        return torch.cat([层(x[:, i]) for i, 层 in enumerate(self.卷积层)], dim=1)  # 把所有嵌入拼接在一起，得到一个宽的向量
"""


def test_wide_characters_are_measured_in_display_columns_when_rows_wrap(tmp_path):
    rows = _rows(_lines(_model(tmp_path, _CJK, "cjk.py"), "--width", "50"))
    assert max(map(display_width, rows)) <= 50
    first, second = _bar_columns(rows)
    assert len(first) == 1 and len(second) == 1
