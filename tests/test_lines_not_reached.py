"""``lines`` for a module the failure stopped short of: told as the failure (exit status 1), naming where the
forward failed first, as the table's "not reached before the failure" list does; a module the forward would
never have called stays a usage error."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import shapetrace
from shapetrace.cli import main
from shapetrace.renderers.lines import LinesError, NotReached, build_view

MODEL = """\
from torch import nn


def build():
    return nn.Sequential(nn.Flatten(), nn.Linear(99, 16), nn.ReLU(), nn.Linear(16, 2))
"""


def _failed() -> shapetrace.Trace:
    model = nn.Sequential(nn.Flatten(), nn.Linear(99, 16), nn.ReLU(), nn.Linear(16, 2))
    return shapetrace.trace(model, torch.randn(2, 3, 4, 4), lines=True, strict=False)


def test_a_module_after_the_failure_is_not_reached_and_names_where_the_forward_failed():
    with pytest.raises(NotReached) as e:
        build_view(_failed(), "3")
    assert str(e.value).startswith("module '3' (Linear) was not reached: the forward failed in 1 (Linear) first "
                                   "(RuntimeError: mat1 and mat2 shapes cannot be multiplied")


class AttentionThenBadLinear(nn.Module):
    """``nn.MultiheadAttention`` returns without calling its ``out_proj`` (it uses the weights itself); the
    Linear after it expects the wrong width."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.bad = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bad(self.attn(x, x, x)[0])


def test_a_module_its_returned_parent_never_called_is_still_never_called():
    t = shapetrace.trace(AttentionThenBadLinear().eval(), torch.randn(2, 3, 8), lines=True, strict=False)
    with pytest.raises(LinesError, match="was never called in this forward") as e:
        build_view(t, "attn.out_proj")
    assert not isinstance(e.value, NotReached)


def test_the_cli_says_not_reached_with_the_failure_and_exit_status_1(tmp_path):
    (tmp_path / "head.py").write_text(MODEL)
    result = CliRunner().invoke(main, ["lines", f"{tmp_path / 'head.py'}:build", "--input", "2,3,4,4",
                                       "--module", "3"])
    assert result.exit_code == 1, result.output
    assert "error: module '3' (Linear) was not reached: the forward failed in 1 (Linear) first" in result.output
    assert "was never called" not in result.output and "Usage:" not in result.output


def test_a_saved_trace_says_not_reached_with_exit_status_1(tmp_path):
    saved = tmp_path / "t.json"
    saved.write_text(_failed().to_json())
    result = CliRunner().invoke(main, ["lines", str(saved), "--module", "3"])
    assert result.exit_code == 1, result.output
    assert result.output.count("was not reached: the forward failed in 1 (Linear) first") == 1
