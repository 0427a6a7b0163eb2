"""The gallery site: files per exhibit, the index pages, and a failing exhibit that does not stop the build."""

from __future__ import annotations

import pytest
from conftest import requires_dot

import shapetrace
from shapetrace.gallery import exhibits as registry
from shapetrace.gallery.site import GalleryBuildFailed, build_site

SMALL = "tabular-model"


def _require(name: str) -> None:
    if name not in registry.exhibit_names():
        pytest.skip(f"the exhibit {name!r} is not registered yet")


def test_build_writes_tables_json_and_index(tmp_path):
    _require(SMALL)
    written = build_site(tmp_path, [SMALL])
    names = {p.name for p in written}
    assert {f"{SMALL}.json", f"{SMALL}.txt", f"{SMALL}.md", "index.html", "index.md"} <= names
    tr = shapetrace.load(str(tmp_path / f"{SMALL}.json"))
    assert tr.calls and not tr.failed
    index = (tmp_path / "index.html").read_text()
    ex = registry.get_exhibit(SMALL)
    assert f'id="{SMALL}"' in index and '<table class="shapetrace">' in index
    assert ex.title.split(":")[0] in index
    assert f"{SMALL}.md" in (tmp_path / "index.md").read_text()


@requires_dot
def test_build_embeds_the_diagram_when_the_renderer_exists(tmp_path):
    _require(SMALL)
    build_site(tmp_path, [SMALL])
    svg = (tmp_path / f"{SMALL}.svg").read_text()
    assert "<svg" in svg
    index = (tmp_path / "index.html").read_text()
    assert '<div class="diagram"><svg' in index and "<?xml" not in index


def test_a_failing_exhibit_does_not_stop_the_build(tmp_path, monkeypatch):
    _require(SMALL)
    registry.exhibit_names()  # load the registry before adding to it

    def broken():
        raise ValueError("this exhibit is broken on purpose")

    bad = registry.Exhibit(name="broken", title="Broken", caption="Fails.", build=broken,
                           inputs=lambda: ((), {}))
    monkeypatch.setitem(registry.EXHIBITS, "broken", bad)
    with pytest.raises(GalleryBuildFailed) as e:
        build_site(tmp_path, ["broken", SMALL])
    assert set(e.value.failures) == {"broken"} and "broken on purpose" in e.value.failures["broken"]
    assert (tmp_path / f"{SMALL}.txt").exists() and (tmp_path / "index.html").exists()
    assert "broken on purpose" in (tmp_path / "index.html").read_text()


def test_cli_gallery_build_exits_1_when_an_exhibit_fails(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from shapetrace.cli import main

    registry.exhibit_names()
    bad = registry.Exhibit(name="broken", title="Broken", caption="Fails.",
                           build=lambda: (_ for _ in ()).throw(ValueError("nope")), inputs=lambda: ((), {}))
    monkeypatch.setitem(registry.EXHIBITS, "broken", bad)
    r = CliRunner().invoke(main, ["gallery", "build", "-o", str(tmp_path), "-e", "broken"])
    assert r.exit_code == 1 and "broken" in r.stderr


def test_cli_gallery_build_refuses_an_unknown_exhibit(tmp_path):
    from click.testing import CliRunner

    from shapetrace.cli import main

    _require(SMALL)
    r = CliRunner().invoke(main, ["gallery", "build", "-o", str(tmp_path), "-e", "tabular-modle"])
    assert r.exit_code == 2 and "tabular-model" in r.output


def test_the_unet_gets_a_shape_flow_chart_whose_spatial_size_makes_a_u(tmp_path):
    import xml.etree.ElementTree as ET

    from shapetrace.renderers.plots import flow_points

    _require("camvid-unet")
    build_site(tmp_path, ["camvid-unet"])
    flow = tmp_path / "camvid-unet.flow.svg"
    ET.fromstring(flow.read_text())  # well-formed SVG
    index = (tmp_path / "index.html").read_text()
    assert '<img class="flow" src="camvid-unet.flow.svg"' in index and ">flow.svg</a>" in index
    assert "](camvid-unet.flow.svg)" in (tmp_path / "index.md").read_text()
    # the chart plots these points: the spatial size falls to the bottleneck and rises back to the input's
    spatial = [s for _, _, s in flow_points(shapetrace.load(str(tmp_path / "camvid-unet.json")))]
    low = spatial.index(min(spatial))
    assert 0 < low < len(spatial) - 1 and spatial[0] > spatial[low] < spatial[-1]


def test_an_exhibit_of_a_few_layers_gets_no_shape_flow_chart(tmp_path):
    from shapetrace.gallery.site import MIN_FLOW_POINTS
    from shapetrace.renderers.plots import flow_points

    _require("transposed-conv-photo")
    build_site(tmp_path, ["transposed-conv-photo"])
    assert len(flow_points(shapetrace.load(str(tmp_path / "transposed-conv-photo.json")))) < MIN_FLOW_POINTS
    assert not (tmp_path / "transposed-conv-photo.flow.svg").exists()
    assert "Shape flow" not in (tmp_path / "index.html").read_text()


def test_a_whole_rebuild_removes_what_only_the_last_build_wrote_and_nothing_else(tmp_path, monkeypatch):
    from shapetrace.gallery import site

    _require(SMALL)
    (tmp_path / "renamed-exhibit.json").write_text("{}")  # written by the last build, not by this one
    (tmp_path / "notes.txt").write_text("mine")  # never written by a build
    (tmp_path / site.MANIFEST).write_text("renamed-exhibit.json\nindex.html\n")
    monkeypatch.setattr(site, "exhibit_names", lambda: [SMALL])  # "the whole gallery" is one exhibit here
    written = build_site(tmp_path)
    assert not (tmp_path / "renamed-exhibit.json").exists()
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert (tmp_path / site.MANIFEST).read_text().split() == sorted(p.name for p in written)


def test_a_partial_build_keeps_the_other_exhibits_files(tmp_path):
    from shapetrace.gallery import site

    _require(SMALL)
    (tmp_path / "other.json").write_text("{}")
    (tmp_path / site.MANIFEST).write_text("other.json\n")
    build_site(tmp_path, [SMALL])
    assert (tmp_path / "other.json").exists() and "other.json" in (tmp_path / site.MANIFEST).read_text()
