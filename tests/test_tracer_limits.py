"""What the tracer does at the edges: torch's hook registries left as found, deep recursion, and a clear
answer for everything that is not a plain Python module (functions, TorchScript, torch.compile,
DataParallel, forwards without tensors or returning generators)."""

from __future__ import annotations

import sys
import warnings

import pytest
import torch
from torch import nn
from torch.nn.modules import module as torch_module

import shapetrace
from shapetrace import UnsupportedModel

_REGISTRIES = ("_global_forward_pre_hooks", "_global_forward_hooks", "_global_forward_hooks_with_kwargs",
               "_global_forward_hooks_always_called", "_global_backward_pre_hooks", "_global_backward_hooks",
               "_global_parameter_registration_hooks", "_global_buffer_registration_hooks",
               "_global_module_registration_hooks")


def registries() -> dict[str, dict]:
    return {name: dict(getattr(torch_module, name)) for name in _REGISTRIES}


class Fails(nn.Module):
    def forward(self, x):
        raise ValueError("boom")


class Registers(nn.Module):
    """Builds its layer on the first call: torch's registration hooks fire inside the forward."""

    def forward(self, x):
        if not hasattr(self, "layer"):
            self.layer = nn.Linear(3, 3)
        return self.layer(x)


@pytest.mark.parametrize("how", ["trace", "trace(ops=True)", "failing trace", "profile", "Tracer with kwargs hook",
                                 "registering forward"])
def test_torch_hook_registries_are_left_exactly_as_found(how):
    # torch itself leaves a stale entry in _global_forward_hooks_with_kwargs when such a hook is removed;
    # a user's own hook registered before the trace must survive it untouched.
    user = torch_module.register_module_forward_hook(lambda m, a, k, o: None, with_kwargs=True)
    try:
        before = registries()
        model = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
        x = torch.randn(2, 3)
        if how == "trace":
            shapetrace.trace(model, x)
        elif how == "trace(ops=True)":
            shapetrace.trace(model, x, ops=True)
        elif how == "failing trace":
            shapetrace.trace(nn.Sequential(nn.Linear(3, 3), Fails()), x, strict=False)
        elif how == "registering forward":
            seen = []
            mine = torch_module.register_module_module_registration_hook(lambda m, n, v: seen.append(n))
            before = registries()
            shapetrace.trace(Registers(), x)
            assert seen == ["layer"]  # the user's own registration hook still ran
            mine.remove()
            before = {k: {i: h for i, h in v.items() if i != mine.id} for k, v in before.items()}
        elif how == "profile":
            shapetrace.profile(model, x, device="cpu", warmup=0, repeat=1)
        else:
            with shapetrace.Tracer(model):
                model(x)
        assert registries() == before
    finally:
        user.remove()
        torch_module._global_forward_hooks_with_kwargs.pop(user.id, None)


class Recurse(nn.Module):
    """A forward that recurses through module calls: ``depth`` nested calls of itself."""

    def __init__(self) -> None:
        super().__init__()
        self.step = nn.Identity()

    def forward(self, x, depth: int):
        return x if depth == 0 else self(self.step(x), depth - 1)


def deepest(run) -> int:
    """The largest recursion depth ``run(depth)`` reaches without a RecursionError (bisection)."""
    lo, hi = 1, 2000
    while lo < hi:
        mid = (lo + hi + 1) // 2
        try:
            run(mid)
        except RecursionError:
            hi = mid - 1
        except shapetrace.TraceFailed as e:
            assert isinstance(e.__cause__, RecursionError), e
            hi = mid - 1
        else:
            lo = mid
    return lo


def test_a_trace_does_not_lower_the_recursion_depth_a_forward_can_reach():
    model, x = Recurse(), torch.randn(2)
    limit = sys.getrecursionlimit()
    plain = deepest(lambda n: model(x, n))
    assert plain > 200  # the plain forward reaches ~240 levels or more on default limits
    traced = deepest(lambda n: shapetrace.trace(model, x, n))
    assert traced >= plain - 3
    assert sys.getrecursionlimit() == limit  # and the limit is back where it was
    trace = shapetrace.trace(model, x, plain - 3)
    assert max(c.depth for c in trace.calls) == plain - 3


