"""``shapetrace diff A B``: what each row's status means (changed, carried, contains changes, not reached)."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from conftest import requires_dot
from torch import nn
from torch.nn import functional as F

from shapetrace.renderers.diff import diagram_options, diff_traces, render_trace_diff
from shapetrace.tracer.api import trace


class SmallCNN(nn.Module):
    """A CNN whose first Linear is sized for 28×28 inputs (``fc1_in``); on 32×32 its forward fails in fc1."""

    def __init__(self, fc1_in: int = 32 * 7 * 7) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.fc1 = nn.Linear(fc1_in, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).flatten(1)
        return self.fc2(F.relu(self.fc1(x)))


@pytest.fixture(scope="module")
def broken_vs_fixed():
    x = torch.randn(2, 3, 32, 32)
    broken = trace(SmallCNN().eval(), x, strict=False)
    fixed = trace(SmallCNN(32 * 8 * 8).eval(), x)
    assert broken.failed and not fixed.failed
    return broken, fixed


def test_a_layer_a_failed_forward_never_reached_is_not_reached_not_added(broken_vs_fixed):
    broken, fixed = broken_vs_fixed
    d = diff_traces(broken, fixed)
    fc2 = {r.label: r for r in d.rows}["fc2"]
    assert fc2.status == "unreached_a"
    text = render_trace_diff(d, "text")
    [row] = [line for line in text.splitlines() if line.startswith("fc2 ")]
    assert "not reached in A" in row and "only in B" not in row
    assert "1 changed, 0 only in A, 0 only in B" in text  # fc1; the root failed only through it
    assert "1 call not reached in A, whose forward failed before calling it" in text


def test_a_layer_a_failed_forward_never_reached_is_not_listed_as_removed_in_the_diagram(broken_vs_fixed):
    broken, fixed = broken_vs_fixed
    d = diff_traces(fixed, broken)
    assert {r.label: r.status for r in d.rows}["fc2"] == "unreached_b"
    assert diagram_options(d)["diff"]["removed"] == []
    assert json.loads(render_trace_diff(d, "json"))["rows"][-1]["status"] == "unreached_b"


@requires_dot
def test_a_container_failing_only_because_a_layer_inside_it_failed_is_not_counted_as_changed(broken_vs_fixed):
    from shapetrace.renderers import diagram

    broken, fixed = broken_vs_fixed
    d = diff_traces(fixed, broken)
    # the root's RuntimeError is fc1's, gone up through it: one changed call, and one coloured in B's diagram
    assert [r.label for r in d.shown if r.status == "changed"] == ["fc1"]
    assert [r.label for r in d.containing] == ["(root)"]
    dot = diagram.to_dot(d.b, overlays=["diff"], options=diagram_options(d))
    assert "1 changed, " in render_trace_diff(d, "text") and "changed in B (1)" in dot


class CNN(nn.Module):
    def __init__(self, width: int = 16, pool: int = 2) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.pool = nn.MaxPool2d(pool)
        self.conv2 = nn.Conv2d(width, 32, 3, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.conv2(self.pool(self.conv1(x))))
        return self.fc(self.flat(self.gap(x)))


def test_a_pooling_whose_window_changed_is_changed_even_when_its_input_changed_too():
    x = torch.randn(2, 3, 32, 32)
    d = diff_traces(trace(CNN().eval(), x), trace(CNN(width=24, pool=4).eval(), x))
    pool = {r.label: r for r in d.rows}["pool"]
    # channels 16 → 24 come with the input; 16×16 → 8×8 does not: the input's height and width did not change
    assert pool.status == "changed"
    assert ("output", "(2,16,16,16)", "(2,24,8,8)") in pool.changes
    assert ("input", "(2,16,32,32)", "(2,24,32,32)") in pool.changes
    assert "pool MaxPool2d" not in render_trace_diff(d, "text").split("carried through")[1]


def test_layers_passing_a_changed_input_along_stay_carried():
    x = torch.randn(2, 3, 32, 32)
    d = diff_traces(trace(CNN().eval(), x), trace(CNN().eval(), torch.randn(2, 3, 64, 64)))
    # a taller input through convolutions, poolings and a flatten: nothing changed of its own
    assert d.shown == [] and {r.label for r in d.carried} >= {"conv1", "pool", "conv2", "pool#1"}


def nest(w: int = 16) -> nn.Module:
    return nn.Sequential(
        nn.Sequential(nn.Sequential(nn.Linear(8, 16), nn.ReLU()), nn.Sequential(nn.Linear(16, w), nn.ReLU())),
        nn.Sequential(nn.Linear(w, 4)))


def test_a_container_changed_only_through_a_child_contains_changes_and_is_not_counted():
    x = torch.randn(2, 8)
    d = diff_traces(trace(nest(), x), trace(nest(32), x))
    assert [r.label for r in d.shown] == ["0.1.0", "1.0"]
    assert [r.label for r in d.containing] == ["0", "0.1"]
    text = render_trace_diff(d, "text")
    assert "2 changed, 0 only in A, 0 only in B" in text
    assert "outputs changed only through the changed layers inside 2 containers: 0 Sequential, 0.1 Sequential" \
        in text


def test_a_resnets_root_is_not_changed_when_only_its_classifier_is():
    x = torch.randn(1, 3, 64, 64)
    d = diff_traces(trace(torchvision.models.resnet18(weights=None).eval(), x),
                    trace(torchvision.models.resnet18(weights=None, num_classes=10).eval(), x))
    assert [r.label for r in d.shown] == ["fc"] and [r.label for r in d.containing] == ["(root)"]
    assert "model output: (1,1000) → (1,10)" in render_trace_diff(d, "text")


@requires_dot
def test_the_diagram_legend_counts_the_changed_calls_the_text_counts():
    from shapetrace.renderers import diagram

    x = torch.randn(2, 8)
    d = diff_traces(trace(nest(), x), trace(nest(32), x))
    dot = diagram.to_dot(d.b, overlays=["diff"], options=diagram_options(d))
    assert "2 changed, " in render_trace_diff(d, "text") and "changed in B (2)" in dot


class Shared(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.block = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.block(x))


@requires_dot
def test_a_module_called_twice_counts_twice_in_text_and_legend():
    from shapetrace.renderers import diagram

    d = diff_traces(trace(Shared(8), torch.randn(2, 8)), trace(Shared(16), torch.randn(2, 16)))
    dot = diagram.to_dot(d.b, overlays=["diff"], options=diagram_options(d))
    assert "2 changed, " in render_trace_diff(d, "text") and "changed in B (2)" in dot


class NoChildren(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


def _empty_trace():
    from shapetrace import Tracer

    with Tracer(NoChildren()) as tracer:
        pass
    return tracer.trace


def test_a_trace_with_no_calls_is_said_to_have_recorded_none():
    d = diff_traces(_empty_trace(), trace(NoChildren(), torch.randn(2, 4)))
    text = render_trace_diff(d, "text")
    assert "A recorded no calls" in text and "nothing in common" not in text
    assert json.loads(render_trace_diff(d, "json"))["common"] is False


def test_two_traces_with_no_calls_have_no_differences():
    d = diff_traces(_empty_trace(), _empty_trace())
    assert d.common and "No differences" in render_trace_diff(d, "text")
    assert json.loads(render_trace_diff(d, "json"))["common"] is True


class Repeats(nn.Module):
    """Returns ``k`` copies of its Linear's output side by side: its own code sets its output's width."""

    def __init__(self, k: int, frozen: bool) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 8)
        self.k = k
        self.lin.weight.requires_grad_(not frozen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.lin(x)] * self.k, dim=1)


def test_a_container_whose_own_code_changed_its_output_is_changed_though_a_child_changed_too():
    x = torch.randn(2, 4)
    d = diff_traces(trace(nn.Sequential(Repeats(2, False)), x), trace(nn.Sequential(Repeats(3, True)), x))
    rows = {r.label: r for r in d.rows}
    # the child's change (a frozen weight) changes no shape: (2,16) → (2,24) is the container's own
    assert rows["0.lin"].status == "changed" and rows["0"].status == "changed"
    assert ("output", "(2,16)", "(2,24)") in rows["0"].changes
    assert [r.label for r in d.containing] == ["(root)"]
    assert "2 changed, 0 only in A, 0 only in B" in render_trace_diff(d, "text")



def statuses(a: nn.Module, xa: torch.Tensor, b: nn.Module, xb: torch.Tensor) -> dict[str, str]:
    return {r.label: r.status for r in diff_traces(trace(a.eval(), xa), trace(b.eval(), xb)).rows}


def test_a_linear_whose_sizes_swapped_is_changed_though_its_parameter_count_is_the_same():
    def model(i: int, o: int) -> nn.Module:
        return nn.Sequential(nn.Linear(8, i, bias=False), nn.Linear(i, o, bias=False))

    x = torch.randn(2, 8)
    # 16 → 32 in, 32 → 16 out: 512 parameters each; its input grew while its output shrank
    assert statuses(model(16, 32), x, model(32, 16), x)["1"] == "changed"


def test_an_upsampling_whose_factor_changed_with_the_channels_is_changed():
    def model(c: int, f: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, c, 1), nn.Upsample(scale_factor=f))

    x = torch.randn(2, 3, 8, 8)
    # the spatial ×2 matches the channels' ×2, but the input's height and width did not change
    assert statuses(model(16, 2), x, model(32, 4), x)["1"] == "changed"


def test_an_adaptive_pooling_whose_output_size_changed_with_the_channels_is_changed():
    def model(c: int, o: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, c, 1), nn.AdaptiveAvgPool2d(o))

    x = torch.randn(1, 3, 8, 8)
    assert statuses(model(16, 2), x, model(32, 4), x)["1"] == "changed"


def test_a_pooling_whose_output_shrank_while_its_input_grew_is_changed():
    def model(k: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.MaxPool2d(k))

    # MaxPool2d(2) on 32×32 → 16×16 against MaxPool2d(8) on 64×64 → 8×8
    s = statuses(model(2), torch.randn(1, 3, 32, 32), model(8), torch.randn(1, 3, 64, 64))
    assert s["0"] == "carried" and s["1"] == "changed"


def test_a_convolution_whose_stride_changed_is_changed_though_its_input_changed_too():
    def model(stride: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, stride=stride, padding=1))

    s = statuses(model(1), torch.randn(1, 3, 32, 32), model(4), torch.randn(1, 3, 64, 64))
    assert s["0"] == "carried" and s["1"] == "changed"


class Transpose(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class AddRows(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.zeros(1, 7, 1)


def test_a_flatten_a_transpose_and_a_broadcast_after_a_width_change_stay_carried():
    conv = statuses(nn.Sequential(nn.Conv2d(3, 16, 1), nn.Flatten()), torch.randn(2, 3, 4, 4),
                    nn.Sequential(nn.Conv2d(3, 24, 1), nn.Flatten()), torch.randn(2, 3, 4, 4))
    lin = statuses(nn.Sequential(nn.Linear(4, 16), Transpose()), torch.randn(2, 5, 4),
                   nn.Sequential(nn.Linear(4, 24), Transpose()), torch.randn(2, 5, 4))
    add = statuses(nn.Sequential(nn.Linear(4, 16), AddRows()), torch.randn(2, 1, 4),
                   nn.Sequential(nn.Linear(4, 24), AddRows()), torch.randn(2, 1, 4))
    assert conv["1"] == lin["1"] == add["1"] == "carried"
    assert conv["0"] == lin["0"] == add["0"] == "changed"


def test_a_convolution_without_padding_and_a_strided_one_on_a_bigger_image_stay_carried():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.MaxPool2d(3, 2, 1))
    s = statuses(model, torch.randn(1, 3, 32, 32), model, torch.randn(1, 3, 45, 45))
    assert set(s.values()) == {"carried"}


class FailsAt(nn.Module):
    """Five Linears; the forward raises in its own code before the ``at``-th."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(4, 4) for _ in range(5))
        self.at = at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            if i == self.at:
                raise RuntimeError(f"boom at {i}")
            x = layer(x)
        return x


