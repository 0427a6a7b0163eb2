"""HTML tables: the scoped fragment (notebooks, docs) and the standalone page (``--format html``).

The HTML is read back with the standard library's parser, and shapes are compared with what torch itself
returned, not with an earlier rendering.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
import torch
from conftest import requires_dot
from torch import nn

import shapetrace
from shapetrace.renderers import html as html_renderer


class Table(HTMLParser):
    """Rows of ``<tbody>`` as (row classes, [(cell class, cell text, cell inner tags)])."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[set[str], list[tuple[str, str, list[tuple[str, dict]]]]]] = []
        self.in_body = False
        self.cell: list | None = None
        self.tags: list[str] = []
        self.ids: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "tbody":
            self.in_body = True
        elif tag == "tr" and self.in_body:
            self.rows.append((set((a.get("class") or "").split()), []))
        elif tag == "td" and self.in_body:
            self.cell = [a.get("class") or "", "", []]
            self.rows[-1][1].append(self.cell)
        elif self.cell is not None:
            self.cell[2].append((tag, a))

    def handle_endtag(self, tag):
        if tag == "tbody":
            self.in_body = False
        elif tag == "td":
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell[1] += data


def parse(text: str) -> Table:
    p = Table()
    p.feed(text)
    p.close()
    return p


class Nested(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 6 * 6, 5))

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)))


def test_rows_are_the_calls_indented_by_depth_with_torchs_shapes_in_monospace():
    model, x = Nested(), torch.randn(2, 3, 8, 8)
    tr = shapetrace.trace(model, x)
    rows = parse(html_renderer.render_html(tr)).rows
    assert len(rows) == len(tr.calls)
    expected = {"": model(x).shape, "conv": model.conv(x).shape, "head.1": model(x).shape}
    for (_, cells), call in zip(rows, tr.calls):
        layer, *_ = cells
        indent = [t for t in layer[2] if t[0] == "span"]
        width = float(re.search(r"padding-left:([\d.]+)em", indent[0][1]["style"]).group(1)) if indent else 0.0
        assert width == pytest.approx(1.2 * call.depth)
        assert ("code", {}) in layer[2]  # the layer name is code
        if call.module in expected:
            shape_cells = [c for c in cells if c[0] == "shape"]
            assert shape_cells[-1][1] == "(" + ",".join(map(str, expected[call.module])) + ")"


def test_the_failing_call_is_marked_with_its_error():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(5, 2))
    tr = shapetrace.trace(model, torch.randn(3, 4), strict=False)
    with pytest.raises(RuntimeError) as raised:
        model(torch.randn(3, 4))
    rows = parse(html_renderer.render_html(tr)).rows
    failed = [cells for classes, cells in rows if "failed" in classes]
    assert len(failed) == 1
    assert failed[0][0][1].strip() == "✗ 2"
    assert str(raised.value) in " ".join(c[1] for c in failed[0])
    assert any("raised" in classes for classes, _ in rows)  # the root, left by the same exception


def test_fragment_css_is_scoped_to_its_own_class():
    out = html_renderer.render_html(shapetrace.trace(nn.Linear(2, 2), torch.randn(1, 2)))
    css = re.search(r"<style>(.*?)</style>", out, re.DOTALL).group(1)
    selectors = [s.strip() for block in re.findall(r"([^{}]+)\{", css) for s in block.split(",")]
    assert selectors and all(s.startswith(".shapetrace-html") for s in selectors), selectors
    assert out.startswith('<div class="shapetrace-html">')


def test_page_is_a_standalone_document_with_light_and_dark_colours():
    tr = shapetrace.trace(Nested(), torch.randn(2, 3, 8, 8))
    page = html_renderer.render_page(tr)
    assert page.startswith("<!DOCTYPE html>")
    assert '<meta charset="utf-8">' in page
    assert "@media (prefers-color-scheme: dark)" in page and "color-scheme: light dark" in page
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched from elsewhere
    assert len(parse(page).rows) == len(tr.calls)
    assert "<svg" not in page


@requires_dot
def test_page_with_diagram_puts_the_svg_above_the_table():
    tr = shapetrace.trace(Nested(), torch.randn(2, 3, 8, 8), ops=True)
    page = html_renderer.render_page(tr, with_diagram=True)
    assert page.count("<svg") == 1 and "<?xml" not in page and "<!DOCTYPE svg" not in page
    assert page.index("<svg") < page.index("<table")
    assert "2×8×6×6" in page  # the conv's output, as the diagram labels it


