"""What a diagram too big to read says: a bitmap Graphviz had to shrink to fit its largest size is named with
how much it shrank, and the warning about too many nodes says what is true of them (side by side, or one chain)."""

from __future__ import annotations

import struct
import warnings

import pytest
import torch
from conftest import requires_dot
from torch import nn

import shapetrace
from shapetrace.renderers.diagram import render
from shapetrace.renderers.graph import MAX_NODES, build_graph


def _chain(n: int) -> shapetrace.Trace:
    return shapetrace.trace(nn.Sequential(*[nn.Linear(2, 2) for _ in range(n)]), torch.randn(1, 2))


class Fan(nn.Module):
    """Many layers read the same input, side by side."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(nn.Linear(2, 2) for _ in range(n))

    def forward(self, x):
        return [branch(x) for branch in self.branches]


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", png[16:24])  # IHDR: width, height


@requires_dot
def test_a_png_graphviz_shrinks_to_fit_its_largest_bitmap_is_warned_about_with_how_much():
    with pytest.warns(shapetrace.ShapetraceWarning, match=r"drew the png diagram at (\d+\.\d)% of its size") as seen:
        png = render(_chain(420), format="png")
    assert max(_png_size(png)) <= 32767  # what Graphviz kept to
    message = next(str(w.message) for w in seen if "of its size" in str(w.message))
    percent = float(message.split(" at ")[1].split("%")[0])
    assert 30 < percent < 100 and "svg" in message and "--depth" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a small one is drawn at full size, without a word
        _png_size(render(_chain(20), format="png"))


def test_too_many_calls_in_one_chain_are_not_said_to_stand_side_by_side():
    with pytest.warns(UserWarning, match="stay in one long chain") as seen:
        build_graph(_chain(MAX_NODES + 10))
    assert "side by side" not in str(seen[0].message)
    with pytest.warns(UserWarning, match="stay side by side"):
        build_graph(shapetrace.trace(Fan(MAX_NODES + 10), torch.randn(1, 2)))
