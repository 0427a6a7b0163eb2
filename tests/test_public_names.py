"""The public names of ../shared/design.md are a contract: scripts and docs outside the package rely on them."""

from __future__ import annotations

import dataclasses
import json

import torch
from click.testing import CliRunner
from torch import nn

import shapetrace
from shapetrace.cli import main


def test_module_level_api():
    for name in ("trace", "Tracer", "profile", "load", "Trace", "Call", "TensorMeta"):
        assert hasattr(shapetrace, name), name


def test_dir_lists_every_public_name_even_those_loaded_on_first_use():
    """``dir`` (what tab completion reads) names what ``__all__`` exports, before torch is imported."""
    import subprocess
    import sys

    script = "import shapetrace, sys, json; print(json.dumps([dir(shapetrace), 'torch' in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    names, torch_loaded = json.loads(out.stdout)
    assert set(shapetrace.__all__) <= set(names)
    assert not torch_loaded
    assert set(shapetrace.__all__) <= set(dir(shapetrace))


def test_trace_call_and_tensor_fields():
    t = shapetrace.trace(nn.Sequential(nn.Linear(3, 2)), torch.randn(4, 3))
    assert isinstance(t.calls, list) and t.calls[0].id == 0
    assert (t.model.cls, t.model.params, t.model.trainable_params) == ("Sequential", 8, 8)
    fields = {f.name for f in dataclasses.fields(shapetrace.Call)}
    assert {"id", "module", "cls", "call_index", "parent", "depth", "inputs", "kwargs", "outputs", "params",
            "trainable_params", "error", "timing", "flops"} <= fields
    root, lin = t.calls
    assert (root.module, root.parent, lin.module, lin.parent, lin.depth, lin.call_index) == ("", None, "0", 0, 1, 0)
    assert root.error is None and root.timing is None and root.flops is None
    out = lin.outputs
    assert (out.shape, out.dtype, out.device) == ((4, 2), "float32", "cpu")
    assert isinstance(out.shape, tuple)


def test_json_top_level_and_tensor_form_and_cli_output(tmp_path):
    path = tmp_path / "t.json"
    res = CliRunner().invoke(main, ["trace", "torch.nn:Linear", "--arg", "in_features=3", "--arg",
                                    "out_features=2", "--input", "4,3", "--format", "json", "-o", str(path)])
    assert res.exit_code == 0, res.output
    data = json.loads(path.read_text())
    assert data["format"] == "shapetrace.trace/2" and {"model", "calls"} <= data.keys()
    assert {"shape": [4, 2], "dtype": "float32", "device": "cpu"}.items() <= data["calls"][0]["outputs"].items()
    assert shapetrace.load(path).to_json() == path.read_text()


def test_shapetraces_warnings_can_be_filtered_by_their_public_category():
    import warnings

    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())

    def warned(ignore: bool) -> list:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            if ignore:
                warnings.filterwarnings("ignore", category=shapetrace.ShapetraceWarning)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                shapetrace.trace(model, torch.randn(2, 4), device="meta")  # warns: meta takes no part in autocast
        return [w for w in seen if issubclass(w.category, UserWarning)]

    assert issubclass(shapetrace.ShapetraceWarning, UserWarning)
    assert [w.category for w in warned(ignore=False)] == [shapetrace.ShapetraceWarning]
    assert warned(ignore=True) == []
