"""A profile leaves the caller's objects as they were: the forward ``profile()`` runs to make a copy's lazy
layers, and the profile's own forwards.

A model with lazy layers not made yet is profiled on a copy, which shapetrace first runs once, by itself, on the
caller's arguments, so that its layers make their weights. That forward is one more than the profile's own; what
it stores into an object the caller passed (a key/value cache it grows) is put back (``arguments_kept``), so the
caller's objects end as after the same profile of a model whose layers were made already.
"""

from __future__ import annotations

import torch
from torch import nn

import shapetrace


class Cache:
    def __init__(self) -> None:
        self.k = torch.zeros(1, 0, 4)
        self.steps: list[int] = []


class Step(nn.Module):
    """Appends its new keys to the cache it is given, and counts its steps there."""

    def __init__(self, lin: nn.Module) -> None:
        super().__init__()
        self.lin = lin

    def forward(self, x: torch.Tensor, cache: Cache) -> torch.Tensor:
        cache.k = torch.cat([cache.k, self.lin(x)], dim=1)
        cache.steps.append(len(cache.steps))
        return cache.k.sum(1)


def test_a_cast_profile_of_a_model_with_lazy_layers_leaves_the_callers_cache_as_it_was():
    cache = Cache()
    before = cache.k
    trace = shapetrace.profile(Step(nn.LazyLinear(4)).eval(), torch.randn(1, 3, 4), cache, dtype="bf16", warmup=0,
                               repeat=1)
    assert trace.meta["lazy_traced_on_copy"] == ["lin"]
    assert cache.k is before and cache.steps == []


def test_a_lazy_models_profile_leaves_the_callers_objects_as_the_profile_of_a_made_model_does():
    """Both put the caller's cache back as it was: neither the forward that made the lazy layers nor the
    profile's own forwards leave anything in it."""
    lazy, made = Cache(), Cache()
    x = torch.randn(1, 3, 4)
    shapetrace.profile(Step(nn.LazyLinear(4)).eval(), x, lazy, device="cpu", warmup=0, repeat=1)
    shapetrace.profile(Step(nn.Linear(4, 4)).eval(), x, made, device="cpu", warmup=0, repeat=1)
    assert lazy.k.shape == made.k.shape == (1, 0, 4) and lazy.steps == made.steps == []


def test_a_profile_on_the_models_own_device_puts_the_callers_cache_back_after_its_many_forwards():
    """A default profile runs 27 forwards; a cache each of them grows would come back 27 steps longer. A profile
    measures the forward, it is not one: the caller's objects end as they were, like the model and the RNG."""
    cache = Cache()
    before = cache.k
    trace = shapetrace.profile(Step(nn.Linear(4, 4)).eval(), torch.randn(1, 3, 4), cache, device="cpu")
    assert trace.calls[0].module == "" and trace.timing is not None
    assert cache.k is before and cache.steps == []


def test_a_profile_puts_back_the_objects_passed_through_forward_kwargs():
    """``forward_kwargs`` reach the forward like ``**kwargs`` do; what it stores into them is put back too."""
    cache = Cache()
    before = cache.k
    shapetrace.profile(Step(nn.Linear(4, 4)).eval(), torch.randn(1, 3, 4), device="meta", warmup=0, repeat=1,
                       forward_kwargs={"cache": cache})
    assert cache.k is before and cache.steps == []
