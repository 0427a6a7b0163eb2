"""Per-layer shapes and parameter counts against torchinfo, run live as an independent oracle.

Where torchinfo 1.8 is known to be wrong, the tests pin the correct values and say how torchinfo differs:
it keeps only the first element of a tuple output, so an LSTM's ``(h_n, c_n)`` is lost; it attributes a
shared module to one parent; and it counts a shared or tied parameter once per place it is registered.
"""

from __future__ import annotations

import pytest
import torch
import torchinfo
import torchvision
from torch import nn

import shapetrace
from shapetrace.tracer.records import TensorMeta


def torchinfo_rows(model: nn.Module, *args, **kwargs) -> list[tuple[str, tuple, int]]:
    """(class, output shape, params) for every call torchinfo saw, in call order."""
    stats = torchinfo.summary(model, input_data=list(args) or None, verbose=0, depth=100,
                              col_names=("output_size", "num_params"), **kwargs)
    return [(row.class_name, tuple(row.output_size), row.num_params) for row in stats.summary_list]


def our_rows(trace: shapetrace.Trace) -> list[tuple[str, tuple, int]]:
    rows = []
    for call in trace.calls:
        out = call.outputs
        while isinstance(out, list):  # torchinfo reports the first tensor of a sequence output
            out = out[0]
        if isinstance(out, dict):
            out = next(iter(out.values()))
        rows.append((call.cls, tuple(out.shape) if isinstance(out, TensorMeta) else (), call.params))
    return rows


@pytest.mark.parametrize("builder", [torchvision.models.resnet18, torchvision.models.mobilenet_v3_small])
def test_torchvision_layers_match_torchinfo(builder):
    model = builder(weights=None).eval()
    x = torch.randn(1, 3, 96, 96)
    expected = torchinfo_rows(model, x)
    trace = shapetrace.trace(model, x)
    assert our_rows(trace) == expected
    assert trace.model.params == sum(p.numel() for p in model.parameters())


class DictInput(nn.Module):
    """A model whose forward takes a dict of tensors, like a multi-modal batch."""

    def __init__(self):
        super().__init__()
        self.image = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.table = nn.Linear(5, 8)
        self.head = nn.Linear(16, 2)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.head(torch.cat([self.image(batch["image"]), self.table(batch["table"])], dim=1))


def test_dict_input_model_matches_torchinfo():
    model = DictInput().eval()
    batch = {"image": torch.randn(4, 3, 16, 16), "table": torch.randn(4, 5)}
    expected = torchinfo_rows(model, batch)
    trace = shapetrace.trace(model, batch)
    assert our_rows(trace) == expected
    assert set(trace.inputs[0]) == {"image", "table"}
    assert trace.inputs[0]["image"].shape == (4, 3, 16, 16)


class LSTMTagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(100, 16)
        self.lstm = nn.LSTM(16, 32, num_layers=2, batch_first=True)

    def forward(self, x):
        return self.lstm(self.emb(x))


def test_lstm_tuple_output_keeps_h_n_and_c_n_where_torchinfo_keeps_only_the_first():
    model = LSTMTagger().eval()
    x = torch.randint(0, 100, (3, 7))
    trace = shapetrace.trace(model, x)
    lstm = trace.calls_of("lstm")[0]
    output, (h_n, c_n) = lstm.outputs
    assert output.shape == (3, 7, 32)
    assert h_n.shape == (2, 3, 32) and c_n.shape == (2, 3, 32)
    # torchinfo records the LSTM's output as [3, 7, 32] only: h_n and c_n are not in its summary.
    info = {r.var_name: r for r in torchinfo.summary(model, input_data=x, verbose=0).summary_list}
    assert list(info["lstm"].output_size) == [3, 7, 32]


class Shared(nn.Module):
    """One ReLU object registered in two containers, as fastai does with its default activation."""

    def __init__(self):
        super().__init__()
        act = nn.ReLU()
        self.a = nn.Sequential(nn.Linear(4, 8), act)
        self.b = nn.Sequential(nn.Linear(8, 8), act)

    def forward(self, x):
        return self.b(self.a(x))


def test_shared_module_is_called_twice_under_the_parent_that_called_it():
    trace = shapetrace.trace(Shared(), torch.randn(2, 4))
    relus = [c for c in trace.calls if c.cls == "ReLU"]
    assert [c.call_index for c in relus] == [0, 1]
    assert [c.module for c in relus] == ["a.1", "b.1"]
    assert [trace.calls[c.parent].module for c in relus] == ["a", "b"]
    assert relus[0].aliases == ["b.1"] and relus[1].aliases == ["a.1"]
    # torchinfo names the second call's parent `a` as well (it keys layers by module object).


class Tied(nn.Module):
    """A language-model-style decoder whose weight is the embedding's."""

    def __init__(self, vocab=50, dim=10):
        super().__init__()
        self.encoder = nn.Embedding(vocab, dim)
        self.decoder = nn.Linear(dim, vocab)
        self.decoder.weight = self.encoder.weight

    def forward(self, x):
        return self.decoder(self.encoder(x))


def test_tied_weights_are_counted_once_where_torchinfo_counts_them_twice():
    model = Tied()
    trace = shapetrace.trace(model, torch.randint(0, 50, (2, 6)))
    assert trace.model.params == 50 * 10 + 50  # embedding (shared with the decoder) + decoder bias
    assert trace.model.shared_params == 500
    assert trace.calls[0].params == 550
    stats = torchinfo.summary(model, input_data=torch.randint(0, 50, (2, 6)), verbose=0)
    assert stats.total_params == 1050  # torchinfo adds the tied weight twice


def test_shared_module_params_counted_once_in_totals():
    model = Shared()
    trace = shapetrace.trace(model, torch.randn(2, 4))
    assert trace.model.params == (4 * 8 + 8) + (8 * 8 + 8)
    assert trace.model.params == sum(p.numel() for p in model.parameters())
