"""Tracing never changes the model, and a failing forward gives a partial trace naming the failing layer."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn.modules import module as torch_module

import shapetrace


def five_layers_failing_in_the_fifth() -> nn.Sequential:
    # Linear(8, 6) receives 4 features: the shape mismatch people reach for this tool to find.
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 6))


def no_hooks_left(model: nn.Module) -> bool:
    per_module = all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    return per_module and not torch_module._global_forward_hooks and not torch_module._global_forward_pre_hooks


def state(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_failing_fifth_layer_gives_four_completed_calls_and_the_failed_one():
    model = five_layers_failing_in_the_fifth()
    with pytest.raises(shapetrace.TraceFailed) as info:
        shapetrace.trace(model, torch.randn(2, 3))
    trace = info.value.trace
    layers = [c for c in trace.calls if c.depth == 1]
    assert [c.error is None for c in layers] == [True, True, True, True, False]
    failed = trace.failed_call
    assert failed is layers[-1] and failed.module == "4" and failed.cls == "Linear"
    assert failed.inputs[0].shape == (2, 4)
    assert "mat1 and mat2 shapes cannot be multiplied" in failed.error
    assert trace.calls[0].error is not None  # the exception left the root too
    assert "4 (Linear)" in str(info.value) and "(2, 4)" in str(info.value)


def test_failed_trace_leaves_no_hooks_same_flags_and_same_state_dict():
    model = five_layers_failing_in_the_fifth()
    model.train()
    model[2].eval()  # a mixed set of flags must come back as it was
    flags = [m.training for m in model.modules()]
    before = state(model)
    grad_mode = torch.is_grad_enabled()
    trace = shapetrace.trace(model, torch.randn(2, 3), train=True, strict=False)
    assert trace.failed
    assert no_hooks_left(model)
    assert [m.training for m in model.modules()] == flags
    assert torch.is_grad_enabled() == grad_mode
    after = state(model)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm's running stats restored


def test_successful_training_mode_trace_restores_batchnorm_statistics():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).eval()
    before = state(model)
    trace = shapetrace.trace(model, torch.randn(8, 3), train=True)
    assert trace.meta["training"] is True
    assert not model.training and not model[1].training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_trace_runs_without_grad_by_default_and_keeps_it_on_request():
    model = nn.Linear(2, 2)
    trace = shapetrace.trace(model, torch.randn(1, 2))
    assert trace.calls[0].outputs.requires_grad is False
    trace = shapetrace.trace(model, torch.randn(1, 2), grad=True)
    assert trace.calls[0].outputs.requires_grad is True


def test_keyboard_interrupt_still_removes_hooks():
    class Interrupts(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Linear(2, 2)

        def forward(self, x):
            self.inner(x)
            raise KeyboardInterrupt

    model = Interrupts()
    with pytest.raises(KeyboardInterrupt):
        shapetrace.trace(model, torch.randn(1, 2))
    assert no_hooks_left(model)


def test_exception_caught_inside_the_forward_is_not_a_failure():
    class Fallback(nn.Module):
        def __init__(self):
            super().__init__()
            self.wrong = nn.Linear(5, 2)
            self.right = nn.Linear(3, 2)

        def forward(self, x):
            try:
                return self.wrong(x)
            except RuntimeError:
                return self.right(x)

    trace = shapetrace.trace(Fallback(), torch.randn(1, 3))
    assert not trace.failed
    assert trace.calls_of("wrong")[0].error is not None
    assert trace.calls_of("right")[0].error is None


class FallsBackThenFails(nn.Module):
    """A fast path raises and is caught; the fallback runs; a later layer fails (or the forward raises)."""

    def __init__(self, own_error: bool = False, wrap: bool = False) -> None:
        super().__init__()
        self.fast = nn.Linear(5, 4)  # the wrong width: raises for a 3-wide input
        self.slow = nn.Linear(3, 4)
        self.proj = nn.Linear(6, 2)  # the bug being looked for: should be Linear(4, 2)
        self.own_error, self.wrap = own_error, wrap

    def forward(self, x):
        try:
            h = self.fast(x)
        except RuntimeError as e:
            if self.wrap:
                raise ValueError("no fast path") from e
            h = self.slow(x)
        if self.own_error:
            raise TypeError("the forward's own check")
        return self.proj(h)


def test_a_caught_exception_does_not_hide_the_layer_that_failed_later():
    with pytest.raises(shapetrace.TraceFailed) as info:
        shapetrace.trace(FallsBackThenFails(), torch.randn(2, 3))
    failure = info.value.trace.failure
    assert info.value.trace.failed_call.module == "proj"
    assert failure.type == "RuntimeError" and "2x4 and 6x2" in failure.message
    assert "proj (Linear)" in str(info.value)


def test_an_error_the_forward_raises_itself_after_a_caught_one_is_the_failure():
    with pytest.raises(shapetrace.TraceFailed) as info:
        shapetrace.trace(FallsBackThenFails(own_error=True), torch.randn(2, 3))
    assert info.value.trace.failed_call.module == ""
    assert info.value.trace.failure.type == "TypeError"


def test_an_error_raised_from_the_failing_layers_names_that_layer():
    with pytest.raises(shapetrace.TraceFailed) as info:
        shapetrace.trace(FallsBackThenFails(wrap=True), torch.randn(2, 3))
    assert info.value.trace.failed_call.module == "fast"  # `raise ValueError(...) from e`: the cause's layer
    assert info.value.trace.failure.type == "RuntimeError"


def _lazy() -> nn.Sequential:
    return nn.Sequential(nn.LazyLinear(4), nn.ReLU(), nn.LazyLinear(2))


def test_a_model_with_lazy_layers_is_traced_and_stays_lazy():
    import copy

    model, x = _lazy(), torch.randn(3, 7)
    oracle = copy.deepcopy(model)
    expected = oracle(x).shape  # by itself, a forward makes the weights and turns LazyLinear into Linear
    assert type(oracle[0]) is nn.Linear
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about: the user's model is untouched
        trace = shapetrace.trace(model, x)
    assert trace.outputs.shape == tuple(expected) and trace.calls_of("0")[0].outputs.shape == (3, 4)
    assert trace.meta["lazy_traced_on_copy"] == ["0", "2"]
    assert type(model[0]) is nn.LazyLinear and model[0].has_uninitialized_params()
    assert model(torch.randn(3, 5)).shape == (3, 2)  # still free to take any width


def test_a_model_with_a_lazy_batchnorm_is_traced_and_stays_lazy():
    """LazyBatchNorm's running statistics are uninitialized buffers, which copy.deepcopy cannot copy."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.LazyBatchNorm2d()).eval()
    trace = shapetrace.trace(model, torch.randn(2, 3, 8, 8))
    assert trace.outputs.shape == (2, 4, 6, 6) and trace.meta["lazy_traced_on_copy"] == ["1"]
    assert type(model[1]) is nn.LazyBatchNorm2d and model[1].has_uninitialized_params()
    assert trace.model.buffers == 4 + 4 + 1  # the copy's statistics, made by the forward


