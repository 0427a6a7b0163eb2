"""Value trees of live values (``tracer/values``): objects that carry tensors in their attributes, and the bounds
that keep a hostile object from blowing up a trace."""

from __future__ import annotations

import torch
from torch import nn

import shapetrace
from shapetrace.tracer import values
from shapetrace.tracer.records import Opaque, Struct, iter_tensors
from shapetrace.tracer.values import describe, iter_live_tensors


class Batch:
    """A plain object carrying a tensor between layers, as torchvision's ImageList does."""

    def __init__(self, tensors: torch.Tensor, sizes: list[tuple[int, int]]) -> None:
        self.tensors = tensors
        self.sizes = sizes


class Batches(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> Batch:
        return Batch(x * 2, [tuple(x.shape[-2:])])


class Reads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.make, self.conv = Batches(), nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.make(x).tensors)


def test_an_object_holding_a_tensor_is_recorded_by_its_attributes_and_the_tensor_keeps_its_identity():
    trace = shapetrace.trace(Reads(), torch.randn(1, 3, 8, 8))
    made, conv = trace.calls_of("make")[0], trace.calls_of("conv")[0]
    assert made.outputs == Struct("Batch", {"tensors": made.outputs.fields["tensors"], "sizes": [[8, 8]]})
    assert made.outputs.fields["tensors"].tid == conv.inputs[0].tid
    assert ("call:1", "call:2") in [(e.src, e.dst) for e in trace.edges]


class Config:
    def __init__(self) -> None:
        self.width, self.name = 4, "cfg"


def test_an_object_without_tensors_stays_opaque_as_before():
    assert describe(Config()) == Opaque("Config", "<test_values.Config object>")


def test_an_object_that_holds_itself_is_described_once_and_its_tensors_found_once():
    x = Batch(torch.zeros(2), [])
    x.again, x.twice = x, [x, x]  # a cycle, twice over: objects inside an opened object stay opaque
    tree = describe(x)
    assert type(tree) is Struct and type(tree.fields["again"]) is Opaque
    assert [type(v) for v in tree.fields["twice"]] == [Opaque, Opaque]
    assert [t.shape for t in iter_live_tensors(x)] == [(2,)]
    assert [path for path, _ in iter_tensors(tree)] == [".tensors"]


def test_an_object_with_more_attributes_than_the_limit_stays_opaque():
    crowded = Batch(torch.zeros(2), [])
    for i in range(values.MAX_ATTRIBUTES):
        setattr(crowded, f"a{i}", i)
    assert type(describe(crowded)) is Opaque
    assert list(iter_live_tensors(crowded)) == []


def test_a_module_or_a_class_passed_as_a_value_is_not_opened():
    layer = nn.Linear(2, 2)
    layer.scale = torch.ones(2)  # a tensor attribute in its instance dictionary
    Batch.shared = torch.ones(1)
    try:
        assert type(describe(layer)) is Opaque and type(describe(Batch)) is Opaque
    finally:
        del Batch.shared


def test_an_object_whose_dictionary_cannot_be_read_stays_opaque():
    class Hostile(Batch):
        @property
        def __dict__(self):
            raise RuntimeError("no")

    assert type(describe(Hostile(torch.zeros(3), []))) is Opaque
