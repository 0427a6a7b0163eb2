"""Shape tables: numbers against torchinfo, width, folding, views, formats that parse back, escaping,
failure, side inputs, profiling columns, determinism, and rendering without torch."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import STATEFUL_EXHIBITS, require
from torch import nn

import shapetrace
from shapetrace.renderers import table
from shapetrace.tracer.records import Trace


@pytest.fixture(scope="module")
def resnet18_trace() -> Trace:
    return shapetrace.trace(torchvision.models.resnet18().eval(), torch.randn(1, 3, 224, 224))


class ChunkedLSTM(nn.Module):
    """An LSTM called once per chunk, returning deeply nested tuples."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(100, 400)
        self.lstm = nn.LSTM(400, 400, batch_first=True)

    def forward(self, x):
        o = self.emb(x)
        return [self.lstm(ch) for ch in o.split(18, 1)], (o, (o, (o, {"deep": o})))


@pytest.fixture(scope="module")
def lstm_trace() -> Trace:
    return shapetrace.trace(ChunkedLSTM(), torch.randint(0, 100, (4, 72)))


def test_parameter_totals_agree_with_torchinfo_on_resnet18(resnet18_trace):
    torchinfo = require("torchinfo")
    stats = torchinfo.summary(torchvision.models.resnet18().eval(), input_size=(1, 3, 224, 224), verbose=0)
    tot = table.totals(resnet18_trace)
    assert tot.params == stats.total_params
    assert tot.trainable == stats.trainable_params
    assert f"{tot.param_bytes / 1e6:.2f}" == f"{stats.to_megabytes(stats.total_param_bytes):.2f}"
    assert f"{tot.input_bytes / 1e6:.2f}" == f"{stats.to_megabytes(stats.total_input):.2f}"
    text = table.render_text(resnet18_trace)
    assert "Total params:         11,689,512" in text
    assert "Params size (MB):     46.76 (float32)" in text


def test_activation_total_counts_every_calls_outputs_once_as_torch_hooks_see_them(resnet18_trace):
    """The oracle: torch's own forward hooks on every module, each output tensor counted once (an in-place
    ReLU's output is a new version of its input, and counts again, as the trace's tensor ids do)."""
    model = torchvision.models.resnet18().eval()
    outputs: dict[tuple[int, int], int] = {}
    kept = []

    def hook(module, args, out):
        kept.append(out)  # alive until the end, so no id is reused
        outputs[(id(out), out._version)] = out.nbytes

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model(torch.randn(1, 3, 224, 224))
    for h in handles:
        h.remove()
    tot = table.totals(resnet18_trace)
    assert tot.activation_bytes == sum(outputs.values())
    assert tot.activation_tensors == len(outputs)


def _distinct_outputs_by_hooks(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """The oracle for activation totals: bytes and count of the distinct (object, version) output tensors of
    every module call, as torch's own forward hooks see them, leaving out the input itself."""
    outputs: dict[tuple[int, int], int] = {}
    kept = []

    def hook(module, args, out):
        kept.append(out)  # alive until the end, so no id is reused
        if not (out is x and out._version == 0):
            outputs[(id(out), out._version)] = out.nbytes

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return sum(outputs.values()), len(outputs)


def test_an_input_passed_through_unchanged_counts_as_an_input_not_once_per_layer():
    x = torch.randn(256, 1024)  # 1 MiB
    model = nn.Sequential(nn.Identity(), nn.Dropout(0.5), nn.Identity()).eval()
    tot = table.totals(shapetrace.trace(model, x))
    assert (tot.activation_bytes, tot.activation_tensors) == (0, 0)
    assert (tot.input_bytes, tot.input_tensors) == (x.nbytes, 1)


@pytest.mark.parametrize("ops", [False, True])
def test_a_layers_output_passed_through_unchanged_counts_once(ops):
    x = torch.randn(4, 16)
    model = nn.Sequential(nn.Linear(16, 8), nn.Dropout(0.5), nn.Identity()).eval()
    tot = table.totals(shapetrace.trace(model, x, ops=ops))
    assert (tot.activation_bytes, tot.activation_tensors) == (4 * 8 * 4, 1)


def test_alexnet_activation_total_counts_each_distinct_tensor_as_torch_hooks_see_them():
    """AlexNet in eval: its Dropouts return their input unchanged, its in-place ReLUs change theirs."""
    model = torchvision.models.alexnet().eval()
    x = torch.randn(1, 3, 224, 224)
    tot = table.totals(shapetrace.trace(model, x))
    assert (tot.activation_bytes, tot.activation_tensors) == _distinct_outputs_by_hooks(model, x)


def test_a_pass_through_keeps_each_call_as_the_producer_in_the_edges():
    """The totals see one tensor; the data flow still runs through every layer it crossed."""
    model = nn.Sequential(nn.Identity(), nn.Identity()).eval()
    tr = shapetrace.trace(model, torch.randn(2, 3))
    chain = [(e.src, e.dst) for e in tr.edges]
    assert ("call:1", "call:2") in chain and ("call:2", "output:out") in chain
    assert tr.same_tensors == [(1, 0), (2, 0)]


class _Upsampler(nn.Sequential):
    def __init__(self) -> None:
        super().__init__(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Upsample(scale_factor=4))


def test_totals_of_a_small_model_match_hand_computed_numbers():
    """Input (2,3,48,48) float32: 2*3*48*48*4 = 55,296 bytes. Outputs: conv (2,8,48,48) 147,456, relu
    147,456, upsample (2,8,192,192) 2,359,296; the Sequential returns the upsample's tensor (counted once):
    2,654,208 bytes in 3 tensors. Params: 8*3*3*3 + 8 = 224, 896 bytes of float32."""
    tr = shapetrace.trace(_Upsampler(), torch.randn(2, 3, 48, 48))
    tot = table.totals(tr)
    assert (tot.input_bytes, tot.input_tensors) == (55_296, 1)
    assert (tot.activation_bytes, tot.activation_tensors) == (2_654_208, 3)
    assert (tot.params, tot.param_bytes, tot.param_bytes_by_dtype) == (224, 896, {"float32": 896})
    text = table.render_text(tr)
    assert "Activations (MB):     2.65 (every call's outputs: 3 tensors, each once)" in text
    assert "Input size (MB):      0.06 (1 tensor)" in text
    assert "Total size (MB):      2.71 (inputs + activations + params)" in text


def test_parameter_bytes_are_given_by_dtype():
    model = nn.Sequential(nn.Linear(1000, 1000), nn.Linear(1000, 500).to(torch.float16))
    model[1].forward = lambda x: x  # not run: only its parameters matter here
    tot = table.totals(shapetrace.trace(model, torch.randn(2, 1000)))
    assert tot.param_bytes_by_dtype == {"float16": 500_500 * 2, "float32": 1_001_000 * 4}
    text = table.render_text(shapetrace.trace(model, torch.randn(2, 1000)))
    assert "Params size (MB):     5.00: float16 1.00, float32 4.00" in text


def test_a_failed_forward_says_how_many_calls_returned_and_counts_only_their_outputs():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(5, 2), nn.ReLU())
    tr = shapetrace.trace(model, torch.randn(3, 4), strict=False)
    text = table.render_text(tr)
    assert text.splitlines()[0] == "Sequential: 4 calls started, 2 returned (the forward failed in 2)"
    assert "Activations (MB):     0.00 (outputs of the 2 calls that returned: 2 tensors, each once)" in text
    assert table.totals(tr).activation_bytes == 2 * 3 * 8 * 4


