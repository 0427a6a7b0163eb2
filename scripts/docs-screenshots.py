"""Remake the pictures of the docs that show shapetrace's own output (docs/images), from the code as it is now.

    PYTHONPATH=src .venv/bin/python scripts/docs-screenshots.py [NAME ...]

NAME is one of the pictures below (default: all of them):

* ``camvid-unet-u.png`` (docs/diagrams.md): ``shapetrace trace camvid-unet --format png --layout u --depth 2``.
* ``html-table-dark.png`` and ``html-table-light.png`` (docs/guide.md): the standalone page
  (``--format html --with-diagram``, left to right) of a small classifier whose head expects the wrong width,
  in Chromium at 1280×820 with the system's dark and light colour schemes.
* ``docs-unet-page.png`` (docs/sphinx.md): the docs built with Sphinx (``make docs``'s command, into a
  temporary folder), the exhibits page in Chromium at 1280 pixels wide, its first 1500 pixels.

Needs Graphviz's ``dot``, playwright and Chromium (``scripts/ensure-chromium.sh``; ``SHAPETRACE_CHROMIUM``
names another binary).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "docs" / "images"
WINDOW = {"width": 1280, "height": 820}


def _chromium() -> str:
    for name in (os.environ.get("SHAPETRACE_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)  # type: ignore[return-value]
    raise SystemExit("Chromium not found: run scripts/ensure-chromium.sh or set SHAPETRACE_CHROMIUM")


def _screenshot(url: str, out: Path, *, scheme: str = "light", height: int | None = None) -> None:
    """``url`` in headless Chromium, 1280 pixels wide: the window (``height`` None) or the page's first
    ``height`` pixels."""
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - only this script needs it

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport=WINDOW, color_scheme=scheme)
        page.goto(url)
        page.wait_for_load_state("load")
        for img in page.locator("img").all():  # lazy images load when seen
            img.scroll_into_view_if_needed()
        page.wait_for_function("Array.from(document.images).every(i => i.complete)")
        page.evaluate("window.scrollTo(0, 0)")
        clip = {"x": 0, "y": 0, "width": WINDOW["width"], "height": height} if height else None
        page.screenshot(path=str(out), full_page=height is not None, clip=clip)
        browser.close()


def camvid_unet_u() -> None:
    subprocess.run([sys.executable, "-m", "shapetrace", "trace", "camvid-unet", "--format", "png", "--layout", "u",
                    "--depth", "2", "-o", str(IMAGES / "camvid-unet-u.png")], check=True)


def html_tables() -> None:
    import torch  # noqa: PLC0415
    from torch import nn  # noqa: PLC0415

    import shapetrace  # noqa: PLC0415
    from shapetrace.renderers.html import render_page  # noqa: PLC0415

    class Encoder(nn.Module):
        """A small classifier whose head was written for 16 channels; the body gives 32."""

        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
            self.down = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU())
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.pool(self.down(self.stem(x))))

    trace = shapetrace.trace(Encoder().eval(), torch.randn(4, 3, 64, 64), strict=False, ops=True)
    page = render_page(trace, with_diagram=True, diagram_options={"layout": "lr"},
                       title="A classifier whose head expects the wrong width")
    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / "page.html"
        html.write_text(page, encoding="utf-8")
        for scheme in ("dark", "light"):
            _screenshot(html.as_uri(), IMAGES / f"html-table-{scheme}.png", scheme=scheme)


def docs_unet_page() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "sphinx", "-q", "-b", "html", str(ROOT / "docs"), tmp], check=True)
        _screenshot((Path(tmp) / "exhibits.html").as_uri(), IMAGES / "docs-unet-page.png", height=1500)


PICTURES = {"camvid-unet-u.png": camvid_unet_u, "html-table-dark.png": html_tables,
            "html-table-light.png": html_tables, "docs-unet-page.png": docs_unet_page}


def main(names: list[str]) -> None:
    unknown = [n for n in names if n not in PICTURES]
    if unknown:
        raise SystemExit(f"unknown picture {', '.join(unknown)}: choose from {', '.join(PICTURES)}")
    for make in dict.fromkeys(PICTURES[n] for n in names or PICTURES):  # each maker once, in order
        make()
        print(f"made {make.__name__}")


if __name__ == "__main__":
    main(sys.argv[1:])
