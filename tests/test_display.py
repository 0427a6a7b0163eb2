"""``trace.table()``, ``trace.diagram()``, ``trace.flow()``: objects that display in Jupyter and save to files."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
import torch
from conftest import requires_dot
from torch import nn

import shapetrace
from shapetrace.renderers.table import render_text


@pytest.fixture(scope="module")
def small_trace():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    return shapetrace.trace(model, torch.randn(1, 3, 16, 16), ops=True)


def svg_root(text: str) -> ET.Element:
    root = ET.fromstring(text)
    assert root.tag.endswith("svg")
    return root


def test_table_shows_as_html_and_prints_as_text(small_trace):
    t = small_trace.table(depth=1)
    bundle = t._repr_mimebundle_()
    assert '<table class="shapetrace">' in bundle["text/html"]
    assert str(t) == bundle["text/plain"] == render_text(small_trace, depth=1)


def test_table_saves_by_suffix(small_trace, tmp_path):
    assert small_trace.table().save(tmp_path / "t.html").read_text().startswith("<!DOCTYPE html>")
    assert "| Conv2d |" in small_trace.table().save(tmp_path / "t.md").read_text().replace("`", "")
    assert "Conv2d" in small_trace.table().save(tmp_path / "t.csv").read_text()
    with pytest.raises(ValueError, match="suffixes"):
        small_trace.table().save(tmp_path / "t.xyz")


@requires_dot
def test_diagram_shows_as_svg_in_jupyter(small_trace):
    d = small_trace.diagram(layout="lr")
    bundle = d._repr_mimebundle_()
    root = svg_root(bundle["image/svg+xml"])
    assert root.get("viewBox")
    assert d._repr_svg_() == bundle["image/svg+xml"]
    assert "Conv2d" in bundle["image/svg+xml"]


@requires_dot
def test_diagram_saves_svg_png_and_pdf(small_trace, tmp_path):
    d = small_trace.diagram()
    svg_root(d.save(tmp_path / "d.svg").read_text())
    assert d.save(tmp_path / "d.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert d.save(tmp_path / "d.pdf").read_bytes()[:5] == b"%PDF-"
    assert "digraph" in d.save(tmp_path / "d.dot").read_text()


def test_diagram_without_graphviz_says_how_to_install_it(small_trace, monkeypatch):
    import shutil

    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "dot" else real(name, *a, **k))
    bundle = small_trace.diagram()._repr_mimebundle_()
    assert "image/svg+xml" not in bundle and "Graphviz" in bundle["text/plain"]


def test_flow_shows_as_svg_and_saves_png(small_trace, tmp_path):
    f = small_trace.flow()
    svg_root(f._repr_mimebundle_()["image/svg+xml"])
    assert f.save(tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"


def test_a_failed_save_leaves_no_file(small_trace, tmp_path, monkeypatch):
    from shapetrace.renderers import display

    monkeypatch.setattr(display.Table, "_render", lambda self, fmt: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        small_trace.table().save(tmp_path / "t.html")
    assert list(tmp_path.iterdir()) == []


def _umask_must_not_change(monkeypatch):
    """Make ``os.umask`` fail: it is process-wide, so changing it (even briefly) races with other threads."""
    import os

    def refuse(mask):
        raise AssertionError("os.umask changed the process umask")

    monkeypatch.setattr(os, "umask", refuse)


def test_save_gives_a_new_file_the_umask_mode_without_changing_the_umask(small_trace, tmp_path, monkeypatch):
    import os
    import stat

    old = os.umask(0o027)
    try:
        _umask_must_not_change(monkeypatch)
        saved = small_trace.table().save(tmp_path / "t.txt")
    finally:
        monkeypatch.undo()
        os.umask(old)
    assert stat.S_IMODE(saved.stat().st_mode) == 0o640


def test_save_through_a_symbolic_link_writes_the_file_it_points_to_and_keeps_the_link(small_trace, tmp_path):
    import stat

    (tmp_path / "runs").mkdir()
    target, link = tmp_path / "runs" / "42.txt", tmp_path / "latest.txt"
    target.write_text("old")
    target.chmod(0o640)
    link.symlink_to("runs/42.txt")
    small_trace.table().save(link)
    assert link.is_symlink() and "Conv2d" in target.read_text()
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["42.txt", "latest.txt", "runs"]


def test_saving_onto_a_folder_names_the_users_path_not_a_temporary_file(small_trace, tmp_path):
    folder = tmp_path / "d.txt"
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match="d.txt'.*folder") as caught:
        small_trace.table().save(folder)
    assert ".d.txt." not in str(caught.value)
    assert list(folder.iterdir()) == []


def test_saving_where_nothing_can_be_written_names_the_users_path(small_trace):
    with pytest.raises(OSError, match=r"cannot save '/proc/x\.txt'") as caught:
        small_trace.table().save("/proc/x.txt")
    assert ".x.txt." not in str(caught.value)


def test_format_names_are_accepted_in_any_case(small_trace, tmp_path):
    t = small_trace.table()
    assert t.render("TEXT") == t.render("text")
    assert t.save(tmp_path / "f.html", format="HTML").read_text().startswith("<!DOCTYPE html>")


def test_save_expands_a_home_folder_as_a_shell_would(small_trace, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    saved = small_trace.table().save("~/out/t.txt")
    assert saved == tmp_path / "out" / "t.txt" and saved.read_text().startswith("Sequential")
    assert not (tmp_path / "~").exists()
    lines = shapetrace.trace(nn.Linear(4, 2), torch.randn(1, 4), lines=True).lines()
    assert lines.save("~/lines.HTML", format="HTML").read_text().startswith("<!DOCTYPE html>")


@pytest.mark.parametrize(("make", "typo"), [
    (lambda t, **k: t.table(**k), "dept"), (lambda t, **k: t.table(**k), "widht"),
    (lambda t, **k: t.table(**k), "style"), (lambda t, **k: t.diagram(**k), "dept"),
    (lambda t, **k: t.flow(**k), "dept"),
])
def test_an_option_a_display_does_not_take_is_refused_at_the_call(small_trace, make, typo):
    with pytest.raises(TypeError, match=f"unknown option '{typo}'; its options are depth|title"):
        make(small_trace, **{typo: 0})


@pytest.mark.parametrize(("options", "error", "message"), [
    ({"width": -5}, ValueError, "width must be None or 0 .* >= 40, got -5"),
    ({"width": 3}, ValueError, "width must be .*, got 3"),
    ({"depth": "1"}, TypeError, "depth must be None or a whole number >= 0, got '1'"),
    ({"depth": -1}, ValueError, "depth must be .*, got -1"),
    ({"view": "bogus"}, ValueError, "view must be one of 'calls', 'modules', got 'bogus'"),
])
def test_a_table_option_with_a_bad_value_is_refused_at_the_call_naming_what_is_allowed(small_trace, options,
                                                                                        error, message):
    with pytest.raises(error, match=message):
        small_trace.table(**options)


def test_a_diagram_or_flow_option_with_a_bad_value_is_refused_at_the_call(small_trace):
    with pytest.raises(ValueError, match="layout must be one of 'tb', 'lr', 'u', got 'sideways'"):
        small_trace.diagram(layout="sideways")
    with pytest.raises(TypeError, match="max_labels must be a whole number >= 0"):
        small_trace.flow(max_labels=2.5)


def test_a_table_without_a_width_limit_is_still_allowed(small_trace):
    assert str(small_trace.table(width=0)) == str(small_trace.table(width=None))


@pytest.mark.parametrize(("options", "error", "message"), [
    ({"overlays": ["bogus"]}, ValueError, "unknown overlay 'bogus'; choose from cut, groups, frozen, heat, diff"),
    ({"overlays": ["groups"]}, ValueError, r"the 'groups' overlay needs options=\{'param_groups'"),
    ({"overlays": "diff"}, ValueError, r"the 'diff' overlay needs options=\{'diff'"),
    ({"options": {"fold": 5}}, TypeError, r"options\['fold'\] must be a list of module or class names.*got 5"),
    ({"options": {"fold": "Conv2d"}}, TypeError, r"options\['fold'\] must be a list"),
    ({"options": {"title": 3}}, TypeError, r"options\['title'\] must be a string, got 3"),
    ({"options": {"heat": "hot"}}, ValueError, r"options\['heat'\] must be one of 'time', 'memory', 'activations'"),
    ({"options": {"param_groups": {"g": 1}}, "overlays": ["groups"]}, TypeError,
     r"options\['param_groups'\]\['g'\] must be a list"),
    ({"options": ["fold"]}, TypeError, "options must be a dict"),
])
def test_a_diagram_overlay_or_option_it_cannot_draw_is_refused_at_the_call(small_trace, options, error, message):
    with pytest.raises(error, match=message):
        small_trace.diagram(**options)


def test_the_overlays_a_diagram_can_draw_are_still_taken_at_the_call(small_trace):
    small_trace.diagram(overlays=["frozen", "heat"], options={"fold": ["Conv2d"], "title": "t", "heat": "activations"})
    small_trace.diagram(overlays="groups", options={"param_groups": {"head": ["4"]}, "model_meta": {}})


@requires_dot
def test_a_diagram_that_cannot_be_drawn_says_why_once_and_is_not_drawn_again(small_trace, monkeypatch):
    """IPython asks for the bundle, then for ``_repr_svg_`` when the bundle has no SVG: dot runs once (a dot
    that gives up after minutes must not run twice), the reason shows as text, and ``render`` raises it."""
    from IPython.core.formatters import DisplayFormatter

    from shapetrace.renderers import diagram

    runs = []

    def dot_that_gives_up(*args, **kwargs):
        runs.append(args)
        raise diagram.subprocess.TimeoutExpired("dot", diagram.DOT_TIMEOUT_S)

    monkeypatch.setattr(diagram.subprocess, "run", dot_that_gives_up)
    shown, _ = DisplayFormatter().format(small_trace.diagram())
    assert len(runs) == 1
    assert set(shown) == {"text/plain"}
    assert "could not be drawn: Graphviz's dot gave up" in shown["text/plain"]
    d = small_trace.diagram()
    for _ in range(2):
        with pytest.raises(RuntimeError, match="gave up"):
            d.render("svg")
    assert len(runs) == 2 and d._repr_svg_() is None


def test_a_flow_title_with_control_characters_still_makes_well_formed_svg(small_trace):
    svg = str(small_trace.flow(title="T\x01\x1b[31m<&>\u202e\ud800").render("svg"))
    title = svg_root(svg).find("{http://www.w3.org/2000/svg}title").text
    assert title == "T\\x01\\x1b[31m<&>\\u202e\\ud800"


@requires_dot
def test_a_diagram_title_with_control_characters_makes_well_formed_svg(small_trace):
    svg = str(small_trace.diagram(options={"title": "T\x01\x1b[31m<&>\u202e"}).render("svg"))
    texts = [t.text for t in svg_root(svg).iter("{http://www.w3.org/2000/svg}text")]
    assert "T\\x01\\x1b[31m<&>\\u202e" in texts


def test_traces_in_a_list_show_one_line_each_while_a_trace_alone_shows_its_table(small_trace):
    from IPython.lib.pretty import pretty

    assert pretty([small_trace, small_trace]) == f"[{small_trace!r},\n {small_trace!r}]"
    assert pretty({"a": small_trace}) == f"{{'a': {small_trace!r}}}"
    assert pretty(small_trace).splitlines()[0] == str(small_trace).splitlines()[0]
    assert "\n" in pretty(small_trace)


@requires_dot
def test_a_diagram_saved_without_graphviz_saves_once_graphviz_is_installed(small_trace, monkeypatch, tmp_path):
    """A missing ``dot`` is not the picture's fault: the same diagram draws once Graphviz is on ``PATH``."""
    import shutil

    from shapetrace.renderers.diagram import GraphvizNotFound

    real = shutil.which
    d = small_trace.diagram()
    with monkeypatch.context() as m:
        m.setattr(shutil, "which", lambda name, *a, **k: None if name == "dot" else real(name, *a, **k))
        with pytest.raises(GraphvizNotFound):
            d.save(tmp_path / "d.svg")
    assert d.save(tmp_path / "d.svg").read_text().lstrip().startswith(("<?xml", "<svg"))
    assert "image/svg+xml" in d._repr_mimebundle_()


