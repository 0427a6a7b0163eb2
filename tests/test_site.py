"""The gallery site: a page and files per exhibit in the chapter's order, the index, the photo pictures, a
failing exhibit that does not stop the build, parallel and repeatable builds."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import pytest
from conftest import process_running, requires_dot

import shapetrace
from shapetrace.gallery import exhibits as registry
from shapetrace.gallery.site import GalleryBuildFailed, build_site

SMALL = "tabular-model"


def _require(name: str) -> None:
    if name not in registry.exhibit_names():
        pytest.skip(f"the exhibit {name!r} is not registered yet")


def _ids(page: str) -> list[str]:
    from html.parser import HTMLParser

    ids: list[str] = []

    class Ids(HTMLParser):
        def handle_starttag(self, tag, attrs):
            ids.extend(v for k, v in attrs if k == "id")

    Ids().feed(page)
    return ids


def test_build_writes_one_page_per_exhibit_with_its_files_and_an_index(tmp_path):
    _require(SMALL)
    written = build_site(tmp_path, [SMALL], jobs=1)
    names = {p.name for p in written}
    assert {f"{SMALL}.json", f"{SMALL}.txt", f"{SMALL}.md", f"{SMALL}.html", "index.html", "index.md"} <= names
    tr = shapetrace.load(str(tmp_path / f"{SMALL}.json"))
    assert tr.calls and not tr.failed
    ex = registry.get_exhibit(SMALL)
    page = (tmp_path / f"{SMALL}.html").read_text()
    assert ex.title in page and ex.question in page and '<table class="shapetrace">' in page
    for f in (f"{SMALL}.json", f"{SMALL}.svg", f"{SMALL}.txt", f"{SMALL}.md"):
        assert f'href="{f}" download' in page
    index = (tmp_path / "index.html").read_text()
    assert f'<li id="{SMALL}"><a href="{SMALL}.html">' in index and ex.question in index
    assert f"({SMALL}.html)" in (tmp_path / "index.md").read_text()


@requires_dot
def test_the_page_inlines_the_diagram_with_prefixed_ids_and_links_the_full_size_svg(tmp_path):
    _require(SMALL)
    build_site(tmp_path, [SMALL], jobs=1)
    svg = (tmp_path / f"{SMALL}.svg").read_text()
    assert 'id="graph0"' in svg  # the standalone file keeps Graphviz's ids
    page = (tmp_path / f"{SMALL}.html").read_text()
    assert '<figure class="diagram"><svg' in page and "<?xml" not in page and "<!--" not in page
    assert f'id="{SMALL}-graph0"' in page and 'id="graph0"' not in page
    assert f'href="{SMALL}.svg">Open the diagram full size' in page
    ids = _ids(page)
    assert len(ids) == len(set(ids)) > 10


def test_pages_and_index_follow_the_chapter_and_link_each_other(tmp_path):
    names = ["awd-lstm-classifier", "create-head-default", SMALL, "create-head-avg-pool"]
    for n in names:
        _require(n)
    build_site(tmp_path, names, jobs=1)
    index = (tmp_path / "index.html").read_text()
    chapter = [n for n in registry.exhibit_names() if n in names]
    assert chapter == ["create-head-default", "create-head-avg-pool", "awd-lstm-classifier", SMALL]  # the book's order
    positions = [index.index(f'<li id="{n}">') for n in chapter]
    assert positions == sorted(positions)
    assert index.index("<h2>Computer vision</h2>") < index.index("<h2>NLP</h2>") < index.index("<h2>Tabular</h2>")
    first = (tmp_path / "create-head-default.html").read_text()
    assert 'href="create-head-avg-pool.html" rel="next"' in first and 'rel="prev"' not in first
    last = (tmp_path / f"{SMALL}.html").read_text()
    assert 'href="awd-lstm-classifier.html" rel="prev"' in last and 'rel="next"' not in last


def test_every_exhibit_says_which_question_of_the_chapter_it_answers():
    for name in registry.exhibit_names():
        q = registry.get_exhibit(name).question
        assert q.endswith("?") and len(q) > 20, name
    assert [s for s, _ in registry.SECTIONS] == ["Computer vision", "U-Net", "NLP", "Tabular"]  # chapter 15's order
    assert {n for _, names in registry.SECTIONS for n in names} == set(registry.exhibit_names())


def test_the_site_fetches_nothing_from_the_network(tmp_path):
    import re

    _require(SMALL)
    build_site(tmp_path, [SMALL], jobs=1)
    for page in ("index.html", f"{SMALL}.html"):
        text = (tmp_path / page).read_text()
        assert not re.search(r'(src|href)="(https?:)?//', text), page
        assert "@import" not in text and "<link" not in text


def test_the_same_build_writes_the_same_bytes(tmp_path):
    _require(SMALL)
    names = [SMALL, "nearest-upsample-photo"]
    build_site(tmp_path / "a", names, jobs=2)
    build_site(tmp_path / "b", names, jobs=1)
    a = {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()}
    b = {p.name: p.read_bytes() for p in (tmp_path / "b").iterdir()}
    assert a.keys() == b.keys() and len(a) > 10
    assert [n for n in a if a[n] != b[n]] == []


def test_a_failing_exhibit_is_reported_by_name_while_the_others_build(tmp_path, monkeypatch):
    _require(SMALL)
    registry.exhibit_names()  # load the registry before adding to it

    def broken():
        raise ValueError("this exhibit is broken on purpose")

    bad = registry.Exhibit(name="broken", title="Broken", caption="Fails.", build=broken,
                           inputs=lambda: ((), {}))
    monkeypatch.setitem(registry.EXHIBITS, "broken", bad)
    seen: list[tuple[str, bool]] = []
    with pytest.raises(GalleryBuildFailed) as e:
        build_site(tmp_path, ["broken", SMALL], jobs=2, progress=lambda n, ok, msg: seen.append((n, ok)))
    assert set(e.value.failures) == {"broken"} and "broken on purpose" in e.value.failures["broken"]
    assert sorted(seen) == [("broken", False), (SMALL, True)]
    assert (tmp_path / f"{SMALL}.html").exists() and (tmp_path / "index.html").exists()
    assert "broken on purpose" in (tmp_path / "broken.html").read_text()
    assert "(failed)" in (tmp_path / "index.html").read_text()


def test_cli_gallery_build_exits_1_naming_the_failing_exhibit(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from shapetrace.cli import main

    registry.exhibit_names()
    bad = registry.Exhibit(name="broken", title="Broken", caption="Fails.",
                           build=lambda: (_ for _ in ()).throw(ValueError("nope")), inputs=lambda: ((), {}))
    monkeypatch.setitem(registry.EXHIBITS, "broken", bad)
    r = CliRunner().invoke(main, ["gallery", "build", "-o", str(tmp_path), "--only", f"broken,{SMALL}", "-j", "1"])
    assert r.exit_code == 1 and "FAIL broken: " in r.stderr and "nope" in r.stderr
    assert (tmp_path / f"{SMALL}.html").exists()


def test_cli_gallery_build_only_builds_the_named_exhibits_quietly_off_a_terminal(tmp_path):
    from click.testing import CliRunner

    from shapetrace.cli import main

    _require(SMALL)
    r = CliRunner().invoke(main, ["gallery", "build", "-o", str(tmp_path), "--only", SMALL, "--only",
                                  "create-head-default", "--jobs", "2"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in tmp_path.glob("*.html")) == ["create-head-default.html", "index.html",
                                                                f"{SMALL}.html"]
    assert r.stderr.startswith("wrote ")  # no progress bar when stderr is not a terminal: the summary line only
    assert r.stdout == ""  # the summary reports what was done: not output


def test_cli_gallery_build_refuses_an_unknown_exhibit(tmp_path):
    from click.testing import CliRunner

    from shapetrace.cli import main

    _require(SMALL)
    r = CliRunner().invoke(main, ["gallery", "build", "-o", str(tmp_path), "--only", "tabular-modle"])
    assert r.exit_code == 2 and "tabular-model" in r.output


def test_the_unet_gets_a_shape_flow_chart_whose_spatial_size_makes_a_u(tmp_path):
    import xml.etree.ElementTree as ET

    from shapetrace.renderers.plots import flow_points

    _require("camvid-unet")
    build_site(tmp_path, ["camvid-unet"], jobs=1)
    flow = tmp_path / "camvid-unet.flow.svg"
    ET.fromstring(flow.read_text())  # well-formed SVG
    page = (tmp_path / "camvid-unet.html").read_text()
    assert '<img class="flow" src="camvid-unet.flow.svg"' in page and 'href="camvid-unet.flow.svg" download' in page
    assert "(camvid-unet.flow.svg)" in (tmp_path / "index.md").read_text()
    # the chart plots these points: the spatial size falls to the bottleneck and rises back to the input's
    spatial = [s for _, _, s in flow_points(shapetrace.load(str(tmp_path / "camvid-unet.json")))]
    low = spatial.index(min(spatial))
    assert 0 < low < len(spatial) - 1 and spatial[0] > spatial[low] < spatial[-1]


def test_an_exhibit_of_a_few_layers_gets_no_shape_flow_chart(tmp_path):
    from shapetrace.gallery.site import MIN_FLOW_POINTS
    from shapetrace.renderers.plots import flow_points

    _require("transposed-conv-photo")
    build_site(tmp_path, ["transposed-conv-photo"], jobs=1)
    assert len(flow_points(shapetrace.load(str(tmp_path / "transposed-conv-photo.json")))) < MIN_FLOW_POINTS
    assert not (tmp_path / "transposed-conv-photo.flow.svg").exists()
    assert 'id="flow"' not in (tmp_path / "transposed-conv-photo.html").read_text()


def test_the_photo_exhibits_show_the_photo_and_the_output_at_their_real_sizes(tmp_path):
    from PIL import Image

    for n in ("nearest-upsample-photo", "transposed-conv-photo"):
        _require(n)
    build_site(tmp_path, ["nearest-upsample-photo", "transposed-conv-photo"], jobs=1)

    def size(f: str) -> tuple[int, int]:
        with Image.open(tmp_path / f) as im:
            return im.size

    up = "nearest-upsample-photo"
    assert size(f"{up}.input.png") == (512, 600) and size(f"{up}.output.png") == (1024, 1200)
    with Image.open(tmp_path / f"{up}.output.png") as out, Image.open(tmp_path / f"{up}.input.png") as inp:
        o, i = out.convert("RGB"), inp.convert("RGB")
        # nearest-neighbour: each input pixel is a 2x2 block of four equal output pixels
        assert all(o.getpixel((2 * x + dx, 2 * y + dy)) == i.getpixel((x, y))
                   for x, y in ((0, 0), (100, 200), (511, 599), (256, 300)) for dx in (0, 1) for dy in (0, 1))
    page = (tmp_path / f"{up}.html").read_text()
    assert f'src="{up}.output.png" width="1024" height="1200"' in page
    assert f'class="zoom" src="{up}.zoom-output.png"' in page and "(1, 3, 1200, 1024)" in page
    tc = "transposed-conv-photo"
    assert size(f"{tc}.input.png") == (846, 1000) and size(f"{tc}.output.png") == (848, 1002)
    page = (tmp_path / f"{tc}.html").read_text()
    assert "1000+2 = 1002 rows, 846+2 = 848 columns" in page and "(1, 6, 1002, 848)" in page


def test_the_index_shows_a_small_copy_of_each_photo_loaded_lazily_with_its_size_set(tmp_path):
    import re

    from PIL import Image

    names = ["nearest-upsample-photo", "transposed-conv-photo", SMALL]
    for n in names:
        _require(n)
    build_site(tmp_path, names, jobs=1)
    index = (tmp_path / "index.html").read_text()
    for n in names[:2]:
        thumb = tmp_path / f"{n}.thumb.jpg"
        assert thumb.stat().st_size < 64_000  # the full output picture is 0.7 to 1 MB
        with Image.open(thumb) as im:
            assert im.width <= 540 and im.height <= 340
            assert f'src="{n}.thumb.jpg" width="{im.width}" height="{im.height}"' in index
        assert f"{n}.output.png" not in index
    imgs = re.findall(r"<img [^>]*>", index)
    assert len(imgs) == len(names) and all('loading="lazy"' in i and 'width="' in i for i in imgs), imgs


@requires_dot
def test_each_inline_diagram_is_one_image_named_for_a_screen_reader(tmp_path):
    _require(SMALL)
    build_site(tmp_path, [SMALL], jobs=1)
    page = (tmp_path / f"{SMALL}.html").read_text()
    ex = registry.get_exhibit(SMALL)
    assert f'<figure class="diagram"><svg role="img" aria-label="The diagram of {ex.title}: ' in page


def test_a_comparison_page_has_the_exhibits_header_downloads_and_a_scrolling_box_for_its_table(tmp_path):
    from shapetrace.gallery import site
    from shapetrace.gallery.exhibits.diffs import DIFF_EXHIBITS

    first, second = list(DIFF_EXHIBITS.values())[:2]
    files = [f"{first.name}.{k}" for k in ("html", "md", "txt")]
    page = site._diff_page(first, '<table class="st-diff"></table>', files, None, None, second)
    assert '<div class="table-wrap st-diff-wrap"><table class="st-diff">' in page
    assert '<a href="index.html">shapetrace gallery</a> › Comparisons' in page
    assert f'href="{second.name}.html" rel="next"' in page
    assert f'href="{first.name}.md" download' in page and f'href="{first.name}.txt" download' in page


def _page_text(page: str) -> str:
    """What a reader sees of a gallery page: the text outside tags, scripts, styles and inline SVG."""
    import html
    import re

    page = re.sub(r"<(svg|script|style)\b.*?</\1>", " ", page, flags=re.DOTALL)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


def test_the_photo_pages_give_every_size_as_height_by_width_like_torch(tmp_path):
    """Prose and picture captions name sizes in one order, height × width as in (N, C, H, W), and say so."""
    import re

    names = ("nearest-upsample-photo", "transposed-conv-photo")
    for n in names:
        _require(n)
    build_site(tmp_path, list(names), jobs=1)
    up, tc = (_page_text((tmp_path / f"{n}.html").read_text()) for n in names)
    assert "the photo, 600×512 pixels (height × width, the order of torch's (N, C, H, W)), becomes 1200×1024" in up
    assert "the 1000×846 crop (height × width, the order of torch's (N, C, H, W)) becomes 1002×848" in tc
    for text, tensors in ((up, ["(1, 3, 600, 512)", "(1, 3, 1200, 1024)"]),
                          (tc, ["(1, 3, 1000, 846)", "(1, 6, 1002, 848)"])):
        captions = re.findall(r"(\d+)×(\d+) pixels \(height × width\), the tensor (\(\d+, \d+, \d+, \d+\))", text)
        assert [tensor for _, _, tensor in captions] == tensors  # the input's and the output's picture
        assert all(tensor.endswith(f", {h}, {w})") for h, w, tensor in captions)
    for width_first in ("512×600", "512x600", "1024×1200", "1024x1200", "846×1000", "846x1000", "848×1002"):
        assert width_first not in up + tc


def test_a_whole_rebuild_removes_what_only_the_last_build_wrote_and_nothing_else(tmp_path, monkeypatch):
    from shapetrace.gallery import site

    _require(SMALL)
    (tmp_path / "renamed-exhibit.json").write_text("{}")  # written by the last build, not by this one
    (tmp_path / "notes.txt").write_text("mine")  # never written by a build
    (tmp_path / site.MANIFEST).write_text("renamed-exhibit.json\nindex.html\n")
    monkeypatch.setattr(site, "exhibit_names", lambda: [SMALL])  # "the whole gallery" is one exhibit here
    written = build_site(tmp_path, jobs=1)
    assert not (tmp_path / "renamed-exhibit.json").exists()
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert (tmp_path / site.MANIFEST).read_text().split() == sorted(p.name for p in written)


def test_a_partial_build_keeps_the_other_exhibits_files(tmp_path):
    from shapetrace.gallery import site

    _require(SMALL)
    (tmp_path / "other.json").write_text("{}")
    (tmp_path / site.MANIFEST).write_text("other.json\n")
    build_site(tmp_path, [SMALL], jobs=1)
    assert (tmp_path / "other.json").exists() and "other.json" in (tmp_path / site.MANIFEST).read_text()


# A build whose main process alone is interrupted (``kill -INT``, ``timeout -s INT``, a CI cancel) just as it
# forks its last worker: the moment that used to leave the workers idle and the main process waiting forever.
_INTERRUPTED_AS_THE_LAST_WORKER_STARTS = """
import os, signal, sys
from shapetrace.cli import main