def test_text_fits_100_columns_on_resnet18(resnet18_trace):
    assert max(len(line) for line in table.render_text(resnet18_trace).splitlines()) <= 100


def test_text_without_a_width_limit_elides_nothing(lstm_trace):
    long_name = "a_rather_long_block_name_for_a_module_of_the_encoder"
    model = torch.nn.Sequential()
    model.add_module(long_name, torch.nn.Linear(4, 4))
    text = table.render_text(shapetrace.trace(model, torch.randn(2, 4)), width=None)
    assert long_name in text and "…" not in text
    wide = table.render_text(lstm_trace, width=None)
    assert "…" not in wide and "more" not in wide.split("Total params")[0]  # every output tensor, whole
    assert max(len(line) for line in wide.splitlines()) > 100


class AVeryLongButPerfectlyOrdinaryClassNameForABlock(nn.Module):
    def forward(self, x):
        return x * 2


def test_long_names_are_shortened_only_when_the_table_is_wider_than_the_width():
    name = "encoder_stage_with_a_long_descriptive_name_0"
    model = nn.Sequential()
    model.add_module(name, AVeryLongButPerfectlyOrdinaryClassNameForABlock())
    tr = shapetrace.trace(model, torch.randn(2))
    roomy = table.render_text(tr, width=300)
    assert name in roomy and AVeryLongButPerfectlyOrdinaryClassNameForABlock.__name__ in roomy
    assert "…" not in roomy
    tight = table.render_text(tr, width=100)
    assert "…" in tight and max(len(line) for line in tight.splitlines()) <= 100


class SharedEncDec(nn.Module):
    """One Linear registered twice, as ``enc.0`` and ``dec.0`` (weight sharing)."""

    def __init__(self) -> None:
        super().__init__()
        shared = nn.Linear(4, 4)
        self.enc = nn.Sequential(shared, nn.ReLU())
        self.dec = nn.Sequential(shared, nn.Tanh())

    def forward(self, x):
        return self.dec(self.enc(x))


def test_the_modules_view_gives_a_module_shared_under_two_names_one_row_with_both_calls():
    tr = shapetrace.trace(SharedEncDec(), torch.randn(1, 4))
    rows = table.table_rows(tr, view="modules")
    # called from enc and from dec: listed under their common caller, the root, after enc's own rows
    assert [r.name for r in rows] == ["(root)", "enc", "enc.1", "enc.0", "dec", "dec.1"]
    shared = rows[3]
    assert shared.calls == 2 and shared.aliases == ["dec.0"] and shared.depth == 1
    text = table.render_text(tr, view="modules")
    assert text.splitlines()[0] == f"SharedEncDec: 7 calls of {tr.model.modules} modules"
    assert tr.model.modules == 6


