"""Objects a trace records by their repr: a module passed as an argument is named by its class, cheaply (its
repr, which walks every submodule, is never built), and any other object's repr stays on one line."""

from __future__ import annotations

import functools

import torch
from torch import nn

import shapetrace
from shapetrace.tracer.records import Opaque


class Helper(nn.Module):
    """A layer whose forward takes another module as an argument (and ignores it)."""

    def forward(self, x: torch.Tensor, net: nn.Module) -> torch.Tensor:
        return x + 1


class Reprs(nn.Module):
    """A module that counts how often its repr is built."""

    built = 0

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(2, 2), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def __repr__(self) -> str:
        Reprs.built += 1
        return super().__repr__()


class PassesAModule(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.big, self.h = Reprs(), Helper()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(3):
            x = self.h(x, self.big)
        return x


class Label:
    def __repr__(self) -> str:
        return "Label(\n  'a'\n)"


class Takes(nn.Module):
    def forward(self, x: torch.Tensor, tag: object) -> torch.Tensor:
        return x * 2


def test_a_module_argument_is_recorded_by_its_class_name_without_building_its_repr():
    Reprs.built = 0
    t = shapetrace.trace(PassesAModule(), torch.randn(2, 3))
    assert Reprs.built == 0
    assert [c.inputs[1] for c in t.calls_of("h")] == [Opaque("Reprs", "Reprs module")] * 3
    assert "(2,3), Reprs" in str(t.table(width=120))


def test_an_objects_repr_is_recorded_on_one_line():
    t = shapetrace.trace(Takes(), torch.randn(2), Label())
    tag = t.calls[0].inputs[1]
    assert tag == Opaque("Label", "Label(\\n  'a'\\n)")
    assert shapetrace.load(t.to_json()).calls[0].inputs[1] == tag


class TakesAFunction(nn.Module):
    def forward(self, x: torch.Tensor, fn: object) -> torch.Tensor:
        return x


class PassesBoundMethods(nn.Module):
    """Passes a method bound to a big module, and partials around it, as arguments (callbacks, activations)."""

    def __init__(self) -> None:
        super().__init__()
        self.big, self.h = Reprs(), TakesAFunction()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.h(x, self.big.forward)
        x = self.h(x, functools.partial(self.big, scale=torch.ones(3, 2)))
        return self.h(x, functools.partial(torch.add, self.big.forward))


def test_a_method_bound_to_a_module_or_a_partial_around_one_is_recorded_without_building_the_modules_repr():
    Reprs.built = 0
    t = shapetrace.trace(PassesBoundMethods(), torch.randn(2, 3))
    assert Reprs.built == 0
    assert [c.inputs[1].repr for c in t.calls_of("h")] == [
        "<bound method Reprs.forward of Reprs module>",
        "functools.partial(Reprs module, scale=Tensor(3, 2) float32)",
        "functools.partial(<built-in method add of type object>, <bound method Reprs.f..."]  # cut at 80


def test_a_method_bound_to_a_plain_object_reads_as_pythons_repr_of_it_on_one_line():
    label = Label()
    t = shapetrace.trace(TakesAFunction(), torch.randn(2), label.__repr__)
    assert repr(label.__repr__) == "<bound method Label.__repr__ of Label(\n  'a'\n)>"
    assert t.calls[0].inputs[1].repr == "<bound method Label.__repr__ of Label(\\n  'a'\\n)>"
