"""The JSON form of a trace: exact round trips, a documented format, rendering without torch."""

from __future__ import annotations

import collections
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torchvision
from hypothesis import given
from hypothesis import strategies as st

import shapetrace
from shapetrace.tracer.codec import TraceFormatError
from shapetrace.tracer.metrics import CallMemory, CallTiming, Note, TimingSummary
from shapetrace.tracer.records import FORMAT, Opaque, Struct, TensorMeta, value_from_json, value_to_json

GOLDEN = Path(__file__).parent / "golden"

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
    assert data["format"] == FORMAT == "shapetrace.trace/2"
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


# ---- format 1 -> 2 ------------------------------------------------------------------------------------
def test_a_saved_format_1_profile_loads_with_its_codes_and_notes_upgraded():
    """``tests/golden/format1-profile.json`` was written by shapetrace's format-1 writer (an LSTM tagger
    profiled on the CPU, its timer fields edited to a GPU fallback's)."""
    trace = shapetrace.load(GOLDEN / "format1-profile.json")
    assert trace.format == FORMAT
    assert isinstance(trace.timing, TimingSummary)
    assert trace.timing.kind == "cuda-events"
    assert (trace.timing.fallback, trace.timing.fallback_error) == ("profiler-error", "CUPTI_ERROR_NOT_INITIALIZED")
    rnn = trace.calls_of("rnn")
    assert [c.notes for c in rnn] == [[Note("flops-analytic", count=0)]] * 2
    assert trace.calls[1].notes == [Note("inside-compiled-region")]
    assert all(isinstance(c.timing, CallTiming) and c.timing.kind == "cuda-events" for c in trace.calls)
    assert all(isinstance(c.memory, CallMemory) for c in trace.calls)
    again = shapetrace.load(trace.to_json())
    assert again == trace and json.loads(trace.to_json())["format"] == "shapetrace.trace/2"


def test_a_format_1_profile_renders_the_same_words_as_before():
    from shapetrace.renderers.table import render_text

    text = " ".join(render_text(shapetrace.load(GOLDEN / "format1-profile.json"), width=None).split())
    assert "cuda-events (GPU span, includes idle) on cuda:0" in text
    assert "GPU timer: CUDA events instead of torch.profiler: torch.profiler failed: CUPTI_ERROR_NOT_INITIALIZED" in text
    assert "flops: analytic LSTM formula (FlopCounterMode counted 0): rnn, rnn#1" in text


# ---- typed metrics ------------------------------------------------------------------------------------
def test_call_timing_reads_as_attributes_and_as_the_documented_mapping():
    t = CallTiming(total_ms=2.0, self_ms=0.5, kind="cpu-wall")
    assert t.total_ms == t["total_ms"] == 2.0
    assert t == {"total_ms": 2.0, "self_ms": 0.5, "kind": "cpu-wall"}
    assert "p10_ms" not in t and t.get("p10_ms") is None
    with pytest.raises(KeyError, match="no field 'totl_ms'"):
        t["totl_ms"] = 1.0


def test_assigning_a_dict_to_a_metric_field_stores_the_typed_record():
    trace = shapetrace.trace(torch.nn.Linear(3, 2), torch.randn(4, 3))
    trace.calls[0].timing = {"total_ms": 1.0, "self_ms": 1.0}
    trace.calls[0].memory = {"activation_bytes": 32}
    assert isinstance(trace.calls[0].timing, CallTiming) and trace.calls[0].timing.self_ms == 1.0
    assert isinstance(trace.calls[0].memory, CallMemory)
    with pytest.raises(TypeError, match="no field 'seconds'"):
        trace.calls[0].timing = {"seconds": 1.0}
    assert shapetrace.load(trace.to_json()) == trace


def test_records_store_codes_not_sentences():
    """Every string a profile stores under timing or notes is a short code: no spaces."""
    trace = shapetrace.load(GOLDEN / "format1-profile.json")
    data = json.loads(trace.to_json())
    codes = [data["timing"]["kind"], data["timing"]["fallback"]]
    codes += [c["timing"]["kind"] for c in data["calls"]] + [n["code"] for c in data["calls"] for n in c["notes"]]
    assert codes and all(" " not in code for code in codes)


# ---- validation on load ---------------------------------------------------------------------------------
def _small_trace_data() -> dict:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    return json.loads(shapetrace.trace(model, torch.randn(2, 3), ops=True).to_json())


