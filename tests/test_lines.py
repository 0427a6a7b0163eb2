"""``trace(..., lines=True)`` and ``trace.lines()``: a forward's source with what each line produced."""

from __future__ import annotations

import json
import sys
import warnings

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from shapetrace import UnsupportedModel, load
from shapetrace.cli import main
from shapetrace.gallery.exhibits import get_exhibit
from shapetrace.gallery.tabular import TabularModel, get_emb_sz
from shapetrace.renderers.lines import LinesError, build_view, render
from shapetrace.tracer.api import trace


def _exhibit_trace(name: str):
    ex = get_exhibit(name)
    args, kwargs = ex.inputs()
    return trace(ex.build(), *args, lines=True, forward_kwargs=kwargs)


def _line(view, needle: str):
    """The view's line whose source text contains ``needle`` (exactly one)."""
    found = [ln for sv in view.sources for ln in sv.lines if needle in ln.text]
    assert len(found) == 1, [ln.text for ln in found]
    return found[0]


def _events(line) -> dict[str, list[str]]:
    return {g.name: g.outputs for g in line.groups}


@pytest.fixture(scope="module")
def tabular_view():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tr = _exhibit_trace("tabular-model")
    return tr, build_view(tr)


def test_tabular_model_shows_each_shape_beside_the_line_that_made_it(tabular_view):
    _, view = tabular_view
    embed = _line(view, "torch.cat([e(x_cat[:, i])")
    assert _events(embed)["embeds.0–4"] == ["(8,6)", "(8,5)", "(8,8)", "(8,3)", "(8,21)"]
    assert _events(embed)["cat"] == ["(8,43)"]
    assert _events(_line(view, "x_cont = self.bn_cont(x_cont)"))["bn_cont"] == ["(8,6)"]
    assert _events(_line(view, "x = torch.cat([x, x_cont], 1)"))["cat"] == ["(8,49)"]
    assert _events(_line(view, "return self.layers(x)"))["layers"] == ["(8,2)"]


def test_a_comprehension_attributes_its_calls_to_its_statement_and_names_the_dtype_change(tabular_view):
    _, view = tabular_view
    embed = _line(view, "torch.cat([e(x_cat[:, i])")
    group = next(g for g in embed.groups if g.name == "embeds.0–4")
    assert group.count == 5 and group.cls == "Embedding"
    assert group.dtype == "float32"  # int64 indices in, float32 vectors out
    assert "getitem" in _events(embed)  # x_cat[:, i], five times, made in the comprehension
    assert next(g for g in embed.groups if g.name == "getitem").dtype is None  # int64 stays int64


def test_a_loop_folds_its_runs_with_each_runs_shape():
    """BPT3C: the SentenceEncoder runs the AWD-LSTM on three chunks, the last one shorter."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tr = _exhibit_trace("awd-lstm-classifier")
    view = build_view(tr, "0")
    chunk = _line(view, "o = self.module(input[:real_bs, i:end])")
    group = next(g for g in chunk.groups if g.kind == "call")
    assert (group.name, group.cls, group.count) == ("module", "AWD_LSTM", 3)
    assert group.outputs == ["(2,72,400)", "(4,72,400)", "(3,56,400)"]
    assert "module AWD_LSTM ×3: (2,72,400), (4,72,400), (3,56,400)" in render(view, "text")
    # the loop's header and the lines of its body that make no tensor ran; none is marked unreached
    assert _line(view, "for i in range(0, sl, self.bptt):").state == "plain"
    assert not [ln for sv in view.sources for ln in sv.lines if ln.state == "unreached"]


def test_a_branch_not_taken_is_marked_unreached():
    model = TabularModel(get_emb_sz([10, 7]), 0, 2, [16]).eval()
    tr = trace(model, torch.randint(0, 7, (4, 2)), lines=True)
    view = build_view(tr)
    assert _line(view, "if self.n_cont != 0:").state == "plain"  # the test ran
    assert _line(view, "if self.bn_cont is not None:").state == "unreached"
    assert _line(view, "x_cont = self.bn_cont(x_cont)").state == "unreached"
    assert _line(view, "x = self.emb_drop(x)").state == "ran"
    text = render(view, "text")
    assert any(row.startswith("·") and "self.bn_cont(x_cont)" in row for row in text.splitlines())


class MultiLine(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 3)
        self.b = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat(
            [self.a(x),
             self.b(x)],
            dim=1,
        )
        z = [
            torch.relu(y[:, i:i + 2])
            for i in range(0, 8, 2)
        ]
        return self._helper(z)

    def _helper(self, parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(parts)


def test_a_multi_line_statement_shows_all_it_made_on_its_first_line():
    view = build_view(trace(MultiLine(), torch.randn(2, 4), lines=True))
    head = _line(view, "y = torch.cat(")
    assert _events(head) == {"a": ["(2,3)"], "b": ["(2,5)"], "cat": ["(2,8)"]}
    for rest in ("[self.a(x),", "self.b(x)],", "dim=1,"):
        line = _line(view, rest)
        assert line.groups == [] and line.continues and line.state != "unreached"


def test_a_multi_line_comprehension_and_a_helper_attribute_to_the_forwards_statement():
    view = build_view(trace(MultiLine(), torch.randn(2, 4), lines=True))
    comp = _line(view, "z = [")
    assert _events(comp)["getitem"] == ["(2,2)"] * 4
    assert _events(comp)["relu"] == ["(2,2)"] * 4
    assert _events(_line(view, "return self._helper(z)")) == {"stack": ["(4,2,2)"]}


class NestedHelper(nn.Module):
    """A forward that defines a function and a lambda in its own body and calls them."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = lambda t: t * 2

        def head(t: torch.Tensor) -> torch.Tensor:
            u = self.a(t)
            return self.b(u)

        return head(scale(x))


