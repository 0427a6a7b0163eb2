"""Which edges a diagram marks ↓s / ↑s: only those whose tensor was resampled from the inputs of the call (or op)
that made it, checked against the strides of the torch layers themselves.

A broadcast input (all spatial dims 1: the gate a squeeze-excitation multiplies in) is not read against; an output
that keeps one input's size is read only against the inputs it was computed from (a decoder block given its skip
as an argument is ↑2 from the map it upsampled); a node folding several calls reads each call's output against that call's
own inputs (a head applied to two feature-map levels); a video layer that halves height and width but keeps
the frames is marked like an image layer."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.video.resnet import BasicStem
from torchvision.ops import SqueezeExcitation

import shapetrace
from shapetrace.renderers.graph import Graph, build_graph


def _marks(g: Graph) -> dict[str, tuple[str, int] | None]:
    """Each drawn node's title -> the mark of the edges it sends (one value per title; they must agree)."""
    marks: dict[str, set] = {}
    for e in g.edges:
        if e.src in {n.id for n in g.nodes}:
            marks.setdefault(g.node(e.src).title, set()).add(e.change)
    assert all(len(m) == 1 for m in marks.values()), marks
    return {k: m.pop() for k, m in marks.items()}


class SEBlock(nn.Module):
    """A convolution, then torchvision's squeeze-excitation (``x * sigmoid(fc2(relu(fc1(pool(x)))))``)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.se = SqueezeExcitation(8, 2)
        self.out = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        return self.out(self.se(self.conv(x)))


def test_a_squeeze_excitation_multiply_keeps_its_input_size_and_gets_no_mark():
    model = SEBlock().eval()
    g = build_graph(shapetrace.trace(model, torch.randn(1, 8, 14, 14), ops=True))
    marks = _marks(g)
    assert marks["mul"] is None  # 14×14 × 1×1 gate = 14×14: a broadcast, not a ×14 upsampling
    assert marks["se.avgpool"] == ("down", 14)  # the squeeze itself does pool 14×14 to 1×1


def test_a_head_applied_to_two_feature_map_levels_marks_neither_level():
    head = RPNHead(4, 3).eval()
    assert head.conv[0][0].stride == (1, 1)  # torch's own word: the head keeps each level's size

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = head

        def forward(self, a, b):
            logits, boxes = self.head([a, b])
            return [t.flatten(1) for t in logits + boxes]

    t = shapetrace.trace(Net().eval(), torch.randn(1, 4, 32, 32), torch.randn(1, 4, 16, 16), ops=True)
    for depth in (1, None):  # the head as one node; its convolutions each folding the two levels (×2)
        g = build_graph(t, depth=depth)
        assert any(n.count == 2 for n in g.nodes) or depth == 1
        assert [e.change for e in g.edges if e.change] == []


def test_a_pooling_applied_twice_marks_the_stride_of_one_application():
    class TwicePooled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pool = nn.MaxPool2d(2)
            self.conv = nn.Conv2d(2, 2, 1)

        def forward(self, x):
            return self.conv(self.pool(self.pool(x)))  # pool ×2: 32 -> 16 -> 8

    g = build_graph(shapetrace.trace(TwicePooled().eval(), torch.randn(1, 2, 32, 32)))
    assert _marks(g)["pool ×2"] == ("down", 2)  # the 8×8 it passes on read against 16×16, not the first 32×32


def _stride_marks(stride: tuple[int, int, int]) -> tuple[str, int] | None:
    model = nn.Sequential(nn.Conv3d(3, 4, 3, stride=stride, padding=1), nn.Conv3d(4, 4, 1)).eval()
    g = build_graph(shapetrace.trace(model, torch.randn(1, 3, 8, 32, 32)))
    return _marks(g)["0"]


def test_a_video_stem_that_halves_height_and_width_but_keeps_the_frames_is_marked():
    stem = BasicStem().eval()
    stride = stem[0].stride
    assert stride == (1, 2, 2)
    model = nn.Sequential(stem, nn.Conv3d(64, 8, 1)).eval()
    g = build_graph(shapetrace.trace(model, torch.randn(1, 3, 8, 56, 56)), depth=1)
    assert _marks(g)["0"] == ("down", stride[-1])  # 8×56×56 -> 8×28×28


def test_a_stride_of_frames_and_picture_alike_reads_as_the_picture_stride():
    assert _stride_marks((2, 2, 2)) == ("down", 2)  # 8×32×32 -> 4×16×16


def test_a_stride_of_the_frames_alone_or_by_another_factor_is_not_marked():
    assert _stride_marks((2, 1, 1)) is None  # 8×32×32 -> 4×32×32: the picture keeps its size
    assert _stride_marks((4, 2, 2)) is None  # 8×32×32 -> 2×16×16: no one factor


class Up(nn.Module):
    """A U-Net decoder block given its skip as an argument (``Up(x1, x2)``): upsample ``x1``, pad it to the skip's
    size, concatenate, convolve."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(ch, ch // 2, 2, stride=2)
        self.conv = nn.Conv2d(ch, ch // 2, 3, padding=1)

    def forward(self, x1, x2):
        x1 = self.up(x1)
        dy, dx = x2.size(2) - x1.size(2), x2.size(3) - x1.size(3)
        x1 = nn.functional.pad(x1, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([x2, x1], 1))


class TinyUNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inc = nn.Conv2d(3, 16, 3, padding=1)
        self.down = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1))
        self.up1 = Up(32)

    def forward(self, x):
        a = self.inc(x)
        return self.up1(self.down(a), a)


def test_a_decoder_block_given_its_skip_as_an_argument_is_marked_against_the_map_it_upsampled():
    model = TinyUNet().eval()
    t = shapetrace.trace(model, torch.randn(1, 3, 47, 61), ops=True)
    assert model.up1.up.stride == (2, 2)  # the only resampling inside up1: 23×30 -> 46×60, padded to 47×61
    marks = _marks(build_graph(t, depth=1))
    assert marks["down"] == ("down", 2)  # MaxPool2d(2): 47×61 -> 23×30
    assert marks["up1"] == ("up", 2)  # its output keeps the skip's size, yet it upsampled the 23×30 map