def _load_error(data) -> str:
    with pytest.raises(TraceFormatError) as info:
        shapetrace.load(json.dumps(data))
    return str(info.value)


def test_a_json_list_is_not_a_trace():
    assert _load_error([1, 2]) == "(top level): a trace is a JSON object, this is a list"


def test_a_parent_that_does_not_exist_is_named_by_its_path():
    data = _small_trace_data()
    data["calls"][2]["parent"] = 999
    assert _load_error(data) == "calls[2].parent: no call 999"


def test_a_field_of_the_wrong_type_is_named_by_its_path():
    data = _small_trace_data()
    data["calls"][1]["params"] = "many"
    assert _load_error(data) == "calls[1].params: expected an integer, got a string 'many'"
    data = _small_trace_data()
    data["calls"][1]["outputs"]["shape"] = [2, "x"]
    assert _load_error(data) == "calls[1].outputs.shape[1]: expected an integer, got a string 'x'"
    data = _small_trace_data()
    data["calls"] = {"0": {}}
    assert _load_error(data) == "calls: expected a list, got an object"


def test_a_missing_required_field_is_named():
    data = _small_trace_data()
    del data["calls"][0]["module"]
    assert _load_error(data) == "calls[0].module: missing"
    assert _load_error({"format": FORMAT}) == "model: missing"


def test_broken_links_between_records_are_named():
    data = _small_trace_data()
    data["calls"][1]["id"] = 7
    assert _load_error(data).startswith("calls[1].id: is 7, expected 1")
    data = _small_trace_data()
    data["failure"] = {"call": 42, "type": "RuntimeError", "message": "boom"}
    assert _load_error(data) == "failure.call: no call 42"
    data = _small_trace_data()
    data["edges"][0]["dst"] = "call:99"
    assert _load_error(data) == "edges[0].dst: no call 99"
    data = _small_trace_data()
    data["calls"][2]["depth"] = 5
    assert _load_error(data) == "calls[2].depth: is 5, expected 1 (its parent's + 1)"


def test_nesting_deep_enough_to_exhaust_python_gives_a_format_error_not_a_recursion_error():
    head = json.dumps(_small_trace_data() | {"calls": None})
    text = head.replace('"calls": null', '"calls": [' + "[" * 100_000 + "]" * 100_000 + "]")
    with pytest.raises(TraceFormatError, match="nested"):
        shapetrace.load(text)
    data = _small_trace_data()
    deep = [1]
    for _ in range(150):
        deep = [deep]
    data["calls"][0]["outputs"] = deep
    assert _load_error(data).startswith("calls[0].outputs" + "[0]" * 101 + ": nested more than 100 levels")


def test_an_unknown_format_version_says_which_versions_it_reads():
    data = _small_trace_data()
    data["format"] = "shapetrace.trace/9"
    assert "'shapetrace.trace/9' is not supported" in _load_error(data)
    assert "'shapetrace.trace/1', 'shapetrace.trace/2'" in _load_error(data)


def test_the_format_error_is_a_value_error_with_the_path_apart():
    data = _small_trace_data()
    data["calls"][2]["parent"] = 999
    with pytest.raises(ValueError) as info:
        shapetrace.load(json.dumps(data))
    assert info.value.path == "calls[2].parent" and info.value.problem == "no call 999"


def test_render_of_a_json_that_is_not_a_trace_says_where_without_a_traceback(tmp_path):
    from click.testing import CliRunner

    from shapetrace.cli import main

    data = _small_trace_data()
    data["calls"][2]["parent"] = 999
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    result = CliRunner().invoke(main, ["render", str(path)])
    assert result.exit_code == 1
    assert "calls[2].parent: no call 999" in result.output and "Traceback" not in result.output


def test_a_size_too_large_for_64_bits_is_named_rather_than_crashing_the_renderers():
    data = _small_trace_data()
    data["calls"][1]["outputs"]["shape"] = [2, 10**400]
    assert _load_error(data) == "calls[1].outputs.shape[1]: 1000000000000000000000000000000000000... does not fit in 64 bits"


