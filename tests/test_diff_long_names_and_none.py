"""``shapetrace diff`` text keeps layer names whole (the shape cells wrap at their commas instead) and shows a
``None`` returned beside tensors, as the shape tables do: an attention that returns ``(out, None)`` on one side
and ``(out, weights)`` on the other reads so."""

from __future__ import annotations

import torch
from torch import nn

import shapetrace
from shapetrace.renderers.diff import diff_traces, render_trace_diff_text
from shapetrace.renderers.units import display_width


class SelfAttentionWithALongDescriptiveName(nn.Module):
    def __init__(self, return_weights: bool) -> None:
        super().__init__()
        self.return_weights = return_weights
        self.query_key_value_projection = nn.Linear(32, 96)

    def forward(self, x, mask):
        q, k, v = self.query_key_value_projection(x).chunk(3, -1)
        weights = torch.softmax(q @ k.transpose(-1, -2) + mask, -1)
        return weights @ v, (weights.unsqueeze(1) if self.return_weights else None)


class Encoder(nn.Module):
    def __init__(self, return_weights: bool, mask_dtype: torch.dtype) -> None:
        super().__init__()
        self.mask_dtype = mask_dtype
        self.encoder_block = nn.ModuleDict({"attention_with_weights": SelfAttentionWithALongDescriptiveName(return_weights)})

    def forward(self, x):
        mask = torch.zeros(x.shape[0], x.shape[1], x.shape[1], dtype=self.mask_dtype)
        return self.encoder_block["attention_with_weights"](x, mask.float())[0]


def _diff_text(width: int = 100) -> str:
    x = torch.randn(2, 16, 32)
    a = shapetrace.trace(Encoder(True, torch.float32), x)
    b = shapetrace.trace(Encoder(False, torch.float32), x)
    return render_trace_diff_text(diff_traces(a, b), width=width)


def test_a_long_layer_name_stays_whole_and_the_shape_cells_wrap_instead():
    text = _diff_text(70)
    assert "encoder_block.attention_with_weights  output" in text
    assert all(display_width(line) <= 70 for line in text.splitlines())


def test_a_none_returned_beside_a_tensor_is_shown():
    text = _diff_text()
    row = next(line for line in text.splitlines() if "output" in line)
    assert row.split()[-4:] == ["(2,16,32),", "(2,1,16,16)", "(2,16,32),", "None"], text
