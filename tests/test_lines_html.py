"""The HTML of ``trace.lines()`` inside a host page that styles tables of its own (JupyterLab)."""

from __future__ import annotations

import re

import torch
from conftest import css_declarations, css_specificity
from torch import nn

from shapetrace.renderers.lines import build_view, render
from shapetrace.tracer.api import trace

# JupyterLab's stock rules for rendered HTML tables (@jupyterlab/rendermime style/base.css), with their
# specificity (ids, classes, elements): a rule of ours must outweigh each to win, whichever sheet comes last.
_JUPYTERLAB = {
    ("table", "margin-left"): (0, 1, 1),  # .jp-RenderedHTMLCommon table{margin-left:auto;margin-right:auto}
    ("td", "text-align"): (0, 2, 1),  # :not(.jp-RenderedMarkdown).jp-RenderedHTMLCommon td{text-align:right}
    ("td", "vertical-align"): (0, 1, 1),  # .jp-RenderedHTMLCommon td{vertical-align:middle; padding:.5em}
    ("td", "padding"): (0, 1, 1),
    ("tr", "background"): (0, 2, 2),  # .jp-RenderedHTMLCommon tbody tr:nth-child(odd){background:#fff}
}


class LongLine(nn.Module):
    """A forward with a source line of 119 columns, as a long call or a trailing comment makes."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x).relu()  # a trailing comment long enough to make this the widest line of the forward: 119 cols
        return self.head(h)


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x).relu()


def test_code_and_shapes_cells_stay_left_aligned_and_the_table_uncentred_under_jupyterlabs_rules():
    page = render(build_view(trace(Small(), torch.randn(3, 4), lines=True)), "html")
    css = re.search(r"<style>(.*?)</style>", page, re.DOTALL).group(1)
    rules = css_declarations(css)
    for (element, prop), theirs in _JUPYTERLAB.items():
        ours = [
            (sel, value)
            for sel, p, value in rules
            if (p == prop or p.startswith(prop) or prop.startswith(p))
            and re.search(rf"(^|\s){element}(:nth-child\(n\))?$|^{element}\.st-lines", sel)
            and css_specificity(sel) > theirs
        ]
        assert ours, f"no rule of ours outweighs JupyterLab's {element}{{{prop}}}"
    cells = {value for sel, p, value in rules if p == "text-align" and re.search(r"\std$", sel)}
    assert cells == {"left"}


def test_every_shape_stays_in_the_window_beside_or_under_a_long_source_line(browser, tmp_path):
    path = trace(LongLine(), torch.randn(3, 4), lines=True).lines().save(tmp_path / "lines.html")
    for width, height in ((1000, 600), (420, 900)):  # a laptop's notebook, a phone
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(path.as_uri())
        shapes = page.eval_on_selector_all(
            "td.shapes div", "els => els.map(e => [e.textContent, e.getBoundingClientRect().left, "
                             "e.getBoundingClientRect().right])")
        assert [text for text, *_ in shapes] == ["proj Linear → (3,8)", "relu → (3,8)", "head Linear → (3,2)"]
        off = [(text, left, right) for text, left, right in shapes if left < 0 or right > width]
        assert not off, f"at {width} px, shapes outside the window: {off}"
        assert page.evaluate("document.documentElement.scrollWidth") <= width  # nothing scrolls sideways
        page.close()


_FIRST_AND_NEXT_LINE = """td => {
    const walker = document.createTreeWalker(td, NodeFilter.SHOW_TEXT);
    const chars = [];
    for (let n = walker.nextNode(); n; n = walker.nextNode())
        for (let i = 0; i < n.length; i++) chars.push([n, i]);
    const rect = ([n, i]) => { const r = document.createRange(); r.setStart(n, i); r.setEnd(n, i + 1);
                               return r.getBoundingClientRect(); };
    const first = chars.find(([n, i]) => n.data[i] !== " ");
    const top = rect(first).top;
    const next = chars.find(c => rect(c).top > top + 2 && c[0].data[c[1]] !== " ");
    return [rect(first).left, next ? rect(next).left : null, rect(first).width];
}"""


def test_a_wrapped_statement_hangs_four_columns_in_from_its_own_indentation(browser, tmp_path):
    path = trace(LongLine(), torch.randn(3, 4), lines=True).lines().save(tmp_path / "lines.html")
    page = browser.new_page(viewport={"width": 420, "height": 900})  # narrow: the 119-column line wraps
    page.goto(path.as_uri())
    cell = next(td for td in page.query_selector_all("td.code") if "trailing comment" in td.text_content())
    first, following, char = cell.evaluate(_FIRST_AND_NEXT_LINE)
    page.close()
    assert following is not None, "the long line did not wrap"
    assert abs((following - first) - 4 * char) < 1.5  # 4 columns in from the statement, not from column 0
