"""Which source text each traced forward is shown with: one per forward, and only when it is what ran."""

from __future__ import annotations

import json
import linecache
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from shapetrace import load
from shapetrace.renderers.lines import build_view
from shapetrace.tracer.api import trace
from shapetrace.tracer.codec import TraceFormatError


def _texts(view) -> list[str]:
    return [ln.text for sv in view.sources for ln in sv.lines if ln.number]


class TwoLambdas(nn.Module):
    """Holds two plain modules whose forwards are lambdas written in one function: same module and qualname."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Module()
        self.a.lin = nn.Linear(4, 4)
        self.a.forward = lambda x: self.a.lin(x).relu()
        self.b = nn.Module()
        self.b.lin = nn.Linear(4, 8)
        self.b.forward = lambda x: torch.sigmoid(self.b.lin(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x))


def test_two_lambda_forwards_with_one_qualname_each_show_their_own_line():
    t = trace(TwoLambdas(), torch.randn(2, 4), lines=True)
    for tr in (t, load(t.to_json())):
        a, b = build_view(tr, "a"), build_view(tr, "b")
        assert _texts(a) == ["self.a.forward = lambda x: self.a.lin(x).relu()"]
        assert _texts(b) == ["self.b.forward = lambda x: torch.sigmoid(self.b.lin(x))"]
        assert {g.name for ln in b.sources[0].lines for g in ln.groups} == {"lin", "sigmoid"}


_CELL_1 = """
class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return self.lin(x).relu()
old = Block()
"""

_CELL_2 = """
# edited: a gate added
class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.gate = nn.Linear(4, 4)

    def forward(self, x):
        g = torch.sigmoid(self.gate(x))
        return self.lin(x) * g
"""


def test_a_class_redefined_in_a_later_notebook_cell_keeps_each_versions_code(tmp_path: Path):
    """Jupyter compiles each cell from a file of its own, in one ``__main__``: both classes are ``__main__.Block``."""
    ns = {"__name__": "__main__", "nn": nn, "torch": torch}
    for i, cell in enumerate((_CELL_1, _CELL_2)):
        path = tmp_path / f"cell{i}.py"
        path.write_text(cell)
        exec(compile(cell, str(path), "exec"), ns)  # noqa: S102 - running a notebook cell, as Jupyter does
    model = nn.Sequential(ns["old"], ns["Block"]())
    t = trace(model, torch.randn(2, 4), lines=True)
    assert _texts(build_view(t, "0"))[-1] == "    return self.lin(x).relu()"
    assert _texts(build_view(t, "1"))[-1] == "    return self.lin(x) * g"
    # the first forward seen keeps the plain key, as traces saved before did
    assert "__main__.Block.forward" in t.sources


_UNCHANGED = """
import torch
from torch import nn


class Private(nn.Module):
    def __init__(self):
        super().__init__()
        self.__proj = nn.Linear(4, 4)

    def __scale(self, y):
        return y * 2

    def forward(self, x):
        y = self.__proj(x)
        return self.__scale(y)


class Checked(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x):
        assert x.ndim == 2, "expected (batch, features)"
        y = self.proj(x)
        if __debug__:
            assert y.shape[-1] == 4
        return y.relu()


def continued():
    m = nn.Module()
    m.lin = nn.Linear(4, 4)
    m.forward = (
        lambda x: m.lin(x).relu())
    return m
