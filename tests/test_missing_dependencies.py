"""Tests fail where they must: a missing Graphviz or dev dependency fails the run with the reason, and only an
explicit opt-out (``SHAPETRACE_ALLOW_NO_DOT=1``, ``SHAPETRACE_ALLOW_MISSING=name``) turns that into skips.

``scripts/ensure-graphviz.sh`` is run here on a PATH with neither ``dot`` nor ``apt-get``, as a machine that
cannot install Graphviz would be; the conftest's rules are called with ``dot`` hidden.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import conftest
import pytest
from conftest import require

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "ensure-graphviz.sh"


@pytest.fixture
def bare_path(tmp_path) -> str:
    """A PATH holding only what the script needs besides bash builtins: no dot, no apt-get, no sudo."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("id", "cat"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    return str(bin_dir)


def ensure_graphviz(bare_path: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("CI", "SHAPETRACE_ALLOW_NO_DOT")}
    return subprocess.run([shutil.which("bash"), str(SCRIPT), *args], env={**clean, "PATH": bare_path, **env},
                          capture_output=True, text=True, check=False, timeout=60)


def test_without_dot_a_plain_setup_warns_and_goes_on(bare_path):
    done = ensure_graphviz(bare_path)
    assert done.returncode == 0
    assert "WARNING" in done.stderr and "apt-get install graphviz" in done.stderr


def test_without_dot_make_test_fails_with_the_reason(bare_path):
    done = ensure_graphviz(bare_path, "--required")
    assert done.returncode == 1
    assert "ERROR" in done.stderr and "not installed" in done.stderr and "SHAPETRACE_ALLOW_NO_DOT=1" in done.stderr


def test_without_dot_ci_fails_even_without_the_flag(bare_path):
    assert ensure_graphviz(bare_path, CI="true").returncode == 1


def test_only_the_explicit_opt_out_lets_a_run_without_dot_go_on(bare_path):
    assert ensure_graphviz(bare_path, "--required", SHAPETRACE_ALLOW_NO_DOT="1").returncode == 0
    assert ensure_graphviz(bare_path, CI="true", SHAPETRACE_ALLOW_NO_DOT="1").returncode == 0


def test_make_test_requires_dot():
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "scripts/ensure-graphviz.sh --required" in recipe


def test_a_missing_dev_dependency_fails_the_test(monkeypatch):
    monkeypatch.delenv("SHAPETRACE_ALLOW_MISSING", raising=False)
    with pytest.raises(pytest.fail.Exception, match="pip install -c constraints.txt"):
        require("shapetrace_no_such_dependency")


def test_a_missing_dev_dependency_skips_only_when_named_in_the_opt_out(monkeypatch):
    monkeypatch.setenv("SHAPETRACE_ALLOW_MISSING", "torchview,shapetrace_no_such_dependency")
    with pytest.raises(pytest.skip.Exception):
        require("shapetrace_no_such_dependency")


def test_the_suite_s_dev_dependencies_are_pinned():
    pinned = {line.split("==")[0].strip().lower() for line in (ROOT / "constraints.txt").read_text().splitlines()
              if "==" in line and not line.startswith("#")}
    assert {"torch", "torchvision", "transformers", "torchinfo", "torchview", "torchlens", "pytest",
            "hypothesis", "ruff", "sphinx", "cairosvg"} <= pinned


class _DiagramTest:
    """Stands in for a collected test marked ``requires_dot``."""

    def get_closest_marker(self, name: str):
        return pytest.mark.requires_dot.mark if name == "requires_dot" else None


def test_diagram_tests_fail_without_dot(monkeypatch):
    monkeypatch.setattr(conftest.shutil, "which", lambda name: None)
    monkeypatch.delenv("SHAPETRACE_ALLOW_NO_DOT", raising=False)
    with pytest.raises(pytest.fail.Exception, match="Graphviz's dot is not installed"):
        conftest.pytest_runtest_setup(_DiagramTest())


def test_diagram_tests_skip_without_dot_only_when_opted_out(monkeypatch):
    monkeypatch.setattr(conftest.shutil, "which", lambda name: None)
    monkeypatch.setenv("SHAPETRACE_ALLOW_NO_DOT", "1")
    with pytest.raises(pytest.skip.Exception):
        conftest.pytest_runtest_setup(_DiagramTest())
