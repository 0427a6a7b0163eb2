"""A model file edited after import (not reloaded) is never shown beside what the old code ran, however small the
edit; a file nobody edited is always shown, however it is written (line endings, tabs, an encoding cookie, the
constructs inside a forward)."""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from shapetrace.renderers.lines import build_view
from shapetrace.tracer.api import trace
from shapetrace.tracer.source_match import source_matches

_TWO_BRANCHES = """import torch
from torch import nn


class TwoBranches(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1 = nn.Linear(4, 8)
        self.l2 = nn.Linear(4, 8)

    def forward(self, x):
        a = self.l1(x)
        b = self.l2(x)
        return torch.cat([a, b], dim=1)
"""


def _import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, source: bytes) -> object:
    """Import ``source`` as module ``name`` from a file of its own, as ``import name`` would."""
    path = tmp_path / f"{name}.py"
    path.write_bytes(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    importlib.invalidate_caches()
    return importlib.import_module(name)


def _edited_after_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edited: str) -> nn.Module:
    module = _import(tmp_path, monkeypatch, "two_branches", _TWO_BRANCHES.encode())
    model = module.TwoBranches()
    (tmp_path / "two_branches.py").write_text(edited)  # saved in the editor, never reloaded
    return model


@pytest.mark.parametrize("edit", [
    ("a = self.l1(x)\n        b = self.l2(x)", "b = self.l2(x)\n        a = self.l1(x)"),
    ("dim=1", "dim=0"),
], ids=["two statements swapped", "a constant changed"])
def test_an_edit_keeping_the_names_and_the_line_count_is_not_shown_against_the_old_code(tmp_path, monkeypatch, edit):
    model = _edited_after_import(tmp_path, monkeypatch, _TWO_BRANCHES.replace(*edit))
    (source,) = build_view(trace(model, torch.randn(2, 4), lines=True)).sources
    assert source.lines == [] and "has changed since this code was loaded" in source.missing
    assert [g.text() for g in source.calls_only] == ["l1 Linear → (2,8)", "l2 Linear → (2,8)", "cat → (2,16)"]


_SCALED = _TWO_BRANCHES.replace("def forward(self, x):", "def forward(self, x, *, scale=2.0, mode='sum'):")


@pytest.mark.parametrize("edit", [("scale=2.0", "scale=3.0"), ("mode='sum'", "mode='max'")],
                         ids=["a default number", "a default string"])
def test_an_edited_default_value_is_told_though_the_forwards_code_is_the_same(tmp_path, monkeypatch, edit):
    module = _import(tmp_path, monkeypatch, "scaled", _SCALED.encode())
    model = module.Scaled() if hasattr(module, "Scaled") else module.TwoBranches()
    (tmp_path / "scaled.py").write_text(_SCALED.replace(*edit))  # the default is made by the class body
    (source,) = build_view(trace(model, torch.randn(2, 4), lines=True)).sources
    assert "has changed since this code was loaded" in source.missing


def test_unedited_defaults_of_every_kind_still_show_the_lines(tmp_path, monkeypatch):
    text = _TWO_BRANCHES.replace(
        "def forward(self, x):",
        "def forward(self, x, k=-1, t=(1, 2.5), n=None, f=float('nan'), *, s='a', z=torch.zeros(1)):")
    model = _import(tmp_path, monkeypatch, "defaults_kinds", text.encode()).TwoBranches()
    (source,) = build_view(trace(model, torch.randn(2, 4), lines=True)).sources
    assert source.lines and not source.missing


