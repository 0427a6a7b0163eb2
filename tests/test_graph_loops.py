"""Loops a diagram folds into ``×N``: blocks of ops alone (the per-detection loop of a detector's
post-processing), bodies of any length (a refinement step of a call and dozens of ops), and loops inside loops,
inner first but never across the seam of two outer iterations. Straight-line code that repeats a short run of ops
a few times (a query, a key and a value reshaped alike), or one op four times with four shapes, is not a loop and
stays drawn op by op."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.models.detection.transform import resize_boxes

import shapetrace
from shapetrace.renderers.graph import MAX_NODES, build_graph


class PasteMasks(nn.Module):
    """A mask head's output pasted into the image, one detection at a time (torchvision's own loop)."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(1, 1, 1)

    def forward(self, masks, boxes):
        return paste_masks_in_image(self.head(masks), boxes, (64, 80))


def _paste_trace(n: int):
    torch.manual_seed(0)
    boxes = torch.rand(n, 4) * 30
    boxes[:, 2:] += boxes[:, :2] + 4
    return shapetrace.trace(PasteMasks().eval(), torch.rand(n, 1, 28, 28), boxes, ops=True)


def test_a_loop_of_ops_alone_folds_into_one_node_per_op():
    g = build_graph(_paste_trace(12))
    (interp,) = [n for n in g.nodes if n.name == "interpolate"]
    assert interp.count == 12 and interp.title == "interpolate ×12"  # one per detection, each at its own size
    assert len(g.nodes) < 40  # unrolled, the twelve detections draw over a hundred


def test_a_loop_body_of_a_call_and_three_dozen_ops_folds_whole():
    class Refine(nn.Module):  # like RAFT: each iteration runs many ops, then an update call
        def __init__(self) -> None:
            super().__init__()
            self.update = nn.Linear(8, 8)

        def forward(self, x):
            for _ in range(12):
                for _ in range(12):
                    x = torch.tanh(x * 1.01) + 0.0
                x = self.update(x)
            return x

    g = build_graph(shapetrace.trace(Refine().eval(), torch.randn(2, 8), ops=True))
    assert {n.title for n in g.nodes} == {"input", "output", "mul ×144", "tanh ×144", "add ×144", "update ×12"}


def test_a_query_key_and_value_reshaped_alike_are_not_taken_for_a_loop():
    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Linear(8, 24)

        def forward(self, x):
            q, k, v = self.qkv(x).chunk(3, -1)
            q = q.view(2, 5, 2, 4).transpose(1, 2)
            k = k.view(2, 5, 2, 4).transpose(1, 2)
            v = v.view(2, 5, 2, 4).transpose(1, 2)
            return torch.softmax(q @ k.transpose(-1, -2), -1) @ v

    g = build_graph(shapetrace.trace(Attention().eval(), torch.randn(2, 5, 8), ops=True))
    views = [n for n in g.nodes if n.name == "view"]
    assert len(views) == 3 and all(n.count == 1 for n in views)


def test_a_body_whose_first_and_last_calls_are_one_module_folds_per_step_not_across_the_seam():
    class SharedNorm(nn.Module):  # each step: norm, mix, norm, the norm shared (called twice per step)
        def __init__(self) -> None:
            super().__init__()
            self.norm, self.mix, self.head = nn.LayerNorm(8), nn.Linear(8, 8), nn.Linear(8, 3)

        def forward(self, x):
            for _ in range(4):
                x = self.norm(self.mix(self.norm(x)))
            return self.head(x)

    t = shapetrace.trace(SharedNorm().eval(), torch.randn(2, 8), ops=True)
    assert [c.module for c in t.calls[1:5]] == ["norm", "mix", "norm", "norm"]  # the seam: norm twice in a row
    g = build_graph(t)
    assert [n.title for n in g.nodes] == ["input", "norm ×4", "mix ×4", "norm ×4", "head", "output"]
    assert {("norm", "mix"), ("mix", "norm"), ("norm", "head")} <= g.adjacency()


def test_one_op_on_four_lines_with_four_shapes_is_not_taken_for_a_loop():
    class Views(nn.Module):
        def forward(self, x):
            a = x.view(2, 48)
            b = x.view(4, 24)
            c = x.view(8, 12)
            d = x.view(16, 6)
            return a, b, c, d

    g = build_graph(shapetrace.trace(Views(), torch.randn(96), ops=True))
    views = [n for n in g.nodes if n.name == "view"]
    assert [n.outputs[0][1].shape for n in views] == [(2, 48), (4, 24), (8, 12), (16, 6)]
    assert all(n.count == 1 for n in views)


def test_torchvision_resize_boxes_scaling_four_coordinates_alike_is_not_taken_for_a_loop():
    class Resize(nn.Module):  # xmin * ratio_width, xmax * ratio_width, ymin * ratio_height, ymax * ratio_height
        def forward(self, boxes):
            return resize_boxes(boxes, (100, 120), (50, 60))

    g = build_graph(shapetrace.trace(Resize(), torch.rand(5, 4), ops=True, lines=True))
    muls = [n for n in g.nodes if n.name == "mul"]
    assert len(muls) == 4 and all(n.count == 1 for n in muls)  # same shapes, same caller line, none reads another


def test_too_many_ops_in_the_models_own_forward_name_that_forward_not_a_submodule():
    class Steps(nn.Module):
        def forward(self, x):
            for _ in range(MAX_NODES + 20):
                x = x + 1
            return x

    t = shapetrace.trace(Steps(), torch.randn(2), ops=True)
    with pytest.warns(UserWarning, match="functional ops run in the model's own forward") as seen:
        build_graph(t, unroll=True)
    assert "trace the submodule" not in str(seen[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert build_graph(t).find("add")[0].count == MAX_NODES + 20  # folded, it is one node
