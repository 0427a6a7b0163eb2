"""``shapetrace diff A B`` drawn as B's diagram when one side's forward failed: the calls it never reached.

The text lists such a call as *not reached in A* / *in B* (the module is on both sides; the failure stopped
the forward before it). The diagram says the same, with the same count: a call of B that A never reached is
filled a muted grey and marked, and a call of A that B never reached (so not drawn) is listed in the legend.
"""

from __future__ import annotations

import html
import re

import pytest
import torch
from conftest import requires_dot
from test_diff_statuses import SmallCNN  # fails in fc1 on 32×32 images

from shapetrace.renderers.diagram import DIFF_FILL, render
from shapetrace.renderers.diff import diagram_options, diff_traces, render_trace_diff
from shapetrace.tracer.api import trace


@pytest.fixture(scope="module")
def broken_and_fixed():
    x = torch.randn(2, 3, 32, 32)
    broken, fixed = trace(SmallCNN().eval(), x, strict=False), trace(SmallCNN(32 * 8 * 8).eval(), x)
    assert broken.failed and not fixed.failed
    return broken, fixed


def _diagram(d) -> str:
    return render(d.b, format="svg", overlays=["diff"], options=diagram_options(d)).decode()


def _words(svg: str) -> str:
    """Every text Graphviz drew, as one line of words (a wrapped legend row reads whole)."""
    texts = (html.unescape(t).replace("\xa0", " ") for t in re.findall(r"<text[^>]*>([^<]*)</text>", svg))
    return " ".join(" ".join(texts).split())


def _fill(svg: str, name: str) -> str:
    node = re.search(rf'<g id="node\d+" class="node">\n<title>{re.escape(name)} \([^)]*\)[\s\S]*?<path fill="([^"]+)"',
                     svg)
    assert node is not None, name
    return node.group(1)


@requires_dot
def test_a_call_of_b_that_as_failed_forward_never_reached_is_drawn_muted_with_a_legend_row(broken_and_fixed):
    broken, fixed = broken_and_fixed
    d = diff_traces(broken, fixed)
    assert "1 call not reached in A, whose forward failed before calling it" in render_trace_diff(d, "text")
    svg = _diagram(d)
    assert _fill(svg, "fc2") == DIFF_FILL.get("unreached")  # its own muted fill, the legend row's
    assert _fill(svg, "fc1") == DIFF_FILL["changed"]
    words = _words(svg)
    assert "not reached in A, whose forward failed first (1)" in words  # the text's count
    assert "fc2 Linear 2×10 not reached in A" in words  # the node says so too, not only its colour


@requires_dot
def test_a_call_of_a_that_bs_failed_forward_never_reached_is_listed_in_the_legend(broken_and_fixed):
    broken, fixed = broken_and_fixed
    d = diff_traces(fixed, broken)
    assert "1 call not reached in B, whose forward failed before calling it" in render_trace_diff(d, "text")
    words = _words(_diagram(d))
    assert "not reached in B, whose forward failed first (1): fc2 Linear" in words
    assert "only in A" not in words  # not removed: B has the module, its forward stopped before it
