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


# ---- the origin: what a call was given, as it was when it started -------------------------------------------
class SqrtThenHead(nn.Module):
    """Its own ``sqrt`` makes NaN; the nested ``head`` container only passes them on."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(4, 4)
        self.head = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))

    def forward(self, x):
        return self.head(torch.sqrt(self.stem(x)))


def test_a_nested_container_is_not_blamed_for_its_parents_code():
    torch.manual_seed(0)
    t = shapetrace.trace(SqrtThenHead().eval(), torch.randn(3, 4), check_finite=True)
    summary = t.meta["nonfinite"]
    assert summary["first"] == 0 and summary["where"] == "own-code"  # the model's own sqrt, not head's code
    assert summary["seen_in"] == call_of(t, "head").id  # the child of the origin whose input held them


class LogThenTail(nn.Module):
    def __init__(self, tail: nn.Module) -> None:
        super().__init__()
        self.lin, self.tail = nn.Linear(4, 4), tail

    def forward(self, x):
        return self.tail(self.lin(x).log())


@pytest.mark.parametrize("tail", [nn.ReLU(inplace=True), nn.Dropout(0.1), nn.Identity(), nn.Flatten(0)],
                         ids=["relu-inplace", "dropout-eval", "identity", "flatten-view"])
def test_an_identity_view_or_in_place_tail_after_a_containers_nan_does_not_take_the_blame(tail):
    torch.manual_seed(0)
    t = shapetrace.trace(LogThenTail(tail).eval(), torch.randn(3, 4), check_finite=True)
    assert t.meta["nonfinite"]["first"] == 0 and t.meta["nonfinite"]["where"] == "own-code"
    assert t.meta["nonfinite"]["seen_in"] == call_of(t, "tail").id


def test_a_leaf_writing_nan_into_its_input_and_returning_another_tensor_is_the_origin():
    class LogInPlaceThenSum(nn.Module):
        def forward(self, x):
            x.log_()
            return x.sum(-1)

    model = nn.Sequential(nn.Linear(4, 4), LogInPlaceThenSum()).eval()
    with torch.no_grad():
        model[0].weight.fill_(-1.0)
        model[0].bias.zero_()
    t = shapetrace.trace(model, torch.ones(3, 4), check_finite=True)  # its input was finite when it started
    assert t.meta["nonfinite"]["first"] == call_of(t, "1").id and t.meta["nonfinite"]["where"] == "layer"


# ---- ±Inf: an attention mask's -inf is no problem -----------------------------------------------------------
def encoder_layer() -> nn.TransformerEncoderLayer:
    torch.manual_seed(0)
    return nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True).eval()


CAUSAL = nn.Transformer.generate_square_subsequent_mask(5)  # torch's own causal mask: -inf above the diagonal


def test_a_minus_inf_mask_given_as_an_input_is_told_as_a_fact_not_a_problem():
    from shapetrace.renderers.finite import summary_line

    t = shapetrace.trace(encoder_layer(), torch.randn(2, 5, 16), src_mask=CAUSAL, check_finite=True)
    summary = t.meta["nonfinite"]
    assert summary["first"] is None and "where" not in summary
    assert summary["inputs"] == [{"input": 1, "nan": 0, "posinf": 0, "neginf": 10, "values": 25}]
    line = summary_line(t)
    assert line.startswith("all outputs finite (") and "input 1 (src_mask) 10 -Inf" in line
    assert ORIGIN_MARK not in table(t)


def test_a_nan_weight_behind_a_minus_inf_mask_is_named_not_the_mask():
    from shapetrace.renderers.finite import summary_line

    layer = encoder_layer()
    with torch.no_grad():
        layer.linear2.weight[0, 0] = float("nan")
    t = shapetrace.trace(layer, torch.randn(2, 5, 16), src_mask=CAUSAL, check_finite=True)
    summary = t.meta["nonfinite"]
    assert summary["where"] != "input" and "linear2" in summary_line(t)
    # torch's fused encoder path runs linear2 without calling it (the layer is then a leaf): either way it is named
    assert summary.get("own_nonfinite") in (["linear2.weight"], ["weight"])


class CausalDecoder(nn.Module):
    """Builds its causal mask in its own code, as GPT-style models do."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.ff = nn.Linear(16, 16)

    def forward(self, x):
        mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1])
        h, _ = self.attn(x, x, x, attn_mask=mask, need_weights=False)
        return self.ff(h)


