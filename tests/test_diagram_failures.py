"""How a diagram shows a forward that failed, and the marks on edges whose spatial size a stride changed.

A failure in a layer drawn as a node marks that node; one raised in a container's own code (``torch.cat`` in a
block's ``forward``, a ``view`` in the model's) marks the container's box and draws a failure node where the
forward stopped, fed by the tensors it held; the error's numbers show in the label."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
import torch
from conftest import requires_dot
from torch import nn

import shapetrace
from shapetrace.renderers.diagram import ERROR_COLOR, render, to_dot
from shapetrace.renderers.graph import build_graph

SVG = "{http://www.w3.org/2000/svg}"


class Down(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        s = self.conv(x)
        return self.pool(s), s


class Up(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        self.conv = nn.Conv2d(2 * cout, cout, 3, padding=1)

    def forward(self, x, skip):
        x = torch.cat([self.up(x), skip], dim=1)  # fails when pooling rounded an odd size down
        return self.conv(x)


class TinyUNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.d1 = Down(3, 8)
        self.d2 = Down(8, 16)
        self.mid = nn.Conv2d(16, 32, 3, padding=1)
        self.u2 = Up(32, 16)
        self.u1 = Up(16, 8)

    def forward(self, x):
        x, s1 = self.d1(x)
        x, s2 = self.d2(x)
        x = self.u2(self.mid(x), s2)
        return self.u1(x, s1)


class ViewBug(nn.Module):
    """Fails in its own forward: ``view`` of a transposed (non-contiguous) tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(16, 16)
        self.out = nn.Linear(128, 4)

    def forward(self, x):
        x = self.proj(x).transpose(1, 2)
        return self.out(x.view(x.size(0), -1))


class SharedBlock(nn.Module):
    """The shared ``block`` fails at its second call, on 32 features: a matmul shape mismatch."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Linear(16, 16)
        self.widen = nn.Linear(16, 32)

    def forward(self, x):
        return self.block(self.widen(self.block(x)))


def failed(model: nn.Module, *shape: int, ops: bool = False):
    torch.manual_seed(0)
    return shapetrace.trace(model.eval(), torch.randn(*shape), strict=False, ops=ops)


@pytest.fixture(scope="module")
def unet_30():
    return failed(TinyUNet(), 1, 3, 30, 30)


def test_a_failure_in_a_blocks_own_code_marks_its_box_and_ends_inside_it_fed_by_the_tensors_it_held(unet_30):
    g = build_graph(unet_30)
    u2 = next(c for c in g.clusters if c.name == "u2")
    assert u2.error is not None and u2.error.startswith("RuntimeError: Sizes of tensors must match")
    (fail,) = [n for n in g.nodes if n.kind == "failure"]
    assert (fail.name, fail.cluster, fail.error) == ("Up.forward", u2.id, u2.error)
    feeding = {(g.node(e.src).name, tuple(e.shapes[0])) for e in g.edges if e.dst == fail.id}
    # the upsampled tensor and the skip it was to be concatenated with: 14 against 15
    assert feeding == {("u2.up", (1, 16, 14, 14)), ("d2.conv", (1, 16, 15, 15))}
    assert [n for n in g.nodes if n.error] == [fail]  # no layer drawn as a node failed


@requires_dot
def test_the_picture_of_a_block_that_failed_in_its_own_code_shows_the_failure(unet_30):
    svg = ET.fromstring(render(unet_30, format="svg"))
    u2 = next(g for g in svg.iter(f"{SVG}g") if g.get("class") == "cluster" and "u2 (Up)" in
              (g.findtext(f"{SVG}title") or ""))
    assert next(u2.iter(f"{SVG}path")).get("stroke") == "#d32f2f"
    assert "error: RuntimeError: Sizes of tensors must match" in u2.findtext(f"{SVG}title")
    texts = " ".join(t.text or "" for t in svg.iter(f"{SVG}text"))
    assert "Up.forward" in texts and "failed: RuntimeError: Sizes of tensors must" in texts
    assert "Expected size 14" in texts


def test_the_u_layout_which_draws_no_boxes_still_shows_where_the_block_failed(unet_30):
    dot = to_dot(unet_30, layout="u")
    assert "Up.forward" in dot and "failed: RuntimeError: Sizes of tensors must" in dot


@pytest.mark.parametrize("ops", [False, True])
def test_a_failure_in_the_models_own_code_ends_the_picture_with_a_failure_node(ops):
    t = failed(ViewBug(), 2, 8, 16, ops=ops)
    g = build_graph(t)
    (fail,) = [n for n in g.nodes if n.kind == "failure"]
    assert (fail.name, fail.cluster) == ("ViewBug.forward", None)
    assert fail.error.startswith("RuntimeError: view size is not compatible")
    assert g.nodes[-1] is fail
    last = "transpose" if ops else "proj"  # with ops the transpose made the tensor that view failed on
    assert {(g.node(e.src).name, tuple(e.shapes[0])) for e in g.edges if e.dst == fail.id} == \
        {(last, (2, 16, 8) if ops else (2, 8, 16))}
    dot = to_dot(t)
    assert "failed: RuntimeError: view size is not" in dot


def test_a_model_folded_to_one_node_shows_its_failure_on_that_node_alone():
    g = build_graph(failed(ViewBug(), 2, 8, 16), depth=0)
    assert [n.kind for n in g.nodes if n.error] == ["call"]
    assert not [n for n in g.nodes if n.kind == "failure"]


class FailsOnSecondCall(nn.Module):
    """Fails in its own code (``torch.cat`` of mismatched rows) the second time it is called."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        y = self.lin(x)
        return torch.cat([y, torch.zeros(3, 5)]) if self.calls == 2 else y


class CallsTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = FailsOnSecondCall()

    def forward(self, x):
        return self.inner(self.inner(x))


def test_a_node_folding_two_calls_of_which_the_second_failed_is_drawn_failed():
    t = shapetrace.trace(CallsTwice(), torch.randn(2, 4), strict=False)
    assert t.failed and t.calls[t.failure.call].call_index == 1
    g = build_graph(t, depth=1)
    [node] = [n for n in g.nodes if n.kind == "call"]
    assert node.count == 2 and node.error is not None and "Sizes of tensors must match" in node.error
    assert "failed: RuntimeError: Sizes of tensors must" in to_dot(t, depth=1)


def test_a_failed_layers_label_keeps_the_numbers_of_a_shape_mismatch():
    dot = to_dot(failed(SharedBlock(), 2, 16))
    label = dot[dot.index("failed: RuntimeError"):]
    label = label[:label.index(">,")]
    assert "mat1 and mat2 shapes" in label and "(2x32 and 16x16)" in label
    assert "…" not in label


def test_a_long_error_in_a_label_is_wrapped_over_three_lines_and_cut_with_a_mark():
    from shapetrace.renderers.diagram import ERROR_LINES, ERROR_WIDTH, _error_lines

    lines = _error_lines("RuntimeError: " + "word " * 200)
    assert len(lines) == ERROR_LINES
    assert all(len(line) <= ERROR_WIDTH for line in lines)
    assert lines[-1].endswith("…")


