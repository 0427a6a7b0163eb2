"""``shapetrace diff A B``: which row owns a change. A container's own code between two of its calls, a
layer's own parameters (not its subtree's), a window that changed under an output that did not, and counts
of calls rather than rows."""

from __future__ import annotations

import torch
import torchvision
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

from shapetrace.renderers.diff import diagram_options, diff_traces, render_trace_diff
from shapetrace.tracer.api import trace


class Net(nn.Module):
    """A stem, a body and a head; with ``stray_slice`` the forward halves the height and width in between."""

    def __init__(self, stray_slice: bool = False) -> None:
        super().__init__()
        self.stray_slice = stray_slice
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.stray_slice:
            x = x[:, :, ::2, ::2]
        return self.fc(self.pool(self.body(x)).flatten(1))


def _output_shapes(model: nn.Module, x: torch.Tensor, name: str) -> tuple[int, ...]:
    """The output shape of submodule ``name`` through a plain forward hook (an oracle independent of ours)."""
    seen = []
    handle = model.get_submodule(name).register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen[0]


def test_a_container_whose_own_code_reshapes_between_two_calls_is_changed_and_the_input_is_not_blamed():
    x = torch.randn(2, 3, 32, 32)
    a, b = Net().eval(), Net(stray_slice=True).eval()
    assert _output_shapes(a, x, "stem") == _output_shapes(b, x, "stem") == (2, 16, 32, 32)
    d = diff_traces(trace(a, x), trace(b, x))
    root = {r.label: r for r in d.rows}["(root)"]
    assert root.status == "changed"
    assert ("passes to body", "(2,16,32,32)", "(2,16,16,16)") in root.changes
    text = render_trace_diff(d, "text", width=None)
    assert "No layer changed" not in text and "because the input did" not in text
    assert "1 changed, 0 only in A, 0 only in B" in text
    assert diagram_options(d)["diff"]["changed"] == [""]  # the root, coloured in B's diagram


def test_layers_after_a_container_reshaped_their_input_are_carried_not_changed():
    x = torch.randn(2, 3, 32, 32)
    d = diff_traces(trace(Net().eval(), x), trace(Net(stray_slice=True).eval(), x))
    assert [r.label for r in d.shown] == ["(root)"]
    assert {"body", "body.0", "body.2"} <= {r.label for r in d.carried}


def vit(num_classes: int = 10, layers: int = 2) -> nn.Module:
    return VisionTransformer(image_size=32, patch_size=8, num_layers=layers, num_heads=4, hidden_dim=64,
                             mlp_dim=128, num_classes=num_classes).eval()


def test_a_container_with_parameters_of_its_own_is_not_changed_when_only_a_layer_inside_it_is():
    x = torch.randn(1, 3, 32, 32)
    a, b = vit(10), vit(20)
    assert [n for n, _ in a.named_parameters(recurse=False)] == ["class_token"]  # the root has its own
    d = diff_traces(trace(a, x), trace(b, x))
    assert [r.label for r in d.shown] == ["heads.head"]
    assert "trainable" not in render_trace_diff(d, "text", width=None)


def test_a_deeper_encoder_does_not_change_the_trainable_count_of_the_container_holding_it():
    x = torch.randn(1, 3, 32, 32)
    d = diff_traces(trace(vit(layers=2), x), trace(vit(layers=3), x))
    assert not [r for r in d.shown if any(what == "trainable" for what, _, _ in r.changes)]
    assert {r.status for r in d.shown} == {"only_b"}


def test_a_frozen_parameter_of_a_containers_own_is_a_trainable_change_of_that_container():
    x = torch.randn(1, 3, 32, 32)
    frozen = vit()
    frozen.class_token.requires_grad_(False)
    own = sum(p.numel() for p in frozen.parameters(recurse=False))
    d = diff_traces(trace(vit(), x), trace(frozen, x))
    assert [(r.label, r.changes) for r in d.shown] == [("(root)", [("trainable", f"{own:,}", "0")])]


