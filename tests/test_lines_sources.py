"""Which source text each traced forward is shown with: one per forward, and only when it is what ran."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from shapetrace import load
from shapetrace.renderers.lines import build_view
from shapetrace.tracer.api import trace


def _texts(view) -> list[str]:
    return [ln.text for sv in view.sources for ln in sv.lines if ln.number]


class TwoLambdas(nn.Module):
    """Holds two plain modules whose forwards are lambdas written in one function: same module and qualname."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Module()
        self.a.lin = nn.Linear(4, 4)
        self.a.forward = lambda x: self.a.lin(x).relu()
        self.b = nn.Module()
        self.b.lin = nn.Linear(4, 8)
        self.b.forward = lambda x: torch.sigmoid(self.b.lin(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x))


def test_two_lambda_forwards_with_one_qualname_each_show_their_own_line():
    t = trace(TwoLambdas(), torch.randn(2, 4), lines=True)
    for tr in (t, load(t.to_json())):
        a, b = build_view(tr, "a"), build_view(tr, "b")
        assert _texts(a) == ["self.a.forward = lambda x: self.a.lin(x).relu()"]
        assert _texts(b) == ["self.b.forward = lambda x: torch.sigmoid(self.b.lin(x))"]
        assert {g.name for ln in b.sources[0].lines for g in ln.groups} == {"lin", "sigmoid"}


_CELL_1 = """
class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return self.lin(x).relu()
old = Block()
"""

_CELL_2 = """
# edited: a gate added
class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.gate = nn.Linear(4, 4)

    def forward(self, x):
        g = torch.sigmoid(self.gate(x))
        return self.lin(x) * g
"""


def test_a_class_redefined_in_a_later_notebook_cell_keeps_each_versions_code(tmp_path: Path):
    """Jupyter compiles each cell from a file of its own, in one ``__main__``: both classes are ``__main__.Block``."""
    ns = {"__name__": "__main__", "nn": nn, "torch": torch}
    for i, cell in enumerate((_CELL_1, _CELL_2)):
        path = tmp_path / f"cell{i}.py"
        path.write_text(cell)
        exec(compile(cell, str(path), "exec"), ns)  # noqa: S102 - running a notebook cell, as Jupyter does
    model = nn.Sequential(ns["old"], ns["Block"]())
    t = trace(model, torch.randn(2, 4), lines=True)
    assert _texts(build_view(t, "0"))[-1] == "    return self.lin(x).relu()"
    assert _texts(build_view(t, "1"))[-1] == "    return self.lin(x) * g"
    # the first forward seen keeps the plain key, as traces saved before did
    assert "__main__.Block.forward" in t.sources