class OddPools(nn.Module):
    """Stride-2 pools on 30×30: 15×15 exactly, then 7×7 (rounded down) and 4×4 (ceil mode, rounded up)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.p1 = nn.MaxPool2d(2)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.p2 = nn.MaxPool2d(2)
        self.c3 = nn.Conv2d(4, 4, 3, padding=1)
        self.p3 = nn.MaxPool2d(2, ceil_mode=True)
        self.up = nn.Upsample(size=(6, 6))  # 4 -> 6: not a whole factor
        self.c5 = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        x = self.p1(self.c1(x))
        x = self.p2(self.c2(x))
        x = self.p3(self.c3(x))
        return self.c5(self.up(x))


def test_a_stride_that_rounds_an_odd_size_is_marked_like_an_exact_one():
    torch.manual_seed(0)
    g = build_graph(shapetrace.trace(OddPools().eval(), torch.randn(1, 3, 30, 30)))
    change = {g.node(e.src).name: e.change for e in g.edges if e.src in {n.id for n in g.nodes}}
    assert change["p1"] == ("down", 2)  # 30 -> 15
    assert change["p2"] == ("down", 2)  # 15 -> 7, rounded down
    assert change["p3"] == ("down", 2)  # 7 -> 4, rounded up
    assert change["up"] is None         # 4 -> 6: neither a doubling rounded nor a whole factor


class RoundedUp(nn.Module):
    """Grows 12×15 to 23×30 (a U-Net block doubling to the size of a skip that was rounded up), then 23×30 to
    69×90 (tripled exactly)."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Upsample(size=(23, 30))
        self.up3 = nn.Upsample(scale_factor=3)
        self.c = nn.Conv2d(2, 2, 1)

    def forward(self, x):
        return self.c(self.up3(self.up(x)))


def test_a_doubling_that_rounds_to_an_odd_size_is_marked_like_an_exact_one():
    g = build_graph(shapetrace.trace(RoundedUp().eval(), torch.randn(1, 2, 12, 15)))
    change = {g.node(e.src).name: e.change for e in g.edges if e.src in {n.id for n in g.nodes}}
    assert change["up"] == ("up", 2)   # 12×15 -> 23×30: 24 rounded to the skip's 23
    assert change["up3"] == ("up", 3)  # exact, as before


def test_a_folded_body_whose_strides_rounded_several_times_gets_no_made_up_stride():
    body = nn.Sequential(*(nn.Conv2d(3 if i == 0 else 4, 4, 3, stride=2, padding=1) for i in range(3)))
    model = nn.Sequential(body, nn.Conv2d(4, 2, 1))  # body: 30 -> 15 -> 8 -> 4, which fits no single stride
    torch.manual_seed(0)
    g = build_graph(shapetrace.trace(model.eval(), torch.randn(1, 3, 30, 30)), depth=1)
    (edge,) = [e for e in g.edges if e.src in {n.id for n in g.find("0")}]
    assert tuple(edge.shapes[0]) == (1, 4, 4, 4) and edge.change is None


def test_an_exception_the_forward_caught_is_drawn_apart_from_the_failure():
    class Fallback(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc, self.dec, self.alt = nn.Linear(8, 16), nn.Linear(12, 4), nn.Linear(16, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.enc(x)
            try:
                y = self.dec(h)  # the fast path fails, and the forward falls back
            except RuntimeError:
                y = self.alt(h)
            return y.view(3, -1)  # then fails for good in its own code

    with pytest.raises(shapetrace.TraceFailed) as failed:
        shapetrace.trace(Fallback(), torch.randn(2, 8), ops=True)
    g = build_graph(failed.value.trace)
    (dec,) = g.find("dec")
    assert dec.error is None and "mat1 and mat2" in (dec.caught or "")
    dot = to_dot(failed.value.trace)
    (line,) = [ln for ln in dot.splitlines() if ln.strip().startswith(f"{dec.id} [")]
    assert "raised, caught:" in line and "dashed" in line and ERROR_COLOR not in line


def test_a_fallback_that_fails_in_its_except_clause_is_drawn_failed_and_named_as_what_the_forward_raised():
    class Fallback(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fast, self.slow = nn.Linear(3, 4), nn.Linear(5, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            try:
                return self.fast(x)
            except RuntimeError:
                return self.slow(x)  # fails too: its exception is the one that leaves the forward

    with pytest.raises(shapetrace.TraceFailed) as failed:
        shapetrace.trace(Fallback(), torch.randn(2, 4))
    g = build_graph(failed.value.trace)
    (slow,) = g.find("slow")
    assert slow.error is not None and slow.caught is None
    raiser, text = failed.value.trace.raised_instead()
    assert raiser.module == "slow" and "2x4 and 5x4" in text
    assert "slow (Linear) raised it from the error above" in str(failed.value)
