"""A trace recorded without functional ops (``shapetrace.trace``'s default) has no producer for a tensor an op
made between two module calls. Its diagram marks the layer that read such a tensor, instead of drawing a layer
fed by nothing beside the input (``Graph.unfed``)."""

from __future__ import annotations

import json
import re

import pytest
import torch
import torchvision
from conftest import requires_dot
from torch import nn

import shapetrace
from shapetrace.renderers.diagram import UNFED_CAPTION, UNFED_MARK, render, to_dot
from shapetrace.renderers.graph import build_graph


class ConvThenLinear(nn.Module):
    """``fc`` reads what ``flatten`` (a functional op, not a module) made of ``conv``'s output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4 * 6 * 6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).flatten(1))


def node_of(graph, name):
    [node] = graph.find(name)
    return node


@pytest.fixture(scope="module")
def without_ops():
    return shapetrace.trace(ConvThenLinear(), torch.randn(1, 3, 8, 8))


def test_the_layer_reading_an_unrecorded_ops_output_is_marked_and_has_no_edge_into_it(without_ops):
    graph = build_graph(without_ops)
    fc = node_of(graph, "fc")
    assert graph.unfed == [fc.id]
    assert not [e for e in graph.edges if e.dst == fc.id]
    dot = to_dot(without_ops)
    assert UNFED_MARK in dot and UNFED_CAPTION.split(":")[0] in dot
    assert f"{node_of(graph, 'conv').id} -> {fc.id} [style=invis]" in dot  # ranked after conv, not beside the input


def test_the_same_model_traced_with_ops_draws_the_op_and_marks_nothing():
    trace = shapetrace.trace(ConvThenLinear(), torch.randn(1, 3, 8, 8), ops=True)
    graph = build_graph(trace)
    assert graph.unfed == []
    assert [e for e in graph.edges if e.dst == node_of(graph, "fc").id]
    assert UNFED_MARK not in to_dot(trace) and "ops were not recorded" not in to_dot(trace)


def test_a_default_trace_of_resnet18_marks_only_its_fc_which_reads_torch_flatten():
    # torchvision's ResNet.forward: x = self.avgpool(x); x = torch.flatten(x, 1); x = self.fc(x)
    trace = shapetrace.trace(torchvision.models.resnet18(weights=None).eval(), torch.randn(1, 3, 32, 32))
    graph = build_graph(trace, depth=1)
    assert [n.name for n in graph.nodes if n.id in graph.unfed] == ["fc"]


def test_a_saved_trace_that_does_not_say_whether_ops_were_recorded_marks_nothing(without_ops):
    data = json.loads(without_ops.to_json())
    del data["meta"]["ops"]
    assert build_graph(shapetrace.Trace.from_json(json.dumps(data))).unfed == []


@requires_dot
def test_the_svg_draws_the_marked_layer_dashed_under_a_caption_saying_why(without_ops):
    svg = render(without_ops, format="svg").decode()
    nodes = re.findall(r'<g id="node\d+" class="node">.*?</g>', svg, flags=re.DOTALL)
    dashed = [g for g in nodes if "stroke-dasharray" in g]
    assert len(dashed) == 1 and ">fc<" in dashed[0] and UNFED_MARK in dashed[0]
    assert "functional ops were not recorded" in svg


@requires_dot
def test_in_the_u_layout_the_marked_node_leaves_room_for_its_mark(without_ops):
    import subprocess

    trace = shapetrace.trace(torchvision.models.resnet18(weights=None).eval(), torch.randn(1, 3, 64, 64))
    done = subprocess.run(["dot", "-Tsvg"], input=to_dot(trace, layout="u", depth=1), capture_output=True,
                          text=True, check=True)
    assert "touch" not in done.stderr  # "some nodes with margin ... touch": the fc box drawn over the output


def test_a_layer_fed_by_a_parameter_is_not_said_to_read_an_ops_output():
    class FromAParameter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.query, self.proj = nn.Parameter(torch.randn(1, 4)), nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.proj(self.query)

    dot = to_dot(shapetrace.trace(FromAParameter(), torch.randn(1, 4)))
    assert UNFED_MARK == "input from no drawn call" and "made by" not in dot  # no claim that an op made it
