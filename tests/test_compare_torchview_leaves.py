"""``shapetrace diff MODEL --against torchview``: which of our calls torchview draws as nodes (modules without
submodules, by the model's own structure) and which it leaves out (modules fed only from a buffer), named."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

import shapetrace
from shapetrace.compare import diff_torchview


class DropEmbedding(nn.Module):
    """Looks words up in a shared embedding's weight functionally, never calling the embedding (as fastai's
    ``EmbeddingDropout`` does): a module with a submodule that calls none."""

    def __init__(self, emb: nn.Embedding) -> None:
        super().__init__()
        self.emb = emb

    def forward(self, words: torch.Tensor) -> torch.Tensor:
        return F.embedding(words, self.emb.weight)


class SharedEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Embedding(10, 8)
        self.encoder_dp = DropEmbedding(self.encoder)  # the same Embedding, under a second name
        self.out = nn.Linear(8, 3)

    def forward(self, words: torch.Tensor) -> torch.Tensor:
        return self.out(self.encoder_dp(words))


def test_a_module_whose_only_child_is_shared_under_another_name_is_not_a_leaf_torchview_missed():
    model, words = SharedEncoder().eval(), torch.randint(0, 10, (2, 5))
    assert [n for n, _ in model.encoder_dp.named_children()] == ["emb"]  # it has a submodule
    result = diff_torchview(model, shapetrace.trace(model, words), words)
    assert result.differences == []


class BufferFed(nn.Module):
    """Words embedded, plus a type embedding looked up in a buffer (as BERT's ``token_type_ids``) and a
    position embedding looked up in another (``position_ids``)."""

    def __init__(self) -> None:
        super().__init__()
        self.words = nn.Embedding(10, 8)
        self.types = nn.Embedding(2, 8)
        self.positions = nn.Embedding(5, 8)
        self.register_buffer("type_ids", torch.zeros(1, 5, dtype=torch.long))
        self.register_buffer("position_ids", torch.arange(5).unsqueeze(0))

    def forward(self, words: torch.Tensor) -> torch.Tensor:
        types = self.type_ids.expand(words.shape[0], -1)
        return self.words(words) + self.types(types) + self.positions(self.position_ids)


def test_a_layer_fed_only_from_a_buffer_is_named_with_the_reason_torchview_leaves_it_out():
    model, words = BufferFed().eval(), torch.randint(0, 10, (2, 5))
    result = diff_torchview(model, shapetrace.trace(model, words), words)
    rows = {d.layer: d for d in result.differences}
    # words and types give (2,5,8) alike: the row names types, the one torchview left out, not words
    assert set(rows) == {"types", "positions"}
    assert (rows["types"].shapetrace, rows["types"].other) == ("2", "1")
    assert all("only input is a buffer" in d.why for d in rows.values())
