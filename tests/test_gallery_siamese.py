"""The chapter's Siamese network (``siamese-resnet34``): one resnet34 encoder called on both images, the two
feature maps concatenated, fastai 2.8's head, and a splitter with two parameter groups.

Every number of the exhibit's caption is checked here against the trace or torch itself, and the caption is
checked to hold no number these tests do not check. The facts marked "checked against fastai 2.8.12" were
compared with fastai 2.8.12's own ``create_body``/``create_head`` and the book's ``SiameseModel`` (in a scratch
environment outside this repository); fastai is never imported here.
"""

from __future__ import annotations

import re

import pytest
import torch
import torchvision
from click.testing import CliRunner
from conftest import exhibits_built_once
from fastai_checks import calls_per_class, keys_digest
from torch import nn

from shapetrace.cli import main
from shapetrace.gallery.exhibits import EXHIBITS, SECTIONS, exhibit_names, section_of
from shapetrace.gallery.exhibits import vision as vision_exhibits
from shapetrace.gallery.site import _trace_exhibit
from shapetrace.gallery.vision import (
    SiameseModel,
    create_body,
    create_head,
    model_meta,
    param_groups,
    siamese_split,
)
from shapetrace.renderers.diagram import to_dot
from shapetrace.renderers.graph import build_graph
from shapetrace.tracer.api import trace

NAME = "siamese-resnet34"
CAPTION = EXHIBITS[NAME].caption


def n_params(m) -> int:
    return sum(p.numel() for p in (m.parameters() if isinstance(m, nn.Module) else m))


def shape_text(shape) -> str:
    """A shape as the caption writes it: ``(2,512,7,7)``."""
    return "(" + ",".join(str(d) for d in shape) + ")"


@pytest.fixture(scope="module")
def model(shared_exhibits) -> nn.Module:
    return shared_exhibits.model(NAME)  # the exhibit's build, shared read-only


@pytest.fixture(scope="module")
def traced(shared_exhibits):
    return shared_exhibits.trace(NAME)  # shapetrace.trace on the exhibit's two image batches


# --- its place in the chapter ------------------------------------------------------------------------------

def test_the_siamese_network_closes_the_computer_vision_section_after_the_heads():
    title, names = SECTIONS[0]
    assert title == "Computer vision" and names[-1] == NAME
    assert names.index("concat-pool-vs-avg-pool") < names.index(NAME)
    order = exhibit_names()
    assert order.index(NAME) + 1 == order.index("nearest-upsample-photo")  # then the U-Net section
    assert section_of(NAME) == "Computer vision"


def test_the_exhibit_asks_one_question_and_splits_like_the_chapter():
    ex = EXHIBITS[NAME]
    assert ex.question.count("?") == 1 and ex.question.endswith("?")
    assert ex.options["param_groups"] == {"encoder": ["encoder"], "head": ["head"]}
    assert ex.options["splitter"] == "siamese_split" and "groups" in ex.options["overlays"]


# --- the model -----------------------------------------------------------------------------------------------

def test_the_encoder_is_resnet34_cut_at_model_metas_cut(model):
    full = torchvision.models.resnet34(weights=None)
    cut = model_meta[torchvision.models.resnet34]["cut"]
    assert f"resnet34 cut at {cut}" in CAPTION
    assert [type(c) for c in model.encoder] == [type(c) for c in list(full.children())[:cut]]
    assert n_params(model.encoder) == n_params(create_body(full, cut=cut))


def test_the_head_is_fastai_2_8s_create_head_for_two_512_channel_maps(model):
    head = create_head(512 * 2, 2, ps=0.5)
    assert "create_head(512*2, 2, ps=0.5), drawn here" in CAPTION
    assert repr(model.head) == repr(head)
    bn, lin = model.head[2], model.head[4]
    assert f"BatchNorm1d({bn.num_features})" in CAPTION and bn.num_features == 2048
    assert f"Linear({lin.in_features}, {lin.out_features})" in CAPTION and (lin.in_features, lin.out_features) \
        == (2048, 512)
    assert [m.p for m in model.head if isinstance(m, nn.Dropout)] == [0.25, 0.5]  # ps=0.5: the last, and half


def test_the_books_512_times_4_head_is_built_for_4096_features_and_fails_on_2048():
    # checked against fastai 2.8.12: the same layers, and the same error on the same forward
    head = create_head(512 * 4, 2, ps=0.5)
    assert "create_head(512*4, 2, ps=0.5)" in CAPTION and "512*4 now builds BatchNorm1d(4096)" in CAPTION
    bn, lin = head[2], head[4]
    assert f"BatchNorm1d({bn.num_features})" in CAPTION and bn.num_features == 4096
    assert f"Linear({lin.in_features}, {lin.out_features})" in CAPTION and lin.in_features == 4096
    encoder = create_body(torchvision.models.resnet34(weights=None), cut=-2)
    book = SiameseModel(encoder, head).eval()
    x1, x2 = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)  # any size: the channels are what fails
    with torch.no_grad(), pytest.raises(RuntimeError, match="2048 elements not 4096"):
        book(x1, x2)
    failed = trace(book, x1, x2, strict=False)
    assert failed.failed and failed.failed_call.module == "head.2" and failed.failed_call.cls == "BatchNorm1d"
    assert failed.failed_call.inputs[0].shape == (2, 2048)
    assert "fails on the 2048 pooled features" in CAPTION


