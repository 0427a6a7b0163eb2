"""Where a failing ``.. shapetrace::`` directive points: the file and line it is written on (an included file
too), and, for a forward that raised, the place in the model's code, with ``sphinx-build -v`` printing the
whole traceback. The page names files relative to the source folder (installed packages' files as their
imports name them) and leaves the -v advice to the build log, which keeps full paths."""

from __future__ import annotations

import re
import sysconfig

from test_sphinxext import build

from shapetrace.sphinx_page_text import for_readers

BAD = ".. shapetrace:: torch.nn:Linear\n   :depth: abc\n"  # fails before anything is traced: a quick build


def test_a_failure_in_an_included_file_or_after_an_include_names_the_file_and_line_it_is_written_on(tmp_path,
                                                                                                 capsys):
    page = "Para.\n\n.. include:: part.inc\n\nAfter the include.\n\n" + BAD  # BAD on line 10, after the heading
    code, _, _ = build(tmp_path, page, warnings_are_errors=False, files={"part.inc": "Included.\n\n" + BAD})
    err = capsys.readouterr().err
    src = tmp_path / "src"
    assert code != 0
    assert f"{src / 'part.inc'}:3: ERROR: shapetrace: torch.nn:Linear: :depth:" in err, err
    assert f"{src / 'index.rst'}:10: ERROR: shapetrace: torch.nn:Linear: :depth:" in err, err
    summary = err[err.index("2 directive(s) failed"):]  # the summary at the end names the same places
    assert f"{src / 'part.inc'}:3: :depth:" in summary and f"{src / 'index.rst'}:10: :depth:" in summary, summary


RAISES_IN_FORWARD = """
from torch import nn


def deep(x):
    raise ValueError("raised deep in my forward helper")


class M(nn.Module):
    def __init__(self):
        super().__init__()
        self.l = nn.Linear(4, 4)

    def forward(self, x):
        return deep(self.l(x))


def build():
    return M()
"""


def test_a_forward_that_raises_says_where_in_the_models_code_and_v_prints_the_traceback(tmp_path, capsys):
    code, html, _ = build(tmp_path, ".. shapetrace:: models/m.py:build\n   :input: 2,4\n", verbose=True,
                          warnings_are_errors=False, files={"models/m.py": RAISES_IN_FORWARD})
    out, err = capsys.readouterr()
    model = tmp_path / "src" / "models" / "m.py"
    assert code != 0
    assert "ERROR: shapetrace: models/m.py:build: the forward failed in (root) (M)" in err, err
    assert f"raised at {model}:6 in deep (run sphinx-build with -v for the whole traceback)" in err, err
    # -v: the whole traceback, down to the model's own frames, as `shapetrace trace --debug` prints it
    log = out + err
    assert "Traceback (most recent call last)" in log and f'File "{model}", line 15, in forward' in log, log
    assert f'File "{model}", line 6, in deep' in log and "ValueError: raised deep in my forward helper" in log
    # The page: the model's file relative to the source folder, no path of the machine that built it.
    assert "raised at models/m.py:6 in deep" in html and str(tmp_path) not in html, html


def test_a_page_names_a_missing_model_file_and_the_folders_searched_relative_to_the_source_folder(tmp_path,
                                                                                                  capsys):
    code, html, _ = build(tmp_path, ".. shapetrace:: nowhere/m.py:build\n", warnings_are_errors=False)
    err = capsys.readouterr().err
    assert code != 0 and str(tmp_path / "src") in err  # the build log: full paths
    assert re.search(r"no model file .nowhere/m\.py.: looked beside the document and in the source folder \(\.\)",
                     html), html
    assert str(tmp_path) not in html


MISMATCH = """
from torch import nn


class M(nn.Module):
    def __init__(self):
        super().__init__()
        self.l = nn.Linear(4, 4)

    def forward(self, x):
        return self.l(x)


def build():
    return M()
"""


