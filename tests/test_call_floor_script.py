"""``benchmarks/call_floor.py`` compares two ways of seeing module calls; both must see the same calls, or the
per-call costs it reports compare different work."""

from __future__ import annotations

import pytest
import torch
import torchvision
from conftest import benchmark_script
from torch import nn


@pytest.fixture(scope="module")
def call_floor():
    with benchmark_script("call_floor") as module:
        yield module


def plain_hook_shapes(model: nn.Module, x: torch.Tensor) -> list:
    """The oracle: torch's own per-module hooks on every module, recording what the floor records."""
    shapes: list = []
    handles = []
    for m in model.modules():
        handles.append(m.register_forward_pre_hook(
            lambda mod, args: shapes.append([tuple(a.shape) for a in args if isinstance(a, torch.Tensor)])))
        handles.append(m.register_forward_hook(
            lambda mod, args, out: shapes.append(tuple(out.shape) if isinstance(out, torch.Tensor) else None)))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return shapes


def test_the_call_wrapper_and_the_global_hooks_record_the_same_calls_as_per_module_hooks(call_floor):
    model, x = torchvision.models.resnet18(weights=None).eval(), torch.randn(1, 3, 32, 32)
    run = call_floor.methods(model, x)
    expected = plain_hook_shapes(model, x)
    assert len(expected) == 2 * 76  # 68 modules; each block calls its ReLU twice
    assert run["global hooks, shapes (the floor)"]() == expected
    assert run["__call__ wrapper, shapes"]() == expected
    assert run["__call__ wrapper, empty"]() == run["plain forward"]() == []


def test_the_call_wrapper_is_taken_away_after_each_forward_even_one_that_raises(call_floor):
    original = nn.Module.__call__
    with pytest.raises(RuntimeError), call_floor.call_wrapper([]):
        nn.Linear(4, 2)(torch.randn(1, 3))
    assert nn.Module.__call__ is original


def test_the_script_writes_its_table_between_its_markers(call_floor, tmp_path):
    doc = tmp_path / "bench.md"
    doc.write_text("before\n<!-- call-floor:begin -->\nold\n<!-- call-floor:end -->\nafter\n")
    call_floor.main(["--rounds", "2", "--case", call_floor.TINY_BLOCKS, "--write", str(doc)])
    text = doc.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "old" not in text
    row = next(line for line in text.splitlines() if line.startswith(f"| {call_floor.TINY_BLOCKS} |"))
    assert row.split(" | ")[2] == "601"  # module calls: 200 blocks of 2 layers, their containers and the root
