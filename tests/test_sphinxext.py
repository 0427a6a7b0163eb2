"""The ``.. shapetrace::`` directive: real Sphinx builds (HTML, LaTeX, text; reST and MyST) of pages that embed
diagrams, tables and flow charts, and builds that must fail."""

from __future__ import annotations

import os
import pickle
import re
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import require, requires_dot

sphinx_build = require("sphinx.cmd.build")

LINEAR = """
.. shapetrace:: torch.nn:Linear
   :arg: in_features=4
         out_features=3
   :input: 2,4
"""


def build(tmp_path: Path, body: str, builder: str = "html", warnings_are_errors: bool = True,
          page: str = "index.rst", extensions: tuple[str, ...] = (),
          files: dict[str, str] | None = None, verbose: bool = False) -> tuple[int, str, Path]:
    """Build a project whose page ``page`` holds ``body`` (and ``files``: more files by path in the source
    folder; ``verbose``: ``-v`` instead of ``-q``); the exit status, the page's output and the output folder."""
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir(exist_ok=True)
    exts = ["shapetrace.sphinxext", *extensions]
    (src / "conf.py").write_text(f"extensions = {exts!r}\nproject = 't'\n")
    for name, text in (files or {}).items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(textwrap.dedent(text))
    heading = "# Models\n\n" if page.endswith(".md") else "Models\n======\n\n"
    (src / page).write_text(heading + textwrap.dedent(body))
    argv = ["-b", builder, "-v" if verbose else "-q", *(["-W"] if warnings_are_errors else []), str(src), str(out)]
    code = sphinx_build.build_main(argv)
    index = out / {"html": "index.html", "text": "index.txt"}.get(builder, "index.html")
    return code, index.read_text() if index.exists() else "", out


def rebuild(tmp_path: Path, builder: str = "html") -> tuple[int, str]:
    """Build the project ``build`` made again, as ``sphinx-build`` without ``-E`` does after an edit: the exit
    status and the page's output."""
    src, out = tmp_path / "src", tmp_path / "out"
    code = sphinx_build.build_main(["-b", builder, "-q", "-W", str(src), str(out)])
    index = out / {"html": "index.html", "text": "index.txt"}.get(builder, "index.html")
    return code, index.read_text() if index.exists() else ""


def edit(path: Path, text: str) -> None:
    """Rewrite a source file, its modification time clearly after the last build."""
    path.write_text(textwrap.dedent(text))
    later = time.time() + 5
    os.utime(path, (later, later))


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.imgs: list[dict] = []
        self.links: list[dict] = []
        self.figures: list[dict] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.append(a["id"])
        {"img": self.imgs, "a": self.links, "figure": self.figures}.get(tag, []).append(a)


def parse(html: str) -> Page:
    p = Page()
    p.feed(html)
    return p


@requires_dot
def test_the_diagram_is_an_svg_scaled_to_the_column_and_linked_at_full_size(tmp_path):
    code, html, out = build(tmp_path, LINEAR + "   :caption: A single linear layer.\n")
    assert code == 0
    page = parse(html)
    (img,) = [i for i in page.imgs if "shapetrace-diagram" in i["src"]]
    svg = (out / img["src"]).read_text()
    root = ET.fromstring(svg)
    assert "Linear" in svg and "2×3" in svg  # the traced model's output shape, drawn by Graphviz
    # The natural size (points -> CSS px) is given, so the browser keeps the viewBox's aspect ratio at any width.
    vb = [float(v) for v in root.get("viewBox").split()]
    assert float(img["width"]) / float(img["height"]) == pytest.approx(vb[2] / vb[3], rel=0.02)
    css = (out / "_static" / "shapetrace.css").read_text()
    assert re.search(r"\.shapetrace-picture img \{[^}]*max-width: 100%;[^}]*height: auto", css)
    assert "shapetrace.css" in html
    assert any(a.get("href") == img["src"] for a in page.links)  # click: the full-size SVG
    assert "A single linear layer." in html and "full-size diagram" in html