def test_table_render_html_format_is_the_page_and_repr_html_the_fragment():
    from shapetrace.renderers.table import render

    tr = shapetrace.trace(nn.Linear(2, 2), torch.randn(1, 2))
    assert render(tr, "html").startswith("<!DOCTYPE html>")
    assert tr._repr_html_() == html_renderer.render_html(tr)


@requires_dot
def test_cli_writes_the_page_with_the_diagram_above_the_table(tmp_path):
    from click.testing import CliRunner

    from shapetrace.cli import main

    out = tmp_path / "lin.html"
    r = CliRunner().invoke(main, ["trace", "torch.nn:Linear", "--arg", "in_features=4", "--arg", "out_features=3",
                                  "--input", "2,4", "--format", "html", "--with-diagram", "-o", str(out)])
    assert r.exit_code == 0, r.output
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.index("<svg") < page.index("<table")
    saved = tmp_path / "lin.json"
    CliRunner().invoke(main, ["trace", "torch.nn:Linear", "--arg", "in_features=4", "--arg", "out_features=3",
                              "--input", "2,4", "-o", str(saved)])
    r = CliRunner().invoke(main, ["render", str(saved), "--format", "html", "--with-diagram", "--layout", "lr"])
    assert r.exit_code == 0 and r.output.count("<svg") == 1 and "note:" not in r.output


def test_control_and_bidi_characters_in_names_show_as_escapes_not_raw():
    model = nn.Sequential()
    model.add_module("rtl\u202egnp_exe", nn.Linear(2, 2))
    model.add_module("two\nlines", nn.ReLU())
    page = html_renderer.render_html(shapetrace.trace(model, torch.randn(1, 2)))
    assert "\u202e" not in page and "rtl\\u202egnp_exe" in page
    assert "two\nlines" not in page and "two\\nlines" in page


class TwoOutputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 64, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return y, y.flatten(1)


def test_shape_cells_wrap_only_between_shapes_never_inside_a_number():
    out = html_renderer.render_html(shapetrace.trace(TwoOutputs(), torch.randn(1, 3, 112, 112)))
    css = re.search(r"<style>(.*?)</style>", out, re.DOTALL).group(1)
    shape_rules = " ".join(re.findall(r"\.shape \{([^}]*)\}", css))
    assert "break-word" not in shape_rules and "anywhere" not in shape_rules and "min-width" not in shape_rules
    assert re.search(r"\.shape \.t \{[^}]*white-space: (pre|nowrap)", css)
    root = re.search(r'<tr><td class="layer" title="\(root\)">.*?</tr>', out).group(0)
    # each shape whole inside a span that does not wrap; the ", " between them outside, where a line may break
    assert '<span class="t">[(1,64,112,112)</span>, <span class="t">(1,802816)]</span>' in root


def test_shape_markup_keeps_a_side_input_and_a_repeat_count_with_their_shape():
    assert html_renderer.shape_markup("(2,72) int64 +side (1,1,1152), (1,1,400)") == (
        '<span class="t">(2,72) int64</span> <span class="t">+side (1,1,1152)</span>, <span class="t">(1,1,400)</span>')
    assert html_renderer.shape_markup("(4,18,400) ×4 | (4,1,400)") == (
        '<span class="t">(4,18,400) ×4</span> | <span class="t">(4,1,400)</span>')


def test_the_failing_calls_error_still_wraps_as_prose_in_a_colour_readable_on_dark_themes():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(5, 2))
    out = html_renderer.render_html(shapetrace.trace(model, torch.randn(3, 4), strict=False))
    assert re.search(r'<tr class="failed">.*<td class="shape error">✗ ', out)
    css = re.search(r"<style>(.*?)</style>", out, re.DOTALL).group(1)
    assert re.search(r"\.shape\.error \{[^}]*white-space: pre-wrap", css)
    # a fixed #dc2626 is 3.5:1 on a dark theme's background: the red is mixed with the text colour instead
    assert re.search(r"tr\.failed td\.error \{[^}]*color: color-mix\(in srgb, #dc2626 \d+%, currentColor\)", css)


class Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return self.lin(self.lin(x))


def test_the_call_column_is_left_out_when_no_module_is_called_twice():
    def headers(out: str) -> list[str]:
        return re.findall(r"<th[^>]*>([^<]*)</th>", out)

    once = html_renderer.render_html(shapetrace.trace(Nested(), torch.randn(2, 3, 8, 8)))
    assert headers(once)[:4] == ["layer", "class", "input shapes", "output shapes"]
    assert all(len(cells) == len(headers(once)) for _, cells in parse(once).rows)
    twice = html_renderer.render_html(shapetrace.trace(Twice(), torch.randn(1, 4)))
    assert headers(twice)[:3] == ["layer", "class", "call"]
    assert [c[1] for _, cells in parse(twice).rows for c in cells if c[0] == "call"] == ["", "1/2", "2/2"]


def test_the_pages_title_heading_and_subtitle_show_a_hostile_class_name_as_escapes():
    evil = type("Ev\u202eil\x1b[31mRED\nX", (nn.Module,), {
        "__init__": lambda self: (nn.Module.__init__(self), setattr(self, "lin", nn.Linear(3, 3)))[0],
        "forward": lambda self, x: self.lin(x)})
    page = html_renderer.render_page(shapetrace.trace(evil(), torch.randn(2, 3)))
    shown = "Ev\\u202eil\\x1b[31mRED\\nX"
    assert "\u202e" not in page and "\x1b" not in page
    assert f"<title>{shown} · shapetrace</title>" in page and f"<h1>{shown}</h1>" in page
    assert f'<p class="subtitle">{shown} · ' in page


def test_a_newline_and_a_backslash_n_in_names_read_differently_in_the_html_table():
    model = nn.Module()
    model.d = nn.ModuleDict({"a\nb": nn.Linear(3, 3), "a\\nb": nn.Linear(3, 3)})
    model.forward = lambda x: model.d["a\\nb"](model.d["a\nb"](x))
    page = html_renderer.render_html(shapetrace.trace(model, torch.randn(2, 3)))
    assert "<code>d.a\\nb</code>" in page and "<code>d.a\\\\nb</code>" in page


def test_a_very_long_name_is_cut_in_the_middle_with_the_full_name_in_its_title_and_siblings_stay_distinct():
    """A generated 3,000-character name would push every other column off the page: the cell shows at most
    ``NAME_WIDTH`` columns, cut as the text table cuts names, two names never to the same label."""
    long_a, long_b = "block_" + "x" * 3000 + "_a", "block_" + "x" * 3000 + "_b"
    model = nn.Sequential()
    model.add_module(long_a, nn.Linear(2, 2))
    model.add_module(long_b, nn.Linear(2, 2))
    model.add_module("short", nn.ReLU())
    out = html_renderer.render_html(shapetrace.trace(model, torch.randn(1, 2)))
    shown = [cells[0][1].strip() for _, cells in parse(out).rows]
    cut = [name for name in shown if name.startswith("block_")]
    assert len(cut) == 2 and all(len(name) <= html_renderer.NAME_WIDTH and "…" in name for name in cut)
    assert {name[-2:] for name in cut} == {"_a", "_b"}  # cut in the middle: the ends that differ are kept
    assert "short" in shown
    titles = re.findall(r'<td class="layer" title="([^"]*)"', out)
    assert long_a in titles and long_b in titles


def test_a_long_name_cut_after_an_accent_leaves_no_accent_alone_after_the_ellipsis():
    """Two 160-character names that differ only after an ``é`` written as ``e`` + U+0301: each is cut to its
    end, and the accent, whose letter was cut off, goes with it rather than sitting on the ``…``."""
    names = ["p" * 70 + "e\u0301" + c * 29 + "z" * 30 for c in "AB"]
    model = nn.Sequential()
    for name in names:
        model.add_module(name, nn.ReLU())
    page = html_renderer.render_html(shapetrace.trace(model, torch.randn(1, 2)))
    cells = [re.sub(r"<[^>]+>", "", c) for c in re.findall(r'<td class="layer"[^>]*>.*?</td>', page)][1:]
    assert len(cells) == 2 and len(set(cells)) == 2 and all("…" in c for c in cells)
    assert not any("…\u0301" in c for c in cells)