def test_a_function_is_refused_with_what_to_do_instead():
    with pytest.raises(UnsupportedModel, match="torch.nn.Module; got a function") as info:
        shapetrace.trace(lambda x: x, torch.randn(2))
    assert "wrap it in a module" in str(info.value)
    assert isinstance(info.value, TypeError)
    with pytest.raises(UnsupportedModel, match="got a str"):
        shapetrace.Tracer("resnet18")


@pytest.mark.parametrize("make", ["script", "trace"])
def test_a_torchscript_module_is_refused_naming_the_python_module_to_trace(make):
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU()).eval()
    x = torch.randn(2, 3)
    scripted = torch.jit.script(model) if make == "script" else torch.jit.trace(model, x)
    with pytest.raises(UnsupportedModel, match="TorchScript module") as info:
        shapetrace.trace(scripted, x)
    assert "Trace the Python nn.Module it was made from" in str(info.value)


def test_a_scripted_submodule_is_one_opaque_call_inside_a_python_model():
    model = nn.Sequential(torch.jit.script(nn.Sequential(nn.Linear(3, 4), nn.ReLU())), nn.Linear(4, 2))
    trace = shapetrace.trace(model, torch.randn(2, 3))
    assert [(c.module, tuple(c.outputs.shape)) for c in trace.calls] == [("", (2, 2)), ("0", (2, 4)), ("1", (2, 2))]


def test_a_tracer_around_torch_jit_trace_records_plain_int_sizes():
    """Under torch.jit.trace a tensor's sizes are 0-dim tensors; the trace holds ints, and saves as JSON."""
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    with shapetrace.Tracer(model) as tracer:
        torch.jit.trace(model, torch.randn(2, 4))
    shapes = [c.outputs.shape for c in tracer.trace.calls]
    assert shapes[:4] == [(2, 3), (2, 8), (2, 8), (2, 3)]  # jit.trace runs the forward again to check its graph
    assert all(type(n) is int for s in shapes for n in s)
    assert shapetrace.load(tracer.trace.to_json()).calls[1].outputs.shape == (2, 8)


def test_a_compiled_model_traces_as_the_module_it_wraps():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    compiled = torch.compile(model)
    x = torch.randn(2, 3)
    trace = shapetrace.trace(compiled, x)
    assert [c.module for c in trace.calls] == ["", "0", "1", "2"]
    assert trace.calls[0].cls == "Sequential" and trace.meta["unwrapped"] == ["torch.compile"]
    assert trace.calls[-1].outputs.shape == (2, 2)
    with pytest.raises(UnsupportedModel, match=r"torch.compile .*model._orig_mod"):
        shapetrace.Tracer(compiled)


def test_a_torch_export_program_is_refused_before_anything_runs_saying_what_to_trace():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU()).eval()
    exported = torch.export.export(model, (torch.randn(2, 3),)).module()
    for run in (lambda: shapetrace.trace(exported, torch.randn(2, 3)),
                lambda: shapetrace.trace(exported, torch.randn(2, 3), train=False),
                lambda: shapetrace.Tracer(exported)):
        with pytest.raises(UnsupportedModel, match=r"torch.export program .*nn.Module it was exported from"):
            run()


def test_a_model_with_a_torch_export_program_as_a_child_is_refused_naming_the_child():
    model = nn.Sequential(nn.Linear(3, 4), nn.Sequential(nn.Linear(4, 4)))
    model[1][0] = torch.export.export(nn.Sequential(nn.ReLU()), (torch.randn(2, 4),)).module()
    for run in (lambda: shapetrace.trace(model, torch.randn(2, 3)), lambda: shapetrace.Tracer(model)):
        with pytest.raises(UnsupportedModel, match=r"submodule '1\.0' is a torch.export program .*in its place"):
            run()
    assert model.training  # refused before anything ran


