"""A tensor on another device than the one the trace ran on is shown with its device, everywhere shapes are.

Shapes alone hide the cause of the commonest mismatch after shapes ("Expected all tensors to be on the same
device"): an accidental ``.cpu()``, part of a model on ``meta`` or on a second GPU. The device the trace ran on
(its inputs') is left unsaid, so a trace on one device reads as before. CPU-only models here: a part of the
model on ``meta`` stands for a second device.
"""

from __future__ import annotations

import csv
import html
import io
import re

import pytest
import torch
from conftest import requires_dot
from torch import nn

import shapetrace
from shapetrace.renderers.diagram import to_dot
from shapetrace.renderers.diff import diff_traces, render_trace_diff
from shapetrace.renderers.lines import build_view
from shapetrace.renderers.lines import render as render_lines
from shapetrace.renderers.table import render
from shapetrace.tracer.records import iter_tensors


class SplitModel(nn.Module):
    """``a`` on the CPU, ``b`` on meta; the forward moves the activation between them."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4, device="meta")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x).to("meta"))


class ToMeta(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to("meta")


class Pipeline(nn.Module):
    """``a``, then ``move`` (a layer that moves the activation to meta, or an ``Identity``), then ``b``."""

    def __init__(self, move: bool) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.move = ToMeta() if move else nn.Identity()
        self.b = nn.Linear(4, 4, device="meta" if move else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.move(self.a(x)))


class TwoDevicesOneModule(nn.Module):
    """One parameter-free module called on the CPU and then on meta."""

    def __init__(self) -> None:
        super().__init__()
        self.same = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.same(self.same(x).to("meta"))


def _row(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if line.split()[:1] == [name])


def test_table_names_the_device_of_tensors_off_the_trace_device() -> None:
    text = render(shapetrace.trace(SplitModel(), torch.randn(2, 4)), "text", width=None)
    assert _row(text, "b").split()[2:6] == ["(2,4)", "on", "meta", "(2,4)"]
    assert "on" not in _row(text, "a").split()


def test_table_note_says_which_device_the_shapes_leave_unsaid() -> None:
    text = render(shapetrace.trace(SplitModel(), torch.randn(2, 4)), "text", width=None)
    note = next(line for line in text.splitlines() if line.startswith("on meta:"))
    assert note == "on meta: these tensors are not on cpu, the device of the rest of the trace"


def test_trace_on_one_device_names_no_device() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(1, 3, 8, 8))
    for kwargs in ({}, {"device": "meta"}):
        text = render(shapetrace.trace(model, torch.randn(1, 3, 8, 8), **kwargs), "text", width=None)
        assert " on cpu" not in text and " on meta" not in text


def test_markdown_html_and_csv_name_the_device_too() -> None:
    t = shapetrace.trace(SplitModel(), torch.randn(2, 4))
    md_row = next(line for line in render(t, "md").splitlines() if "`b`" in line)
    assert "(2,4) on meta" in md_row
    assert "(2,4) on meta" in render(t, "html")
    rows = {r["layer"]: r for r in csv.DictReader(io.StringIO(render(t, "csv")))}
    assert (rows["b"]["input_shapes"], rows["a"]["output_shapes"]) == ("(2,4) on meta", "(2,4)")


def test_saved_trace_renders_the_same_devices(tmp_path) -> None:
    t = shapetrace.trace(SplitModel(), torch.randn(2, 4))
    path = tmp_path / "split.json"
    path.write_text(t.to_json())
    assert render(shapetrace.load(path), "text", width=None) == render(t, "text", width=None)


def test_module_view_keeps_calls_on_two_devices_apart() -> None:
    text = render(shapetrace.trace(TwoDevicesOneModule(), torch.randn(2, 4)), "text", view="modules", width=None)
    row = _row(text, "same")
    assert "(2,4) | (2,4) on meta" in row and "(2,4) ×2" not in row


def test_diagram_labels_the_node_whose_output_is_elsewhere() -> None:
    dot = to_dot(shapetrace.trace(SplitModel(), torch.randn(2, 4), ops=True))
    labels = {line.split()[0]: line for line in dot.splitlines() if "label=<" in line and "->" not in line}
    marked = [line for line in labels.values() if "on meta" in line]
    assert any(">b<" in line for line in marked)
    assert not any(">a<" in line for line in marked)


def _tooltips(t) -> dict[str, str]:
    """Each tooltip of the drawn SVG (a node's or an edge's ``<title>``, what a browser shows on hover) by its
    first line's start: ``b (Linear)``, ``a → b``."""
    svg = t.diagram().render("svg")
    titles = [html.unescape(title) for title in re.findall(r"<title>(.*?)</title>", svg, re.DOTALL)]
    return {title.splitlines()[0].partition(":")[0]: title for title in titles}


