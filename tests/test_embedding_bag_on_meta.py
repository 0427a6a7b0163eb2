"""An ``EmbeddingBag`` given ids outside its rows fails on ``meta`` as it does on the CPU.

torch's ``meta`` kernel for ``embedding_bag`` reads no ids, so it would return a result where the CPU refuses
the call. A trace on ``meta`` checks the (real) ids as the CPU does, in every form of the call (a 2-D batch of
bags, 1-D ids with ``offsets``, ``per_sample_weights``, ``F.embedding_bag`` and ``torch.embedding_bag``
called directly), and fails with the CPU's kind of error and the explanation an ``Embedding`` gets: which ids
it got and how many rows it has.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import shapetrace
from shapetrace.tracer.api import TraceFailed

WEIGHT = torch.randn(7, 3)


class Bag(nn.Module):
    """``nn.EmbeddingBag`` called with the arguments a case gives."""

    def __init__(self, **options: object) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(7, 3, **options)

    def forward(self, ids: torch.Tensor, *args: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        return self.bag(ids, *args, **kwargs)


class Functional(nn.Module):
    def __init__(self, direct: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(WEIGHT.clone())
        self.direct = direct

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        if self.direct:  # torch.embedding_bag(weight, indices, offsets, scale_grad_by_freq, mode, ...)
            return torch.embedding_bag(self.weight, ids, offsets, False, 1)[0]
        return F.embedding_bag(ids, self.weight, offsets=offsets, mode="sum")


IDS = torch.arange(2, 10)  # 2..9: rows 7, 8 and 9 do not exist
CASES = {
    "a 2-D batch of bags": (Bag(), (IDS.reshape(2, 4),), {}),
    "1-D ids with offsets": (Bag(), (IDS, torch.tensor([0, 3])), {}),
    "per_sample_weights": (Bag(mode="sum"), (IDS.reshape(2, 4),), {"per_sample_weights": torch.rand(2, 4)}),
    "include_last_offset": (Bag(include_last_offset=True), (IDS, torch.tensor([0, 3, 8])), {}),
    "int32 ids and offsets": (Bag(), (IDS.int(), torch.tensor([0, 3], dtype=torch.int32)), {}),
}
FUNCTIONAL = {"F.embedding_bag": Functional(direct=False), "torch.embedding_bag": Functional(direct=True)}
EXPLAINED = ": the ids run from 2 to 9, and the embedding has 7 rows"


def _failure(model: nn.Module, args: tuple, kwargs: dict, device: str) -> shapetrace.Trace:
    with pytest.raises(TraceFailed) as failed:
        shapetrace.trace(model, *args, device=device, **kwargs)
    return failed.value.trace


@pytest.mark.parametrize("case", CASES)
def test_ids_outside_an_embedding_bags_rows_fail_on_meta_as_on_the_cpu_with_the_same_explanation(case):
    model, args, kwargs = CASES[case]
    on_cpu, on_meta = (_failure(model, args, kwargs, device) for device in ("cpu", "meta"))
    assert on_meta.failure.type == on_cpu.failure.type == "RuntimeError"
    assert on_meta.failure.message.endswith(EXPLAINED) and on_cpu.failure.message.endswith(EXPLAINED)
    assert on_meta.failure.message.count("the ids run from") == 1
    assert on_meta.failure.call == on_cpu.failure.call


@pytest.mark.parametrize("case", FUNCTIONAL)
def test_ids_outside_the_rows_given_to_the_embedding_bag_functions_fail_on_meta_as_on_the_cpu(case):
    args = (IDS, torch.tensor([0, 3]))
    on_cpu, on_meta = (_failure(FUNCTIONAL[case], args, {}, device) for device in ("cpu", "meta"))
    assert on_meta.failure.type == on_cpu.failure.type == "RuntimeError"
    assert on_meta.failure.message.endswith(EXPLAINED)


def test_negative_ids_given_to_an_embedding_bag_fail_on_meta():
    t = _failure(Bag(), (-IDS.reshape(2, 4),), {}, "meta")
    assert t.failure.message.endswith(": the ids run from -9 to -2, and the embedding has 7 rows")


def test_an_embedding_bag_given_ids_in_range_traces_on_meta_as_on_the_cpu():
    ids = torch.arange(0, 6).reshape(2, 3)
    on_meta = shapetrace.trace(Bag(mode="sum"), ids, per_sample_weights=torch.rand(2, 3), device="meta")
    on_cpu = shapetrace.trace(Bag(mode="sum"), ids, per_sample_weights=torch.rand(2, 3))
    assert on_meta.outputs.shape == on_cpu.outputs.shape == (2, 3)


def test_a_call_embedding_bag_refuses_for_another_reason_fails_on_meta_with_its_own_error():
    """2-D ids with offsets: ``F.embedding_bag`` refuses the call before any id is read, on both devices."""
    for device in ("cpu", "meta"):
        t = _failure(Bag(), (IDS.reshape(2, 4), torch.tensor([0, 1])), {}, device)
        assert t.failure.type == "ValueError" and "offsets has to be None" in t.failure.message