@requires_dot
def test_two_diagrams_on_one_page_have_distinct_ids(tmp_path):
    code, html, _ = build(tmp_path, LINEAR + "\n" + LINEAR.replace("out_features=3", "out_features=5"))
    assert code == 0
    page = parse(html)
    assert len(page.figures) == 2
    assert len(page.ids) == len(set(page.ids))
    assert "<svg" not in html  # no SVG ids in the page: each diagram is its own file


def test_show_table_is_the_scoped_html_table(tmp_path):
    code, html, _ = build(tmp_path, LINEAR + "   :show: table\n")
    assert code == 0
    assert '<div class="shapetrace-html">' in html and '<table class="shapetrace">' in html
    assert "<pre" not in html and "(2,3)" in html


@requires_dot
def test_several_shows_come_in_the_order_given(tmp_path):
    code, html, out = build(tmp_path, LINEAR + "   :show: table flow diagram text\n")
    assert code == 0
    order = [html.index(s) for s in ('<table class="shapetrace">', "shapetrace-flow", "shapetrace-diagram",
                                     '<pre class="shapetrace-text">')]
    assert order == sorted(order)
    flow = [i for i in parse(html).imgs if "shapetrace-flow" in i["src"]]
    assert ET.fromstring((out / flow[0]["src"]).read_text()).tag.endswith("svg")


@requires_dot
def test_each_picture_has_a_short_alt_text_of_its_own_not_the_caption(tmp_path):
    caption = "A single linear layer, traced while the docs were built. " * 6
    code, html, _ = build(tmp_path, LINEAR + f"   :show: diagram flow\n   :caption: {caption.strip()}\n")
    assert code == 0
    alts = [i["alt"] for i in parse(html).imgs if "shapetrace-" in i["src"]]
    assert len(alts) == 2 and len(set(alts)) == 2, alts  # the diagram's and the flow chart's own
    assert all("Linear" in a and len(a) < 100 and "traced while" not in a for a in alts), alts
    (tmp_path / "given").mkdir()
    code, html, _ = build(tmp_path / "given", LINEAR + "   :show: diagram flow\n   :alt: One linear layer.\n")
    alts = [i["alt"] for i in parse(html).imgs if "shapetrace-" in i["src"]]
    assert code == 0 and alts[0] == "One linear layer." and alts[1] != alts[0]


@requires_dot
def test_an_exhibit_uses_its_own_inputs_options_and_caption(tmp_path):
    code, html, _ = build(tmp_path, """
        .. shapetrace:: create-head-default
           :caption: exhibit
    """)
    assert code == 0
    assert "shapetrace-diagram" in html
    assert "546,304" in html or "fastai" in html  # the exhibit's caption


@requires_dot
def test_text_builder_gets_the_text_table_and_says_what_it_stands_for(tmp_path):
    code, text, _ = build(tmp_path, LINEAR + "   :caption: Linear.\n", builder="text")
    assert code == 0
    assert "(2,3)" in text and "Linear" in text and "the diagram" in text and "Linear." in text


@requires_dot
def test_latex_builder_gets_a_pdf_of_the_diagram_and_a_png_of_the_flow(tmp_path):
    code, _, out = build(tmp_path, LINEAR + "   :show: diagram flow\n", builder="latex")
    assert code == 0
    tex = next(out.glob("*.tex")).read_text()
    files = re.findall(r"\\sphinxincludegraphics\[[^]]*\]\{([^}]+)\}", tex)
    assert len(files) == 2
    assert (out / files[0]).read_bytes()[:5] == b"%PDF-"
    assert (out / files[1]).read_bytes()[:4] == b"\x89PNG"


def test_a_model_that_cannot_load_fails_the_build_without_W_naming_page_line_and_cause(tmp_path, capsys):
    code, _, _ = build(tmp_path, "Text.\n\n.. shapetrace:: camvd-unet\n", warnings_are_errors=False)
    err = capsys.readouterr().err
    assert code != 0
    assert re.search(r"index\.rst:6: ERROR: shapetrace: camvd-unet: .*Did you mean 'camvid-unet'", err), err


