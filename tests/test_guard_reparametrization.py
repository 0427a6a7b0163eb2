"""What a trace leaves of a model that torch's reparametrizations touch: a forward that adds or removes one
on its first call (``parametrize``, old-style ``weight_norm`` and ``spectral_norm``, pruning) leaves the layer
whole as it found it (class, registries, hooks), and a trace inside ``parametrize.cached()`` leaves torch's
cache of computed weights as found. The oracle is torch itself: an untraced twin of the model."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations, parametrize, prune

import shapetrace

warnings.filterwarnings("ignore", message=".*weight_norm is deprecated.*")


class Symmetric(nn.Module):
    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w.triu() + w.triu(1).transpose(0, 1)


class Doubled(nn.Module):
    def forward(self, b: torch.Tensor) -> torch.Tensor:
        return 2 * b


class OnFirstCall(nn.Module):
    """Changes how its layer holds its weights on the first call, told by the layer's own state (``done``)."""

    def __init__(self, layer: nn.Linear, change: Callable[[nn.Linear], object], done: Callable[[nn.Linear], bool]):
        super().__init__()
        self.lin, self.change, self.done = layer, change, done

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.done(self.lin):
            self.change(self.lin)
        return self.lin(x)


def _linear() -> nn.Linear:
    return nn.Linear(4, 4)


def _pruned() -> nn.Linear:
    layer = nn.Linear(4, 4)
    prune.l1_unstructured(layer, "weight", 0.5)
    return layer


CHANGES: dict[str, tuple[Callable[[], nn.Linear], Callable[[nn.Linear], object], Callable[[nn.Linear], bool]]] = {
    "parametrizations.weight_norm": (_linear, parametrizations.weight_norm, parametrize.is_parametrized),
    "register_parametrization": (_linear, lambda m: parametrize.register_parametrization(m, "weight", Symmetric()),
                                 parametrize.is_parametrized),
    "remove_parametrizations": (lambda: parametrizations.weight_norm(nn.Linear(4, 4)),
                                lambda m: parametrize.remove_parametrizations(m, "weight"),
                                lambda m: not parametrize.is_parametrized(m)),
    "a second parametrization": (lambda: parametrizations.weight_norm(nn.Linear(4, 4)),
                                 lambda m: parametrize.register_parametrization(m, "bias", Doubled()),
                                 lambda m: parametrize.is_parametrized(m, "bias")),
    "old-style weight_norm": (_linear, nn.utils.weight_norm, lambda m: "weight_g" in m._parameters),
    "old-style remove_weight_norm": (lambda: nn.utils.weight_norm(nn.Linear(4, 4)), nn.utils.remove_weight_norm,
                                     lambda m: "weight_g" not in m._parameters),
    "old-style spectral_norm": (_linear, nn.utils.spectral_norm, lambda m: "weight_orig" in m._parameters),
    "prune.l1_unstructured": (_linear, lambda m: prune.l1_unstructured(m, "weight", 0.5), prune.is_pruned),
    "prune.remove": (_pruned, lambda m: prune.remove(m, "weight"), lambda m: not prune.is_pruned(m)),
}


def _model(name: str) -> OnFirstCall:
    make, change, done = CHANGES[name]
    torch.manual_seed(0)
    return OnFirstCall(make(), change, done)


def _hooks(m: nn.Module) -> dict[str, list]:
    return {k: list(v.items()) for k, v in vars(m).items() if k.endswith("_hooks") or "_hooks_" in k}


def _state(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.state_dict().items()}


