"""``build_view``: what each line of a forward is shown with, and what it costs to gather."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from shapetrace.renderers.lines import build_view
from shapetrace.tracer.api import trace
from shapetrace.tracer.records import Trace


class Repeated(nn.Module):
    """One Linear called many times in a loop: a leaf with many calls."""

    def __init__(self, times: int) -> None:
        super().__init__()
        self.times = times
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.times):
            x = self.lin(x)
        return x


def test_a_leaf_called_many_times_is_viewed_without_a_pass_over_the_trace_per_call(monkeypatch: pytest.MonkeyPatch):
    t = trace(Repeated(300), torch.randn(1, 4), lines=True)
    passes = []
    real = Trace.leaves
    monkeypatch.setattr(Trace, "leaves", lambda self: passes.append(1) or real(self))
    view = build_view(t, "lin")
    assert view.calls == 300 and view.note and view.note.startswith("a leaf module")
    assert len(passes) <= 1