def test_a_forward_that_fails_fails_the_build(tmp_path, capsys):
    code, _, _ = build(tmp_path, LINEAR.replace("2,4", "2,5") + "   :show: table\n", warnings_are_errors=False)
    err = capsys.readouterr().err
    assert code != 0
    assert "index.rst:5: ERROR: shapetrace: torch.nn:Linear:" in err and "mat1 and mat2" in err


def test_allow_failure_shows_the_partial_table_and_the_error(tmp_path):
    code, html, _ = build(tmp_path, LINEAR.replace("2,4", "2,5") + "   :allow-failure:\n")
    assert code == 0
    assert '<tr class="failed">' in html and "mat1 and mat2" in html


def test_myst_markdown_pages_can_use_the_directive(tmp_path):
    require("myst_parser")
    code, html, _ = build(tmp_path, """
        ```{shapetrace} torch.nn:Linear
        ---
        arg: |
          in_features=4
          out_features=3
        input: 2,4
        show: table
        ---
        ```
    """, page="index.md", extensions=("myst_parser",))
    assert code == 0
    assert '<table class="shapetrace">' in html and "(2,3)" in html


MODEL_FILE = """
from torch import nn


def build(n_out=3):
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, n_out))
"""

FROM_A_FILE = """
:orphan:

Page
====

.. shapetrace:: models.py:build
   :input: 2,4
   :show: table
"""


