"""The shape table's HTML inside a host page with table, code and list rules of its own (JupyterLab), and alone.

The fragment carries its own ``<style>``; a notebook host's sheet styles the same elements. Which declaration
wins is the cascade's business: here the cascade is computed from the selectors themselves (matched against the
rendered fragment by soupsieve, a real CSS selector engine, and weighed by specificity), for JupyterLab's own
rules quoted below, so no browser, network or JupyterLab install is needed. A rule of ours must outweigh the
host's on every element and property both set, whichever style sheet comes last.
"""

from __future__ import annotations

import re

import pytest
import torch
from conftest import css_declarations, css_specificity
from torch import nn

import shapetrace
from shapetrace.renderers.html import render_html

bs4 = pytest.importorskip("bs4")  # with soupsieve: BeautifulSoup's CSS selectors (the dev extra installs them)

# JupyterLab 4's rules for rendered HTML output (@jupyterlab/rendermime style/base.css and @jupyterlab/outputarea
# style/base.css, as shipped in nbconvert's "lab" template): the rules that reach a table, its rows and cells,
# inline code, description lists and bullet lists. Quoted as facts about the host, values as JupyterLab writes them.
JUPYTERLAB_CSS = """
.jp-RenderedHTMLCommon pre, .jp-RenderedHTMLCommon code { border: 0; background-color: var(--jp-layout-color0);
  color: var(--jp-content-font-color1); font-family: var(--jp-code-font-family); font-size: inherit;
  line-height: var(--jp-code-line-height); padding: 0; white-space: pre-wrap; }
.jp-RenderedHTMLCommon :not(pre) > code { background-color: var(--jp-layout-color2); padding: 1px 5px; }
.jp-RenderedHTMLCommon table { border-collapse: collapse; border-spacing: 0; border: none;
  color: var(--jp-ui-font-color1); font-size: var(--jp-ui-font-size1); table-layout: fixed; margin-left: auto;
  margin-bottom: 1em; margin-right: auto; }
.jp-RenderedHTMLCommon thead { border-bottom: var(--jp-border-width) solid var(--jp-border-color1);
  vertical-align: bottom; }
.jp-RenderedHTMLCommon td, .jp-RenderedHTMLCommon th, .jp-RenderedHTMLCommon tr { vertical-align: middle;
  padding: 0.5em; line-height: normal; white-space: normal; max-width: none; border: none; }
:not(.jp-RenderedMarkdown).jp-RenderedHTMLCommon td, :not(.jp-RenderedMarkdown).jp-RenderedHTMLCommon th,
:not(.jp-RenderedMarkdown).jp-RenderedHTMLCommon tr { text-align: right; }
.jp-RenderedHTMLCommon th { font-weight: bold; }
.jp-RenderedHTMLCommon tbody tr:nth-child(odd) { background: var(--jp-layout-color0); }
.jp-RenderedHTMLCommon tbody tr:nth-child(even) { background: var(--jp-rendermime-table-row-background); }
.jp-RenderedHTMLCommon ul:not(.list-inline), .jp-RenderedHTMLCommon ol:not(.list-inline) { padding-left: 2em; }
.jp-RenderedHTMLCommon ul { list-style: disc; }
.jp-RenderedHTMLCommon ol, .jp-RenderedHTMLCommon ul { margin-bottom: 1em; }
.jp-OutputArea-output.jp-RenderedHTMLCommon table { margin-left: 0; margin-right: 0; }
.jp-OutputArea-output dl, .jp-OutputArea-output dt, .jp-OutputArea-output dd { display: block; }
.jp-OutputArea-output dl { width: 100%; overflow: hidden; padding: 0; margin: 0; }
.jp-OutputArea-output dt { font-weight: bold; float: left; width: 20%; padding: 0; margin: 0; }
.jp-OutputArea-output dd { float: left; width: 80%; padding: 0; margin: 0; }
"""

# The element JupyterLab puts an output's HTML in.
HOST = '<div class="jp-OutputArea-output jp-RenderedHTMLCommon jp-RenderedHTML" data-mime-type="text/html">{}</div>'

# A longhand property, and the shorthands that set it too.
SHORTHANDS = {"background-color": "background", "border-bottom": "border", "padding-left": "padding",
              "margin-left": "margin", "margin-right": "margin", "margin-bottom": "margin",
              "list-style-type": "list-style"}


