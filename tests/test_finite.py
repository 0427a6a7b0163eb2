"""``check_finite``: where the first NaN or Inf of a forward came from, and how far it spread.

The oracle for every count is torch's own ``isnan`` / ``isposinf`` / ``isneginf`` on the tensors the model
returns; the origin is checked against models built to make their first NaN in a known place: a leaf layer,
a container's own code between its children or after them, or the input itself.
"""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from click.testing import CliRunner
from conftest import model_fingerprint, requires_dot
from torch import nn

import shapetrace
from shapetrace.cli import main
from shapetrace.renderers.finite import ORIGIN_MARK, PASSED_MARK
from shapetrace.renderers.table import render_text
from shapetrace.tracer.capture import NoValuesToCheck, Tracer
from shapetrace.tracer.engine import ModuleIndex
from shapetrace.tracer.flow import DataFlow
from shapetrace.tracer.probes.finite import FiniteProbe


class Log(nn.Module):
    def forward(self, x):
        return torch.log(x)


class DividesBetweenChildren(nn.Module):
    """Its children's outputs are finite; its own ``x / 0`` between them makes the Infs and NaNs."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4)

    def forward(self, x):
        x = self.act(self.fc1(x))
        x = x / 0
        return self.fc2(x)


class DividesAfterChildren(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x) / 0


def log_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 8), Log(), nn.Linear(8, 2)).eval()


def table(trace) -> str:
    """The text table, each note on one line."""
    return render_text(trace, width=None)


def call_of(trace, module: str):
    return next(c for c in trace.calls if c.module == module)


def oracle(t: torch.Tensor) -> dict[str, int]:
    """torch's own counts of a tensor's NaN, +Inf and -Inf."""
    return {"nan": int(torch.isnan(t).sum()), "posinf": int(torch.isposinf(t).sum()),
            "neginf": int(torch.isneginf(t).sum()), "values": t.numel()}


def test_a_leaf_taking_the_log_of_negatives_is_the_origin():
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    t = shapetrace.trace(log_model(), x, check_finite=True)
    summary = t.meta["nonfinite"]
    assert summary["first"] == call_of(t, "1").id and summary["where"] == "layer"
    assert call_of(t, "0").nonfinite is None  # the Linear before it was finite


def test_a_linear_with_a_nan_weight_is_the_origin_and_its_weight_is_named():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.ReLU()).eval()
    with torch.no_grad():
        model[1].weight[2, 0] = float("nan")
    t = shapetrace.trace(model, torch.randn(3, 4), check_finite=True)
    assert t.meta["nonfinite"]["first"] == call_of(t, "1").id
    assert t.meta["nonfinite"]["own_nonfinite"] == ["weight"]
    assert "first non-finite output: 1 (Linear) — 3 NaN, 0 Inf of 12 values; its own weight holds NaN" in table(t)


def test_a_containers_own_code_between_its_children_is_the_origin():
    model = nn.Sequential(DividesBetweenChildren(), nn.Tanh()).eval()
    t = shapetrace.trace(model, torch.randn(3, 4), check_finite=True)
    summary = t.meta["nonfinite"]
    block = call_of(t, "0")
    assert summary["first"] == block.id and summary["where"] == "own-code"
    assert summary["seen_in"] == call_of(t, "0.fc2").id  # where its values were first seen: fc2's input
    assert call_of(t, "0.fc1").nonfinite is None and call_of(t, "0.act").nonfinite is None
    assert "made by the own code of 0 (DividesBetweenChildren), not by a child layer" in table(t)


def test_a_containers_own_code_after_its_last_child_is_the_origin():
    model = nn.Sequential(DividesAfterChildren(), nn.ReLU()).eval()  # +Inf reaches the model's output
    t = shapetrace.trace(model, torch.randn(3, 4), check_finite=True)
    assert t.meta["nonfinite"]["first"] == call_of(t, "0").id
    assert t.meta["nonfinite"]["where"] == "own-code" and "seen_in" not in t.meta["nonfinite"]


def test_nan_in_the_input_is_blamed_on_the_input_not_a_layer():
    x = torch.rand(4, 8) + 1  # log of values above 1: finite, but for the NaN put in
    x[1, 3] = float("nan")
    t = shapetrace.trace(log_model(), x, check_finite=True)
    assert t.meta["nonfinite"]["first"] == "input:0" and t.meta["nonfinite"]["where"] == "input"
    assert t.meta["nonfinite"]["nan"] == 1 and t.meta["nonfinite"]["values"] == 32
    text = table(t)
    assert "input 0 (x) already held them (1 NaN, 0 Inf of 32 values); the model did not make them" in text
    rows = text.split("─\n")[2]  # between the rules under the header and above the totals
    assert ORIGIN_MARK not in rows and rows.count(PASSED_MARK) == 4  # no row blamed, every call holding some


def test_nan_and_inf_counts_equal_torchs_own_counts():
    class Mixed(nn.Module):  # NaN from 0/0, +Inf from 1/0, -Inf from -1/0: in known places
        def forward(self, x):
            return x / torch.tensor([0.0, 0.0, 1.0, 0.0]) * torch.tensor([1.0, 1.0, 1.0, -1.0])

    x = torch.tensor([[0.0, 1.0, 2.0, 3.0], [0.0, 0.0, -1.0, 5.0]])
    model = nn.Sequential(Mixed()).eval()
    expected = oracle(model(x))
    t = shapetrace.trace(model, x, check_finite=True)
    got = call_of(t, "0").nonfinite
    assert dict(got) == expected and expected["nan"] and expected["posinf"] and expected["neginf"]


def test_complex_outputs_count_their_real_and_imaginary_parts():
    class Complex(nn.Module):
        def forward(self, x):
            return torch.complex(x, x.log())

    x = torch.tensor([1.0, -1.0, 0.0])
    t = shapetrace.trace(Complex(), x, check_finite=True)
    assert dict(t.calls[0].nonfinite) == oracle(torch.view_as_real(Complex()(x)))


def test_outputs_nested_in_tuples_and_dicts_are_checked():
    class Nested(nn.Module):
        def forward(self, x):
            return {"ok": x, "pair": (x.argmax(dim=-1), x.log())}

    x = torch.tensor([[1.0, -2.0, -3.0]])
    t = shapetrace.trace(Nested(), x, check_finite=True)
    # the integer argmax left out; ``values`` counts every checked tensor, the finite x too
    assert dict(t.calls[0].nonfinite) == {**oracle(x.log()), "values": x.numel() + x.log().numel()}


def test_nothing_is_noted_when_every_output_is_finite():
    t = shapetrace.trace(nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)), torch.randn(4, 8),
                         check_finite=True)
    assert t.meta["nonfinite"] == {"first": None, "calls": 0}
    assert all(c.nonfinite is None for c in t.calls)
    assert ORIGIN_MARK not in table(t) and PASSED_MARK not in table(t)


def test_later_calls_holding_nan_are_marked_lightly_and_counted():
    t = shapetrace.trace(log_model(), torch.randn(4, 8, generator=torch.Generator().manual_seed(1)),
                         check_finite=True)
    rows = [line for line in table(t).split("─\n")[2].splitlines() if "─" not in line]
    assert [r.split()[:2] for r in rows] == [[PASSED_MARK, "(root)"], ["0", "Linear"], [ORIGIN_MARK, "1"],
                                             [PASSED_MARK, "2"]]
    assert t.meta["nonfinite"]["calls"] == 3
    assert "· non-finite outputs in 2 calls after it: (root), 2" in table(t)


def test_a_call_that_raised_is_not_checked():
    class Fails(nn.Module):
        def forward(self, x):
            raise ValueError("no")

    model = nn.Sequential(Log(), Fails()).eval()
    t = shapetrace.trace(model, torch.tensor([-1.0]), check_finite=True, strict=False)
    assert t.meta["nonfinite"]["first"] == call_of(t, "0").id
    assert call_of(t, "1").nonfinite is None and t.calls[0].nonfinite is None  # no output to check


def test_a_trace_on_meta_is_refused_before_anything_runs():
    model = log_model()
    before = model_fingerprint(model)
    with pytest.raises(NoValuesToCheck, match=r"trace on the CPU or a GPU instead \(device='cpu'"):
        shapetrace.trace(model, torch.randn(4, 8), device="meta", check_finite=True)
    assert model_fingerprint(model) == before


def test_the_model_is_left_unchanged():
    model = nn.Sequential(DividesBetweenChildren(), nn.BatchNorm1d(4)).train()
    before = model_fingerprint(model)
    shapetrace.trace(model, torch.randn(3, 4), check_finite=True)
    assert model_fingerprint(model) == before


def test_the_json_round_trip_keeps_what_was_found():
    t = shapetrace.trace(nn.Sequential(DividesBetweenChildren(), nn.Tanh()).eval(), torch.randn(3, 4),
                         check_finite=True)
    back = shapetrace.load(t.to_json())
    assert back.meta["nonfinite"] == t.meta["nonfinite"]
    assert [c.nonfinite for c in back.calls] == [c.nonfinite for c in t.calls]
    assert str(back) == str(t)


def test_a_trace_without_the_option_writes_no_new_keys():
    t = shapetrace.trace(log_model(), torch.randn(4, 8))
    data = json.loads(t.to_json())
    assert "nonfinite" not in data["meta"] and not any("nonfinite" in c for c in data["calls"])
    assert ORIGIN_MARK not in table(t) and PASSED_MARK not in table(t)


def test_the_probe_is_added_only_when_asked():
    model = log_model()
    index_flow = (ModuleIndex(model), DataFlow())
    plain = Tracer(model)
    assert not any(isinstance(p, FiniteProbe) for p in plain.probes(*index_flow))
    checked = Tracer(model, check_finite=True)
    assert any(isinstance(p, FiniteProbe) for p in checked.probes(*index_flow))


def test_the_html_table_marks_the_origin_row():
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    html = shapetrace.trace(log_model(), x, check_finite=True)._repr_html_()
    assert '<tr class="nonfinite-origin">' in html and "tr.nonfinite-origin" in html
    assert "tr.nonfinite-origin" not in shapetrace.trace(log_model(), x)._repr_html_()  # its CSS only when used


@pytest.fixture
def log_file(tmp_path):
    path = tmp_path / "models.py"
    path.write_text(textwrap.dedent("""
        import torch
        from torch import nn

        class Log(nn.Module):
            def forward(self, x):
                return torch.log(x)

        def build():
            torch.manual_seed(0)
            return nn.Sequential(nn.Linear(8, 8), Log(), nn.Linear(8, 2))

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc1, self.fc2 = nn.Linear(8, 8), nn.Linear(8, 2)

            def forward(self, x):
                h = self.fc1(x)
                h = torch.log(h)
                return self.fc2(h)
    """))
    return path


def test_the_cli_prints_where_after_the_table_and_exits_0(log_file):
    r = CliRunner().invoke(main, ["trace", f"{log_file}:build", "--input", "4,8", "--check-finite"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert f"{ORIGIN_MARK} 1 " in r.stdout  # the origin's row
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("check-finite: first non-finite output: 1 (Log) — ")
    assert last.endswith("non-finite outputs in 2 calls after it")


def test_the_cli_says_all_outputs_finite_when_it_found_none():
    r = CliRunner().invoke(main, ["trace", "torch.nn:Linear", "--arg", "in_features=4", "--arg", "out_features=2",
                                  "--input", "3,4", "--check-finite"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert r.stderr.strip().splitlines()[-1] == "check-finite: all outputs finite (1 call checked)"


def test_the_cli_refuses_check_finite_on_meta(log_file):
    r = CliRunner().invoke(main, ["trace", f"{log_file}:build", "--input", "4,8", "--check-finite",
                                  "--device", "meta"], catch_exceptions=False)
    assert r.exit_code == 2
    assert "--check-finite reads the values of every output" in r.stderr and "--device cpu" in r.stderr


def test_lines_marks_the_line_that_made_the_first_nan(log_file):
    r = CliRunner().invoke(main, ["lines", f"{log_file}:Net", "--input", "4,8", "--check-finite"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    marked = [line for line in r.stdout.splitlines() if line.startswith(ORIGIN_MARK) and "│" in line]
    assert len(marked) == 1 and "h = torch.log(h)" in marked[0]
    assert r.stderr.strip().splitlines()[-1].startswith(
        "check-finite: first non-finite values made by the own code of (root) (Net)")


def test_the_checks_own_reductions_are_not_recorded_as_ops():
    model = nn.Sequential(DividesBetweenChildren(), nn.Tanh()).eval()
    x = torch.randn(3, 4)
    plain = shapetrace.trace(model, x, ops=True)
    checked = shapetrace.trace(model, x, ops=True, check_finite=True)
    assert [(o.name, o.call) for o in checked.ops] == [(o.name, o.call) for o in plain.ops] == [("div", 1)]


def test_a_tracer_block_checks_too_and_blames_code_between_two_forwards():
    model = nn.Sequential(nn.Linear(8, 8), nn.Tanh()).eval()
    x = torch.randn(4, 8)
    with Tracer(model, check_finite=True) as tr:
        y = model(x)
        model(x + y.sum() * float("nan"))  # made between the forwards, outside any call
    summary = tr.trace.meta["nonfinite"]
    assert summary["where"] == "outside" and summary["first"] is None
    assert summary["seen_in"] == [c.id for c in tr.trace.calls if c.parent is None][1]


def test_a_depth_that_folds_the_origin_marks_the_row_it_is_folded_into():
    model = nn.Sequential(nn.Sequential(nn.Linear(4, 4), Log()), nn.Linear(4, 2)).eval()
    t = shapetrace.trace(model, -torch.ones(3, 4) * 100, check_finite=True)
    rows = [line.split()[:2] for line in render_text(t, depth=1, width=None).split("─\n")[2].splitlines()
            if "─" not in line]
    assert rows == [[PASSED_MARK, "(root)"], [ORIGIN_MARK, "0"], [PASSED_MARK, "1"]]


@requires_dot
def test_the_diagram_marks_the_origin_node_and_no_other():
    from shapetrace.renderers.diagram import NONFINITE_COLOR, NONFINITE_NODE_MARK, render

    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    svg = render(shapetrace.trace(log_model(), x, ops=True, check_finite=True), format="svg").decode()
    assert svg.count(NONFINITE_NODE_MARK) == 1
    assert svg.count(f'stroke="{NONFINITE_COLOR}"') == 1
    plain = render(shapetrace.trace(log_model(), x, ops=True), format="svg").decode()
    assert NONFINITE_COLOR not in plain and "NaN" not in plain


@pytest.mark.parametrize("summary", [{"first": 999, "where": "layer"}, {"first": True, "nan": "x"},
                                     {"first": "input:zz", "where": "input"}, {"first": 1, "seen_in": True,
                                                                               "where": "own-code", "own_nonfinite": [1]},
                                     [], "text"])
def test_a_malformed_nonfinite_summary_in_a_loaded_trace_still_renders(summary):
    from shapetrace.renderers.diagram import to_dot
    from shapetrace.renderers.finite import summary_line
    from shapetrace.renderers.lines import build_view
    from shapetrace.renderers.lines import render as render_lines

    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    data = json.loads(shapetrace.trace(log_model(), x, check_finite=True, lines=True).to_json())
    data["meta"]["nonfinite"] = summary
    t = shapetrace.load(json.dumps(data))
    assert table(t) and t._repr_html_() and to_dot(t) and render_lines(build_view(t))
    line = summary_line(t)
    assert line is None if not isinstance(summary, dict) else "all outputs finite" not in line


def test_a_layer_writing_nan_into_its_input_in_place_is_the_origin_not_its_parent():
    class LogInPlace(nn.Module):
        def forward(self, x):
            return x.log_()

    model = nn.Sequential(nn.Linear(4, 4), LogInPlace(), nn.Linear(4, 2)).eval()
    with torch.no_grad():
        model[0].weight.fill_(-1.0)
        model[0].bias.zero_()
    t = shapetrace.trace(model, torch.ones(3, 4), check_finite=True)
    assert t.meta["nonfinite"]["first"] == call_of(t, "1").id and t.meta["nonfinite"]["where"] == "layer"