def test_the_calls_view_numbers_both_calls_of_a_module_shared_under_two_names():
    tr = shapetrace.trace(SharedEncDec(), torch.randn(1, 4))
    calls = {r.name: r.call for r in table.table_rows(tr)}
    assert calls["enc.0"] == "1/2" and calls["dec.0#1"] == "2/2"


def test_text_fits_100_columns_with_deeply_nested_outputs_and_shows_every_tensor(lstm_trace):
    text = table.render_text(lstm_trace)
    assert max(len(line) for line in text.splitlines()) <= 100
    body = text.split("Total params")[0]
    assert "more" not in body and "…" not in body
    # every tensor of every call is in its (wrapped) cell: the root alone returns 16
    from shapetrace.tracer.records import iter_tensors

    for shape in ((4, 18, 400), (4, 72, 400), (1, 4, 400)):
        expected = sum(1 for c in lstm_trace.calls for v in (c.inputs, c.outputs) for _, m in iter_tensors(v)
                       if m.shape == shape)
        assert body.count("(" + ",".join(map(str, shape)) + ")") == expected
    assert max(len(line) for line in table.render_text(lstm_trace, view="modules").splitlines()) <= 100


def test_elided_values_count_what_they_hide():
    from shapetrace.tracer.records import TensorMeta

    value = [TensorMeta((4, 72, 400), "float32", "cpu"), [TensorMeta((1, 4, 400), "float32", "cpu")] * 2]
    assert table.format_value(value) == "[(4,72,400), [(1,4,400), (1,4,400)]]"
    assert table.format_value(value, 20) == "(4,72,400) +2 more"


def test_every_call_has_a_row_and_repeat_calls_say_where_their_parameters_were_counted(lstm_trace):
    text = table.render_text(lstm_trace, width=None)
    row = next(line for line in text.splitlines() if line.lstrip().startswith("lstm#3"))
    assert "4/4" in row and row.endswith("1st call")
    assert "(recursive)" not in text
    assert ("\"1st call\" in params: a repeated call (name#k is call k+1: lstm#1 is call 2 of 4 and 2 more); its "
            "module's parameters are counted once, at its first call") in text


def test_depth_folds_deeper_calls_into_their_parent(resnet18_trace):
    text = table.render_text(resnet18_trace, depth=1)
    assert "layer1.0" not in text and "conv2" not in text
    assert "layer1: +14 deeper calls folded" in text
    rows = list(csv.DictReader(io.StringIO(table.render_csv(resnet18_trace, depth=1))))
    assert [r["layer"] for r in rows] == ["(root)", "conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3",
                                           "layer4", "avgpool", "fc"]
    assert rows[5]["output_shapes"] == "(1,64,56,56)" and rows[5]["folded_calls"] == "14"


def test_module_view_counts_calls(lstm_trace):
    rows = list(csv.DictReader(io.StringIO(table.render_csv(lstm_trace, view="modules"))))
    by = {r["layer"]: r for r in rows}
    assert by["lstm"]["calls"] == "4" and by["lstm"]["input_shapes"] == "(4,18,400) ×4"
    assert "×4" in table.render_text(lstm_trace, view="modules")


def test_markdown_parses_back(resnet18_trace):
    md = table.render_markdown(resnet18_trace)
    lines = [line for line in md.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["layer", "class", "call", "input shapes", "output shapes", "params", "trainable"]
    body = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert len(body) == len(resnet18_trace.calls)
    assert all(len(r) == len(header) for r in body)
    fc = next(r for r in body if r[0].endswith("`fc`"))  # md keeps every column: it has no width
    assert fc[1:] == ["Linear", "", "(1,512)", "(1,1000)", "513,000", "513,000"]
    assert "- Total params: 11,689,512" in md


def test_csv_parses_back_with_full_shapes(lstm_trace):
    rows = list(csv.DictReader(io.StringIO(table.render_csv(lstm_trace))))
    assert len(rows) == len(lstm_trace.calls)
    assert rows[0]["output_shapes"].count("(4,18,400)") == 4  # nothing elided in CSV
    assert rows[1]["input_shapes"] == "(4,72) int64"
    assert int(rows[2]["params"]) == lstm_trace.calls[2].params


def test_html_escapes_module_and_class_names():
    evil_cls = type('Evil<&"', (nn.Module,), {"forward": lambda self, x: x * 2})
    model = nn.Sequential()
    model.add_module('a<b&"c', evil_cls())
    tr = shapetrace.trace(model, torch.randn(2))
    out = table.render_html(tr)
    assert 'a<b&"c' not in out and 'Evil<&"' not in out
    assert "a&lt;b&amp;&quot;c" in out and "Evil&lt;&amp;&quot;" in out


def test_failed_call_is_marked_under_the_partial_table():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(5, 2), nn.ReLU())
    tr = shapetrace.trace(model, torch.randn(3, 4), strict=False)
    text = table.render_text(tr)
    assert "✗ 2" in text and "✗ RuntimeError" in text
    assert "(raised)" in text  # the root, left by the same exception
    assert "✗ the forward failed in 2 (Linear)" in text
    assert "not reached before the failure: 3 (ReLU, 0 params)" in text
    rows = list(csv.DictReader(io.StringIO(table.render_csv(tr))))
    assert rows[-1]["layer"] == "2" and rows[-1]["error"].startswith("RuntimeError")


