"""Shared test set-up: every trace any test makes must survive a JSON round trip exactly; and the tests that
need Graphviz's ``dot`` or a dev dependency fail (not skip) when it is missing, unless explicitly opted out.

Opt-outs, for a machine that cannot have them: ``SHAPETRACE_ALLOW_NO_DOT=1`` skips the diagram tests when
``dot`` is missing; ``SHAPETRACE_ALLOW_MISSING=transformers,torchview`` (or ``all``) skips the tests needing
those packages. Without them a missing dependency is a failure that says what to install.
"""

from __future__ import annotations

import importlib
import os
import shutil
from types import ModuleType

import pytest

from shapetrace.tracer import capture
from shapetrace.tracer.records import Trace

_finish = capture.Tracer._finish


def _finish_and_check_round_trip(self, exc):
    trace = _finish(self, exc)
    text = trace.to_json()
    again = Trace.from_json(text)
    assert again == trace, "JSON round trip changed the trace"
    assert again.to_json() == text
    return trace


@pytest.fixture(autouse=True)
def every_trace_round_trips(monkeypatch):
    monkeypatch.setattr(capture.Tracer, "_finish", _finish_and_check_round_trip)
    yield


# ---- dependencies that must not skip quietly ---------------------------------------------------------------
NO_DOT = ("Graphviz's dot is not installed: run scripts/ensure-graphviz.sh (make setup does), or set "
          "SHAPETRACE_ALLOW_NO_DOT=1 to skip the tests that render diagrams")


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
