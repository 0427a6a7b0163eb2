"""A nested tensor (``torch.nested``), which has no plain shape, is recorded as what it is: its number of
components and their shapes, as torch itself gives them (the first few, the rest counted)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import shapetrace
from shapetrace.tracer.records import Opaque


class Layer(nn.Module):
    """Passes a nested tensor on: its input and output are the nested tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Outer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = Layer()

    def forward(self, parts: list[torch.Tensor], layout: torch.layout) -> torch.Tensor:
        return self.layer(torch.nested.nested_tensor(parts, layout=layout))


@pytest.mark.parametrize(("layout", "suffix"), [(torch.strided, ""), (torch.jagged, " jagged")])
def test_a_nested_tensor_is_recorded_with_its_components_shapes(layout, suffix):
    parts = [torch.randn(5, 8), torch.randn(3, 8)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nested = torch.nested.nested_tensor(parts, layout=layout)
        t = shapetrace.trace(Outer(), parts, layout)
    shapes = [tuple(c.shape) for c in nested.unbind()]  # torch's own components
    assert shapes == [(5, 8), (3, 8)]
    expected = Opaque("NestedTensor", f"nested(2: (5,8), (3,8)){suffix}")
    (layer,) = t.calls_of("layer")
    assert layer.inputs == [expected] and layer.outputs == expected
    assert shapetrace.load(t.to_json()).calls_of("layer")[0].outputs == expected
    assert f"nested(2: (5,8), (3,8)){suffix}" in str(t.table(width=140))


def test_a_nested_tensor_of_many_components_lists_the_first_few_and_counts_the_rest():
    parts = [torch.zeros(n + 1, 2, dtype=torch.int64) for n in range(10)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = shapetrace.trace(Outer(), parts, torch.strided)
    assert t.calls_of("layer")[0].outputs == Opaque("NestedTensor", "nested(10: (1,2), (2,2), (3,2), (4,2), … +6) int64")


def test_a_narrowed_jagged_nested_tensor_is_recorded_with_its_own_lengths():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nested = torch.nested.narrow(torch.randn(3, 10, 4), 1, torch.tensor([0, 2, 1]), torch.tensor([3, 5, 2]),
                                     layout=torch.jagged)
        t = shapetrace.trace(Layer(), nested)
    assert [tuple(c.shape) for c in nested.unbind()] == [(3, 4), (5, 4), (2, 4)]  # torch's own components
    assert t.calls[0].outputs == Opaque("NestedTensor", "nested(3: (3,4), (5,4), (2,4)) jagged")
