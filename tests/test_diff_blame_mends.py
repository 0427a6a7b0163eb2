"""``shapetrace diff A B``: what is not a change of a layer's own. A strided layer rounding neighbouring input
sizes to the same output, a resize to a fixed size, parameters tied between two children, a container given
a different side input or a different size as a number; and the calls inside a layer whose class changed,
counted as calls only one side has."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from shapetrace.renderers.diff import diagram_options, diff_traces, render_trace_diff
from shapetrace.tracer.api import trace


def _io_shapes(model: nn.Module, x: torch.Tensor, name: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Submodule ``name``'s first input and output shapes through a plain forward hook (an independent
    oracle)."""
    seen = []
    handle = model.get_submodule(name).register_forward_hook(
        lambda m, i, o: seen.append((tuple(i[0].shape), tuple(o.shape))))
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen[0]


def _rows(model_a: nn.Module, model_b: nn.Module, xa: torch.Tensor, xb: torch.Tensor):
    d = diff_traces(trace(model_a, xa), trace(model_b, xb))
    return d, {r.label: r for r in d.rows}


def test_a_strided_convolution_on_an_input_one_pixel_smaller_is_carried():
    torch.manual_seed(0)
    m = torchvision.models.resnet18(weights=None).eval()
    xa, xb = torch.randn(1, 3, 224, 224), torch.randn(1, 3, 223, 223)
    # facts: conv1 has stride 2, and rounds 224 and 223 to the same 112
    assert m.conv1.stride == (2, 2)
    assert _io_shapes(m, xa, "conv1")[1] == _io_shapes(m, xb, "conv1")[1] == (1, 64, 112, 112)
    d, rows = _rows(m, m, xa, xb)
    assert rows["conv1"].status == "carried"
    assert not d.shown
    assert "No layer changed" in render_trace_diff(d, "text", width=None)


def test_poolings_rounding_neighbouring_sizes_to_the_same_output_are_carried():
    torch.manual_seed(0)
    floor = nn.Sequential(nn.Conv1d(4, 8, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool1d(2)).eval()
    ceil = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.MaxPool2d(2, ceil_mode=True)).eval()
    for model, xa, xb, pool in ((floor, torch.randn(1, 4, 100), torch.randn(1, 4, 101), "2"),
                                (ceil, torch.randn(1, 3, 31, 31), torch.randn(1, 3, 32, 32), "1")):
        (in_a, out_a), (in_b, out_b) = _io_shapes(model, xa, pool), _io_shapes(model, xb, pool)
        assert in_a != in_b and out_a == out_b  # facts: the inputs one apart, the outputs alike
        d, rows = _rows(model, model, xa, xb)
        assert rows[pool].status == "carried", rows[pool].changes
        assert not d.shown


def test_a_resize_to_a_fixed_size_is_carried_whatever_its_input():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Upsample(size=(32, 32)), nn.Conv2d(8, 8, 1)).eval()
    xa, xb = torch.randn(1, 3, 16, 16), torch.randn(1, 3, 20, 20)
    assert _io_shapes(m, xa, "1")[1] == _io_shapes(m, xb, "1")[1] == (1, 8, 32, 32)
    d, rows = _rows(m, m, xa, xb)
    assert rows["1"].status == "carried"
    assert not d.shown


class Tied(nn.Module):
    """A scale of its own between an encoder and a decoder, whose weights may be tied."""

    def __init__(self, tie: bool = True, freeze_scale: bool = False) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(10), requires_grad=not freeze_scale)
        self.enc = nn.Linear(10, 10)
        self.dec = nn.Linear(10, 10, bias=False)
        if tie:
            self.dec.weight = self.enc.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(self.enc(x) * self.scale)


def _own_trainable(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters(recurse=False) if p.requires_grad)


def test_a_frozen_parameter_of_its_own_shows_beside_weights_tied_between_its_children():
    a, b = Tied(), Tied(freeze_scale=True)
    assert (_own_trainable(a), _own_trainable(b)) == (10, 0)
    d, rows = _rows(a, b, torch.randn(2, 10), torch.randn(2, 10))
    root = rows["(root)"]
    assert root.status == "changed"
    assert any(what.startswith("trainable") for what, _, _ in root.changes)
    assert "No differences" not in render_trace_diff(d, "text", width=None)


