"""Our module-to-module data flow against torchview's, run live as the oracle.

For U-Net- and DenseNet-style models with skip connections (written in ``test_graph``, like the ones torchview
tests itself with), ``torchview.draw_graph(model, input_data=x, expand_nested=True, depth=d)`` and our
``build_graph(trace, depth=d)`` are reduced to the same thing: for every visible *module* node, the set of
module nodes (plus ``input`` / ``output``) it reaches through function nodes only (``cat``, ``add``,
``max_pool2d``, ``relu``, ...). Function nodes are skipped rather than matched one to one because the two
tools see slightly different functions (torchview records ``F.relu`` calls and tensor methods that our op
recorder also records, but names and merges them differently, and records the ``cat`` of a list as one node
where we do too), while modules are unambiguous: torchview's ``ModuleNode.compute_unit_id`` is the module
object's ``id()``, which we map to its qualified name. Every module in these models is called once.

By design one difference is allowed: when a decoder block reads a skip from a forward hook (a *side input*,
not an argument), torchview cannot see that data flow at a depth where the block is one node; we draw it as a
skip edge. So on the hook-based U-Net our edges are torchview's plus exactly our side-input edges; on models
passing every tensor as an argument the two must be equal.
"""

from __future__ import annotations

import pytest
import torch
from conftest import require
from test_graph import ArgUnet, HookUnet, TinyDenseNet
from torch import nn

import shapetrace
from shapetrace.renderers.graph import Graph, build_graph

torchview = require("torchview")
from torchview.computation_node import FunctionNode, ModuleNode, TensorNode


def _reach(edges: set[tuple[str, str]], is_module: dict[str, bool]) -> set[tuple[str, str]]:
    """Module -> module pairs connected by a path whose inner nodes are all non-modules."""
    succ: dict[str, set[str]] = {}
    for a, b in edges:
        succ.setdefault(a, set()).add(b)
    out = set()
    for start in [n for n, m in is_module.items() if m]:
        stack, seen = list(succ.get(start, ())), set()
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            if is_module.get(n, False):
                out.add((start, n))
            else:
                stack.extend(succ.get(n, ()))
    return out


def torchview_pairs(model: nn.Module, x: torch.Tensor, depth: int) -> set[tuple[str, str]]:
    names = {id(m): n for n, m in model.named_modules()}
    graph = torchview.draw_graph(model, input_data=x, expand_nested=True, depth=depth, device="cpu")
    key: dict[int, str] = {}
    is_module: dict[str, bool] = {}

    def name(node) -> str:
        if isinstance(node, ModuleNode):
            k = names[node.compute_unit_id]
            is_module[k] = True
        elif isinstance(node, FunctionNode):
            k = f"fn{id(node)}"
            is_module[k] = False
        elif isinstance(node, TensorNode):
            main = node.main_node  # an "auxiliary" tensor node stands for the model input at a depth
            k = "input" if main.is_root() else ("output" if node.is_leaf() else f"t{id(node)}")
            is_module[k] = k in ("input", "output")
        key[id(node)] = k
        return k

    edges = {(name(a), name(b)) for a, b in graph.edge_list}
    return _reach(edges, is_module)


def our_pairs(g: Graph, skips: bool = True) -> set[tuple[str, str]]:
    is_module = {n.id: n.kind in ("call", "input", "output") for n in g.nodes}
    edges = {(e.src, e.dst) for e in g.edges if skips or not (e.skip and g.node(e.dst).kind == "call")}
    names = {n.id: n.name for n in g.nodes}
    return {(names[a], names[b]) for a, b in _reach(edges, is_module)}


def trace(model: nn.Module, x: torch.Tensor):
    return shapetrace.trace(model, x, ops=True)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_argument_unet_matches_torchview(depth):
    torch.manual_seed(0)
    model, x = ArgUnet().eval(), torch.randn(1, 3, 32, 32)
    ours = our_pairs(build_graph(trace(model, x), depth=depth))
    assert ours == torchview_pairs(model, x, depth)
    if depth == 2:  # the skips themselves
        assert {("enc1.2", "dec2.0"), ("enc2.2", "dec1.0")} <= ours


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_densenet_matches_torchview(depth):
    torch.manual_seed(0)
    model, x = TinyDenseNet().eval(), torch.randn(1, 3, 16, 16)
    ours = our_pairs(build_graph(trace(model, x), depth=depth))
    assert ours == torchview_pairs(model, x, depth)
    if depth == 2:  # dense connectivity: the stem reaches every layer of the first block
        assert {("stem", f"block1.layers.{i}") for i in range(3)} <= ours


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_hook_unet_matches_torchview_plus_side_inputs(depth):
    torch.manual_seed(0)
    model, x = HookUnet().eval(), torch.randn(1, 3, 32, 32)
    g = build_graph(trace(model, x), depth=depth)
    theirs = torchview_pairs(model, x, depth)
    assert our_pairs(g, skips=False) == theirs
    extra = our_pairs(g) - theirs
    side = {(g.node(e.src).name, g.node(e.dst).name) for e in g.edges if e.skip}
    assert extra <= side
    if depth == 1:
        assert extra == {("encoder", "up1"), ("encoder", "up2")}
