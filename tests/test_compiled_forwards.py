"""Forwards compiled as functions, not as modules: ``@torch.compile`` over a class's ``forward``,
``model.forward = torch.compile(model.forward)``, and a compiled function the forward calls. Like a compiled
module, each runs eagerly while a trace runs: every layer is recorded whatever Dynamo cached before, Dynamo never
traces shapetrace's hooks, and Dynamo's caches are left as they were."""

from __future__ import annotations

import collections
import subprocess
import sys
import textwrap
import threading
import warnings

import pytest
import torch
from torch import nn
from torch._dynamo import eval_frame
from torch._dynamo import utils as dynamo_utils
from torch._dynamo.utils import counters
from torch.nn.modules import module as torch_module

import shapetrace
from shapetrace.tracer.engine import Engine, ModuleIndex


class CompiledOnClass(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 16)
        self.b = nn.Linear(16, 4)

    @torch.compile(backend="eager")
    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


@torch.compile(backend="eager")
def _block(layer: nn.Module, act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return act(layer(x))


class CallsCompiledFunction(nn.Module):
    """Its forward calls a module-level compiled function that calls two of its layers: no static look sees it."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.act = nn.ReLU()
        self.b = nn.Linear(8, 2)

    def forward(self, x):
        return self.b(_block(self.a, self.act, x))


def _traced_quietly(model: nn.Module, x: torch.Tensor, **options) -> tuple[shapetrace.Trace, list[str]]:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        trace = shapetrace.trace(model, x, **options)
    return trace, [str(w.message) for w in seen]


@pytest.mark.parametrize("last_grad", [True, False])
def test_a_forward_compiled_on_its_class_shows_every_layer_whatever_mode_it_last_ran_in(last_grad):
    torch._dynamo.reset()
    model, x = CompiledOnClass().eval(), torch.randn(3, 8)
    with torch.set_grad_enabled(last_grad):
        model(x)  # the program's own compiled call, cached by Dynamo
    graphs = dict(counters["stats"])
    trace, said = _traced_quietly(model, x)
    assert [c.module for c in trace.calls] == ["", "a", "b"] and not trace.uncalled
    assert trace.meta["compiled_ran_eagerly"] is True and "tracer_errors" not in trace.meta
    assert dict(counters["stats"]) == graphs  # nothing compiled for the trace: the hooks were never traced
    assert not [s for s in said if "Dynamo" in s]


def test_a_forward_compiled_on_the_instance_traces_every_layer_under_any_options():
    torch._dynamo.reset()
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 14 * 14, 4))
    model.eval().forward = torch.compile(model.forward, backend="eager")
    x = torch.randn(2, 3, 16, 16)
    model(x)
    graphs = dict(counters["stats"])
    for options in [{}, {"grad": True}, {"train": True}, {"ops": True, "lines": True}, {"device": "meta"}]:
        trace, said = _traced_quietly(model, x, **options)
        assert [c.module for c in trace.calls] == ["", "0", "1", "2", "3", "4"], options
        assert trace.outputs.shape == (2, 4) and not [s for s in said if "Dynamo" in s], options
    assert dict(counters["stats"]) == graphs
    assert "forward" in model.__dict__ and model.training is False  # left as found


def test_a_compiled_function_called_in_the_forward_hides_no_layer_and_adds_no_dynamo_graph():
    torch._dynamo.reset()
    model, x = CallsCompiledFunction().eval(), torch.randn(3, 8)
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            model(x)
    graphs = dict(counters["stats"])
    trace, said = _traced_quietly(model, x, lines=True)
    assert [c.module for c in trace.calls] == ["", "a", "act", "b"]
    assert "compiled_ran_eagerly" not in trace.meta  # nothing compiled was seen before the forward ran
    assert dict(counters["stats"]) == graphs and not [s for s in said if "Dynamo" in s]


def test_a_forward_compiled_on_its_class_is_timed_as_one_compiled_region():
    model, x = CompiledOnClass().eval(), torch.randn(3, 8)
    profiled = shapetrace.profile(model, x, warmup=1, repeat=2, flops=False, memory=False)
    assert profiled.meta["compiled_regions"] == [""]
    assert [n.code for n in profiled.calls[0].notes] == ["compiled-region"]
    assert all("inside-compiled-region" in [n.code for n in c.notes] for c in profiled.calls[1:])


def _registered_pre_hook(engine: Engine):
    return next(h for h in torch_module._global_forward_pre_hooks.values() if getattr(h, "__self__", None) is engine
                or getattr(getattr(h, "_torchdynamo_orig_callable", None), "__self__", None) is engine)


@pytest.mark.parametrize("eager_compiled", [True, False])
def test_where_dynamo_is_loaded_but_nothing_compiled_the_hooks_stay_plain(monkeypatch, eager_compiled):
    """torchvision loads Dynamo: a model traced or profiled there pays no wrapper on each call, and torch's
    process-wide stance is left alone (other threads' compiled code keeps running compiled). Once torch.compile
    has made something, a trace runs compiled code eagerly (what no static look sees may be compiled) and
    profiling's timed passes wrap the hooks."""
    model = nn.Sequential(nn.Linear(2, 2))
    monkeypatch.setattr(eval_frame, "cached_backends", {1: None})  # what torch.compiler.disable leaves
    monkeypatch.setattr(dynamo_utils, "counters", collections.defaultdict(collections.Counter))  # no frame compiled
    with Engine(ModuleIndex(model), [], eager_compiled=eager_compiled) as engine:
        assert _registered_pre_hook(engine) == engine._pre
        assert eval_frame._stance.stance == "default"
    monkeypatch.setattr(eval_frame, "cached_backends", {1: None, 2: "a backend"})  # torch.compile was used
    with Engine(ModuleIndex(model), [], eager_compiled=eager_compiled) as engine:
        assert (_registered_pre_hook(engine) == engine._pre) is eager_compiled
        assert (eval_frame._stance.stance == "force_eager") is eager_compiled
    assert eval_frame._stance.stance == "default"


def test_a_compiled_child_is_named_as_in_the_uncompiled_model_without_its_wrapper():
    def build() -> nn.Sequential:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Sequential(nn.Linear(16, 16), nn.GELU()),
                             nn.Linear(16, 4)).eval()

    plain, compiled, x = build(), build(), torch.randn(3, 8)
    compiled[2] = torch.compile(compiled[2], backend="eager")
    compiled(x)
    want, got = shapetrace.trace(plain, x), shapetrace.trace(compiled, x)
    assert [(c.module, c.cls) for c in got.calls] == [(c.module, c.cls) for c in want.calls]
    assert [c.module for c in got.calls] == ["", "0", "1", "2", "2.0", "2.1", "3"]
    assert not got.uncalled and got.model.modules == want.model.modules
    assert [c.module for c in shapetrace.load(got.to_json()).calls] == [c.module for c in want.calls]
    assert type(compiled[2]).__name__ == "OptimizedModule" and compiled[2].training is False  # left as found


def test_torch_compile_first_used_inside_a_traced_forward_is_warned_about():
    """Dynamo loaded by the traced forward itself: nothing could keep its compiled code eager, so the trace says
    to trace again (run in a fresh interpreter, where Dynamo is not loaded yet)."""
    script = textwrap.dedent("""
        import sys, warnings, torch, shapetrace
        from torch import nn
        assert "torch._dynamo" not in sys.modules
        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.Linear(4, 4)
            def forward(self, x):
                return torch.compile(self.a, backend="eager")(x)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            shapetrace.trace(M(), torch.randn(2, 4))
        print([str(w.message) for w in seen if isinstance(w.message, shapetrace.ShapetraceWarning)])
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    assert "torch.compile was first used in this process while the model was traced" in out.stdout
    assert "trace again" in out.stdout


def test_the_first_profile_in_a_fresh_interpreter_does_not_warn_that_torch_compile_was_used():
    """Profiling's own dispatch mode (which keeps the inputs a forward writes) imports Dynamo when it is first
    entered: that is no sign the forward compiled anything, and nothing is said."""
    script = textwrap.dedent("""
        import sys, warnings, torch, shapetrace
        from torch import nn
        assert "torch._dynamo" not in sys.modules
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            shapetrace.profile(nn.Linear(4, 4), torch.ones(2, 4), repeat=2, warmup=0)
        print("loaded:", "torch._dynamo" in sys.modules)
        print([str(w.message) for w in seen if isinstance(w.message, shapetrace.ShapetraceWarning)])
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    assert "torch.compile was first used" not in out.stdout, out.stdout


@pytest.mark.parametrize("first_to_end", ["A", "B"])
def test_traces_in_two_threads_ending_in_either_order_put_back_the_stance_they_found(monkeypatch, first_to_end):
    """force_eager holds while either trace runs; the last to end puts back the very stance the first found."""
    monkeypatch.setattr(eval_frame, "cached_backends", {1: "a backend"})  # torch.compile was used
    before = eval_frame._stance
    entered = {who: threading.Event() for who in "AB"}
    go = {who: threading.Event() for who in "AB"}
    seen: dict[str, str] = {}

    class Waits(nn.Module):
        def __init__(self, who: str) -> None:
            super().__init__()
            self.who, self.a = who, nn.Linear(2, 2)

        def forward(self, x):
            entered[self.who].set()
            go[self.who].wait(10)
            seen[self.who] = eval_frame._stance.stance  # after the other trace may have ended
            return self.a(x)

    threads = {who: threading.Thread(target=shapetrace.trace, args=(Waits(who), torch.randn(1, 2))) for who in "AB"}
    threads["A"].start()
    entered["A"].wait(10)
    threads["B"].start()
    entered["B"].wait(10)
    last = "B" if first_to_end == "A" else "A"
    go[first_to_end].set()
    threads[first_to_end].join(10)
    go[last].set()
    threads[last].join(10)
    assert seen == {"A": "force_eager", "B": "force_eager"}
    assert eval_frame._stance is before


def test_a_trace_interrupted_in_its_forward_puts_back_the_stance():
    torch._dynamo.reset()
    before = eval_frame._stance

    class Interrupted(nn.Module):
        def forward(self, x):
            raise KeyboardInterrupt

    model = nn.Sequential(torch.compile(nn.Linear(2, 2), backend="eager"), Interrupted())
    with pytest.raises(KeyboardInterrupt):
        shapetrace.trace(model, torch.randn(1, 2))
    assert eval_frame._stance is before


def test_a_trace_started_inside_a_compiled_function_records_the_model():
    """No stance can be set inside a compiled region: the trace keeps its hooks from Dynamo as before."""
    @torch.compile(backend="eager")
    def traces(x):
        return x + 1, shapetrace.trace(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), x)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Dynamo's notes about what it could not trace in shapetrace
        _, trace = traces(torch.randn(1, 2))
    assert [c.module for c in trace.calls] == ["", "0", "1"]
    assert eval_frame._stance.stance == "default"


@pytest.mark.parametrize("use", ["torch._dynamo.is_compiling()", "torch.compiler.disable(lambda: None)()"])
def test_a_forward_that_loads_dynamo_without_compiling_is_not_warned_about(use):
    """Loading Dynamo is not using torch.compile (a fresh interpreter, where Dynamo is not loaded yet)."""
    script = textwrap.dedent(f"""
        import sys, warnings, torch, shapetrace
        from torch import nn
        assert "torch._dynamo" not in sys.modules
        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.Linear(4, 4)
            def forward(self, x):
                import torch._dynamo
                {use}
                return self.a(x)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            shapetrace.trace(M(), torch.randn(2, 4))
        assert "torch._dynamo" in sys.modules
        print([str(w.message) for w in seen if isinstance(w.message, shapetrace.ShapetraceWarning)])
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "[]"


def test_a_function_compiled_before_dynamo_was_reset_still_runs_eagerly_in_a_trace():
    """A reset empties Dynamo's record of the backends torch.compile made; its count of compiled frames stays."""
    model, x = CallsCompiledFunction().eval(), torch.randn(3, 8)
    model(x)  # _block compiled and run once
    torch._dynamo.reset()
    trace, said = _traced_quietly(model, x)
    assert [c.module for c in trace.calls] == ["", "a", "act", "b"] and "tracer_errors" not in trace.meta
    assert not [s for s in said if "Dynamo" in s or "torch.compile" in s]


def test_a_forward_first_to_call_torch_compile_where_dynamo_was_loaded_is_warned_about(monkeypatch):
    """Dynamo loaded (torchvision loads it) but torch.compile never called: the trace leaves torch's stance alone,
    so what the forward compiles runs compiled, and the trace says to trace again."""
    monkeypatch.setattr(eval_frame, "cached_backends", {})
    monkeypatch.setattr(dynamo_utils, "counters", collections.defaultdict(collections.Counter))

    class CompilesItsLayer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 4)

        def forward(self, x):
            return torch.compile(self.a, backend="eager")(x)

    _, said = _traced_quietly(CompilesItsLayer(), torch.randn(2, 4))
    assert [s for s in said if "torch.compile was first used in this process while the model was traced" in s]
