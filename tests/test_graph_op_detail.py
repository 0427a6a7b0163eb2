"""The diagram's default op detail: ops that only index, cast or create constants fold into the edges they feed.

Measured on the AWD-LSTM classifier exhibit (BPT3C over a padded batch), whose diagram with every op drawn has
39 op nodes (`new_zeros` ×8, `getitem` ×8, `long`, `eq`, `ne`, `masked_fill`, ...), against the graph with
every op as the oracle for the data flow.
"""

from __future__ import annotations

import pytest
import torch
from conftest import graph_paths
from torch import nn

import shapetrace
from shapetrace.renderers.diagram import render, to_dot
from shapetrace.renderers.graph import Graph, build_graph, is_glue_op


@pytest.fixture(scope="module")
def awd_classifier():
    from shapetrace.gallery.exhibits import get_exhibit

    ex = get_exhibit("awd-lstm-classifier")
    args, kwargs = ex.inputs()
    return shapetrace.trace(ex.build(), *args, ops=True, forward_kwargs=kwargs), ex.options



def test_awd_classifier_default_diagram_has_at_most_a_third_of_the_op_nodes(awd_classifier):
    tr, options = awd_classifier
    every = build_graph(tr, depth=options["depth"], all_ops=True)
    default = build_graph(tr, depth=options["depth"])
    n_all = sum(n.kind == "op" for n in every.nodes)
    n_default = sum(n.kind == "op" for n in default.nodes)
    assert n_all == 39  # the diagram as it was drawn before the default changed
    assert n_default <= n_all / 3
    assert default.folded_ops == n_all - n_default
    kept = sorted(n.name for n in default.nodes if n.kind == "op")
    assert {"cat", "max"} <= set(kept)  # the concatenations and the pooling stay
    assert not any(is_glue_op(name) for name in kept)


def test_awd_classifier_default_diagram_keeps_every_module_call_and_the_data_flow(awd_classifier):
    tr, options = awd_classifier
    every = build_graph(tr, depth=options["depth"], all_ops=True)
    default = build_graph(tr, depth=options["depth"])
    def calls(g: Graph) -> list[tuple[str, str]]:
        return sorted((n.title, n.cls) for n in g.nodes if n.kind != "op")

    assert calls(default) == calls(every)
    assert [c.title for c in default.clusters] == [c.title for c in every.clusters]
    # every path between module calls, inputs and outputs in the full graph is still a path, and no new one
    # appears except through an op that only carried a mask or a constant
    assert graph_paths(every) - graph_paths(default) == set()
    assert ("input", "0.module ×3") in graph_paths(default) and ("input", "output[0]") in graph_paths(default)


def test_a_folded_op_is_named_on_the_edge_tooltip_and_a_folded_constant_on_its_reader(awd_classifier):
    tr, options = awd_classifier
    g = build_graph(tr, depth=options["depth"])
    lstm = next(n for n in g.nodes if n.title == "0.module ×3")
    into_lstm = [e for e in g.edges if e.dst == lstm.id and e.src != lstm.id]  # (its hidden state: a loop)
    assert [e.via for e in into_lstm] == [["getitem ×3"]]  # the chunks are slices of the input
    assert lstm.constants == ["new_zeros"]  # its initial hidden state
    dot = to_dot(tr, options=options)
    assert "via getitem ×3" in dot
    assert "also reads masks or constants" in dot


def test_all_ops_draws_every_op_and_is_an_option_of_render_and_the_exhibit(awd_classifier):
    tr, options = awd_classifier
    default = render(tr, format="dot", options=options).decode()
    every = render(tr, format="dot", options=options, all_ops=True).decode()
    assert every == render(tr, format="dot", options={**options, "all_ops": True}).decode()
    assert "new_zeros" in every and "masked_fill" in every
    assert "label=<<B>new_zeros" not in default and "label=<<B>masked_fill" not in default


class CastAndIndex(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        return self.b(h[:, :4].float().contiguous()) + h.new_zeros(h.shape)


def test_a_chain_of_index_and_cast_ops_becomes_one_edge_between_the_modules():
    tr = shapetrace.trace(CastAndIndex(), torch.rand(2, 4), ops=True)
    g = build_graph(tr)
    names = {n.id: n.title for n in g.nodes}
    edges = {(names[e.src], names[e.dst]): e for e in g.edges}
    assert ("a", "b") in edges and edges[("a", "b")].via == ["getitem", "float", "contiguous"]
    assert [n.title for n in g.nodes if n.kind == "op"] == ["add"]  # the sum is data; new_zeros is not
    assert ("b", "add") in edges and g.find("add")[0].constants == ["new_zeros"]
    full = build_graph(tr, all_ops=True)
    assert {n.title for n in full.nodes if n.kind == "op"} >= {"getitem", "float", "contiguous", "new_zeros"}


def test_cli_all_ops_flag_draws_the_folded_ops(tmp_path):
    from click.testing import CliRunner

    from shapetrace.cli import main

    saved = tmp_path / "awd.json"
    r = CliRunner().invoke(main, ["trace", "awd-lstm-classifier", "-o", str(saved)])
    assert r.exit_code == 0, r.output
    default = CliRunner().invoke(main, ["render", str(saved), "-f", "dot"])
    every = CliRunner().invoke(main, ["render", str(saved), "-f", "dot", "--all-ops"])
    assert default.exit_code == every.exit_code == 0
    assert "label=<<B>new_zeros" not in default.stdout and "label=<<B>new_zeros" in every.stdout
    table = CliRunner().invoke(main, ["render", str(saved), "--all-ops"])
    assert "--all-ops only affects diagram formats" in table.stderr