def test_a_lazy_model_that_cannot_be_copied_is_refused_with_advice():
    import threading

    model = nn.Sequential(nn.Flatten(), nn.LazyLinear(4))
    model.lock = threading.Lock()
    with pytest.raises(shapetrace.UnsupportedModel, match=r"cannot be copied \(TypeError.*Run one forward"):
        shapetrace.trace(model, torch.randn(2, 3))
    assert type(model[1]) is nn.LazyLinear


def test_lazy_layers_are_refused_with_advice_on_meta_and_by_a_bare_tracer():
    model = _lazy()
    with pytest.raises(shapetrace.UnsupportedModel, match="Run one forward on real data first"):
        shapetrace.trace(model, torch.randn(3, 7), device="meta")
    with pytest.raises(shapetrace.UnsupportedModel, match="allow_lazy=True"), shapetrace.Tracer(model):
        model(torch.randn(3, 7))
    assert type(model[0]) is nn.LazyLinear and model[0].has_uninitialized_params()


def test_data_on_meta_asked_to_run_on_a_real_device_is_refused_with_what_to_do():
    with pytest.raises(shapetrace.UnsupportedModel, match="an input of shape \\(2, 4\\) is on 'meta'"):
        shapetrace.trace(nn.Linear(4, 3), torch.randn(2, 4, device="meta"))
    meta_model = nn.Linear(4, 3, device="meta")
    with pytest.raises(shapetrace.UnsupportedModel, match="parameter weight is on 'meta'.*device='meta'"):
        shapetrace.trace(meta_model, torch.randn(2, 4), device="cpu")
    with pytest.raises(shapetrace.UnsupportedModel, match="parameter weight is on 'meta'"):
        shapetrace.profile(meta_model, torch.randn(2, 4))
    assert shapetrace.trace(meta_model, torch.randn(2, 4)).outputs.shape == (2, 3)  # on meta itself: shapes