def test_uncalled_modules_are_listed_with_their_children_folded():
    class Skips(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Linear(2, 2)
            self.unused = nn.Sequential(nn.Linear(2, 2), nn.ReLU())

        def forward(self, x):
            return self.used(x)

    text = table.render_text(shapetrace.trace(Skips(), torch.randn(1, 2)))
    assert "never called in the forward: unused (Sequential, 6 params, +2 inside)" in text


class _Head(nn.Module):
    def forward(self, x):
        return x + self.skip


class _Stored(nn.Module):
    """fastai-style: a block reads a tensor stored on it rather than passed in."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(4, 4)
        self.head = _Head()

    def forward(self, x):
        self.head.skip = self.enc(x)
        return self.head(x)


def test_side_inputs_are_shown():
    tr = shapetrace.trace(_Stored(), torch.randn(2, 4), ops=True)
    text = table.render_text(tr)
    head_line = next(line for line in text.splitlines() if line.strip().startswith("head"))
    assert "+side (2,4)" in head_line


def test_aliases_are_noted():
    lin = nn.Linear(2, 2)
    model = nn.Sequential(lin)
    model.add_module("tied", lin)
    text = table.render_text(shapetrace.trace(model, torch.randn(1, 2)))
    assert "also registered as tied" in text


def test_profiling_fields_add_columns(resnet18_trace):
    tr = Trace.from_json(resnet18_trace.to_json())
    for c in tr.calls:
        c.timing = {"total_ms": 2.0 if c.parent is None else 0.5, "self_ms": 0.25, "p10_ms": 0.2, "p90_ms": 0.6,
                    "kind": "cpu"}
        c.flops = 1_000_000_000
        c.memory = {"activation_bytes": 2 << 20, "peak_bytes": 3 << 20}
    text = table.render_text(tr)
    header = next(line for line in text.splitlines() if line.startswith("layer"))
    for col in ("ms", "%", "self ms", "FLOPs", "FLOP/s", "act mem"):
        assert col in header
    root = next(line for line in text.splitlines() if line.startswith("(root)"))
    assert "100.0" in root and "1.00G" in root and "500.00G" in root and "2.0 MiB" in root  # 1 GFLOP / 2 ms
    assert "Forward time (ms):" in text
    rows = list(csv.DictReader(io.StringIO(table.render_csv(tr))))
    assert rows[1]["%"] == "25.0" and rows[1]["self ms"] == "0.250"


def test_output_is_deterministic_and_the_same_from_json(resnet18_trace):
    again = Trace.from_json(resnet18_trace.to_json())
    for fmt in table.FORMATS:
        assert table.render(resnet18_trace, fmt) == table.render(resnet18_trace, fmt) == table.render(again, fmt)


def test_a_saved_trace_renders_without_torch(tmp_path, lstm_trace):
    path = tmp_path / "t.json"
    path.write_text(lstm_trace.to_json())
    expected = {fmt: table.render(lstm_trace, fmt) for fmt in table.FORMATS}
    (tmp_path / "expected.json").write_text(json.dumps(expected))
    code = f"""
import json, sys
sys.modules['torch'] = None
from shapetrace import load
from shapetrace.renderers import table
tr = load({str(path)!r})
expected = json.load(open({str(tmp_path / 'expected.json')!r}))
for fmt in table.FORMATS:
    assert table.render(tr, fmt) == expected[fmt], fmt
assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None and m.split('.')[0] == 'torch']
print('ok')
"""
    src = Path(__file__).resolve().parents[1] / "src"  # this checkout's sources, not an installed copy
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).parent, env={**os.environ, "PYTHONPATH": str(src)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_unknown_format_and_view_are_refused(resnet18_trace):
    with pytest.raises(ValueError, match="unknown table format"):
        table.render(resnet18_trace, "xlsx")
    with pytest.raises(ValueError, match="view"):
        table.render(resnet18_trace, "text", view="layers")


def test_a_trace_shows_as_its_html_table_in_jupyter(resnet18_trace):
    html = resnet18_trace._repr_html_()
    assert html == table.render_html(resnet18_trace)
    assert "<table" in html and "layer4" in html


def test_a_row_that_folds_deeper_calls_keeps_its_own_self_time_in_every_format(resnet18_trace):
    """``self ms`` is the time outside the row's child modules, folded or shown: what the stderr ranking says."""
    tr = Trace.from_json(resnet18_trace.to_json())
    for c in tr.calls:
        c.timing = {"total_ms": 2.5, "self_ms": 0.125, "kind": "cpu"}
    rows = list(csv.DictReader(io.StringIO(table.render_csv(tr, depth=1))))
    layer1 = next(r for r in rows if r["layer"] == "layer1")
    assert (layer1["ms"], layer1["self ms"]) == ("2.500", "0.125")  # its ms holds the folded blocks' time
    text = table.render_text(tr, depth=1, width=None)
    layer1_line = next(line for line in text.splitlines() if line.startswith("  layer1 "))
    assert "0.125" in layer1_line and "2.500" in layer1_line
    md_row = next(line for line in table.render_markdown(tr, depth=1).splitlines() if "`layer1`" in line)
    assert md_row.endswith("| 2.500 | 100.0 | 0.125 |")
    html = table.render_html(tr, depth=1)
    html_row = html[html.index("<code>layer1</code>"):]
    assert '<td class="num">0.125</td></tr>' in html_row[:html_row.index("</tr>") + 5]


