"""What a trace leaves of the model: training flags and buffer values as they were, parameters the
forward wrote in place named (they are not copied), and whatever the forward registered anew (a buffer
reassigned, a parameter replaced, a layer built on the first call) put back, whether the forward returned
or raised."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.utils.prune
from torch import nn

import shapetrace


class _WritesWeights(nn.Module):
    """Writes one parameter in place, a second one registered under two names, and a buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
        self.tied = nn.Linear(3, 3)
        self.again = self.tied  # the same module under a second name
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x):
        with torch.no_grad():
            self.body[0].bias.add_(1.0)
            self.again.weight.mul_(2.0)
            self.calls += 1
        return self.tied(self.body(x))


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_parameters_written_in_place_are_named_once_each_and_warned_about():
    model = _WritesWeights()
    with pytest.warns(UserWarning, match="changed parameters in place") as seen:
        trace = shapetrace.trace(model, torch.randn(4, 3))
    assert trace.meta["params_changed_in_place"] == ["body.0.bias", "tied.weight"]
    # the caller's line, not shapetrace's own code (conftest wraps the tracer's _finish: a caller too)
    assert not seen[0].filename.startswith(str(Path(shapetrace.__file__).parent))


def test_a_forward_that_writes_nothing_reports_no_changed_parameters():
    trace = shapetrace.trace(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)), torch.randn(4, 3))
    assert "params_changed_in_place" not in trace.meta


@pytest.mark.parametrize("fails", [False, True])
def test_a_trace_in_training_mode_leaves_buffers_and_flags_as_found(fails):
    """BatchNorm's kernel updates running statistics without bumping their version counters, and a buffer
    written from Python does bump it: both come back, also when the forward raises."""
    model = _WritesWeights().eval()
    model.body.train()
    before, flags = _state(model), [m.training for m in model.modules()]
    x = torch.randn(4, 3) * 5 + 3 if not fails else torch.randn(4, 2)
    with pytest.warns(UserWarning, match="changed parameters in place"):
        trace = shapetrace.trace(model, x, train=True, strict=False)
    assert trace.failed is fails
    after = model.state_dict()
    for k in ("body.1.running_mean", "body.1.running_var", "body.1.num_batches_tracked", "calls"):
        assert torch.equal(after[k], before[k]), k
    assert [m.training for m in model.modules()] == flags


class _Registers(nn.Module):
    """Registers on itself as it runs, as real models do: a step counter reassigned rather than written in
    place, a cache kept in a non-persistent buffer registered on the first call (rotary embeddings), a
    scale replaced by a new ``Parameter``, and a head built on the first call (Keras-style lazy layers)."""

    def __init__(self, fails: bool = False) -> None:
        super().__init__()
        self.body = nn.Linear(3, 4)
        self.register_buffer("steps", torch.zeros(()))
        self.scale = nn.Parameter(torch.ones(4))
        self.fails = fails

    def forward(self, x):
        self.steps = self.steps + 1
        if not hasattr(self, "cache"):
            self.register_buffer("cache", torch.arange(4.0), persistent=False)
        self.scale = nn.Parameter(self.scale * 2)
        if not hasattr(self, "head"):
            self.head = nn.Sequential(nn.ReLU(), nn.Linear(4, 2))
        y = self.head(self.body(x) * self.scale + self.cache)
        if self.fails:
            raise RuntimeError("after registering")
        return y


def _registrations(model: nn.Module) -> tuple:
    """What the model holds under each name, by object identity, and which buffers are not persistent."""
    return (dict(model.named_parameters()), dict(model.named_buffers()), dict(model.named_modules()),
            set(model._non_persistent_buffers_set))


def test_a_plain_forward_of_the_registering_model_changes_what_it_holds():
    """The oracle for the tests below: run by itself, the forward changes the model."""
    model = _Registers()
    before = _registrations(model)
    model(torch.randn(2, 3))
    after = _registrations(model)
    assert after != before
    assert after[0]["scale"] is not before[0]["scale"] and "head" in after[2] and "cache" in after[1]


