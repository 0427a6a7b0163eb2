"""``shapetrace diff A B``: two models (or saved traces) compared call by call."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from click.testing import CliRunner
from conftest import requires_dot
from IPython.lib.pretty import pretty
from torch import nn

import shapetrace
from shapetrace.cli import main
from shapetrace.gallery.vision import create_head
from shapetrace.renderers.diff import diagram_options, diff_traces, render_trace_diff
from shapetrace.tracer.api import trace


@pytest.fixture(scope="module")
def heads():
    x = torch.rand(2, 512, 7, 7, generator=torch.Generator().manual_seed(0))
    concat = trace(create_head(512, 37).eval(), x)
    avg = trace(create_head(512, 37, concat_pool=False).eval(), x)
    return diff_traces(concat, avg, "concat", "avg")


def test_concat_vs_avg_head_names_exactly_the_changed_layers(heads):
    shown = {r.label: r for r in heads.shown}
    assert set(shown) == {"0", "2", "4"}  # the pooling, the first BatchNorm1d and the first Linear
    pool, bn, lin = shown["0"], shown["2"], shown["4"]
    assert ("class", "AdaptiveConcatPool2d", "AdaptiveAvgPool2d") in pool.changes
    assert ("output", "(2,1024,1,1)", "(2,512,1,1)") in pool.changes
    assert bn.cls == "BatchNorm1d" and ("params", "2,048", "1,024") in bn.changes
    assert lin.cls == "Linear" and ("params", "524,288", "262,144") in lin.changes
    # concat pooling's own max and average pools fold into its row instead of showing as removed layers
    assert pool.inside_a == ["mp AdaptiveMaxPool2d", "ap AdaptiveAvgPool2d"] and not pool.inside_b


def test_concat_vs_avg_head_gives_the_parameter_difference_from_fastais_numbers(heads):
    # facts: create_head(512, 37) has 546,304 parameters; with concat_pool=False, 283,136
    assert (heads.a.model.params, heads.b.model.params) == (546_304, 283_136)
    text = render_trace_diff(heads, "text")
    assert "parameters: 546,304 → 283,136 (−263,168)" in text
    # concat pooling's own two pools, folded into its changed row, are calls only A has
    assert "3 changed, 2 only in A, 0 only in B" in text


def test_layers_whose_shapes_change_only_through_their_input_are_not_called_changed(heads):
    assert {(r.label, r.cls) for r in heads.carried} == {("1", "Flatten"), ("3", "Dropout")}
    assert "shapes carried through 2 unchanged layers (their input changed): 1 Flatten, 3 Dropout" in \
        render_trace_diff(heads, "text")


def test_calls_only_one_side_has_are_listed_with_their_insides_folded():
    x = torch.randn(1, 3, 32, 32)
    d = diff_traces(trace(torchvision.models.resnet18(weights=None).eval(), x),
                    trace(torchvision.models.resnet34(weights=None).eval(), x))
    only_b = [r.label for r in d.shown if r.status == "only_b"]
    assert only_b == ["layer1.2", "layer2.2", "layer2.3", "layer3.2", "layer3.3", "layer3.4", "layer3.5", "layer4.2"]
    assert not [r for r in d.shown if r.status != "only_b"]
    first = d.shown[0]
    assert first.inside_b[:2] == ["conv1 Conv2d", "bn1 BatchNorm2d"]


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Conv2d(3, 4, 3)
        self.dec = nn.ConvTranspose2d(4, 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(self.enc(x))


def test_two_models_with_nothing_in_common_say_so_instead_of_listing_everything():
    x = torch.randn(1, 3, 8, 8)
    d = diff_traces(trace(nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU()).eval(), x), trace(Encoder().eval(), x))
    assert not d.common
    text = render_trace_diff(d, "text")
    assert "have nothing in common" in text and "enc" not in text.split("nothing in common")[1]


def test_identical_models_have_no_differences():
    x = torch.randn(2, 4)
    d = diff_traces(trace(nn.Linear(4, 2), x), trace(nn.Linear(4, 2), x))
    assert d.shown == [] and "No differences" in render_trace_diff(d, "text")


def test_the_same_model_on_two_inputs_says_no_layer_changed_rather_than_the_same_shapes():
    model = nn.LSTM(4, 3, batch_first=True)
    d = diff_traces(trace(model, torch.randn(2, 5, 4)), trace(model, torch.randn(3, 9, 4)))
    for fmt in ("text", "md"):
        text = render_trace_diff(d, fmt, width=None)  # unwrapped: the sentence on one line
        assert "No layer changed" in text and "differ only because the input did" in text
        assert "same calls, classes, parameters and shapes" not in text


class _Splits(nn.Module):
    """Splits its input into six outputs; only the last one's width depends on ``last``."""

    def __init__(self, last: int) -> None:
        super().__init__()
        self.split = _SixParts(last)

    def forward(self, x):
        return self.split(x)[-1]


