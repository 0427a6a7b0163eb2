"""An embedding given ids outside its rows fails with the same explanation on the CPU as on ``meta``: which ids
it got and how many rows it has, not torch's bare "index out of range in self"."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import shapetrace
from shapetrace.tracer import capture, shape_only
from shapetrace.tracer.api import TraceFailed

EXPLAINED = "index out of range in self: the ids run from 2 to 9, and the embedding has 7 rows"


class Lookup(nn.Module):
    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.emb = layer

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.emb(ids)


IDS = torch.arange(2, 10).reshape(2, 4)  # 2..9: rows 7, 8 and 9 do not exist


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_ids_outside_an_embeddings_rows_are_explained_on_the_cpu_as_on_meta(device):
    with pytest.raises(TraceFailed) as failed:
        shapetrace.trace(Lookup(nn.Embedding(7, 3)), IDS, device=device)
    t = failed.value.trace
    assert t.failure.type == "IndexError" and t.failure.message == EXPLAINED
    assert t.calls[t.failure.call].error == f"IndexError: {EXPLAINED}"
    assert f"error: IndexError: {EXPLAINED}" in str(failed.value)


def test_an_embedding_bags_cryptic_failure_on_the_cpu_says_which_ids_it_got():
    with pytest.raises(TraceFailed) as failed:
        shapetrace.trace(Lookup(nn.EmbeddingBag(7, 3)), IDS)
    assert failed.value.trace.failure.message.endswith(": the ids run from 2 to 9, and the embedding has 7 rows")


def test_the_explanation_is_worked_out_only_after_a_forward_that_failed(monkeypatch):
    def never(*_: object) -> None:
        raise AssertionError("explained a forward that did not fail in an embedding")

    monkeypatch.setattr(capture, "explain_embedding_failure", never)
    shapetrace.trace(Lookup(nn.Embedding(10, 3)), IDS)  # ids in range: nothing to explain
    with pytest.raises(TraceFailed, match="mat1 and mat2 shapes cannot be multiplied"):
        shapetrace.trace(Lookup(nn.Linear(5, 3)), torch.randn(2, 4))  # fails, but not in an embedding


class DirectLookup(nn.Module):
    """Calls ``torch.embedding(weight, ids)`` itself, as some libraries do, not through ``F.embedding``."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(7, 3))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.embedding(self.weight, ids)


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_a_direct_torch_embedding_call_with_ids_outside_its_rows_fails_on_meta_as_on_the_cpu(device):
    with pytest.raises(TraceFailed) as failed:
        shapetrace.trace(DirectLookup(), IDS, device=device)
    assert failed.value.trace.failure.type == "IndexError"
    if device == "meta":
        assert failed.value.trace.failure.message == EXPLAINED


def test_an_explanation_that_cannot_be_worked_out_leaves_the_original_failure(monkeypatch):
    """Reading CUDA ids after a device-side assert raises again; the trace still fails with torch's error."""
    def unreadable(*_: object) -> None:
        raise RuntimeError("CUDA error: device-side assert triggered")

    monkeypatch.setattr(shape_only, "embedding_ids_problem", unreadable)
    with pytest.raises(TraceFailed) as failed:
        shapetrace.trace(Lookup(nn.Embedding(7, 3)), IDS)
    assert failed.value.trace.failure.type == "IndexError"
    assert failed.value.trace.failure.message == "index out of range in self"