@requires_dot
def test_diagram_tooltips_name_the_device_where_the_label_and_table_do() -> None:
    tips = _tooltips(shapetrace.trace(SplitModel(), torch.randn(2, 4), ops=True))
    assert tips["b (Linear)"].splitlines()[1:3] == ["in[0]: (2, 4) float32 on meta", "out: (2, 4) float32 on meta"]
    assert tips["a → b"].startswith("a → b: (2, 4) float32 on meta (via to")  # what b receives, after the move
    assert tips["b → output"] == "b → output: (2, 4) float32 on meta"
    assert " on " not in tips["a (Linear)"] and " on " not in tips["input → a"]


@requires_dot
def test_diagram_tooltips_of_a_trace_on_one_device_name_no_device() -> None:
    for kwargs in ({}, {"device": "meta"}):  # the CPU's, and a shape-only trace's (devices are how it works)
        tips = _tooltips(shapetrace.trace(Pipeline(move=False), torch.randn(2, 4), ops=True, **kwargs))
        assert not [tip for tip in tips.values() if " on cpu" in tip or " on meta" in tip], tips


def test_diff_blames_the_layer_that_moved_the_tensor() -> None:
    x = torch.randn(2, 4)
    d = diff_traces(shapetrace.trace(Pipeline(move=False), x), shapetrace.trace(Pipeline(move=True), x))
    status = {r.label: r.status for r in d.rows}
    assert status["move"] == "changed"
    assert ("output", "(2,4) on cpu", "(2,4) on meta") in next(r for r in d.rows if r.label == "move").changes
    assert status["b"] == "carried"
    assert status["a"] == "same"


def test_diff_of_a_model_moving_its_activation_in_its_own_code() -> None:
    x = torch.randn(2, 4)

    class Plain(SplitModel):
        def __init__(self) -> None:
            super().__init__()
            self.b = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(self.a(x))

    d = diff_traces(shapetrace.trace(Plain(), x), shapetrace.trace(SplitModel(), x))
    root = d.rows[0]
    assert root.status == "changed"
    assert ("passes to b", "(2,4) on cpu", "(2,4) on meta") in root.changes


def test_diff_of_one_model_traced_on_two_devices_finds_no_difference() -> None:
    model, x = Pipeline(move=False), torch.randn(2, 4)
    d = diff_traces(shapetrace.trace(model, x), shapetrace.trace(model, x, device="meta"))
    assert not d.shown
    assert render_trace_diff(d, "text").count(" on ") == 0


def test_lines_view_marks_the_line_that_moves_the_data() -> None:
    text = render_lines(build_view(shapetrace.trace(SplitModel(), torch.randn(2, 4), lines=True)), "text")
    shown = [line.rpartition("│")[2].strip() for line in text.splitlines() if "│" in line]
    assert "to → (2,4) on meta" in shown
    assert "a Linear → (2,4)" in shown and "b Linear → (2,4)" in shown  # no move on their own lines


class SplitInTwo(nn.Module):
    """Two layers on the CPU, then the activation moved to meta and two layers there: a model split over two
    devices."""

    def __init__(self) -> None:
        super().__init__()
        self.a1, self.a2 = nn.Linear(4, 4), nn.Linear(4, 4)
        self.b1, self.b2 = nn.Linear(4, 4, device="meta"), nn.Linear(4, 2, device="meta")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a2(self.a1(x))
        h = h.to("meta")
        h = self.b1(h)
        return self.b2(h).relu()


def test_lines_view_of_a_model_split_over_two_devices_says_the_device_once_where_it_crosses() -> None:
    t = shapetrace.trace(SplitInTwo(), torch.randn(2, 4), lines=True)
    text = render_lines(build_view(t), "text")
    shown = [line.rpartition("│")[2].strip() for line in text.splitlines() if "│" in line]
    assert [s for s in shown if " on " in s] == ["to → (2,4) on meta"]  # the lines after it compute there
    assert "b2 Linear → (2,2)" in shown and "relu → (2,2)" in shown
    assert "(2,2) on meta" in _row(render(t, "text", width=None), "b2")  # the table marks every tensor off home