def test_a_model_file_is_read_beside_the_document_whatever_folder_sphinx_build_runs_in(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # neither the source folder nor the page's
    code, _, out = build(tmp_path, "Text.\n", files={
        "guide/page.rst": FROM_A_FILE, "guide/models.py": MODEL_FILE,
        "models.py": MODEL_FILE.replace("n_out=3", "n_out=5")})  # the source folder's: found second
    assert code == 0
    html = (out / "guide" / "page.html").read_text()
    assert "(2,3)" in html and "(2,5)" not in html


def test_a_model_file_not_beside_the_document_is_read_from_the_source_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, out = build(tmp_path, "Text.\n", files={"guide/page.rst": FROM_A_FILE, "models.py": MODEL_FILE})
    assert code == 0
    assert "(2,3)" in (out / "guide" / "page.html").read_text()


def test_a_model_file_found_nowhere_is_an_error_naming_the_folders_searched(tmp_path, capsys):
    code, _, _ = build(tmp_path, "Text.\n", warnings_are_errors=False, files={"guide/page.rst": FROM_A_FILE})
    err = capsys.readouterr().err
    assert code != 0
    src = tmp_path / "src"
    assert "no model file 'models.py'" in err and str(src / "guide") in err and f"{src})" in err, err


def test_editing_the_model_file_redraws_the_page_without_a_full_rebuild(tmp_path):
    page = ".. shapetrace:: models.py:build\n   :input: 2,4\n   :show: table\n"
    code, html, _ = build(tmp_path, page, files={"models.py": MODEL_FILE})
    assert code == 0 and "Softmax" not in html
    edit(tmp_path / "src" / "models.py", MODEL_FILE.replace("nn.Linear(8, n_out))", "nn.Linear(8, n_out), nn.Softmax(-1))"))
    code, html = rebuild(tmp_path)
    assert code == 0 and "Softmax" in html


def test_fixing_the_model_module_fixes_the_next_build_without_touching_the_page(tmp_path, monkeypatch):
    name = "shapetrace_test_fixed_later"
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    broken = MODEL_FILE + "\nLAYER = nn.Lnear\n"  # a typo that fails the import
    try:
        code, _, _ = build(tmp_path, f".. shapetrace:: {name}:build\n   :input: 2,4\n   :show: table\n",
                           warnings_are_errors=False, files={f"{name}.py": broken})
        assert code != 0
        edit(tmp_path / "src" / f"{name}.py", MODEL_FILE)
        code, html = rebuild(tmp_path)
        assert code == 0 and "(2,3)" in html
    finally:
        sys.modules.pop(name, None)


def test_an_exhibits_page_depends_on_the_module_that_defines_the_exhibit(tmp_path):
    code, _, out = build(tmp_path, ".. shapetrace:: create-head-default\n   :show: table\n")
    assert code == 0
    env = pickle.loads((out / ".doctrees" / "environment.pickle").read_bytes())
    assert any(p.as_posix().endswith("shapetrace/gallery/exhibits/vision.py") for p in env.dependencies["index"])


@requires_dot
def test_epub_pages_with_figures_and_errors_are_well_formed_xhtml(tmp_path):
    body = (LINEAR + "   :show: diagram table text flow\n   :caption: A <b> & c\n\n"
            + LINEAR.replace("2,4", "2,5") + "   :allow-failure:\n")
    code, _, out = build(tmp_path, body, builder="epub", warnings_are_errors=False)
    assert code == 0
    root = ET.parse(out / "index.xhtml").getroot()  # raises on markup that is HTML but not XML
    assert len(root.findall(".//{http://www.w3.org/1999/xhtml}img")) == 2


TWO_LINE_ERROR = """
from torch import nn


class Two(nn.Module):
    def __init__(self):
        super().__init__()
        self.l = nn.Linear(4, 4)

    def forward(self, x):
        self.l(x)
        raise ValueError("expected 3 channels\\nhint: check the input")


def build():
    return Two()
"""


def test_an_epub_page_whose_allowed_failure_has_a_two_line_error_is_well_formed_xhtml(tmp_path):
    name = "epub_two_line_error"
    try:
        code, _, out = build(tmp_path, f".. shapetrace:: {name}.py:build\n   :input: 2,4\n   :show: table\n"
                             "   :allow-failure:\n", builder="epub", warnings_are_errors=False,
                             files={f"{name}.py": TWO_LINE_ERROR})
    finally:
        sys.modules.pop(name, None)
    assert code == 0
    root = ET.parse(out / "index.xhtml").getroot()  # raises on a <br> that is HTML but not XML
    (note,) = [li for li in root.iter("{http://www.w3.org/1999/xhtml}li") if li.get("class") == "failure"]
    text = "".join(note.itertext())
    assert "ValueError: expected 3 channels" in text and text.rstrip().endswith("hint: check the input")
    assert len(note.findall("{http://www.w3.org/1999/xhtml}br")) == 1  # the error's second line on a line of its own


@requires_dot
def test_latex_builds_of_the_same_figures_write_the_same_files(tmp_path):
    def pictures() -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in (tmp_path / "out").glob("shapetrace-*")}

    code, _, _ = build(tmp_path, LINEAR + "   :show: diagram flow\n", builder="latex")
    assert code == 0
    first = pictures()
    time.sleep(1.1)  # a PDF creation date, were one written, would differ now
    assert sphinx_build.build_main(["-b", "latex", "-q", "-W", "-E", str(tmp_path / "src"), str(tmp_path / "out")]) == 0
    assert len(first) == 2 and pictures() == first  # no new names, no new bytes


def test_a_bad_arg_line_is_reported_as_an_arg_option(tmp_path, capsys):
    code, _, _ = build(tmp_path, LINEAR.replace("in_features=4", "in_features"), warnings_are_errors=False)
    err = capsys.readouterr().err
    assert code != 0
    assert "bad :arg: 'in_features': write KEY=VALUE" in err and "--arg" not in err, err


def test_a_factory_that_raises_points_to_sphinx_build_v_which_shows_the_whole_traceback(tmp_path, capsys):
    code, _, _ = build(tmp_path, LINEAR.replace("out_features=3", "out_features='x'"), warnings_are_errors=False,
                       verbose=True)
    out, err = capsys.readouterr()
    assert code != 0
    assert "run sphinx-build with -v for the whole traceback" in err and "--debug" not in err, err
    assert "Traceback (most recent call last)" in out + err and "TypeError" in out + err


