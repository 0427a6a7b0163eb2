"""``shapetrace diff`` on the command line: ``--width``, ``--against`` given a saved trace, and the other tool
failing where shapetrace did not."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import shapetrace
from shapetrace.cli import main
from shapetrace.compare import diff_torchview
from shapetrace.renderers.units import display_width

_MODELS = ("import torch\nfrom torch import nn\n\n"
           "class CNN(nn.Module):\n"
           "    def __init__(self, fc_in=32 * 7 * 7):\n        super().__init__()\n"
           "        self.conv = nn.Conv2d(3, 32, 3, padding=1)\n"
           "        self.pool = nn.MaxPool2d(4)\n"
           "        self.fc = nn.Linear(fc_in, 10)\n\n"
           "    def forward(self, x):\n        return self.fc(self.pool(self.conv(x)).flatten(1))\n\n"
           "class Total(nn.Module):\n"
           "    def __init__(self):\n        super().__init__()\n        self.lin = nn.Linear(4, 4)\n\n"
           "    def forward(self, x):\n        return self.lin(x).sum().item()\n")


@pytest.fixture()
def models(tmp_path):
    path = tmp_path / "models.py"
    path.write_text(_MODELS)
    return path


def _diff_of_a_failing_cnn(models, *width: str):
    return CliRunner().invoke(main, ["diff", f"{models}:CNN", f"{models}:CNN", "--b-arg", "fc_in=2048",
                                     "-i", "2,3,32,32", *width])


def test_diff_rows_fit_the_width_their_long_error_messages_wrapping(models):
    result = _diff_of_a_failing_cnn(models, "--width", "60")
    assert result.exit_code == 1, result.output  # A's forward failed: the diff of what ran, status 1
    table = result.stdout.split("\n\n", 1)[1].split("\n1 changed")[0]
    assert "RuntimeError: mat1 and mat2" in table
    assert max(display_width(line) for line in table.splitlines()) <= 60, table


def test_diff_width_0_is_no_limit_and_the_default_is_100_off_a_terminal(models):
    unlimited = _diff_of_a_failing_cnn(models, "-w", "0").stdout
    assert any("RuntimeError: mat1 and mat2 shapes cannot be multiplied (2x2048 and 1568x10)" in line
               for line in unlimited.splitlines())
    default = _diff_of_a_failing_cnn(models).stdout.split("\n\n", 1)[1].split("\n1 changed")[0]
    assert max(display_width(line) for line in default.splitlines()) <= 100


def test_diff_width_below_40_is_refused_as_for_trace(models):
    result = _diff_of_a_failing_cnn(models, "-w", "20")
    assert result.exit_code == 2 and "at least 40 columns" in result.stderr


def test_against_given_a_saved_trace_says_it_needs_a_model_and_how_to_diff_two_traces(models, tmp_path):
    saved = tmp_path / "t.json"
    saved.write_text(shapetrace.trace(nn.Linear(4, 2), torch.randn(2, 4)).to_json())
    result = CliRunner().invoke(main, ["diff", str(saved), "--against", "torchview"])
    assert result.exit_code == 2, result.output
    assert "is a saved trace, but --against torchview runs torchview on the model itself" in result.stderr
    assert "needs a MODEL spec" in result.stderr and "shapetrace diff A.json B.json" in result.stderr
    assert "not a Python file" not in result.stderr


def test_torchinfo_failing_where_shapetrace_did_not_names_torchinfo_its_cause_and_exits_3(models):
    result = CliRunner().invoke(main, ["diff", f"{models}:Total", "-i", "2,4", "--against", "torchinfo"])
    assert result.exit_code == 3, result.output
    error = result.stderr
    assert error.startswith("Error: torchinfo failed on this model: TypeError: Model contains a layer with an "
                            "unsupported input or output type"), error
    assert "raised in torchinfo's layer_info.py" in error  # where in torchinfo, not "see above stack traces"
    assert "shapetrace's own trace of the model succeeded" in error and "--against torchview" in error
    assert "See above stack traces" not in error


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
        self.out = nn.Linear(32, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.attn(x, x, x)[0])


def test_torchview_and_shapetrace_agree_on_attention_whose_out_proj_runs_functionally():
    model, x = Attention().eval(), torch.randn(2, 5, 32)
    # MultiheadAttention has a submodule (out_proj) it never calls: torchview expands it into functional ops,
    # so the two compare the same leaves (modules without submodules) and agree
    result = diff_torchview(model, shapetrace.trace(model, x), x)
    assert result.differences == [] and result.our_calls == result.their_calls == 1


@pytest.fixture
def built(tmp_path):
    """A model file whose factory leaves a mark when it runs, and takes any keyword arguments."""
    path = tmp_path / "marked.py"
    path.write_text("from pathlib import Path\nfrom torch import nn\n\n"
                    "def build(**kwargs):\n"
                    f"    Path({str(tmp_path / 'built')!r}).touch()\n"
                    "    return nn.Linear(4, 2)\n")
    return path


def test_diff_refuses_an_unknown_b_naming_it_before_building_a(tmp_path, built):
    r = CliRunner().invoke(main, ["diff", f"{built}:build", "nope", "--input", "1,4"])
    assert r.exit_code == 2, r.output
    assert "B (nope): unknown model 'nope'" in r.output
    assert not (tmp_path / "built").exists()


def test_diff_says_a_key_given_by_both_arg_and_a_arg_is_given_by_both(built):
    r = CliRunner().invoke(main, ["diff", f"{built}:build", f"{built}:build", "--arg", "n=3", "--a-arg", "n=3",
                                  "--input", "1,4"])
    assert r.exit_code == 2, r.output
    assert "n is given by both --arg and --a-arg" in r.output


def test_diff_names_the_option_a_bad_value_came_with(built):
    r = CliRunner().invoke(main, ["diff", f"{built}:build", f"{built}:build", "--b-arg", "n=true", "--input", "1,4"])
    assert r.exit_code == 2, r.output
    assert "B (" in r.output and "bad --b-arg 'n=true'" in r.output
