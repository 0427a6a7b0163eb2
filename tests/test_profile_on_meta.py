"""``profile(..., device="meta")`` traces shapes exactly as ``trace(..., device="meta")`` does, and adds FLOPs
and memory from those shapes (nothing is timed on ``meta``).

So a forward that ``trace`` can run on ``meta`` (real tensors in the caller's objects, real integer inputs that
meet ``meta`` tensors) a profile on ``meta`` runs too, with the same shapes, and a forward that a trace on
``meta`` refuses with the CPU's error (ids outside an embedding's rows) the profile refuses with the same one.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import shapetrace
from shapetrace.tracer.api import TraceFailed
from shapetrace.tracer.records import iter_tensors


class Cache:
    """A caller's object holding a real CPU tensor, like transformers' ``DynamicCache`` after a real step."""

    def __init__(self) -> None:
        self.k = torch.zeros(1, 2, 4)


class Step(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, cache: Cache) -> torch.Tensor:
        cache.k = torch.cat([cache.k, self.lin(x)], dim=1)  # the cache's CPU tensor meets a meta one
        return cache.k.sum(1)


class Masked(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.emb(ids) * (ids != 0).unsqueeze(-1)  # a real mask (ids stay real on meta) times a meta tensor


def _shapes(trace: shapetrace.Trace) -> list[tuple]:
    """Each call's tensors as shape, dtype and device (tensor ids differ: a profile records ops)."""
    return [(c.module, c.call_index, [(m.shape, m.dtype, m.device) for _, m in iter_tensors([c.inputs, c.outputs])])
            for c in trace.calls]


def test_a_profile_on_meta_runs_a_forward_that_concatenates_the_callers_real_tensors_as_a_meta_trace_does():
    x = torch.randn(1, 3, 4)
    traced = shapetrace.trace(Step().eval(), x, Cache(), device="meta")
    cache = Cache()
    before = cache.k
    profiled = shapetrace.profile(Step().eval(), x, cache, device="meta")
    assert profiled.failure is None and _shapes(profiled) == _shapes(traced)
    assert profiled.calls[0].outputs.shape == (1, 4) and profiled.calls[1].flops == 2 * 3 * 4 * 4
    assert cache.k is before  # put back, as after the meta trace


def test_a_profile_on_meta_runs_a_forward_whose_real_integer_input_meets_meta_tensors():
    ids = torch.tensor([[1, 2, 0]])
    profiled = shapetrace.profile(Masked().eval(), ids, device="meta")
    assert _shapes(profiled) == _shapes(shapetrace.trace(Masked().eval(), ids, device="meta"))
    assert profiled.calls[0].outputs.shape == (1, 3, 4)


def test_a_profile_on_meta_fails_where_a_meta_trace_fails_with_the_same_error():
    ids = torch.arange(2, 10).reshape(2, 4)  # rows 7, 8 and 9 do not exist
    with pytest.raises(TraceFailed) as traced:
        shapetrace.trace(nn.Embedding(7, 3), ids, device="meta")
    with pytest.raises(TraceFailed) as profiled:
        shapetrace.profile(nn.Embedding(7, 3), ids, device="meta")
    assert profiled.value.trace.failure.text == traced.value.trace.failure.text
    assert profiled.value.trace.failure.message.endswith("the ids run from 2 to 9, and the embedding has 7 rows")
    assert profiled.value.trace.meta["profiled"] is True


def test_flops_on_meta_count_the_operations_a_meta_trace_answers_with_shape_formulas():
    """On ``meta`` a trace answers a Linear's matrix product with a shape formula, without running a kernel;
    a profile runs the kernel, so that the FLOP counter sees it: the counts are the CPU's."""
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.LayerNorm(16), nn.Linear(16, 2)).eval()
    x = torch.randn(5, 8)
    on_meta = shapetrace.profile(model, x, device="meta")
    on_cpu = shapetrace.profile(model, x, device="cpu", warmup=0, repeat=1)
    assert [c.flops for c in on_meta.calls] == [c.flops for c in on_cpu.calls]
    assert on_meta.calls[0].flops == 2 * 5 * 8 * 16 + 2 * 5 * 16 * 2
