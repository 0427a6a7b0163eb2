"""``shapetrace render TRACE.json --plot FILE``: a saved profile is plotted as ``profile --plot`` plots it, with no
model and no torch run; a trace that lacks what the plot shows is refused before anything is written."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import shapetrace
from shapetrace.cli import main
from shapetrace.renderers.plots import render_plot


def _model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.Linear(8 * 12 * 12, 4))


@pytest.fixture(scope="module")
def saved_profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("profile") / "profile.json"
    path.write_text(shapetrace.profile(_model().eval(), torch.randn(1, 3, 16, 16), device="cpu", warmup=0,
                                       repeat=2).to_json())
    return path


def _texts(svg: str) -> list[str]:
    return [t.text or "" for t in ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}text")]


def test_render_plots_a_saved_profile_as_the_python_api_does(saved_profile: Path, tmp_path: Path) -> None:
    plot = tmp_path / "top.svg"
    r = CliRunner().invoke(main, ["render", str(saved_profile), "--plot", str(plot), "--top", "3",
                                  "-o", str(tmp_path / "table.txt")])
    assert r.exit_code == 0, r.output
    expected = render_plot(shapetrace.load(saved_profile), "bars", format="svg", top=3)
    assert _texts(plot.read_text()) == _texts(expected)  # same labels and numbers (ids in the SVG vary)
    assert (tmp_path / "table.txt").read_text().startswith("Sequential")


def test_render_plot_writes_png_by_suffix(saved_profile: Path, tmp_path: Path) -> None:
    plot = tmp_path / "flow.png"
    r = CliRunner().invoke(main, ["render", str(saved_profile), "--plot", str(plot), "--plot-kind", "flow"])
    assert r.exit_code == 0, r.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_time_plot_of_a_trace_without_timings_is_refused_before_writing(tmp_path: Path) -> None:
    saved = tmp_path / "trace.json"
    saved.write_text(shapetrace.trace(_model(), torch.randn(1, 3, 16, 16)).to_json())
    out, plot = tmp_path / "table.txt", tmp_path / "bars.svg"
    r = CliRunner().invoke(main, ["render", str(saved), "--plot", str(plot), "-o", str(out)])
    assert r.exit_code == 2
    assert "has no timings" in r.output and "flow" in r.output
    assert not out.exists() and not plot.exists()


def test_flow_plot_needs_shapes_only(tmp_path: Path) -> None:
    saved = tmp_path / "trace.json"
    saved.write_text(shapetrace.trace(_model(), torch.randn(1, 3, 16, 16)).to_json())
    r = CliRunner().invoke(main, ["render", str(saved), "--plot", str(tmp_path / "flow.svg"), "--plot-kind", "flow"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "flow.svg").exists()


def test_plot_file_must_be_svg_or_png_and_not_the_trace_read(saved_profile: Path) -> None:
    r = CliRunner().invoke(main, ["render", str(saved_profile), "--plot", str(saved_profile)])
    assert r.exit_code == 2 and "must end in .svg or .png" in r.output
    assert shapetrace.load(saved_profile).timing  # untouched


def test_plot_file_that_is_the_trace_read_under_another_suffix_is_refused(saved_profile: Path, tmp_path: Path) -> None:
    disguised = tmp_path / "profile.png"  # a trace saved under a picture's name: --plot would write over it
    disguised.write_bytes(saved_profile.read_bytes())
    r = CliRunner().invoke(main, ["render", str(disguised), "--plot", str(disguised)])
    assert r.exit_code == 2 and "is the input file" in r.output
    assert shapetrace.load(disguised).timing  # untouched


def test_plot_options_without_plot_are_noted_not_silently_ignored(saved_profile: Path) -> None:
    r = CliRunner().invoke(main, ["render", str(saved_profile), "--plot-kind", "flops", "--top", "3"])
    assert r.exit_code == 0
    assert "note: --plot-kind, --top only affect --plot, which was not given" in r.stderr