# ---- terminal behaviour ----------------------------------------------------------------------------------
def test_str_of_a_trace_is_its_table_and_repr_is_one_line(resnet18_trace):
    assert str(resnet18_trace).startswith("ResNet: 76 calls\n") and "layer4" in str(resnet18_trace)
    assert repr(resnet18_trace) == "<Trace of ResNet: 76 calls, 11,689,512 params, shapetrace.trace/2>"
    failed = shapetrace.trace(nn.Sequential(nn.Linear(4, 8), nn.Linear(5, 2)), torch.randn(3, 4), strict=False)
    assert repr(failed) == "<Trace of Sequential: 3 calls, failed in 1, 52 params, shapetrace.trace/2>"


def test_a_newline_in_a_module_name_does_not_break_a_row():
    model = nn.Sequential()
    model.add_module("evil\nname", nn.Linear(2, 3))
    model.add_module("tab\there", nn.ReLU())
    tr = shapetrace.trace(model, torch.randn(1, 2))
    for text in (table.render_text(tr), table.render_text(tr, width=None), table.render_markdown(tr)):
        assert "evil\\nname" in text and "tab\\there" in text and "evil\nname" not in text
    rows = [line for line in table.render_text(tr).splitlines() if "Linear" in line or "ReLU" in line]
    assert len(rows) == 2
    assert len(table.render_markdown(tr).splitlines()) == len(table.render_markdown(
        shapetrace.trace(nn.Sequential(nn.Linear(2, 3), nn.ReLU()), torch.randn(1, 2))).splitlines())


def test_colour_marks_the_failing_row_folded_rows_and_shape_changes_only_when_asked():
    model = nn.Sequential(nn.Sequential(nn.Linear(4, 8), nn.ReLU()), nn.Linear(5, 2))
    tr = shapetrace.trace(model, torch.randn(3, 4), strict=False)
    plain = table.render_text(tr, depth=1)
    assert "\x1b[" not in plain
    coloured = table.render_text(tr, depth=1, color=True)
    failing = next(line for line in coloured.splitlines() if "✗ 1" in line)
    assert failing.startswith("\x1b[31m")  # red
    folded = next(line for line in coloured.splitlines() if line.lstrip("\x1b[0-9m ").startswith("0 ")
                  or "\x1b[36m  0" in line)
    assert "\x1b[36m" in folded  # the row folding its two children: cyan
    assert "\x1b[1m(3,8)" in folded  # its output shape differs from its input: bold
    strip = __import__("re").compile(r"\x1b\[[0-9;]*m")
    assert strip.sub("", coloured) == plain  # colour adds escapes only, never width


def test_the_cli_colours_only_a_terminal_without_no_color(monkeypatch):
    from shapetrace.cli_options import terminal_colour

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    assert terminal_colour(None) is True
    assert terminal_colour("out.txt") is False  # a file never gets escapes
    monkeypatch.setenv("NO_COLOR", "1")
    assert terminal_colour(None) is False
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False, raising=False)
    assert terminal_colour(None) is False  # piped


EXHIBITS_80 = ("pet-recognizer-resnet34", "camvid-unet", "awd-lstm-classifier")
TABLES_DOC = Path(__file__).resolve().parents[1] / "docs" / "tables.md"


@pytest.fixture(scope="module")
def exhibit_traces(shared_exhibits) -> dict[str, Trace]:
    """Each exhibit traced on its inputs as ``shapetrace trace EXHIBIT`` traces it: with its functional ops,
    so the tables show the side inputs a layer reads through one (read-only; made once per module)."""
    from shapetrace.gallery.exhibits import get_exhibit

    out = {}
    for name in EXHIBITS_80:
        exhibit = get_exhibit(name)
        args, kwargs = exhibit.inputs()
        model = exhibit.build() if name in STATEFUL_EXHIBITS else shared_exhibits.model(name)
        out[name] = shapetrace.trace(model, *args, ops=True, **kwargs)
    return out


def test_the_three_exhibits_show_every_shape_whole_at_80_columns(exhibit_traces):
    """At 80 columns every tensor of every call is in the table, whole (cells wrap; nothing is cut)."""
    from shapetrace.renderers.units import tensor_text
    from shapetrace.tracer.records import iter_tensors

    for name, tr in exhibit_traces.items():
        text = table.render_text(tr, width=80)
        assert max(len(line) for line in text.splitlines()) <= 80, name
        body = text.split("\nTotal params")[0]
        for c in tr.calls:
            for value in (c.inputs, c.outputs):
                for _, m in iter_tensors(value):
                    assert tensor_text(m) in body, (name, c.label, tensor_text(m))