def test_a_layer_whose_own_parameters_hold_inf_is_blamed_before_the_code_that_made_its_mask():
    torch.manual_seed(0)
    model = CausalDecoder().eval()
    with torch.no_grad():
        model.attn.out_proj.weight[0, 0] = float("inf")
    t = shapetrace.trace(model, torch.randn(2, 5, 16), check_finite=True)
    summary = t.meta["nonfinite"]
    assert summary["first"] == call_of(t, "attn").id and summary["where"] == "layer"
    assert summary["own_nonfinite"] == ["out_proj.weight"] and summary["given"] == {"neginf": 10}


def test_inf_that_a_later_layer_squashes_is_not_reported_as_a_problem():
    from shapetrace.renderers.finite import summary_line

    model = nn.Sequential(DividesAfterChildren(), nn.Tanh()).eval()  # ±Inf inside, tanh makes them ±1
    t = shapetrace.trace(model, torch.randn(3, 4), check_finite=True)
    assert t.meta["nonfinite"]["first"] is None and call_of(t, "0").nonfinite is not None
    assert summary_line(t).startswith("all outputs finite (4 calls checked); ±Inf that did not reach")


def test_a_nan_made_from_an_inf_it_was_given_says_where_the_inf_came_from():
    class Divides(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(x / 0)  # +Inf and -Inf into fc, whose sums of them are NaN

    torch.manual_seed(0)
    t = shapetrace.trace(Divides().eval(), torch.randn(3, 4), check_finite=True)
    summary = t.meta["nonfinite"]
    assert summary["first"] == call_of(t, "fc").id and summary["where"] == "layer"  # the first NaN
    assert summary["given_from"] == {"first": 0, "where": "own-code", "seen_in": call_of(t, "fc").id}
    assert "its inputs already held" in table(t) and "made by the own code of (root) (Divides)" in table(t)


# ---- cost: one sum per tensor version ------------------------------------------------------------------------
def test_each_tensor_is_checked_once_however_many_calls_pass_it_on(monkeypatch):
    import shapetrace.tracer.probes.finite as probe

    checked: list[torch.Tensor] = []
    counted = probe.count_nonfinite
    monkeypatch.setattr(probe, "count_nonfinite", lambda t: checked.append(t) or counted(t))
    blocks = [nn.Sequential(nn.Conv2d(3 if i == 0 else 4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
              for i in range(3)]
    t = shapetrace.trace(nn.Sequential(*blocks).eval(), torch.randn(1, 3, 8, 8), check_finite=True)
    leaves = [c for c in t.calls if not any(d.parent == c.id for d in t.calls)]
    assert len(checked) == 1 + len(leaves)  # the input, and each leaf's output: the containers return those


def test_a_half_precision_sum_that_overflows_is_no_false_alarm():
    big = torch.full((64,), 60000.0, dtype=torch.float16)  # finite, but their fp16 sum is +Inf
    t = shapetrace.trace(nn.Identity(), big, check_finite=True)
    assert t.meta["nonfinite"] == {"first": None, "calls": 0}


# ---- what the renderers say -----------------------------------------------------------------------------------
def test_the_own_code_ops_marked_are_those_the_nan_came_through():
    from shapetrace.renderers.finite import origin_events

    class LogBesideAChild(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin, self.out = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            a = (x - 5).log()
            b = self.lin(x)
            return self.out(a + b)

    torch.manual_seed(0)
    t = shapetrace.trace(LogBesideAChild().eval(), torch.randn(3, 4), ops=True, check_finite=True)
    marked = {t.ops[i].name for kind, i in origin_events(t) if kind == "op"}
    assert marked == {"sub", "log", "add"}  # any of them may have made the first NaN; lin's output was finite


def test_the_diagram_says_when_the_models_own_code_made_them():
    from shapetrace.renderers.diagram import NONFINITE_ROOT_CAPTION, to_dot

    torch.manual_seed(0)
    t = shapetrace.trace(SqrtThenHead().eval(), torch.randn(3, 4), ops=True, check_finite=True)
    caption = NONFINITE_ROOT_CAPTION.split("'s ", 1)[1]  # the apostrophe is escaped in the label
    assert caption in to_dot(t)
    assert caption not in to_dot(shapetrace.trace(log_model(), -torch.ones(2, 8), check_finite=True))


def test_the_standalone_html_page_carries_the_amber_rules():
    from shapetrace.renderers.html import FINITE_CSS, render_page

    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    page = render_page(shapetrace.trace(log_model(), x, check_finite=True))
    assert '<tr class="nonfinite-origin">' in page and FINITE_CSS in page
    assert FINITE_CSS not in render_page(shapetrace.trace(log_model(), x))


def test_values_counts_every_checked_output_tensor():
    class Pair(nn.Module):
        def forward(self, x):
            return x.log(), x.exp()

    x = torch.tensor([[1.0, -2.0, -3.0]])
    t = shapetrace.trace(Pair(), x, check_finite=True)
    assert dict(t.calls[0].nonfinite) == {"nan": 2, "posinf": 0, "neginf": 0, "values": 6}


def test_no_calls_after_it_is_said_only_when_there_are_some():
    from shapetrace.renderers.finite import summary_line

    t = shapetrace.trace(Log(), -torch.ones(2, 3), check_finite=True)
    assert summary_line(t) == "first non-finite output: (root) (Log) — 6 NaN, 0 Inf of 6 values"


def test_a_folded_table_never_lists_the_origins_row_among_the_rows_after_it():
    model = nn.Sequential(nn.Sequential(nn.Linear(4, 4), Log()), nn.Linear(4, 2)).eval()
    t = shapetrace.trace(model, -torch.ones(3, 4) * 100, check_finite=True)
    spread = next(line for line in render_text(t, depth=1, width=None).splitlines()
                  if line.startswith(PASSED_MARK + " non-finite"))
    assert spread == f"{PASSED_MARK} non-finite outputs in 2 rows after it: (root), 1"


def test_the_csv_has_a_nonfinite_column_only_when_checked():
    from shapetrace.renderers.table import render_csv

    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    rows = render_csv(shapetrace.trace(log_model(), x, check_finite=True)).splitlines()
    assert rows[0].endswith(",nonfinite") and [r.rsplit(",", 1)[1] for r in rows[1:]] == ["later", "", "first",
                                                                                         "later"]
    assert "nonfinite" not in render_csv(shapetrace.trace(log_model(), x))


def test_profile_refuses_check_finite_naming_trace():
    from shapetrace.tracer.timing import ProfileUsageError

    with pytest.raises(ProfileUsageError, match=r"use shapetrace\.trace\(model, \.\.\., check_finite=True\)"):
        shapetrace.profile(nn.Linear(2, 2), torch.randn(1, 2), check_finite=True, device="cpu")


class HalfOverflows(nn.Module):
    """In half precision ``down`` overflows to ±Inf (its weights scaled up), then ``norm`` turns them into NaN:
    the first NaN is norm's, the Inf it was given is down's, a sibling that ran before it."""

    def __init__(self) -> None:
        super().__init__()
        self.up, self.act, self.down = nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 16)
        self.norm, self.out = nn.LayerNorm(16), nn.Linear(16, 4)
        with torch.no_grad():
            self.up.weight.mul_(200)
            self.down.weight.mul_(200)

    def forward(self, x):
        return self.out(self.norm(self.down(self.act(self.up(x)))))


def _half_overflow_trace():
    torch.manual_seed(0)
    model = HalfOverflows().half().eval()
    x = (torch.randn(2, 16) * 10).half()
    with torch.no_grad():  # the oracle: down's own output holds the Inf, norm's none of it
        down = model.down(model.act(model.up(x)))
    assert torch.isinf(down).any() and not torch.isnan(down).any()
    return shapetrace.trace(model, x, check_finite=True)


def test_a_nan_made_from_an_inf_an_earlier_sibling_made_names_that_sibling():
    t = _half_overflow_trace()
    summary = t.meta["nonfinite"]
    assert summary["first"] == call_of(t, "norm").id and summary["where"] == "layer"
    assert summary["given_from"] == {"first": call_of(t, "down").id, "where": "layer"}
    assert "made by down (Linear)" in table(t) and "own code" not in table(t)


def test_calls_that_ended_before_the_origin_are_not_listed_after_it():
    from shapetrace.renderers.finite import summary_line

    t = _half_overflow_trace()
    spread = next(line for line in table(t).splitlines() if line.startswith(f"{PASSED_MARK} non-finite"))
    assert spread == f"{PASSED_MARK} non-finite outputs in 2 calls after it: (root), out; in 1 call before it: down"
    line = summary_line(t)
    assert "its inputs already held" in line and "made by down (Linear)" in line
    assert line.endswith("non-finite outputs in 2 calls after it and 1 call before it")


def test_an_origin_after_an_earlier_inf_is_called_the_first_nan_not_the_first_non_finite_output():
    text = table(_half_overflow_trace())
    assert f"{ORIGIN_MARK} first NaN output: norm (LayerNorm)" in text
    assert "first non-finite output" not in text


def test_the_csv_calls_a_call_that_ended_before_the_origin_earlier_not_later():
    import csv
    import io

    from shapetrace.renderers.table import render_csv

    rows = {r["layer"]: r["nonfinite"] for r in csv.DictReader(io.StringIO(render_csv(_half_overflow_trace())))}
    assert rows["norm"] == "first" and rows["down"] == "earlier" and rows["out"] == "later"
