"""Plots: deterministic SVG, PNG bytes, the shape flow from shapes alone, and no torch in the renderer."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import shapetrace
from shapetrace.renderers import plots


class _TinyUNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.down1 = nn.Conv2d(3, 8, 3, padding=1)
        self.pool1 = nn.MaxPool2d(2)
        self.down2 = nn.Conv2d(8, 16, 3, padding=1)
        self.pool2 = nn.MaxPool2d(2)
        self.up1 = nn.Upsample(scale_factor=2)
        self.conv1 = nn.Conv2d(16, 8, 3, padding=1)
        self.up2 = nn.Upsample(scale_factor=2)
        self.out = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool2(self.down2(self.pool1(self.down1(x))))
        return self.out(self.up2(self.conv1(self.up1(x))))


@pytest.fixture(scope="module")
def profiled():
    return shapetrace.profile(_TinyUNet().eval(), torch.randn(1, 3, 16, 16), device="cpu", warmup=0, repeat=2)


@pytest.mark.parametrize("kind", ["bars", "forward", "flops", "flow"])
def test_svg_is_deterministic_and_png_is_png(profiled, kind):
    a = plots.render_plot(profiled, kind, format="svg")
    b = plots.render_plot(shapetrace.load(profiled.to_json()), kind, format="svg")
    assert isinstance(a, str) and a.startswith("<?xml") and a == b
    assert "<dc:date>" not in a
    png = plots.render_plot(profiled, kind, format="png")
    assert isinstance(png, bytes) and png[:8] == b"\x89PNG\r\n\x1a\n"


def test_shape_flow_shows_the_u():
    trace = shapetrace.trace(_TinyUNet().eval(), torch.randn(1, 3, 16, 16))  # no timing needed
    pts = plots.flow_points(trace)
    assert [p[0] for p in pts] == ["input", "down1", "pool1", "down2", "pool2", "up1", "conv1", "up2", "out"]
    assert [p[2] for p in pts] == [256, 256, 64, 64, 16, 64, 64, 256, 256]  # down, then back up
    assert [p[1] for p in pts] == [3, 8, 8, 16, 16, 16, 8, 8, 2]
    svg = plots.shape_flow(trace)
    assert svg.startswith("<?xml")
    import xml.etree.ElementTree as ET

    root = ET.fromstring(svg)
    dots = [c.find("{http://www.w3.org/2000/svg}title").text for c in root.iter("{http://www.w3.org/2000/svg}circle")]
    assert len(dots) == 2 * len(pts)  # one dot per point in each panel, named with its shapes in the tooltip
    assert dots[4] == "pool2: 16 channels, spatial size 16"
    ys = [float(c.get("cy")) for c in root.iter("{http://www.w3.org/2000/svg}circle")][len(pts):]
    assert ys.index(max(ys)) == 4  # the bottom of the U (SVG y grows downwards) is pool2's 4x4


def test_shape_flow_funnel_of_a_head_and_sequences():
    head = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))
    pts = plots.flow_points(shapetrace.trace(head, torch.randn(2, 4, 4, 4)))
    assert [(p[1], p[2]) for p in pts] == [(4, 16), (64, 1), (32, 1), (32, 1), (4, 1)]  # 4×4 maps, then flat
    seq = shapetrace.trace(nn.Sequential(nn.Linear(6, 10)), torch.randn(2, 7, 6))
    assert [(p[1], p[2]) for p in plots.flow_points(seq)] == [(6, 7), (10, 7)]
    conv1d = shapetrace.trace(nn.Sequential(nn.Conv1d(6, 10, 3)), torch.randn(2, 6, 9))  # channels first
    assert [(p[1], p[2]) for p in plots.flow_points(conv1d)] == [(6, 9), (10, 7)]
    tokens = shapetrace.trace(nn.Sequential(nn.Embedding(50, 8)), torch.randint(0, 50, (2, 5)))
    assert [p[0] for p in plots.flow_points(tokens)] == ["0"]  # integer token ids are not a point


def test_timing_plots_need_timings():
    trace = shapetrace.trace(nn.Linear(3, 4), torch.randn(2, 3))
    with pytest.raises(ValueError, match="profile"):
        plots.time_bars(trace)
    with pytest.raises(ValueError):
        plots.render_plot(trace, "nope")


def test_bars_top_n(profiled):
    assert len(plots.time_bars(profiled, top=3)) < len(plots.time_bars(profiled, top=8))


SRC = Path(__file__).resolve().parents[1] / "src"


def test_plots_module_never_imports_torch():
    # PYTHONPATH names this tree's src, so the child imports the code under test, never an installed copy
    code = ("import sys, shapetrace.renderers.plots as plots; assert 'torch' not in sys.modules, 'torch imported'; "
            "print(plots.__file__)")
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(SRC)})
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).resolve() == (SRC / "shapetrace" / "renderers" / "plots.py").resolve()


def test_the_flow_charts_axis_promises_an_input_point_only_when_there_is_one():
    tokens = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2))
    images = nn.Sequential(nn.Conv2d(3, 4, 3))
    for model, x, has_input in ((tokens, torch.randint(0, 10, (2, 5)), False),
                                (images, torch.randn(1, 3, 8, 8), True)):
        trace = shapetrace.trace(model, x)
        svg = plots.shape_flow(trace)
        assert (plots.flow_points(trace)[0][0] == "input") is has_input
        assert ("the input, then the leaf calls" in svg) is has_input


@pytest.fixture(scope="module")
def conv_trace():
    return shapetrace.trace(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), torch.randn(2, 3, 8, 8))


@pytest.mark.parametrize("fmt", ["svg", "png"])
def test_a_flow_chart_with_max_labels_0_has_no_x_labels(conv_trace, fmt):
    chart = plots.shape_flow(conv_trace, format=fmt, max_labels=0)
    assert chart
    if fmt == "svg":
        assert "rotate(-90 " not in chart.split("</circle>")[-1]  # the x labels are the rotated texts


def test_a_png_title_with_dollar_signs_is_written_as_it_is_not_read_as_math(conv_trace):
    assert plots.shape_flow(conv_trace, format="png", title="cost $x^2 and 50% $")[:4] == b"\x89PNG"
    assert plots._text("price $5 and $") == r"price \$5 and \$"


def test_a_chart_with_only_1d_tensors_says_what_it_needs():
    flat = shapetrace.trace(nn.Sequential(nn.Linear(4, 3)), torch.randn(4))
    svg = plots.shape_flow(flat, format="svg")
    assert "no tensor outputs" not in svg
    assert "2 or more dimensions" in svg


class _FailsOnItsSecondRun(nn.Module):
    """Runs through three times, then raises: the profile's traced forward runs through, and timed run 1 (its
    forwards 1 and 2: the timed runs start from the state the shape pass started from); run 2's instrumented
    forward, its fourth, fails."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.runs = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.runs += 1
        if self.runs == 4:
            raise RuntimeError("second pass fails")
        return self.lin(x)


