"""A forward that asks autograd for gradients (a physics-informed net, a gradient penalty, MAML) fails under the
trace's default ``torch.no_grad()``; the failure says so and names the option that keeps autograd on, in the
API's words (``grad=True``) and the command line's (``--grad``)."""

from __future__ import annotations

import textwrap

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import shapetrace
from shapetrace.cli import main
from shapetrace.tracer.api import TraceFailed

PINN_SOURCE = textwrap.dedent("""
    import torch
    from torch import nn

    class PINN(nn.Module):
        '''u(x) and its gradient du/dx, as a physics-informed net's loss needs them.'''

        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))

        def forward(self, x):
            x = x if x.requires_grad else x.requires_grad_(True)
            u = self.net(x)
            du, = torch.autograd.grad(u.sum(), x, create_graph=True)
            return torch.cat([u, du], 1)

    def build():
        return PINN()
""")


@pytest.fixture
def pinn_file(tmp_path):
    path = tmp_path / "pinn.py"
    path.write_text(PINN_SOURCE)
    return path


def _pinn() -> nn.Module:
    namespace: dict = {}
    exec(compile(PINN_SOURCE, "pinn.py", "exec"), namespace)  # noqa: S102 - the test's own model source
    return namespace["build"]()


def test_the_api_failure_says_the_trace_ran_without_autograd_and_suggests_grad_true():
    with pytest.raises(TraceFailed) as failed:
        shapetrace.trace(_pinn(), torch.randn(5, 2))
    message = str(failed.value)
    assert "does not require grad" in message  # autograd's own words stay
    assert "without autograd" in message and "grad=True" in message


def test_the_suggested_grad_true_traces_the_same_forward():
    tr = shapetrace.trace(_pinn(), torch.randn(5, 2), grad=True)
    assert tr.failure is None and tr.calls[0].outputs.shape == (5, 3)


def test_the_cli_failure_suggests_its_own_grad_option_and_that_option_works(pinn_file):
    failed = CliRunner().invoke(main, ["trace", f"{pinn_file}:build", "--input", "5,2"])
    assert failed.exit_code == 1
    assert "without autograd" in failed.stderr and "--grad" in failed.stderr and "grad=True" not in failed.stderr
    traced = CliRunner().invoke(main, ["trace", f"{pinn_file}:build", "--input", "5,2", "--grad"])
    assert traced.exit_code == 0, traced.output


def test_a_command_without_a_grad_option_points_to_the_one_that_has_it(pinn_file):
    r = CliRunner().invoke(main, ["lines", f"{pinn_file}:build", "--input", "5,2"])
    assert r.exit_code == 1
    assert "without autograd" in r.stderr and "shapetrace trace --grad" in r.stderr


def test_the_same_error_with_autograd_on_is_the_model_s_own_and_gets_no_hint():
    class DetachesFirst(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(2, 1)

        def forward(self, x):
            x = x.requires_grad_(True)
            return torch.autograd.grad(self.net(x).detach().sum(), x)[0]  # the model's bug: nothing to differentiate

    with pytest.raises(TraceFailed) as failed:
        shapetrace.trace(DetachesFirst(), torch.randn(3, 2), grad=True)
    assert "does not require grad" in str(failed.value) and "without autograd" not in str(failed.value)


def test_profile_suggests_its_own_grad_option_and_that_option_works(pinn_file):
    args = ["profile", f"{pinn_file}:build", "--input", "5,2", "--device", "cpu", "--warmup", "0", "--repeat", "1"]
    failed = CliRunner().invoke(main, args)
    assert failed.exit_code == 1
    assert "without autograd" in failed.stderr and "with --grad" in failed.stderr
    profiled = CliRunner().invoke(main, [*args, "--grad"])
    assert profiled.exit_code == 0, profiled.output


def test_a_training_step_in_a_tracer_block_without_grad_says_to_pass_grad_true():
    """``loss.backward()`` in a ``Tracer(model)`` block meets the block's ``torch.no_grad()``: torch's own error
    stays, with a note naming the option."""
    model = nn.Linear(4, 2)
    with pytest.raises(RuntimeError, match="does not require grad") as caught, shapetrace.Tracer(model):
        model(torch.randn(3, 4)).pow(2).mean().backward()
    assert any("Tracer(model, grad=True)" in note for note in getattr(caught.value, "__notes__", []))


def test_the_suggested_grad_true_runs_the_training_step_in_a_tracer_block():
    model = nn.Linear(4, 2)
    with shapetrace.Tracer(model, grad=True) as t:
        model(torch.randn(3, 4)).pow(2).mean().backward()
    assert model.weight.grad is not None
    assert t.trace is not None and t.trace.calls[0].outputs.shape == (3, 2)


def test_a_tracer_block_error_unrelated_to_autograd_gets_no_note():
    model = nn.Linear(4, 2)
    with pytest.raises(RuntimeError) as caught, shapetrace.Tracer(model):
        model(torch.randn(3, 5))
    assert not getattr(caught.value, "__notes__", [])
