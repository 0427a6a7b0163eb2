"""Where the model's own code raised, as messages say it: the user's line, not the library line that noticed."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from shapetrace.specs.raised import where_raised

MODEL = """\
import torch
from torch import nn

class M(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x.flatten(1))

def build():
    return nn.Linear(-1, 2)
"""


@pytest.fixture
def user_module(tmp_path):
    path = tmp_path / "usermodels.py"
    path.write_text(MODEL)
    spec = importlib.util.spec_from_file_location("usermodels", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module, path
    sys.modules.pop("usermodels", None)


def _raised(call):
    with pytest.raises(Exception) as info:
        call()
    return info.value


def test_a_shape_mismatch_inside_torch_is_placed_on_the_users_line_that_passed_the_tensor(user_module):
    module, path = user_module
    error = _raised(lambda: module.M()(torch.randn(2, 3, 3)))
    assert where_raised(error) == f"{path}:10 in forward, inside linear.py's forward"


def test_a_factory_that_torch_refuses_is_placed_on_the_factorys_line(user_module):
    module, path = user_module
    error = _raised(module.build)
    assert where_raised(error).startswith(f"{path}:13 in build, inside ")


def test_an_error_raised_in_the_users_own_line_names_that_line_alone():
    def own():
        raise ValueError("mine")

    error = _raised(own)
    assert where_raised(error) == f"{__file__}:{own.__code__.co_firstlineno + 1} in own"
