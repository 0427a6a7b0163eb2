"""Each comparison page of the gallery names the ``shapetrace diff`` command that shows the same comparison, and
that command, run as written, gives the page's own diff."""

from __future__ import annotations

import shlex

import pytest
from click.testing import CliRunner

from shapetrace.cli import main
from shapetrace.gallery.exhibits.diffs import DIFF_EXHIBITS, render_diff_exhibit


@pytest.mark.parametrize("name", sorted(DIFF_EXHIBITS))
def test_the_comparisons_command_gives_the_pages_diff(name: str) -> None:
    ex = DIFF_EXHIBITS[name]
    args = shlex.split(ex.command)
    assert args[:2] == ["shapetrace", "diff"]
    r = CliRunner().invoke(main, [*args[1:], "--width", "100"])
    assert r.exit_code == 0, r.output
    page = render_diff_exhibit(ex).text
    # the same rows and counts; the header lines name the two sides as given (a spec, or the page's label)
    body = [line for line in r.output.splitlines() if not line.startswith(("A", "B"))]
    assert body == [line for line in page.splitlines() if not line.startswith(("A", "B"))]