class _SixParts(nn.Module):
    def __init__(self, last: int) -> None:
        super().__init__()
        self.last = last

    def forward(self, x):
        return (*x.split(1, dim=1)[:5], x[:, :1].expand(-1, self.last))


def test_a_difference_past_the_fourth_output_tensor_is_a_change():
    x = torch.randn(2, 8)
    d = diff_traces(trace(_Splits(4), x), trace(_Splits(8), x))
    split = {r.label: r for r in d.shown}["split"]
    assert split.status == "changed" and ("output", "…, (2,4)", "…, (2,8)") in split.changes
    assert "No differences" not in render_trace_diff(d, "text")


def test_the_same_model_in_two_dtypes_carries_the_dtype_rather_than_changing_every_layer():
    model, x = nn.Sequential(nn.Linear(8, 4), nn.ReLU()), torch.randn(2, 8)
    d = diff_traces(trace(model, x), trace(model.to(torch.bfloat16), x.to(torch.bfloat16)))
    assert d.shown == [] and [r.label for r in d.carried] == ["(root)", "0", "1"]
    relu = {r.label: r for r in d.carried}["1"]
    assert ("output", "(2,4) float32", "(2,4) bfloat16") in relu.changes


def test_where_both_traces_were_profiled_the_diff_shows_time():
    x = torch.randn(2, 512, 7, 7)
    a = shapetrace.profile(create_head(512, 37).eval(), x, device="cpu", warmup=1, repeat=2, memory=False)
    b = shapetrace.profile(create_head(512, 37, concat_pool=False).eval(), x, device="cpu", warmup=1, repeat=2,
                           memory=False)
    d = diff_traces(a, b)
    text = render_trace_diff(d, "text")
    assert "time (whole forward):" in text
    assert any(what == "time" for what, _, _ in json_rows(d)["0"])


def json_rows(d) -> dict:
    data = json.loads(render_trace_diff(d, "json"))
    return {r["layer"]: [(c["what"], c["a"], c["b"]) for c in r["changes"]] for r in data["rows"]}


def test_json_markdown_and_html_carry_the_same_rows(heads):
    data = json.loads(render_trace_diff(heads, "json"))
    status = {r["layer"]: r["status"] for r in data["rows"]}
    assert status == {"0": "changed", "1": "carried", "2": "changed", "3": "carried", "4": "changed"}
    assert data["params_delta"] == -263_168 and data["common"] is True
    md = render_trace_diff(heads, "md")
    assert "| 2 | params | 2,048 | 1,024 |" in md
    page = render_trace_diff(heads, "html")
    assert '<tr class="changed"><td>4</td><td class="what">params</td>' in page


@requires_dot
def test_the_diagram_of_b_marks_the_changed_layers(heads):
    from shapetrace.renderers import diagram

    options = diagram_options(heads)
    # concat pooling's own pools, inside the layer whose class changed, are listed as removed
    assert options == {"diff": {"changed": ["0", "2", "4"], "added": [],
                                "removed": ["0.mp AdaptiveMaxPool2d", "0.ap AdaptiveAvgPool2d"],
                                "changed_calls": [1, 3, 5], "added_calls": []}}
    dot = diagram.to_dot(heads.b, overlays=["diff"], options=options)
    assert "changed in B (3)" in dot and dot.count("#ffd8a8") == 4  # three nodes and the legend


