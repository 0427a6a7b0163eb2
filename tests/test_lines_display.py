"""``trace.lines()`` as a display object: how front ends without HTML show it, and how it saves to files."""

from __future__ import annotations

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
