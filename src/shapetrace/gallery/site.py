"""The static gallery site: every exhibit traced and rendered into one folder.

``build_site(out_dir)`` writes, per exhibit, ``<name>.json`` (the trace), ``<name>.txt`` and ``<name>.md``
(shape tables) and, when the diagram renderer is installed, ``<name>.svg`` (rendered with the exhibit's
``options``) and, for exhibits with at least ``MIN_FLOW_POINTS`` points (the input and leaf outputs),
``<name>.flow.svg`` (the shape-flow chart: channels and spatial size along the forward, the U of a U-Net,
the funnel of a head); then ``index.html`` (title, caption, inline diagram, shape flow and table of each
exhibit) and ``index.md``. A failing exhibit does not stop the build: the others are written, the index
says which failed, and ``GalleryBuildFailed`` is raised at the end. The files written are listed in
``MANIFEST``; a rebuild of the whole gallery into the same folder removes what the last build wrote and
this one did not (a renamed exhibit, a chart that no longer applies), and nothing else.
"""

from __future__ import annotations

import html
import re
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..renderers.table import render_html, render_markdown, render_text
from ..tracer.records import Trace
from .exhibits import Exhibit, exhibit_names, get_exhibit

__all__ = ["MANIFEST", "MIN_FLOW_POINTS", "GalleryBuildFailed", "build_site"]

MANIFEST = ".shapetrace-gallery"
MIN_FLOW_POINTS = 5  # the input and 4 leaf outputs: a chart of fewer shows nothing the table does not

Progress = Callable[[str, bool, str], None]


class GalleryBuildFailed(RuntimeError):
    """Some exhibits failed; ``failures`` maps their names to the reason, ``written`` lists the files written."""

    def __init__(self, failures: dict[str, str], written: list[Path]) -> None:
        self.failures = failures
        self.written = written
        super().__init__("gallery exhibits failed: " + "; ".join(f"{k}: {v}" for k, v in failures.items()))


@dataclass
class _Entry:
    exhibit: Exhibit
    trace: Trace | None = None
    svg: str | None = None
    flow: Path | None = None
    error: str | None = None
    files: list[Path] = field(default_factory=list)


def _diagram_module():
    try:
        from ..renderers import diagram
    except ImportError:
        return None
    return diagram if hasattr(diagram, "render") else None


def _trace_exhibit(ex: Exhibit) -> Trace:
    from ..session import TraceRequest, trace_model

    return trace_model(TraceRequest(ex.name, ops=True)).trace


def _inline_svg(svg: str) -> str:
    """SVG text fit to embed in HTML: no XML prolog or doctype."""
    start = svg.find("<svg")
    if start > 0:  # drop the XML prolog, doctype and generator comment
        svg = svg[start:]
    svg = re.sub(r"<\?xml[^>]*\?>", "", svg)
    svg = re.sub(r"<!DOCTYPE[^>]*>", "", svg, flags=re.IGNORECASE)
    return svg.strip()


def _build_one(ex: Exhibit, out: Path, diagram, debug: bool) -> _Entry:
    entry = _Entry(ex)
    try:
        tr = _trace_exhibit(ex)
    except Exception as e:  # noqa: BLE001  (one broken exhibit must not stop the gallery)
        entry.error = f"building or tracing raised {type(e).__name__}: {e}"
        if debug:
            traceback.print_exc()
        return entry
    entry.trace = tr
    depth = ex.options.get("depth") if isinstance(ex.options, dict) else None
    files = {f"{ex.name}.json": tr.to_json(), f"{ex.name}.txt": render_text(tr),
             f"{ex.name}.md": f"# {ex.title}\n\n{ex.caption}\n\n" + render_markdown(tr, depth=depth)}
    for name, text in files.items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        entry.files.append(path)
    if tr.failed:
        from ..tracer.api import failure_message

        entry.error = failure_message(tr) or "the forward failed"
        return entry
    if diagram is not None:
        try:
            svg = diagram.render(tr, format="svg", options=dict(ex.options))
        except Exception as e:  # noqa: BLE001  (reported per exhibit, the build goes on)
            entry.error = f"the diagram failed: {type(e).__name__}: {e}"
            if debug:
                traceback.print_exc()
            return entry
        svg_text = svg.decode("utf-8") if isinstance(svg, bytes) else svg
        path = out / f"{ex.name}.svg"
        path.write_text(svg_text, encoding="utf-8")
        entry.files.append(path)
        entry.svg = svg_text
    _write_flow(tr, ex, out, entry)
    return entry


def _write_flow(tr: Trace, ex: Exhibit, out: Path, entry: _Entry) -> None:
    from ..renderers.plots import flow_points, shape_flow

    if len(flow_points(tr)) < MIN_FLOW_POINTS:
        return
    path = out / f"{ex.name}.flow.svg"
    path.write_text(str(shape_flow(tr, title=f"{ex.title}: channels and spatial size along the forward")),
                    encoding="utf-8")
    entry.files.append(path)
    entry.flow = path