def test_a_function_written_inside_the_forward_shows_its_own_lines_and_they_ran():
    view = build_view(trace(NestedHelper(), torch.randn(2, 4), lines=True))
    assert _events(_line(view, "scale = lambda t: t * 2")) == {"mul": ["(2,4)"]}
    assert _events(_line(view, "u = self.a(t)")) == {"a": ["(2,4)"]}
    assert _events(_line(view, "return self.b(u)")) == {"b": ["(2,3)"]}
    assert _events(_line(view, "return head(scale(x))")) == {}
    assert not [ln.text for sv in view.sources for ln in sv.lines if ln.state == "unreached"]


def test_an_error_inside_a_function_written_in_the_forward_marks_that_functions_line():
    model = NestedHelper()
    model.b = nn.Linear(5, 3)
    with pytest.raises(Exception) as info:
        trace(model, torch.randn(2, 4), lines=True)
    view = build_view(info.value.trace)
    assert _line(view, "return self.b(u)").state == "raised"
    assert _line(view, "return head(scale(x))").state == "plain"  # ran, made nothing itself


class Recursive(nn.Module):
    """A module whose child is of its own class: two frames of one forward on the stack."""

    def __init__(self, depth: int = 1) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 4) if depth else nn.Linear(3, 4)
        self.child = Recursive(depth - 1) if depth else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer(x)
        if self.child is not None:
            x = self.child(x)
        return x


def test_a_recursive_forward_marks_the_line_each_call_failed_on():
    with pytest.raises(Exception) as info:
        trace(Recursive(), torch.randn(2, 4), lines=True)
    outer, inner = build_view(info.value.trace), build_view(info.value.trace, "child")
    assert _line(outer, "x = self.child(x)").state == "raised"
    assert _line(inner, "x = self.layer(x)").state == "raised"
    assert _line(inner, "x = self.child(x)").state == "unreached"


class StringAtColumnZero(nn.Module):
    """A forward holding a multi-line string whose lines start at column 0 (a docstring-like template)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        template = """
