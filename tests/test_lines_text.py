"""The text form of ``trace.lines()``: the shapes column stays one column in a terminal whatever the source."""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import nn

from shapetrace.renderers.lines import build_view, render
from shapetrace.renderers.units import display_width
from shapetrace.tracer.api import trace

# Written to a file of its own: a tab-indented body and an over-long line are what the test is about (and what
# a formatter would rewrite here).
_MODELS = (
    "import torch\n"
    "from torch import nn\n"
    "\n"
    "\n"
    "class Tabbed(nn.Module):\n"
    "\tdef __init__(self):\n"
    "\t\tsuper().__init__()\n"
    "\t\tself.lin = nn.Linear(4, 4)\n"
    "\n"
    "\tdef forward(self, x):\n"
    "\t\ty = self.lin(x)\n"
    "\t\tif y.sum() > 1e9:\n"
    "\t\t\ty = y * 2\n"
    "\t\treturn y.relu()\n"
    "\n"
    "\n"
    "class Wide(nn.Module):\n"
    "    def __init__(self):\n"
    "        super().__init__()\n"
    "        self.层 = nn.Linear(4, 4)\n"
    "\n"
    "    def forward(self, 输入):\n"
    "        输出 = self.层(输入)  # 线性层\n"
    "        return 输出.relu()\n"
    "\n"
    "\n"
    "class Long(nn.Module):\n"
    "    def __init__(self):\n"
    "        super().__init__()\n"
    "        self.a = nn.Linear(4, 4)\n"
    "\n"
    "    def forward(self, x):\n"
    "        y = " + " + ".join(["self.a(x)"] * 12) + "\n"
    "        return y.relu()\n"
)


def _models(tmp_path: Path) -> dict:
    path = tmp_path / "text_models.py"
    path.write_text(_MODELS, encoding="utf-8")
    ns = {"__name__": "text_models"}
    exec(compile(_MODELS, str(path), "exec"), ns)  # noqa: S102 - importing the model file
    return ns


def _shape_column(text: str) -> set[int]:
    """The display column of the second ``│`` on every row that has one."""
    return {
        display_width(row[: row.index("│", row.index("│") + 1)]) for row in text.splitlines() if row.count("│") >= 2
    }


def _text(model: nn.Module, *inputs: torch.Tensor) -> str:
    return render(build_view(trace(model, *inputs, lines=True, strict=False)), "text")


def test_tab_indented_source_keeps_the_shapes_in_one_column(tmp_path: Path):
    text = _text(_models(tmp_path)["Tabbed"](), torch.randn(2, 4))
    assert "\t" not in text
    assert len(_shape_column(text)) == 1
    assert "        if y.sum() > 1e9: │ sum → ()" in text


def test_wide_characters_keep_the_shapes_in_one_column(tmp_path: Path):
    text = _text(_models(tmp_path)["Wide"](), torch.randn(2, 4))
    assert "层 Linear → (2,4)" in text
    assert len(_shape_column(text)) == 1


def test_a_line_wider_than_the_column_shows_whole_with_its_shapes_below(tmp_path: Path):
    text = _text(_models(tmp_path)["Long"](), torch.randn(2, 4))
    assert " + ".join(["self.a(x)"] * 12) in text
    assert len(_shape_column(text)) == 1
    assert "│ a Linear ×12: (2,4)" in text and "│ relu → (2,4)" in text


class Checked(nn.Module):
    """Raises an error whose message spans several lines."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x)
        if y.shape[0] == 2:
            raise ValueError("shape mismatch:\n  expected (3, 4)\n  got (2, 4)")
        return y


def test_a_multi_line_error_message_stays_in_the_shapes_column():
    text = _text(Checked(), torch.randn(2, 4))
    assert len(_shape_column(text)) == 1
    assert "│ ✗ ValueError: shape mismatch:" in text and "│   expected (3, 4)" in text and "│   got (2, 4)" in text


def _doubled(forward):
    @functools.wraps(forward)
    def wrapper(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return forward(self, x * 2)  # an op made outside the forward's own lines

    return wrapper


class Short(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)

    @_doubled
    def forward(self, x):
        return self.a(x)


def test_the_made_outside_these_lines_row_keeps_the_shapes_in_one_column():
    text = _text(Short(), torch.randn(2, 4))
    assert "(made outside these lines) │ mul → (2,4)" in text
    assert len(_shape_column(text)) == 1


class _OddlyNamed(nn.Module):
    """Children named with a newline and with terminal escape sequences (a ModuleDict takes any string)."""

    def __init__(self) -> None:
        super().__init__()
        self.d = nn.ModuleDict({"\x1b[2Jcls\x1b[31m": nn.Linear(3, 3), "a\nb": nn.ReLU()})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.d["\x1b[2Jcls\x1b[31m"](x)
        return self.d["a\nb"](x)


def test_lines_text_shows_control_characters_in_module_names_escaped_on_their_own_row():
    for fmt in ("text", "html", "md"):
        assert "\x1b" not in render(build_view(trace(_OddlyNamed(), torch.randn(2, 3), lines=True)), fmt), fmt
    text = render(build_view(trace(_OddlyNamed(), torch.randn(2, 3), lines=True)), "text")
    row = next(ln for ln in text.splitlines() if "return self.d" in ln)
    assert row.endswith("│ d.a\\nb ReLU → (2,3)"), row
    assert "\nb ReLU" not in text


_HOSTILE = (
    "from torch import nn\n"
    "\n"
    "\n"
    "class Hostile(nn.Module):\n"
    "    def __init__(self):\n"
    "        super().__init__()\n"
    "        self.lin = nn.Linear(4, 4)\n"
    "\n"
    "    def forward(self, x):\n"
    "        y = self.lin(x)  # \u202eevil\x1b[31m\n"
    "        return y\n"
)


def test_control_and_bidi_characters_in_the_source_are_shown_escaped(tmp_path: Path):
    path = tmp_path / "hostile_models.py"
    path.write_text(_HOSTILE, encoding="utf-8")
    ns = {"__name__": "hostile_models"}
    exec(compile(_HOSTILE, str(path), "exec"), ns)  # noqa: S102 - importing the model file
    text = _text(ns["Hostile"](), torch.randn(2, 4))
    assert "\u202e" not in text and "\x1b" not in text
    assert "# \\u202eevil\\x1b[31m" in text and len(_shape_column(text)) == 1
