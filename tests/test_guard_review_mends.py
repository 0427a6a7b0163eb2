"""What a trace leaves alone while it puts a reparametrized model back: hooks that are not torch's
reparametrizations', a user class that only looks like one parametrize makes, a layer whose re-pruning failed
on meta; and what a shape-only trace does not claim about devices."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import shapetrace


class CountsSteps(nn.Module):
    """A forward that re-registers a buffer (``steps = steps + 1``): the guard puts that registry back."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.register_buffer("steps", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.steps = self.steps + 1
        return self.fc(x)


@pytest.mark.parametrize("hooked_before", [False, True], ids=["no hooks before", "hooks before"])
def test_hooks_the_user_registers_in_a_tracer_block_stay(hooked_before: bool) -> None:
    model, seen = CountsSteps(), []
    if hooked_before:
        model.register_forward_hook(lambda *a: None)
    with shapetrace.Tracer(model):
        model(torch.randn(2, 4))
        model.register_forward_pre_hook(lambda *a: seen.append("pre"))
        model.register_forward_hook(lambda *a: seen.append("post"))
        model.fc.register_forward_hook(lambda *a: seen.append("fc"))
    model(torch.randn(2, 4))
    assert seen == ["pre", "fc", "post"]


def test_a_user_class_named_like_parametrizes_keeps_its_properties() -> None:
    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x)

    class ParametrizedHead(Head):
        def __getstate__(self) -> dict:
            return self.__dict__

        @property
        def out_features(self) -> int:
            return self.fc.out_features

    class Model(CountsSteps):
        def __init__(self) -> None:
            super().__init__()
            self.fc = ParametrizedHead()

    model = Model()
    shapetrace.trace(model, torch.randn(2, 4))
    assert model.fc.out_features == 2


def test_a_layer_whose_re_pruning_failed_on_meta_is_left_pruned_as_found() -> None:
    class RePrune(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)
            prune.l1_unstructured(self.fc, "weight", 0.25)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            prune.l1_unstructured(self.fc, "weight", 0.25)
            return self.fc(x)

    model, x = RePrune(), torch.randn(3, 4)
    hooks = dict(model.fc._forward_pre_hooks)
    with warnings.catch_warnings(), pytest.raises(shapetrace.TraceFailed):
        warnings.simplefilter("ignore")
        shapetrace.trace(model, x, device="meta")  # prune's mask needs values: shape-only tracing cannot
    assert dict(model.fc._forward_pre_hooks) == hooks
    assert model(x).shape == (3, 4)  # as a plain forward runs it, again and again


def test_a_shape_only_trace_claims_nothing_about_the_devices_of_a_failing_layers_weights() -> None:
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2))
    with pytest.raises(shapetrace.TraceFailed) as failed:
        shapetrace.trace(model, torch.randint(0, 10, (2, 3)).float(), device="meta")  # float ids: a dtype error
    assert "weights:" not in str(failed.value)
    assert not any(n.code == "weights-elsewhere" for c in failed.value.trace.calls for n in c.notes)


def test_only_the_failing_layer_is_noted_for_its_weights_not_the_containers_it_raised_through() -> None:
    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pre = nn.Linear(4, 4)  # on the CPU, where the input goes
            self.inner = nn.Linear(4, 4, device="meta")
            self.scale = nn.Parameter(torch.ones(4, device="meta"))  # the container's own weight, on meta too

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(self.pre(x)) * self.scale

    model = Outer()
    tracer = shapetrace.Tracer(model)  # a block of the user's: the input stays on the CPU
    with pytest.raises(RuntimeError), tracer:
        model(torch.randn(2, 4))
    noted = [c.module for c in tracer.trace.calls if any(n.code == "weights-elsewhere" for n in c.notes)]
    assert noted == ["inner"]


class EveryOther(prune.BasePruningMethod):
    """A pruning method of one's own, as torch's pruning tutorial writes one."""

    PRUNING_TYPE = "unstructured"

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        mask = default_mask.clone()
        mask.view(-1)[::2] = 0
        return mask


def _pruning_state(layer: nn.Module) -> tuple:
    return ([type(h).__name__ for h in layer._forward_pre_hooks.values()], sorted(layer._parameters),
            sorted(layer._buffers))


@pytest.mark.parametrize("when", ["in the forward", "before the trace, then l1 in the forward"])
def test_a_pruning_method_of_ones_own_goes_back_as_torchs_do(when: str) -> None:
    class Prunes(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)
            if when != "in the forward":
                EveryOther.apply(self.lin, "weight")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if when == "in the forward":
                EveryOther.apply(self.lin, "weight")
            else:
                prune.l1_unstructured(self.lin, "weight", 0.25)
            return self.lin(x)

    model, x = Prunes(), torch.randn(2, 4)
    found = _pruning_state(model.lin)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shapetrace.trace(model, x)
    assert _pruning_state(model.lin) == found