left at column 0
"""
        if x.shape[0] > 100:
            x = x * 2
        return self.a(x) if template else x


def test_a_string_at_column_zero_keeps_the_bodys_indentation_and_statements():
    view = build_view(trace(StringAtColumnZero(), torch.randn(2, 4), lines=True))
    assert _line(view, "def forward").text.startswith("def forward")
    assert _line(view, "return self.a(x)").text.startswith("    return")
    assert _line(view, "left at column 0").text == "left at column 0"
    assert _line(view, "x = x * 2").state == "unreached"  # the statements were found (the source parsed)
    assert _line(view, "left at column 0").continues  # part of the assignment's statement


class FailsMidway(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.b = nn.Linear(4, 2)
        self.c = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        y = self.b(h)
        return self.c(y)


def test_a_forward_that_fails_shows_the_lines_up_to_the_failure_and_marks_the_failing_one():
    tr = trace(FailsMidway(), torch.randn(3, 4), lines=True, strict=False)
    view = build_view(tr)
    assert _events(_line(view, "h = self.a(x)")) == {"a": ["(3,8)"]}
    failing = _line(view, "y = self.b(h)")
    assert failing.state == "raised" and "mat1 and mat2" in failing.error
    assert _line(view, "return self.c(y)").state == "unreached"
    assert "✗" in render(view, "text") and "the forward failed: RuntimeError" in render(view, "text")


def test_a_torchscript_submodule_says_it_has_no_source_and_the_parent_still_shows_it():
    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.inner = torch.jit.script(nn.Sequential(nn.Linear(4, 8), nn.ReLU()))
            self.out = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.inner(x))

    tr = trace(Outer(), torch.randn(3, 4), lines=True)
    outer = build_view(tr)
    assert _events(_line(outer, "return self.out(self.inner(x))")) == {"inner": ["(3,8)"], "out": ["(3,2)"]}
    inner = build_view(tr, "inner")
    assert "TorchScript" in inner.sources[0].missing
    assert "no source lines: it is TorchScript" in render(inner, "text")


def test_a_jit_traced_submodule_says_it_has_no_source_and_its_parent_is_no_leaf(tmp_path):
    (tmp_path / "jitted.py").write_text(
        "import torch\nfrom torch import nn\n\n\n"
        "def build():\n"
        "    inner = nn.Sequential(nn.Linear(4, 4), nn.ReLU())\n"
        "    return nn.Sequential(torch.jit.trace(inner, torch.randn(2, 4)), nn.Linear(4, 2))\n")
    result = CliRunner().invoke(main, ["lines", f"{tmp_path / 'jitted.py'}:build", "--input", "2,4"])
    assert result.exit_code == 0, result.output
    assert "0 TopLevelTracedModule → (2,4)" in result.output and "1 Linear → (2,2)" in result.output
    assert "leaf module" not in result.output
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = nn.Sequential(torch.jit.trace(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), torch.randn(2, 4)),
                              nn.Linear(4, 2))
    tr = trace(model, torch.randn(2, 4), lines=True)
    assert build_view(tr).note is None
    assert "no source lines: it is TorchScript" in render(build_view(tr, "0"), "text")


def test_an_unknown_module_name_offers_the_closest_names(tabular_view):
    tr, _ = tabular_view
    with pytest.raises(LinesError, match="Did you mean 'embeds"):
        build_view(tr, "embedz.0")


def test_a_trace_without_line_information_says_how_to_get_it():
    tr = trace(nn.Linear(2, 2), torch.randn(1, 2))
    assert tr.sources == {} and tr.calls[0].line is None and tr.calls[0].code is None
    with pytest.raises(LinesError, match="lines=True"):
        tr.lines()


def test_a_saved_trace_shows_the_same_lines_without_the_model(tabular_view):
    tr, view = tabular_view
    again = load(tr.to_json())
    assert render(build_view(again), "text") == render(view, "text")
    assert str(again.lines()) == str(tr.lines())


def test_html_is_highlighted_with_shapes_in_a_column_and_unreached_lines_dimmed():
    model = TabularModel(get_emb_sz([10, 7]), 0, 2, [16]).eval()
    page = render(build_view(trace(model, torch.randint(0, 7, (4, 2)), lines=True)), "html")
    assert '<span class="k">return</span>' in page  # pygments token classes
    assert '<tr class="unreached" title="never ran">' in page
    assert '<div>cat → (4,11)</div></td>' in page


def test_html_styles_only_itself_with_colours_for_light_and_dark_themes(tabular_view):
    import re

    _, view = tabular_view
    style = re.search(r"<style>(.*?)</style>", render(view, "html"), re.DOTALL).group(1)
    style = re.sub(r"@media[^{]*\{((?:[^{}]*\{[^}]*\})*)[^{}]*\}", r"\1", style)  # a narrow window's rules too
    rules = re.findall(r"([^{}]+)\{([^}]*)\}", style)
    assert rules
    for selectors, declarations in rules:
        for selector in selectors.split(","):
            assert re.match(r"(table)?\.st-lines", selector.strip()), selector  # a host page's <pre> is left alone
        # no opaque fill: text keeps the host theme's colour, so a fill must let the theme's background through
        for fill in re.findall(r"background(?:-color)?:\s*([^;]+)", declarations):
            assert fill.strip().startswith(("rgba(", "transparent")), (selectors, fill)


def test_json_lists_every_line_with_its_state_and_events(tabular_view):
    _, view = tabular_view
    data = json.loads(render(view, "json"))
    lines = {ln["text"].strip(): ln for ln in data["sources"][0]["lines"]}
    made = lines["return self.layers(x)"]["events"]
    assert made == [{"kind": "call", "name": "layers", "cls": "Sequential", "count": 1, "outputs": ["(8,2)"],
                     "modules": ["layers"]}]


def test_the_line_tracer_is_removed_afterwards_and_an_existing_one_is_left_alone():
    def existing(frame, event, arg):
        return None

    model = MultiLine()
    trace(model, torch.randn(2, 4), lines=True)
    assert sys.gettrace() is None
    previous = sys.gettrace()
    sys.settrace(existing)
    try:
        tr = trace(model, torch.randn(2, 4), lines=True)
        assert sys.gettrace() is existing
    finally:
        sys.settrace(previous)
    view = build_view(tr)  # without reachability, nothing is called unreached, the shapes are all there
    assert not view.sources[0].reach_known
    assert _events(_line(view, "y = torch.cat(")) == {"a": ["(2,3)"], "b": ["(2,5)"], "cat": ["(2,8)"]}


def test_cli_lines_of_an_exhibit_and_a_submodule():
    runner = CliRunner()
    result = runner.invoke(main, ["lines", "tabular-model"])
    assert result.exit_code == 0, result.output
    assert "cat → (8,43)" in result.output and "layers Sequential → (8,2)" in result.output
    bad = runner.invoke(main, ["lines", "tabular-model", "--module", "bn_cnt"])
    assert bad.exit_code == 2 and "Did you mean 'bn_cont'" in bad.output


def test_the_gallery_line_by_line_section_of_the_tabular_exhibit():
    from shapetrace.gallery.exhibits.line_sections import LINE_SECTIONS, render_line_section

    assert set(LINE_SECTIONS) == {"tabular-model", "awd-lstm-classifier", "camvid-unet"}
    assert render_line_section("resnet34-cut") is None
    section = render_line_section("tabular-model", "html")
    assert section.startswith('<section class="line-by-line"><h3>Line by line: TabularModel.forward')
    assert "cat → (8,49)" in section


def test_the_line_recording_benchmark_runs_and_reports_ratios():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "lines.py"
    spec = importlib.util.spec_from_file_location("bench_lines", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    table = bench.run(quick=True, rounds=1, budget_s=1.0)
    assert "| resnet18, batch 1, 64x64 | 1 |" in table and table.count("×") == 6


class _Attention(nn.Module):
    """A user-defined leaf: parameters and functional ops, no submodules."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.wq = nn.Parameter(torch.randn(d, d))
        self.wk = nn.Parameter(torch.randn(d, d))

    def forward(self, x):
        q, k = x @ self.wq, x @ self.wk
        scores = (q @ k.transpose(-1, -2)).softmax(-1)
        return scores @ x


