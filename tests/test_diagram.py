"""The Graphviz renderer (``shapetrace.renderers.diagram``): escaping, determinism, formats, overlays, layouts,
big models, the 500-node warning and the missing-Graphviz path."""

from __future__ import annotations

import json
import re
import time
import warnings
import xml.etree.ElementTree as ET

import pytest
import torch
from conftest import requires_dot
from test_graph import HookUnet, LoopLSTM, trace_of
from torch import nn

import shapetrace
from shapetrace.renderers import diagram
from shapetrace.renderers.diagram import GraphvizNotFound, dot_available, render, to_dot
from shapetrace.renderers.graph import build_graph
from shapetrace.tracer.records import Trace

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def unet_trace() -> Trace:
    return trace_of(HookUnet(), 1, 3, 32, 32)


def svg_root(data: bytes) -> ET.Element:
    return ET.fromstring(data)


def node_groups(root: ET.Element) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG}g") if g.get("class") == "node"]


# ---- escaping -----------------------------------------------------------------------------------------------
EVIL = 'a<b>&"x\'\ny</b>'


class Evil(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.add_module(EVIL, nn.Linear(3, 3))
        self.add_module("<script>alert(1)</script>", nn.ReLU())

    def forward(self, x):
        return self._modules["<script>alert(1)</script>"](self._modules[EVIL](x))


@requires_dot
def test_names_with_markup_render_literally():
    t = shapetrace.trace(Evil(), torch.randn(2, 3), ops=True)
    data = render(t, format="svg")
    root = svg_root(data)  # parses: nothing broke the XML
    assert not [e for e in root.iter() if e.tag in (f"{SVG}b", f"{SVG}script", "b", "script")]
    texts = ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]
    literal = 'a<b>&"x\'\\ny</b>'  # the newline shown as the two characters \n
    assert literal in texts
    assert "<script>alert(1)</script>" in texts
    titles = [t.text or "" for t in root.iter(f"{SVG}title")]
    assert any(title.startswith(literal + " (Linear)") for title in titles)


def test_dot_source_escapes_labels():
    t = shapetrace.trace(Evil(), torch.randn(2, 3), ops=True)
    src = to_dot(t)
    # the newline as the two characters \n, the backslash doubled for Graphviz, which reads \\ as one there
    assert "a&lt;b&gt;&amp;&quot;x&#39;\\\\ny&lt;/b&gt;" in src
    labels = [line.split("label=")[1].split(", tooltip=")[0] for line in src.splitlines() if "label=<" in line]
    assert not any("<script>" in lab or "\ny</b>" in lab for lab in labels)
    assert 'tooltip="a<b>&\\"x\'\\\\ny</b> (Linear)' in src  # a quoted DOT string, the newline literal


# ---- determinism and formats ----------------------------------------------------------------------------------
@requires_dot
def test_same_trace_same_bytes(unet_trace):
    again = trace_of(HookUnet(), 1, 3, 32, 32)
    for fmt in ("dot", "svg"):
        a = render(unet_trace, format=fmt, depth=2)
        assert a == render(unet_trace, format=fmt, depth=2) == render(again, format=fmt, depth=2)
    for layout in ("lr", "u"):
        assert render(unet_trace, format="svg", layout=layout) == render(again, format="svg", layout=layout)


@requires_dot
def test_a_pdf_rendered_a_second_later_is_the_same_bytes(unet_trace):
    first = render(unet_trace, format="pdf", depth=1)
    time.sleep(1.1)  # Graphviz on cairo < 1.17 writes the time of the run as the creation date
    assert render(unet_trace, format="pdf", depth=1) == first
    assert b"/CreationDate (D:19700101000000" in first


@requires_dot
@pytest.mark.parametrize("fmt,magic", [("png", b"\x89PNG"), ("pdf", b"%PDF"), ("svg", b"<?xml")])
def test_formats(unet_trace, fmt, magic):
    assert render(unet_trace, format=fmt, depth=1).startswith(magic)


def test_bad_options_are_refused(unet_trace):
    with pytest.raises(ValueError, match="layout"):
        to_dot(unet_trace, layout="diagonal")
    with pytest.raises(ValueError, match="style"):
        to_dot(unet_trace, style="fancy")
    with pytest.raises(ValueError, match="overlay"):
        to_dot(unet_trace, overlays=["sparkles"])
    with pytest.raises(ValueError, match="format"):
        render(unet_trace, format="tiff")


