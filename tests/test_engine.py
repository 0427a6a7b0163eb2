"""The capture engine's own contract: which modules it knows, in what order, and what a call costs in it.

The cost is counted in Python function calls (``sys.setprofile``), which do not move with the load on the
machine: wall-clock overheads are measured in ``benchmarks/overhead.py``, never asserted here.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch import nn

import shapetrace
from shapetrace.tracer import bulk
from shapetrace.tracer.engine import ModuleIndex
from shapetrace.tracer.metrics import CallTiming
from shapetrace.tracer.records import Call, Edge, TensorMeta

ROOT = Path(__file__).resolve().parents[1]


def _named_modules_by_object(model: nn.Module) -> tuple[list[nn.Module], list[list[str]]]:
    """torch's own answer: every module object once, in ``named_modules`` order, with all its names."""
    modules: list[nn.Module] = []
    names: dict[int, list[str]] = {}
    for name, m in model.named_modules(remove_duplicate=False):
        if id(m) not in names:
            modules.append(m)
            names[id(m)] = []
        names[id(m)].append(name)
    return modules, [names[id(m)] for m in modules]


def test_module_index_lists_each_module_once_in_named_modules_order_with_all_its_names():
    shared = nn.Linear(2, 2)
    tied = nn.Sequential(shared, nn.Sequential(nn.ReLU(), shared), nn.ModuleList([shared, nn.Tanh()]))
    tied.add_module("empty", None)
    for model in (torchvision.models.resnet18(), torchvision.models.squeezenet1_0(), tied):
        index = ModuleIndex(model)
        modules, names = _named_modules_by_object(model)
        assert [id(m) for m in index.modules] == [id(m) for m in modules]
        assert index.names == names
        assert index.is_leaf == [not m._modules for m in modules]


def test_a_module_registered_inside_itself_is_indexed_once_and_traced():
    model = nn.Sequential(nn.Linear(3, 3))
    model[0].add_module("loop", model)  # a cycle: named_modules(remove_duplicate=False) would never end
    index = ModuleIndex(model)
    assert index.names == [[""], ["0"]]
    trace = shapetrace.trace(model, torch.randn(2, 3))
    assert [c.module for c in trace.calls] == ["", "0"]
    assert trace.model.params == 12


def _python_calls(fn: Callable[[], object]) -> int:
    count = 0

    def profiler(frame: object, event: str, arg: object) -> None:
        nonlocal count
        if event == "call":
            count += 1

    fn()  # warm caches first
    sys.setprofile(profiler)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return count


def _overhead_benchmark():
    """``benchmarks/overhead.py``, whose ``floor`` (a bare global hook pair appending each call's shapes) is the
    least a hook-based shape tracer does: the test measures against the same floor the benchmark reports."""
    spec = importlib.util.spec_from_file_location("overhead", ROOT / "benchmarks" / "overhead.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_traced_module_call_costs_at_most_three_times_the_bare_hook_floor_in_python_calls(monkeypatch):
    monkeypatch.undo()  # count the trace as users run it, without conftest's JSON round-trip check
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 64, 64)

    def plain() -> None:
        with torch.no_grad():
            model(x)

    def fixed() -> None:
        with shapetrace.Tracer(model):
            pass

    calls = len(shapetrace.trace(model, x).calls)
    base = _python_calls(plain)
    hook_floor = _overhead_benchmark().floor
    floor = (_python_calls(lambda: hook_floor(model, x)) - base) / calls
    traced = (_python_calls(lambda: shapetrace.trace(model, x)) - base - _python_calls(fixed)) / calls
    assert traced <= 3 * floor, f"{traced:.1f} Python calls per module call, floor {floor:.1f}"


def test_bulk_constructors_build_the_same_records_as_the_dataclasses_with_every_field_set():
    meta = TensorMeta((2, 3), "float32", "cpu", 7, True)
    assert bulk.tensor_meta((2, 3), "float32", "cpu", 7, True) == meta
    assert hash(bulk.tensor_meta((2, 3), "float32", "cpu", 7, True)) == hash(meta)
    args = (4, "layer1.0", "BasicBlock", 1, 0, 1, 5, 9, ["alias"], [meta], {"mask": meta})
    made, expected = bulk.call(*args), Call(*args)
    assert made == expected
    assert made.timing is None and made.memory is None
    made.timing = {"total_ms": 1.0}  # the metric descriptors still coerce what is assigned
    assert made.timing == CallTiming(total_ms=1.0)
    # Every field the dataclass declares is in the instance (a field added to Call must be added to bulk).
    for record, cls in ((made, Call), (bulk.tensor_meta((1,), "int64", "cpu", None, False), TensorMeta),
                        (bulk.edge("call:0", "call:1", 3, (1,), "float32", True), Edge)):
        metric_fields = {"timing", "memory"}
        assert {f.name for f in dataclasses.fields(cls)} - metric_fields <= set(vars(record)), cls.__name__
    assert bulk.edge("call:0", "op:1", 3, (1, 2), "float32", False) == Edge("call:0", "op:1", 3, (1, 2), "float32")
