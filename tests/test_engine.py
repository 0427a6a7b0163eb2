"""The capture engine's own contract: which modules it knows, in what order, and what a call costs in it.

The cost is counted in Python function calls (``sys.setprofile``), which do not move with the load on the
machine: wall-clock overheads are measured in ``benchmarks/overhead.py``, never asserted here.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import importlib.util
import sys
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

import shapetrace
from shapetrace.tracer import bulk, engine
from shapetrace.tracer.engine import ModuleIndex, keyword_free_at
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
    args = (4, "layer1.0", "BasicBlock", 1, 0, 1, 5, 9, ["alias"], [meta], {"mask": meta}, meta, 10, 2, 8, 3)
    made, expected = bulk.call(*args), Call(*args)
    assert made == expected
    assert made.timing is None and made.memory is None
    made.timing = {"total_ms": 1.0}  # the metric descriptors still coerce what is assigned
    assert made.timing == CallTiming(total_ms=1.0)
    # Every field the dataclass declares is in the instance or reads an immutable class-level default; a
    # field with a mutable default (a list, a dict) is the record's own (a field added to Call must be added
    # to bulk unless its default is immutable).
    for record, cls in ((made, Call), (bulk.tensor_meta((1,), "int64", "cpu", None, False), TensorMeta),
                        (bulk.edge("call:0", "call:1", 3, (1,), "float32", True), Edge)):
        for f in dataclasses.fields(cls):
            if f.name in ("timing", "memory"):
                continue
            if f.default_factory is not dataclasses.MISSING:
                assert f.name in vars(record), f"{cls.__name__}.{f.name}"
            else:
                assert f.name in vars(record) or isinstance(f.default, (type(None), int, float, str, tuple)), (
                    f"{cls.__name__}.{f.name}")
    other = bulk.call(*args)
    assert other.side_inputs is not made.side_inputs and other.notes is not made.notes
    made.flops = 5  # assigning a field left at its class default sets it on this record only
    assert (made.flops, other.flops, Call.flops) == (5, None, None)
    assert bulk.edge("call:0", "op:1", 3, (1, 2), "float32", False) == Edge("call:0", "op:1", 3, (1, 2), "float32")


class _Masked(nn.Module):
    def forward(self, x, mask=None):
        return x if mask is None else x * mask


class _KeywordOnly(nn.Module):
    def forward(self, x, *, scale=1.0):
        return x * scale


class _Anything(nn.Module):
    def forward(self, *args, **kwargs):
        return args[0] + sum(kwargs.values())


def _passes_through(forward):
    @functools.wraps(forward)
    def wrapper(self, *args, scale=1.0, **kwargs):  # takes a keyword its wrapped forward does not
        return forward(self, *args, **kwargs) * scale
    return wrapper


class _Decorated(nn.Module):
    @_passes_through
    def forward(self, x):
        return x


class _Static(nn.Module):
    @staticmethod
    def forward(x, mask=None):
        return x if mask is None else x * mask


class _CallStyles(nn.Module):
    """Calls its children every way Python allows, with and without keywords."""

    def __init__(self) -> None:
        super().__init__()
        self.lin, self.masked, self.kw_only = nn.Linear(3, 3), _Masked(), _KeywordOnly()
        self.anything, self.decorated, self.seq = _Anything(), _Decorated(), nn.Sequential(nn.ReLU())
        self.static = _Static()
        self.patched = nn.Linear(3, 3)
        plain = self.patched.forward
        self.patched.forward = lambda x, shift=0.0: plain(x) + shift  # a forward set on the instance

    def forward(self, x):
        m = torch.ones(1, 3)
        x = self.lin(input=x)
        x = self.lin(x)
        x = self.masked(x) + self.masked(x, m) + self.masked(x, mask=m) + self.masked(x=x, mask=m)
        x = self.kw_only(x) + self.kw_only(x, scale=2.0)
        x = self.anything(x) + self.anything(x, bias=m)
        x = self.decorated(x) + self.decorated(x, scale=3.0)
        x = self.seq(input=x) + self.seq(x)
        x = self.static(x) + self.static(x, mask=m)
        return self.patched(x) + self.patched(x, shift=1.0)


def test_every_call_records_the_keyword_arguments_torch_passed_to_its_module():
    """Oracle: torch's own per-module pre-hooks with ``with_kwargs=True`` see each call's keyword arguments.
    The engine skips reading them where the forward's signature leaves no room for one; this checks it
    never skips one that was there (a keyword for a positional parameter, keyword-only, ``**kwargs``, a
    decorator's own keyword, a forward replaced on the instance)."""
    model = _CallStyles()
    seen: list[tuple[str, int, list[str]]] = []
    handles = [m.register_forward_pre_hook(
        lambda mod, args, kwargs, name=name: seen.append((name, len(args), sorted(kwargs))), with_kwargs=True)
        for name, m in model.named_modules() if name]
    try:
        trace = shapetrace.trace(model, torch.randn(1, 3))
    finally:
        for h in handles:
            h.remove()
    recorded = [(c.module, len(c.inputs), sorted(c.kwargs)) for c in trace.calls if c.parent is not None]
    assert recorded == seen
    assert any(kwargs for _, _, kwargs in recorded) and any(not kwargs for _, _, kwargs in recorded)
    assert "kwargs_unknown" not in trace.meta


def test_the_signature_rule_says_when_no_keyword_is_possible():
    assert keyword_free_at(nn.Linear(2, 2)) == 1  # forward(self, input)
    assert keyword_free_at(nn.Sequential()) == 1
    assert keyword_free_at(_Masked()) == 2  # (x, mask=None): one positional argument leaves room for mask
    assert keyword_free_at(nn.MultiheadAttention(4, 2)) == 8
    assert keyword_free_at(_KeywordOnly()) > 10**9  # a keyword-only parameter: always read
    assert keyword_free_at(_Anything()) > 10**9  # **kwargs
    assert keyword_free_at(_Decorated()) > 10**9  # the wrapper's own signature, not the wrapped one's
    assert keyword_free_at(_Static()) > 10**9  # a staticmethod has no self to skip

    class BadSignature(nn.Module):
        def forward(self, x):
            return x

    BadSignature.forward.__signature__ = "not a signature"  # inspect.signature raises on it
    assert keyword_free_at(BadSignature()) > 10**9
    patched = nn.Linear(2, 2)
    patched.forward = lambda x: x
    assert keyword_free_at(patched) > 10**9


def test_keyword_arguments_that_cannot_be_read_are_said_to_be_unknown(monkeypatch):
    """A torch whose ``Module._call_impl`` calls hooks from a frame not recognised: the trace still works,
    says so in ``meta`` and warns, rather than recording calls as if they had no keyword arguments."""
    monkeypatch.setattr(engine, "_CALLER_NAMES", ())
    monkeypatch.setattr(engine, "_CALLER_CODE", [None])
    with pytest.warns(UserWarning, match="keyword arguments"):
        trace = shapetrace.trace(nn.Sequential(_Masked()), torch.randn(1, 3))
    assert trace.meta["kwargs_unknown"] is True
    assert trace.calls[1].inputs[0].shape == (1, 3)


def test_a_class_whose_forward_is_replaced_has_its_keywords_read_by_the_new_signature(monkeypatch):
    """Patching a class's forward (a common way to change a library's layer) after a first trace: the next
    trace reads the new forward's signature, not the one remembered for the class."""
    class Layer(nn.Module):
        def forward(self, x):
            return x

    model = nn.Sequential(Layer())
    assert shapetrace.trace(model, torch.randn(1, 3)).calls[1].kwargs == {}

    def scaled(self, x, scale=1.0):
        return x * scale

    monkeypatch.setattr(Layer, "forward", scaled)

    class Caller(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = model[0]

        def forward(self, x):
            return self.layer(x, scale=torch.full((1,), 2.0))

    trace = shapetrace.trace(Caller(), torch.randn(1, 3))
    assert set(trace.calls[1].kwargs) == {"scale"}


@pytest.mark.parametrize("inner_frame_known", [True, False])
def test_a_call_made_while_an_exception_is_handled_is_not_failed_and_a_raising_call_is(monkeypatch,
                                                                                       inner_frame_known):
    """The post-hook tells a call that raised from one that returned by the frame torch calls it from; where
    torch's ``inner`` is not found (a future torch) it compares ``sys.exc_info()`` at both ends instead."""
    if not inner_frame_known:
        monkeypatch.setattr(engine, "_INNER", None)

    class Fallback(nn.Module):
        def __init__(self):
            super().__init__()
            self.wrong, self.right, self.after = nn.Linear(5, 2), nn.Linear(3, 2), nn.ReLU()

        def forward(self, x):
            try:
                return self.wrong(x)
            except RuntimeError:
                return self.after(self.right(x))

    trace = shapetrace.trace(Fallback(), torch.randn(1, 3))
    assert not trace.failed
    assert [(c.module, c.error is not None) for c in trace.calls] == [
        ("", False), ("wrong", True), ("right", False), ("after", False)]
    failing = nn.Sequential(OrderedDict(act=nn.ReLU(), wrong=nn.Linear(5, 2)))
    with pytest.raises(shapetrace.TraceFailed, match="wrong") as raised:
        shapetrace.trace(failing, torch.randn(1, 3))
    assert [(c.module, c.error is not None) for c in raised.value.trace.calls] == [
        ("", True), ("act", False), ("wrong", True)]


@pytest.mark.parametrize("collector_on", [True, False])
def test_a_trace_leaves_the_garbage_collector_as_it_found_it(collector_on):
    """Automatic collection is paused only while the records are built, never while the forward runs; the
    user's setting comes back afterwards, also when the forward raises or the tracer cannot start."""
    was = gc.isenabled()
    (gc.enable if collector_on else gc.disable)()
    try:
        model = nn.Linear(2, 2)
        with shapetrace.Tracer(model):
            assert gc.isenabled() is collector_on  # the forward runs with the collector as the user set it
            model(torch.randn(1, 2))
        assert gc.isenabled() is collector_on
        with pytest.raises(shapetrace.TraceFailed):
            shapetrace.trace(nn.Linear(3, 2), torch.randn(1, 2))
        assert gc.isenabled() is collector_on
        with pytest.raises(RuntimeError):  # a device this machine does not have: the tracer cannot start
            shapetrace.Tracer(model, device="cuda:99").__enter__()
        assert gc.isenabled() is collector_on
    finally:
        (gc.enable if was else gc.disable)()


def test_calls_hooked_from_a_frame_the_engine_does_not_know_still_end_as_they_did(monkeypatch):
    """Another library running module calls through its own copy of ``_call_impl``: calls that return are
    not failures, and the call that raises is."""
    monkeypatch.setattr(engine, "_INNER", _a_function_code())
    trace = shapetrace.trace(nn.Sequential(nn.Linear(3, 3), nn.ReLU()), torch.randn(1, 3))
    assert not trace.failed and all(c.error is None for c in trace.calls)
    with pytest.raises(shapetrace.TraceFailed) as raised:
        shapetrace.trace(nn.Sequential(nn.ReLU(), nn.Linear(5, 2)), torch.randn(1, 3))
    assert [c.error is not None for c in raised.value.trace.calls] == [True, False, True]


def _a_function_code():
    return (lambda: None).__code__


class _MakesCyclicGarbage(nn.Module):
    """Each step leaves a reference cycle holding a 4 MB tensor, among ordinary allocations that start
    collections in a plain run (a caught exception kept with its traceback does the same)."""

    def __init__(self) -> None:
        super().__init__()
        self.step = nn.Linear(4, 4)

    def forward(self, x):
        for _ in range(40):
            node = {"tensor": torch.zeros(1_000_000)}
            node["self"] = node
            del node
            _ = [[] for _ in range(800)]
            x = self.step(x)
        return x


def test_cyclic_garbage_a_forward_makes_is_collected_while_it_is_traced(monkeypatch):
    """Of the 40 tensors the forward leaves in reference cycles, about as few are alive at its end traced as
    plain: the forward runs with the collector on. (With the collector paused for the whole trace, all 40
    were: a trace could run out of memory where the plain forward does not.)"""
    import weakref

    made: list = []
    real_zeros = torch.zeros

    def zeros(*args, **kwargs):
        t = real_zeros(*args, **kwargs)
        made.append(weakref.ref(t))
        return t

    alive: list[int] = []

    class AtTheEnd(nn.Module):
        def forward(self, y):
            alive.append(sum(r() is not None for r in made))
            return y

    model, x = nn.Sequential(_MakesCyclicGarbage(), AtTheEnd()), torch.randn(1, 4)
    was, threshold = gc.isenabled(), gc.get_threshold()
    gc.enable()
    gc.set_threshold(700, 10, 10)  # Python 3.13's 2,000 would not collect the forward's 800 allocations at all
    try:
        monkeypatch.setattr(torch, "zeros", zeros)
        with torch.no_grad():
            model(x)
        made.clear()
        shapetrace.trace(model, x)
    finally:
        (gc.enable if was else gc.disable)()
        gc.set_threshold(*threshold)
    plain, traced = alive
    assert plain < 20 and traced < 20, (plain, traced)


def _block_class_closing_over(payload: torch.Tensor) -> type[nn.Module]:
    """A module class defined at run time (a factory, a notebook cell run again) whose forward holds ``payload``."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            return self.lin(x) + payload[:4]

    return Block



class _CallsFirst(nn.Module):
    """Calls ``first``; ``spare`` is registered and never called (the tracer lists it as uncalled)."""

    def __init__(self, first: nn.Module, spare: nn.Module) -> None:
        super().__init__()
        self.first, self.spare = first, spare

    def forward(self, x):
        return self.first(x)


@pytest.mark.parametrize("options", [{}, {"ops": True}, {"device": "meta"}])
def test_a_traced_module_class_dies_with_its_last_module(options):
    import weakref

    refs = []
    for _ in range(3):
        payload = torch.zeros(8)
        cls = _block_class_closing_over(payload)
        shapetrace.trace(_CallsFirst(cls(), cls()), torch.randn(2, 4), **options)
        refs.append((weakref.ref(cls), weakref.ref(payload)))
        del cls, payload
    gc.collect()
    assert [(c(), p()) for c, p in refs] == [(None, None)] * 3


@pytest.mark.parametrize(("threshold", "collects"), [(1, True), (10**9, False), (0, False)],
                         ids=["young-objects-past-the-threshold", "fewer-than-the-threshold", "automatic-off"])
def test_after_building_the_records_the_young_objects_are_collected_only_as_the_collector_itself_would(
        monkeypatch, threshold, collects):
    from shapetrace.tracer import capture

    collected: list[int] = []
    real_collect = gc.collect
    monkeypatch.setattr(capture.gc, "collect",
                        lambda generation=2: collected.append(generation) or real_collect(generation))
    was, old = gc.isenabled(), gc.get_threshold()
    gc.enable()
    gc.set_threshold(threshold, *old[1:])
    try:
        with shapetrace.Tracer(nn.Linear(2, 2)):
            pass
    finally:
        gc.set_threshold(*old)
        (gc.enable if was else gc.disable)()
    assert collected == ([0] if collects else [])