@requires_dot
def test_svg_titles_hold_full_shapes_and_params(unet_trace):
    root = svg_root(render(unet_trace, format="svg", depth=1))
    titles = {(g.find(f"{SVG}title").text or "").split("\n")[0]: g.find(f"{SVG}title").text
              for g in node_groups(root)}
    enc = titles["encoder (Sequential)"]
    assert "in[0]: (1, 3, 32, 32) float32" in enc and "out: (1, 32, 8, 8) float32" in enc
    assert "params: " in enc
    assert len(node_groups(root)) == len(build_graph(unet_trace, depth=1).nodes)


# ---- what the diagram shows -------------------------------------------------------------------------------------
def test_labels_edges_and_shape_changes(unet_trace):
    src = to_dot(unet_trace, depth=2)
    assert "<B>encoder.1</B>" in src and "MaxPool2d" in src and "1×8×16×16" in src
    assert "↓2  1×8×16×16" in src and diagram.DOWN["color"] in src  # halving: red with a marker
    assert "↑2  1×16×16×16" in src and diagram.UP["color"] in src  # doubling: green
    assert 'style="dashed"' in src  # the hook-read skips
    assert "subgraph cluster_c" in src


def test_compact_detailed_and_params(unet_trace):
    compact = to_dot(unet_trace, depth=1)
    detailed = to_dot(unet_trace, depth=1, style="detailed")
    with_params = to_dot(unet_trace, depth=1, show_params=True)
    assert "params" not in compact.split("tooltip")[0]
    assert "in[0]: 1×3×32×32" in detailed and "K params" in detailed
    assert "K params" in with_params


def test_layouts(unet_trace):
    assert 'rankdir="LR"' in to_dot(unet_trace, layout="lr")
    u = to_dot(unet_trace, layout="u", depth=2)
    assert 'layout="neato"' in u and "subgraph" not in u
    pos = {line.split()[0]: line for line in u.splitlines() if 'pos="' in line}
    y = {k: float(v.split('pos="')[1].split(",")[1].rstrip('!"')) for k, v in pos.items()}
    g = build_graph(unet_trace, depth=2)
    bottleneck = g.find("middle.0")[0].id
    assert y[bottleneck] == min(y.values())  # the bottleneck is the lowest row


def test_loop_node_is_marked(unet_trace):
    t = trace_of(LoopLSTM(), 2, 4, 6)
    assert "<B>lstm ×4</B>" in to_dot(t)
    assert "<B>lstm#3</B>" in to_dot(t, unroll=True)


# ---- overlays -------------------------------------------------------------------------------------------------
def test_cut_overlay_auto_for_sequential_body_head():
    model = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), nn.Sequential(nn.Flatten(), nn.Linear(144, 2)))
    t = trace_of(model, 1, 3, 8, 8)
    src = to_dot(t, overlays=["cut"])
    assert diagram.CUT_COLORS["body"] in src and diagram.CUT_COLORS["head"] in src and "legend" in src
    assert "body: 0" in src and "head: 1" in src
    with pytest.raises(ValueError, match="cut"):
        to_dot(trace_of(HookUnet(), 1, 3, 32, 32), overlays=["cut"])


def test_frozen_groups_and_heat_overlays(unet_trace):
    model = HookUnet()
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    t = trace_of(model, 1, 3, 32, 32)
    frozen = to_dot(t, depth=1, overlays=["frozen"])
    assert diagram.FROZEN_FILL["frozen"] in frozen and diagram.FROZEN_FILL["trainable"] in frozen
    groups = to_dot(t, depth=1, overlays=["groups"],
                    options={"param_groups": {"body": ["encoder"], "decoder": ["up1", "up2"], "head": ["final"]}})
    assert all(c in groups for c in diagram.GROUP_PALETTE[:3]) and "decoder" in groups
    timed = Trace.from_json(t.to_json())
    for i, c in enumerate(timed.calls):
        c.timing = {"self_ms": 0.1 * i, "total_ms": 0.2 * i}
    heat = to_dot(timed, depth=1, overlays=["heat"])
    assert diagram.HEAT_SCALE[-1] in heat and "time (self)" in heat and " ms" in heat
    assert "activation size" in to_dot(t, depth=1, overlays=["heat"])
    with pytest.raises(ValueError, match="profiled"):
        to_dot(t, overlays=["heat"], options={"heat": "time"})


