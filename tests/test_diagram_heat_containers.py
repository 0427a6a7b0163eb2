"""The diagram's time heat shows every call's self time once: a container's own time (outside its child
modules) on its box's label, coloured on the same scale as the nodes and counted in the scale's top; the
root's, which has no box, in the legend."""

from __future__ import annotations

import html
import re
import subprocess
import time

import pytest
import torch
from conftest import Sleeper, requires_dot
from torch import nn

import shapetrace
from shapetrace.renderers import diagram
from shapetrace.renderers.diagram import render, to_dot


class Outer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fast = Sleeper(0.0)
        self.slow = Sleeper(0.03)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.01)
        return self.slow(self.fast(x))


@pytest.fixture(scope="module")
def timed() -> shapetrace.Trace:
    return shapetrace.profile(Outer().eval(), torch.randn(2, 4), device="cpu", warmup=0, repeat=1)


def _own(trace: shapetrace.Trace, module: str) -> float:
    return next(c.timing["self_ms"] for c in trace.calls if c.module == module)


def _legend(src: str) -> str:
    """The legend's words, as read: wrapped lines joined, markup and escapes undone."""
    legend = src[src.index("legend ["):].replace("&#160;", "").replace("<BR/>", " ")
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]*>", " ", legend)))


def _box_label(src: str, name: str) -> str:
    """The label line of the cluster whose bold title is ``name``."""
    return next(line for line in src.splitlines() if line.strip().startswith("label=") and f"<B>{name}</B>" in line)


def test_a_container_box_prints_its_own_time_on_the_heat_colour_of_that_time(timed):
    src = to_dot(timed, overlays=["heat"], options={"heat": "time"})
    slow = _own(timed, "slow")
    assert slow >= 25  # the 30 ms sleep is its own code's, not its Linear's
    label = _box_label(src, "slow")
    assert f"{shapetrace.renderers.units.format_ms(slow)} ms self" in label
    assert f'BGCOLOR="{diagram.HEAT_SCALE[-1]}"' in label  # the hottest call of the model is the box's


def test_the_heat_scale_tops_at_the_hottest_container_not_the_hottest_leaf(timed):
    src = to_dot(timed, overlays=["heat"], options={"heat": "time"})
    top = max(c.timing["self_ms"] for c in timed.calls)
    assert top == _own(timed, "slow")
    assert f">{shapetrace.renderers.units.format_ms(top)} ms<" in src.replace("&#160;", "")
    assert f'fillcolor="{diagram.HEAT_SCALE[-1]}"' not in src  # no Linear (well under a ms) is drawn hottest


def test_the_roots_own_time_which_has_no_box_is_in_the_legend(timed):
    src = to_dot(timed, overlays=["heat"], options={"heat": "time"})
    root = next(c for c in timed.calls if c.parent is None).timing["self_ms"]
    assert root >= 8
    assert f"Outer (the model's own forward, no box): {shapetrace.renderers.units.format_ms(root)} ms" in _legend(src)


def test_every_self_time_is_drawn_once(timed):
    """An independent sum: the times printed on nodes, boxes and the root's legend row add up to the root's
    inclusive time, as the self times of all calls do."""
    src = to_dot(timed, overlays=["heat"], options={"heat": "time"})
    legend = _legend(src)
    body = src[:src.index("legend [")]
    printed = [float(v) for v in re.findall(r">([0-9.]+) ms(?: self)?<", body)]
    printed += [float(v) for v in re.findall(r"no box\): ([0-9.]+) ms", legend)]
    root_total = next(c for c in timed.calls if c.parent is None).timing["total_ms"]
    assert sum(printed) == pytest.approx(root_total, abs=0.01)


def test_the_u_layout_which_draws_no_boxes_lists_the_containers_times_in_the_legend(timed):
    src = to_dot(timed, layout="u", overlays=["heat"], options={"heat": "time"})
    assert "containers' own time (no boxes here): slow " in _legend(src)
    assert " ms self" not in src


def test_a_memory_heat_leaves_the_boxes_alone(timed):
    src = to_dot(timed, overlays=["heat"], options={"heat": "activations"})
    assert " ms self" not in src and "own forward" not in src


@requires_dot
def test_the_timed_boxes_render_with_graphviz(timed):
    svg = render(timed, format="svg", overlays=["heat"], options={"heat": "time"}).decode()
    assert re.search(r">[0-9.]+ ms self<", svg)


def _boxes(plain: str) -> dict[str, tuple[float, float, float, float]]:
    """Each node's box (left, bottom, right, top, in inches) as Graphviz laid it out (``-Tplain``)."""
    out = {}
    for line in plain.splitlines():
        parts = line.split()
        if parts and parts[0] == "node":
            x, y, w, h = map(float, parts[2:6])
            out[parts[1]] = (x - w / 2, y - h / 2, x + w / 2, y + h / 2)
    return out


@requires_dot
@pytest.mark.parametrize("model", ["Outer", "UNetLike"])
def test_the_u_layouts_legend_covers_no_node(timed, model):
    trace = timed if model == "Outer" else shapetrace.profile(
        UNetLike().eval(), torch.randn(1, 3, 16, 16), device="cpu", warmup=0, repeat=1)
    src = to_dot(trace, layout="u", overlays=["heat"], options={"heat": "time"})
    plain = subprocess.run(["dot", "-Tplain"], input=src, capture_output=True, text=True, check=True).stdout
    boxes = _boxes(plain)
    legend = boxes.pop("legend")
    assert len(boxes) >= 4
    for name, (left, bottom, right, top) in boxes.items():
        apart = right <= legend[0] or left >= legend[2] or top <= legend[1] or bottom >= legend[3]
        assert apart, (name, (left, bottom, right, top), legend)


class UNetLike(nn.Module):
    """Down twice, up twice, with skips: a U of several rows, whose containers make the legend long."""

    def __init__(self) -> None:
        super().__init__()
        self.down1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.down2 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.mid = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.up2 = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(32, 8, 3, padding=1))
        self.up1 = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(16, 4, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d1 = self.down1(x)
        d2 = self.down2(d1)
        m = self.mid(d2)
        u2 = self.up2(torch.cat([m, d2], 1))
        return self.up1(torch.cat([u2, d1], 1))
