"""`shapetrace diff`: disagreements with torchinfo and torchview, each with its reason."""

from __future__ import annotations

import pytest
import torch
import torchvision
from click.testing import CliRunner
from torch import nn

import shapetrace
from shapetrace.cli import main
from shapetrace.compare import diff_torchinfo, diff_torchview


def test_resnet18_agrees_with_torchinfo_and_torchview_on_every_call():
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    trace = shapetrace.trace(model, x)
    for result in (diff_torchinfo(model, trace, x), diff_torchview(model, trace, x)):
        assert result.differences == [], result.tool
        assert result.matched == result.their_calls


def test_lstm_tuple_output_is_reported_with_the_reason_torchinfo_differs():
    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.lstm = nn.LSTM(4, 6)

        def forward(self, x):
            return self.lstm(self.emb(x))

    model, x = Tagger(), torch.randint(0, 10, (5, 2))
    result = diff_torchinfo(model, shapetrace.trace(model, x), x)
    lstm = [d for d in result.differences if d.layer == "lstm"]
    assert [(d.what, d.shapetrace, d.other) for d in lstm] == [("outputs", "(5,2,6), (1,2,6), (1,2,6)", "[5, 2, 6]")]
    assert "first tensor" in lstm[0].why


def test_tied_language_model_total_differs_by_the_tied_weight():
    result = CliRunner().invoke(main, ["diff", "awd-lstm-language-model", "--against", "torchinfo", "-f", "md"])
    assert result.exit_code == 0, result.output
    assert "| (total) | params | 20,674,280 | 21,074,280 |" in result.output  # 400,000 tied weights twice


def test_fast_path_layer_shows_sublayers_torchview_draws_but_eval_never_runs():
    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True).eval()
    x = torch.randn(2, 5, 16)
    result = diff_torchview(layer, shapetrace.trace(layer, x), x)
    assert result.differences
    assert all("fast path" in d.why or "fused layer" in d.why for d in result.differences)


class Tokens(nn.Module):
    """A forward whose inputs are named, as Hugging Face models take them (``input_ids=...``)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb, self.fc = nn.Embedding(10, 8), nn.Linear(8, 3)

    def forward(self, input_ids: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        h = self.emb(input_ids)
        return self.fc(h if x is None else h + x)


def test_keyword_inputs_reach_torchinfo_and_torchview_and_both_agree():
    model = Tokens()
    ids = torch.randint(0, 10, (2, 16))
    trace = shapetrace.trace(model, input_ids=ids)
    assert diff_torchinfo(model, trace, input_ids=ids).differences == []
    assert diff_torchview(model, trace, input_ids=ids).differences == []
    x = torch.randn(2, 16, 8)  # "x" is also the name of torchinfo's own forward_pass argument
    trace = shapetrace.trace(model, input_ids=ids, x=x)
    assert diff_torchinfo(model, trace, input_ids=ids, x=x).differences == []


def test_a_keyword_input_that_clashes_with_a_tool_option_beside_positional_ones_is_refused_with_advice():
    model = Tokens()
    ids, x = torch.randint(0, 10, (2, 16)), torch.randn(2, 16, 8)
    trace = shapetrace.trace(model, ids, x=x)
    with pytest.raises(ValueError, match="Give every input by keyword"):
        diff_torchinfo(model, trace, ids, x=x)


class _DictOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(3, 4)

    def forward(self, x):
        return {"logits": self.enc(x), "hidden": x}


def test_a_dict_output_torchinfo_sizes_by_its_last_entry_is_explained_not_a_disagreement():
    model, x = _DictOut(), torch.randn(2, 3)
    result = diff_torchinfo(model, shapetrace.trace(model, x), x)
    (root,) = [d for d in result.differences if d.layer == "(root)"]
    assert (root.what, root.shapetrace, root.other) == ("output shape", "(2,4)", "[2, 3]")  # torchinfo's own answer
    assert "last entry" in root.why and "'hidden'" in root.why


def test_a_hugging_face_model_output_torchinfo_reports_as_empty_is_explained_not_a_disagreement():
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=100, n_positions=64)
    model = transformers.GPT2LMHeadModel(config).eval()
    ids = torch.randint(0, 100, (1, 8), generator=torch.Generator().manual_seed(0))
    result = diff_torchinfo(model, shapetrace.trace(model, input_ids=ids), input_ids=ids)
    root = next(d for d in result.differences if d.layer == "(root)")
    assert (root.shapetrace, root.other) == ("(1,8,100)", "[]")
    assert "ModelOutput" in root.why and "last entry" in root.why
    assert all(d.why != "disagreement" for d in result.differences), result.differences


class _NoneFirst(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(3, 4)

    def forward(self, x):
        return None, self.enc(x)


def test_a_tuple_output_whose_first_item_is_none_is_explained_not_a_disagreement():
    model, x = _NoneFirst(), torch.randn(2, 3)
    result = diff_torchinfo(model, shapetrace.trace(model, x), x)
    (root,) = [d for d in result.differences if d.layer == "(root)"]
    assert (root.shapetrace, root.other) == ("(2,4)", "[]")
    assert root.why == "torchinfo sizes a sequence output by its first item alone: None, as []"