"""


def _unchanged_models(tmp_path: Path, optimize: int = -1) -> dict:
    """The models of a file nobody edited, compiled as ``python`` (or ``python -O`` with ``optimize=1``) would."""
    path = tmp_path / "unchanged_models.py"
    path.write_text(_UNCHANGED)
    ns = {"__name__": f"unchanged_models_{optimize}"}
    exec(compile(_UNCHANGED, str(path), "exec", optimize=optimize), ns)  # noqa: S102 - importing the model file
    return ns


def test_private_attributes_and_methods_are_not_mistaken_for_an_edited_file(tmp_path: Path):
    view = build_view(trace(_unchanged_models(tmp_path)["Private"](), torch.randn(2, 4), lines=True))
    (source,) = view.sources
    assert source.missing is None
    by_text = {ln.text.strip(): [g.text() for g in ln.groups] for ln in source.lines}
    assert by_text["y = self.__proj(x)"] == ["_Private__proj Linear → (2,4)"]  # the name torch gives it
    assert by_text["return self.__scale(y)"] == ["mul → (2,4)"]


@pytest.mark.parametrize("optimize", [0, 1], ids=["python", "python -O"])
def test_asserts_and_if_debug_are_not_mistaken_for_an_edited_file(tmp_path: Path, optimize: int):
    model = _unchanged_models(tmp_path, optimize)["Checked"]()
    (source,) = build_view(trace(model, torch.randn(2, 4), lines=True)).sources
    assert source.missing is None
    assert [g.text() for ln in source.lines for g in ln.groups] == ["proj Linear → (2,4)", "relu → (2,4)"]


def test_a_lambda_forward_on_a_continuation_line_shows_its_line(tmp_path: Path):
    model = _unchanged_models(tmp_path)["continued"]()
    (source,) = build_view(trace(model, torch.randn(2, 4), lines=True)).sources
    assert source.missing is None
    (line,) = source.lines
    assert line.text == "lambda x: m.lin(x).relu())"
    assert [g.name for g in line.groups] == ["lin", "relu"]


def test_an_edited_lambda_on_a_continuation_line_is_still_caught(tmp_path: Path):
    model = _unchanged_models(tmp_path)["continued"]()
    (tmp_path / "unchanged_models.py").write_text(_UNCHANGED.replace("m.lin(x).relu()", "m.lin(x).sigmoid()"))
    linecache.checkcache()
    (source,) = build_view(trace(model, torch.randn(2, 4), lines=True)).sources
    assert source.missing and "has changed" in source.missing


def test_an_assert_compiled_away_by_python_o_is_not_called_never_ran(tmp_path: Path):
    model = _unchanged_models(tmp_path, optimize=1)["Checked"]()
    t = trace(model, torch.randn(2, 4), lines=True)
    for tr in (t, load(t.to_json())):
        (source,) = build_view(tr).sources
        states = {ln.text.strip(): ln.state for ln in source.lines}
        assert states['assert x.ndim == 2, "expected (batch, features)"'] == "plain"
        assert states["if __debug__:"] == states["assert y.shape[-1] == 4"] == "plain"


@pytest.mark.parametrize(
    ("damage", "field"),
    [
        (lambda src: src.pop("first_line"), "first_line: missing"),
        (lambda src: src.update(text=None), "text: must be a list"),
        (lambda src: src.update(first_line="ten"), "first_line: must be a line number"),
        (lambda src: src.update(code_lines=[None]), "code_lines: must be a list of line numbers"),
    ],
    ids=["no first line", "text null", "first line text", "code lines null"],
)
def test_a_saved_trace_with_damaged_sources_is_refused_as_unreadable(tmp_path: Path, damage, field: str):
    from click.testing import CliRunner

    from shapetrace.cli import main

    data = json.loads(trace(TwoLambdas(), torch.randn(2, 4), lines=True).to_json())
    damage(next(src for key, src in data["sources"].items() if key.endswith("TwoLambdas.forward")))
    saved = tmp_path / "broken.json"
    saved.write_text(json.dumps(data))
    with pytest.raises(TraceFormatError, match=field):
        load(saved)
    result = CliRunner().invoke(main, ["lines", str(saved)])
    assert result.exit_code == 1 and "is not a readable shapetrace trace" in result.output
    assert field in result.output and "KeyError" not in result.output


class _CallableForward:
    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.module.lin(x).relu()


def _partial_forward(module: nn.Module, x: torch.Tensor, scale: float = 2.0) -> torch.Tensor:
    y = module.lin(x)
    return y * scale


@pytest.mark.parametrize("kind", ["partial", "callable object"])
def test_a_forward_set_as_a_partial_or_a_callable_object_shows_the_code_that_runs(kind):
    import functools

    model = nn.Module()
    model.lin = nn.Linear(4, 2)
    model.forward = functools.partial(_partial_forward, model) if kind == "partial" else _CallableForward(model)
    text = str(trace(model, torch.randn(3, 4), lines=True).lines())
    assert "built in" not in text and "lin Linear → (3,2)" in text
    assert ("y = module.lin(x)" if kind == "partial" else "return self.module.lin(x).relu()") in text


def test_a_model_files_saved_lines_trace_is_the_same_in_every_process(tmp_path):
    """The module a MODEL file is imported as names the trace's source keys: it must not depend on Python's
    per-process string hashing, or the same model and inputs would save a different file every run."""
    (tmp_path / "m.py").write_text(
        "import torch\nfrom torch import nn\n\n\ndef build():\n    class Net(nn.Module):\n"
        "        def __init__(self):\n            super().__init__()\n            self.lin = nn.Linear(4, 2)\n\n"
        "        def forward(self, x):\n            return self.lin(x)\n\n    return Net()\n")
    outs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-m", "shapetrace", "lines", "m.py:build", "--input", "2,4", "-f", "json",
                        "-o", f"run{seed}.json"], cwd=tmp_path, env=env, check=True, capture_output=True)
        outs.append((tmp_path / f"run{seed}.json").read_text())
    assert outs[0] == outs[1]