class _WithAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = _Attention()
        self.out = nn.Linear(8, 2)

    def forward(self, x):
        return self.out(self.attn(x) + x)


def test_a_user_defined_leaf_traced_by_itself_shows_the_shape_each_of_its_lines_makes():
    model, x = _Attention(), torch.randn(2, 5, 8)
    view = build_view(trace(model, x, lines=True))
    q = x @ model.wq  # the oracle: torch itself
    scores = (q @ (x @ model.wk).transpose(-1, -2)).softmax(-1)
    assert _events(_line(view, "q, k = x @ self.wq"))["matmul"] == [str(tuple(q.shape)).replace(" ", "")] * 2
    assert _events(_line(view, "scores = (q @ k.transpose"))["softmax"] == [str(tuple(scores.shape)).replace(" ", "")]
    assert _events(_line(view, "return scores @ x"))["matmul"] == ["(2,5,8)"]
    assert "a leaf module" not in render(view)


def test_inside_a_model_a_user_defined_leaf_stays_one_box_and_says_how_to_see_its_lines():
    model, x = _WithAttention(), torch.randn(2, 5, 8)
    t = trace(model, x, lines=True)
    attn = next(c for c in t.calls if c.module == "attn")
    assert not [o for o in t.ops if o.call == attn.id]  # the model's diagram draws it as one node
    text = str(t.lines("attn"))
    assert "a leaf module" in text and "trace attn by itself" in text


