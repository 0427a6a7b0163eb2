"""``shapetrace.load`` refuses values no real trace holds, naming the field, rather than letting them crash or
forge a renderer's output: a lone surrogate, a control character in a dtype or device, a shape of more elements
than torch can count, an integer longer than Python reads, an odd id, a key that is not a string, a negative
or missing number of a note. Each is a ``TraceFormatError`` (never a bare ``ValueError`` or ``AttributeError``)."""

from __future__ import annotations

import json

import pytest
import torch

import shapetrace
from shapetrace.tracer.codec import TraceFormatError


def _data() -> dict:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU())
    return json.loads(shapetrace.trace(model, torch.randn(2, 3), ops=True).to_json())


def _error(text: str) -> str:
    with pytest.raises(TraceFormatError) as info:
        shapetrace.load(text)
    return str(info.value)


def test_a_lone_surrogate_in_a_class_name_is_refused_naming_the_field():
    text = json.dumps(_data()).replace('"cls": "Linear"', '"cls": "Lin\\ud800ear"', 1)
    assert _error(text).startswith("calls[1].cls: holds '\\ud800' at character 3: half of a UTF-16 surrogate pair")


def test_a_lone_surrogate_in_a_value_a_key_or_the_free_form_meta_is_refused():
    data = _data()
    data["calls"][0]["kwargs"] = {"mode": "\udfff"}
    assert _error(json.dumps(data)).startswith("calls[0].kwargs.mode: holds '\\udfff'")
    data = _data()
    data["meta"]["note\ud800"] = 1
    assert _error(json.dumps(data)).startswith("meta['note\\ud800']: holds '\\ud800'")


def test_a_surrogate_pair_is_a_character_and_loads():
    data = _data()
    data["calls"][0]["kwargs"] = {"mode": "\U0001f600"}  # json.dumps writes the pair "\ud83d\ude00"
    assert shapetrace.load(json.dumps(data)).calls[0].kwargs == {"mode": "\U0001f600"}


@pytest.mark.parametrize("dtype", ["float32\nfake row", "float\x0032", "float32\rint8"])
def test_a_control_character_in_a_tensor_dtype_is_refused_naming_the_field(dtype):
    data = _data()
    data["calls"][1]["outputs"]["dtype"] = dtype
    assert _error(json.dumps(data)).startswith(f"calls[1].outputs.dtype: {dtype!r} holds the control character")


def test_a_control_character_in_a_device_or_an_edges_dtype_is_refused():
    data = _data()
    data["inputs"][0]["device"] = "cpu\x1b[2J"
    assert _error(json.dumps(data)).startswith("inputs[0].device: ")
    data = _data()
    data["edges"][0]["dtype"] = "float32\n"
    assert _error(json.dumps(data)).startswith("edges[0].dtype: ")


def test_a_shape_of_more_elements_than_torch_counts_is_refused_though_each_size_fits():
    data = _data()
    data["calls"][1]["outputs"]["shape"] = [2**62] * 17
    assert _error(json.dumps(data)).startswith("calls[1].outputs.shape: its 17 sizes multiply to 2**63 elements or more")
    data["calls"][1]["outputs"]["shape"] = [2] * 1100
    assert _error(json.dumps(data)).startswith("calls[1].outputs.shape: its 1,100 sizes multiply")


def test_a_shape_at_torchs_limit_or_with_a_zero_size_loads():
    data = _data()
    data["calls"][1]["outputs"]["shape"] = [7, 7, 73, 127, 337, 92737, 649657]  # 2**63 - 1 elements
    data["calls"][0]["outputs"]["shape"] = [0] + [2**62] * 80
    trace = shapetrace.load(json.dumps(data))
    assert (trace.calls[1].outputs.numel, trace.calls[0].outputs.numel) == (2**63 - 1, 0)


def test_an_integer_longer_than_python_reads_is_a_format_error_naming_the_field():
    data = _data()
    data["model"]["params"] = 123456789
    text = json.dumps(data).replace("123456789", "9" * 4301)
    assert _error(text) == "model.params: a 4,301-digit integer does not fit in 64 bits"


def test_an_integer_longer_than_python_reads_in_a_value_or_in_meta_is_refused():
    data = _data()
    data["calls"][0]["kwargs"] = {"seed": 7}
    text = json.dumps(data).replace('"seed": 7', '"seed": -' + "1" * 5000)
    assert _error(text).startswith("calls[0].kwargs.seed: a 5,000-digit integer, longer than Python reads")
    text = json.dumps(_data()).replace('"grad": false', '"grad": ' + "1" * 5000)
    assert _error(text).startswith("meta.grad: a 5,000-digit integer")


def test_an_edge_to_a_call_id_of_thousands_of_digits_names_no_call():
    data = _data()
    data["edges"][0]["dst"] = "call:" + "0" * 4301
    assert _error(json.dumps(data)).startswith("edges[0].dst: no call '000")


def test_an_edge_to_an_id_with_a_leading_zero_names_no_call():
    data = _data()
    data["edges"][0]["dst"] = "call:01"
    assert _error(json.dumps(data)) == ("edges[0].dst: no call '01' (an id is written without leading zeros, in at "
                                        "most 19 digits)")


def test_a_parsed_object_with_a_key_that_is_not_a_string_is_refused_naming_the_place():
    data = _data()
    data["meta"][1] = 2
    with pytest.raises(TraceFormatError, match=r"^meta: has the key 1 \(int\): the keys of a JSON object are strings"):
        shapetrace.load(data)
    data = _data()
    data["calls"][0]["kwargs"] = {(1, 2): 3}
    with pytest.raises(TraceFormatError, match=r"^calls\[0\]\.kwargs: has the key \(1, 2\) \(tuple\)"):
        shapetrace.load(data)


def test_a_negative_op_count_is_refused():
    data = _data()
    data["calls"][0]["op_count"] = -3
    assert _error(json.dumps(data)) == "calls[0].op_count: cannot be negative (-3)"


def test_a_note_with_a_negative_count_is_refused():
    data = _data()
    data["calls"][1]["notes"] = [{"code": "cuda-graph-launches", "count": -5}]
    assert _error(json.dumps(data)) == "calls[1].notes[0].count: cannot be negative (-5)"


def test_a_note_without_the_numbers_it_states_is_refused():
    data = _data()
    data["calls"][1]["notes"] = [{"code": "ran-in-some-timed-runs", "count": 2}]
    assert _error(json.dumps(data)) == ("calls[1].notes[0].of: missing: a 'ran-in-some-timed-runs' note states "
                                        "its of")


def test_a_note_that_states_no_number_needs_none():
    data = _data()
    data["calls"][1]["notes"] = [{"code": "not-timed"}]
    assert shapetrace.load(json.dumps(data)).calls[1].notes[0].code == "not-timed"


def test_utf16_without_a_byte_order_mark_is_said_to_look_like_utf16(tmp_path):
    path = tmp_path / "t.json"
    path.write_bytes(json.dumps(_data()).encode("utf-16-le"))
    with pytest.raises(TraceFormatError, match="looks like UTF-16 text without a byte-order mark"):
        shapetrace.load(path)


def test_a_file_starting_with_two_utf8_byte_order_marks_loads_as_its_text_does(tmp_path):
    text = "\ufeff\ufeff" + json.dumps(_data())
    path = tmp_path / "t.json"
    path.write_bytes(text.encode("utf-8"))
    assert shapetrace.load(path) == shapetrace.load(text)