def test_shape_only_trace_names_no_device_although_integer_inputs_stay_on_the_cpu() -> None:
    model = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(12, 2))
    t = shapetrace.trace(model, torch.randint(0, 10, (2, 3)), device="meta", lines=True)
    assert {m.device for c in t.calls for _, m in iter_tensors([c.inputs, c.outputs])} == {"cpu", "meta"}
    shown = [render(t, "text", width=None), to_dot(t), render_lines(build_view(t), "text")]
    assert not any(" on cpu" in text or " on meta" in text for text in shown)


class WeightsLeftBehind(nn.Module):
    """``b``'s weights on meta while the data stays on the CPU: the forward fails in ``b``."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4, device="meta")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x))


def test_failure_names_the_device_of_the_failing_layers_weights() -> None:
    with pytest.raises(shapetrace.TraceFailed) as failed:
        shapetrace.trace(WeightsLeftBehind(), torch.randn(2, 4))
    message = str(failed.value)
    assert "input: x (2, 4) float32 on cpu" in message
    assert "weights: its own parameters or buffers are on meta, not on cpu" in message
    text = render(failed.value.trace, "text", width=None)
    assert "own parameters or buffers on meta, where none of its inputs is: b" in text


def test_failure_with_weights_beside_the_input_says_nothing_of_devices() -> None:
    with pytest.raises(shapetrace.TraceFailed) as failed:
        shapetrace.trace(nn.Sequential(nn.Linear(4, 4), nn.Linear(5, 2)), torch.randn(2, 4))
    assert "weights:" not in str(failed.value) and " on cpu" not in str(failed.value)
    assert not any(c.notes for c in failed.value.trace.calls)


class _Chunk(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return x.split(2, dim=1)


class _Cat(nn.Module):
    def forward(self, xs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return torch.cat(xs, 1)


def test_diff_of_one_device_traces_names_no_device_where_tensor_counts_differ() -> None:
    x = torch.randn(2, 4)
    d = diff_traces(*(shapetrace.trace(nn.Sequential(nn.Linear(4, n), _Chunk(), _Cat()), x) for n in (4, 6)))
    assert {r.label: r.status for r in d.rows}["1"] == "carried"  # the split has more pieces: its input did
    assert " on " not in render_trace_diff(d, "text")


def test_diff_of_a_model_that_moves_its_data_traced_on_the_cpu_and_shape_only_finds_no_difference() -> None:
    model, x = Pipeline(move=True), torch.randn(2, 4)
    d = diff_traces(shapetrace.trace(model, x), shapetrace.trace(model, x, device="meta"))
    assert not d.shown and all(r.status in ("same", "carried") for r in d.rows)


def test_tracer_block_over_a_model_whose_first_weights_are_on_meta_still_names_devices() -> None:
    class MetaFirst(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.b = nn.Linear(4, 4, device="meta")  # registered first: the model's device reads meta
            self.a = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(self.a(x).to("meta"))

    model = MetaFirst()
    with shapetrace.Tracer(model) as tracer:
        model(torch.randn(2, 4))
    assert _row(render(tracer.trace, "text", width=None), "b").split()[2:5] == ["(2,4)", "on", "meta"]


def test_modules_view_of_a_shape_only_trace_keeps_equal_values_together() -> None:
    class Decoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.head = nn.Linear(4, 10)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.head(self.emb(self.head(self.emb(ids)).argmax(-1)))  # real ids, then ids made on meta

    t = shapetrace.trace(Decoder(), torch.randint(0, 10, (2, 3)), device="meta")
    assert "(2,3) int64 ×2" in _row(render(t, "text", width=None, view="modules"), "emb")


def test_lines_view_marks_no_move_where_a_cpu_scalar_meets_data_elsewhere_and_puts_the_dtype_first() -> None:
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 4, device="meta")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.a(x).to("meta", torch.float16)
            y = torch.tensor(2.0) * h.float()
            return self.b(y)

    text = render_lines(build_view(shapetrace.trace(Scaled(), torch.randn(2, 4), lines=True)), "text")
    shown = [line.rpartition("│")[2].strip() for line in text.splitlines() if "│" in line]
    assert "to → (2,4) float16 on meta" in shown
    assert "mul → (2,4)" in shown