def test_a_diagram_takes_any_mapping_of_options_and_any_collection_of_names(small_trace):
    from types import MappingProxyType

    frozen = MappingProxyType({"fold": ("Conv2d",), "param_groups": MappingProxyType({"head": frozenset({"4"})})})
    d = small_trace.diagram(overlays={"frozen", "groups"}, options=frozen)
    assert "digraph" in d.render("dot")
    small_trace.diagram(overlays=("cut",), options={"cut": {"body": ("0", "1"), "head": {"4"}}}).render("dot")


def test_a_loaded_traces_saved_render_hints_draw_its_diagram_and_arguments_given_win(small_trace, tmp_path):
    """An exhibit's trace saves its render hints (``meta.options``: a cut, a layout) for ``shapetrace render``;
    ``Trace.diagram()`` of the loaded file uses them too, and what the call gives wins."""
    data = small_trace.to_dict()
    data["meta"]["options"] = {"cut": {"body": ["0", "1"], "head": ["2", "3", "4"]}, "layout": "lr"}
    path = tmp_path / "exhibit.json"
    path.write_text(json.dumps(data))
    loaded = shapetrace.load(path)
    hinted = loaded.diagram(overlays=["cut"]).render("dot")
    assert 'rankdir="LR"' in hinted and "body: 0, 1" in hinted
    assert 'rankdir="TB"' in loaded.diagram(layout="tb", overlays=["cut"]).render("dot")
    assert "body: 0" in loaded.diagram(overlays=["cut"], options={"cut": {"body": ["0"]}}).render("dot")


def test_a_diagram_drawn_with_its_saved_hints_alone_checks_them_once(small_trace, monkeypatch):
    """``Trace.diagram()`` with no options of its own draws the saved hints as they are: they are checked once
    (blaming the file), not a second time as the diagram's options."""
    from shapetrace.renderers import diagram, display

    checked = []
    real = diagram.check_options

    def counting(*args, **kwargs):
        checked.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(diagram, "check_options", counting)
    monkeypatch.setattr(display, "check_options", counting)
    hints = {"cut": {"body": ["0", "1"], "head": ["2", "3", "4"]}, "overlays": ["cut"]}
    monkeypatch.setitem(small_trace.meta, "options", hints)
    assert "body: 0, 1" in small_trace.diagram().render("dot")
    assert len(checked) == 1
    small_trace.diagram(options={"title": "given"})  # options of its own: checked as the diagram's too
    assert len(checked) == 3