class CompiledBlock(nn.Module):
    """Compiles its hot block only, as users do: the rest of the model runs eagerly."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's note that global hooks also fire for the wrapper
            self.block = torch.compile(nn.Sequential(nn.Linear(3, 3), nn.ReLU()), backend="eager")
        self.c = nn.Linear(3, 2)

    def forward(self, x):
        return self.c(self.block(self.a(x)))


def test_a_model_with_a_compiled_block_traces_with_lines_and_without_dynamo_tracing_the_hooks():
    torch._dynamo.reset()
    model, x = CompiledBlock(), torch.randn(2, 4)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        trace = shapetrace.trace(model, x, lines=True)
    assert [c.module for c in trace.calls] == ["", "a", "block", "block.0", "block.1", "c"]
    assert trace.outputs.shape == (2, 2) and "tracer_errors" not in trace.meta
    assert not [w for w in seen if "Dynamo" in str(w.message)]  # it never looked inside the hooks
    assert torch.equal(model(x), model(x))


def test_a_data_parallel_model_traces_as_the_module_it_wraps():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    trace = shapetrace.trace(nn.DataParallel(model), torch.randn(2, 3))
    assert [c.module for c in trace.calls] == ["", "0", "1"]  # no "module." prefix, no wrapper call
    assert trace.meta["unwrapped"] == ["DataParallel"]
    assert trace.model.params == sum(p.numel() for p in model.parameters())
    with pytest.raises(UnsupportedModel, match=r"DataParallel .*model.module"):
        shapetrace.Tracer(nn.DataParallel(model))


class FromSize(nn.Module):
    """A forward that takes no tensor at all: it makes its input from a size."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, rows: int):
        return self.lin(torch.ones(rows, 4))


def test_a_forward_without_tensor_inputs_records_its_arguments_and_the_tensors_it_makes():
    trace = shapetrace.trace(FromSize(), 3)
    assert trace.calls[0].inputs == [3]
    assert trace.calls[1].inputs[0].shape == (3, 4)
    assert trace.outputs.shape == (3, 2)
    assert shapetrace.trace(nn.Sequential(), 5).outputs == 5  # no tensors anywhere: the values themselves


class Lazy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, xs):
        return (self.lin(x) for x in xs)


def test_a_forward_returning_a_generator_is_refused_saying_why():
    with pytest.raises(UnsupportedModel, match="returned a generator") as info:
        shapetrace.trace(Lazy(), [torch.randn(3)])
    assert "return a list or tuple" in str(info.value)


def _from_depth(extra_frames: int, run):
    """``run()`` called ``extra_frames`` Python frames deeper than here."""
    return _from_depth(extra_frames - 1, run) if extra_frames else run()


@pytest.mark.filterwarnings("ignore")  # the tracer's own error, when the hooks were hit, is also warned about
@pytest.mark.parametrize("extra_frames", range(8))
def test_a_forward_too_deep_for_python_fails_as_a_trace_whose_failure_names_a_recorded_call(extra_frames):
    """The RecursionError can strike inside the hooks themselves, part-way through recording a call's start
    (how deep the caller already is decides where): the forward still fails as ``TraceFailed`` naming a
    call of its partial trace, and that trace's JSON loads back."""
    model, x = Recurse(), torch.randn(2)
    with pytest.raises(shapetrace.TraceFailed) as raised:
        _from_depth(extra_frames, lambda: shapetrace.trace(model, x, 5000))
    trace = raised.value.trace
    assert trace.failure is not None and trace.failure.type == "RecursionError"
    assert trace.failure.call is not None and trace.failure.call < len(trace.calls)
    assert trace.failed_call is trace.calls[trace.failure.call]
    assert shapetrace.Trace.from_json(trace.to_json()) == trace