def _plain_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(1)  # spectral_norm starts its power iteration from a random vector
    return model(x)


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_a_layer_the_first_call_reparametrizes_goes_back_whole_class_hooks_and_weights(name):
    model, x = _model(name), torch.randn(2, 4)
    layer_class, hooks, state = type(model.lin), _hooks(model.lin), _state(model)
    trace = shapetrace.trace(model, x)
    assert trace.meta["registrations_restored"]  # the forward's change was put back ...
    assert type(model.lin) is layer_class  # ... with the class parametrize swaps
    assert _hooks(model.lin) == hooks  # ... and the hooks prune and weight_norm add or remove
    after = _state(model)
    assert list(after) == list(state)
    if name != "prune.remove":  # it writes the masked weight through ``.data``, which no trace can see (guide.md)
        assert all(torch.equal(after[k], state[k]) for k in state)


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_after_a_trace_the_first_plain_forward_gives_what_it_gives_without_the_trace_and_traces_again(name):
    model, twin, x = _model(name), _model(name), torch.randn(2, 4)
    shapetrace.trace(model, x)
    assert torch.equal(_plain_forward(model, x), _plain_forward(twin, x))
    assert list(model.state_dict()) == list(twin.state_dict())  # the change made by the plain forward, as torch's
    again = shapetrace.trace(model, x)
    assert "registrations_restored" not in again.meta
    assert torch.equal(_plain_forward(model, x), _plain_forward(twin, x))


class OldWeightNormOnce(nn.Module):
    """Applies old-style weight_norm to its layer on the first call, remembering it in a flag of its own."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.applied = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.applied:
            nn.utils.weight_norm(self.lin)
            self.applied = True
        return self.lin(x)


def test_a_flag_on_a_module_that_registers_nothing_stays_set_and_the_layer_it_changed_works_as_before():
    torch.manual_seed(0)
    model, x = OldWeightNormOnce(), torch.randn(2, 4)
    plain = nn.Linear(4, 4)
    plain.load_state_dict(model.lin.state_dict())
    shapetrace.trace(model, x)
    assert model.applied  # a plain attribute of a module that registers nothing: left as the forward left it
    assert list(model.lin._parameters) == ["weight", "bias"] and not model.lin._forward_pre_hooks
    assert torch.equal(model(x), plain(x))


def _make_orthogonal() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(parametrizations.orthogonal(nn.Linear(4, 4)), nn.ReLU(), nn.Linear(4, 1))


def _trace_in(how: str, model: nn.Module, x: torch.Tensor) -> None:
    if how == "Tracer block":
        with shapetrace.Tracer(model):
            model(x)
    elif how == "profile":
        shapetrace.profile(model, x, repeat=1, warmup=0)
    else:
        shapetrace.trace(model, x, device="meta" if how == "trace on meta" else None)


HOWS = ["trace", "trace on meta", "Tracer block", "profile"]


@pytest.mark.parametrize("how", HOWS)
def test_a_training_step_after_a_trace_in_the_same_parametrize_cached_block_gets_its_gradient(how):
    x = torch.randn(3, 4)
    twin = _make_orthogonal()
    with parametrize.cached():
        twin(x).sum().backward()
    model = _make_orthogonal()
    with parametrize.cached():
        _trace_in(how, model, x)
        model(x).sum().backward()
    original = model[0].parametrizations.weight.original
    assert original.grad is not None
    assert torch.allclose(original.grad, twin[0].parametrizations.weight.original.grad)


@pytest.mark.parametrize("how", HOWS)
def test_a_trace_leaves_the_weights_parametrize_cached_before_it_in_the_cache(how):
    model, x = _make_orthogonal(), torch.randn(3, 4)
    with parametrize.cached():
        weight = model[0].weight  # computed with its graph, and cached
        found = dict(parametrize._cache)
        _trace_in(how, model, x)
        assert parametrize._cache.keys() == found.keys()
        assert all(parametrize._cache[k] is v for k, v in found.items())
        assert model[0].weight is weight and weight.requires_grad


def test_on_meta_a_parametrization_the_forward_adds_beside_another_leaves_the_layer_as_torch_has_it():
    name = "a second parametrization"
    model, twin, x = _model(name), _model(name), torch.randn(2, 4)
    shapetrace.trace(model, x, device="meta")  # the layer's own registries look untouched: meta copies swapped back
    assert not parametrize.is_parametrized(model.lin, "bias")
    assert torch.equal(_plain_forward(model, x), _plain_forward(twin, x))
