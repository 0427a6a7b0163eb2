"""Tensor properties that are data flow (``k.T``, ``.mT``, ``.H``, ``.mH``, ``.real``, ``.imag``, ``.data``) are
ops with ``ops=True``: named after the property, with edges in and out, in the diagram and the lines view, on
a real run and on ``meta``. Property reads that are metadata (``.shape``) or another tensor (``.grad``) are not."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import shapetrace
from shapetrace.renderers.graph import build_graph


class Attention(nn.Module):
    """The textbook attention line: ``q @ k.T``."""

    def __init__(self):
        super().__init__()
        self.q = nn.Linear(8, 8)
        self.k = nn.Linear(8, 8)
        self.o = nn.Linear(4, 3)

    def forward(self, x):
        q = self.q(x)
        k = self.k(x)
        return self.o(q @ k.T)


class ThroughProperty(nn.Module):
    """A property read between two layers: ``o(getattr(k(x), prop))``."""

    def __init__(self, prop: str, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.prop = prop
        self.k = nn.Linear(4, 4, dtype=dtype)
        self.o = nn.Linear(4, 3)

    def forward(self, x):
        return self.o(getattr(self.k(x), self.prop))


class ComplexHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8, dtype=torch.complex64)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        z = torch.fft.fft(self.lin(x))
        return self.head(z.real), z.imag


def _reachable(trace, start: str) -> set[str]:
    succ: dict[str, set[str]] = {}
    for e in trace.edges:
        succ.setdefault(e.src, set()).add(e.dst)
    seen, todo = {start}, [start]
    while todo:
        for nxt in succ.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_q_at_k_transposed_takes_the_key_layer_through_a_T_op_into_the_matmul():
    trace = shapetrace.trace(Attention(), torch.randn(4, 8), ops=True)
    k, q = trace.calls_of("k")[0], trace.calls_of("q")[0]
    transpose = next(o for o in trace.ops if o.name == "T")
    matmul = next(o for o in trace.ops if o.name == "matmul")
    assert transpose.outputs.shape == (8, 4)
    into_matmul = {(e.src, e.tid) for e in trace.edges if e.dst == f"op:{matmul.id}"}
    assert into_matmul == {(f"call:{q.id}", matmul.inputs[0].tid), (f"op:{transpose.id}", matmul.inputs[1].tid)}
    assert any(e.src == f"call:{k.id}" and e.dst == f"op:{transpose.id}" for e in trace.edges)


@pytest.mark.parametrize("prop", ["T", "mT", "H", "mH", "data"])
def test_a_property_read_between_two_layers_keeps_the_output_reachable_from_the_input(prop: str):
    trace = shapetrace.trace(ThroughProperty(prop), torch.randn(4, 4), ops=True)
    assert [o.name for o in trace.ops] == [prop]
    assert "output:out" in _reachable(trace, "input:0")


@pytest.mark.parametrize("prop", ["real", "imag"])
def test_the_real_and_imaginary_parts_of_a_complex_layer_are_ops_with_their_float_shape(prop: str):
    model = ThroughProperty(prop, dtype=torch.complex64)
    x = torch.randn(4, 4, dtype=torch.complex64)
    trace = shapetrace.trace(model, x, ops=True)
    part = getattr(model.k(x), prop)  # torch's own answer
    op = next(o for o in trace.ops if o.name == prop)
    assert (op.outputs.shape, op.outputs.dtype) == (tuple(part.shape), "float32")
    assert "output:out" in _reachable(trace, "input:0")


def test_a_returned_imaginary_part_comes_from_its_op_not_from_the_model_itself():
    trace = shapetrace.trace(ComplexHead(), torch.randn(2, 8, dtype=torch.complex64), ops=True)
    imag = next(o for o in trace.ops if o.name == "imag")
    into_outputs = {e.dst: e.src for e in trace.edges if e.dst.startswith("output:")}
    assert into_outputs == {"output:[0]": f"call:{trace.calls_of('head')[0].id}", "output:[1]": f"op:{imag.id}"}
    assert {"output:[0]", "output:[1]"} <= _reachable(trace, "input:0")


class ReadsMetadata(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        h = self.lin(x)
        has_grad = self.lin.weight.grad is not None  # the weight's gradient: another tensor, not data flow
        return h.reshape(h.shape[0], h.ndim, -1) if has_grad and h.dtype == torch.float32 else h


def test_property_reads_that_are_metadata_or_another_tensor_are_not_ops():
    model = ReadsMetadata()
    model.lin.weight.grad = torch.ones(4, 4)
    trace = shapetrace.trace(model, torch.randn(2, 4), ops=True)
    names = [o.name for o in trace.ops]
    assert not {"shape", "ndim", "dtype", "grad"} & set(names)
    assert "reshape" in names


def test_the_diagram_draws_a_transpose_property_and_folds_data_into_the_edge():
    graph = build_graph(shapetrace.trace(Attention(), torch.randn(4, 8), ops=True))
    transpose = graph.find("T")[0]
    assert any(e.src == graph.find("k")[0].id and e.dst == transpose.id for e in graph.edges)
    detached = build_graph(shapetrace.trace(ThroughProperty("data"), torch.randn(4, 4), ops=True))
    into_o = next(e for e in detached.edges if e.dst == detached.find("o")[0].id)
    assert into_o.src == detached.find("k")[0].id and into_o.via == ["data"]


def test_the_lines_view_shows_the_shape_a_property_read_makes_on_its_line():
    trace = shapetrace.trace(Attention(), torch.randn(4, 8), ops=True, lines=True)
    line = next(row for row in str(trace.lines()).splitlines() if "q @ k.T" in row)
    assert "T → (8,4)" in line


def test_property_ops_on_meta_have_the_names_and_shapes_of_the_real_run():
    real = shapetrace.trace(Attention(), torch.randn(4, 8), ops=True)
    meta = shapetrace.trace(Attention(), torch.randn(4, 8), ops=True, device="meta")
    assert [(o.name, o.outputs.shape) for o in meta.ops] == [(o.name, o.outputs.shape) for o in real.ops]
    assert ("T", (8, 4)) in [(o.name, o.outputs.shape) for o in meta.ops]
    assert {(e.src, e.dst) for e in meta.edges} == {(e.src, e.dst) for e in real.edges}