def test_a_pooling_whose_window_grew_with_its_input_is_changed_though_its_output_is_the_same():
    small, big = nn.MaxPool2d(2), nn.MaxPool2d(4)
    assert (small.kernel_size, big.kernel_size) == (2, 4)
    d = diff_traces(trace(nn.Sequential(nn.Conv2d(3, 3, 1), small), torch.randn(1, 3, 32, 32)),
                    trace(nn.Sequential(nn.Conv2d(3, 3, 1), big), torch.randn(1, 3, 64, 64)))
    pool = {r.label: r for r in d.rows}["1"]
    assert pool.status == "changed"
    assert ("output", "(1,3,16,16)", "(1,3,16,16)") in pool.changes
    assert ("input", "(1,3,32,32)", "(1,3,64,64)") in pool.changes


def test_a_convolution_whose_stride_moved_in_is_changed_though_its_output_is_the_same():
    x = torch.randn(1, 3, 64, 64)
    r18, r50 = torchvision.models.resnet18(weights=None).eval(), torchvision.models.resnet50(weights=None).eval()
    assert (r18.layer2[0].conv2.stride, r50.layer2[0].conv2.stride) == ((1, 1), (2, 2))
    d = diff_traces(trace(r18, x), trace(r50, x))
    conv2 = {r.label: r for r in d.rows}["layer2.0.conv2"]
    assert conv2.status == "changed" and conv2 not in d.carried


def test_an_adaptive_pooling_on_a_bigger_input_stays_carried():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.AdaptiveAvgPool2d(4))
    d = diff_traces(trace(model, torch.randn(1, 3, 16, 16)), trace(model, torch.randn(1, 3, 32, 32)))
    assert d.shown == [] and {"0", "1"} <= {r.label for r in d.carried}


def _module_calls(model: nn.Module, x: torch.Tensor) -> int:
    """Every module call of a forward, counted with plain forward hooks."""
    count = [0]
    handles = [m.register_forward_hook(lambda *_: count.__setitem__(0, count[0] + 1)) for m in model.modules()]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return count[0]


def test_calls_only_one_side_has_are_counted_as_calls_with_those_folded_inside_them():
    x = torch.randn(1, 3, 32, 32)
    r18, r34 = torchvision.models.resnet18(weights=None).eval(), torchvision.models.resnet34(weights=None).eval()
    added = _module_calls(r34, x) - _module_calls(r18, x)
    d = diff_traces(trace(r18, x), trace(r34, x))
    assert f"0 changed, 0 only in A, {added} only in B" in render_trace_diff(d, "text", width=None)
    assert len(diagram_options(d)["diff"]["added_calls"]) == added


def test_calls_a_failed_forward_never_reached_are_counted_with_those_folded_inside_them():
    x = torch.randn(2, 3, 64, 64)
    r18 = torchvision.models.resnet18(weights=None).eval()
    broken = torchvision.models.resnet18(weights=None).eval()
    broken.layer2[0].conv1 = nn.Conv2d(64, 128, 3, stride=1, padding=1, bias=False)  # the skip no longer fits
    tb = trace(broken, x, strict=False)
    assert tb.failed
    missing = _module_calls(r18, x) - len(tb.calls)
    d = diff_traces(trace(r18, x), tb)
    assert f"{missing} calls not reached in B" in render_trace_diff(d, "text", width=None)
    assert diagram_options(d)["diff"]["unreached_in_b_calls"] == missing


def test_a_layer_whose_class_changed_shows_all_the_parameters_of_the_new_one():
    x = torch.randn(2, 3, 64, 64)
    a = torchvision.models.resnet50(weights=None).eval()
    b = torchvision.models.resnet50(weights=None).eval()
    b.fc = nn.Sequential(nn.Linear(2048, 256), nn.ReLU(), nn.Linear(256, 10))
    d = diff_traces(trace(a, x), trace(b, x))
    fc = {r.label: r for r in d.rows}["fc"]
    before, after = (sum(p.numel() for p in m.parameters()) for m in (a.fc, b.fc))
    assert ("params (all)", f"{before:,}", f"{after:,}") in fc.changes