def _tables_doc(traces: dict[str, Trace]) -> str:
    parts = ["# The shape table at 80 columns\n",
             "What `shapetrace trace EXHIBIT --width 80` prints for three exhibits: every shape whole (long cells",
             "wrap onto continuation lines), `trainable` left out where it equals `params`, a repeated call marked",
             "`1st call` where its parameters were counted. Generated by `tests/test_table.py` (it fails when this",
             "page is out of date; `pytest tests/test_table.py --update-golden` rewrites it).\n"]
    for name, tr in traces.items():
        parts += [f"## {name}\n", "```text", table.render_text(tr, width=80).rstrip("\n"), "```\n"]
    return "\n".join(parts + TOTALS_SECTION)


# What the footer's totals count and leave out: prose of docs/tables.md, kept here since the test writes the page.
TOTALS_SECTION = [
    "## What the totals count\n",
    "The sizes below the table are in MB, 10^6 bytes, as torchinfo writes them; the `act mem` and `peak mem`",
    "columns of a profile are in binary units (KiB, MiB: 2^10, 2^20 bytes), so a 1 MiB output shows as",
    "`1.0 MiB` in its row and `1.05` in `Activations (MB)`.\n",
    "`Activations (MB)` adds the output tensors of every call that returned, each distinct tensor once. A",
    "container whose output is its last child's counts it once; a tensor changed in place (`r += x`, an",
    "in-place ReLU) counts again, as a new value, whether or not the trace recorded functional ops (`trace()`,",
    "`trace(ops=True)` and `profile()` give the same total). It counts tensors, not storages: an output that is",
    "a view of another (`nn.Flatten`, `permute`, `reshape` without a copy) counts its bytes again, though it",
    "shares the memory, so the total can be above what the forward allocates. A nested-tensor output (the",
    "`nn.TransformerEncoder` fast path with a padding mask) has no plain shape and counts 0 B, in its row's",
    "`act mem` and in the total.\n",
    "`Total params`, `Params size (MB)` and FLOPs count `nn.Parameter`s and what `FlopCounterMode` sees. A",
    "dynamically quantized model (`torch.ao.quantization.quantize_dynamic`) keeps its int8 weights packed",
    "inside `LinearPackedParams`, which are not parameters, and runs quantized kernels that the counter",
    "counts as 0: such a model shows 0 params, 0.00 MB of parameters and 0 FLOPs for its quantized layers",
    "(torchinfo also says 0 params). Its float parameters, if any are left, count as usual.\n",
    "## Names cut to fit, and modules not called\n",
    "A table narrower than its names cuts them in the middle (`layer1.…conv2`), but never so that two different",
    "layers read the same: where that would happen (`input_layernorm` and `post_attention_layernorm` both",
    "`…ernorm`) those names are cut another way that tells them apart (`inp…_layernorm`, `pos…_layernorm`).",
    "When the inputs move to a line of their own, the room they leave goes to the names first: a wide output",
    "cell wraps rather than cutting them: a struct's text (a Hugging Face model's output) wraps after the struct's",
    "`(`, after its commas and, only where a field does not fit a line, after the field's `=`, its type name",
    "between words where even that is too wide, never inside a shape or a field's name. A name cut short keeps its",
    "indentation and mark, so a row never loses its place in the tree. The HTML table (Jupyter, `--format html`) has no width to fit, yet cuts a",
    "name or class longer than 60 columns the same way, the whole name in the cell's tooltip, so one generated name",
    "cannot push the shape columns off the page.\n",
    "Modules the forward did not call are listed as `never called in the forward` when the forward ran through",
    "their nearest called parent without them (`nn.MultiheadAttention` never calls its `out_proj`), even where a",
    "later layer failed; only those under a call the failure cut short are `not reached before the failure`.\n",
]


def test_docs_tables_page_is_current(request, exhibit_traces):
    expected = _tables_doc(exhibit_traces)
    if request.config.getoption("--update-golden"):
        TABLES_DOC.write_text(expected, encoding="utf-8")
    assert TABLES_DOC.read_text(encoding="utf-8") == expected, \
        "docs/tables.md is out of date: pytest tests/test_table.py --update-golden rewrites it"


def test_ipython_shows_the_table_where_repr_stays_one_line(resnet18_trace):
    from IPython.lib.pretty import pretty

    assert pretty(resnet18_trace) == str(resnet18_trace)
    assert "\n" not in repr(resnet18_trace)


def test_markdown_shows_names_and_messages_as_text_when_a_markdown_renderer_reads_it():
    """Read by a CommonMark renderer with GitHub's tables (markdown-it, the parser MyST uses): a module name
    with a backtick, a pipe and angle brackets stays one code span in its cell, and an error message that
    looks like HTML is shown, not run."""
    markdown_it = pytest.importorskip("markdown_it")
    from torch import nn

    name = "a`b|c<d>"

    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.d = nn.ModuleDict({name: nn.Linear(2, 2)})

        def forward(self, x):
            self.d[name](x)
            raise ValueError('<img src=x onerror="alert(1)"> & more')

    trace = shapetrace.trace(Odd(), torch.randn(1, 2), strict=False)
    from shapetrace.renderers.table import render_markdown

    page = markdown_it.MarkdownIt("commonmark").enable("table").render(render_markdown(trace))
    assert "<img" not in page and "&lt;img src=x" in page
    assert "<code>d.a`b|c&lt;d&gt;</code>" in page
    assert page.count("<tr>") == 1 + len(trace.calls)  # the header and one row per call: no cell split apart


