"""A trace on another device leaves the objects its caller passed in as they were.

A forward may store into an object it is given (a key/value cache grows by one step at every call, as
transformers' ``DynamicCache`` does). On ``meta`` what it stores are tensors without values, which the caller's
next real forward cannot use; so after a ``meta`` trace (or one cast or on another device than the model), every
attribute, list, dict and set reachable from the arguments holds the very objects it held before, whether the
trace succeeded or failed. A trace on the model's own device leaves them as a plain forward does.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import shapetrace


class Cache:
    """A plain object holding tensors, like transformers' ``DynamicCache``."""

    def __init__(self) -> None:
        self.k = torch.zeros(1, 0, 4)


class Step(nn.Module):
    """One decoding step: appends its new keys to the cache it is given, as ``DynamicLayer.update`` does."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, cache: Cache) -> torch.Tensor:
        cache.k = torch.cat([cache.k, self.lin(x)], dim=1)
        return cache.k.sum(1)


def test_a_meta_trace_leaves_the_cache_it_was_given_holding_its_own_tensors() -> None:
    model, cache = Step().eval(), Cache()
    model(torch.randn(1, 3, 4), cache)  # a real step: the cache holds (1, 3, 4) on the CPU
    before = cache.k
    trace = shapetrace.trace(model, torch.randn(1, 2, 4), cache, device="meta")
    assert trace.outputs.shape == (1, 4)
    assert cache.k is before  # not a meta tensor grown by the traced step
    assert model(torch.randn(1, 2, 4), cache).shape == (1, 4)  # the next real forward runs
    assert cache.k.shape == (1, 5, 4)


class FailsAfterUpdating(Step):
    def forward(self, x: torch.Tensor, cache: Cache) -> torch.Tensor:
        super().forward(x, cache)
        return self.lin(cache.k.transpose(1, 2))  # (1, 4, n): a shape error after the cache was updated


def test_a_failed_meta_trace_puts_the_callers_objects_back_too() -> None:
    cache = Cache()
    before = cache.k
    with pytest.raises(shapetrace.TraceFailed):
        shapetrace.trace(FailsAfterUpdating().eval(), torch.randn(1, 2, 4), cache, device="meta")
    assert cache.k is before


class Layer:
    """A cache layer with ``__slots__``, as some caches are written."""

    __slots__ = ("keys", "seen")

    def __init__(self) -> None:
        self.keys = torch.zeros(1, 0, 4)


class LayeredCache:
    def __init__(self) -> None:
        self.layers = [Layer(), Layer()]
        self.lengths: dict[int, int] = {0: 0}
        self.tags = {"start"}


class UpdatesEverything(nn.Module):
    """Stores into a layered cache in every way a forward can: slots, list items, dict entries, set members,
    a new attribute, and a list the caller passed directly."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, cache: LayeredCache, outputs: list) -> torch.Tensor:
        h = self.lin(x)
        for i, layer in enumerate(cache.layers):
            layer.keys = torch.cat([layer.keys, h], dim=1)
            layer.seen = h
            cache.lengths[i] = layer.keys.shape[1]
        cache.layers.append(Layer())
        cache.tags.add("stepped")
        cache.last = h
        outputs.append(h)
        return h


def test_slots_lists_dicts_sets_and_new_attributes_in_the_callers_objects_are_put_back_after_a_meta_trace() -> None:
    cache, outputs = LayeredCache(), []
    layers, keys = list(cache.layers), [layer.keys for layer in cache.layers]
    shapetrace.trace(UpdatesEverything().eval(), torch.randn(1, 2, 4), cache, outputs, device="meta")
    assert cache.layers == layers and [layer.keys for layer in cache.layers] == keys
    assert all(not hasattr(layer, "seen") for layer in cache.layers)
    assert cache.lengths == {0: 0} and cache.tags == {"start"}
    assert not hasattr(cache, "last")
    assert outputs == []


class Remembers(Step):
    def forward(self, x: torch.Tensor, cache: Cache) -> torch.Tensor:
        cache.k = self.lin(x)
        return cache.k


def test_profile_on_meta_puts_the_callers_objects_back() -> None:
    cache = Cache()
    before = cache.k
    shapetrace.profile(Remembers().eval(), torch.randn(1, 2, 4), cache, device="meta")
    assert cache.k is before


def test_a_profile_cast_to_another_dtype_puts_the_callers_objects_back() -> None:
    """Cast (or on another device than the model's), what the forward stores is not what the caller's model
    makes: bfloat16 tensors here, where the model's own forward stores float32."""
    cache = Cache()
    before = cache.k
    shapetrace.profile(Remembers().eval(), torch.randn(1, 2, 4), cache, dtype="bf16", warmup=0, repeat=1)
    assert cache.k is before


def test_a_trace_on_the_models_own_device_updates_the_callers_objects_as_a_plain_forward_does() -> None:
    cache = Cache()
    shapetrace.trace(Step().eval(), torch.randn(1, 2, 4), cache)
    assert cache.k.shape == (1, 2, 4)


class WritesIntoTheCache(Step):
    def forward(self, x: torch.Tensor, cache: Cache) -> torch.Tensor:
        cache.k[:, : x.shape[1]] = self.lin(x)
        return cache.k.sum(1)


def test_a_meta_result_written_into_a_tensor_of_the_callers_objects_is_refused_rather_than_left_stale() -> None:
    """Writes into the caller's tensors themselves cannot be undone without copying them: on meta they are
    refused, so the caller's values never silently go stale."""
    cache = Cache()
    cache.k = torch.zeros(1, 3, 4)
    with pytest.raises(shapetrace.TraceFailed, match="writes a result computed on 'meta' into a real float32"):
        shapetrace.trace(WritesIntoTheCache().eval(), torch.randn(1, 2, 4), cache, device="meta")
    assert torch.equal(cache.k, torch.zeros(1, 3, 4))