def test_nan_and_infinity_in_a_timing_are_refused_as_json_cannot_write_them_back():
    data = _small_trace_data()
    data["timing"] = {"forward_ms": float("nan")}
    assert _load_error(data) == "timing.forward_ms: expected a finite number, got nan"
    data = _small_trace_data()
    data["calls"][1]["timing"] = {"self_ms": float("inf")}
    assert _load_error(data) == "calls[1].timing.self_ms: expected a finite number, got inf"


def test_nan_and_infinity_in_free_form_parts_are_refused_naming_the_field():
    data = _small_trace_data()
    data["meta"]["grad"] = float("nan")
    assert _load_error(data) == "meta.grad: expected a finite number, got nan"
    data = _small_trace_data()
    data["meta"]["options"] = {"fold": [1, float("inf")]}
    assert _load_error(data) == "meta.options.fold[1]: expected a finite number, got inf"


def test_nan_in_a_calls_own_code_entry_is_refused_naming_the_field():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4))
    data = json.loads(shapetrace.trace(model, torch.randn(2, 3), lines=True).to_json())
    data["calls"][1]["code"]["extra"] = float("-inf")
    assert _load_error(data) == "calls[1].code.extra: expected a finite number, got -inf"


def test_negative_counts_and_times_are_named():
    data = _small_trace_data()
    data["calls"][1]["params"] = -100
    assert _load_error(data) == "calls[1].params: cannot be negative (-100)"
    data = _small_trace_data()
    data["calls"][1]["timing"] = {"total_ms": -2.5}
    assert _load_error(data) == "calls[1].timing.total_ms: cannot be negative (-2.5)"


def test_an_edge_end_that_names_no_node_is_refused():
    data = _small_trace_data()
    data["edges"][0]["dst"] = "call:-1"
    assert _load_error(data).startswith("edges[0].dst: 'call:-1' names no node")
    data = _small_trace_data()
    data["edges"][0]["src"] = "banana:1"
    assert _load_error(data).startswith("edges[0].src: 'banana:1' names no node")


def test_load_takes_bytes_an_open_file_a_parsed_object_and_text_with_a_byte_order_mark(tmp_path):
    text = shapetrace.trace(torch.nn.Linear(3, 2), torch.randn(1, 3)).to_json()
    path = tmp_path / "t.json"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())  # as some Windows editors save it
    with path.open("rb") as binary, path.open(encoding="utf-8") as textual:
        loaded = [shapetrace.load(path), shapetrace.load(str(path)), shapetrace.load(text.encode()),
                  shapetrace.load(json.loads(text)), shapetrace.load(binary), shapetrace.load(textual)]
    assert {t.to_json() for t in loaded} == {text}


def test_load_of_empty_text_or_bytes_that_are_not_utf8_says_so():
    with pytest.raises(TraceFormatError, match="empty: pass the path"):
        shapetrace.load("")
    with pytest.raises(TraceFormatError, match="not UTF-8 text"):
        shapetrace.load(b"\x80{}")  # no byte-order mark: \xff\xfe starts UTF-16
    with pytest.raises(TypeError, match="takes a path, JSON text or bytes"):
        shapetrace.load(5)


def _pass_through_trace() -> shapetrace.Trace:
    model = torch.nn.Sequential(torch.nn.Identity(), torch.nn.Dropout(0.5)).eval()
    return shapetrace.trace(model, torch.randn(2, 3))


def test_tensors_passed_through_unchanged_are_written_and_read_back():
    tr = _pass_through_trace()
    data = json.loads(tr.to_json())
    assert data["same_tensors"] == [[1, 0], [2, 0]]
    assert shapetrace.load(tr.to_json()) == tr


def test_a_trace_without_same_tensors_loads_as_one_without_pass_throughs():
    data = json.loads(_pass_through_trace().to_json())
    del data["same_tensors"]
    assert shapetrace.load(data).same_tensors == []
    assert "same_tensors" not in json.loads(shapetrace.trace(torch.nn.Linear(3, 2), torch.randn(1, 3)).to_json())


def test_a_same_tensors_pair_that_names_no_earlier_tensor_is_refused():
    data = json.loads(_pass_through_trace().to_json())
    data["same_tensors"] = [[1, 5]]
    assert _load_error(data) == "same_tensors[0]: expected [tid, an earlier tid], got [1, 5]"
    data["same_tensors"] = [[1]]
    assert _load_error(data) == "same_tensors[0]: expected [tid, an earlier tid], got [1]"


