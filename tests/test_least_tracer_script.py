"""``benchmarks/least_tracer.py`` measures the least tracer that records what a trace records; its records must
match ``shapetrace.trace``'s on the facts it keeps, or the per-call cost it reports is of less work."""

from __future__ import annotations

import pytest
import torch
import torchvision
from conftest import benchmark_script

import shapetrace


@pytest.fixture(scope="module")
def least_tracer():
    with benchmark_script("least_tracer") as module:
        yield module


def test_the_least_tracer_records_every_call_with_shapetraces_parents_and_shapes(least_tracer):
    model, x = torchvision.models.resnet18(weights=None).eval(), torch.randn(1, 3, 64, 64)
    least = least_tracer.least_tracer(model, x, build=True)
    full = shapetrace.trace(model, x)
    assert [c.parent for c in least] == [c.parent for c in full.calls]
    assert [c.outputs.shape for c in least] == [c.outputs.shape for c in full.calls]
    assert [[m.shape for m in c.inputs] for c in least] == [[m.shape for m in c.inputs] for c in full.calls]
