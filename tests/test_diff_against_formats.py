"""``shapetrace diff MODEL --against TOOL``: the formats it writes (text, md, json) and the one sentence it
gives where the tools agree."""

from __future__ import annotations

import json

from click.testing import CliRunner
from torch import nn

from shapetrace.cli import main

_MODEL = ("from torch import nn\n\n"
          "def mlp():\n    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))\n")


def _against(tmp_path, *options: str):
    path = tmp_path / "models.py"
    path.write_text(_MODEL)
    return CliRunner().invoke(main, ["diff", f"{path}:mlp", "-i", "2,8", "--against", "torchinfo", *options])


def test_against_as_json_lists_the_differences_and_the_counts(tmp_path):
    result = _against(tmp_path, "-f", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    calls = len(list(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)).modules()))  # torch's count
    assert data["format"] == "shapetrace.against/1" and data["tool"] == "torchinfo"
    assert (data["our_calls"], data["their_calls"], data["matched"], data["differences"]) == (calls, calls, calls, [])


def test_against_in_markdown_with_no_difference_gives_the_sentence_not_an_empty_table(tmp_path):
    result = _against(tmp_path, "-f", "md")
    assert result.exit_code == 0, result.output
    assert "|" not in result.stdout and "0 differences." in result.stdout


def test_against_as_html_is_refused_naming_the_formats_it_writes(tmp_path):
    result = _against(tmp_path, "-f", "html")
    assert result.exit_code == 2
    assert "--against writes text, md, json, not html" in result.stderr, result.output


def test_the_help_says_which_formats_against_writes():
    result = CliRunner().invoke(main, ["diff", "--help"])
    assert "written as text, md or json" in " ".join(result.stdout.split())


def test_markdown_of_differences_still_has_its_table():
    from shapetrace.renderers.diff import render
    from shapetrace.tracer.records import Comparison, Difference

    c = Comparison("torchinfo", 2, 2, 2, [Difference("fc", "params", "10", "20", "disagreement", 1)])
    assert render(c, "md").startswith("| layer | what | shapetrace | torchinfo | why |")