@pytest.mark.parametrize("fails", [False, True])
def test_what_the_forward_registered_is_put_back_and_named(fails):
    model = _Registers(fails)
    before, state = _registrations(model), _state(model)
    trace = shapetrace.trace(model, torch.randn(2, 3), strict=False)
    after = _registrations(model)
    for held, now in zip(before[:3], after[:3]):
        assert list(now) == list(held)  # the same names, in the same order
        assert all(now[k] is held[k] for k in held), [k for k in held if now[k] is not held[k]]
    assert after[3] == before[3] == set()
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert sorted(trace.meta["registrations_restored"]) == ["cache", "head", "scale", "steps"]
    assert trace.failed is fails
    assert "Put back:" in str(trace.table())  # and the table says so, under its totals


def test_an_lstm_weight_replaced_by_the_forward_is_put_back_where_its_kernel_reads_it():
    class Replaces(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(3, 4, batch_first=True)

        def forward(self, x):
            self.lstm.weight_hh_l0 = nn.Parameter(torch.zeros_like(self.lstm.weight_hh_l0))
            return self.lstm(x)[0]

    torch.manual_seed(0)
    model, x = Replaces(), torch.randn(2, 5, 3)
    with torch.no_grad():
        expected = model.lstm(x)[0]
    trace = shapetrace.trace(model, x)
    assert trace.meta["registrations_restored"] == ["lstm.weight_hh_l0"]
    with torch.no_grad():
        assert torch.equal(model.lstm(x)[0], expected)  # _flat_weights follow the restored parameter


def test_a_shape_only_trace_leaves_the_real_buffers_of_a_registering_model():
    model = _Registers()
    before = _registrations(model)
    trace = shapetrace.trace(model, torch.randn(2, 3), device="meta")
    assert trace.calls[-1].outputs.shape == (2, 2)
    after = _registrations(model)
    for held, now in zip(before[:3], after[:3]):
        assert list(now) == list(held)
        assert all(now[k] is held[k] for k in held), [k for k in held if now[k] is not held[k]]
    assert after[1]["steps"].device.type == "cpu" and after[3] == set()
    assert sorted(trace.meta["registrations_restored"]) == ["cache", "head"]  # the rest the placement put back


def test_a_shape_only_trace_puts_back_a_layer_the_forward_replaced_with_its_own_weights():
    class Rebuilds(nn.Module):
        """Rebuilds its head when the body's width changed (a common pattern in exploratory code)."""

        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Linear(8, 32)
            self.head = nn.Linear(16, 10)

        def forward(self, x):
            h = self.body(x)
            if self.head.in_features != h.shape[1]:
                self.head = nn.Linear(h.shape[1], 10)
            return self.head(h)

    model = Rebuilds()
    head, weight = model.head, model.head.weight.detach().clone()
    trace = shapetrace.trace(model, torch.randn(2, 8), device="meta")
    assert trace.calls_of("head")[0].outputs.shape == (2, 10)
    assert model.head is head and trace.meta["registrations_restored"] == ["head"]
    assert model.head.weight.device.type == "cpu" and torch.equal(model.head.weight, weight)


class _GrowsBuffers(nn.Module):
    """Grows its buffers in place: a cache with ``resize_`` and a history with ``set_``."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.register_buffer("cache", torch.zeros(0, 4))
        self.register_buffer("history", torch.arange(3.0))

    def forward(self, x):
        y = self.a(x)
        n = self.cache.shape[0]
        self.cache.resize_(n + y.shape[0], 4)
        self.cache[n:] = y
        self.history.set_(torch.cat([self.history, y.sum(1)]))
        return y


def test_buffers_the_forward_resized_in_place_get_their_shape_and_values_back():
    plain = _GrowsBuffers()
    plain(torch.randn(2, 4))  # the oracle: by itself the forward grows both
    assert plain.cache.shape == (2, 4) and plain.history.shape == (5,)
    model = _GrowsBuffers()
    cache, history = model.cache, model.history
    shapetrace.trace(model, torch.randn(2, 4))
    assert model.cache is cache and model.cache.shape == (0, 4)  # the same tensors, as they were
    assert model.history is history and torch.equal(model.history, torch.arange(3.0))


def test_parameters_the_forward_freezes_are_unfrozen_again():
    class Freezes(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Linear(2, 2)
            self.frozen = nn.Linear(2, 2).requires_grad_(False)

        def forward(self, x):
            self.body.requires_grad_(False)
            self.frozen.weight.requires_grad_(True)
            return self.frozen(self.body(x))

    model = Freezes()
    shapetrace.trace(model, torch.randn(1, 2))
    assert [p.requires_grad for p in model.parameters()] == [True, True, False, False]


def test_with_autograd_kept_backward_works_through_an_eval_batchnorm_after_the_trace():
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8)).eval()
    x = torch.randn(3, 4)
    with shapetrace.Tracer(model, grad=True):
        y = model(x)
    y.sum().backward()  # the running statistics autograd saved are untouched: no version change
    assert model[0].weight.grad is not None


def test_with_autograd_kept_a_training_batchnorm_still_gets_its_statistics_back():
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with shapetrace.Tracer(model, grad=True):
        y = model(torch.randn(3, 4))
    y.sum().backward()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


# ---- what the forward does to names, attributes and buffers, seen from the model afterwards ---------------
class _BuildsIntoNone(nn.Module):
    """The common lazy idiom: the slots start as plain ``None`` and the first forward builds what goes there."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 8)
        self.head = None
        self.scale = None

    def forward(self, x):
        h = self.body(x)
        if self.head is None:
            self.head = nn.Linear(h.shape[-1], 3)
        if self.scale is None:
            self.scale = nn.Parameter(torch.ones(3))
        return self.head(h) * self.scale


@pytest.mark.parametrize("device", [None, "meta"])
def test_a_layer_built_into_a_name_that_held_none_leaves_the_none_there(device):
    model = _BuildsIntoNone()
    trace = shapetrace.trace(model, torch.randn(2, 4), device=device)
    assert [c.module for c in trace.calls] == ["", "body", "head"]
    assert model.head is None and model.scale is None  # as found: the next plain forward builds them
    assert list(model.state_dict()) == ["body.weight", "body.bias"]
    assert model(torch.randn(2, 4)).shape == (2, 3)


class _DeletesAndRegistersAgain(nn.Module):
    """Drops a layer and a buffer and registers new ones under the same names (to change a width)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 2)
        self.register_buffer("cache", torch.zeros(1, 4), persistent=False)

    def forward(self, x):
        del self.b
        self.b = nn.Linear(4, 3)
        del self.cache
        self.register_buffer("cache", torch.ones(x.shape[0], 4))
        return self.b(self.a(x) + self.cache)


@pytest.mark.parametrize("device", [None, "meta"])
def test_a_layer_and_buffer_deleted_and_registered_again_are_put_back(device):
    model = _DeletesAndRegistersAgain()
    b, cache, keys = model.b, model.cache, list(model.state_dict())
    trace = shapetrace.trace(model, torch.randn(2, 4), device=device)
    assert trace.outputs.shape == (2, 3)
    assert model.b is b and model.cache is cache and list(model.state_dict()) == keys  # cache: not persistent again
    assert "b" in trace.meta["registrations_restored"]


def test_a_layer_deleted_by_the_forward_is_put_back():
    class Deletes(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(2, 2), nn.Linear(2, 2)

        def forward(self, x):
            y = self.b(self.a(x))
            del self.b
            return y

    model = Deletes()
    b = model.b
    trace = shapetrace.trace(model, torch.randn(1, 2))
    assert model.b is b and trace.meta["registrations_restored"] == ["b"]


def test_a_pruned_weight_recomputed_under_no_grad_by_the_trace_is_put_back():
    layer = nn.Linear(4, 3)
    torch.nn.utils.prune.l1_unstructured(layer, "weight", 0.5)
    weight = layer.weight
    shapetrace.trace(layer, torch.randn(2, 4))
    assert layer.weight is weight and layer.weight.requires_grad  # still the one with its graph to weight_orig
    (layer.weight ** 2).sum().backward()
    assert layer.weight_orig.grad is not None


def test_a_trace_leaves_buffer_version_counters_so_an_earlier_graph_still_runs_backward():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).eval()
    x = torch.randn(3, 4)
    loss = model(x).sum()  # autograd saved BatchNorm's running statistics at their current versions
    versions = [b._version for b in model.buffers()]
    shapetrace.trace(model, x)
    assert [b._version for b in model.buffers()] == versions
    shapetrace.trace(model, x, train=True)  # updates the statistics (the kernel bumps no version), put back
    loss.backward()


class _ScalesInTraining(nn.Module):
    """Updates a buffer in place in training mode (a running scale, a step count); reads it in both modes."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale", torch.ones(4))
        self.register_buffer("steps", torch.zeros(()))
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        if self.training:
            self.scale.mul_(0.9).add_(0.1 * x.detach().abs().mean(0))
            self.steps += 1
        return self.lin(x) * self.scale


