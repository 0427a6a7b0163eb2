"""Diff exhibits: two models of chapter 15 compared call by call (``shapetrace diff``), each with its text.

A ``DiffExhibit`` names two builders and the one input both run on. ``render_diff_exhibit`` traces both and
returns the diff as text, Markdown, HTML and (when Graphviz is installed) an SVG of B with the changed layers
filled; ``diff_exhibit_files()`` gives those files' texts for every diff exhibit, for the gallery site to write.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...renderers import diagram
from ...renderers.diff import diagram_options, diff_traces, render_trace_diff
from ...tracer.api import trace
from ..layers import AdaptiveConcatPool2d
from ..vision import create_head

__all__ = ["DIFF_EXHIBITS", "DiffExhibit", "DiffPage", "diff_exhibit_files", "render_diff_exhibit"]


@dataclass(frozen=True)
class DiffExhibit:
    """Two models (``a``, ``b`` build them), the input both run on, and what the comparison shows."""

    name: str
    title: str
    caption: str
    a: Callable[[], nn.Module]
    b: Callable[[], nn.Module]
    inputs: Callable[[], tuple[tuple, dict]]
    a_label: str
    b_label: str
    command: str  # the shapetrace diff command line that shows the same comparison


def _features() -> tuple[tuple, dict]:
    return (torch.rand(2, 512, 7, 7, generator=torch.Generator().manual_seed(0)),), {}


def custom_head(nf: int = 512, n_out: int = 37, hidden: int = 256) -> nn.Sequential:
    """A head of one's own (the chapter's further research): concat pooling like fastai's, then a narrower
    hidden layer with SiLU instead of ReLU. Same layout as ``create_head``, so the diff aligns layer by layer."""
    return nn.Sequential(
        AdaptiveConcatPool2d(), nn.Flatten(),
        nn.BatchNorm1d(2 * nf), nn.Dropout(0.25), nn.Linear(2 * nf, hidden, bias=False), nn.SiLU(),
        nn.BatchNorm1d(hidden), nn.Dropout(0.5), nn.Linear(hidden, n_out, bias=False))


DIFF_EXHIBITS: dict[str, DiffExhibit] = {ex.name: ex for ex in [
    DiffExhibit(
        name="diff-concat-vs-avg-head",
        title="create_head: concat pooling against average pooling",
        caption=(
            "The pet recognizer's head with AdaptiveConcatPool2d (A) against concat_pool=False (B), on the "
            "(2,512,7,7) features of resnet34's body. Only three layers change: the pooling itself (1024 channels "
            "from max and average pooling side by side, against 512 from the average alone), and the first "
            "BatchNorm1d and Linear, which create_head sizes for 1024 or 512 inputs. Flatten and the first "
            "Dropout only pass the narrower tensor along; everything after the first Linear is identical. "
            "546,304 against 283,136 parameters."),
        a=lambda: create_head(512, 37).eval(),
        b=lambda: create_head(512, 37, concat_pool=False).eval(),
        inputs=_features,
        a_label="create_head(512, 37)",
        b_label="create_head(512, 37, concat_pool=False)",
        command="shapetrace diff create-head-default create-head-avg-pool",
    ),
    DiffExhibit(
        name="diff-default-vs-custom-head",
        title="fastai's default head against a head of one's own",
        caption=(
            "The chapter's further research asks for a head of your own. This one keeps concat pooling and the "
            "BatchNorm1d-Dropout-Linear blocks but narrows the hidden layer from 512 to 256 and uses SiLU "
            "instead of ReLU. The diff names the hidden Linear (1024x512 against 1024x256 weights), the "
            "activation's class, the second BatchNorm1d and the output Linear (512x37 against 256x37): "
            "546,304 against 274,176 parameters, the same (2,37) output."),
        a=lambda: create_head(512, 37).eval(),
        b=lambda: custom_head().eval(),
        inputs=_features,
        a_label="create_head(512, 37)",
        b_label="custom_head(512, 37, hidden=256)",
        command="shapetrace diff create-head-default shapetrace.gallery.exhibits.diffs:custom_head --input 2,512,7,7",
    ),
]}


@dataclass
class DiffPage:
    """One diff exhibit, rendered."""

    exhibit: DiffExhibit
    text: str
    md: str
    html: str
    svg: str | None
    diff: Any  # the renderers.diff.TraceDiff


def render_diff_exhibit(ex: DiffExhibit) -> DiffPage:
    args, kwargs = ex.inputs()
    a = trace(ex.a(), *args, ops=True, forward_kwargs=kwargs)
    b = trace(ex.b(), *args, ops=True, forward_kwargs=kwargs)
    d = diff_traces(a, b, ex.a_label, ex.b_label)
    svg = None
    if diagram.dot_available():
        out = diagram.render(b, format="svg", overlays=["diff"], options=diagram_options(d))
        svg = out.decode("utf-8") if isinstance(out, bytes) else out
    text = render_trace_diff(d, "text")
    md = f"# {ex.title}\n\n{ex.caption}\n\n" + render_trace_diff(d, "md")
    return DiffPage(ex, text, md, render_trace_diff(d, "html"), svg, d)


def diff_exhibit_files(names: list[str] | None = None) -> dict[str, str]:
    """``<name>.txt``, ``<name>.md``, ``<name>.html`` (a fragment) and ``<name>.svg`` for each diff exhibit,
    by file name (the gallery site writes them)."""
    files: dict[str, str] = {}
    for name in names or list(DIFF_EXHIBITS):
        page = render_diff_exhibit(DIFF_EXHIBITS[name])
        files.update({f"{name}.txt": page.text, f"{name}.md": page.md, f"{name}.html": page.html})
        if page.svg is not None:
            files[f"{name}.svg"] = page.svg
    return files