def test_a_timing_plot_of_a_meta_profile_says_the_meta_device_is_never_timed():
    trace = shapetrace.profile(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), torch.randn(2, 4), device="meta")
    with pytest.raises(ValueError, match="device 'meta'") as err:
        plots.render_plot(trace, "bars")
    assert "device='cpu'" in str(err.value) and "make it with shapetrace.profile()" not in str(err.value)


def test_a_timing_plot_of_a_profile_that_failed_in_a_timed_run_says_where_and_why():
    with pytest.raises(shapetrace.TraceFailed) as failed:
        shapetrace.profile(_FailsOnItsSecondRun(), torch.randn(2, 4), warmup=1, repeat=2)
    with pytest.raises(ValueError) as err:
        plots.render_plot(shapetrace.load(failed.value.trace.to_json()), "flops")
    message = str(err.value)
    assert re.search(r"failed in .*in timed run \d+ of \d+ of the profile \(RuntimeError: second pass fails\)", message)
    assert "fix the forward" in message and "make it with shapetrace.profile()" not in message


def test_a_timing_plot_of_a_failed_forward_names_the_failing_call():
    with pytest.raises(shapetrace.TraceFailed) as failed:
        shapetrace.profile(nn.Sequential(nn.Linear(4, 4), nn.Linear(5, 5)), torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"its forward failed in 1 \(Linear\) \(RuntimeError: mat1 and mat2"):
        plots.render_plot(failed.value.trace, "bars")


def test_a_timing_plot_of_a_plain_trace_says_it_records_shapes_only():
    trace = shapetrace.trace(nn.Linear(3, 4), torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"made by shapetrace\.trace\(\), which records shapes only"):
        plots.time_bars(trace)


def _svg_texts(svg: str) -> list[str]:
    """The texts of a matplotlib SVG (drawn as paths; each text's group starts with a comment holding it)."""
    return re.findall(r"<!-- (.*?) -->", svg)


