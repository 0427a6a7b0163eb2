"""The project's documentation: a Sphinx build with warnings as errors, then read in headless Chromium.

At a 1280-pixel-wide window every page with a ``shapetrace`` figure is checked: each diagram loads, none is
wider than the content column, the page never scrolls sideways, node labels are legible at the default zoom or
the figure links to its full-size SVG (where they are), and no id appears twice.

Chromium comes from the system (``scripts/ensure-chromium.sh``, run by ``make test``'s set-up) and is driven by
``playwright`` with ``executable_path``. A missing browser fails these tests; set
``SHAPETRACE_ALLOW_MISSING=chromium`` to skip them deliberately. ``SHAPETRACE_SCREENSHOTS=DIR`` saves the screenshots there (``docs/images`` holds
the ones in the repository).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from conftest import exhibits_built_once, require, requires_dot

sphinx_build = require("sphinx.cmd.build")

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES_WITH_FIGURES = ("index", "guide", "exhibits", "sphinx")
WINDOW = {"width": 1280, "height": 900}
LEGIBLE_PX = 8.0  # the smallest label size, in CSS pixels, that reads without zooming


@pytest.fixture(scope="module")
def site(tmp_path_factory, shared_exhibits) -> Path:
    out = tmp_path_factory.mktemp("docs") / "html"
    with exhibits_built_once(shared_exhibits):  # the directive on each exhibit's model; the builds have own tests
        code = sphinx_build.build_main(["-b", "html", "-W", "--keep-going", "-q", str(DOCS), str(out)])
    assert code == 0, "the documentation does not build with -W (see the warnings above)"
    return out


@requires_dot
def test_the_documentation_builds_with_warnings_as_errors(site):
    for name in (*PAGES_WITH_FIGURES, "cli", "api", "trace-format", "diagrams", "profiling"):
        assert (site / f"{name}.html").is_file()
    cli = (site / "cli.html").read_text()
    assert "shapetrace trace" in cli and "--format" in cli  # the CLI reference, from click itself
    api = (site / "api.html").read_text()
    assert 'id="shapetrace.trace"' in api and 'id="shapetrace.Trace.diagram"' in api
    assert "shapetrace.trace/1" in (site / "trace-format.html").read_text()  # the format page, from Markdown


@requires_dot
def test_the_api_page_documents_the_members_api_rst_lists_and_no_internals(site):
    ids = set(re.findall(r'<dt class="sig sig-object py" id="([^"]+)"', (site / "api.html").read_text()))
    asked = {"shapetrace.Tracer.trace", "shapetrace.TraceFailed.trace", "shapetrace.Trace.leaves",
             *(f"shapetrace.renderers.display.{c}.{m}" for c in ("Table", "Diagram", "Flow") for m in ("save", "render"))}
    assert asked <= ids, f"missing from the API page: {sorted(asked - ids)}"
    internals = {"shapetrace.Tracer.probes", "shapetrace.Tracer.call_keys", "shapetrace.renderers.display.Table.kind"}
    assert not internals & ids, f"not asked for by api.rst: {sorted(internals & ids)}"


MEASURE = """() => {
  const column = document.querySelector('article[role=main]') || document.body;
  const figures = Array.from(document.querySelectorAll('figure.shapetrace-figure'));
  const ids = Array.from(document.querySelectorAll('[id]')).map(e => e.id);
  return {
    scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
    duplicateIds: ids.filter((id, i) => ids.indexOf(id) !== i),
    columnWidth: column.getBoundingClientRect().width,
    figures: figures.length,
    images: Array.from(document.querySelectorAll('figure.shapetrace-figure img')).map(img => ({
      src: img.getAttribute('src'), complete: img.complete, naturalWidth: img.naturalWidth,
      width: img.getBoundingClientRect().width, right: img.getBoundingClientRect().right,
      columnRight: column.getBoundingClientRect().right,
      href: img.closest('a') ? img.closest('a').getAttribute('href') : null})),
  };
}"""


def smallest_font(svg: str) -> float:
    sizes = [float(s) for s in re.findall(r'font-size="([\d.]+)"', svg)]
    sizes += [float(s) for s in re.findall(r"font-size:\s*([\d.]+)px", svg)]
    return min(sizes) if sizes else 12.0


def view_box_width(svg: str) -> float:
    return float(re.search(r'viewBox="[-\d.]+ [-\d.]+ ([\d.]+) [\d.]+"', svg).group(1))


@requires_dot
@pytest.mark.parametrize("name", PAGES_WITH_FIGURES)
def test_figures_fit_the_column_load_and_stay_legible_in_chromium(site, browser, name):
    page = browser.new_page(viewport=WINDOW)
    try:
        page.goto((site / f"{name}.html").as_uri())
        for img in page.locator("figure.shapetrace-figure img").all():  # lazy images load when seen
            img.scroll_into_view_if_needed()
        page.wait_for_function("Array.from(document.querySelectorAll('figure.shapetrace-figure img'))"
                               ".every(i => i.complete)", timeout=20000)
        page.evaluate("window.scrollTo(0, 0)")
        m = page.evaluate(MEASURE)
        shots = os.environ.get("SHAPETRACE_SCREENSHOTS")
        if shots:
            Path(shots).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(shots) / f"docs-{name}.png"), full_page=True,
                            clip={"x": 0, "y": 0, "width": WINDOW["width"], "height": 1500})
            tables = page.locator(".shapetrace-html")
            if tables.count():
                tables.last.screenshot(path=str(Path(shots) / f"docs-{name}-table.png"))
    finally:
        page.close()
    assert m["figures"] >= 1
    assert m["scrollWidth"] <= m["innerWidth"], f"{name}: the page scrolls sideways"
    assert m["duplicateIds"] == [], f"{name}: ids used twice: {m['duplicateIds']}"
    for img in m["images"]:
        assert img["complete"] and img["naturalWidth"] > 0, f"{name}: {img['src']} did not load"
        assert img["right"] <= img["columnRight"] + 0.5, f"{name}: {img['src']} is wider than the column"
        svg = (site / img["src"]).read_text()
        inline_px = smallest_font(svg) * img["width"] / view_box_width(svg)
        full_size_px = smallest_font(svg) * 4 / 3  # Graphviz and matplotlib sizes are points
        linked = img["href"] == img["src"]
        assert inline_px >= LEGIBLE_PX or (linked and full_size_px >= LEGIBLE_PX), (
            f"{name}: {img['src']}: labels {inline_px:.1f}px on the page and no legible full-size link")


@requires_dot
def test_the_html_table_in_the_docs_marks_the_failing_row(site, browser):
    page = browser.new_page(viewport=WINDOW)
    try:
        page.goto((site / "guide.html").as_uri())
        table = page.locator(".shapetrace-html").first
        failed = table.locator("tr.failed")
        assert failed.count() == 1
        bar = failed.locator("td").first.evaluate("e => getComputedStyle(e).boxShadow")
        assert "220, 38, 38" in bar  # the red bar on the failing row
        mono = table.locator("td.shape").first.evaluate("e => getComputedStyle(e).fontFamily")
        assert "mono" in mono.lower()
    finally:
        page.close()
