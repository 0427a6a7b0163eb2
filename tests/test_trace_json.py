"""The JSON form of a trace: exact round trips, a documented format, rendering without torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import torch
import torchvision
from hypothesis import given
from hypothesis import strategies as st

import shapetrace
from shapetrace.tracer.records import FORMAT, Opaque, Struct, TensorMeta, value_from_json, value_to_json

tensors = st.builds(
    TensorMeta,
    shape=st.lists(st.integers(0, 4096), max_size=5).map(tuple),
    dtype=st.sampled_from(["float32", "int64", "bool", "bfloat16"]),
    device=st.sampled_from(["cpu", "cuda:0", "meta"]),
    tid=st.one_of(st.none(), st.integers(0, 10**6)),
    requires_grad=st.booleans(),
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.text(max_size=8),
                    st.floats(allow_nan=False), st.builds(Opaque, st.text(max_size=5), st.text(max_size=10)))
values = st.recursive(
    st.one_of(tensors, scalars),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=8), inner, max_size=4),
        st.builds(Struct, st.text(min_size=1, max_size=8), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    ),
    max_leaves=20,
)


@given(values)
def test_any_value_tree_round_trips_through_json_text(value):
    text = json.dumps(value_to_json(value), allow_nan=False)
    assert value_from_json(json.loads(text)) == value


def test_dict_that_looks_like_a_tensor_is_not_read_back_as_one():
    value = {"shape": [1, 2], "dtype": "x", "device": "y"}
    assert value_from_json(json.loads(json.dumps(value_to_json(value)))) == value


def test_trace_json_names_the_format_and_uses_plain_tensor_records():
    trace = shapetrace.trace(torch.nn.Linear(3, 2), torch.randn(4, 3))
    data = json.loads(trace.to_json())
    assert data["format"] == FORMAT == "shapetrace.trace/1"
    assert data["calls"][0]["outputs"]["shape"] == [4, 2]
    assert data["calls"][0]["outputs"]["dtype"] == "float32"
    assert data["model"]["params"] == 8


def test_same_trace_gives_the_same_bytes():
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(1, 3, 32, 32)
    assert shapetrace.trace(model, x, ops=True).to_json() == shapetrace.trace(model, x, ops=True).to_json()


def test_load_reads_a_file_path_and_json_text(tmp_path):
    trace = shapetrace.trace(torch.nn.LSTM(3, 5), torch.randn(2, 1, 3))
    path = tmp_path / "t.json"
    path.write_text(trace.to_json())
    assert shapetrace.load(path) == trace
    assert shapetrace.load(str(path)) == trace
    assert shapetrace.load(trace.to_json()) == trace


def test_saved_trace_loads_and_renders_where_torch_cannot_be_imported(tmp_path):
    trace = shapetrace.trace(torchvision.models.resnet18(weights=None).eval(), torch.randn(1, 3, 32, 32), ops=True)
    path = tmp_path / "resnet18.json"
    path.write_text(trace.to_json())
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any import of torch now fails
        import shapetrace
        from shapetrace.renderers import table
        t = shapetrace.load({str(path)!r})
        print(len(t.calls), t.model.params)
        text = table.render(t, "text")
        assert "layer4" in text
        assert "torch" not in sys.modules or sys.modules["torch"] is None
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[:2] == [str(len(trace.calls)), str(trace.model.params)]