def test_a_bad_input_is_reported_as_an_input_option(tmp_path, capsys):
    code, _, _ = build(tmp_path, LINEAR.replace("2,4", "2,x4"), warnings_are_errors=False)
    err = capsys.readouterr().err
    assert code != 0
    assert "bad :input: '2,x4'" in err and "Example: :input: 1,3,224,224" in err and "--input" not in err, err


def test_an_unknown_overlay_is_an_option_error_naming_the_choices(tmp_path, capsys):
    code, _, _ = build(tmp_path, LINEAR + "   :overlay: frozen hot\n", warnings_are_errors=False)
    err = capsys.readouterr().err
    assert code != 0
    assert re.search(r"index\.rst:5: ERROR: shapetrace: torch.nn:Linear: :overlay: unknown overlay 'hot'; "
                     r"choose from cut, groups, frozen, heat, diff", err), err


@requires_dot
@pytest.mark.parametrize("overlay,works_for", [("cut", "nn.Sequential(body, head)"), ("groups", "tabular-model"),
                                               ("diff", "shapetrace diff A B")])
def test_an_overlay_a_directive_cannot_configure_says_what_works_in_a_directive(tmp_path, capsys, overlay,
                                                                                works_for):
    code, _, _ = build(tmp_path, LINEAR + f"   :overlay: {overlay}\n", warnings_are_errors=False)
    err = capsys.readouterr().err
    assert code != 0
    assert f":overlay: {overlay} needs" in err and works_for in err and "options=" not in err, err


@pytest.mark.parametrize("option,problem", [(":depth: abc", ":depth: 'abc' is not a whole number"),
                                            (":layout: sideways", ":layout: \"sideways\" unknown"),
                                            (":train: yes", ":train: no argument is allowed")])
def test_a_bad_option_value_fails_the_build_without_w_naming_the_option(tmp_path, capsys, option, problem):
    code, _, _ = build(tmp_path, LINEAR + f"   {option}\n", warnings_are_errors=False)
    err = capsys.readouterr().err
    assert code != 0  # like every failure of the directive, not a docutils warning that exits 0 without -W
    assert "ERROR: shapetrace: torch.nn:Linear: " + problem in err, err


def test_a_multi_line_failure_keeps_its_line_breaks_on_the_page(tmp_path):
    code, html, _ = build(tmp_path, LINEAR.replace("2,4", "2,5") + "   :allow-failure:\n")
    assert code == 0
    block = re.search(r'class="[^"]*shapetrace-error[^"]*".*?<pre>(.*?)</pre>', html, re.DOTALL)
    assert block, html
    lines = re.sub(r"<[^>]+>", "", block.group(1)).splitlines()
    assert lines[0].startswith("input: ") and lines[1].startswith("error: RuntimeError: mat1 and mat2"), lines


LABELLED = """
See :ref:`the figure <linear-fig>` and :ref:`the named one <named-fig>`.

.. _linear-fig:
""" + LINEAR + """
""" + LINEAR + "   :name: named-fig\n"


def test_a_label_before_the_directive_and_its_name_option_are_the_figures_ids(tmp_path):
    code, html, _ = build(tmp_path, LABELLED)
    assert code == 0
    page = parse(html)
    assert {"#linear-fig", "#named-fig"} <= {a.get("href") for a in page.links}
    assert [f["id"] for f in page.figures] == ["linear-fig", "named-fig"]  # as an image's label lands on it


def test_latex_labels_a_figure_once_for_a_label_before_it_and_once_for_its_name(tmp_path):
    code, _, out = build(tmp_path, LABELLED, builder="latex")
    tex = next(out.glob("*.tex")).read_text()
    assert code == 0
    assert tex.count(r"\label{\detokenize{index:linear-fig}}") == 1, tex
    assert tex.count(r"\label{\detokenize{index:named-fig}}") == 1, tex
    assert r"\hyperref[\detokenize{index:named-fig}]" in tex


