"""The lines view lists what a line ran in the order it ran, and writes a repeated multi-tensor output
unambiguously."""

from __future__ import annotations

import torch
from torch import nn

from shapetrace import trace
from shapetrace.renderers.lines import build_view, render


def _notes(view, needle: str) -> list[str]:
    """The groups shown on the line whose text holds ``needle``."""
    for sv in view.sources:
        for ln in sv.lines:
            if needle in ln.text:
                return [g.text() for g in ln.groups]
    raise AssertionError(f"no line holds {needle!r}")


class LayerLoop(nn.Module):
    """A loop over mixed layers, as fastai's SequentialEx runs a U-Net: two Sequentials with others between."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Sequential(nn.Conv2d(3, 4, 3, padding=1)), nn.BatchNorm2d(4), nn.ReLU(),
                                     nn.Sequential(nn.Conv2d(4, 4, 3, padding=1)),
                                     nn.Upsample(scale_factor=2), nn.Upsample(scale_factor=2)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def test_calls_of_one_class_with_other_calls_between_them_are_listed_where_they_ran():
    view = build_view(trace(LayerLoop().eval(), torch.randn(1, 3, 8, 8), lines=True))
    assert _notes(view, "x = layer(x)") == [
        "layers.0 Sequential → (1,4,8,8)",
        "layers.1 BatchNorm2d → (1,4,8,8)",
        "layers.2 ReLU → (1,4,8,8)",
        "layers.3 Sequential → (1,4,8,8)",
        "layers.4–5 Upsample ×2: (1,4,16,16), (1,4,32,32)",  # back to back: still folded
    ]


def _pool(out: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Two different sums with other ops between them, as fastai's masked_concat_pool makes."""
    lens = mask.long().sum(dim=1)
    avg = out.masked_fill(~mask[..., None], 0).sum(dim=1) / lens[:, None]
    return torch.cat([avg, out.max(dim=1)[0]], 1)


class Pooler(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 2)

    def forward(self, out: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.lin(_pool(out, mask))


def test_ops_of_one_name_with_other_ops_between_them_are_listed_where_they_ran():
    view = build_view(trace(Pooler().eval(), torch.randn(2, 5, 4), torch.ones(2, 5, dtype=torch.bool), lines=True))
    notes = _notes(view, "return self.lin(")
    assert notes[:7] == ["long → (2,5) int64", "sum → (2,)", "getitem → (2,5,1)", "invert → (2,5,1)",
                         "masked_fill → (2,5,4)", "sum → (2,4)", "getitem → (2,1)"]
    assert not any(n.startswith("sum ×") for n in notes)


class Tagger(nn.Module):
    """An embedding, then a loop over the items of a ModuleList, item and index read in turn."""

    def __init__(self) -> None:
        super().__init__()
        self.embeds = nn.ModuleList([nn.Embedding(10, n) for n in (3, 4, 5)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([e(x[:, i]) for i, e in enumerate(self.embeds)], 1)


def test_a_loop_body_repeated_back_to_back_still_folds_into_one_group_per_kind():
    view = build_view(trace(Tagger(), torch.randint(0, 10, (2, 3)), lines=True))
    assert _notes(view, "return torch.cat(") == ["getitem ×3: (2,)", "embeds.0–2 Embedding ×3: (2,3), (2,4), (2,5) float32",
                                                "cat → (2,12)"]


class TwoLSTMs(nn.Module):
    """Three LSTMs run in a loop, the first two of one size: the same nested (output, (h, c)) twice, then
    another."""

    def __init__(self) -> None:
        super().__init__()
        self.rnns = nn.ModuleList([nn.LSTM(4, 4, batch_first=True), nn.LSTM(4, 4, batch_first=True),
                                   nn.LSTM(4, 6, batch_first=True)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for rnn in self.rnns:
            x, _ = rnn(x)
        return x


def test_a_repeated_output_of_several_tensors_is_bracketed_whole_with_its_nesting_before_the_count():
    view = build_view(trace(TwoLSTMs().eval(), torch.randn(2, 3, 4), lines=True))
    assert _notes(view, "x, _ = rnn(x)") == [
        "rnns.0–2 LSTM ×3: [(2,3,4), [(1,2,4), (1,2,4)]] ×2, [(2,3,6), [(1,2,6), (1,2,6)]]"]
    assert "[(2,3,4), [(1,2,4), (1,2,4)]] ×2" in render(view, "text")


class ReadsWhatItsParentSets(nn.Module):
    """A leaf of one's own that reads an attribute its parent sets on its input (fastai's ResizeToOrig)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, x.orig.shape[-2:])


class SetsOrig(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, stride=2, padding=1)
        self.resize = ReadsWhatItsParentSets()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        y.orig = x
        return self.resize(y)


def test_the_advice_to_trace_a_leaf_by_itself_says_on_what_and_when_that_cannot_work():
    model, x = SetsOrig().eval(), torch.randn(1, 3, 8, 8)
    note = build_view(trace(model, x, lines=True), "resize").note
    assert "trace resize by itself on inputs like those it got here ((1,3,4,4) float32)" in note
    assert "a forward that reads what its parent sets fails by itself" in note
    try:  # the oracle: traced by itself, it does fail, as the note warns
        trace(model.resize, torch.randn(1, 3, 4, 4), lines=True)
    except Exception as e:  # noqa: BLE001 - any failure will do
        assert "orig" in str(e)
    else:
        raise AssertionError("traced alone, the leaf should have failed without x.orig")