def test_the_splitter_gives_the_encoder_then_the_head_and_covers_every_parameter(model):
    assert param_groups(model, siamese_split) == vision_exhibits.SIAMESE_GROUPS
    groups = siamese_split(model)
    assert [n_params(g) for g in groups] == [21_284_672, 1_054_720]
    assert sorted(id(p) for g in groups for p in g) == sorted(id(p) for p in model.parameters())
    assert "two parameter groups, the encoder and the head" in CAPTION and len(groups) == 2


def test_state_dict_and_calls_are_fastai_2_8_12s(model):
    # checked against fastai 2.8.12: SiameseModel(create_body(resnet34(), pretrained=False, cut=-2),
    # create_head(512*2, 2, ps=0.5)): its state_dict keys and shapes, and its calls on two (2,3,224,224) batches
    assert keys_digest(model) == (228, "25aea4059c4774e7")
    x = torch.rand(2, 3, 64, 64)
    assert calls_per_class(model, x, x) == {
        "SiameseModel": 1, "Sequential": 17, "Conv2d": 72, "BatchNorm2d": 72, "ReLU": 67, "MaxPool2d": 2,
        "BasicBlock": 32, "AdaptiveConcatPool2d": 1, "AdaptiveMaxPool2d": 1, "AdaptiveAvgPool2d": 1,
        "Flatten": 1, "BatchNorm1d": 2, "Dropout": 2, "Linear": 2}


# --- the trace and the caption's numbers ----------------------------------------------------------------------

def test_the_one_encoder_is_called_twice_and_its_parameters_count_once(traced):
    enc = traced.calls_of("encoder")
    assert [c.call_index for c in enc] == [0, 1] and "called twice" in CAPTION
    assert [c.outputs.shape for c in enc] == [(2, 512, 7, 7)] * 2
    assert f"the two {shape_text(enc[0].outputs.shape)}" in CAPTION
    assert f"{enc[0].params:,} parameters are shared and counted once" in CAPTION
    assert traced.model.params == enc[0].params + traced.calls_of("head")[0].params


def test_the_head_reads_the_concatenated_maps_and_answers_with_two_scores(traced):
    head = traced.calls_of("head")[0]
    assert f"on channels into {shape_text(head.inputs[0].shape)}" in CAPTION and head.inputs[0].shape[1] == 1024
    assert traced.calls_of("head.2")[0].inputs[0].shape == (2, 2048)  # what the book's BatchNorm1d(4096) gets
    out = traced.calls[0].outputs.shape
    assert out == (2, 2) and f"a head with {out[-1]} outputs" in CAPTION
    assert f"a head of {head.params:,} parameters, {traced.model.params:,} in all" in CAPTION
    assert (head.params, traced.model.params) == (1_054_720, 22_339_392)


def test_the_caption_holds_no_number_left_unchecked():
    checked = ["resnet34 cut at -2", "(2,512,7,7)", "(2,1024,7,7)", "2 outputs", "21,284,672",
               "create_head(512*4, 2, ps=0.5)", "512*4 now builds", "BatchNorm1d(4096)", "Linear(4096, 512)", "the 2048 pooled",
               "create_head(512*2, 2, ps=0.5)", "BatchNorm1d(2048)", "Linear(2048, 512)", "1,054,720",
               "22,339,392", "fastai 2.8", "resnet34()"]
    rest = CAPTION
    for fragment in checked:
        assert fragment in rest, fragment
        rest = rest.replace(fragment, "")
    assert not re.search(r"\d", rest), rest


# --- the front ends --------------------------------------------------------------------------------------------

def test_the_diagram_draws_the_encoder_once_fed_by_both_images():
    tr = _trace_exhibit(EXHIBITS[NAME])  # as the gallery traces it (ops and lines, on meta)
    g = build_graph(tr, depth=EXHIBITS[NAME].options["depth"])
    (enc,) = g.find("encoder")
    assert enc.count == 2 and [c.call_index for c in (tr.calls[i] for i in enc.calls)] == [0, 1]
    assert sorted(src for src, dst in g.adjacency() if dst == "encoder") == ["input 0", "input 1"]
    out = [e for e in g.edges if e.src == enc.id]
    assert len(out) == 1 and out[0].count == 2 and out[0].shapes == [(2, 512, 7, 7)]
    assert "<B>encoder ×2</B>" in to_dot(tr, depth=1)


def test_the_cli_traces_and_shows_the_lines_of_the_exhibit(shared_exhibits):
    with exhibits_built_once(shared_exhibits):
        table = CliRunner().invoke(main, ["trace", NAME, "--width", "120"], catch_exceptions=False)
        lines = CliRunner().invoke(main, ["lines", NAME], catch_exceptions=False)
    assert table.exit_code == 0 and lines.exit_code == 0, table.output + lines.output
    assert re.search(r"encoder#1 +Sequential +2/2 +\(2,3,224,224\) +\(2,512,7,7\) +1st call", table.output)
    assert "Total params:         22,339,392" in table.output
    assert "encoder Sequential ×2: (2,512,7,7)" in lines.output
    assert "cat → (2,1024,7,7)" in lines.output and "head Sequential → (2,2)" in lines.output
    # the forward's line ran once: the legend must not read ×2 as a loop only
    assert "×N made N times by the line (a loop, a reused module)" in lines.output