def _profiled_with_equal_times(model: nn.Module, x: torch.Tensor) -> shapetrace.Trace:
    """A profile of ``model`` whose leaf calls all took 2 ms: every leaf with equal FLOPs on one spot."""
    trace = shapetrace.profile(model, x, warmup=0, repeat=1)
    leaves = {c.id for c in trace.leaves()}
    for c in trace.calls:
        if c.id in leaves:
            c.timing = {"total_ms": 2.0, "self_ms": 2.0}
    return shapetrace.load(trace.to_json())


def test_the_flops_plots_tick_labels_are_plain_numbers_thinned_to_1_2_5():
    wide = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 64, 3), nn.Flatten(), nn.Linear(64 * 4 * 4, 2))
    trace = shapetrace.profile(wide, torch.randn(1, 3, 8, 8), warmup=0, repeat=1)
    texts = _svg_texts(plots.time_vs_flops(trace))
    ticks = texts[:texts.index("FLOPs per call")]
    assert ticks and not [t for t in ticks if "times" in t or "$" in t]  # no 2×10⁵ math text running together
    assert all(re.fullmatch(r"[125]0*(k|M|G)?", t) for t in ticks), ticks


def test_calls_drawn_on_the_same_spot_share_one_label_in_the_flops_plot():
    from collections import OrderedDict

    twins = nn.Sequential(OrderedDict(first=nn.Linear(8, 8), second=nn.Linear(8, 8)))
    texts = _svg_texts(plots.time_vs_flops(_profiled_with_equal_times(twins, torch.randn(2, 8))))
    assert "first, second" in texts and "first" not in texts and "second" not in texts


def _svg_width_pt(svg: str) -> float:
    m = re.search(r'<svg[^>]* width="([\d.]+)pt"', svg)
    assert m
    return float(m.group(1))


def test_long_names_on_one_spot_of_the_flops_plot_are_counted_not_joined_and_the_figure_keeps_its_size():
    from collections import OrderedDict

    long_names = OrderedDict((f"transformer_layer_{i}_self_attention_projection", nn.Linear(8, 8)) for i in range(5))
    svg = plots.time_vs_flops(_profiled_with_equal_times(nn.Sequential(long_names), torch.randn(2, 8)))
    texts = _svg_texts(svg)
    assert "5 calls (Linear)" in texts
    assert not [t for t in texts if "self_attention" in t]
    short = plots.time_vs_flops(_profiled_with_equal_times(nn.Sequential(nn.Linear(8, 8)), torch.randn(2, 8)))
    assert _svg_width_pt(svg) <= _svg_width_pt(short) + 10  # no label runs past the axes


def test_one_long_name_in_the_flops_plot_keeps_its_end():
    from collections import OrderedDict

    model = nn.Sequential(OrderedDict(encoder_stack_transformer_layers_7_self_attention_projection=nn.Linear(8, 8)))
    texts = _svg_texts(plots.time_vs_flops(_profiled_with_equal_times(model, torch.randn(2, 8))))
    label = next(t for t in texts if t.endswith("self_attention_projection"))
    assert label.startswith("…") and len(label) == 32


def test_a_flops_plot_with_no_point_has_its_title_and_says_why():
    trace = shapetrace.profile(nn.Sequential(nn.ReLU(), nn.Flatten()), torch.zeros(1, 1), device="cpu", warmup=0,
                               repeat=1)
    texts = _svg_texts(plots.time_vs_flops(trace))
    assert "Sequential: time against FLOPs (leaf calls)" in texts
    assert "nothing to show: no leaf call has both FLOPs and a time" in texts
    trace.meta["flops_unavailable"] = "RuntimeError: jagged layout not supported"
    texts = _svg_texts(plots.time_vs_flops(trace))
    assert "nothing to show: FLOPs were not counted" in texts
    assert any("jagged layout not supported" in t for t in texts)
    unflopped = shapetrace.profile(nn.Linear(2, 2), torch.zeros(1, 2), device="cpu", warmup=0, repeat=1, flops=False)
    assert "nothing to show: this trace has no FLOPs" in _svg_texts(plots.time_vs_flops(unflopped))


def _xs_of_first_path(svg: str, group: str) -> list[float]:
    """The x coordinates of the first path inside the SVG group ``group`` (its outline)."""
    after = svg[svg.index(f'<g id="{group}">'):]
    d = re.search(r'<path d="([^"]*)"', after)
    assert d
    numbers = [float(n) for n in re.findall(r"-?[\d.]+", d.group(1))]
    return numbers[0::2]


def _legend_left_and_axes_right(svg: str) -> tuple[float, float]:
    return min(_xs_of_first_path(svg, "legend_1")), max(_xs_of_first_path(svg, "patch_2"))  # patch_2: the axes


