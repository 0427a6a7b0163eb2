"""The modules view of a module called from several modules (one block shared by two others): listed under
their common caller with a note saying who calls it, never nested under its first caller, whose time it is
not all part of."""

from __future__ import annotations

import time

import torch
from torch import nn

import shapetrace
from shapetrace.renderers.rows import table_rows


class Shared(nn.Module):
    def __init__(self, seconds: float = 0.0) -> None:
        super().__init__()
        self.seconds = seconds
        self.lin = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return self.lin(x)


class Block(nn.Module):
    def __init__(self, shared: Shared) -> None:
        super().__init__()
        self.shared = shared
        self.after = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.after(self.shared(x))


class TwoBlocks(nn.Module):
    def __init__(self, seconds: float = 0.0) -> None:
        super().__init__()
        shared = Shared(seconds)
        self.a, self.b = Block(shared), Block(shared)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x))


def _tree(rows) -> list[tuple[int, str]]:
    return [(r.depth, r.name) for r in rows]


def test_a_module_called_from_two_blocks_is_listed_beside_them_with_what_it_calls():
    trace = shapetrace.trace(TwoBlocks(), torch.randn(3))
    assert _tree(table_rows(trace, view="modules")) == [
        (0, "(root)"), (1, "a"), (2, "a.after"), (1, "a.shared"), (2, "a.shared.lin"), (1, "b"), (2, "b.after")]


def test_the_calls_view_still_nests_each_call_under_its_caller():
    trace = shapetrace.trace(TwoBlocks(), torch.randn(3))
    rows = [(r.depth, r.name) for r in table_rows(trace, view="calls")]
    assert (2, "a.shared") in rows and (2, "b.shared#1") in rows


def test_the_note_names_every_caller():
    text = str(shapetrace.trace(TwoBlocks(), torch.randn(3)).table(view="modules"))
    assert "a.shared is called from a, b: listed under their common caller, not nested under a" in text


def test_a_module_called_from_one_block_only_stays_nested_with_no_note():
    trace = shapetrace.trace(Block(Shared()), torch.randn(3))
    assert _tree(table_rows(trace, view="modules")) == [(0, "(root)"), (1, "shared"), (2, "shared.lin"), (1, "after")]
    assert "is called from" not in str(trace.table(view="modules"))


def test_no_row_of_a_profile_is_nested_under_a_row_with_less_time():
    trace = shapetrace.profile(TwoBlocks(0.01), torch.randn(3), device="cpu", warmup=0, repeat=1)
    rows = table_rows(trace, view="modules")
    parents: list = []
    for r in rows:
        del parents[r.depth:]
        if parents:
            assert r.timing.total_ms <= parents[-1].timing.total_ms, (r.name, parents[-1].name)
        parents.append(r)