def test_a_trace_that_writes_a_buffer_in_place_puts_its_version_back_so_an_earlier_graph_runs_backward():
    model = _ScalesInTraining().eval()
    x = torch.randn(2, 4, requires_grad=True)
    loss = model(x).sum()  # autograd saved model.scale
    view = model.scale[:2]  # shares the buffer's version counter
    versions = [b._version for b in model.buffers()]
    shapetrace.trace(model, torch.randn(2, 4), train=True)
    assert [b._version for b in model.buffers()] == versions
    assert view._version == versions[0]
    loss.backward()
    assert x.grad is not None


def test_a_profile_puts_back_the_version_counters_of_buffers_its_passes_write():
    model = _ScalesInTraining().train()
    x = torch.randn(2, 4)
    versions = [b._version for b in model.buffers()]
    shapetrace.profile(model, x, warmup=1, repeat=3)
    assert [b._version for b in model.buffers()] == versions
    assert model.steps.item() == 0


def test_a_buffer_that_is_a_view_of_a_parameter_does_not_count_as_a_parameter_written():
    class Row(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)
            self.register_buffer("row", self.lin.weight.detach()[0])

        def forward(self, x):
            return self.lin(x) + self.row

    trace = shapetrace.trace(Row(), torch.randn(2, 4))
    assert "params_changed_in_place" not in trace.meta


