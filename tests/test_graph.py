"""Data-flow graph building (``shapetrace.renderers.graph``): visible nodes, depth folding, loop folding, skips.

The small models here (a fastai-style U-Net whose decoder reads encoder activations stored by forward hooks,
an LSTM called in a Python loop, a ResNet block with a shared ReLU) are also used by the other diagram tests.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import check_round_trip
from torch import nn

import shapetrace
from shapetrace.renderers.graph import build_graph
from shapetrace.tracer.records import Trace


# ---- models ------------------------------------------------------------------------------------------------
class StoreHook:
    """fastai's ``Hook``: keeps the latest output of a module (not detached)."""

    def __init__(self, module: nn.Module) -> None:
        self.stored = None
        module.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output) -> None:
        self.stored = output


def conv_block(ni: int, nf: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(ni, nf, 3, padding=1), nn.BatchNorm2d(nf), nn.ReLU())


class UpBlock(nn.Module):
    """Upsample, then concatenate the skip read from a hook (a side input), then convolve."""

    def __init__(self, up_in: int, skip_in: int, hook: StoreHook) -> None:
        super().__init__()
        self.hook = hook
        self.up = nn.ConvTranspose2d(up_in, up_in // 2, 2, stride=2)
        self.conv = conv_block(up_in // 2 + skip_in, up_in // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.hook.stored
        return self.conv(torch.cat([self.up(x), skip], dim=1))


class HookUnet(nn.Module):
    """A 3-level U-Net in fastai's style: encoder stages hooked, decoder blocks read the hooks."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(conv_block(3, 8), nn.MaxPool2d(2), conv_block(8, 16), nn.MaxPool2d(2),
                                     conv_block(16, 32))
        self.hooks = [StoreHook(self.encoder[0]), StoreHook(self.encoder[2])]
        self.middle = conv_block(32, 32)
        self.up1 = UpBlock(32, 16, self.hooks[1])
        self.up2 = UpBlock(16, 8, self.hooks[0])
        self.final = nn.Conv2d(8 + 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.up2(self.up1(self.middle(self.encoder(x))))
        return self.final(torch.cat([y, x], dim=1))


class ArgUnet(nn.Module):
    """The same U-Net passing skips as arguments (the torchview-style one, used by the oracle test)."""

    def __init__(self) -> None:
        super().__init__()
        self.enc1, self.enc2, self.enc3 = conv_block(3, 8), conv_block(8, 16), conv_block(16, 32)
        self.pool = nn.MaxPool2d(2)
        self.up1, self.up2 = nn.ConvTranspose2d(32, 16, 2, stride=2), nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.dec1, self.dec2 = conv_block(32, 16), conv_block(16, 8)
        self.out = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        e3 = self.enc3(F.max_pool2d(e2, 2))
        d1 = self.dec1(torch.cat([self.up1(e3), e2], 1))
        d2 = self.dec2(torch.cat([self.up2(d1), e1], 1))
        return self.out(d2)


class DenseLayer(nn.Module):
    def __init__(self, ni: int, growth: int) -> None:
        super().__init__()
        self.bn, self.conv = nn.BatchNorm2d(ni), nn.Conv2d(ni, growth, 3, padding=1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.conv(F.relu(self.bn(torch.cat(feats, 1))))


class DenseBlock(nn.Module):
    def __init__(self, ni: int, growth: int, n: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(ni + i * growth, growth) for i in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for layer in self.layers:
            feats.append(layer(feats))
        return torch.cat(feats, 1)


class TinyDenseNet(nn.Module):
    """DenseNet-style: every dense layer reads the concatenation of all earlier features."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block1 = DenseBlock(8, 4, 3)
        self.trans = nn.Sequential(nn.Conv2d(20, 10, 1), nn.AvgPool2d(2))
        self.block2 = DenseBlock(10, 4, 2)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(18, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block2(self.trans(self.block1(self.stem(x)))))


class LoopLSTM(nn.Module):
    """An LSTM cell-style loop: the same ``nn.LSTM`` called once per time step, 4 times."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 8)
        self.lstm = nn.LSTM(8, 8, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        state = None
        for t in range(x.shape[1]):
            out, state = self.lstm(x[:, t:t + 1], state)
        return self.head(out[:, -1])


class SharedReluBlock(nn.Module):
    """torchvision's BasicBlock pattern: one ReLU module used twice, not in a loop."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.relu(self.conv1(x))) + x)


def trace_of(model: nn.Module, *shape: int) -> Trace:
    torch.manual_seed(0)
    return shapetrace.trace(model.eval(), torch.randn(*shape), ops=True)


@pytest.fixture(scope="module")
def unet_trace() -> Trace:
    torch.manual_seed(0)
    return trace_of(HookUnet(), 1, 3, 32, 32)


# ---- depth folding ------------------------------------------------------------------------------------------
def test_depth_zero_is_one_node(unet_trace):
    g = build_graph(unet_trace, depth=0)
    assert [n.kind for n in g.nodes] == ["input", "call", "output"]
    assert g.adjacency() == {("input", "(root)"), ("(root)", "output")}


def test_depth_one_folds_children_into_top_level_nodes(unet_trace):
    g = build_graph(unet_trace, depth=1)
    calls = [n.name for n in g.nodes if n.kind == "call"]
    assert calls == ["encoder", "middle", "up1", "up2", "final"]
    assert not g.clusters
    enc = g.find("encoder")[0]
    assert enc.collapsed and len(enc.folded) > 1 and enc.out_shape == (1, 32, 8, 8)
    # skip edges from the (folded) encoder into both decoder blocks, marked as skips
    skips = {(a, b) for a, b in g.adjacency()} & {("encoder", "up1"), ("encoder", "up2")}
    assert skips == {("encoder", "up1"), ("encoder", "up2")}
    assert all(e.skip for e in g.edges if g.node(e.src).name == "encoder" and g.node(e.dst).name == "up2")


def test_depth_two_shows_stages_in_clusters(unet_trace):
    g = build_graph(unet_trace, depth=2)
    names = {c.name for c in g.clusters}
    assert names == {"encoder", "middle", "up1", "up2"}
    adj = g.adjacency()
    # the hook-read skips go from the encoder stages to the cat ops inside the decoder blocks
    cats = [n for n in g.nodes if n.name == "cat"]
    assert len(cats) == 3
    into_cats = {(a, b) for a, b in adj if b == "cat"}
    assert ("encoder.2", "cat") in into_cats and ("encoder.0", "cat") in into_cats and ("input", "cat") in into_cats
    # no edge ends at a container box
    cluster_ids = {c.id for c in g.clusters}
    assert not any(e.dst in cluster_ids for e in g.edges)
    # every node sits in the box of its module's parent
    assert g.find("encoder.0")[0].cluster == next(c.id for c in g.clusters if c.name == "encoder")


def test_full_depth_has_every_leaf_and_no_self_loops(unet_trace):
    g = build_graph(unet_trace)
    leaves = {c.module for c in unet_trace.leaves()}
    assert leaves <= {n.name for n in g.nodes}
    assert all(e.src != e.dst for e in g.edges)
    assert len({(e.src, e.dst, e.skip) for e in g.edges}) == len(g.edges)


def test_spatial_changes_are_marked(unet_trace):
    g = build_graph(unet_trace, depth=2)
    changes = {(g.node(e.src).name, e.change) for e in g.edges if e.change}
    assert ("encoder.1", ("down", 2)) in changes and ("encoder.3", ("down", 2)) in changes
    assert ("up1.up", ("up", 2)) in changes and ("up2.up", ("up", 2)) in changes


def test_u_ranks_put_the_bottleneck_lowest(unet_trace):
    g = build_graph(unet_trace, depth=2)
    ranks = {n.name: n.rank for n in g.nodes if n.kind == "call"}
    bottom = max(ranks.values())
    assert {k for k, r in ranks.items() if r == bottom} == {"encoder.3", "encoder.4", "middle.0", "middle.1", "middle.2"}
    assert ranks["encoder.0"] == ranks["up2.conv"] == 0
    assert ranks["encoder.2"] == ranks["up1.conv"] == 1


def test_fold_option_draws_named_classes_as_nodes(unet_trace):
    g = build_graph(unet_trace, depth=2, fold=["UpBlock"])
    assert {c.name for c in g.clusters} == {"encoder", "middle"}
    adj = g.adjacency()
    assert ("encoder.2", "up1") in adj and ("encoder.0", "up2") in adj


# ---- loops --------------------------------------------------------------------------------------------------
def test_lstm_called_in_a_loop_folds_into_one_node_and_unrolls():
    t = trace_of(LoopLSTM(), 2, 4, 6)
    assert len(t.calls_of("lstm")) == 4
    g = build_graph(t, all_ops=True)
    lstm = g.find("lstm")
    assert len(lstm) == 1 and lstm[0].count == 4 and lstm[0].title == "lstm ×4"
    assert len(lstm[0].calls) == 4
    getitems = [n for n in g.nodes if n.kind == "op" and n.name == "getitem"]
    assert any(n.count == 4 for n in getitems)  # the x[:, t] slices fold with their loop
    loops = [e for e in g.edges if e.src == e.dst]  # the state (h, c), carried from each step to the next
    assert [(e.src, e.shapes, e.count) for e in loops] == [(lstm[0].id, [(1, 2, 8)], 6)]

    u = build_graph(t, unroll=True)
    names = [n.name for n in u.nodes if n.kind == "call" and n.cls == "LSTM"]
    assert names == ["lstm", "lstm#1", "lstm#2", "lstm#3"]
    adj = u.adjacency()
    assert ("lstm", "lstm#1") in adj and ("lstm#2", "lstm#3") in adj  # the state flows call to call


def test_a_module_reused_outside_a_loop_is_not_folded():
    t = trace_of(SharedReluBlock(), 1, 4, 8, 8)
    g = build_graph(t)
    relus = [n for n in g.nodes if n.cls == "ReLU"]
    assert len(relus) == 2 and all(n.count == 1 for n in relus)
    assert [n.name for n in relus] == ["relu", "relu"]
    adj = build_graph(t).adjacency()
    assert ("conv1", "relu") in adj and ("relu", "conv2") in adj


# ---- plain data ---------------------------------------------------------------------------------------------
def test_graph_from_json_matches(unet_trace):
    again = Trace.from_json(unet_trace.to_json())
    assert build_graph(again, depth=2) == build_graph(unet_trace, depth=2)


def test_tooltip_has_full_shapes_params_and_timing(unet_trace):
    t = Trace.from_json(unet_trace.to_json())
    for c in t.calls:
        c.timing = {"total_ms": 2.0, "self_ms": 0.5}
    g = build_graph(t, depth=1)
    enc = g.find("encoder")[0]
    tip = enc.tooltip()
    assert "in[0]: (1, 3, 32, 32) float32" in tip and "out: (1, 32, 8, 8) float32" in tip
    assert f"params: {t.calls_of('encoder')[0].params:,}" in tip
    assert enc.self_ms == pytest.approx(0.5 * len(enc.folded))
    assert "time:" in tip


def test_negative_depth_is_refused(unet_trace):
    with pytest.raises(ValueError, match="depth"):
        build_graph(unet_trace, depth=-1)


def test_renderers_do_not_import_torch():
    import ast
    from pathlib import Path

    from shapetrace.renderers import diagram, graph

    for mod in (graph, diagram):
        tree = ast.parse(Path(mod.__file__).read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not any(n == "torch" or n.startswith("torch.") for n in names), mod.__name__


# ---- the gallery exhibits -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def camvid_unet_trace(shared_exhibits) -> Trace:
    from shapetrace.gallery.exhibits import get_exhibit

    model = shared_exhibits.model("camvid-unet")  # as the exhibit builds it (in eval mode), shared read-only
    (x,), _ = get_exhibit("camvid-unet").inputs()
    # a quarter of the exhibit's 360x480 image keeps the test fast; the skips are the same
    made = shapetrace.trace(model, torch.randn(1, x.shape[1], 96, 128, generator=torch.Generator().manual_seed(0)),
                            ops=True)
    check_round_trip(made)  # set up before every_trace_round_trips, so checked here
    return made


def test_unet_exhibit_has_the_four_skips_and_the_input_skip(camvid_unet_trace):
    """With the encoder's stages and the UnetBlocks as nodes, each block receives its hooked encoder stage
    (read from ``hook.stored``, a side input) and the final dense MergeLayer receives the input image."""
    g = build_graph(camvid_unet_trace, depth=2, fold=["UnetBlock"])
    blocks = [n for n in g.nodes if n.cls == "UnetBlock"]
    assert len(blocks) == 4
    skips = sorted((g.node(e.src).name, g.node(e.dst).name) for e in g.edges if e.skip)
    stages = {g.node(e.src).name for e in g.edges if e.skip and g.node(e.dst).cls == "UnetBlock"}
    assert len(stages) == 4 and all(s.startswith("layers.0.") for s in stages)
    assert {d for _, d in skips if d != "layers.10"} == {b.name for b in blocks}
    assert ("input", "layers.10") in skips and g.find("layers.10")[0].cls == "MergeLayer"
    assert len(skips) == 5
    # the deepest block reads the deepest hooked stage
    deepest = next(e for e in g.edges if e.skip and g.node(e.dst).name == blocks[0].name)
    assert g.node(deepest.src).name == "layers.0.6"


def test_unet_exhibit_u_ranks_put_the_bottleneck_lowest(camvid_unet_trace):
    g = build_graph(camvid_unet_trace, depth=2, fold=["UnetBlock"])
    rank = {n.name: n.rank for n in g.nodes}
    bottom = max(rank.values())
    assert rank["layers.3.0"] == rank["layers.3.1"] == bottom  # the middle convs, at 1/32 of the image
    assert rank["input"] == rank["output"] == 0
    blocks = [n for n in g.nodes if n.cls == "UnetBlock"]
    assert [n.rank for n in blocks] == sorted((n.rank for n in blocks), reverse=True)  # climbing back up
    for e in g.edges:  # each skip runs across its row: source and block at the same resolution
        if e.skip:
            assert g.node(e.src).rank == g.node(e.dst).rank


def test_awd_lstm_classifier_folds_its_three_chunk_calls():
    from shapetrace.gallery.exhibits import get_exhibit

    ex = get_exhibit("awd-lstm-classifier")
    torch.manual_seed(0)
    model = ex.build().eval()
    args, kwargs = ex.inputs()
    t = shapetrace.trace(model, *args, ops=True, **kwargs)
    assert len(t.calls_of("0.module")) == 3
    g = build_graph(t, depth=2)
    awd = g.find("0.module")
    assert len(awd) == 1 and awd[0].count == 3 and awd[0].title == "0.module ×3" and awd[0].cls == "AWD_LSTM"
    deeper = build_graph(t, depth=3)
    assert [c.title for c in deeper.clusters if c.cls == "AWD_LSTM"] == ["0.module ×3"]
    assert all(n.count == 3 for n in deeper.nodes if n.name.startswith("0.module.rnns"))
    u = build_graph(t, depth=2, unroll=True)
    assert [n.name for n in u.nodes if n.cls == "AWD_LSTM"] == ["0.module", "0.module#1", "0.module#2"]


def test_ops_connected_to_nothing_drawn_are_left_out():
    import torch
    from torch import nn

    import shapetrace
    from shapetrace.renderers.graph import build_graph

    class DetachesItsWeight(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x):
            self.lin.weight.detach()  # consumes a parameter, feeds nothing
            return torch.relu(self.lin(x))

    graph = build_graph(shapetrace.trace(DetachesItsWeight(), torch.randn(1, 3), ops=True))
    assert [n.title for n in graph.nodes if n.kind == "op"] == ["relu"]


def test_unet_exhibit_tail_turns_back_along_a_row_above_instead_of_widening_the_picture(camvid_unet_trace):
    import re

    from shapetrace.gallery.exhibits import get_exhibit
    from shapetrace.renderers.diagram import to_dot

    dot = to_dot(camvid_unet_trace, options=get_exhibit("camvid-unet").options)  # its U layout, depth 2
    pos = {m.group(2): tuple(map(float, m.group(1).split(","))) for m in
           re.finditer(r'pos="([-\d.]+,[-\d.]+)!", label=<<B>([^<]+)</B>', dot)}
    merge, last, out = pos["layers.10"], pos["layers.13"], pos["output"]
    top = max(y for name, (_, y) in pos.items() if name not in ("layers.10", "layers.11", "layers.12.0",
                                                                  "layers.13", "output"))
    assert merge[1] == last[1] == out[1] > top  # one row above the top row
    assert merge[0] > last[0] > out[0]  # running right to left towards the output
    assert max(x for x, _ in pos.values()) == merge[0] == pos["layers.9"][0]  # the merge sits above the resize
    assert out[0] > pos["input"][0]  # within the picture's width, over the encoder


class PoolTwice(nn.Module):
    """One pooling module applied twice in straight-line code, then a loop of one activation."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.pool, self.act = nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(2), nn.ReLU()
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        x = self.pool(x)
        x = self.pool(x)
        for _ in range(3):
            x = self.act(x)
        return self.head(x)


def test_a_folded_node_shows_the_shapes_of_every_call_it_folds():
    from shapetrace.renderers.diagram import to_dot

    t = trace_of(PoolTwice(), 1, 3, 32, 32)
    g = build_graph(t)
    pool = g.find("pool")[0]  # straight after one another: the trace cannot tell these calls from a loop
    assert pool.count == 2 and pool.out_shapes == [(1, 4, 16, 16), (1, 4, 8, 8)]
    assert pool.shapes_of("in", "[0]") == [(1, 4, 32, 32), (1, 4, 16, 16)]
    assert "out: (1, 4, 16, 16) | (1, 4, 8, 8) float32" in pool.tooltip()
    assert "<B>pool ×2</B>" in to_dot(t) and "1×4×16×16 | 1×4×8×8" in to_dot(t)
    assert "in[0]: 1×4×32×32 | 1×4×16×16" in to_dot(t, style="detailed")
    out = [e.shapes for e in g.edges if e.src == pool.id and e.dst != pool.id]
    assert out == [[(1, 4, 8, 8)]]  # what leaves is the last call's
    assert [e.shapes for e in g.edges if e.src == e.dst == pool.id] == [[(1, 4, 16, 16)]]  # the first call's: a loop
    act = g.find("act")[0]
    assert act.count == 3 and act.out_shapes == [(1, 4, 8, 8)] and "<B>act ×3</B>" in to_dot(t)


def test_with_source_lines_only_calls_from_one_line_fold():
    torch.manual_seed(0)
    t = shapetrace.trace(PoolTwice().eval(), torch.randn(1, 3, 32, 32), ops=True, lines=True)
    g = build_graph(t)
    pools = g.find("pool")
    assert [(n.count, n.out_shapes) for n in pools] == [(1, [(1, 4, 16, 16)]), (1, [(1, 4, 8, 8)])]
    assert [n.count for n in g.find("act")] == [3]  # the loop's calls come from one line: still folded
    lstm = shapetrace.trace(LoopLSTM().eval(), torch.randn(2, 4, 6), ops=True, lines=True)
    assert [n.title for n in build_graph(lstm).find("lstm")] == ["lstm ×4"]


def test_a_node_folded_by_depth_shows_the_numbers_of_its_table_row():
    """FLOPs, times and memory of a call are inclusive: a node folded by ``depth`` shows its call's, not the sum
    over the call and everything folded into it (which counted a block's FLOPs once per level)."""
    from torchvision.models import resnet18

    from shapetrace.renderers.rows import table_rows

    t = shapetrace.profile(resnet18().eval(), torch.randn(1, 3, 32, 32), device="cpu", warmup=0, repeat=1)
    rows = {r.name: r for r in table_rows(t, depth=1)}
    g = build_graph(t, depth=1)
    layer1 = g.find("layer1")[0]
    assert layer1.folded != layer1.calls  # the node folds its blocks' calls
    for node in g.nodes:
        if node.kind != "call":
            continue
        row = rows[node.name]
        assert node.flops == row.flops, node.name
        assert node.total_ms == pytest.approx(row.timing["total_ms"]), node.name
        assert node.peak_bytes == (row.memory or {}).get("peak_bytes"), node.name
        assert node.activation_bytes == row.memory["activation_bytes"], node.name
    assert layer1.flops == 2 * 2 * (64 * 64 * 9) * 8 * 8 * 2 > 0  # four 3x3 convs, 64 -> 64 channels, 8x8