def sets(prop: str, declared: str) -> bool:
    """Whether a declaration of ``declared`` sets ``prop`` (itself, or a shorthand of it)."""
    return declared == prop or SHORTHANDS.get(prop) == declared or SHORTHANDS.get(declared) == prop


def cascade(soup, rules: list[tuple[str, str, str]]) -> dict[int, dict[str, tuple[tuple[int, int, int], str]]]:
    """For each element (by ``id()``), each property any of ``rules`` sets on it: the weight of the strongest
    such rule and its value (the later of two equal ones)."""
    out: dict[int, dict[str, tuple[tuple[int, int, int], str]]] = {}
    for selector, prop, value in rules:
        if ":hover" in selector:
            continue  # only under the pointer
        for el in soup.select(selector):
            best = out.setdefault(id(el), {})
            weight = css_specificity(selector)
            if prop not in best or weight >= best[prop][0]:
                best[prop] = (weight, value)
    return out


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(5, 2)  # takes 5 features: the forward fails here

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x))


def failed_fragment() -> str:
    """The fragment of a failed trace: a failed row, a raised one, plain rows, totals and a note."""
    return render_html(shapetrace.trace(Small(), torch.randn(2, 4), strict=False))


def ours(fragment: str) -> list[tuple[str, str, str]]:
    return css_declarations(re.search(r"<style>(.*?)</style>", fragment, re.DOTALL).group(1))


def test_every_rule_of_jupyterlab_that_reaches_the_table_is_outweighed_by_one_of_ours():
    fragment = failed_fragment()
    soup = bs4.BeautifulSoup(HOST.format(fragment), "html.parser")
    theirs = cascade(soup, css_declarations(JUPYTERLAB_CSS))
    mine = cascade(soup, ours(fragment))
    table = soup.select_one("div.shapetrace-html")
    losing = []
    for el in [table, *table.find_all(True)]:
        for prop, (weight, _) in theirs.get(id(el), {}).items():
            my = [w for p, (w, _) in mine.get(id(el), {}).items() if sets(prop, p)]
            if not my or max(my) <= weight:
                losing.append(f"<{el.name} class={el.get('class')}> {prop}: JupyterLab's {weight} vs ours {my}")
    assert theirs, "the host's rules matched nothing: the test would prove nothing"
    assert not losing, "\n".join(sorted(set(losing)))


def test_what_our_rules_give_failed_rows_totals_names_and_numbers():
    fragment = failed_fragment()
    soup = bs4.BeautifulSoup(HOST.format(fragment), "html.parser")
    mine = cascade(soup, ours(fragment))

    def value(selector: str, prop: str) -> str:
        return mine[id(soup.select_one(f"div.shapetrace-html {selector}"))][prop][1]

    assert "220, 38, 38" in value("tr.failed", "background")  # the red tint, not the host's stripes
    assert "220, 38, 38" in value("tr.raised", "background")
    assert value("dl.totals dt", "float") == value("dl.totals dd", "float") == "none"
    assert value("dl.totals dt", "width") == value("dl.totals dd", "width") == "auto"
    assert value("td.layer code", "background") == "none"  # no grey inline-code box around a name
    assert value("td.layer code", "padding") == "0"
    assert value("td.layer", "white-space") == "nowrap"
    assert value("td.layer code", "white-space") == "inherit"


def test_number_cells_and_headers_are_right_aligned_and_the_others_left_aligned():
    """On a page of its own (``save("t.html")``, ``--format html``) as in a notebook: only our sheet counts."""
    fragment = failed_fragment()
    soup = bs4.BeautifulSoup(fragment, "html.parser")
    mine = cascade(soup, ours(fragment))
    cells = soup.select("th, td")
    aligned = {(el.name, "num" in (el.get("class") or [])): set() for el in cells}
    for el in cells:
        aligned[el.name, "num" in (el.get("class") or [])].add(mine[id(el)]["text-align"][1])
    assert aligned == {("th", True): {"right"}, ("td", True): {"right"}, ("th", False): {"left"},
                       ("td", False): {"left"}}


def test_the_gallery_sites_table_size_outweighs_the_fragments_own():
    from shapetrace.gallery.site import _CSS

    fragment = failed_fragment()
    soup = bs4.BeautifulSoup(f'<div class="table-wrap">{fragment}</div>', "html.parser")
    mine = cascade(soup, css_declarations(_CSS) + ours(fragment))  # the page's sheet, then the fragment's
    assert mine[id(soup.select_one("table.shapetrace"))]["font-size"][1] == "0.85em"
