"""The files the ``.. shapetrace::`` directive puts in an HTML build: its stylesheet, in every HTML-family
output (EPUB's zip included), and its SVGs in ``_images/``, of which a rebuild keeps only those a page shows."""

from __future__ import annotations

import re
import zipfile

import pytest
from conftest import requires_dot
from test_sphinxext import LINEAR, build, edit, rebuild

from shapetrace.renderers.html import CSS as TABLE_CSS


def test_the_epub_packs_the_stylesheet_its_pages_link(tmp_path):
    code, _, out = build(tmp_path, LINEAR + "   :show: table\n", builder="epub", warnings_are_errors=False)
    assert code == 0
    (epub,) = out.glob("*.epub")
    with zipfile.ZipFile(epub) as z:
        packed = z.namelist()
        page = z.read("index.xhtml").decode("utf-8")
        manifest = z.read("content.opf").decode("utf-8")
    assert "_static/shapetrace.css" in page  # the page links it ...
    assert "_static/shapetrace.css" in packed and "_static/shapetrace.css" in manifest  # ... and the book has it


@pytest.mark.parametrize("builder", ["dirhtml", "singlehtml"])
def test_every_html_builder_writes_the_stylesheet_its_pages_link(tmp_path, builder):
    code, _, out = build(tmp_path, LINEAR + "   :show: table\n", builder=builder)
    assert code == 0
    page = next(p for p in out.rglob("index.html") if "_static" not in p.parts).read_text()
    assert "_static/shapetrace.css" in page and (out / "_static" / "shapetrace.css").is_file()


def _model(n_out: int) -> str:
    return f"from torch import nn\n\n\ndef build():\n    return nn.Linear(4, {n_out})\n"


def _svgs(out) -> set[str]:
    return {p.name for p in (out / "_images").glob("shapetrace-*.svg")}


@requires_dot
def test_a_rebuild_removes_the_svgs_no_page_shows_any_more_and_keeps_the_others(tmp_path):
    other = ":orphan:\n\nOther\n=====\n\n.. shapetrace:: b.py:build\n   :input: 2,4\n"
    code, html, out = build(tmp_path, ".. shapetrace:: a.py:build\n   :input: 2,4\n",
                            files={"a.py": _model(3), "b.py": _model(5), "other.rst": other})
    assert code == 0
    first = _svgs(out)
    (out / "_images" / "mine.svg").write_text("<svg/>")  # a file the directive did not write
    assert len(first) == 2
    edit(tmp_path / "src" / "a.py", _model(7))  # only index is read again; other.html is not rewritten
    code, html = rebuild(tmp_path)
    assert code == 0
    now = _svgs(out)
    shown = {n for n in now if n in html}
    other_svg = {n for n in first if n in (out / "other.html").read_text()}
    assert len(shown) == 1 and shown.isdisjoint(first)  # the new diagram of a.py
    assert len(other_svg) == 1 and now == shown | other_svg  # the old one removed; the page not read again keeps its own
    assert (out / "_images" / "mine.svg").exists()


@requires_dot
def test_epub_pages_hold_no_style_element_and_link_no_picture_file(tmp_path):
    # EPUBCheck's rules: <style> belongs in <head>, and a link must go to a page of the book (a spine item).
    code, _, out = build(tmp_path, LINEAR + "   :show: diagram table flow\n", builder="epub",
                         warnings_are_errors=False)
    assert code == 0
    page = (out / "index.xhtml").read_text()
    body = page[page.index("<body"):]
    assert '<table class="shapetrace">' in body and "<style" not in body
    assert "_images/shapetrace-diagram-" in body and not re.search(r'<a [^>]*href="[^"]*_images/', body), body


def test_the_tables_css_is_in_the_stylesheet_every_page_links(tmp_path):
    code, html, out = build(tmp_path, LINEAR + "   :show: table\n")
    assert code == 0
    assert "<style" not in html[html.index("<body"):]
    css = (out / "_static" / "shapetrace.css").read_text()
    assert TABLE_CSS in css  # the rules the fragment carried in its own <style> before


def test_a_short_caption_is_centred_and_a_long_one_is_flush_left_in_chromium(tmp_path, browser):
    long = "A caption long enough to wrap onto several lines of the page's column. " * 6
    code, _, out = build(tmp_path, LINEAR + "   :show: table\n   :caption: Short.\n\n"
                         + LINEAR + f"   :show: table\n   :caption: {long}\n")
    assert code == 0
    page = browser.new_page(viewport={"width": 900, "height": 800})
    page.goto((out / "index.html").as_uri())
    boxes = page.eval_on_selector_all("figure.shapetrace-figure", """figs => figs.map(f => {
        const c = f.querySelector('figcaption').getBoundingClientRect(), b = f.getBoundingClientRect();
        const r = document.createRange(); r.selectNodeContents(f.querySelector('figcaption .caption-text'));
        const lines = Array.from(r.getClientRects());
        return {left: c.left - b.left, right: b.right - c.right, lines: new Set(lines.map(l => l.top)).size,
                lefts: new Set(lines.map(l => Math.round(l.left))).size};
    })""")
    page.close()
    short, wrapped = boxes
    assert short["lines"] == 1 and abs(short["left"] - short["right"]) < 2 and short["left"] > 50, short
    assert wrapped["lines"] > 1 and wrapped["lefts"] == 1, wrapped  # every line starts where the others do