def test_cli_diff_of_two_exhibits_and_of_a_saved_trace(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["diff", "create-head-default", "create-head-avg-pool"])
    assert result.exit_code == 0, result.output
    assert "AdaptiveConcatPool2d" in result.output and "(−263,168)" in result.output
    saved = tmp_path / "a.json"
    saved.write_text(trace(create_head(512, 37).eval(), torch.rand(2, 512, 7, 7)).to_json())
    mixed = runner.invoke(main, ["diff", str(saved), "create-head-avg-pool", "-f", "json"])
    assert mixed.exit_code == 0, mixed.output
    assert json.loads(mixed.output)["params_delta"] == -263_168


def test_cli_diff_against_another_tool_still_works_and_refuses_both_modes_at_once():
    runner = CliRunner()
    result = runner.invoke(main, ["diff", "create-head-default", "--against", "torchinfo"])
    assert result.exit_code == 0, result.output
    assert "torchinfo" in result.output
    both = runner.invoke(main, ["diff", "create-head-default", "create-head-avg-pool", "--against", "torchinfo"])
    assert both.exit_code == 2 and "not both" in both.output


def test_the_gallery_diff_exhibits_give_their_text_and_picture():
    from shapetrace.gallery.exhibits.diffs import DIFF_EXHIBITS, custom_head, diff_exhibit_files

    files = diff_exhibit_files()
    for name in DIFF_EXHIBITS:
        assert {f"{name}.txt", f"{name}.md", f"{name}.html"} <= set(files)
    custom = files["diff-default-vs-custom-head.txt"]
    own = sum(p.numel() for p in custom_head().parameters())
    assert own == 274_176 and f"546,304 → {own:,}" in custom  # the caption's number, counted by torch
    assert "5      class   ReLU" in custom
    concat = files["diff-concat-vs-avg-head.md"]
    assert concat.startswith("# create_head: concat pooling against average pooling")


# ---- the command line's edges ------------------------------------------------------------------------------
_TRAIN_AUX = ("import torch\nfrom torch import nn\n\n"
              "class M(nn.Module):\n"
              "    def __init__(self):\n        super().__init__()\n"
              "        self.body, self.aux = nn.Linear(8, 8), nn.Linear(8, 3)\n\n"
              "    def forward(self, x):\n        y = self.body(x)\n"
              "        return (y, self.aux(y)) if self.training else y\n\n"
              "class NoInput(nn.Module):\n"
              "    def __init__(self):\n        super().__init__()\n        self.lin = nn.Linear(4, 3)\n\n"
              "    def forward(self):\n        return self.lin(torch.ones(2, 4))\n\n"
              "class Fails(nn.Module):\n"
              "    def __init__(self):\n        super().__init__()\n        self.lin = nn.Linear(4, 3)\n\n"
              "    def forward(self, x):\n        return self.lin(x)\n")


@pytest.fixture()
def models_file(tmp_path):
    path = tmp_path / "models.py"
    path.write_text(_TRAIN_AUX)
    return path


@pytest.mark.parametrize("tool", ["torchinfo", "torchview"])
def test_cli_diff_against_with_train_runs_the_other_tool_in_training_mode_too(models_file, tool):
    result = CliRunner().invoke(main, ["diff", f"{models_file}:M", "-i", "2,8", "--against", tool, "--train"])
    assert result.exit_code == 0, result.output
    calls = {"torchinfo": 3, "torchview": 2}[tool]  # torchview counts leaves: body and the training-only aux head
    assert f"shapetrace saw {calls} calls, {tool} {calls}" in result.stdout, result.stdout
    assert "aux" not in result.stdout  # the other tool saw the aux head as well


def test_cli_diff_against_a_forward_without_inputs_is_a_usage_error_saying_why(models_file):
    result = CliRunner().invoke(main, ["diff", f"{models_file}:NoInput", "--against", "torchview"])
    assert result.exit_code == 2 and "this forward takes none" in result.stderr, result.output


