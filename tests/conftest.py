"""Shared test set-up: every trace any test makes must survive a JSON round trip exactly; and the tests that
need Graphviz's ``dot`` or a dev dependency fail (not skip) when it is missing, unless explicitly opted out.

Opt-outs, for a machine that cannot have them: ``SHAPETRACE_ALLOW_NO_DOT=1`` skips the diagram tests when
``dot`` is missing; ``SHAPETRACE_ALLOW_MISSING=transformers,torchview`` (or ``all``) skips the tests needing
those packages. Without them a missing dependency is a failure that says what to install.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import shutil
import time
from pathlib import Path
from types import ModuleType

import pytest
import torch

from shapetrace.tracer import capture
from shapetrace.tracer.records import Trace

_finish = capture.Tracer._finish


def graph_paths(graph) -> set[tuple[str, str]]:
    """(source, destination) titles of the module calls, inputs and outputs of a diagram's graph
    (``renderers.graph.Graph``) joined by a path of edges: what a reader of the picture can follow."""
    titles = {n.id: n.title for n in graph.nodes} | {c.id: c.title for c in graph.clusters}
    succ: dict[str, set[str]] = {}
    for e in graph.edges:
        succ.setdefault(e.src, set()).add(e.dst)
    ends = {n.id for n in graph.nodes if n.kind != "op"} | {c.id for c in graph.clusters}
    pairs = set()
    for start in ends:
        seen, todo = set(), [start]
        while todo:
            for nxt in succ.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        pairs |= {(titles[start], titles[d]) for d in seen if d in ends}
    return pairs


def check_round_trip(trace: Trace) -> None:
    """The trace survives a JSON round trip exactly. ``every_trace_round_trips`` checks every trace a test makes;
    a session- or module-scoped fixture, set up before that function-scoped one, calls this itself."""
    text = trace.to_json()
    again = Trace.from_json(text)
    assert again == trace, "JSON round trip changed the trace"
    assert again.to_json() == text


def _finish_and_check_round_trip(self, exc):
    trace = _finish(self, exc)
    check_round_trip(trace)
    return trace


@pytest.fixture(autouse=True)
def every_trace_round_trips(monkeypatch):
    monkeypatch.setattr(capture.Tracer, "_finish", _finish_and_check_round_trip)
    yield


# ---- expensive read-only models and traces, made once per session ------------------------------------------
# Several test files read the same gallery exhibits (U-Nets on a resnet34 body at 360x480, the pet recognizer,
# the AWD-LSTM classifier), whose builds and CPU forwards take seconds each. These fixtures build each model
# and trace each one once per session. The tests that use them only read them or run them as built: a test that
# changes a model (train(), parameters, buffers, hooks) builds its own. Every hand-out, and the end of the
# session, checks that no test changed what it was given (see ``model_fingerprint``; traces by their JSON).
# Exhibits whose forward depends on the forwards before it are never shared: the AWD-LSTMs (the language model
# keeps its hidden state; the classifier resets it, but its first forward grows the hidden state from the
# built batch size of 1, so a fresh model's first trace records other ops than a later one). A test builds its
# own; their shared traces are each of a fresh build.
STATEFUL_EXHIBITS = {"awd-lstm-language-model", "awd-lstm-classifier"}


def model_fingerprint(model) -> tuple:
    """What a read-only use must leave as it was: per module its training flag and hook counts; per parameter
    its name, identity, version counter (bumped by any in-place write), ``requires_grad``, shape, dtype and
    device; per buffer its name, identity and bytes (BatchNorm's kernel updates running statistics without
    bumping their version counters, and a trace's guard writes the saved buffers back, bumping them)."""
    import hashlib

    modules = tuple((name, m.training, len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
                    for name, m in model.named_modules(remove_duplicate=False))
    params = tuple((name, id(p), p._version, p.requires_grad, tuple(p.shape), p.dtype, p.device)
                   for name, p in model.named_parameters(remove_duplicate=False))
    buffers = tuple((name, id(b), b.dtype, b.device, tuple(b.shape),
                     hashlib.sha256(b.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()).hexdigest())
                    for name, b in model.named_buffers(remove_duplicate=False))
    return modules, params, buffers


class SharedExhibits:
    """Each exhibit's model as ``Exhibit.build()`` makes it on the CPU, and its trace with the default options
    on the exhibit's inputs (``shapetrace.trace(model, *args, **kwargs)``), each made once per session."""

    def __init__(self) -> None:
        from shapetrace.gallery.exhibits import EXHIBITS

        self._models: dict[str, tuple[object, tuple]] = {}
        self._traces: dict[str, tuple[Trace, str]] = {}
        self._builders = {name: exhibit.build for name, exhibit in EXHIBITS.items()}  # as registered

    def model(self, name: str):
        """The exhibit's model, built once; fails when an earlier test changed it."""
        if name in STATEFUL_EXHIBITS:
            raise ValueError(f"{name}'s forward depends on the forwards before it: build it in the test")
        if name not in self._models:
            built = self._builders[name]()
            self._models[name] = (built, model_fingerprint(built))
        built, fingerprint = self._models[name]
        assert model_fingerprint(built) == fingerprint, f"a test changed the shared {name} model"
        return built

    def trace(self, name: str) -> Trace:
        """The trace of the exhibit's shared model on its inputs (default options), made once."""
        if name not in self._traces:
            import shapetrace
            from shapetrace.gallery.exhibits import get_exhibit

            exhibit = get_exhibit(name)
            args, kwargs = exhibit.inputs()
            model = self._builders[name]() if name in STATEFUL_EXHIBITS else self.model(name)
            made = shapetrace.trace(model, *args, **kwargs)
            check_round_trip(made)
            self._traces[name] = (made, made.to_json())
        made, text = self._traces[name]
        assert made.to_json() == text, f"a test changed the shared {name} trace"
        return made

    def check_unchanged(self) -> None:
        for name in self._models:
            self.model(name)
        for name in self._traces:
            self.trace(name)


@pytest.fixture(scope="session")
def shared_exhibits():
    """Exhibit models and traces shared by the whole session (read-only: see ``SharedExhibits``)."""
    shared = SharedExhibits()
    yield shared
    shared.check_unchanged()


@contextlib.contextmanager
def exhibits_built_once(shared: SharedExhibits):
    """While open, ``Exhibit.build()`` of every exhibit but the stateful ones returns the session's shared build
    (built on first use). For the tests of a front end that reaches exhibits by name (the CLI, the docs build):
    they test that front end on each exhibit's model, while the builds themselves have their own tests (the
    gallery_* files). The shared models are checked unchanged afterwards, so a front end that changed the model
    it traced fails the next test to use it."""
    import dataclasses
    import functools

    from shapetrace.gallery.exhibits import registry

    with pytest.MonkeyPatch.context() as mp:
        for name, exhibit in list(registry.EXHIBITS.items()):
            if name not in STATEFUL_EXHIBITS:
                mp.setitem(registry.EXHIBITS, name,
                           dataclasses.replace(exhibit, build=functools.partial(shared.model, name)))
        yield


# ---- dependencies that must not skip quietly ---------------------------------------------------------------
NO_DOT = ("Graphviz's dot is not installed: run scripts/ensure-graphviz.sh (make setup does), or set "
          "SHAPETRACE_ALLOW_NO_DOT=1 to skip the tests that render diagrams")


class BuildsItsHead(torch.nn.Module):
    """Builds its head on the first call (Keras-style lazy layers): a new object in every trace or profile
    pass, since each pass's guard removes it again. ``body``: features → hidden; ``head``: ReLU, hidden → 2."""

    def __init__(self, features: int = 3, hidden: int = 4) -> None:
        super().__init__()
        self.body = torch.nn.Linear(features, hidden)
        self.hidden = hidden

    def forward(self, x):
        if not hasattr(self, "head"):
            self.head = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Linear(self.hidden, 2))
        return self.head(self.body(x))


def allowed_missing(name: str) -> bool:
    """Whether the environment explicitly opts out of ``name`` (``SHAPETRACE_ALLOW_MISSING``)."""
    allowed = {n.strip() for n in os.environ.get("SHAPETRACE_ALLOW_MISSING", "").split(",") if n.strip()}
    return name in allowed or "all" in allowed


def require(name: str) -> ModuleType:
    """Import the dev dependency ``name`` for a test: a missing one fails the test (or, at module level, the
    collection) saying what to install, and skips only when ``SHAPETRACE_ALLOW_MISSING`` names it."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        reason = (f"{name} is not installed ({e}): pip install -c constraints.txt -e '.[dev]', or set "
                  f"SHAPETRACE_ALLOW_MISSING={name.split('.')[0]} to skip the tests that need it")
        if allowed_missing(name.split(".")[0]):
            pytest.skip(reason, allow_module_level=True)
        pytest.fail(reason, pytrace=False)
        raise  # unreachable: pytest.fail raises


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "requires_dot: the test renders with Graphviz's dot (fails without it "
                                       "unless SHAPETRACE_ALLOW_NO_DOT=1)")
    config.addinivalue_line("markers", "slow: a long check (a sweep over every line, a subprocess per variant, a "
                                       "whole script run): `make test` leaves it out, `make test-all` runs it")
    config.addinivalue_line("markers", "patches_torch_for_good: the test runs a tool that replaces torch's "
                                       "functions for the rest of the process (torchlens), so it runs after "
                                       "every other test")


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Move the tests marked ``patches_torch_for_good`` to the end of the run. torchlens, once it has traced,
    leaves its Python wrappers in place of about 1,900 torch functions and Tensor methods: every test after it
    would run torch through those wrappers (slower, and not the plain torch the tests mean to use)."""
    last = [item for item in items if item.get_closest_marker("patches_torch_for_good") is not None]
    if last:
        items[:] = [item for item in items if item.get_closest_marker("patches_torch_for_good") is None] + last


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("requires_dot") is not None and shutil.which("dot") is None:
        if os.environ.get("SHAPETRACE_ALLOW_NO_DOT") == "1":
            pytest.skip(NO_DOT)
        pytest.fail(NO_DOT, pytrace=False)


requires_dot = pytest.mark.requires_dot


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite the expected outputs under tests/golden/ instead of comparing with them")


def chromium_path() -> str | None:
    """The Chromium the browser tests drive (``SHAPETRACE_CHROMIUM`` first), or ``None``."""
    for name in (os.environ.get("SHAPETRACE_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium through playwright, for the docs' and the gallery's browser tests. A missing
    Chromium fails them unless ``SHAPETRACE_ALLOW_MISSING=chromium`` (or ``SHAPETRACE_SKIP_BROWSER=1``)."""
    if os.environ.get("SHAPETRACE_SKIP_BROWSER") == "1":
        pytest.skip("SHAPETRACE_SKIP_BROWSER=1: the browser checks were skipped on purpose")
    exe = chromium_path()
    if exe is None:
        reason = ("Chromium is not installed: run scripts/ensure-chromium.sh (make test does), or set "
                  "SHAPETRACE_ALLOW_MISSING=chromium to skip the browser checks on purpose")
        if allowed_missing("chromium"):
            pytest.skip(reason)
        pytest.fail(reason, pytrace=False)
    sync_api = require("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def css_specificity(selector: str) -> tuple[int, int, int]:
    """(ids, classes, elements) of one selector, as CSS Selectors Level 3 counts them: ``:not(x)`` counts
    as ``x``; pseudo-classes and attribute tests as classes; the universal selector as nothing."""
    ids = classes = elements = 0
    for inner in re.findall(r":not\(([^)]*)\)", selector):
        i, c, e = css_specificity(inner)
        ids, classes, elements = ids + i, classes + c, elements + e
    rest = re.sub(r":not\([^)]*\)", " ", selector)
    ids += len(re.findall(r"#[\w-]+", rest))
    classes += len(re.findall(r"\.[\w-]+|\[[^\]]*\]|:[\w-]+(?:\([^)]*\))?", rest))
    elements += len(re.findall(r"(?:^|[\s>+~])([a-zA-Z][\w-]*)", re.sub(r"\([^)]*\)", "", rest)))
    return ids, classes, elements


def css_declarations(css: str) -> list[tuple[str, str, str]]:
    """(selector, property, value) for each declaration of a sheet, comments and ``@media`` blocks left out (the
    rules that apply at every width)."""
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.DOTALL)
    css = re.sub(r"@media[^{]*\{(?:[^{}]*\{[^}]*\})*[^{}]*\}", "", css)
    out = []
    for selectors, body in re.findall(r"([^{}]+)\{([^}]*)\}", css):
        for decl in body.split(";"):
            if ":" in decl:
                prop, value = (p.strip() for p in decl.split(":", 1))
                out += [(" ".join(sel.split()), prop, " ".join(value.split())) for sel in selectors.split(",")]
    return out


def process_running(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie, dead but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class Sleeper(torch.nn.Module):
    """Sleeps ``seconds`` in its own forward, then runs a small Linear (a child module, so it is a box): a layer
    whose own time is known, for the profile's tests."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return self.lin(x)


@contextlib.contextmanager
def benchmark_script(name: str):
    """``benchmarks/<name>.py`` imported as a module (its folder on ``sys.path`` meanwhile, for its sibling
    imports), for tests that check what a benchmark measures."""
    import importlib.util
    import sys

    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(folder))
