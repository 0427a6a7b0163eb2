"""An exhibit's parameter groups keep the splitter's order (the order gradual unfreezing walks them, and the
order the legend lists them and gives them colours) through the command line and a saved trace."""

from __future__ import annotations

import json
import re

from click.testing import CliRunner

from shapetrace.cli import main
from shapetrace.gallery.exhibits import EXHIBITS

LM = "awd-lstm-language-model"


def _legend(dot: str) -> list[str]:
    """The group names of the diagram's legend, top to bottom."""
    legend = next(line for line in dot.splitlines() if line.strip().startswith("legend "))
    return re.findall(r'BALIGN="LEFT">([^<]*?)(?:&#160;)*</TD>', legend)


def _save(tmp_path, name: str = LM):
    path = tmp_path / "t.json"
    r = CliRunner().invoke(main, ["trace", name, "--format", "json", "-o", str(path)])
    assert r.exit_code == 0, r.output
    return path


def test_a_saved_language_model_lists_its_parameter_groups_in_the_splitters_order(tmp_path):
    saved = _save(tmp_path)
    r = CliRunner().invoke(main, ["render", str(saved), "--format", "dot"])
    assert r.exit_code == 0, r.output
    assert _legend(r.output) == ["lstm 0", "lstm 1", "lstm 2", "embedding + decoder"]
    assert _legend(r.output) == list(EXHIBITS[LM].options["param_groups"])


def test_a_diagram_drawn_straight_from_the_exhibit_lists_the_groups_in_the_splitters_order(tmp_path):
    r = CliRunner().invoke(main, ["trace", LM, "--format", "dot"])
    assert r.exit_code == 0, r.output
    assert _legend(r.output) == ["lstm 0", "lstm 1", "lstm 2", "embedding + decoder"]


def test_a_trace_saved_with_its_groups_as_an_object_still_loads_and_draws_them(tmp_path):
    saved = _save(tmp_path)
    data = json.loads(saved.read_text())
    data["meta"]["options"]["param_groups"] = dict(sorted(dict(data["meta"]["options"]["param_groups"]).items()))
    saved.write_text(json.dumps(data))  # the shape a trace saved before had: an object, its keys sorted
    r = CliRunner().invoke(main, ["render", str(saved), "--format", "dot"])
    assert r.exit_code == 0, r.output
    assert _legend(r.output) == ["embedding + decoder", "lstm 0", "lstm 1", "lstm 2"]