def test_the_bars_legend_sits_outside_the_bars_and_gives_each_class_its_colour():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    svg = plots.time_bars(_profiled_with_equal_times(model, torch.randn(2, 4)))
    assert {"inclusive", "self: Linear", "self: ReLU"} <= set(_svg_texts(svg))
    legend_left, axes_right = _legend_left_and_axes_right(svg)
    assert legend_left > axes_right  # it covers no bar and no percentage, even of a single bar


class _CellInALoop(nn.Module):
    """One cell called four times, then a head once: four calls of one module."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.Linear(8, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(4):
            x = self.cell(x)
        return self.head(x)


def test_the_bars_plot_in_the_modules_view_has_one_bar_per_module_with_its_call_count():
    trace = _profiled_with_equal_times(_CellInALoop(), torch.randn(2, 8))
    texts = _svg_texts(plots.time_bars(trace, view="modules"))
    assert "cell (Linear, ×4)" in texts and "head (Linear)" in texts
    assert not [t for t in texts if t.startswith("cell#")]
    assert any("slowest modules" in t for t in texts)
    calls = _svg_texts(plots.time_bars(trace))  # the calls view: one bar per call, as before
    assert "cell#3 (Linear)" in calls and "cell (Linear, ×4)" not in calls


def test_the_cli_bars_plot_follows_view_modules(tmp_path):
    from click.testing import CliRunner

    from shapetrace.cli import main

    model = tmp_path / "loop.py"
    model.write_text("import torch\nfrom torch import nn\n\n\nclass M(nn.Module):\n"
                     "    def __init__(self):\n        super().__init__()\n        self.cell = nn.Linear(8, 8)\n\n"
                     "    def forward(self, x):\n        for _ in range(4):\n            x = self.cell(x)\n"
                     "        return x\n\n\ndef build():\n    return M()\n")
    plot = tmp_path / "bars.svg"
    res = CliRunner().invoke(main, ["profile", f"{model}:build", "-i", "2,8", "--device", "cpu", "--warmup", "0",
                                    "--repeat", "1", "--view", "modules", "--plot", str(plot), "-o", str(tmp_path / "t.txt")])
    assert res.exit_code == 0, res.output
    assert "cell (Linear, ×4)" in _svg_texts(plot.read_text())


def _feature_counts(model: nn.Module, names: list[str]) -> dict[str, int]:
    """What torch says each layer's outputs carry as channels or features: a Conv's out_channels, a Linear's
    out_features, a LayerNorm's normalized size, a BatchNorm's num_features."""
    modules = dict(model.named_modules())
    counts = {}
    for name in names:
        m = modules[name]
        for attr in ("out_channels", "out_features", "num_features"):
            if isinstance(getattr(m, attr, None), int):
                counts[name] = getattr(m, attr)
        if isinstance(m, nn.LayerNorm):
            counts[name] = m.normalized_shape[-1]
    return counts


@pytest.mark.parametrize("arch", ["swin_t", "convnext_tiny", "maxvit_t"])
def test_shape_flow_reads_channels_last_outputs_with_their_channels_last(arch):
    torchvision = pytest.importorskip("torchvision")
    model = getattr(torchvision.models, arch)(weights=None).eval()
    trace = shapetrace.trace(model, torch.randn(1, 3, 224, 224), device="meta")
    plotted = {label: (channels, spatial) for label, channels, spatial in plots.flow_points(trace)}
    expected = _feature_counts(model, [c.module for c in trace.leaves()])
    read = {c.label: plotted[c.label][0] for c in trace.leaves() if c.module in expected}
    assert len(read) > 50 and read == {c.label: expected[c.module] for c in trace.leaves() if c.module in expected}
    # the stem halves the side (MaxViT) or patches it 4×4, each stage halves it: spatial sizes are their squares
    assert {s for _, s in plotted.values()} <= {224 * 224, 1, *((112 >> k) ** 2 for k in range(5))}
    svg = plots.shape_flow(trace)
    assert re.search(r"\d+ channels-last outputs \(N, H, W, C\) read as such", svg)


def test_a_patch_merging_output_whose_height_is_twice_its_channels_is_read_channels_last():
    """Swin's patch merging concatenates 2×2 neighbours: (N, H/2, W/2, 4C), normalised over the last dimension.
    Where H/2 is 4C's half, reading it channels-first would keep the previous point's channels and spatial size;
    the LayerNorm says it is channels-last."""
    swin = pytest.importorskip("torchvision.models.swin_transformer")

    torch.manual_seed(0)
    model = swin.SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[1, 1], num_heads=[1, 1], window_size=[2, 2],
                                 num_classes=10).eval()
    trace = shapetrace.trace(model, torch.randn(1, 3, 64, 64))  # 16×16 tokens of 8 channels, 4C = 32 = 2 × 16
    plotted = {label: channels for label, channels, _ in plots.flow_points(trace)}
    expected = _feature_counts(model, [c.module for c in trace.leaves()])
    merging = [c for c in trace.leaves() if c.module.startswith("features.2.")]
    assert [c.cls for c in merging] == ["LayerNorm", "Linear"]
    assert {c.module: plotted[c.label] for c in merging} == {c.module: expected[c.module] for c in merging}


class _NHWCFrames(nn.Module):
    """Game frames stored (N, H, W, C), permuted for a convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.to_nchw, self.conv, self.act = _Permute(0, 3, 1, 2), nn.Conv2d(4, 16, 8, 4), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(self.to_nchw(x)))


