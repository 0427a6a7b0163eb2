"""A real notebook, executed by a Jupyter kernel: a trace shows its HTML table, a diagram and a flow chart SVG."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import require, requires_dot

nbformat = require("nbformat")
nbclient = require("nbclient")
require("ipykernel")

CELLS = [
    "import torch\nfrom torch import nn\nimport shapetrace",
    ("model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))\n"
     "t = shapetrace.trace(model, torch.randn(2, 3, 8, 8), ops=True)\nt"),
    "t.diagram()",
    "t.flow()",
    "t.table(depth=0)",
]


def outputs_of(nb, index: int) -> dict:
    outs = [o for o in nb.cells[index].outputs if o.output_type in ("execute_result", "display_data")]
    assert len(outs) == 1, nb.cells[index].outputs
    return outs[0]["data"]


@requires_dot
def test_a_notebook_shows_the_table_and_the_diagram(tmp_path, monkeypatch):
    import shapetrace

    # The kernel is another process: it must import this shapetrace, wherever the tests import it from.
    here = str(Path(shapetrace.__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])))
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
                            ).execute()
    table = outputs_of(nb, 1)
    assert '<table class="shapetrace">' in table["text/html"] and "(2,8,6,6)" in table["text/html"]
    assert "Conv2d" in table["text/plain"]  # the terminal-style table for front ends without HTML
    diagram = outputs_of(nb, 2)
    assert "image/svg+xml" in diagram and "<svg" in diagram["image/svg+xml"] and "Conv2d" in diagram["image/svg+xml"]
    assert "image/svg+xml" in outputs_of(nb, 3)
    assert "text/html" in outputs_of(nb, 4) and "(2,4)" in outputs_of(nb, 4)["text/html"]
    nbformat.validate(nb)
