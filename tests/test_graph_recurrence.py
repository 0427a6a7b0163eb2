"""A folded loop keeps its recurrence: a state carried from one call of a module to the next (a GRU cell
stepped over time, an LSTM run chunk by chunk) is drawn as an edge from the folded node back to itself, labelled
like any folded edge (its shape, ``×N`` for the N tensors carried), while what flows inside a single call stays
out of the picture."""

from __future__ import annotations

import torch
from torch import nn

import shapetrace
from shapetrace.renderers.diagram import render, to_dot
from shapetrace.renderers.graph import build_graph


class CellLoop(nn.Module):
    """A GRU cell stepped over the 6 time steps of its input, its hidden state fed back each step."""

    def __init__(self, detach: bool = False) -> None:
        super().__init__()
        self.cell, self.out, self.detach = nn.GRUCell(4, 5), nn.Linear(5, 2), detach

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.zeros(x.shape[1], 5)
        for t in range(x.shape[0]):
            h = self.cell(x[t], h)
            if self.detach:
                h = h.detach()  # truncated backpropagation: the state still flows to the next step
        return self.out(h)


def _trace(model: nn.Module):
    torch.manual_seed(0)
    return shapetrace.trace(model.eval(), torch.randn(6, 3, 4), ops=True)


def test_a_cell_stepped_in_a_loop_draws_its_state_as_an_edge_back_to_its_node():
    t = _trace(CellLoop())
    cells = {f"call:{c.id}" for c in t.calls_of("cell")}
    carried = [e for e in t.edges if e.src in cells and e.dst in cells]  # the trace's own edges, call to call
    g = build_graph(t)
    cell = g.find("cell")[0]
    loops = [e for e in g.edges if e.src == e.dst]
    # 6 steps hand the state on 5 times, each a (batch, hidden) tensor
    assert cell.count == 6 and len(carried) == 5 and {e.shape for e in carried} == {(3, 5)}
    assert [(e.src, e.shapes, e.dtype_of(0), e.count) for e in loops] == [(cell.id, [(3, 5)], "float32", 5)]
    dot = to_dot(t)
    assert f"{cell.id} -> {cell.id} [label=<3×5 ×5>" in dot
    assert "cell ×6 → cell ×6: (3, 5) float32 (carried from one iteration to the next)" in dot
    assert f"{cell.id}&#45;&gt;{cell.id}".encode() in render(t, format="svg")  # Graphviz draws the loop


def test_a_state_detached_between_steps_is_still_drawn_as_a_loop():
    g = build_graph(_trace(CellLoop(detach=True)))
    cell = g.find("cell")[0]
    loops = [e for e in g.edges if e.src == e.dst]
    assert [(e.src, e.shapes, e.count, e.via) for e in loops] == [(cell.id, [(3, 5)], 5, ["detach ×6"])]


def test_what_flows_inside_one_call_of_a_folded_node_is_no_loop():
    model = nn.Sequential(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
    t = shapetrace.trace(model, torch.randn(3, 4), ops=True)
    g = build_graph(t, depth=1)  # the inner Sequential drawn as one node: its layers feed one another inside it
    assert [n.name for n in g.nodes if n.kind == "call"] == ["0"]
    assert not [e for e in g.edges if e.src == e.dst]


def test_unrolled_steps_carry_the_state_from_call_to_call_with_no_loop():
    g = build_graph(_trace(CellLoop()), unroll=True)
    adj = g.adjacency()
    assert ("cell", "cell#1") in adj and ("cell#4", "cell#5") in adj
    assert not [e for e in g.edges if e.src == e.dst]


def test_in_the_u_layout_a_loop_runs_over_the_nodes_top_clear_of_its_row():
    dot = to_dot(_trace(CellLoop()), layout="u")
    loops = [line for line in dot.splitlines() if "->" in line and "carried from one iteration" in line]
    assert loops and all('tailport="ne"' in line and 'headport="nw"' in line for line in loops)