# ---- Graphviz missing -------------------------------------------------------------------------------------------
def test_without_dot_render_raises_a_clear_error(unet_trace, monkeypatch):
    monkeypatch.setattr(diagram.shutil, "which", lambda name: None)
    assert not dot_available()
    with pytest.raises(GraphvizNotFound, match="apt-get install graphviz") as err:
        render(unet_trace, format="png")
    assert "brew install graphviz" in str(err.value) and "conda" in str(err.value)
    assert err.value.source == to_dot(unet_trace)
    assert render(unet_trace, format="dot") == to_dot(unet_trace).encode()


# ---- big models -------------------------------------------------------------------------------------------------
def test_more_than_500_nodes_warns():
    t = trace_of(nn.Sequential(*[nn.Sequential(nn.Linear(2, 2), nn.ReLU()) for _ in range(260)]), 1, 2)
    with pytest.warns(UserWarning, match="depth") as seen:
        to_dot(t)
    assert seen[0].filename == __file__  # the caller's line, however deep in the renderers it was raised
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        to_dot(t, depth=1)


@pytest.fixture(scope="module")
def transformer_trace() -> Trace:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, batch_first=True)
    model = nn.TransformerEncoder(layer, num_layers=24, enable_nested_tensor=False)
    return trace_of(model, 1, 10, 32)


@pytest.fixture(scope="module")
def resnet152_trace() -> Trace:
    import torchvision

    torch.manual_seed(0)
    return trace_of(torchvision.models.resnet152(), 1, 3, 64, 64)


@requires_dot
@pytest.mark.parametrize("depth", [None, 2])
def test_transformer_24_layers_renders(transformer_trace, depth):
    g = build_graph(transformer_trace, depth=depth)
    root = svg_root(render(transformer_trace, format="svg", depth=depth))
    assert len(node_groups(root)) == len(g.nodes)
    layers = {n.name.split(".")[1] for n in g.nodes if n.name.startswith("layers.")}
    assert layers == {str(i) for i in range(24)}


@requires_dot
@pytest.mark.parametrize("depth", [None, 2])
def test_resnet152_renders(resnet152_trace, depth):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = render(resnet152_trace, format="svg", depth=depth)
    g = build_graph(resnet152_trace, depth=depth, warn=False)
    assert len(node_groups(svg_root(data))) == len(g.nodes)
    assert any("--depth" in str(w.message) for w in caught) == (len(g.nodes) > 500)
    if depth == 2:
        assert len([n for n in g.nodes if n.cls == "Bottleneck"]) == 3 + 8 + 36 + 3
        downs = [e for e in g.edges if e.change == ("down", 2)]
        assert len(downs) >= 4


