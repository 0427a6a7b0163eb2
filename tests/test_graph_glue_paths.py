"""Which paths a folded glue op (an index, a cast, a copy) leaves in the diagram: one edge per path the data
really took, read from the trace's own edges op by op, even when a loop of glue ops was folded into one node
first; and an index computed from data (``argmax``) keeps the edge from that data, so the call that made it
stays connected to what reads it.

The oracle is the graph drawn with every op (``all_ops=True``): folding glue may shorten its paths, never add one.
"""

from __future__ import annotations

import pytest
import torch
from conftest import graph_paths
from torch import nn

import shapetrace
from shapetrace.renderers.graph import build_graph


class DetachedHeads(nn.Module):
    """Four encoders; their outputs detached and copied in a comprehension (a loop of glue ops alone, long enough
    to fold), each read by its own head."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.ModuleList(nn.Linear(4, 4) for _ in range(4))
        self.head = nn.ModuleList(nn.Linear(4, 2) for _ in range(4))

    def forward(self, x):
        hs = [h.detach().clone().contiguous() for h in [e(x) for e in self.enc]]
        return [hd(h) for hd, h in zip(self.head, hs)]


def test_a_folded_loop_of_glue_joins_each_source_to_its_own_reader_only():
    t = shapetrace.trace(DetachedHeads().eval(), torch.randn(2, 4), ops=True)
    every = build_graph(t, all_ops=True)
    assert [n.title for n in every.nodes if n.kind == "op"] == ["detach ×4", "clone ×4", "contiguous ×4"]
    g = build_graph(t)
    pairs = sorted((g.node(e.src).title, g.node(e.dst).title) for e in g.edges if g.node(e.src).title[:3] == "enc")
    assert pairs == [(f"enc.{i}", f"head.{i}") for i in range(4)]  # as the trace's edges have them
    assert all(e.via == ["detach ×4", "clone ×4", "contiguous ×4"] for e in g.edges if g.node(e.src).title[:3] == "enc")


def test_the_awd_lstm_default_diagram_adds_no_path_between_calls_the_full_graph_lacks():
    from shapetrace.gallery.exhibits import get_exhibit

    ex = get_exhibit("awd-lstm-classifier")
    args, kwargs = ex.inputs()
    t = shapetrace.trace(ex.build(), *args, ops=True, forward_kwargs=kwargs)
    every = build_graph(t, depth=ex.options["depth"], all_ops=True)
    default = build_graph(t, depth=ex.options["depth"])
    assert graph_paths(default) - graph_paths(every) == set()
    rnn0, rnn2 = "0.module.rnns.0.module ×3", "0.module.rnns.2.module ×3"
    full = build_graph(t, all_ops=True)  # no depth: the three LSTM layers each drawn
    lstm_paths = {p for p in graph_paths(build_graph(t)) if p[0] in (rnn0, rnn2) and p[1] in (rnn0, rnn2)}
    assert lstm_paths <= graph_paths(full)
    assert (rnn2, rnn0) not in lstm_paths  # the last layer's hidden state goes back into its own cat only


class Classify(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return torch.softmax(self.fc(x) * 2.0, -1).argmax(-1)  # the predicted class


class GreedyStep(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc, self.emb = nn.Linear(8, 5), nn.Embedding(5, 4)

    def forward(self, x):
        return self.emb(torch.log_softmax(self.fc(x) / 0.7, -1).argmax(-1))  # greedy decoding, one step


@pytest.mark.parametrize(("model", "reader"), [(Classify, "output"), (GreedyStep, "emb")])
def test_an_argmax_of_a_calls_output_keeps_the_path_from_that_call(model, reader):
    g = build_graph(shapetrace.trace(model().eval(), torch.randn(2, 8), ops=True))
    assert ("fc", reader) in graph_paths(g)
    assert all(not n.constants for n in g.nodes)  # computed from data: not a mask or a constant
    (into,) = [e for e in g.edges if g.node(e.dst).title == reader and g.node(e.src).kind == "op"]
    assert into.via == ["argmax"] and into.shapes == [(2,)]


def test_a_glue_chain_thousands_of_ops_long_folds_into_one_edge():
    class Copies(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.out = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            x = self.fc(x)
            for _ in range(1500):
                x = x.contiguous()
            return self.out(x)

    g = build_graph(shapetrace.trace(Copies().eval(), torch.randn(2, 4), ops=True))
    (edge,) = [e for e in g.edges if g.node(e.src).title == "fc"]
    assert g.node(edge.dst).title == "out" and edge.via == ["contiguous ×1500"]
