"""The package's import graph keeps the layering of ``design.md``: no cycles and no upward imports.

Every module under ``src/shapetrace`` is parsed (not imported), and every ``import`` counts, including those
inside functions; only imports under ``if TYPE_CHECKING:`` are left out. The layers, lowest first:

    tracer.records (+ its codec, checks and file reader)  <  tracer  <  renderers  <  gallery architectures  <  gallery exhibits
    <  specs  <  session (and compare)  <  the front ends: cli, cli_profile, cli_options, sphinxext, gallery.site

The gallery site builder is a front end like the CLI and the Sphinx directive: it traces every exhibit
through the session layer, so it sits above it (the exhibits themselves sit below ``specs``, which resolves
exhibit names).

A module may import its own layer (when that makes no cycle) or lower ones. ``renderers`` import only
``tracer.records`` (and its codec) and each other, never torch; gallery architectures import torch only
(and each other). The one accepted upward import is a record's display method (``_repr_html_``, ``diagram()``,
...) importing its renderer lazily, inside the function.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "shapetrace"

# Cycles another change removes. Each entry is a set of modules; an import cycle (a strongly connected group
# of modules) is tolerated while it lies within one entry. Remove the entry with the change that breaks the
# cycle (``test_the_known_cycles_still_exist`` says when): from then on this test holds the line.
KNOWN_CYCLES: dict[str, frozenset[str]] = {
    # records' display methods (_repr_html_, lines()) import their renderers, which import records: allowed as
    # upward imports, still a cycle (the records split ends it)
    "records-display": frozenset({"shapetrace.tracer.records", "shapetrace.renderers.table",
                                  "shapetrace.renderers.lines", "shapetrace.renderers.lines_rows",
                                  "shapetrace.renderers.html",
                                  "shapetrace.renderers.display", "shapetrace.renderers.diagram",
                                  "shapetrace.renderers.graph", "shapetrace.renderers.plots", "shapetrace.renderers.rows",
                                  "shapetrace.renderers.hints", "shapetrace.renderers.finite",
                                  "shapetrace.renderers.units", "shapetrace.renderers.markdown"}),
}

# Methods of a record that may import a renderer lazily (the display of a record is the renderer's job).
DISPLAY_METHODS = {"_repr_html_", "_repr_pretty_", "_repr_markdown_", "_repr_svg_", "_repr_png_", "_repr_mimebundle_",
                   "__str__", "__format__", "table", "diagram", "flow", "lines", "save", "show", "render",
                   "to_text", "to_markdown", "to_html"}

RECORDS = ("shapetrace.tracer.records", "shapetrace.tracer.codec", "shapetrace.tracer.metrics", "shapetrace.tracer.units",
           "shapetrace.tracer.user_warnings", "shapetrace.tracer.sources_check", "shapetrace.tracer.tracefile")
GALLERY_ARCHITECTURES = ("shapetrace.gallery.layers", "shapetrace.gallery.vision", "shapetrace.gallery.unet",
                         "shapetrace.gallery.tabular", "shapetrace.gallery.text", "shapetrace.gallery.photo")
TOP = ("shapetrace.cli", "shapetrace.cli_profile", "shapetrace.cli_options", "shapetrace.sphinxext",
       "shapetrace.sphinx_sources", "shapetrace.sphinx_messages", "shapetrace.sphinx_options",
       "shapetrace.sphinx_images", "shapetrace.sphinx_page_text",
       "shapetrace.__main__", "shapetrace.gallery.site")


def layer(module: str) -> int:
    """The layer of a module of the package (higher may import lower)."""
    if module == "shapetrace" or module in TOP or module.startswith("shapetrace.cli"):
        return 8  # the public API's lazy __getattr__ and the front ends
    if module.startswith(RECORDS) or module.startswith("shapetrace.tracer.records"):
        return 0
    if module.startswith("shapetrace.tracer"):
        return 1
    if module.startswith("shapetrace.renderers"):
        return 2
    if module in GALLERY_ARCHITECTURES or module == "shapetrace.gallery":
        return 3
    if module.startswith("shapetrace.gallery"):
        return 4
    if module.startswith("shapetrace.specs"):
        return 5
    if module in ("shapetrace.session", "shapetrace.compare", "shapetrace.stdout_guard", "shapetrace.leftover_threads"):
        return 6
    raise AssertionError(f"{module}: no layer assigned; add it to tests/test_imports.py's layer()")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Imports(ast.NodeVisitor):
    """Collect ``(imported module, enclosing function or None, line)`` for one module."""

    def __init__(self, name: str, is_package: bool) -> None:
        self.name = name
        self.package = name if is_package else name.rpartition(".")[0]
        self.found: list[tuple[str, str | None, int]] = []
        self.function: list[str] = []

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.function.append(node.name)
        self.generic_visit(node)
        self.function.pop()

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function

    def _add(self, target: str, line: int) -> None:
        self.found.append((target, self.function[0] if self.function else None, line))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")
            if node.level > 1:
                base = base[: -(node.level - 1)]
            origin = ".".join(base + ([node.module] if node.module else []))
        else:
            origin = node.module or ""
        # ``from . import x`` / ``from .pkg import mod`` may name submodules: count them as such.
        for alias in node.names:
            candidate = f"{origin}.{alias.name}"
            self._add(candidate if _is_module(candidate) else origin, node.lineno)


def _is_module(dotted: str) -> bool:
    if not dotted.startswith("shapetrace"):
        return False
    rel = Path(*dotted.split("."))
    return (SRC / rel).with_suffix(".py").is_file() or (SRC / rel / "__init__.py").is_file()


def _owner(dotted: str) -> str | None:
    """The package module ``dotted`` refers to (its longest prefix that is a module), or None if external."""
    parts = dotted.split(".")
    while parts:
        candidate = ".".join(parts)
        if _is_module(candidate):
            return candidate
        parts.pop()
    return None


def collect() -> dict[str, list[tuple[str, str | None, int]]]:
    """For every module of the package: its imports (internal as module names, external as given)."""
    graph: dict[str, list[tuple[str, str | None, int]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        visitor = _Imports(name, path.name == "__init__.py")
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        graph[name] = [(_owner(t) or t, fn, line) for t, fn, line in visitor.found]
    return graph


GRAPH = collect()


def _internal_edges(include_lazy_display: bool = True) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in GRAPH}
    for module, imports in GRAPH.items():
        for target, function, _ in imports:
            if target in GRAPH and target != module:
                if not include_lazy_display and function in DISPLAY_METHODS:
                    continue
                edges[module].add(target)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _known(component: list[str]) -> bool:
    return any(set(component) <= allowed for allowed in KNOWN_CYCLES.values())


def test_every_module_has_a_layer():
    for module in GRAPH:
        layer(module)


def test_no_import_cycles_beyond_the_known_ones():
    unknown = [c for c in _cycles(_internal_edges()) if not _known(c)]
    assert not unknown, f"import cycles: {unknown}"


def test_the_known_cycles_still_exist():
    """An entry in KNOWN_CYCLES that no longer holds is removed, so the cycle cannot come back unnoticed."""
    components = [set(c) for c in _cycles(_internal_edges())]
    stale = [name for name, allowed in KNOWN_CYCLES.items() if not any(c <= allowed for c in components)]
    assert not stale, f"these cycles are gone: remove them from KNOWN_CYCLES: {stale}"


def test_no_upward_imports():
    upward = []
    for module, imports in GRAPH.items():
        for target, function, line in imports:
            if target not in GRAPH or layer(target) <= layer(module):
                continue
            if module.startswith("shapetrace.tracer.records") and function in DISPLAY_METHODS \
                    and target.startswith("shapetrace.renderers"):
                continue  # a record's display method importing its renderer lazily
            upward.append(f"{module}:{line} imports {target}")
    assert not upward, "\n".join(upward)


def test_records_import_neither_torch_nor_renderers_at_import_time():
    for target, function, line in GRAPH["shapetrace.tracer.records"]:
        if function is None:
            assert not target.startswith(("torch", "shapetrace.renderers")), f"records.py:{line} imports {target}"


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m.startswith("shapetrace.renderers")))
def test_renderers_import_only_records_and_each_other_never_torch(module):
    for target, _, line in GRAPH[module]:
        assert target.split(".")[0] != "torch", f"{module}:{line} imports torch"
        if target in GRAPH:
            assert target.startswith(("shapetrace.renderers", *RECORDS)), f"{module}:{line} imports {target}"


@pytest.mark.parametrize("module", GALLERY_ARCHITECTURES)
def test_gallery_architectures_import_torch_and_each_other_only(module):
    if module not in GRAPH:
        pytest.skip(f"{module} does not exist")
    for target, _, line in GRAPH[module]:
        if target in GRAPH:
            assert target in GALLERY_ARCHITECTURES or target == "shapetrace.gallery", \
                f"{module}:{line} imports {target}"


def test_the_checker_sees_imports_inside_functions_and_skips_type_checking(tmp_path):
    source = ("from typing import TYPE_CHECKING\n"
              "if TYPE_CHECKING:\n    from .x import A\n"
              "def f():\n    from ..renderers import table\n")
    visitor = _Imports("shapetrace.tracer.demo", False)
    visitor.visit(ast.parse(source))
    targets = [(_owner(t) or t, fn) for t, fn, _ in visitor.found]
    assert ("shapetrace.renderers.table", "f") in targets
    assert not any(t.endswith(".x") for t, _ in targets)


# What the lazy imports kept in src promise (their reasons: "torch stays out ...", "matplotlib loads on first plot").
@pytest.mark.parametrize("module", ["shapetrace", "shapetrace.cli", "shapetrace.session", "shapetrace.sphinxext",
                                    "shapetrace.renderers", "shapetrace.renderers.display"])
def test_importing_a_front_end_or_the_renderers_loads_neither_torch_nor_matplotlib(module):
    code = f"import sys, {module}; print(sorted({{m.split('.')[0] for m in sys.modules}} & {{'torch', 'matplotlib'}}))"
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(SRC)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"import {module} loaded {done.stdout.strip()}"


def _private_writes(tree: ast.AST) -> list[str]:
    """``obj._name = ...`` (or ``+=``) where ``obj`` is not ``self``/``cls``: a write into another object's
    private state."""
    found = []
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else [])
        for target in targets:
            for sub in ast.walk(target):
                if (isinstance(sub, ast.Attribute) and sub.attr.startswith("_") and not sub.attr.startswith("__")
                        and not (isinstance(sub.value, ast.Name) and sub.value.id in ("self", "cls"))):
                    found.append(f"line {node.lineno}: {ast.unparse(sub)}")
    return found


def test_no_module_writes_another_objects_private_attributes():
    writes = {str(p.relative_to(SRC)): w for p in sorted(SRC.rglob("*.py"))
              if (w := _private_writes(ast.parse(p.read_text(encoding="utf-8"))))}
    assert writes == {}


def test_the_private_write_check_sees_one():
    assert _private_writes(ast.parse("engine._ids = {}\nself._own = 1\nflow.order += 1\nx.__dict__ = {}")) == [
        "line 1: engine._ids"]