def test_an_allowed_failure_names_files_outside_the_source_folder_without_the_builders_paths(tmp_path, capsys):
    # docs/ beside src/, as most projects have them; the forward fails inside torch (a shape mismatch).
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "models.py").write_text(MISMATCH)
    code, html, _ = build(tmp_path, ".. shapetrace:: ../pkg/models.py:build\n   :input: 2,5\n   :allow-failure:\n")
    err = capsys.readouterr().err
    assert code == 0, err
    assert "raised at ../pkg/models.py:11 in forward, inside linear.py's forward" in html, html
    assert str(tmp_path) not in html and "site-packages" not in html and "/lib/python" not in html, html


def test_the_page_leaves_the_v_advice_to_the_build_log(tmp_path, capsys):
    code, html, _ = build(tmp_path, ".. shapetrace:: models/m.py:build\n   :input: 2,4\n   :allow-failure:\n",
                          files={"models/m.py": RAISES_IN_FORWARD}, verbose=True)
    log = "".join(capsys.readouterr())
    assert code == 0
    assert "raised at models/m.py:6 in deep" in html and "sphinx-build" not in html, html
    assert "run sphinx-build with -v for the whole traceback" in log, log


def test_an_allowed_failure_inside_an_installed_package_names_the_file_as_its_import_does(tmp_path):
    code, html, _ = build(tmp_path, ".. shapetrace:: torch.nn:Linear\n   :arg: in_features=4\n         out_features=3\n"
                                    "   :input: 2,5\n   :allow-failure:\n")
    assert code == 0
    assert re.search(r"raised at torch/nn/modules/linear\.py:\d+ in forward", html), html
    assert str(tmp_path) not in html and "site-packages" not in html, html


def test_a_path_outside_the_project_and_the_installed_packages_is_shown_by_its_file_name_alone(tmp_path):
    src = tmp_path / "project" / "docs"
    text = f"raised at /opt/elsewhere/tools/helper.py:3 in run, reading {src}/data/x.csv, from {src}"
    assert for_readers(text, src) == "raised at helper.py:3 in run, reading data/x.csv, from ."


def test_slashes_in_an_error_that_are_no_paths_are_kept_as_the_error_wrote_them(tmp_path):
    src = tmp_path / "docs"
    for text in ["error: RuntimeError: <script>alert(1)</script> & \"q\"",
                 "error: ValueError: expected </s> token at the end",
                 "error: ValueError: ratio must be 1 /2 or 1 /4, got 3",
                 "error: RuntimeError: stride (/2) not supported, nor size (H/2/2) nor a /2/4 split",
                 "error: KeyError: 'encoder/layer.0/weight' missing",
                 "error: ValueError: pattern \"b c (h p1) -> b (h p1 c)\" /axes mismatch, see https://x.org/a/b.html",
                 "error: OSError: cannot write to /tmp alone"]:
        assert for_readers(text, src) == text


def test_real_paths_in_an_error_are_shortened_wherever_they_stand(tmp_path):
    src = tmp_path / "docs"
    installed = sysconfig.get_paths()["purelib"]
    text = (f"open '{tmp_path}/build/out.json' failed (at {installed}/torch/nn/modules/linear.py:125), "
            '"/home/me/data/x.csv": ' r"C:\Users\me\proj\m.py:12, in </opt/tools/run.py>")
    assert for_readers(text, src) == ("open '../build/out.json' failed (at torch/nn/modules/linear.py:125), "
                                      '"x.csv": m.py:12, in <run.py>')


SCRIPT_ERROR = """
from torch import nn


class M(nn.Module):
    def forward(self, x):
        raise RuntimeError("<script>alert(1)</script> expected </s> token, ratio 1 /2, stride (/2)")


def build():
    return M()
"""


def test_the_page_shows_a_failures_text_with_its_slashes_escaped_not_rewritten(tmp_path):
    code, html, _ = build(tmp_path, ".. shapetrace:: models/m.py:build\n   :input: 2,4\n   :allow-failure:\n",
                          files={"models/m.py": SCRIPT_ERROR})
    assert code == 0
    shown = "&lt;script&gt;alert(1)&lt;/script&gt; expected &lt;/s&gt; token, ratio 1 /2, stride (/2)"
    error = html[html.index("shapetrace-error"):]
    assert f"RuntimeError: {shown}" in error, error
    assert "<script>alert" not in html and str(tmp_path) not in html


