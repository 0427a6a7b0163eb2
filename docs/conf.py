"""Sphinx configuration of shapetrace's documentation (``make docs``: HTML in build/docs, warnings are errors)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # document this checkout's code

from shapetrace import __version__  # noqa: E402

project = "shapetrace"
author = "shapetrace contributors"
copyright = "shapetrace contributors"  # noqa: A001 (Sphinx's name)
release = version = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx_click",
    "shapetrace.sphinxext",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "images/*.md"]
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

html_theme = "furo"
html_title = f"shapetrace {__version__}"
html_static_path: list[str] = []
html_show_sourcelink = False

autodoc_member_order = "bysource"
autodoc_typehints = "description"
# No default "members": each directive in api.rst lists the members it documents (a default of all
# members overrode those lists, adding internals such as Tracer.probes and leaving out inherited ones).
autodoc_default_options = {"undoc-members": False}
nitpicky = False


# A Markdown page added to docs/ but not yet named in index.md's toctrees still gets into the site (under "More"),
# so a new page never breaks the -W build with "document isn't included in any toctree".
_HERE = Path(__file__).resolve().parent


def _listed_pages() -> set[str]:
    text = (_HERE / "index.md").read_text(encoding="utf-8")
    return {line.strip() for line in text.splitlines() if re.fullmatch(r"[A-Za-z0-9_-]+", line.strip())}


def _add_unlisted_pages(app, docname: str, source: list[str]) -> None:
    if docname != root_doc:
        return
    listed = _listed_pages()
    extra = sorted(p.stem for p in _HERE.glob("*.md") if p.stem != root_doc and p.stem not in listed)
    if extra:
        source[0] += "\n\n```{toctree}\n:caption: More\n\n" + "\n".join(extra) + "\n```\n"


def setup(app) -> None:
    app.connect("source-read", _add_unlisted_pages)