class _AddOne(nn.Module):
    """A container whose output no child made: ``act(lin(x)) + 1`` computed in its own forward."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.lin(x)) + 1


@requires_dot
def test_a_container_whose_own_forward_made_its_output_sends_its_edge_from_its_box():
    import re
    import shutil
    import subprocess

    trace = shapetrace.trace(nn.Sequential(_AddOne(), nn.Linear(4, 2)), torch.randn(3, 4))  # no ops recorded
    dot = to_dot(trace)
    [edge] = [line for line in dot.splitlines() if "ltail=" in line]
    src, dst, cluster = re.search(r"(\w+) -> (\w+) .*ltail=\"(cluster_\w+)\"", edge).groups()
    block = dot[dot.index(f"subgraph {cluster}"):]
    assert f"  {src} [" in block.split("\n  }")[0]  # the edge's tail node is inside the box it starts from
    assert re.search(rf"\b{dst} \[[^\n]*Linear", dot)  # and it ends at the next layer, 1 (Linear)
    done = subprocess.run([shutil.which("dot"), "-Tsvg"], input=dot, capture_output=True, text=True, check=True)
    assert "Warning" not in done.stderr  # Graphviz accepts the clipped edge (compound=true, tail inside)
    assert "ltail" not in to_dot(trace, layout="u")  # the U layout places nodes itself and draws no box tails


@requires_dot
def test_backslashes_in_names_reach_every_tooltip_as_written():
    model = nn.Sequential()
    model.add_module("C:\\Net\\Gen\\Lab", nn.Linear(4, 4))
    svg = diagram.render(shapetrace.trace(model, torch.randn(1, 4)), format="svg").decode()
    links = re.findall(r'xlink:title="([^"]*)"', svg)
    assert links and all("shapetrace" not in t for t in links)  # no \G expanded to the graph's name
    assert any("input → C:\\Net\\Gen\\Lab" in t for t in links)


def test_more_than_500_nodes_that_folding_cannot_reduce_says_so_instead_of_suggesting_depth():
    t = trace_of(nn.Sequential(*[nn.Linear(2, 2) for _ in range(520)]), 1, 2)
    with pytest.warns(UserWarning, match="even folded") as seen:
        to_dot(t, depth=1)
    assert "--depth" not in str(seen[0].message)


class FailsLong(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError("a message much longer than a node label has room for, so it has to be cut somewhere "
                         "after it has filled the three lines of red small print that a failed node shows")


def test_a_failing_nodes_label_marks_where_a_long_error_was_cut():
    src = to_dot(shapetrace.trace(FailsLong(), torch.randn(2), strict=False))
    lines = re.findall(r'COLOR="#d32f2f">([^<]*)<', src)
    assert lines[0].startswith("failed: ValueError: a message much longer")
    assert len(lines) == diagram.ERROR_LINES and all(len(line) <= diagram.ERROR_WIDTH for line in lines)
    assert lines[-1].endswith("…")


def test_the_cut_overlay_marks_what_the_cut_removes_and_names_it_in_the_legend():
    model = nn.Sequential()
    model.add_module("conv", nn.Conv2d(3, 4, 3))
    model.add_module("pool", nn.AdaptiveAvgPool2d(1))
    model.add_module("fc", nn.Conv2d(4, 2, 1))
    src = to_dot(shapetrace.trace(model, torch.randn(1, 3, 8, 8)), overlays=["cut"],
                 options={"cut": {"body": ["conv"], "removed": ["pool", "fc"]}})
    assert "cut off: pool, fc" in src and "head: -" not in src
    assert src.count(">cut off<") == 2  # the two removed layers are marked on their nodes
    # the mark is 9-point text on a layer box's fill: it must read at WCAG AA's 4.5:1 for small text
    colours = re.findall(r'<FONT POINT-SIZE="9" COLOR="(#[0-9a-f]{6})">cut off</FONT>', src)
    fills = [diagram.THEME[kind]["fillcolor"] for kind in ("call", "collapsed")]
    assert len(colours) == 2 and all(_contrast(c, f) >= 4.5 for c in colours for f in fills), colours


def _contrast(a: str, b: str) -> float:
    """WCAG's contrast ratio of two ``#rrggbb`` colours."""
    def luminance(colour: str) -> float:
        c = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
        r, g, b = (x / 12.92 if x <= 0.03928 else ((x + 0.055) / 1.055) ** 2.4 for x in c)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_an_edge_title_with_a_port_gets_its_description_like_any_other():
    # Graphviz writes an edge drawn to or from a port (headport="s") as "a:s->b:s": such an edge's title and
    # tooltip are the description too, never Graphviz's raw node ids
    svg = ('<g id="edge1" class="edge">\n<title>in0:e&#45;&gt;c202:s</title>\n<g id="a_edge1"><a xlink:title="x">'
           "<path/></a></g></g>")
    out = diagram._svg_titles(svg, {}, {("in0", "c202"): "input → layers.10: (1, 3, 360, 480) float32"})
    assert "<title>input → layers.10: (1, 3, 360, 480) float32</title>" in out and "c202" not in out