def _kind(path: Path, ex: Exhibit) -> str:
    """What a file of an exhibit holds, from its name: ``json``, ``txt``, ``md``, ``svg``, ``flow.svg``."""
    return path.name[len(ex.name) + 1:] if path.name.startswith(ex.name + ".") else path.suffix[1:]


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
nav ul { columns: 2; }
section { border-top: 1px solid #ccc; margin-top: 2em; padding-top: 1em; }
.caption { max-width: 60em; }
.diagram { overflow-x: auto; }
.diagram svg { max-width: 100%; height: auto; }
img.flow { max-width: 100%; height: auto; }
table.shapetrace { border-collapse: collapse; font-size: 0.85em; }
table.shapetrace th, table.shapetrace td { border-bottom: 1px solid #eee; padding: 2px 8px; text-align: left; }
table.shapetrace .num { text-align: right; }
tr.failed { background: #fdd; }
.failed-exhibit { color: #a00; }
dl.shapetrace-totals { display: grid; grid-template-columns: max-content auto; gap: 0 1em; font-size: 0.85em; }
dl.shapetrace-totals dd { margin: 0; }
"""


def _index_html(entries: list[_Entry]) -> str:
    esc = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>shapetrace gallery</title>", f"<style>{_CSS}</style>", "</head><body>",
             "<h1>shapetrace gallery</h1>", "<nav><ul>"]
    for e in entries:
        mark = "" if e.error is None else ' <span class="failed-exhibit">(failed)</span>'
        parts.append(f'<li><a href="#{esc(e.exhibit.name)}">{esc(e.exhibit.title)}</a>{mark}</li>')
    parts.append("</ul></nav>")
    for e in entries:
        ex = e.exhibit
        n = esc(ex.name)
        parts.append(f'<section id="{n}"><h2>{esc(ex.title)}</h2>')
        parts.append(f'<p class="caption">{esc(ex.caption)}</p>')
        links = " · ".join(f'<a href="{esc(p.name)}">{esc(_kind(p, ex))}</a>' for p in e.files)
        parts.append(f"<p><code>shapetrace trace {n}</code> — {links}</p>")
        if e.error is not None:
            parts.append(f'<pre class="failed-exhibit">{esc(e.error)}</pre>')
        if e.svg is not None:
            parts.append(f'<div class="diagram">{_inline_svg(e.svg)}</div>')
        if e.flow is not None:
            parts.append("<details><summary>Shape flow</summary>")
            parts.append(f'<img class="flow" src="{esc(e.flow.name)}" alt="{esc(ex.title)}: shape flow">')
            parts.append("</details>")
        if e.trace is not None:
            depth = ex.options.get("depth") if isinstance(ex.options, dict) else None
            parts.append("<details><summary>Shape table</summary>")
            parts.append(render_html(e.trace, depth=depth))
            parts.append("</details>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _index_md(entries: list[_Entry]) -> str:
    lines = ["# shapetrace gallery", ""]
    for e in entries:
        ex = e.exhibit
        lines += [f"## {ex.title}", "", ex.caption, "", f"`shapetrace trace {ex.name}` — "
                  + ", ".join(f"[{_kind(p, ex)}]({p.name})" for p in e.files), ""]
        if e.error is not None:
            lines += ["**Failed:**", "", "```", e.error, "```", ""]
        if e.svg is not None:
            lines += [f"![{ex.title}]({ex.name}.svg)", ""]
        if e.flow is not None:
            lines += [f"![{ex.title}: shape flow]({e.flow.name})", ""]
    return "\n".join(lines)


def _replace_manifest(out: Path, written: list[Path], whole: bool) -> None:
    """Record what this build wrote; after a whole-gallery build, remove what only the last one wrote."""
    manifest = out / MANIFEST
    now = {p.name for p in written}
    before = set(manifest.read_text(encoding="utf-8").split()) if manifest.exists() else set()
    if whole:
        for name in sorted(before - now):
            stale = out / name
            if stale.is_file() and stale.parent == out:
                stale.unlink()
    else:
        now |= {n for n in before if (out / n).is_file()}
    manifest.write_text("\n".join(sorted(now)) + "\n", encoding="utf-8")


def build_site(out_dir: str | Path, exhibits: Sequence[str] | None = None, *, progress: Progress | None = None,
               debug: bool = False) -> list[Path]:
    """Build the gallery into ``out_dir`` and return the files written (see the module docstring).

    ``exhibits`` restricts the build to those names (default: all). ``progress(name, ok, message)`` is called
    after each exhibit. Raises ``GalleryBuildFailed`` (after writing everything it could) if any failed.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(exhibits) if exhibits is not None else exhibit_names()
    diagram = _diagram_module()
    entries: list[_Entry] = []
    for name in names:
        ex = get_exhibit(name)
        entry = _build_one(ex, out, diagram, debug)
        entries.append(entry)
        if progress is not None:
            progress(name, entry.error is None, entry.error or "")
    written = [p for e in entries for p in e.files]
    for fname, text in (("index.html", _index_html(entries)), ("index.md", _index_md(entries))):
        path = out / fname
        path.write_text(text, encoding="utf-8")
        written.append(path)
    _replace_manifest(out, written, whole=exhibits is None)
    failures = {e.exhibit.name: e.error for e in entries if e.error is not None}
    if failures:
        raise GalleryBuildFailed(failures, written)  # type: ignore[arg-type]
    return written
