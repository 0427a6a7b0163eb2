"""On ``meta``, a Python read of a tensor's values fails with advice that helps where it can.

BART's decoder builds its default attention mask with ``torch.ones(batch, length, device=embeds.device)``, a
float constant on ``meta``, and transformers reads it with a Python ``bool``. Values on ``meta`` are never
computed; but a mask (or ids, or positions) passed to the forward as an integer or boolean input stays real, so
the message says to pass it.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import shapetrace


class BuildsItsOwnMask(nn.Module):
    """Makes an all-ones mask on the activations' device unless given one, and reads it with ``if``."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            mask = torch.ones(x.shape[0], x.shape[1], device=x.device)
        if mask.all():
            return self.lin(x)
        return self.lin(x) * mask[..., None]


def test_reading_a_mask_the_forward_builds_on_meta_suggests_passing_it_as_an_integer_input() -> None:
    x = torch.randn(2, 3, 4)
    with pytest.raises(shapetrace.TraceFailed) as info:
        shapetrace.trace(BuildsItsOwnMask().eval(), x, device="meta")
    message = str(info.value)
    assert "cannot follow `__bool__`: it reads the values of a tensor on 'meta'" in message
    assert "pass it to the forward as an integer or boolean input instead" in message
    assert "depends on tensor values" not in message  # a constant's value depends on nothing


def test_the_advice_holds_a_mask_passed_as_an_integer_input_stays_real_on_meta() -> None:
    x, mask = torch.randn(2, 3, 4), torch.ones(2, 3, dtype=torch.long)
    assert shapetrace.trace(BuildsItsOwnMask().eval(), x, mask, device="meta").outputs.shape == (2, 3, 4)