def test_a_trace_that_cannot_be_built_says_it_is_a_shapetrace_bug_and_leaves_the_model_as_found(monkeypatch):
    from shapetrace.tracer import capture

    def broken(index):
        raise KeyError("a bug")

    monkeypatch.setattr(capture, "model_stats", broken)
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)).train()
    before, hooks = {k: v.clone() for k, v in model.state_dict().items()}, registries()
    with pytest.raises(capture.TraceNotBuilt, match="could not build the trace.*KeyError.*bug in shapetrace") as caught:
        shapetrace.trace(model, torch.randn(4, 3))
    assert isinstance(caught.value.__cause__, KeyError)
    assert registries() == hooks and model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_an_exception_whose_message_cannot_be_read_still_fails_the_trace_naming_the_call():
    class Unreadable(Exception):
        def __str__(self) -> str:
            raise ValueError("no message")

    class Raises(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(2, 2)

        def forward(self, x):
            self.layer(x)
            raise Unreadable()

    with pytest.raises(shapetrace.TraceFailed, match=r"failed in \(root\)") as caught:
        shapetrace.trace(Raises(), torch.randn(1, 2))
    failure = caught.value.trace.failure
    assert (failure.type, failure.message) == ("Unreadable", "<exception str() failed>")  # as Python prints it


def test_an_async_forward_is_refused_with_advice_that_fits_it():
    class Async(nn.Module):
        async def forward(self, x):
            return x

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "coroutine was never awaited" left behind
        with pytest.raises(UnsupportedModel, match="forward is async.*plain def"):
            shapetrace.trace(Async(), torch.randn(1, 2))


class _Inner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.lin(x))


def _with_torchscript_inside(make: str) -> nn.Sequential:
    """A Python model whose first layer is TorchScript, from ``torch.jit.script`` or ``torch.jit.trace``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated
        inner = torch.jit.script(_Inner()) if make == "script" else torch.jit.trace(_Inner(), torch.randn(2, 4))
    return nn.Sequential(inner, nn.Linear(4, 2))


def _modules_torch_calls(model: nn.Module, x: torch.Tensor) -> list[str]:
    """The names of the modules whose forward hooks torch runs in one forward, in call order."""
    called: list[str] = []
    handles = [m.register_forward_pre_hook(lambda *_, name=name: called.append(name))
               for name, m in model.named_modules()]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return called


def _state(model: nn.Module) -> list[tuple[str, int, torch.Tensor]]:
    return [(name, id(t), t.detach().clone()) for name, t in model.state_dict(keep_vars=True).items()]


def _same_state(model: nn.Module, before: list[tuple[str, int, torch.Tensor]]) -> bool:
    now = model.state_dict(keep_vars=True)
    return list(now) == [n for n, _, _ in before] and all(
        id(now[n]) == i and now[n].device == t.device and torch.equal(now[n].detach(), t) for n, i, t in before)


@pytest.mark.parametrize("options", [{}, {"ops": True}, {"lines": True}], ids=["plain", "ops", "lines"])
def test_a_jit_traced_submodule_is_one_call_inside_a_python_model_as_torch_hooks_see_it(options):
    model = _with_torchscript_inside("trace")
    x = torch.randn(2, 4)
    expected = _modules_torch_calls(model, x)
    trace = shapetrace.trace(model, x, **options)
    assert [c.module for c in trace.calls] == expected == ["", "0", "1"]
    assert [c.outputs.shape for c in trace.calls] == [(2, 2), (2, 4), (2, 2)]
    assert trace.calls[1].cls == "TopLevelTracedModule" and not trace.failed


@pytest.mark.parametrize("make", ["script", "trace"])
def test_parameters_inside_a_torchscript_submodule_are_counted_as_torch_counts_them(make):
    model = _with_torchscript_inside(make)
    trace = shapetrace.trace(model, torch.randn(2, 4))
    assert trace.model.params == sum(p.numel() for p in model.parameters()) == 30
    assert trace.model.modules == len(list(model.named_modules())) == 4
    assert trace.calls[1].params == sum(p.numel() for p in model[0].parameters()) == 20
    assert [u.module for u in trace.uncalled] == ["0.lin"]  # it runs as compiled code, where no hook runs


@pytest.mark.parametrize("make", ["script", "trace"])
def test_a_torchscript_submodule_traces_on_meta_and_the_model_is_left_as_found(make):
    model = _with_torchscript_inside(make)
    x = torch.randn(2, 4)
    before = _state(model)
    expected = model(x)
    trace = shapetrace.trace(model, x, device="meta")
    assert [(c.module, c.outputs.shape) for c in trace.calls] == [("", (2, 2)), ("0", (2, 4)), ("1", (2, 2))]
    assert trace.model.params == 30 and not trace.failed
    assert _same_state(model, before)
    assert torch.equal(model(x), expected)