def _set(data: dict, path: tuple, value) -> dict:
    """``data`` with the field at ``path`` (keys and list positions) set to ``value``."""
    *head, last = path
    node = data
    for key in head:
        node = node[key]
    node[last] = value
    return data


@pytest.mark.parametrize(("path", "message"), [
    (("model", "params"), "model.params"),
    (("model", "trainable_params"), "model.trainable_params"),
    (("model", "buffers"), "model.buffers"),
    (("model", "param_bytes"), "model.param_bytes"),
    (("model", "buffer_bytes"), "model.buffer_bytes"),
    (("model", "modules"), "model.modules"),
    (("model", "shared_params"), "model.shared_params"),
    (("model", "param_dtypes", "float32"), "model.param_dtypes.float32"),
    (("ops", 0, "flops"), "ops[0].flops"),
    (("ops", 0, "timing"), "ops[0].timing.total_ms"),
    (("edges", 0, "tid"), "edges[0].tid"),
    (("edges", 0, "shape"), "edges[0].shape[0]"),
    (("calls", 0, "outputs", "tid"), "calls[0].outputs.tid"),
])
def test_a_negative_count_size_or_time_anywhere_is_refused_by_its_path(path, message):
    value = {"timing": {"total_ms": -1.0}, "shape": [-1, 2]}.get(path[-1], -5)
    data = _small_trace_data()
    data["ops"] = [{"id": 0, "name": "add", "call": None, "order": 0}]
    data = _set(data, path, value)
    assert _load_error(data).startswith(f"{message}: ")
    assert "negative" in _load_error(data)


def test_a_negative_parameter_count_of_an_uncalled_module_is_refused():
    data = _small_trace_data()
    data["uncalled"] = [{"module": "head", "cls": "Linear", "params": -7}]
    assert _load_error(data) == "uncalled[0].params: cannot be negative (-7)"