_EDITED_MODULE = '''import torch
from torch import nn


class Edited(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 2)

    def forward(self, x):
        x = self.a(x)
        return self.b(x)
'''


def _import_then_edit(tmp_path, monkeypatch, edited: str):
    """Import a model's file, then change the file on disk without reloading (a notebook user's edit)."""
    import importlib

    path = tmp_path / "edited_model.py"
    path.write_text(_EDITED_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "edited_model", raising=False)
    module = importlib.import_module("edited_model")
    path.write_text(edited)
    return module.Edited()


def test_a_source_file_edited_since_import_is_not_shown_against_the_old_code(tmp_path, monkeypatch):
    moved = _EDITED_MODULE.replace("class Edited", "# a comment added above\n\n\nclass Edited")
    model = _import_then_edit(tmp_path, monkeypatch, moved)
    view = build_view(trace(model, torch.randn(2, 4), lines=True))
    (source,) = view.sources
    assert source.lines == [] and "has changed since this code was loaded" in source.missing
    assert [g.name for g in source.calls_only] == ["a", "b"]  # what it ran is still listed


def test_a_source_file_edited_inside_the_forward_is_not_shown_either(tmp_path, monkeypatch):
    changed = _EDITED_MODULE.replace("return self.b(x)", "return self.b(x.sigmoid())")
    model = _import_then_edit(tmp_path, monkeypatch, changed)
    (source,) = build_view(trace(model, torch.randn(2, 4), lines=True)).sources
    assert source.missing and "reload" in source.missing


class LambdaForward(nn.Module):
    """A forward written as a lambda in the class body."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 2)

    forward = lambda self, x: self.lin(x).relu()


def test_a_lambda_forward_shows_its_line():
    (source,) = build_view(trace(LambdaForward(), torch.randn(2, 4), lines=True)).sources
    assert source.missing is None
    assert _events(_line(build_view(trace(LambdaForward(), torch.randn(2, 4), lines=True)),
                         "forward = lambda")) == {"lin": ["(2,2)"], "relu": ["(2,2)"]}


class ReturnsAMask(nn.Module):
    """Returns activations and a boolean mask, as fastai's SentenceEncoder does."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.lin(x), x[..., 0] > 0


class UsesTheMask(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = ReturnsAMask()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, mask = self.enc(x)
        return h * mask[..., None]


def test_outputs_of_mixed_dtypes_each_show_their_own_dtype():
    view = build_view(trace(UsesTheMask(), torch.randn(3, 5, 4), lines=True))
    text = render(view, "text")
    assert "[(3,5,4) float32, (3,5) bool]" in text
    assert "(3,5) float32" not in text  # the mask is not labelled with the activations' dtype


def test_lines_written_to_an_html_file_is_a_whole_page_and_saved_traces_are_read_by_any_case(tmp_path):
    saved = tmp_path / "T.JSON"
    saved.write_text(trace(UsesTheMask(), torch.randn(3, 5, 4), lines=True).to_json())
    page = tmp_path / "l.html"
    result = CliRunner().invoke(main, ["lines", str(saved), "-o", str(page)])
    assert result.exit_code == 0, result.output
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in text and "color-scheme" in text
    missing = CliRunner().invoke(main, ["lines", str(tmp_path / "missing.json")])
    assert missing.exit_code == 2 and "missing.json: no such file" in missing.output


def test_a_torchscript_submodule_gives_no_advice_to_trace_it_by_itself_which_is_refused():
    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.sub = torch.jit.script(nn.Sequential(nn.Linear(4, 3), nn.ReLU()))
            self.out = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.sub(x))

    model, x = Outer(), torch.randn(2, 4)
    text = str(trace(model, x, lines=True).lines("sub"))
    assert "no source lines: it is TorchScript" in text
    assert "by itself" not in text
    with pytest.raises(UnsupportedModel):  # what following such advice would meet
        trace(model.sub, x, lines=True)


def test_a_torch_nn_leaf_inside_a_model_gives_no_advice_to_trace_it_by_itself():
    model, x = nn.Sequential(nn.Sequential(nn.Linear(4, 3)), nn.ReLU()), torch.randn(2, 4)
    text = str(trace(model, x, lines=True).lines("0.0"))
    assert "a leaf module" in text and "by itself" not in text
    alone = trace(model[0][0], x, lines=True)  # the oracle: traced by itself, torch's Linear still records no op
    assert alone.ops == [] and "a leaf module" in str(alone.lines())