class CrossUnet(HookUnet):
    """The U-Net with fastai's last_cross: after the decoder, a merge with the model's input, which the merge
    reads from where the forward kept it (a skip from the input up into the U's tail row)."""

    def __init__(self) -> None:
        super().__init__()
        self.merge = _MergeInput(self)
        self.head = nn.Sequential(nn.Conv2d(8 + 3, 4, 1), nn.ReLU(), nn.Conv2d(4, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.orig = x
        return self.head(self.merge(self.up2(self.up1(self.middle(self.encoder(x))))))


class _MergeInput(nn.Module):
    def __init__(self, owner: nn.Module) -> None:
        super().__init__()
        self.owner = [owner]  # not a submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.owner[0].orig], dim=1)


@requires_dot
def test_the_u_layout_lets_graphviz_route_the_input_skip_into_the_tail_row_and_titles_it():
    # forced into the bottom of the merge (headport "s"), the skip looped round the merge, crossed the tail
    # row's own arrow and shared the arrowhead of the arrow from below; its title kept Graphviz's "in0->c7:s"
    t = trace_of(CrossUnet(), 1, 3, 32, 32)
    assert "headport" not in to_dot(t, layout="u", depth=2)
    svg = render(t, format="svg", layout="u", depth=2).decode()
    titles = re.findall(r'<g id="edge\d+" class="edge">\n<title>([^<]*)</title>', svg)
    assert titles and all(" → " in title for title in titles), titles
    assert any(title.startswith("input → merge") for title in titles)


# ---- empty and long names, backslashes ----------------------------------------------------------------------
def _empty_names_trace() -> Trace:
    """A real model with a class named "" (a leaf and a container), then, edited in its JSON as load() accepts,
    an op named "" and an output dtype "" (drawn by the detailed style)."""
    anon = type("", (nn.Module,), {"forward": lambda self, x: x * 2})
    box = type("", (nn.Module,), {
        "__init__": lambda self: (nn.Module.__init__(self), setattr(self, "lin", nn.Linear(3, 3)))[0],
        "forward": lambda self, x: self.lin(x) + 1})
    t = shapetrace.trace(nn.Sequential(nn.Linear(3, 3), anon(), box()), torch.randn(2, 3), ops=True)
    data = json.loads(t.to_json())
    assert data["ops"]
    for op in data["ops"]:
        op["name"] = ""
    data["calls"][1]["outputs"]["dtype"] = ""
    return shapetrace.load(json.dumps(data))


def test_an_empty_name_writes_no_empty_label_element():
    t = _empty_names_trace()
    for style in ("compact", "detailed"):
        for layout in ("tb", "u"):
            src = to_dot(t, style=style, layout=layout, depth=None, overlays=["frozen"])
            assert "<B></B>" not in src and not re.search(r"<FONT[^>]*></FONT>", src), src
            assert "<BR/><BR/>" not in src and "<BR/>>" not in src and "<<BR/>" not in src


@requires_dot
@pytest.mark.parametrize("fmt", ["svg", "png", "pdf"])
def test_an_empty_class_op_or_dtype_name_still_draws_a_diagram(fmt):
    t = _empty_names_trace()
    for style in ("compact", "detailed"):
        for layout in ("tb", "u"):
            for depth in (None, 1):
                assert render(t, format=fmt, style=style, layout=layout, depth=depth)
    page = shapetrace.renderers.render(t, "html", shapetrace.renderers.RenderOptions(with_diagram=True))
    assert "<svg" in page


LONG = "x" * 500


class LongNamed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.d = nn.ModuleDict({LONG: type("Y" * 300, (nn.Linear,), {})(3, 3)})

    def forward(self, x):
        return self.d[LONG](x)


@requires_dot
def test_a_long_name_is_cut_in_the_middle_on_the_node_and_kept_whole_in_the_tooltip():
    t = shapetrace.trace(LongNamed(), torch.randn(2, 3))
    src = to_dot(t)
    shown = re.search(r"<B>(d\.x+…x+)</B>", src)
    assert shown and len(shown.group(1)) == diagram.NAME_WIDTH and LONG not in src.split("tooltip")[0]
    assert "Y" * 300 not in re.sub(r'tooltip="[^"]*"', "", src)  # the class too
    root = svg_root(render(t, format="svg"))
    assert float(root.get("width").removesuffix("pt")) < 800  # was 8080 px wide
    titles = [e.text or "" for e in root.iter(f"{SVG}title")]
    assert any(title.startswith(f"d.{LONG} ({'Y' * 300})") for title in titles)


def test_the_gallerys_names_are_short_enough_to_be_drawn_whole():
    from shapetrace.renderers.diagram import shown_name

    for name in ("bodies.densenet.0.denseblock2.denselayer10.norm1", "layers.0.5.0.downsample.0 ×3"):
        assert shown_name(name) == name


@requires_dot
def test_a_newline_and_a_backslash_n_read_differently_on_the_node():
    model = nn.Module()
    model.d = nn.ModuleDict({"a\nb": nn.Linear(3, 3), "a\\nb": nn.Linear(3, 3), "back\\slash": nn.ReLU()})
    model.forward = lambda x: model.d["back\\slash"](model.d["a\\nb"](model.d["a\nb"](x)))
    root = svg_root(render(shapetrace.trace(model, torch.randn(2, 3)), format="svg"))
    texts = ["".join(e.itertext()) for e in root.iter(f"{SVG}text")]
    assert "d.a\\nb" in texts and "d.a\\\\nb" in texts and "d.back\\slash" in texts


# ---- overlays together --------------------------------------------------------------------------------------
def _timed_partly_frozen() -> Trace:
    model = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), nn.Sequential(nn.Flatten(), nn.Linear(144, 2)))
    model[0][0].weight.requires_grad_(False)
    t = trace_of(model, 1, 3, 8, 8)
    for i, c in enumerate(t.calls):
        c.timing = {"self_ms": 0.1 * (i + 1), "total_ms": 0.2 * (i + 1)}
    return Trace.from_json(t.to_json())