def test_a_trace_read_without_torch_sizes_every_torch_dtype_as_torch_does():
    """The records' own table (what a trace loaded without torch uses) against ``dtype.itemsize``."""
    script = textwrap.dedent("""
        import json, sys
        sys.modules["torch"] = None  # any import of torch now fails
        from shapetrace.tracer.records import dtype_itemsize
        print(json.dumps({name: dtype_itemsize(name) for name in json.loads(sys.argv[1])}))
    """)
    dtypes = {v for v in vars(torch).values() if isinstance(v, torch.dtype)}
    names = {str(d).removeprefix("torch."): d.itemsize for d in dtypes}
    out = subprocess.run([sys.executable, "-c", script, json.dumps(sorted(names))], capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == names


@pytest.mark.parametrize("dtype", [torch.float8_e8m0fnu, torch.float4_e2m1fn_x2, torch.bits8, torch.bits16])
def test_a_traced_tensor_of_a_low_bit_dtype_has_torchs_size(dtype):
    class Reinterpret(torch.nn.Module):
        def forward(self, x):
            return x.view(torch.uint8).view(dtype).clone()

    x = torch.zeros(10, 12)
    out = Reinterpret()(x)
    meta = shapetrace.trace(Reinterpret(), x).outputs
    assert meta.dtype == str(dtype).removeprefix("torch.")
    assert meta.nbytes == out.numel() * out.element_size()


def test_the_tracer_teaches_the_records_the_size_of_a_dtype_their_table_lacks(monkeypatch):
    from shapetrace.tracer import records, values

    monkeypatch.delitem(records._ITEMSIZE, "bits16")  # as a torch newer than the table would have it
    monkeypatch.setattr(values, "_DTYPE_NAMES", {})

    class Reinterpret(torch.nn.Module):
        def forward(self, x):
            return x.view(torch.bits16).clone()

    meta = shapetrace.trace(Reinterpret(), torch.zeros(3, 4, dtype=torch.int16)).outputs
    assert meta.nbytes == 3 * 4 * torch.bits16.itemsize


class _OwnPath:
    """A path type of a user's own: ``os.PathLike`` by ``__fspath__`` alone."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __fspath__(self) -> str:
        return str(self.path)


def test_load_reads_any_path_like_object(tmp_path):
    trace = shapetrace.trace(torch.nn.Linear(3, 2), torch.randn(4, 3))
    (tmp_path / "t.json").write_text(trace.to_json())
    assert shapetrace.load(_OwnPath(tmp_path / "t.json")) == trace


@pytest.mark.parametrize("name", ["[run1].json", "{x}.json", " [a].json"])
def test_load_reads_a_relative_file_whose_name_starts_like_json(tmp_path, monkeypatch, name):
    trace = shapetrace.trace(torch.nn.Linear(3, 2), torch.randn(4, 3))
    (tmp_path / name).write_text(trace.to_json())
    monkeypatch.chdir(tmp_path)
    assert shapetrace.load(name) == trace
    assert shapetrace.load(str(tmp_path / name)) == trace


def test_a_missing_file_whose_name_starts_like_json_is_named_in_the_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TraceFormatError, match=r"not valid JSON.*no file named '\{x\}\.json'"):
        shapetrace.load("{x}.json")


class _MasksWithNaN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)

    def forward(self, x, mask):
        return self.lin(x).masked_fill(mask, float("nan"))  # padded positions marked NaN


def test_a_trace_holding_a_nan_equals_itself_read_back():
    trace = shapetrace.trace(_MasksWithNaN(), torch.randn(2, 3), torch.zeros(2, 3, dtype=torch.bool), ops=True)
    assert any(math.isnan(v) for op in trace.ops for v in op.inputs if isinstance(v, float))  # the NaN is recorded
    assert shapetrace.load(trace.to_json()) == trace


def test_traces_that_differ_only_in_a_nan_free_field_are_not_equal():
    trace = shapetrace.trace(_MasksWithNaN(), torch.randn(2, 3), torch.zeros(2, 3, dtype=torch.bool), ops=True)
    other = shapetrace.load(trace.to_json())
    other.calls[1].module = "renamed"
    assert other != trace
    assert trace != "a trace"


class _DictOut(torch.nn.Module):
    """A forward whose dict output and keyword arguments are not in alphabetical order."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = torch.nn.Linear(3, 4)

    def forward(self, x, *, scale=1.0, bias=None):
        h = self.enc(x)
        return {"logits": h, "hidden": x, "aux_loss": h.sum()}


def test_the_order_of_a_dict_output_and_of_keyword_arguments_survives_the_json_round_trip():
    t = shapetrace.trace(_DictOut(), torch.randn(2, 3), scale=2.0, bias=torch.zeros(3))
    loaded = shapetrace.load(t.to_json())
    assert list(t.outputs) == ["logits", "hidden", "aux_loss"]  # the forward's own order
    assert list(loaded.outputs) == list(t.outputs)
    assert list(loaded.calls[0].kwargs) == list(t.calls[0].kwargs) == ["scale", "bias"]
    assert loaded.to_json() == t.to_json()


def test_a_dict_output_renders_the_same_live_and_loaded_from_json():
    t = shapetrace.trace(_DictOut(), torch.randn(2, 3), scale=2.0, bias=torch.zeros(3))
    loaded = shapetrace.load(t.to_json())
    for fmt in ("text", "md", "csv", "html"):
        assert shapetrace.renderers.render(loaded, fmt) == shapetrace.renderers.render(t, fmt), fmt


def test_the_field_order_of_a_namedtuple_output_survives_the_json_round_trip():
    Out = collections.namedtuple("Out", ["logits", "aux", "cache"])
    t = shapetrace.trace(_StructOut(Out), torch.randn(2, 3))
    assert list(shapetrace.load(t.to_json()).outputs.fields) == list(t.outputs.fields) == ["logits", "aux", "cache"]


class _StructOut(torch.nn.Module):
    def __init__(self, out: type) -> None:
        super().__init__()
        self.out = out

    def forward(self, x):
        return self.out(x * 2, 1.5, None)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32", "utf-8-sig"])
def test_a_trace_saved_as_utf16_or_utf32_with_a_byte_order_mark_is_read(tmp_path, encoding):
    # Windows PowerShell 5's `shapetrace trace M -f json > t.json` writes UTF-16 with a byte-order mark
    trace = shapetrace.trace(torch.nn.Linear(3, 2), torch.randn(2, 3))
    path = tmp_path / "t.json"
    bom = {"utf-16-be": b"\xfe\xff"}.get(encoding, b"")
    path.write_bytes(bom + trace.to_json().encode(encoding))
    assert shapetrace.load(path) == trace