def test_cli_diff_of_a_saved_trace_whose_forward_failed_exits_1_and_notes_ignored_options(models_file, tmp_path):
    runner = CliRunner()
    failed = tmp_path / "FAILED.JSON"  # the suffix in any case, as render takes it
    assert runner.invoke(main, ["trace", f"{models_file}:Fails", "-i", "2,5", "-f", "json", "-o", str(failed)]).exit_code == 1
    result = runner.invoke(main, ["diff", str(failed), f"{models_file}:Fails", "-i", "2,4", "--train"])
    assert result.exit_code == 1, result.output
    assert f"--input, --train/--eval do not apply to the saved trace {failed}" in result.stderr
    assert f"the forward of {failed} (a saved trace) failed" in result.stderr


def test_cli_diff_of_a_missing_saved_trace_says_no_such_file(tmp_path):
    result = CliRunner().invoke(main, ["diff", str(tmp_path / "gone.json"), str(tmp_path / "gone.json")])
    assert result.exit_code == 2 and "gone.json: no such file" in result.stderr, result.output


_USER_CODE = ("import sys\nfrom torch import nn\n\n"
              "class Chatty(nn.Module):\n"
              "    def __init__(self):\n        super().__init__()\n        self.lin = nn.Linear(4, 3)\n\n"
              "    def forward(self, x):\n        print('FORWARD-NOISE')\n        return self.lin(x)\n\n"
              "class Exits(nn.Module):\n"
              "    def __init__(self):\n        super().__init__()\n        self.lin = nn.Linear(4, 3)\n\n"
              "    def forward(self, x):\n        sys.exit(3)\n")


@pytest.fixture()
def user_code_file(tmp_path):
    path = tmp_path / "user_code.py"
    path.write_text(_USER_CODE)
    return path


@pytest.mark.parametrize("tool", ["torchinfo", "torchview"])
def test_cli_diff_against_keeps_what_the_forward_prints_out_of_stdout(user_code_file, tool):
    result = CliRunner().invoke(main, ["diff", f"{user_code_file}:Chatty", "-i", "2,4", "--against", tool, "-f", "md"])
    assert result.exit_code == 0, result.output
    # stdout holds the comparison alone: with no difference, its one sentence
    assert "FORWARD-NOISE" not in result.stdout and result.stdout.startswith("shapetrace saw "), result.stdout
    assert result.stderr.count("FORWARD-NOISE") >= 2  # our trace's forward and the other tool's


def test_cli_diff_against_a_forward_calling_sys_exit_is_an_error_that_says_so(user_code_file):
    result = CliRunner().invoke(main, ["diff", f"{user_code_file}:Exits", "-i", "2,4"])
    assert result.exit_code == 1, result.output
    assert "the model's own code exited (SystemExit(3)) while running its forward" in result.stderr


def test_cli_diff_against_a_failing_forward_shows_the_partial_table_and_exits_1(models_file):
    result = CliRunner().invoke(main, ["diff", f"{models_file}:Fails", "-i", "2,5", "--against", "torchinfo"])
    assert result.exit_code == 1, result.output
    assert "✗ RuntimeError: mat1 and mat2 shapes cannot be multiplied" in result.stdout  # the partial table
    assert f"the forward of {models_file}:Fails failed, so there is nothing to compare with torchinfo" in result.stderr
    assert "TraceFailed" not in result.output and "--debug" not in result.output


def test_a_diff_as_a_value_is_one_line_naming_both_sides_and_what_changed(heads):
    assert repr(heads) == ("<TraceDiff of A = concat (Sequential, 12 calls) and B = avg (Sequential, 10 calls): "
                           "3 changed, 2 only in A, 0 only in B>")
    x = torch.rand(2, 4)
    same = diff_traces(trace(nn.Linear(4, 3), x), trace(nn.Linear(4, 3), x))
    assert repr(same) == "<TraceDiff of A (Linear, 1 call) and B (Linear, 1 call): 0 changed, 0 only in A, 0 only in B>"


def test_a_notebook_shows_a_diff_as_the_html_diff_and_its_text_display_as_the_text_diff(heads, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    assert heads._repr_html_() == render_trace_diff(heads, "html")
    assert pretty(heads) + "\n" == render_trace_diff(heads, "text", width=100) == str(heads)
    assert pretty([heads]) == f"[{heads!r}]"  # inside a container: the one line
