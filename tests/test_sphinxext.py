"""The ``.. shapetrace::`` directive: a real Sphinx build of a page that embeds a diagram and a table."""

from __future__ import annotations

import textwrap

from conftest import require, requires_dot

sphinx_build = require("sphinx.cmd.build")


def build(tmp_path, body: str) -> tuple[int, str]:
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    (src / "conf.py").write_text('extensions = ["shapetrace.sphinxext"]\nproject = "t"\n')
    (src / "index.rst").write_text("Models\n======\n\n" + textwrap.dedent(body))
    code = sphinx_build.build_main(["-b", "html", "-q", "-W", str(src), str(out)])
    html = (out / "index.html").read_text() if (out / "index.html").exists() else ""
    return code, html


@requires_dot
def test_page_embeds_the_diagram_and_the_table_of_the_current_model(tmp_path):
    code, html = build(tmp_path, """
        .. shapetrace:: torch.nn:Linear
           :arg: in_features=4
                 out_features=3
           :input: 2,4
           :show: both
           :caption: A single linear layer.
    """)
    assert code == 0
    assert "<svg" in html and "Linear" in html
    assert "2×3" in html  # the diagram's output shape
    assert "(2,3)" in html  # the text table's output shape
    assert "A single linear layer." in html


@requires_dot
def test_an_exhibit_uses_its_own_inputs_options_and_caption(tmp_path):
    code, html = build(tmp_path, """
        .. shapetrace:: create-head-default
           :caption: exhibit
    """)
    assert code == 0
    assert "<svg" in html and "AdaptiveConcatPool2d" in html
    assert "546,304" in html or "fastai" in html  # the exhibit's caption


def test_a_model_that_cannot_load_fails_the_build_with_the_reason(tmp_path, capsys):
    code, _ = build(tmp_path, """
        .. shapetrace:: camvd-unet
    """)
    assert code != 0
    assert "Did you mean 'camvid-unet'" in capsys.readouterr().err
