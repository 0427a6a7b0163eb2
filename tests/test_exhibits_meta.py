"""The gallery traces exhibits on PyTorch's ``meta`` device; that trace must be the CPU's trace but for the device.

The oracle is torch itself: the same exhibit built and run on the CPU with real arithmetic.
"""

from __future__ import annotations

import pytest
from conftest import STATEFUL_EXHIBITS

from shapetrace.gallery.exhibits import exhibit_names, get_exhibit
from shapetrace.gallery.site import _trace_exhibit
from shapetrace.tracer.api import trace
from shapetrace.tracer.records import iter_tensors

# A U-Net with weight norm, blur and self-attention; a ResNet with the fastai head; embeddings; the photo
# through an upsample; the AWD-LSTMs (LSTM kernels, weight dropout, BPT3C's loop over padded chunks); a
# forward of two inputs calling one module twice (the Siamese network).
CHECKED = ["superres-unet", "pet-recognizer-resnet34", "siamese-resnet34", "emb-sz-rule", "tabular-model", "nearest-upsample-photo",
           "awd-lstm-language-model", "awd-lstm-classifier"]


def _facts(tr) -> list[tuple]:
    def shapes(value):
        return [(path, m.shape, m.dtype) for path, m in iter_tensors(value)]

    calls = [(c.module, c.cls, c.call_index, c.parent, shapes(c.inputs), shapes(c.outputs), c.params,
              c.trainable_params, c.error) for c in tr.calls]
    ops = [(o.name, o.call, shapes(o.inputs), shapes(o.outputs)) for o in tr.ops]
    edges = sorted((e.src, e.dst, tuple(e.shape), e.side) for e in tr.edges)
    return [calls, ops, edges, tr.model.params, tr.model.trainable_params]


@pytest.mark.parametrize("name", CHECKED)
def test_the_meta_trace_is_the_cpu_trace_but_for_the_device(name, shared_exhibits):
    ex = get_exhibit(name)
    assert ex.device == "meta"
    on_meta = _trace_exhibit(ex)
    args, kwargs = ex.inputs()
    model = ex.build() if name in STATEFUL_EXHIBITS else shared_exhibits.model(name)  # built on the CPU
    on_cpu = trace(model, *args, ops=True, lines=True, strict=False, forward_kwargs=kwargs)
    # floating-point results are shapes only; integer and boolean ones (BPT3C's padding mask) stay real
    assert {m.device for c in on_meta.calls for _, m in iter_tensors(c.outputs) if m.dtype.startswith("float")} \
        == {"meta"}
    assert not on_meta.failed and not on_cpu.failed
    assert _facts(on_meta) == _facts(on_cpu)


def test_every_exhibit_is_traced_on_meta():
    assert [n for n in exhibit_names() if get_exhibit(n).device != "meta"] == []


def test_bpt3c_reads_the_real_token_ids_when_the_classifier_is_traced_on_meta():
    tr = _trace_exhibit(get_exhibit("awd-lstm-classifier"))
    assert [m.device for _, m in iter_tensors(tr.calls[0].inputs)] == ["cpu"]  # the token ids stay real
    assert {m.device for _, m in iter_tensors(tr.calls[0].outputs)} == {"meta"}
    mask = tr.calls_of("0")[0].outputs[1]  # the SentenceEncoder's padding mask, computed from the real ids
    assert (mask.device, mask.dtype, mask.shape) == ("cpu", "bool", (4, 200))
    assert [c.inputs[0].shape for c in tr.calls_of("0.module")] == [(2, 72), (4, 72), (3, 56)]  # BPT3C's chunks