def test_a_legend_row_is_drawn_only_for_colours_the_nodes_show():
    t = _timed_partly_frozen()
    both = to_dot(t, overlays=["frozen", "heat"], options={"heat": "time"})  # heat paints over every frozen fill
    assert "time (self)" in both and ">parameters<" not in both
    assert not any(colour in both for colour in diagram.FROZEN_FILL.values())
    assert "partly frozen" in both  # the node's own mark still says it
    frozen = to_dot(t, overlays=["frozen"])  # no node is wholly frozen: that row goes, the others stay
    assert ">parameters<" in frozen and ">partly frozen&#160;" in frozen and ">trainable&#160;" in frozen
    assert ">frozen&#160;" not in frozen
    last = to_dot(t, overlays=["heat", "frozen"], options={"heat": "time"})  # frozen wins where it fills
    assert ">parameters<" in last and "time (self)" in last  # heat still fills the parameterless calls


def test_the_detailed_style_with_the_time_heat_prints_each_time_once():
    t = _timed_partly_frozen()
    src = to_dot(t, style="detailed", overlays=["frozen", "heat", "cut"], options={"heat": "time"})
    for node in build_graph(t).nodes:
        if node.self_ms is not None:
            line = next(line for line in src.splitlines() if line.strip().startswith(f"{node.id} ["))
            label = line.split("tooltip=")[0]
            assert label.count(f"{node.self_ms:.3f} ms") == 1, label