def test_meta_device_traces_shapes_without_moving_the_model():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))
    model(torch.randn(1, 3, 10, 10))  # materialise the lazy layer
    trace = shapetrace.trace(model, torch.randn(1, 3, 10, 10), device="meta")
    assert trace.calls[-1].outputs.shape == (1, 10)
    assert trace.calls[-1].outputs.device == "meta"
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert trace.model.params == sum(p.numel() for p in model.parameters())


def test_model_built_on_meta_traces_at_full_size_without_memory():
    with torch.device("meta"):
        big = nn.Sequential(*[nn.Linear(8192, 8192) for _ in range(8)])  # 2 GiB of float32 if real
    trace = shapetrace.trace(big, torch.empty(4, 8192, device="meta"))
    assert trace.model.params == 8 * (8192 * 8192 + 8192)
    assert trace.outputs.shape == (4, 8192)


def test_hooks_of_the_model_itself_are_kept():
    model = nn.Linear(2, 2)
    seen = []
    handle = model.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    shapetrace.trace(model, torch.randn(3, 2))
    assert seen == [torch.Size([3, 2])] and len(model._forward_hooks) == 1
    handle.remove()


class DottedName(nn.Module):
    """A submodule registered under a name with a dot in it (``self._modules["a.b"]``), as some ported
    checkpoints do: ``torch.nn.utils.stateless`` cannot address its weights by dotted name."""

    def __init__(self) -> None:
        super().__init__()
        self._modules["a.b"] = nn.Linear(4, 4)
        self.c = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(self._modules["a.b"](x))


def test_a_module_registered_under_a_dotted_name_traces_on_meta_as_on_the_cpu():
    model = DottedName()
    weight = model._modules["a.b"].weight
    meta = shapetrace.trace(model, torch.randn(2, 4), device="meta")
    cpu = shapetrace.trace(model, torch.randn(2, 4))
    assert [(c.module, c.outputs.shape) for c in meta.calls] == [(c.module, c.outputs.shape) for c in cpu.calls]
    assert model._modules["a.b"].weight is weight and weight.device.type == "cpu"


def test_a_trace_on_meta_inside_parametrize_cached_leaves_the_cached_weight_real():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    nn.utils.parametrizations.orthogonal(model[0])
    x = torch.randn(2, 4)
    expected = model(x)
    with nn.utils.parametrize.cached():
        shapetrace.trace(model, x, device="meta")
        assert model[0].weight.device.type == "cpu"  # torch's cache holds no weight made from the meta copies
        assert torch.allclose(model(x), expected)


def _break_restoring_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make one of the guard's restoring steps fail, as a bug in shapetrace's teardown would."""
    from shapetrace.tracer.guard import ModelGuard

    def broken(self: ModelGuard) -> None:
        raise RuntimeError("simulated failure while putting buffers back")

    monkeypatch.setattr(ModelGuard, "_put_back_buffer_values", broken)


def test_a_failure_of_shapetraces_own_teardown_after_the_forward_returned_is_not_blamed_on_the_forward(monkeypatch):
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).train()
    _break_restoring_buffers(monkeypatch)
    with pytest.raises(shapetrace.TeardownFailed, match="putting the model's state back.*simulated failure") as caught:
        shapetrace.trace(model, torch.randn(2, 4))
    assert not isinstance(caught.value, shapetrace.TraceFailed)
    assert caught.value.trace is not None and caught.value.trace.failure is None  # the forward's own record
    assert model.training and model[1].training  # the steps after the broken one still ran


def test_a_failure_of_shapetraces_own_teardown_is_not_hidden_by_strict_false(monkeypatch):
    _break_restoring_buffers(monkeypatch)
    with pytest.raises(shapetrace.TeardownFailed):
        shapetrace.trace(nn.Linear(4, 3), torch.randn(2, 4), strict=False)


def test_the_cli_reports_a_teardown_failure_with_exit_status_1_instead_of_printing_the_table(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from shapetrace.cli import main
    _break_restoring_buffers(monkeypatch)
    result = CliRunner().invoke(main, ["trace", "torch.nn:Linear", "--arg", "in_features=4", "--arg",
                                       "out_features=3", "-i", "2,4"])
    assert result.exit_code == 1, result.output
    assert "simulated failure" in result.output and "(2, 3)" not in result.output  # no table of a trace gone wrong