def test_untying_two_childrens_weights_is_no_trainable_change_of_the_module_holding_them():
    a, b = Tied(), Tied(tie=False)
    assert _own_trainable(a) == _own_trainable(b) == 10
    _, rows = _rows(a, b, torch.randn(2, 10), torch.randn(2, 10))
    assert not any(what.startswith("trainable") for what, _, _ in rows["(root)"].changes)


class Block(nn.Module):
    """Joins its input with an encoder feature a hook stored (a side input, as in fastai's ``UnetBlock``),
    normalised by ``bn`` first."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(8)
        self.conv = nn.Conv2d(16, 8, 3, padding=1)
        self.stored: torch.Tensor | None = None
        encoder.register_forward_hook(lambda m, i, o: setattr(self, "stored", o))

    def forward(self, up: torch.Tensor) -> torch.Tensor:
        skip = self.bn(self.stored)
        return self.conv(torch.cat([F.interpolate(up, size=skip.shape[-2:]), skip], 1))


class UNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Conv2d(3, 8, 3, padding=1)
        self.down = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.block = Block(self.enc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.down(self.enc(x)))


def test_a_container_whose_side_input_changed_is_not_blamed_for_what_it_passes_on():
    torch.manual_seed(0)
    m = UNet().eval()
    xa, xb = torch.randn(1, 3, 31, 32), torch.randn(1, 3, 32, 32)
    # facts: the block is given the same tensor on both sides; its bn is given the stored skip, which is not
    assert _io_shapes(m, xa, "block")[0] == _io_shapes(m, xb, "block")[0] == (1, 8, 16, 16)
    assert (_io_shapes(m, xa, "block.bn")[0], _io_shapes(m, xb, "block.bn")[0]) == ((1, 8, 31, 32), (1, 8, 32, 32))
    d, rows = _rows(m, m, xa, xb)
    assert not any(what.startswith("passes to") for r in d.rows for what, _, _ in r.changes)
    assert rows["block"].status == "carried"
    assert not d.shown


class Up(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.conv(F.interpolate(x, size=size))


class Net(nn.Module):
    """Halves the image, then resizes it back to the size it is given as numbers."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.up = Up()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x), x.shape[-2:])


def test_a_container_given_a_different_size_as_numbers_is_not_blamed_for_what_it_passes_on():
    torch.manual_seed(0)
    m = Net().eval()
    xa, xb = torch.randn(1, 3, 63, 64), torch.randn(1, 3, 64, 64)
    assert _io_shapes(m, xa, "up")[0] == _io_shapes(m, xb, "up")[0] == (1, 8, 32, 32)
    assert _io_shapes(m, xa, "up.conv")[0] != _io_shapes(m, xb, "up.conv")[0]
    _, rows = _rows(m, m, xa, xb)
    assert not any(what.startswith("passes to") for what, _, _ in rows["up"].changes)
    assert rows["up.conv"].status == "carried"


def _calls_inside(model: nn.Module, x: torch.Tensor, name: str) -> int:
    """How many module calls run inside submodule ``name``, through plain forward hooks."""
    seen = []
    inner = [m for m in model.get_submodule(name).modules()][1:]
    handles = [m.register_forward_hook(lambda *_: seen.append(1)) for m in inner]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return len(seen)


def test_the_calls_inside_a_layer_whose_class_changed_count_as_only_on_that_side():
    torch.manual_seed(0)
    x = torch.randn(2, 16)
    a = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 4)).eval()
    b = nn.Sequential(nn.Linear(16, 16), nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))).eval()
    assert _calls_inside(b, x, "1") == 3
    d = diff_traces(trace(a, x), trace(b, x))
    assert "1 changed, 0 only in A, 3 only in B (of 3 calls in A and 6 in B)." in render_trace_diff(d, "text")
    inside = [c.id for c in d.b.calls if c.module.startswith("1.")]
    assert diagram_options(d)["diff"]["added_calls"] == inside and len(inside) == 3