NUMFIG = {"conf.py": "extensions = ['shapetrace.sphinxext']\nproject = 't'\nnumfig = True\n",
          "pic.svg": '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'}
# A plain `.. figure::` first: the independent oracle of how Sphinx numbers and refers to a figure.
CROSS_REFERENCED = """
See :ref:`plain-fig`, :ref:`linear-fig`, :numref:`plain-fig` and :numref:`linear-fig`.

.. _plain-fig:

.. figure:: pic.svg

   A plain figure.
""" + LINEAR + """   :name: linear-fig
   :caption: The *linear* layer with ``code``
"""


def test_a_captioned_figure_is_referred_to_by_its_caption_and_numbered_with_the_pages_figures(tmp_path):
    code, html, _ = build(tmp_path, CROSS_REFERENCED, files=NUMFIG)
    assert code == 0  # -W: no "A title or caption not found", no "undefined label"
    links = re.sub(r"<[^>]+>", "", html[html.index("<p>See"):html.index("</p>", html.index("<p>See"))])
    assert links == "See A plain figure., The linear layer with code, Fig. 1 and Fig. 2.", links


def test_a_captions_inline_markup_is_shown_as_a_figures_is(tmp_path):
    code, html, _ = build(tmp_path, CROSS_REFERENCED, files=NUMFIG)
    assert code == 0
    caption = re.search(r'<figure class="shapetrace-figure[^"]*" id="linear-fig">.*?<figcaption>(.*?)</figcaption>',
                        html, re.DOTALL)
    assert caption, html
    assert '<span class="caption-number">Fig. 2 </span>' in caption.group(1), caption.group(1)
    assert "The <em>linear</em> layer with <code" in caption.group(1) and "*" not in caption.group(1)


# How each builder writes the caption's markup: as it writes a `.. figure::`'s.
CAPTION_OUT = {"latex": ("*.tex", r"The \sphinxstyleemphasis{linear} layer with \sphinxcode{\sphinxupquote{code}}"),
               "epub": ("index.xhtml", 'The <em>linear</em> layer with <code'),
               "text": ("index.txt", 'The *linear* layer with "code"')}


@pytest.mark.parametrize("builder", sorted(CAPTION_OUT))
def test_other_builders_build_a_cross_referenced_figure_and_write_its_captions_markup(tmp_path, builder):
    code, _, out = build(tmp_path, CROSS_REFERENCED, builder=builder, files=NUMFIG, warnings_are_errors=False)
    pattern, caption = CAPTION_OUT[builder]
    page = next(out.glob(pattern))
    assert code == 0
    assert caption in page.read_text(), page.read_text()
    if builder == "epub":
        ET.parse(page)  # well-formed XHTML


LOOP_THEN_MISMATCH = """
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(3, 2)

    def forward(self, x):
        for _ in range(3):
            x = self.a(x)
        return self.b(x)


def build():
    return Net()
"""
# Besides what the .tex declares itself (\\sphinxDUC), LaTeX's utf8 input with T1/TS1 fonts typesets these.
LATEX_UTF8 = set("—…×·–")


@requires_dot
def test_latex_output_holds_only_characters_pdflatex_can_typeset(tmp_path):
    body = (".. shapetrace:: models.py:build\n   :input: 2,4\n   :depth: 1\n   :allow-failure:\n\n"
            + LINEAR + "   :depth: 0\n   :show: diagram table\n   :caption: Linear.\n")
    code, _, out = build(tmp_path, body, builder="latex", warnings_are_errors=False,
                         files={"models.py": LOOP_THEN_MISMATCH})
    tex = next(out.glob("*.tex")).read_text()
    assert code == 0
    declared = {chr(int(h, 16)) for h in re.findall(r"\\sphinxDUC\{([0-9A-Fa-f]{4})\}", tex)} | LATEX_UTF8
    assert "x b " in tex and "RuntimeError" in tex  # the failed call's row, its mark in ASCII
    assert sorted({c for c in tex if ord(c) > 127} - declared) == []
