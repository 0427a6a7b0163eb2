"""What each of profile()'s forwards starts from: the input tensors as given (a forward that writes into them
in place, put back before every run and at the end), and the model's state as the shape pass found it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import shapetrace
from shapetrace.tracer.input_writes import InputWrites


class ScalesItsInputInPlace(nn.Module):
    """Normalises its input in place (as preprocessing code does) and logs what each forward was given."""

    def __init__(self, log: list) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.record = log.append  # a method: profile() puts back the contents of the model's own lists

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.record(x[0, 0].item())
        x.mul_(2)
        return self.lin(x)


class DoublesItsInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.mul_(2))


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_the_caller_gets_back_the_input_tensors_a_profiled_forward_writes_in_place(device):
    x = torch.ones(2, 4)
    shapetrace.profile(DoublesItsInput(), x, device=device, warmup=1, repeat=3)
    assert torch.equal(x, torch.ones(2, 4))


def test_every_profiled_forward_starts_from_the_input_tensors_as_given():
    log: list[float] = []
    shapetrace.profile(ScalesItsInputInPlace(log), torch.ones(2, 4), device="cpu", warmup=1, repeat=3)
    assert log == [1.0] * (1 + 2 * (1 + 3))  # the shape pass, then a plain and a hooked forward per run


def test_an_input_written_through_a_view_inside_a_list_is_put_back():
    class WritesARow(nn.Module):
        def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
            xs[0][0].add_(1)
            return xs[0] * 1

    x = torch.zeros(2, 3)
    shapetrace.profile(WritesARow(), [x], device="cpu", warmup=0, repeat=2)
    assert torch.equal(x, torch.zeros(2, 3))


def test_only_the_inputs_a_forward_writes_are_copied():
    written, read = torch.ones(3), torch.ones(3)
    writes = InputWrites(((written, read), {}))
    with writes.watched():
        written.mul_(2)
        _ = read * 2
    assert [t is written for t, _, _ in writes.saved] == [True]
    writes.restore()
    assert torch.equal(written, torch.ones(3))


class CountsItsForwards(nn.Module):
    """A plain-attribute counter, read by each forward; with ``buffer`` it also counts in a buffer, in place."""

    def __init__(self, buffer: bool, log: list) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.n, self.buffer, self.record = 0, buffer, log.append
        self.register_buffer("b", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.n += 1
        self.record(self.n)
        if self.buffer:
            self.b += 1
        return self.lin(x)


@pytest.mark.parametrize("buffer", [False, True], ids=["plain-attribute-only", "buffer-written-too"])
def test_the_timed_runs_start_from_the_state_the_shape_pass_started_from(buffer):
    log: list[int] = []
    shapetrace.profile(CountsItsForwards(buffer, log), torch.randn(2, 4), device="cpu", warmup=0, repeat=2)
    assert log == [1, 1, 2, 3, 4]  # the shape pass, then the timed runs' forwards from the same state


class FailsOnItsThirdForward(nn.Module):
    def __init__(self, buffer: bool) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.n, self.buffer = 0, buffer
        self.register_buffer("b", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.n += 1
        if self.buffer:
            self.b += 1
        if self.n == 3:
            raise RuntimeError("third forward")
        return self.lin(x)


@pytest.mark.parametrize("buffer", [False, True], ids=["plain-attribute-only", "buffer-written-too"])
def test_a_forward_failing_on_its_third_call_fails_in_the_same_timed_run_whether_or_not_it_writes_a_buffer(buffer):
    with pytest.raises(shapetrace.TraceFailed) as caught:
        shapetrace.profile(FailsOnItsThirdForward(buffer), torch.randn(2, 4), device="cpu", warmup=1, repeat=3)
    assert caught.value.trace.meta["failed_in_timed_run"] == {"run": 2, "of": 4, "warmup": 1}