def test_the_advice_on_the_page_keeps_the_commands_quotes_and_dashes_as_typed(tmp_path):
    code, html, _ = build(tmp_path, ".. shapetrace:: torch.nn:Linear\n   :arg: in_features=4\n         out_features=3\n"
                                    "   :input: 2,x4\n   :allow-failure:\n")
    assert code == 0
    assert re.search(r"\(see (&#39;|')shapetrace trace --help(&#39;|') for the grammar\)", html), html
    assert not {"\u2013", "\u2018", "\u2019"} & set(html), html  # no en dash, no curly quotes


WARNS = """
import warnings

import torch
from torch import nn


class M(nn.Module):
    def __init__(self):
        super().__init__()
        self.l = nn.Linear(4, 4)

    def forward(self, x):
        with torch.no_grad():
            self.l.weight.mul_(1.0)
        warnings.warn("my model's own warning")
        return self.l(x)


def build():
    return M()
"""


def test_warnings_while_tracing_are_sphinx_warnings_at_the_directives_line_and_W_fails_the_build(tmp_path, capsys):
    body = "Text.\n\n.. shapetrace:: models/m.py:build\n   :input: 2,4\n"  # the directive on line 6
    code, _, _ = build(tmp_path, body, files={"models/m.py": WARNS})
    err = capsys.readouterr().err
    where = f"{tmp_path / 'src' / 'index.rst'}:6: WARNING: shapetrace: models/m.py:build: "
    assert code != 0, err
    assert where + "the forward changed parameters in place: l.weight [shapetrace.trace]" in err, err
    assert where + "my model's own warning (UserWarning at m.py:16) [shapetrace.trace]" in err, err
    assert "docutils" not in err, err


def test_a_warning_while_tracing_leaves_a_build_without_W_passing(tmp_path, capsys):
    code, html, _ = build(tmp_path, ".. shapetrace:: models/m.py:build\n   :input: 2,4\n",
                          warnings_are_errors=False, files={"models/m.py": WARNS})
    assert code == 0 and "shapetrace-figure" in html
    assert "in place: l.weight [shapetrace.trace]" in capsys.readouterr().err


def test_paths_with_spaces_are_shortened_whole_not_cut_at_the_space(tmp_path):
    src = tmp_path / "docs"
    assert for_readers("raised at /home/john smith/proj/m.py:3 in forward", src) == "raised at m.py:3 in forward"
    assert for_readers(r"raised at C:\Users\John Smith\proj\models\m.py:16", src) == "raised at m.py:16"
    assert for_readers(r"cannot open C:\Program Files\proj\m.py", src) == "cannot open m.py"
    assert for_readers(r"cannot open 'C:\Program Files (x86)\my proj\m.py'", src) == "cannot open 'm.py'"
    assert for_readers('no file "/opt/my tools/run.py"', src) == 'no file "run.py"'


def test_a_path_with_spaces_in_the_source_folder_is_made_relative_to_it(tmp_path):
    src = tmp_path / "my project" / "docs"
    assert for_readers(f"raised at {src}/models/m.py:3 and {src.parent}/pkg/a.py:4", src) == (
        "raised at models/m.py:3 and ../pkg/a.py:4")


def test_text_that_is_not_clearly_a_path_of_the_building_machine_is_kept_as_written(tmp_path):
    src = tmp_path / "docs"
    for text in ["No such file or directory: '~/data/weights.pt'",
                 "weights at ~/proj/w.pt",
                 "GET /api/v1/models returned 404",
                 "an /a/b problem, axes /x/y and /z",
                 f"see file://{src}/m.py and https://example.org/home/me/x.py",
                 "mount point /mnt missing; /home/me has no write access",
                 "expected dims N/C/H/W got N/H/W, ratio 3/4/5, km/h/s",
                 r"cannot open C:\Program Files (x86)\proj\m.py"]:  # out of quotes: where it ends is unclear
        assert for_readers(text, src) == text, text