class FailsAtLength(nn.Module):
    """A layer whose error message is 20,000 characters long, past Graphviz's 16,384-byte limit on a string."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError("bad: " + "y" * 20_000)


class CallsFailing(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.inner = FailsAtLength()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(self.a(x))


@requires_dot
def test_a_layer_failing_with_a_20000_character_message_still_renders_to_svg():
    t = shapetrace.trace(CallsFailing(), torch.randn(2, 4), strict=False)
    root = svg_root(render(t, format="svg"))
    titles = [e.text or "" for e in root.iter(f"{SVG}title")]
    error_tip = next(title for title in titles if "error: " in title)
    assert "bad: yyy" in error_tip and error_tip.endswith("…") and len(error_tip) <= diagram.TIP_CHARS


def test_every_dot_string_stays_far_below_graphvizs_16384_byte_limit():
    t = shapetrace.trace(CallsFailing(), torch.randn(2, 4), strict=False)
    strings = re.findall(r'"(?:[^"\\]|\\.)*"|<(?:[^<>]|<[^<>]*>)*>', to_dot(t, style="detailed"))
    assert max(len(s.encode()) for s in strings) < 16_384 // 2


@pytest.fixture(scope="module")
def densenet_trace() -> Trace:
    torchvision = pytest.importorskip("torchvision")
    return trace_of(torchvision.models.densenet121(), 1, 3, 64, 64)


def test_a_densenets_diagram_is_laid_out_with_graphvizs_iteration_limits_and_external_edge_labels(
        densenet_trace):
    src = to_dot(densenet_trace)
    graph_line = next(line for line in src.splitlines() if line.startswith("  graph ["))
    assert src.count(" -> ") > diagram.BIG_GRAPH_EDGES
    assert all(f"{k}={v!r}".replace("'", '"') in graph_line for k, v in diagram.BIG_GRAPH_LIMITS.items())
    edges = [line for line in src.splitlines() if " -> " in line]
    assert all(" label=" not in e and "[label=" not in e for e in edges)
    assert sum("xlabel=<" in e for e in edges) > diagram.BIG_GRAPH_EDGES  # the shapes are still drawn


def test_a_small_diagram_is_laid_out_without_limits_and_with_edge_labels_in_the_layout(unet_trace):
    src = to_dot(unet_trace)
    assert "nslimit" not in src and "mclimit" not in src and "xlabel" not in src
    assert any("[label=<" in line or " label=<" in line for line in src.splitlines() if " -> " in line)


@requires_dot
def test_a_diagram_dot_cannot_finish_in_time_fails_with_advice_to_fold(densenet_trace, monkeypatch):
    monkeypatch.setattr(diagram, "DOT_TIMEOUT_S", 0.01)
    with pytest.raises(RuntimeError, match=r"--depth 2"):
        render(densenet_trace, format="svg")


@requires_dot
def test_a_densenet_renders_to_svg_with_every_edge_labelled(densenet_trace):
    root = svg_root(render(densenet_trace, format="svg"))
    edges = [g for g in root.iter(f"{SVG}g") if g.get("class") == "edge"]
    assert len(edges) > diagram.BIG_GRAPH_EDGES and all(g.find(f".//{SVG}text") is not None for g in edges
                                                         if "→" in (g.findtext(f"{SVG}title") or ""))


@pytest.fixture(scope="module")
def regnet_trace() -> Trace:
    torchvision = pytest.importorskip("torchvision")
    return trace_of(torchvision.models.regnet_y_400mf(), 1, 3, 64, 64)


def test_a_big_diagram_without_long_edges_between_boxes_keeps_its_shapes_in_the_layout(regnet_trace):
    src = to_dot(regnet_trace)
    edges = [line for line in src.splitlines() if " -> " in line]
    assert len(edges) > diagram.BIG_GRAPH_EDGES and "nslimit" in src  # big: laid out with iteration limits
    assert "xlabel" not in src and all(" label=<" in e or "[label=<" in e for e in edges)


class FlatDenseNet(nn.Module):
    """A DenseNet written flat, with no boxes: every layer reads the concatenation of all earlier outputs, so
    hundreds of long edges pass the same few ranks. ``refine`` rounds of a loop first, which fold to a cycle."""

    def __init__(self, layers: int, refine: int = 0) -> None:
        super().__init__()
        self.refine, self.cell = refine, nn.Linear(4, 4)
        self.layers = nn.ModuleList(nn.Linear(4 * (i + 1), 4) for i in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.refine):
            x = torch.tanh(self.cell(x))
        feats = [x]
        for layer in self.layers:
            feats.append(torch.relu(layer(torch.cat(feats, 1))))
        return torch.cat(feats, 1)


def edge_lines(src: str) -> list[str]:
    return [line for line in src.splitlines() if " -> " in line]


def test_a_flat_dense_graph_places_its_shapes_after_the_layout():
    """dot takes about a minute to route ordinary labels between 25 layers that each read every earlier one;
    the edges never cross a box, and still the shapes are external labels."""
    src = to_dot(trace_of(FlatDenseNet(25), 1, 4))
    assert all("xlabel=<" in e for e in edge_lines(src))


def test_a_folded_loop_does_not_hide_the_dense_graph_after_it():
    """The loop folds to a cycle (an edge back to its start); the ranking ignores that edge, so the layers
    after it count as they would without the loop."""
    looped = trace_of(FlatDenseNet(25, refine=4), 1, 4)
    pairs = {(e.src, e.dst) for e in build_graph(looped).edges}
    assert any((b, a) in pairs for a, b in pairs)  # a folded loop: a cycle
    assert all("xlabel=<" in e for e in edge_lines(to_dot(looped)))
    plain = build_graph(trace_of(FlatDenseNet(25), 1, 4))
    assert diagram.label_crowding(build_graph(looped)) == diagram.label_crowding(plain) > 0


def test_a_small_flat_dense_graph_keeps_its_shapes_in_the_layout():
    src = to_dot(trace_of(FlatDenseNet(10), 1, 4))
    assert "xlabel" not in src and all("label=<" in e for e in edge_lines(src))


def text_boxes(root: ET.Element) -> list[tuple[float, float, float, float, str, bool]]:
    """Every SVG text as (left, top, right, bottom, text, on_an_edge), its width estimated at 0.6 em a
    character (DejaVu Sans averages less), its height 1 em."""
    on_edge = {id(t) for g in root.iter(f"{SVG}g") if g.get("class") == "edge" for t in g.iter(f"{SVG}text")}
    boxes = []
    for t in root.iter(f"{SVG}text"):
        text, size = (t.text or "").strip(), float(t.get("font-size", "14"))
        if not text:
            continue
        x, y, width = float(t.get("x")), float(t.get("y")), 0.6 * size * len(text)
        left = {"start": x, "middle": x - width / 2, "end": x - width}[t.get("text-anchor", "start")]
        boxes.append((left, y - 0.8 * size, left + width, y + 0.2 * size, text, id(t) in on_edge))
    return boxes


@requires_dot
def test_a_big_diagrams_edge_labels_overlap_no_other_text(regnet_trace):
    boxes = text_boxes(svg_root(render(regnet_trace, format="svg")))
    labels = [b for b in boxes if b[5]]
    assert len(labels) > diagram.BIG_GRAPH_EDGES
    clashes = [(a[4], b[4]) for a in labels for b in boxes if a is not b
               and a[0] < b[2] - 1 and b[0] < a[2] - 1 and a[1] < b[3] - 1 and b[1] < a[3] - 1]
    assert clashes == []


def nested_chain(tmp_path, n: int) -> Trace:
    """A saved trace of ``n`` wrapper modules each calling the next, the last a Linear, loaded from its file."""
    meta = {"shape": [1, 4], "dtype": "float32", "device": "cpu"}
    calls = [{"id": i, "module": ".".join(["inner"] * i), "cls": "Wrap" if i < n - 1 else "Linear", "call_index": 0,
              "parent": i - 1 if i else None, "depth": i, "start": i + 1, "end": 2 * n - i,
              "inputs": [{**meta, "tid": 0}], "outputs": {**meta, "tid": 1}} for i in range(n)]
    edges = [{"src": "input:0", "dst": f"call:{i}", "tid": 0, "shape": [1, 4], "dtype": "float32"} for i in range(n)]
    edges.append({"src": f"call:{n - 1}", "dst": "output:out", "tid": 1, "shape": [1, 4], "dtype": "float32"})
    saved = {"format": "shapetrace.trace/2", "model": {"cls": "Chain", "params": 0}, "inputs": [{**meta, "tid": 0}],
             "kwargs": {}, "outputs": {**meta, "tid": 1}, "calls": calls, "edges": edges, "ops": [], "uncalled": [],
             "failure": None, "timing": None,
             "meta": {"torch": "2", "device": "cpu", "grad": False, "ops": False, "training": False}}
    path = tmp_path / f"chain{n}.json"
    path.write_text(json.dumps(saved))
    return shapetrace.load(str(path))


@requires_dot
def test_calls_nested_1200_deep_render_to_svg_with_every_box(tmp_path):
    t = nested_chain(tmp_path, 1200)
    root = svg_root(render(t, format="svg"))
    clusters = [g for g in root.iter(f"{SVG}g") if g.get("class") == "cluster"]
    assert len(clusters) == 1198 and len(node_groups(root)) == 3  # every wrapper but the root; input, Linear, output


@requires_dot
def test_boxes_nested_deeper_than_dot_reads_fail_with_advice_to_pass_a_depth(tmp_path):
    t = nested_chain(tmp_path, 2500)
    with pytest.raises(RuntimeError, match=rf"--depth {diagram.MAX_CLUSTER_NESTING}"):
        render(t, format="svg")
    assert b"subgraph" in render(t, format="dot")  # the DOT text is still written
