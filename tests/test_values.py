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


class KeyedByInput(nn.Module):
    """Returns its outputs in a dict keyed by the tensors they were computed from."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(64, 4)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict:
        return {x: self.lin(x), y: self.lin(y)}


def test_a_tensor_used_as_a_dict_key_is_named_by_its_shape_and_its_values_stay_out_of_the_trace():
    ones = shapetrace.trace(KeyedByInput(), torch.ones(8, 64), torch.ones(2, 64))
    noise = shapetrace.trace(KeyedByInput(), torch.randn(8, 64), torch.randn(2, 64))
    assert list(noise.outputs) == ["Tensor(8, 64) float32", "Tensor(2, 64) float32"]
    assert noise.to_json() == ones.to_json()  # nothing of the key's values is recorded


def test_two_tensor_keys_of_one_shape_stay_two_keys_each_with_its_own_value():
    trace = shapetrace.trace(KeyedByInput(), torch.randn(8, 64), torch.randn(8, 64))
    first, second = trace.calls_of("lin")
    assert list(trace.outputs) == ["Tensor(8, 64) float32", "Tensor(8, 64) float32 #2"]
    assert [v.tid for v in trace.outputs.values()] == [first.outputs.tid, second.outputs.tid]
    assert {e.dst for e in trace.edges if e.dst.startswith("output:")} == {
        "output:['Tensor(8, 64) float32']", "output:['Tensor(8, 64) float32 #2']"}


def test_a_long_key_is_cut_to_a_short_name_and_keys_that_would_collide_stay_distinct():
    long_key, other = ("a",) * 40, ("a",) * 40 + ("b",)  # one repr long, the other's first 77 characters alike
    named = describe({long_key: 1, other: 2, 1: 3, "1": 4})
    assert list(named.values()) == [1, 2, 3, 4]
    assert all(len(k) <= 84 for k in named)
    assert list(named)[2:] == ["1 (int)", "1"]
