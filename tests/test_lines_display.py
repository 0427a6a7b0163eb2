"""``trace.lines()`` as a display object: how front ends without HTML show it, and how it saves to files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from conftest import require
from torch import nn

from shapetrace.tracer.api import trace


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x).relu()


@pytest.fixture(scope="module")
def lines():
    return trace(Small(), torch.randn(3, 4), lines=True).lines()


def test_terminal_ipython_and_text_front_ends_show_the_lines_not_a_placeholder(lines):
    require("IPython")
    from IPython.core.formatters import DisplayFormatter
    from IPython.lib.pretty import pretty

    data, _ = DisplayFormatter().format(lines)
    assert data["text/plain"] == str(lines) == pretty(lines)
    assert "return self.lin(x).relu()" in data["text/plain"] and "lin Linear → (3,2)" in data["text/plain"]
    assert '<table class="st-lines">' in data["text/html"]


@pytest.mark.parametrize("name", ["lines.png", "lines.svg", "lines.pdf", "lines"])
def test_saving_to_a_suffix_it_cannot_write_says_which_it_can(lines, tmp_path: Path, name: str):
    with pytest.raises(ValueError, match=r"\.html.*\.markdown.*\.txt.*trace\.diagram\(\)"):
        lines.save(tmp_path / name)
    assert not os.listdir(tmp_path)


def test_markdown_suffixes_are_saved_as_markdown_into_new_folders(lines, tmp_path: Path):
    for name in ("a/b/lines.markdown", "lines.md"):
        saved = lines.save(tmp_path / name)
        assert saved.read_text(encoding="utf-8") == lines.render("md")
        assert saved.read_text(encoding="utf-8").startswith("```text")
    assert lines.save(tmp_path / "page.out", format="html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_a_save_that_fails_leaves_the_old_file_whole(lines, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    target = tmp_path / "lines.txt"
    target.write_text("old")

    def fail(*args: object, **kwargs: object) -> str:
        raise RuntimeError("render failed")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(RuntimeError):
        lines.save(target)
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["lines.txt"]