pids, workers = sys.argv[1], int(sys.argv[2])
real_fork, forked = os.fork, []

def fork():
    pid = real_fork()
    if pid:
        forked.append(pid)
        with open(pids, "a") as f:
            f.write(f"{pid}\\n")
        if len(forked) == workers:
            os.kill(os.getpid(), signal.SIGINT)
    return pid

os.fork = fork
main(sys.argv[3:], prog_name="shapetrace")
"""


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads the processes' states in /proc")
def test_an_interrupt_of_the_main_process_alone_stops_the_build_and_its_workers_promptly(tmp_path):
    import signal
    import subprocess
    import time

    _require(SMALL)
    script, pids, out = tmp_path / "interrupted.py", tmp_path / "pids", tmp_path / "site"
    script.write_text(_INTERRUPTED_AS_THE_LAST_WORKER_STARTS)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    build = subprocess.Popen([sys.executable, str(script), str(pids), "2", "gallery", "build", "-o", str(out),
                              "--only", f"{SMALL},create-head-default", "-j", "2"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        _, err = build.communicate(timeout=30)
        deadline = time.monotonic() + 5
        workers = [int(p) for p in pids.read_text().split()]
        while any(process_running(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(workers) == 2 and not any(process_running(p) for p in workers)
    finally:  # never leave a hung build or its workers behind (the workers hold its output pipes open)
        for p in (int(p) for p in pids.read_text().split()) if pids.exists() else ():
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        build.kill()
        build.communicate()
    # the status and the one line of an interrupt, as trace, lines and profile give (not click's "Aborted!")
    assert build.returncode == 130 and err.count("Interrupted:") == 1 and "Aborted!" not in err, err
    assert "Traceback" not in err
    assert not list(out.glob(".*.part"))  # no write left half-done


@pytest.mark.parametrize("only", ["", ",", " , "])
def test_cli_gallery_build_refuses_an_only_that_names_no_exhibit(tmp_path, only):
    from click.testing import CliRunner

    from shapetrace.cli import main

    r = CliRunner().invoke(main, ["gallery", "build", "-o", str(tmp_path), "--only", only])
    assert r.exit_code == 2 and "--only: no exhibit named" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_building_an_empty_list_of_exhibits_is_an_error_not_the_whole_gallery(tmp_path):
    with pytest.raises(ValueError, match="no exhibits named"):
        build_site(tmp_path, [], jobs=1)
    assert list(tmp_path.iterdir()) == []


def _site(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_rebuilding_one_exhibit_of_a_site_leaves_the_site_as_it_was(tmp_path):
    names = ["create-head-default", "create-head-avg-pool", SMALL]
    for n in names:
        _require(n)
    build_site(tmp_path, names, jobs=1)
    before = _site(tmp_path)
    build_site(tmp_path, ["create-head-avg-pool"], jobs=1)
    assert _site(tmp_path) == before  # the index still lists all three; the page keeps its links both ways


def test_an_exhibit_built_into_a_site_joins_its_index_and_its_neighbours_links(tmp_path):
    names = ["create-head-default", "create-head-avg-pool", SMALL]
    for n in names:
        _require(n)
    build_site(tmp_path / "at-once", names, jobs=1)
    build_site(tmp_path / "added", [names[0], names[2]], jobs=1)
    build_site(tmp_path / "added", [names[1]], jobs=1)
    assert _site(tmp_path / "added") == _site(tmp_path / "at-once")
    first = (tmp_path / "added" / f"{names[0]}.html").read_text()
    assert f'href="{names[1]}.html" rel="next"' in first


def test_an_exhibit_built_into_a_site_of_an_older_build_joins_its_index_from_the_manifest(tmp_path):
    from shapetrace.gallery import site

    names = ["create-head-default", SMALL, "nearest-upsample-photo"]
    for n in names:
        _require(n)
    build_site(tmp_path, names, jobs=1)
    index = (tmp_path / "index.html").read_bytes(), (tmp_path / "index.md").read_bytes()
    (tmp_path / site.ENTRIES).unlink()  # an older build kept its manifest only
    build_site(tmp_path, [SMALL], jobs=1)
    assert ((tmp_path / "index.html").read_bytes(), (tmp_path / "index.md").read_bytes()) == index


def test_cli_gallery_build_refuses_to_overwrite_files_no_gallery_build_wrote(tmp_path):
    from click.testing import CliRunner

    from shapetrace.cli import main

    _require(SMALL)
    (tmp_path / "index.html").write_text("my home page")
    (tmp_path / f"{SMALL}.txt").write_text("my notes")
    r = CliRunner().invoke(main, ["gallery", "build", "-o", str(tmp_path), "--only", SMALL])
    assert r.exit_code == 2 and f"it holds index.html, {SMALL}.txt, which the build would overwrite" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.html", f"{SMALL}.txt"]
    assert (tmp_path / "index.html").read_text() == "my home page"

