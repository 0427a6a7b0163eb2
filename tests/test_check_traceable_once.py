"""``trace()`` and ``profile()`` check once that a model can be traced by module hooks; a ``Tracer`` used
directly still checks what it is given."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import shapetrace
from shapetrace.tracer import api, capture, timing
from shapetrace.tracer.errors import UnsupportedModel


@pytest.fixture
def checks(monkeypatch):
    """The models ``check_traceable`` is run on, in order (under any name a tracer module imported it by)."""
    seen: list[object] = []
    real = capture.check_traceable

    def counting(model: object) -> None:
        seen.append(model)
        real(model)

    monkeypatch.setattr(capture, "check_traceable", counting)
    for module in (api, timing):
        monkeypatch.setattr(module, "check_traceable", counting, raising=False)
    return seen


def test_trace_checks_the_model_once(checks):
    model = nn.Sequential(nn.Linear(4, 2))
    shapetrace.trace(model, torch.zeros(3, 4))
    assert checks == [model]


def test_profile_checks_the_model_once(checks):
    model = nn.Sequential(nn.Linear(4, 2))
    shapetrace.profile(model, torch.zeros(3, 4), device="cpu", warmup=0, repeat=1)
    assert checks == [model]


def test_a_tracer_used_directly_still_refuses_what_hooks_cannot_trace():
    """A guard: ``Tracer(model)`` checks what it is given (before and after the change)."""
    scripted = torch.jit.script(nn.Linear(4, 2))
    with pytest.raises(UnsupportedModel, match="TorchScript"):
        shapetrace.Tracer(scripted)
    with pytest.raises(UnsupportedModel, match="torch.nn.Module"):
        shapetrace.Tracer(lambda x: x)  # type: ignore[arg-type]


def test_trace_still_refuses_what_hooks_cannot_trace():
    """A guard: the one check of ``trace()`` still refuses a TorchScript module."""
    with pytest.raises(UnsupportedModel, match="TorchScript"):
        shapetrace.trace(torch.jit.script(nn.Linear(4, 2)), torch.zeros(3, 4))


def test_a_checked_modules_module_cannot_be_replaced_after_the_check():
    """The module a Tracer puts its hooks on without checking it is the one the check accepted."""
    checked = capture.Checked(nn.Linear(2, 2))
    first = checked.module
    with pytest.raises(AttributeError, match="read-only"):
        checked.module = nn.Linear(3, 3)
    with pytest.raises(AttributeError, match="read-only"):
        checked._module = nn.Linear(3, 3)
    assert checked.module is first


def test_a_checked_not_made_by_its_constructor_says_so():
    with pytest.raises(TypeError, match="not made by its constructor"):
        capture.Tracer(capture.Checked.__new__(capture.Checked))
