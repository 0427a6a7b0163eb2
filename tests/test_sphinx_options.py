"""The ``.. shapetrace::`` directive's MODEL and option values: a missing or bad value fails the build like any
other failure of the directive (an error naming the document, the line and the option; a non-zero exit without
``-W``), in reST and in MyST; ``:width:`` keeps the command line's rule for ``--width``, MODEL takes spaces around
its colon as the command line does, and ``:caption: exhibit`` takes an exhibit's own caption, failed or not,
and on a model that is no exhibit says so."""

from __future__ import annotations

import html
import re

from conftest import require
from test_sphinxext import LINEAR, build

from shapetrace.gallery.exhibits import get_exhibit

# One directive per option, each given no value, one after the other: the line each starts on is known.
NO_VALUES = ("show", "depth", "width", "layout", "style", "input", "arg", "overlay", "caption", "alt", "name")


def test_an_option_given_no_value_is_an_error_naming_page_line_and_option(tmp_path, capsys):
    body = "".join(f".. shapetrace:: torch.nn:Linear\n   :{name}:\n\n" for name in NO_VALUES)
    code, _, _ = build(tmp_path, body, warnings_are_errors=False)
    err = capsys.readouterr().err
    assert code != 0
    assert "Traceback" not in err and "Error in \"shapetrace\" directive" not in err, err  # ours, not docutils'
    for i, name in enumerate(NO_VALUES):
        line = 4 + 3 * i  # after the page's three-line heading
        assert re.search(rf"index\.rst:{line}: ERROR: shapetrace: torch\.nn:Linear: :{name}: needs a value: "
                         r"[^\n]+\. Give one, or leave the option out\.", err), (name, err)
    assert f"{len(NO_VALUES)} directive(s) failed" in err


def test_a_myst_option_given_no_value_is_an_error_too(tmp_path, capsys):
    require("myst_parser")
    body = "".join(f"```{{shapetrace}} torch.nn:Linear\n---\n{name}:\ninput: 2,4\n---\n```\n\n"
                   for name in ("show", "depth", "width"))
    code, html, _ = build(tmp_path, body, page="index.md", extensions=("myst_parser",), warnings_are_errors=False)
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err and "myst.directive_option" not in err, err
    for name in ("show", "depth", "width"):
        assert f"ERROR: shapetrace: torch.nn:Linear: :{name}: needs a value" in err, (name, err)
    assert "shapetrace-figure" not in html  # no figure drawn as if the option were not there


def test_whole_number_options_say_what_is_wrong_in_plain_words_and_width_keeps_the_cli_rule(tmp_path, capsys):
    code, html, _ = build(tmp_path, LINEAR + "   :depth: abc\n\n" + LINEAR + "   :depth: -1\n\n"
                          + LINEAR + "   :width: 12\n\n" + LINEAR + "   :width: wide\n\n"
                          + LINEAR + "   :width: 0\n   :show: text\n", warnings_are_errors=False)
    err = capsys.readouterr().err
    assert code != 0
    assert "invalid literal" not in err and "base 10" not in err, err
    assert ":depth: 'abc' is not a whole number" in err
    assert ":depth: -1 is below 0; give 0 or more" in err
    # The words of `shapetrace trace --width 12`: 0 (no limit) or 40 columns and up, in the directive too.
    assert ":width: 12: the width must be 0 (no limit) or at least 40 columns." in err
    assert ":width: 'wide' is not a whole number; give 0 (no limit) or at least 40 columns" in err
    assert "4 directive(s) failed" in err  # :width: 0 is no limit, as --width 0 is
    text = re.search(r'<pre class="shapetrace-text">(.*?)</pre>', html, re.DOTALL)
    assert text and "(2,3)" in text.group(1)


def test_a_model_spec_may_have_spaces_around_its_colon_as_on_the_command_line(tmp_path):
    code, html, _ = build(tmp_path, ".. shapetrace:: models/m.py : build\n   :input: 2,4\n   :show: table\n",
                          files={"models/m.py": "from torch import nn\n\n\ndef build():\n    return nn.Linear(4, 3)\n"})
    assert code == 0  # -W: not even a warning
    assert '<table class="shapetrace">' in html and "(2,3)" in html


def test_caption_exhibit_on_a_model_that_is_no_exhibit_warns_that_there_is_no_caption(tmp_path, capsys):
    code, html, _ = build(tmp_path, LINEAR + "   :show: table\n   :caption: exhibit\n", warnings_are_errors=False)
    err = capsys.readouterr().err
    assert code == 0 and "(2,3)" in html  # the figure is drawn; only its caption is missing
    assert re.search(r"index\.rst:5: WARNING: shapetrace: torch\.nn:Linear: :caption: exhibit shows a gallery "
                     r"exhibit's own caption, and 'torch\.nn:Linear' is not an exhibit", err), err


def test_allow_failure_given_a_value_allows_nothing_and_fails_the_build_naming_it(tmp_path, capsys):
    # `:allow-failure: yes` is refused (a flag takes no value), so it cannot also excuse the page's failure.
    code, html, _ = build(tmp_path, LINEAR + "   :allow-failure: yes\n", warnings_are_errors=False)
    err = capsys.readouterr().err
    assert code != 0, err
    assert ":allow-failure:" in err and "1 directive(s) failed" in err, err
    assert "shapetrace-figure" not in html


def test_caption_exhibit_on_an_allowed_failure_of_an_exhibit_is_the_exhibits_own_caption(tmp_path):
    code, page, _ = build(tmp_path, ".. shapetrace:: create-head-default\n   :input: 2,100,7,7\n   :show: table\n"
                                    "   :caption: exhibit\n   :allow-failure:\n")
    assert code == 0
    captions = [html.unescape(c) for c in re.findall(r'<figcaption>\s*<p><span class="caption-text">(.*?)</span>',
                                                     page, re.DOTALL)]
    assert captions == [get_exhibit("create-head-default").caption], captions


def test_caption_exhibit_on_an_allowed_failure_of_no_exhibit_warns_and_shows_no_caption(tmp_path, capsys):
    code, page, _ = build(tmp_path, LINEAR.replace("2,4", "2,5") + "   :caption: exhibit\n   :allow-failure:\n",
                          warnings_are_errors=False)
    err = capsys.readouterr().err
    assert code == 0 and "shapetrace-figure" in page  # the partial table is shown
    assert "<figcaption>" not in page and "is not an exhibit" in err, err


def test_a_name_given_no_value_on_an_allowed_failure_is_the_failure_shown(tmp_path):
    code, page, _ = build(tmp_path, LINEAR + "   :name:\n   :allow-failure:\n")
    assert code == 0 and ":name: needs a value" in page
