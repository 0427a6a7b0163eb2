"""The U layout on an input whose sides do not halve evenly: sizes that differ only by rounding share a row.

``camvid-unet`` on a 97×131 image halves it to 49×66 (rounded up), and its last PixelShuffle doubles that back
to 98×132 before ``ResizeToOrig`` crops to 97×131. By exact area those were two rows, the 98×132 one on top of
everything with the doubling arrow running down from it; one level of the U is one row.
"""

from __future__ import annotations

import re

import pytest
import torch
from conftest import requires_dot

import shapetrace
from shapetrace.renderers.diagram import render
from shapetrace.renderers.graph import build_graph
from shapetrace.tracer.records import Trace

# The camvid-unet exhibit's own picture: depth 2, its blocks folded, the U layout.
FOLD = ["UnetBlock", "ResBlock", "PixelShuffle_ICNR"]


@pytest.fixture(scope="module")
def odd_unet_trace(shared_exhibits) -> Trace:
    model = shared_exhibits.model("camvid-unet")  # as the exhibit builds it, shared read-only
    return shapetrace.trace(model, torch.randn(1, 3, 97, 131, generator=torch.Generator().manual_seed(0)), ops=True)


def test_sizes_one_rounding_apart_share_a_u_row(odd_unet_trace):
    g = build_graph(odd_unet_trace, depth=2, fold=FOLD)
    rank = {n.name: n.rank for n in g.nodes}
    assert g.find("layers.8")[0].out_shape[2:] == (98, 132) and g.find("layers.9")[0].out_shape[2:] == (97, 131)
    assert rank["layers.8"] == rank["layers.9"] == rank["input"] == rank["output"] == 0
    assert rank["layers.7"] == rank["layers.0.0"] == 1  # 49×66, encoder and decoder alike
    assert g.levels == 6  # 97×131, 49×66, 25×33, 13×17, 7×9, 4×5


def test_a_change_of_size_never_points_against_its_rows(odd_unet_trace):
    g = build_graph(odd_unet_trace, depth=2, fold=FOLD)
    for e in g.edges:
        if e.change is not None:
            src, dst = g.node(e.src), g.node(e.dst)
            going = "up" if dst.rank < src.rank else "down" if dst.rank > src.rank else "across"
            assert going in (e.change[0], "across"), (src.name, dst.name, e.change, going)


def _name_y(svg: str, name: str) -> float:
    """The y of a node's bold name as Graphviz drew it (nodes of one kind have it at the same height in a row)."""
    ys = re.findall(rf'y="(-?[\d.]+)"[^>]*font-weight="bold"[^>]*>{re.escape(name)}</text>', svg)
    assert len(ys) == 1, (name, ys)
    return float(ys[0])


@requires_dot
def test_the_odd_unet_decoder_climbs_to_the_encoders_top_row_and_stays_there(odd_unet_trace):
    svg = render(odd_unet_trace, format="svg", depth=2, layout="u", options={"fold": FOLD}).decode()
    y = {name: _name_y(svg, name) for name in ("layers.0.0", "layers.7", "layers.8", "layers.9", "layers.6")}
    assert y["layers.8"] == y["layers.9"]  # the PixelShuffle's 98×132 beside the crop to 97×131, not above it
    assert y["layers.7"] == y["layers.0.0"]  # SVG y grows downwards: each decoder step one row higher
    assert y["layers.6"] > y["layers.7"] > y["layers.8"]
