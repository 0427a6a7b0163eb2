"""The gallery site read in headless Chromium at a 1280-pixel-wide window, every page of it.

On each exhibit page the diagram loads (an inline SVG with a non-empty drawing), fits its column, the page
never scrolls sideways, node labels render at 9 CSS pixels or more (or the page links the full-size SVG and
at least the node names do), and no id appears twice; every picture and thumbnail loads.

Chromium comes from the system (``scripts/ensure-chromium.sh``, run by ``make test``'s set-up; or
``SHAPETRACE_CHROMIUM`` naming a binary) and is driven by ``playwright`` with ``executable_path``. A missing
browser fails these tests; ``SHAPETRACE_ALLOW_MISSING=chromium`` (as for the docs' browser test) or
``SHAPETRACE_SKIP_BROWSER=1`` skips them on purpose. ``SHAPETRACE_SCREENSHOTS=DIR``
saves screenshots of the index, the U-Net page and the upsampling page there (``docs/images`` holds them).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import requires_dot

from shapetrace.gallery.exhibits import exhibit_names
from shapetrace.gallery.site import build_site

WINDOW = {"width": 1280, "height": 900}
LEGIBLE_PX = 9.0
SCREENSHOTS = {"index": "gallery-index.png", "camvid-unet": "gallery-unet.png",
               "nearest-upsample-photo": "gallery-upsampling.png"}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gallery")
    build_site(out)
    return out


MEASURE = """() => {
  const column = document.querySelector('main');
  const svg = document.querySelector('figure.diagram svg');
  const ids = Array.from(document.querySelectorAll('[id]')).map(e => e.id);
  const images = Array.from(document.images).map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0,
                                                        right: i.getBoundingClientRect().right}));
  const out = {scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
               columnRight: column ? column.getBoundingClientRect().right - parseFloat(getComputedStyle(column).paddingRight)
                                   : window.innerWidth,
               ids, images, fullSize: !!document.querySelector('a.full-size')};
  if (svg) {
    const box = svg.getBoundingClientRect();
    const vb = svg.viewBox.baseVal;
    const scale = box.width / vb.width;
    const sizes = (sel) => Array.from(svg.querySelectorAll(sel)).map(t => parseFloat(t.getAttribute('font-size')) * scale);
    out.svg = {width: box.width, right: box.right, height: box.height, drawn: svg.querySelectorAll('g.node').length,
               names: sizes('g.node text[font-weight="bold"]'), all: sizes('g.node text')};
  }
  return out;
}"""


def _check_page(page, url: str) -> dict:
    page.goto(url)
    page.wait_for_load_state("load")
    return page.evaluate(MEASURE)


@requires_dot
def test_every_gallery_page_loads_its_diagram_legibly_in_its_column(browser, site):
    page = browser.new_page(viewport=WINDOW)
    problems: list[str] = []
    for name in exhibit_names():
        m = _check_page(page, (site / f"{name}.html").as_uri())
        where = f"{name}.html"
        if m["scrollWidth"] > m["innerWidth"]:
            problems.append(f"{where}: scrolls sideways ({m['scrollWidth']} > {m['innerWidth']} px)")
        dup = sorted({i for i in m["ids"] if m["ids"].count(i) > 1})
        if dup:
            problems.append(f"{where}: duplicate ids {dup[:5]}")
        broken = [i["src"] for i in m["images"] if not i["ok"]]
        if broken:
            problems.append(f"{where}: images that did not load: {broken}")
        svg = m.get("svg")
        if svg is None or svg["drawn"] == 0 or svg["height"] < 20:
            problems.append(f"{where}: no diagram drawn")
            continue
        if svg["right"] > m["columnRight"] + 1:
            problems.append(f"{where}: the diagram is wider than its column ({svg['right']} > {m['columnRight']})")
        if min(svg["names"]) < LEGIBLE_PX:
            problems.append(f"{where}: node names render at {min(svg['names']):.1f} px")
        if min(svg["all"]) < LEGIBLE_PX and not m["fullSize"]:
            problems.append(f"{where}: labels at {min(svg['all']):.1f} px and no link to the full-size diagram")
    page.close()
    assert problems == []


def _load_lazy_images(page) -> None:
    """Scroll through the page, so the images that load lazily (the index's thumbnails) load, then back up."""
    page.evaluate("async () => { for (let y = 0; y < document.body.scrollHeight; y += 400) {"
                  " window.scrollTo(0, y); await new Promise(r => setTimeout(r, 20)); } window.scrollTo(0, 0); }")
    page.wait_for_function("() => Array.from(document.images).every(i => i.complete)")


@requires_dot
def test_the_index_loads_every_thumbnail_and_links_every_page(browser, site):
    from shapetrace.gallery.exhibits.diffs import DIFF_EXHIBITS

    page = browser.new_page(viewport=WINDOW)
    page.goto((site / "index.html").as_uri())
    _load_lazy_images(page)
    m = page.evaluate(MEASURE)
    assert m["scrollWidth"] <= m["innerWidth"]
    assert len(m["images"]) == len(exhibit_names()) + len(DIFF_EXHIBITS) and all(i["ok"] for i in m["images"])
    lazy = page.eval_on_selector_all("ol.cards img", "is => is.every(i => i.loading === 'lazy' && i.width > 0)")
    assert lazy, "every thumbnail loads lazily, its size set"
    links = page.eval_on_selector_all("ol.cards:not(.comparisons) a", "as => as.map(a => a.getAttribute('href'))")
    assert links == [f"{n}.html" for n in exhibit_names()]
    assert len(m["ids"]) == len(set(m["ids"]))
    folder = os.environ.get("SHAPETRACE_SCREENSHOTS")
    if folder:
        for name, file in SCREENSHOTS.items():
            page.goto((site / f"{name}.html").as_uri())
            page.wait_for_load_state("load")
            _load_lazy_images(page)
            page.screenshot(path=str(Path(folder) / file), full_page=name != "nearest-upsample-photo")
    page.close()


@requires_dot
def test_the_comparison_pages_look_like_the_exhibits_and_the_index_shows_them_as_cards(browser, site):
    from shapetrace.gallery.exhibits.diffs import DIFF_EXHIBITS

    page = browser.new_page(viewport=WINDOW)
    page.goto((site / "index.html").as_uri())
    index_links = page.eval_on_selector_all("ol.cards.comparisons a", "as => as.map(a => a.getAttribute('href'))")
    assert index_links == [f"{name}.html" for name in DIFF_EXHIBITS]
    for name, ex in DIFF_EXHIBITS.items():
        m = _check_page(page, (site / f"{name}.html").as_uri())
        assert m["scrollWidth"] <= m["innerWidth"], f"{name}.html scrolls sideways"
        svg = m["svg"]  # inline, as on an exhibit's page, so its boxes show their tooltips
        assert svg["drawn"] > 0 and svg["right"] <= m["columnRight"] + 1, f"{name}.svg is not drawn in its column"
        assert page.get_attribute("figure.diagram svg", "role") == "img"
        assert m["fullSize"] and len(m["ids"]) == len(set(m["ids"]))
        assert page.inner_text("header.top .crumbs") == "shapetrace gallery › Comparisons"
        assert page.eval_on_selector_all("p.downloads a", "as => as.every(a => a.hasAttribute('download'))")
        text = page.inner_text("main")
        assert ex.title in text and ex.b_label in text
    page.close()


PHONE = {"width": 390, "height": 844}
SMALL_PHONE = {"width": 360, "height": 740}

# Characters of a shape cell whose next character starts a new line in the middle of a value: a line break
# inside "(1,192,180,240)". Spaces (and the ", " or " | " between two values) are where a break belongs.
BREAKS_INSIDE_VALUES = """() => {
  const bad = [];
  for (const td of document.querySelectorAll('td.shape:not(.error)')) {
    const chars = [];
    const walk = document.createTreeWalker(td, NodeFilter.SHOW_TEXT);
    for (let n = walk.nextNode(); n; n = walk.nextNode()) {
      for (let i = 0; i < n.length; i++) {
        const r = document.createRange(); r.setStart(n, i); r.setEnd(n, i + 1);
        const box = r.getClientRects()[0];
        chars.push([n.data[i], box ? box.top : null]);
      }
    }
    for (let i = 1; i < chars.length; i++) {
      const [a, ta] = chars[i - 1], [b, tb] = chars[i];
      if (ta !== null && tb !== null && tb > ta + 2 && a !== ' ' && b !== ' ') bad.push(td.textContent);
    }
  }
  return bad;
}"""


@requires_dot
@pytest.mark.parametrize("window", [SMALL_PHONE, PHONE, WINDOW], ids=["small phone", "phone", "desktop"])
def test_no_page_scrolls_sideways_and_no_shape_breaks_inside_a_value(browser, site, window):
    from shapetrace.gallery.exhibits.diffs import DIFF_EXHIBITS

    page = browser.new_page(viewport=window)
    problems: list[str] = []
    for name in ["index", *exhibit_names(), *DIFF_EXHIBITS]:
        page.goto((site / f"{name}.html").as_uri())
        page.wait_for_load_state("load")
        wide = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        if wide[0] > wide[1]:
            problems.append(f"{name}.html scrolls sideways ({wide[0]} > {wide[1]} px)")
        broken = page.evaluate(BREAKS_INSIDE_VALUES)
        if broken:
            problems.append(f"{name}.html breaks a shape inside a value: {broken[:2]}")
    page.close()
    assert problems == []


@requires_dot
def test_on_a_phone_the_breadcrumb_comes_before_the_links_to_the_pages_around(browser, site):
    page = browser.new_page(viewport=PHONE)
    page.goto((site / "camvid-unet.html").as_uri())
    crumbs = page.eval_on_selector('header.top a[href="index.html"]', "e => e.getBoundingClientRect().toJSON()")
    pager = page.eval_on_selector("header.top .pager", "e => e.getBoundingClientRect().toJSON()")
    assert crumbs["bottom"] <= pager["top"] + 1, (crumbs, pager)
    page.close()


@requires_dot
def test_on_a_phone_every_diagram_keeps_legible_labels_and_scrolls_in_its_box(browser, site):
    page = browser.new_page(viewport=PHONE)
    problems: list[str] = []
    for name in exhibit_names():
        m = _check_page(page, (site / f"{name}.html").as_uri())
        if m["scrollWidth"] > m["innerWidth"]:
            problems.append(f"{name}.html: the page scrolls sideways ({m['scrollWidth']} > {m['innerWidth']} px)")
        svg = m.get("svg")
        if svg is not None and svg["drawn"] and min(svg["names"]) < LEGIBLE_PX:
            problems.append(f"{name}.html: node names render at {min(svg['names']):.1f} px on a phone")
    page.close()
    assert problems == []