def test_two_forwards_failing_with_different_errors_show_both_errors():
    x = torch.randn(2, 4)
    d = diff_traces(trace(FailsAt(2), x, strict=False), trace(FailsAt(4), x, strict=False))
    root = {r.label: r for r in d.rows}["(root)"]
    assert ("error", "RuntimeError: boom at 2", "RuntimeError: boom at 4") in root.changes
    text = render_trace_diff(d, "text")
    assert "boom at 2" in text and "boom at 4" in text


def test_two_forwards_failing_with_the_same_error_show_no_error_change():
    d = diff_traces(trace(FailsAt(2), torch.randn(2, 4), strict=False),
                    trace(FailsAt(2), torch.randn(3, 4), strict=False))
    assert not [c for r in d.rows for c in r.changes if c[0] == "error"]


def _blocks(shared_relu: bool) -> nn.Module:
    """Two Linear+ReLU blocks, given one ReLU module for both (as fastai's TabularModel does) or one each."""
    relu = nn.ReLU()
    acts = (relu, relu) if shared_relu else (nn.ReLU(), nn.ReLU())
    return nn.Sequential(nn.Sequential(nn.Linear(4, 8), acts[0]), nn.Sequential(nn.Linear(8, 8), acts[1]))


def test_a_module_shared_under_two_names_pairs_with_the_other_side_s_module_of_each_name():
    x = torch.randn(2, 4)
    d = diff_traces(trace(_blocks(True), x), trace(_blocks(False), x))
    assert not d.shown  # the shared ReLU's call as 1.1 pairs with B's own 1.1: nothing only in A or only in B
    assert "A shares one ReLU module under several names (0.1 = 1.1), B has one per name" in str(d)


def test_the_same_sharing_on_both_sides_is_no_difference_and_needs_no_note():
    x = torch.randn(2, 4)
    d = diff_traces(trace(_blocks(True), x), trace(_blocks(True), x))
    assert not d.shown and "shares" not in str(d)
