"""What a trace leaves of the model: training flags and buffer values as they were, and parameters the
forward wrote in place named (they are not copied), whether the forward returned or raised."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import shapetrace


class _WritesWeights(nn.Module):
    """Writes one parameter in place, a second one registered under two names, and a buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
        self.tied = nn.Linear(3, 3)
        self.again = self.tied  # the same module under a second name
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x):
        with torch.no_grad():
            self.body[0].bias.add_(1.0)
            self.again.weight.mul_(2.0)
            self.calls += 1
        return self.tied(self.body(x))


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_parameters_written_in_place_are_named_once_each_and_warned_about():
    model = _WritesWeights()
    with pytest.warns(UserWarning, match="changed parameters in place"):
        trace = shapetrace.trace(model, torch.randn(4, 3))
    assert trace.meta["params_changed_in_place"] == ["body.0.bias", "tied.weight"]


def test_a_forward_that_writes_nothing_reports_no_changed_parameters():
    trace = shapetrace.trace(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)), torch.randn(4, 3))
    assert "params_changed_in_place" not in trace.meta


@pytest.mark.parametrize("fails", [False, True])
def test_a_trace_in_training_mode_leaves_buffers_and_flags_as_found(fails):
    """BatchNorm's kernel updates running statistics without bumping their version counters, and a buffer
    written from Python does bump it: both come back, also when the forward raises."""
    model = _WritesWeights().eval()
    model.body.train()
    before, flags = _state(model), [m.training for m in model.modules()]
    x = torch.randn(4, 3) * 5 + 3 if not fails else torch.randn(4, 2)
    with pytest.warns(UserWarning, match="changed parameters in place"):
        trace = shapetrace.trace(model, x, train=True, strict=False)
    assert trace.failed is fails
    after = model.state_dict()
    for k in ("body.1.running_mean", "body.1.running_var", "body.1.num_batches_tracked", "calls"):
        assert torch.equal(after[k], before[k]), k
    assert [m.training for m in model.modules()] == flags
