"""``shapetrace.load`` reads what the command line reads, with the same bounds: a regular file or a descriptor
the process holds, never a FIFO or a device by name; and a file that is not complete JSON is said to be cut
short, naming the file."""

from __future__ import annotations

import io
import os
import threading

import pytest
import torch
from torch import nn

import shapetrace
from shapetrace.tracer import tracefile
from shapetrace.tracer.codec import TraceFormatError
from shapetrace.tracer.tracefile import TraceFileRefused


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(shapetrace.trace(nn.Sequential(nn.Linear(4, 2)), torch.zeros(3, 4)).to_json())
    return path


def test_load_refuses_a_device_rather_than_reading_until_memory_runs_out():
    with pytest.raises(TraceFileRefused, match=r"'/dev/zero' is not a regular file.*open stream"):
        shapetrace.load("/dev/zero")


def test_a_descriptor_name_that_climbs_out_to_a_device_is_refused_as_the_device_is(monkeypatch):
    """``/dev/fd/../../../dev/zero`` starts like an inherited descriptor's name but names ``/dev/zero``."""
    monkeypatch.setattr(tracefile, "MAX_TRACE_BYTES", 1 << 16)
    with pytest.raises(TraceFileRefused, match="is not a regular file"):
        tracefile.read_path("/dev/fd/../../../dev/zero")


def test_load_refuses_a_fifo_rather_than_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    result: list[BaseException | None] = []

    def load() -> None:
        try:
            shapetrace.load(fifo)
        except BaseException as e:  # noqa: BLE001 - handed to the test's thread
            result.append(e)
        else:
            result.append(None)

    reader = threading.Thread(target=load, daemon=True)
    reader.start()
    reader.join(timeout=30)
    if reader.is_alive():  # blocked in open(): let it go by opening the FIFO's other end
        with open(fifo, "wb"):
            pass
        reader.join(timeout=30)
        pytest.fail("shapetrace.load(FIFO) blocked waiting for a writer")
    assert isinstance(result[0], TraceFileRefused) and "not a regular file" in str(result[0])


def test_load_refuses_a_file_or_stream_larger_than_the_limit(saved, monkeypatch):
    monkeypatch.setattr(tracefile, "MAX_TRACE_BYTES", 100)
    with pytest.raises(TraceFileRefused, match="larger than 100 bytes"):
        shapetrace.load(saved)
    with pytest.raises(TraceFileRefused, match="larger than 100 bytes"), open(saved, "rb") as f:
        shapetrace.load(f)


def test_load_reads_regular_files_streams_and_inherited_descriptors_as_before(saved):
    trace = shapetrace.load(saved)
    assert shapetrace.load(str(saved)) == trace
    assert shapetrace.load(io.BytesIO(saved.read_bytes())) == trace
    with open(saved, "rb") as f:
        assert shapetrace.load(f"/dev/fd/{f.fileno()}") == trace


def test_load_of_a_folder_says_it_is_a_folder(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder"):
        shapetrace.load(tmp_path)


# ---- a file cut short ------------------------------------------------------------------------------------------
def test_a_truncated_trace_is_said_to_be_cut_short_naming_the_file_and_what_to_do(saved):
    text = saved.read_text()
    saved.write_text(text[:len(text) // 2])
    with pytest.raises(TraceFormatError) as caught:
        shapetrace.load(saved)
    message = str(caught.value)
    assert repr(str(saved)) in message and "not complete JSON: it ends early, at line" in message
    assert "likely cut short" in message and "save the trace again" in message


@pytest.mark.parametrize("cut", ['{"calls": [', '{"calls": [{"module": "a', '{"calls": [1,', "{"])
def test_json_text_that_ends_early_says_where_and_what_was_expected(cut):
    with pytest.raises(TraceFormatError, match=r"not complete JSON: it ends early, at line 1 column \d+ .*(inside the "
                                               r"string that starts|where the parser expected)"):
        shapetrace.load(cut)


def test_json_that_is_wrong_before_its_end_keeps_the_parsers_message():
    """A guard: a mistake in the middle is not called a truncation (passes before the change, by design)."""
    with pytest.raises(TraceFormatError, match="not valid JSON: Expecting ',' delimiter") as caught:
        shapetrace.load('{"a": 1 "b": 2}')
    assert "cut short" not in str(caught.value)


@pytest.mark.parametrize("cut", ['{"a": tru', '{"a": n', '{"a": fals', '{"a": -', '{"a": 1.', '{"a": 1e',
                                 '{"a": 1.5E+'])
def test_json_cut_inside_a_literal_or_a_number_is_said_to_be_cut_short(cut):
    with pytest.raises(TraceFormatError, match="not complete JSON: it ends early.*inside a value.*cut short"):
        shapetrace.load(cut)


def test_a_number_followed_by_a_separate_letter_is_not_called_cut_short():
    """A guard: ``1 e`` is a mistake, not a number cut inside its exponent."""
    with pytest.raises(TraceFormatError, match="not valid JSON"):
        shapetrace.load('{"a": 1 e')


@pytest.mark.parametrize("data", [b"", b"  \n"])
def test_empty_data_is_said_to_be_empty_not_cut_short(data):
    with pytest.raises(TraceFormatError, match="empty: a saved trace is the JSON") as caught:
        shapetrace.load(data)
    assert "cut short" not in str(caught.value)


def test_an_empty_file_is_named_and_said_to_be_empty(tmp_path):
    path = tmp_path / "t.json"
    path.write_bytes(b"\n")
    with pytest.raises(TraceFormatError, match=r"t\.json' is empty: a saved trace is the JSON"):
        shapetrace.load(path)
