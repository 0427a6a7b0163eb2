"""A saved trace's line information is checked as it is read: a call's ``line``, its ``code.raised`` and an
op's ``line`` are line numbers (never negative), and a call's ``code.source`` names an entry of ``sources``.
A file edited or cut where these are wrong is refused naming the field and the call, not shown wrong."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import shapetrace
from shapetrace.tracer.codec import TraceFormatError


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


@pytest.fixture(scope="module")
def saved() -> dict:
    return json.loads(shapetrace.trace(Net(), torch.zeros(2, 4), lines=True).to_json())


def _edited(saved: dict, edit) -> dict:
    data = json.loads(json.dumps(saved))
    edit(data)
    return data


def test_a_negative_call_line_is_refused_naming_the_call(saved):
    data = _edited(saved, lambda d: d["calls"][1].__setitem__("line", -3))
    with pytest.raises(TraceFormatError, match=r"calls\[1\]\.line: must be a line number .*not -3"):
        shapetrace.load(data)


def test_a_negative_raised_line_is_refused_naming_the_call(saved):
    data = _edited(saved, lambda d: d["calls"][0]["code"].__setitem__("raised", -1))
    with pytest.raises(TraceFormatError, match=r"calls\[0\]\.code\.raised: must be a line number .*not -1"):
        shapetrace.load(data)


def test_a_negative_op_line_is_refused_naming_the_op(saved):
    op = next(i for i, o in enumerate(saved["ops"]) if o.get("line") is not None)
    data = _edited(saved, lambda d: d["ops"][op].__setitem__("line", -2))
    with pytest.raises(TraceFormatError, match=rf"ops\[{op}\]\.line: must be a line number"):
        shapetrace.load(data)


def test_a_code_source_naming_no_saved_source_is_refused_naming_the_call(saved):
    data = _edited(saved, lambda d: d["calls"][2]["code"].__setitem__("source", "gone.Net.forward"))
    with pytest.raises(TraceFormatError, match=r"calls\[2\]\.code\.source: 'gone\.Net\.forward' names no entry in "
                                               r"sources"):
        shapetrace.load(data)


def test_the_line_information_the_tracer_writes_is_accepted(saved):
    """A guard: what ``lines=True`` records loads back (it passed before the checks were added, by design)."""
    trace = shapetrace.load(saved)
    assert all(c.code["source"] in trace.sources for c in trace.calls)
