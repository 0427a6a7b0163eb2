"""A profile whose forward gives an embedding ids outside its rows fails with the explanation a failed trace has:
which ids it got and how many rows the embedding has, not only torch's bare "index out of range in self",
whether the profile's traced forward failed or a later timed run did."""

from __future__ import annotations

import pytest
import torch
from test_embedding_failure_message import Lookup
from torch import nn

import shapetrace
from shapetrace.tracer.api import TraceFailed


class Drifting(Lookup):
    """Shifts its ids by 3 from its fourth forward on: the profile's traced forward runs, and timed run 1 (forwards
    1 and 2: the timed runs start from the state the shape pass started from); run 2's instrumented one fails."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__(layer)
        self.forwards = 0

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        self.forwards += 1
        return self.emb(ids + 3 if self.forwards > 3 else ids)


LAYERS = {"Embedding": (lambda: nn.Embedding(10, 3), "IndexError"),
          "EmbeddingBag": (lambda: nn.EmbeddingBag(10, 3), "RuntimeError")}


@pytest.mark.parametrize("kind", LAYERS)
def test_ids_outside_an_embeddings_rows_in_the_profiles_traced_forward_are_explained(kind):
    make, error = LAYERS[kind]
    with pytest.raises(TraceFailed) as failed:
        shapetrace.profile(Lookup(make()), torch.arange(3, 11).reshape(2, 4), device="cpu", warmup=0, repeat=1)
    failure = failed.value.trace.failure
    assert failure.type == error and failure.message.endswith(": the ids run from 3 to 10, and the embedding has 10 rows")


@pytest.mark.parametrize("kind", LAYERS)
def test_ids_outside_an_embeddings_rows_in_a_timed_run_are_explained(kind):
    make, error = LAYERS[kind]
    with pytest.raises(TraceFailed) as failed:
        shapetrace.profile(Drifting(make()), torch.arange(0, 8).reshape(2, 4), device="cpu", warmup=0, repeat=2)
    t = failed.value.trace
    assert t.meta["failed_in_timed_run"] == {"run": 2, "of": 2, "warmup": 0} and t.failed_call.module == "emb"
    assert t.failure.type == error
    assert t.failure.message.endswith(": the ids run from 3 to 10, and the embedding has 10 rows")
    assert f"error: {error}: " in str(failed.value) and "the ids run from 3 to 10" in str(failed.value)
