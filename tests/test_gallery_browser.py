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


@requires_dot
def test_the_index_loads_every_thumbnail_and_links_every_page(browser, site):
    page = browser.new_page(viewport=WINDOW)
    m = _check_page(page, (site / "index.html").as_uri())
    assert m["scrollWidth"] <= m["innerWidth"]
    assert len(m["images"]) == len(exhibit_names()) and all(i["ok"] for i in m["images"])
    links = page.eval_on_selector_all("ol.cards a", "as => as.map(a => a.getAttribute('href'))")
    assert links == [f"{n}.html" for n in exhibit_names()]
    assert len(m["ids"]) == len(set(m["ids"]))
    folder = os.environ.get("SHAPETRACE_SCREENSHOTS")
    if folder:
        for name, file in SCREENSHOTS.items():
            page.goto((site / f"{name}.html").as_uri())
            page.wait_for_load_state("load")
            page.screenshot(path=str(Path(folder) / file), full_page=name != "nearest-upsample-photo")
    page.close()


@requires_dot
def test_the_comparison_pages_load_their_diagram_in_their_column_and_the_index_links_them(browser, site):
    from shapetrace.gallery.exhibits.diffs import DIFF_EXHIBITS

    page = browser.new_page(viewport=WINDOW)
    page.goto((site / "index.html").as_uri())
    index_links = set(page.eval_on_selector_all("ul.comparisons a", "as => as.map(a => a.getAttribute('href'))"))
    assert index_links == {f"{name}.html" for name in DIFF_EXHIBITS}
    for name, ex in DIFF_EXHIBITS.items():
        m = _check_page(page, (site / f"{name}.html").as_uri())
        assert m["scrollWidth"] <= m["innerWidth"], f"{name}.html scrolls sideways"
        assert [i["src"] for i in m["images"]] == [f"{name}.svg"] and m["images"][0]["ok"], name
        assert m["images"][0]["right"] <= m["columnRight"] + 1, f"{name}.svg is wider than its column"
        assert len(m["ids"]) == len(set(m["ids"]))
        text = page.inner_text("main")
        assert ex.title in text and ex.b_label in text
    page.close()