def test_markdown_leaves_out_the_call_column_when_no_module_is_called_twice_as_text_and_html_do():
    tr = shapetrace.trace(nn.Sequential(nn.Linear(2, 3), nn.ReLU()), torch.randn(1, 2))
    md = table.render_markdown(tr)
    header = [c.strip() for c in md.splitlines()[0].strip("|").split("|")]
    assert header == ["layer", "class", "input shapes", "output shapes", "params", "trainable"]
    assert md.splitlines()[1] == "|---|---|---|---|---:|---:|"
    assert "call" not in table.render_text(tr).splitlines()[2] and "<th>call</th>" not in table.render_html(tr)


def test_markdown_keeps_the_call_column_when_a_module_is_called_twice():
    layer = nn.Linear(2, 2)
    md = table.render_markdown(shapetrace.trace(nn.Sequential(layer, layer), torch.randn(1, 2)))
    header = [c.strip() for c in md.splitlines()[0].strip("|").split("|")]
    assert header[:3] == ["layer", "class", "call"] and "| 2/2 |" in md


def test_csv_with_a_carriage_return_in_a_name_parses_back_to_the_same_rows():
    model = nn.Sequential()
    model.add_module("carriage\rreturn", nn.Linear(2, 2))
    text = table.render(shapetrace.trace(model, torch.randn(1, 2)), "csv")
    rows = list(csv.reader(io.StringIO(text)))
    assert [r[0] for r in rows] == ["layer", "(root)", "carriage\rreturn"]
    assert len({len(r) for r in rows}) == 1


