"""Shared test set-up: every trace any test makes must survive a JSON round trip exactly."""

from __future__ import annotations

import shutil

import pytest

from shapetrace.tracer import hooks
from shapetrace.tracer.records import Trace

_finish = hooks.Tracer._finish


def _finish_and_check_round_trip(self, exc):
    trace = _finish(self, exc)
    text = trace.to_json()
    again = Trace.from_json(text)
    assert again == trace, "JSON round trip changed the trace"
    assert again.to_json() == text
    return trace


@pytest.fixture(autouse=True)
def every_trace_round_trips(monkeypatch):
    monkeypatch.setattr(hooks.Tracer, "_finish", _finish_and_check_round_trip)
    yield


requires_dot = pytest.mark.skipif(shutil.which("dot") is None,
                                  reason="Graphviz's dot is not installed (make setup installs it)")