def test_a_model_whose_buffers_were_made_in_inference_mode_traces_and_keeps_them():
    with torch.inference_mode():
        model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).eval()
    running_mean = model[1].running_mean
    trace = shapetrace.trace(model, torch.randn(2, 4))
    assert trace.outputs.shape == (2, 4) and model[1].running_mean is running_mean


def test_an_expanded_buffer_keeps_aliasing_its_base():
    class Expanded(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("base", torch.zeros(1, 4))
            self.register_buffer("wide", self.base.expand(3, 4))

        def forward(self, x):
            return x + self.wide

    model = Expanded()
    shapetrace.trace(model, torch.randn(3, 4))
    model.base.fill_(7)
    assert model.wide.data_ptr() == model.base.data_ptr() and torch.all(model.wide == 7)


def test_a_nested_tensor_buffer_does_not_stop_the_trace():
    class Nested(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)
            self.register_buffer("parts", torch.nested.nested_tensor([torch.zeros(2), torch.zeros(3)]))

        def forward(self, x):
            return self.lin(x)

    model = Nested()
    parts = model.parts
    assert shapetrace.trace(model, torch.randn(2, 4)).outputs.shape == (2, 4)
    assert model.parts is parts


def test_a_lazy_layer_made_by_the_forward_is_not_reported_as_changed_in_place():
    trace = shapetrace.trace(nn.Sequential(nn.LazyLinear(3), nn.ReLU()), torch.randn(2, 5))
    assert "params_changed_in_place" not in trace.meta


def test_a_write_to_a_parameter_next_to_a_lazy_layer_is_still_reported():
    class Drifts(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lazy = nn.LazyLinear(3)
            self.scale = nn.Parameter(torch.ones(3))

        def forward(self, x):
            with torch.no_grad():
                self.scale.mul_(2)
            return self.lazy(x) * self.scale

    trace = shapetrace.trace(Drifts(), torch.randn(2, 5))  # on a copy: the lazy layer stays lazy
    assert trace.meta["params_changed_in_place"] == ["scale"]


def test_two_tracers_left_in_the_order_they_were_entered_give_back_the_grad_mode_found():
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    first, second = shapetrace.Tracer(a), shapetrace.Tracer(b, grad=True)
    assert torch.is_grad_enabled()
    first.__enter__()
    second.__enter__()  # as notebook cells might: entered a, b ...
    a(torch.randn(1, 2))
    b(torch.randn(1, 2))
    first.__exit__(None, None, None)  # ... and left a, b
    assert torch.is_grad_enabled()  # b's mode while b is still open
    second.__exit__(None, None, None)
    assert torch.is_grad_enabled()
    assert len(first.trace.calls) == len(second.trace.calls) == 1


def test_a_meta_trace_never_copies_the_models_real_buffers():
    from torch.utils._python_dispatch import TorchDispatchMode

    class BigBuffer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)
            self.register_buffer("table", torch.randn(256, 4))

        def forward(self, x):
            return self.lin(x) + self.table[:1]

    model = BigBuffer()
    storages = {b.untyped_storage().data_ptr() for b in model.buffers()}
    read: list[str] = []

    class BufferReads(TorchDispatchMode):  # every aten op that reads a real buffer's storage
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            flat = [*args, *(kwargs or {}).values()]
            flat = [t for a in flat for t in (a if isinstance(a, (list, tuple)) else [a])]
            if any(isinstance(t, torch.Tensor) and not t.is_meta and t.untyped_storage().data_ptr() in storages
                   for t in flat):
                read.append(str(func))
            return func(*args, **(kwargs or {}))

    def copies() -> list[str]:  # a clone or a write (the meta copies placement makes, ``_to_copy``, cost nothing)
        return [f for f in read if "clone" in f or "copy_." in f]

    with BufferReads():
        shapetrace.trace(model, torch.randn(2, 4), device="meta", train=True)
    assert copies() == []
    with BufferReads():  # on the CPU the forward runs them: copied, and put back
        shapetrace.trace(model, torch.randn(2, 4), train=True)
    assert copies()


class _BuildsWithAFlag(nn.Module):
    """Builds its head on the first call and notes so in a plain attribute, and counts its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 8)
        self.built = False
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        h = self.body(x)
        if not self.built:
            self.head = nn.Linear(h.shape[-1], 3)
            self.built = True
        return self.head(h)


@pytest.mark.parametrize("device", [None, "meta"])
def test_a_module_whose_registrations_are_put_back_gets_its_plain_attributes_back_with_them(device):
    # A flag set beside the layer it built would otherwise say "built" of a layer that is gone, and the next
    # plain forward would fail; so the whole module goes back as found, its call counter too (docs/guide.md).
    model = _BuildsWithAFlag()
    shapetrace.trace(model, torch.randn(2, 4), device=device)
    assert model.built is False and not hasattr(model, "head") and model.calls == 0
    assert model(torch.randn(2, 4)).shape == (2, 3)


class _CountsOnly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 8)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.body(x)


def test_a_module_that_registers_nothing_keeps_the_plain_attributes_its_forward_set():
    model = _CountsOnly()
    shapetrace.trace(model, torch.randn(2, 4))
    assert model.calls == 1  # as a plain forward leaves it


# ---- a Tracer block is the user's code: a training step in it is kept whole ------------------------------
def _conv_bn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))


def _training_step(model: nn.Module, x: torch.Tensor) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(x).pow(2).sum().backward()
    optimizer.step()


def test_a_training_step_in_a_tracer_block_leaves_the_model_as_the_same_step_run_without_a_tracer():
    import copy

    x = torch.randn(4, 3, 8, 8)
    model = _conv_bn().train()
    oracle = copy.deepcopy(model)
    _training_step(oracle, x)
    with pytest.warns(shapetrace.ShapetraceWarning), shapetrace.Tracer(model, grad=True) as t:
        _training_step(model, x)
    assert len(t.trace.calls) == 6
    after, expected = model.state_dict(), oracle.state_dict()
    assert all(torch.equal(after[k], v) for k, v in expected.items())  # parameters and BatchNorm statistics alike


def test_parameters_written_in_a_tracer_block_are_warned_about_as_the_blocks_code_not_the_forward():
    model = _conv_bn().train()
    with pytest.warns(shapetrace.ShapetraceWarning) as seen, shapetrace.Tracer(model, grad=True) as t:
        _training_step(model, torch.randn(4, 3, 8, 8))
    message = str(seen[0].message)
    assert message.startswith("the code in the Tracer block changed parameters in place")
    assert "buffers (BatchNorm's running statistics) were left as the block left them" in message
    assert "the forward" not in message
    assert t.trace.meta["params_changed_in_place"] == ["0.weight", "0.bias", "1.weight", "1.bias", "4.weight",
                                                       "4.bias"]


def test_a_tracer_block_that_writes_no_parameter_still_gets_its_batchnorm_statistics_put_back():
    model = _conv_bn().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with shapetrace.Tracer(model, grad=True):
        model(torch.randn(4, 3, 8, 8)).pow(2).sum().backward()  # gradients, no optimizer step
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_profile_of_a_forward_that_writes_parameters_still_puts_the_buffers_back():
    model = _WritesWeights().eval()
    model.body.train()
    before = _state(model)
    with pytest.warns(UserWarning, match="the forward changed parameters in place"):
        shapetrace.profile(model, torch.randn(4, 3) * 5 + 3, train=True, warmup=0, repeat=1)
    after = model.state_dict()
    for k in ("body.1.running_mean", "body.1.running_var", "body.1.num_batches_tracked", "calls"):
        assert torch.equal(after[k], before[k]), k


def _with_buffer(buffer: torch.Tensor) -> nn.Module:
    model = nn.Linear(3, 3)
    model.register_buffer("odd", buffer)
    return model


@pytest.mark.parametrize("make", [
    pytest.param(lambda: torch.empty(4, 4, dtype=torch.uint4), id="uint4: no copy kernel"),
    pytest.param(lambda: torch.masked.masked_tensor(torch.randn(3), torch.tensor([True, False, True])),
                 id="MaskedTensor: no foreach clone"),
    pytest.param(lambda: torch.nested.nested_tensor([torch.randn(2, 3), torch.randn(4, 3)], layout=torch.jagged),
                 id="jagged nested: torch.equal cannot compare it"),
])
def test_a_buffer_torch_cannot_copy_or_compare_does_not_stop_the_model_being_traced(make):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = _with_buffer(make())
        odd = model.odd
        trace = shapetrace.trace(model, torch.randn(2, 3))
    assert [c.cls for c in trace.calls] == ["Linear"]
    assert model.odd is odd and not model._forward_hooks