class _Permute(nn.Module):
    def __init__(self, *dims: int) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)


def test_a_channels_last_input_permuted_for_a_convolution_is_read_channels_last():
    trace = shapetrace.trace(_NHWCFrames(), torch.randn(1, 84, 84, 4))
    assert plots.flow_points(trace)[:3] == [("input", 4, 84 * 84), ("to_nchw", 4, 84 * 84), ("conv", 16, 20 * 20)]


class _LinearThenUpsample(nn.Module):
    """A Linear over channels-last pixels, permuted back and upsampled in the forward, then an activation:
    its (N, 64, 32, 32) output follows an (N, 16, 16, 64) one, and nothing says which dimension holds the 64."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.to_nhwc, self.lin = nn.Conv2d(3, 32, 3, padding=1), _Permute(0, 2, 3, 1), nn.Linear(32, 64)
        self.act, self.out = nn.GELU(), nn.Conv2d(64, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.lin(self.to_nhwc(self.conv(x))).permute(0, 3, 1, 2)
        return self.out(self.act(nn.functional.interpolate(x, scale_factor=2)))


def test_an_output_whose_layout_cannot_be_told_is_left_out_and_the_axis_says_so():
    trace = shapetrace.trace(_LinearThenUpsample(), torch.randn(1, 3, 16, 16))
    assert plots.flow_points(trace) == [("input", 3, 256), ("conv", 32, 256), ("to_nhwc", 32, 256),
                                        ("lin", 64, 256), ("out", 8, 1024)]
    assert "1 outputs left out, their layout (channels first or last) unknown" in plots.shape_flow(trace)


class _ConcatSkip(nn.Module):
    """A U-Net's merge: 64 channels of 64×64 concatenated with 128 more, then a ReLU. Read channels-last, the
    ReLU's output would keep the 64 channels (its width); read as before, it keeps the spatial size."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.act = nn.Conv2d(3, 64, 1), nn.Conv2d(3, 128, 1), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(torch.cat([self.a(x), self.b(x)], 1))


def test_a_concatenation_along_the_channels_is_read_as_the_layer_before_it():
    trace = shapetrace.trace(_ConcatSkip(), torch.randn(1, 3, 64, 64))
    assert plots.flow_points(trace)[-1] == ("act", 192, 64 * 64)


_WIDE = "编码器层" * 6  # 24 characters, each two display columns wide: 48 columns


def test_a_wide_character_name_in_the_flops_plot_is_cut_to_the_columns_its_label_has():
    """A label's width is counted in display columns, as a name shows: a CJK character takes two."""
    from collections import OrderedDict

    from shapetrace.renderers.units import display_width

    model = nn.Sequential(OrderedDict([(_WIDE, nn.Linear(8, 8))]))
    texts = _svg_texts(plots.time_vs_flops(_profiled_with_equal_times(model, torch.randn(2, 8))))
    label = next(t for t in texts if t.endswith("编码器层"))
    assert label.startswith("…") and display_width(label) <= 32


def test_a_wide_character_name_on_the_flow_charts_axis_is_cut_to_the_columns_its_label_has():
    from collections import OrderedDict

    from shapetrace.renderers.units import display_width

    model = nn.Sequential(OrderedDict([(_WIDE, nn.Conv2d(3, 4, 3)), ("act", nn.ReLU())]))
    chart = plots.shape_flow(shapetrace.trace(model, torch.randn(2, 3, 8, 8)), format="svg")
    labels = re.findall(r'transform="rotate\(-90 [^"]*\)">([^<]*)</text>', chart.split("</circle>")[-1])
    wide = next(t for t in labels if t.endswith("编码器层"))
    assert wide.startswith("…") and display_width(wide) <= 34