class WideNames(torch.nn.Module):
    """Module names a terminal draws two columns wide (CJK, full-width, emoji) or with combining marks."""

    def __init__(self) -> None:
        super().__init__()
        self.add_module("卷积层", torch.nn.Conv2d(3, 8, 3))
        self.add_module("ｆｕｌｌ", torch.nn.ReLU())
        self.add_module("🔥emoji🔥", torch.nn.Flatten())
        self.add_module("e\u0301\u0301combining", torch.nn.Identity())
        self.add_module("日本語の非常に長いモジュール名前です", torch.nn.Linear(8 * 6 * 6, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.children():
            x = m(x)
        return x


@pytest.mark.parametrize("width", [80, 60])
def test_wide_and_combining_characters_keep_the_text_table_aligned_and_within_its_width(width):
    wcwidth = pytest.importorskip("wcwidth")  # the terminal's own measure, an oracle independent of ours
    text = str(shapetrace.trace(WideNames(), torch.randn(1, 3, 8, 8)).table(width=width))
    lines = text.splitlines()
    assert all(wcwidth.wcswidth(line) <= width for line in lines), [ln for ln in lines if wcwidth.wcswidth(ln) > width]
    rows = [ln for ln in lines if ("Conv2d" in ln or "ReLU" in ln or "Flatten" in ln or "Identity" in ln
                                   or "Linear" in ln)]
    columns = {wcwidth.wcswidth(ln[:ln.index(cls)]) for ln in rows
               for cls in ("Conv2d", "ReLU", "Flatten", "Identity", "Linear") if cls in ln}
    assert len(rows) == 5 and len(columns) == 1  # every class name starts in the same column


class RaisesWithMarkdown(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError("bad *x* in __init__, see [docs] \\ `y`")


def test_markdown_shows_an_error_message_as_it_is_not_as_emphasis_or_code():
    markdown_it = pytest.importorskip("markdown_it")  # a CommonMark renderer, as docs sites use
    trace = shapetrace.trace(RaisesWithMarkdown(), torch.randn(2), strict=False)
    page = markdown_it.MarkdownIt("commonmark").enable("table").render(table.render_markdown(trace))
    assert "<em>" not in page and "<strong>" not in page and "<code>y</code>" not in page
    assert "bad *x* in __init__, see [docs] \\ `y`" in page


def test_a_newline_and_a_backslash_n_in_names_read_differently_in_text_and_markdown():
    from shapetrace.renderers.units import literal

    assert literal("a\nb") == "a\\nb" and literal("a\\nb") == "a\\\\nb"  # the escape, and a real backslash
    assert literal("back\\slash") == "back\\slash" and literal("\\N\\G") == "\\N\\G"  # nothing to mistake
    assert literal("x\\\\y") == "x\\\\\\\\y" and literal("plain name") == "plain name"
    model = nn.Module()
    model.d = nn.ModuleDict({"a\nb": nn.Linear(3, 3), "a\\nb": nn.Linear(3, 3)})
    model.forward = lambda x: model.d["a\\nb"](model.d["a\nb"](x))
    tr = shapetrace.trace(model, torch.randn(2, 3))
    text = table.render_text(tr)
    assert "d.a\\nb " in text and "d.a\\\\nb " in text
    md = table.render_markdown(tr)
    assert "`d.a\\nb`" in md and "`d.a\\\\nb`" in md


def test_an_absurd_timing_keeps_the_table_within_its_width():
    from shapetrace.renderers.units import format_ms, format_percent

    assert format_ms(1e300) == "1.000e+300" and format_ms(12.3456) == "12.346"
    assert format_percent(4.7e301) == "4.70e+301" and format_percent(42.5) == "42.5"
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    tr = shapetrace.trace(model, torch.randn(1, 2))
    for i, c in enumerate(tr.calls):
        c.timing = {"self_ms": 1e300 if i == 1 else 0.5, "total_ms": 1e300 if i == 1 else 1.0}
    tr = shapetrace.load(tr.to_json())
    text = table.render_text(tr, width=100)
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "1.000e+300" in text and "1.00e+302" in text  # ms and % of the 1 ms forward, compact


class SleepyNest(nn.Module):
    """Nested Sequentials and a module called twice: a deep, narrow profile table."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.ReLU()
        self.inner = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Sequential(nn.Linear(4, 4)))

    def forward(self, x):
        return self.inner(self.a(self.a(x)))


def _frozen_resnet18() -> nn.Module:
    model = torchvision.models.resnet18().eval()
    for p in model.layer1.parameters():
        p.requires_grad_(False)  # trainable differs from params: one more column
    return model


@pytest.fixture(scope="module")
def narrow_table_traces() -> dict[str, Trace]:
    image, seq = torch.randn(1, 3, 32, 32), torch.randn(3, 5, 10)
    lstm = nn.LSTM(10, 20, 2, batch_first=True)
    return {
        "resnet18 trace": shapetrace.trace(_frozen_resnet18(), image),
        "resnet18 profile": shapetrace.profile(torchvision.models.resnet18().eval(), image, repeat=1, warmup=0),
        "frozen resnet18 profile": shapetrace.profile(_frozen_resnet18(), image, repeat=1, warmup=0),
        "nest profile": shapetrace.profile(SleepyNest(), torch.randn(2, 4), repeat=1, warmup=0),
        "lstm profile": shapetrace.profile(lstm, seq, repeat=1, warmup=0),
        "lstm trace": shapetrace.trace(lstm, seq),
    }


@pytest.mark.parametrize("width", [40, 45, 50, 60, 80])
def test_every_text_table_fits_its_width_whatever_the_model_view_and_depth(narrow_table_traces, width):
    for name, tr in narrow_table_traces.items():
        for view in ("calls", "modules"):
            for depth in (None, 1, 2):
                lines = table.render_text(tr, width=width, view=view, depth=depth).splitlines()
                too_wide = [ln for ln in lines if len(ln) > width]
                assert not too_wide, (name, view, depth, too_wide)


def _with_times_of_one_width(profiled: Trace) -> Trace:
    """A copy of a profile's trace whose every time reads 123.456 ms: which columns fit a width then depends on
    the layout alone, not on how fast this machine ran the forward."""
    copy = Trace.from_json(profiled.to_json())
    for c in copy.calls:
        if c.timing is not None:
            c.timing = dataclasses.replace(c.timing, total_ms=123.456, self_ms=123.456, median_ms=123.456,
                                           p10_ms=123.456, p90_ms=123.456, cpu_ms=123.456)
    return copy


def test_a_narrow_profile_table_leaves_out_flops_then_self_ms_and_says_so(narrow_table_traces):
    profiled = _with_times_of_one_width(narrow_table_traces["resnet18 profile"])
    text = table.render_text(profiled, width=40)
    header = text.splitlines()[2].split()
    assert "ms" in header and "FLOPs" not in header and "self" not in header
    note = " ".join(text.split("left out to fit 40 columns:")[1].split())
    assert note.startswith("input shapes, params, call, FLOP/s, act mem, %, FLOPs, self ms")
    roomy = table.render_text(profiled, width=60).splitlines()[2].split()
    assert {"ms", "self", "FLOPs"} <= set(roomy)  # only as far as needed


def test_a_narrow_table_leaves_out_trainable_before_squeezing_its_shapes_past_the_width(narrow_table_traces):
    text = table.render_text(narrow_table_traces["resnet18 trace"], width=40, depth=1)
    assert "trainable" not in text.splitlines()[2] and "Trainable params:     11,541,544" in text
    assert "left out to fit 40 columns: trainable" in text


MEGA = 1_000_000


class FailsWithAMegabyte(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError("e" * MEGA)


def test_a_megabyte_layer_name_and_error_render_as_text_within_the_width():
    model = nn.Sequential()
    model.add_module("lin", nn.Linear(3, 3))
    model.add_module("n" * MEGA, FailsWithAMegabyte())
    t = shapetrace.trace(model, torch.randn(2, 3), strict=False)
    text = table.render_text(t, width=100)
    assert all(len(line) <= 100 for line in text.splitlines())
    assert "nnnn" in text and len(text) < MEGA // 10  # cut, with a mark, not wrapped whole
    assert " characters)" in text  # a note cut says how much it left out


def test_narrowing_a_name_column_at_once_matches_taking_one_column_at_a_time_from_the_widest():
    assert table.level_cuts({"layer": 30, "class": 10}, 15) == {"layer": 15, "class": 0}
    assert table.level_cuts({"layer": 30, "class": 10}, 25) == {"layer": 22, "class": 3}  # level, class first
    assert table.level_cuts({"layer": 5, "class": 4}, 100) == {"layer": 5, "class": 4}  # no more than the slack
