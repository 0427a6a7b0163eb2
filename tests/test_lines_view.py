"""``build_view``: what each line of a forward is shown with, and what it costs to gather."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

from shapetrace.renderers.lines import LinesError, build_view
from shapetrace.tracer.api import TraceFailed, trace
from shapetrace.tracer.records import Trace


class Repeated(nn.Module):
    """One Linear called many times in a loop: a leaf with many calls."""

    def __init__(self, times: int) -> None:
        super().__init__()
        self.times = times
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.times):
            x = self.lin(x)
        return x


def test_a_leaf_called_many_times_is_viewed_without_a_pass_over_the_trace_per_call(monkeypatch: pytest.MonkeyPatch):
    t = trace(Repeated(300), torch.randn(1, 4), lines=True)
    passes = []
    real = Trace.leaves
    monkeypatch.setattr(Trace, "leaves", lambda self: passes.append(1) or real(self))
    view = build_view(t, "lin")
    assert view.calls == 300 and view.note and view.note.startswith("a leaf module")
    assert len(passes) <= 1


class Casts(nn.Module):
    """Casts its input to a different dtype on each run of a loop, and in a comprehension."""

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        outs = []
        for dt in (torch.float16, torch.bfloat16, torch.float64):
            outs.append(x.to(dt))
        casts = [x.to(dt) for dt in (torch.float64, torch.float32, torch.float32)]
        return outs, casts


def _groups(view, needle: str) -> list[str]:
    (line,) = [ln for sv in view.sources for ln in sv.lines if needle in ln.text]
    return [g.text() for g in line.groups]


def test_runs_of_a_line_with_different_dtypes_each_show_their_dtype_and_are_not_folded():
    view = build_view(trace(Casts(), torch.randn(2, 4), lines=True))
    assert _groups(view, "outs.append(x.to(dt))") == ["to ×3: (2,4) float16, (2,4) bfloat16, (2,4) float64"]
    assert _groups(view, "casts = [") == ["to ×3: (2,4) float64, (2,4) float32 ×2"]


COUNTER = 0


class NoCodeStatements(nn.Module):
    """Statements that compile to no instruction: a global, a nonlocal and a bare annotation."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        global COUNTER
        COUNTER += 1
        y: torch.Tensor
        y = self.lin(x)
        n = 0

        def double(t: torch.Tensor) -> torch.Tensor:
            nonlocal n
            n += 1
            return t * 2

        return double(y)


def _states(view) -> dict[str, str]:
    return {ln.text.strip(): ln.state for sv in view.sources for ln in sv.lines}


def test_global_nonlocal_and_a_bare_annotation_are_not_called_never_ran():
    states = _states(build_view(trace(NoCodeStatements(), torch.randn(2, 4), lines=True)))
    assert states["global COUNTER"] == states["nonlocal n"] == states["y: torch.Tensor"] == "plain"
    assert "unreached" not in states.values()


class Guarded(nn.Module):
    """A ``match`` whose first case has a guard that calls a module."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = nn.Linear(4, 1)
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        match x.dim():
            case 2 if self.gate(x).sum() > -1e9:
                return self.lin(x)
            case _:
                return x


def test_calls_in_a_case_guard_show_on_the_case_line_and_a_case_not_tried_never_ran():
    view = build_view(trace(Guarded(), torch.randn(2, 4), lines=True))
    assert _groups(view, "match x.dim():") == []
    assert _groups(view, "case 2 if") == ["gate Linear → (2,1)", "sum → ()", "gt → () bool"]
    assert _states(view)["case _:"] == "unreached"


class Scale(nn.Module):
    """A leaf written here (a parameter and a functional op), not one of torch.nn's own layers."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.w


class Stage(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = Scale()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(x)


class Keyed(nn.Module):
    """A ModuleDict whose key is no Python identifier."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleDict({"a-b": Scale()})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks["a-b"](x)


def test_the_leaf_note_names_the_submodule_as_valid_python():
    model = nn.Sequential()
    model.add_module("layer1", nn.Sequential(Stage()))
    note = build_view(trace(model, torch.randn(1, 3, 4, 4), lines=True), "layer1.0.conv1").note
    assert "shapetrace.trace(model.layer1[0].conv1, ..., lines=True)" in note
    keyed = build_view(trace(Keyed(), torch.randn(1, 4), lines=True), "blocks.a-b").note
    assert "shapetrace.trace(model.get_submodule('blocks.a-b'), ..., lines=True)" in keyed


def test_an_unknown_module_in_the_python_api_is_told_in_python_terms():
    t = trace(Stage(), torch.randn(1, 3, 4, 4), lines=True)
    with pytest.raises(LinesError, match=r"t\.lines\(\)") as e:
        build_view(t, "conv")
    assert "Did you mean 'conv1'" in str(e.value)


class ReshapesFirst(nn.Module):
    """Reshapes its input before calling its one Linear: a wrong input fails before any child is called."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(x.shape[0], 3, -1)
        return self.fc(x)


def _failed_trace(model: nn.Module, x: torch.Tensor) -> Trace:
    with pytest.raises(TraceFailed) as e:
        trace(model, x, lines=True)
    return e.value.trace


def test_a_model_that_failed_before_calling_its_first_child_is_not_called_a_leaf():
    view = build_view(_failed_trace(ReshapesFirst(), torch.randn(2, 10)))
    assert view.failure and view.note is None


def test_a_vision_transformer_given_the_wrong_image_size_is_not_called_a_leaf():
    vit = VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32)
    view = build_view(_failed_trace(vit, torch.randn(1, 3, 40, 40)))
    assert "Wrong image height" in view.failure and view.note is None


def test_a_leaf_model_that_fails_still_gets_the_leaf_note():
    view = build_view(_failed_trace(nn.Linear(12, 4), torch.randn(2, 10)))
    assert view.failure and view.note and view.note.startswith("a leaf module")
