"""``shapetrace diff --width N``: the whole text fits N columns, not only the table.

The lines above the table (which file is A, which is B, each side's model) and the summary below it wrap as
the shape table's notes do: at spaces, a continuation indented by two, nothing lost. ``--width 0`` is no limit.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from shapetrace.cli import main
from shapetrace.renderers.units import display_width

_MODELS = ("import torch\nfrom torch import nn\n\n"
           "class CNN(nn.Module):\n"
           "    def __init__(self, fc_in=32 * 8 * 8):\n        super().__init__()\n"
           "        self.conv = nn.Conv2d(3, 32, 3, padding=1)\n"
           "        self.pool = nn.MaxPool2d(4)\n"
           "        self.fc = nn.Linear(fc_in, 64)\n"
           "        self.out = nn.Linear(64, 10)\n\n"
           "    def forward(self, x):\n        return self.out(self.fc(self.pool(self.conv(x)).flatten(1)))\n")


@pytest.fixture()
def models(tmp_path):
    path = tmp_path / "a_models_file_with_a_rather_long_name_for_the_header.py"
    path.write_text(_MODELS)
    return path


def _diff(models, *args: str) -> str:
    """A CNN whose fc is sized for 28×28 images (its forward fails there, before ``out``) against one sized for
    the 32×32 input."""
    result = CliRunner().invoke(main, ["diff", f"{models}:CNN", f"{models}:CNN", "--a-arg", "fc_in=1568",
                                       "-i", "2,3,32,32", *args])
    assert result.exit_code == 1, result.output  # A's forward failed: the diff of what ran
    return result.stdout


def _sentences(text: str) -> list[str]:
    """The lines with each wrapped continuation (indented by two) joined back onto the line it continues."""
    out: list[str] = []
    for line in text.splitlines():
        if line.startswith("  ") and out:
            out[-1] += " " + line.strip()
        else:
            out.append(line)
    return out


def test_every_line_of_the_diff_fits_the_width_header_and_summary_too(models):
    text = _diff(models, "--width", "50")
    assert max(display_width(line) for line in text.splitlines()) <= 50, text
    head = text.split("\n\n", 1)[0]
    summary = text.rsplit("─\n", 1)[1]
    assert len(head.splitlines()) > 4 and len(summary.splitlines()) > len(_sentences(summary))  # both wrapped
    sentences = _sentences(summary)
    assert ("1 call not reached in A, whose forward failed before calling it: the module is there, not added or "
            "removed.") in sentences  # nothing lost
    assert head.startswith("A =\n  /")  # a path has no space to break at: it starts a line, then breaks anywhere
    assert f"{models}:CNN" in "".join(line.strip() for line in head.splitlines())  # whole


def test_width_0_keeps_every_header_and_summary_line_whole(models):
    lines = _diff(models, "--width", "0").splitlines()
    assert f"A = {models}:CNN" in lines
    assert ("1 call not reached in A, whose forward failed before calling it: the module is there, not added or "
            "removed.") in lines


def test_the_against_summary_fits_the_width_too(models):
    result = CliRunner().invoke(main, ["diff", f"{models}:CNN", "--against", "torchinfo", "-i", "2,3,32,32",
                                       "--width", "40"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(display_width(line) for line in lines) <= 40, result.stdout
    assert _sentences(result.stdout)[-1].startswith("shapetrace saw 5 calls, torchinfo")
