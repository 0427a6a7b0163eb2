"""Objects a trace records by their repr: a module passed as an argument is named by its class, cheaply (its
repr, which walks every submodule, is never built), and any other object's repr stays on one line."""

from __future__ import annotations

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