# Constructs whose code depends on where they are compiled: private names (mangled with the class), super()
# (a __class__ cell), a class written in a function whose variables its forward reads (a closure), a decorated
# forward, a method call on an imported module (compiled apart from other method calls), a docstring, nested
# functions, lambdas, comprehensions, match, f-strings, a set of constants, and a non-ASCII string.
_MANY_CONSTRUCTS = """# -*- coding: latin-1 -*-
import functools
import torch
from torch import nn


def _kept(forward):
\t@functools.wraps(forward)
\tdef run(self, x):
\t\treturn forward(self, x)
\treturn run


def build(scale):
\tclass Closure(nn.Module):
\t\tdef __init__(self):
\t\t\tsuper().__init__()
\t\t\tself.__lin = nn.Linear(4, 4)

\t\t@_kept
\t\tdef forward(self, x):
\t\t\t\"\"\"Scale,
\t\t\tthen project.\"\"\"
\t\t\tdef twice(t):
\t\t\t\treturn t * 2
\t\t\tsq = lambda t: t * t
\t\t\tparts = [twice(p) for p in x.chunk(2, dim=1)]
\t\t\tmatch len(parts):
\t\t\t\tcase 2:
\t\t\t\t\ty = torch.cat(parts, dim=1)
\t\t\t\tcase _:
\t\t\t\t\ty = x
\t\t\tif f"{scale}\xe9" in {"a", "b", "c"}:
\t\t\t\ty = -y
\t\t\treturn sq(super().__call__ is None or self.__lin(y * scale))
\treturn Closure()
"""


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["LF", "CRLF"])
def test_an_unchanged_file_is_shown_whatever_it_holds_and_however_it_is_written(tmp_path, monkeypatch, newline):
    source = _MANY_CONSTRUCTS.replace("\n", newline).encode("latin-1")
    model = _import(tmp_path, monkeypatch, f"many_constructs_{len(newline)}", source).build(3.0)
    (view,) = build_view(trace(model, torch.randn(2, 4), lines=True)).sources
    assert view.missing is None
    shown = {ln.text.strip(): [g.text() for g in ln.groups] for ln in view.lines}
    assert shown["y = torch.cat(parts, dim=1)"] == ["cat → (2,4)"]
    assert shown["parts = [twice(p) for p in x.chunk(2, dim=1)]"] == ["chunk → [(2,2), (2,2)]"]
    assert shown["return t * 2"] == ["mul ×2: (2,2)"]
    assert shown["return sq(super().__call__ is None or self.__lin(y * scale))"] == [
        "mul → (2,4)", "_Closure__lin Linear → (2,4)"]
    assert shown["sq = lambda t: t * t"] == ["mul → (2,4)"]


def test_every_torch_nn_layer_forward_matches_its_installed_source():
    """The oracle: nobody edits the installed torch, so every forward's source must be found to match."""
    def subclasses(cls: type) -> list[type]:
        return [c for s in cls.__subclasses__() for c in (s, *subclasses(s))]

    checked, mismatched = 0, []
    for cls in {c for c in subclasses(nn.Module) if c.__module__.startswith("torch.nn.")}:
        forward = inspect.unwrap(vars(cls).get("forward", None) or (lambda: None))
        code = getattr(forward, "__code__", None)
        if code is None or forward.__name__ == "<lambda>":
            continue
        text, first = inspect.getsourcelines(code)
        checked += 1
        if not source_matches(code, text, first, getattr(code, "co_qualname", forward.__qualname__)):  # co_qualname: 3.11+
            mismatched.append(f"{cls.__module__}.{cls.__qualname__}")
    assert checked > 100 and mismatched == []


_CELL = """import torch
from torch import nn


class InACell(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return torch.cat([self.lin(x), x], dim=1)
"""


def test_a_class_from_a_notebook_cell_run_statement_by_statement_shows_its_lines():
    """IPython compiles a cell one top-level statement at a time (the class apart from the imports above it), the
    cell's text kept in ``linecache`` under a name of its own; ``torch.cat`` then compiles as in no file."""
    import ast
    import linecache

    name = "<ipython-input-7-cell>"
    linecache.cache[name] = (len(_CELL), None, _CELL.splitlines(keepends=True), name)
    ns: dict = {"__name__": "__main__"}
    for node in ast.parse(_CELL).body:
        exec(compile(ast.Module([node], []), name, "exec"), ns)  # noqa: S102 - running a cell as IPython does
    (source,) = build_view(trace(ns["InACell"](), torch.randn(2, 4), lines=True)).sources
    assert source.missing is None
    assert [g.text() for ln in source.lines for g in ln.groups] == ["lin Linear → (2,4)", "cat → (2,8)"]


def test_an_edited_string_that_looks_like_a_qualified_name_is_still_told(tmp_path, monkeypatch):
    """Only a qualified name a code object holds of itself (a class body's, or before Python 3.11 a nested
    function's) is compared after its last ``<locals>``; a literal of the forward's is compared whole."""
    import importlib
    import sys

    source = ("import torch\nfrom torch import nn\n\n\nclass M(nn.Module):\n    def __init__(self):\n"
              "        super().__init__()\n        self.lin = nn.Linear(4, 4)\n\n    def forward(self, x):\n"
              "        tag = \"{}\"\n        return self.lin(x)\n")
    path = tmp_path / "tagged_model.py"
    path.write_text(source.format("alpha.<locals>.beta"))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("tagged_model")
    try:
        path.write_text(source.format("gamma.<locals>.beta"))  # edited after the import, same lines
        t = trace(module.M(), torch.randn(2, 4), lines=True)
    finally:
        sys.modules.pop("tagged_model", None)
    (info,) = [v for k, v in t.sources.items() if k.endswith("M.forward")]
    assert "changed since this code was loaded" in info.get("missing", "")
