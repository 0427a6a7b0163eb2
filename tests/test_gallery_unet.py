"""Behaviour of shapetrace.gallery.unet and its exhibits: fastai 2.8's DynamicUnet in plain PyTorch.

Numbers come from /work/shared/facts/chapter15-fastai-2.8.md (measured on fastai 2.8.12, torchvision 0.29.1).
The key digests, hook positions and call counts marked "checked against fastai 2.8.12" were compared with real
fastai 2.8.12 U-Nets (torch 2.14.1, pretrained=False, in a scratch environment outside this repository) and
are recorded here as facts; fastai is still never imported.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch
import torchvision
from fastai_checks import calls_per_class, keys_digest
from torch import nn

from shapetrace.gallery.exhibits import EXHIBITS
from shapetrace.gallery.exhibits import unet as unet_exhibits
from shapetrace.gallery.layers import (
    ConvLayer,
    MergeLayer,
    PixelShuffle_ICNR,
    ResBlock,
    ResizeToOrig,
    SelfAttention,
    SigmoidRange,
    ToTensorBase,
)
from shapetrace.gallery.unet import DynamicUnet, UnetBlock, create_unet_model
from shapetrace.gallery.vision import PretrainedWeightsNotFound, create_body

CAMVID = (360, 480)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.fixture
def exhibit_models(shared_exhibits) -> dict[str, nn.Module]:
    """Each U-Net exhibit's model, built once per session (the dummy forwards at 360x480 take seconds on a CPU)
    and shared read-only: ``shared_exhibits`` fails a test that got it changed."""
    return {name: shared_exhibits.model(name) for name in EXPECTED_OUTPUTS}


@pytest.fixture
def camvid(exhibit_models) -> DynamicUnet:
    """create_unet_model(resnet34, 32, (360, 480)), as the camvid-unet exhibit builds it."""
    return exhibit_models["camvid-unet"]


@pytest.fixture
def camvid_variant(exhibit_models) -> DynamicUnet:
    """The same with blur, self_attention, last_cross and y_range=(0, 1) (the camvid-unet-blur-attention exhibit)."""
    return exhibit_models["camvid-unet-blur-attention"]


class Run(NamedTuple):
    """One forward in eval mode seen by torch's own hooks only (no shapetrace)."""

    output: torch.Tensor
    calls: dict[str, int]  # calls per module class, as fastai_checks.calls_per_class counts them
    layer_outputs: list[tuple[str, tuple]]  # class and output shape of each entry of model.layers, in call order


@pytest.fixture(scope="module")
def exhibit_runs(shared_exhibits):
    """``exhibit_runs(name)``: the U-Net exhibit's model run once on the exhibit's own input, its calls per class,
    ``layers`` outputs and output all recorded by that one forward (a 360x480 forward takes seconds on a CPU)."""
    runs: dict[str, Run] = {}

    def run(name: str) -> Run:
        if name not in runs:
            model = shared_exhibits.model(name)
            args, _ = EXHIBITS[name].inputs()
            layer_outputs, output = [], []
            handles = [m.register_forward_hook(lambda m, i, o: layer_outputs.append((type(m).__name__, tuple(o.shape))))
                       for m in model.layers]
            handles.append(model.register_forward_hook(lambda m, i, o: output.append(o)))
            try:
                calls = calls_per_class(model, *args)
            finally:
                for h in handles:
                    h.remove()
            [out] = output
            runs[name] = Run(out, calls, layer_outputs)
        return runs[name]

    return run


def layer_outputs(model: DynamicUnet, x: torch.Tensor) -> list[tuple[str, tuple]]:
    out = []
    handles = [m.register_forward_hook(lambda m, i, o: out.append((type(m).__name__, tuple(o.shape))))
               for m in model.layers]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return out


def test_camvid_unet_has_fastai_param_count(camvid):
    assert n_params(camvid) == 41_224_168


def test_camvid_unet_layers_are_in_fastai_order(camvid):
    assert [type(m) for m in camvid.layers] == [
        nn.Sequential, nn.BatchNorm2d, nn.ReLU, nn.Sequential, UnetBlock, UnetBlock, UnetBlock, UnetBlock,
        PixelShuffle_ICNR, ResizeToOrig, MergeLayer, ResBlock, ConvLayer, ToTensorBase]
    assert camvid.layers[10].dense


def test_camvid_unet_hooks_encoder_children_where_the_size_changes(camvid):
    encoder = camvid.layers[0]
    # checked against fastai 2.8.12: its encoder carries forward hooks on children 2, 4, 5 and 6 exactly
    assert [i for i, c in enumerate(encoder) if c._forward_hooks] == [2, 4, 5, 6]
    assert [h.module for h in camvid.sfs] == [encoder[i] for i in (6, 5, 4, 2)]
    assert [b.hook for b in camvid.layers[4:8]] == camvid.sfs


def test_camvid_unet_block_outputs_match_fastai(exhibit_runs):
    outputs = exhibit_runs("camvid-unet").layer_outputs  # on the exhibit's (1, 3, 360, 480) image
    assert outputs[4:] == [
        ("UnetBlock", (1, 512, 23, 30)), ("UnetBlock", (1, 384, 45, 60)), ("UnetBlock", (1, 256, 90, 120)),
        ("UnetBlock", (1, 96, 180, 240)), ("PixelShuffle_ICNR", (1, 96, 360, 480)),
        ("ResizeToOrig", (1, 96, 360, 480)), ("MergeLayer", (1, 99, 360, 480)), ("ResBlock", (1, 99, 360, 480)),
        ("ConvLayer", (1, 32, 360, 480)), ("ToTensorBase", (1, 32, 360, 480))]


def test_camvid_unet_runs_on_250x333_resizing_to_each_skip_and_back(camvid):
    outputs = layer_outputs(camvid, torch.rand(1, 3, 250, 333))
    assert outputs[8] == ("PixelShuffle_ICNR", (1, 96, 250, 334))
    assert outputs[-1] == ("ToTensorBase", (1, 32, 250, 333))


def test_unet_block_reads_its_skip_from_the_hook_not_its_arguments(camvid):
    block = camvid.layers[4]
    saved = block.hook.stored
    try:
        block.hook.stored = torch.rand(1, 256, 20, 21)
        with torch.no_grad():
            assert block(torch.rand(1, 512, 12, 15)).shape == (1, 512, 20, 21)
    finally:
        block.hook.stored = saved


def test_camvid_unet_state_dict_keys_match_fastai(camvid):
    # Derived from fastai 2.8's structure, then checked against fastai 2.8.12 (the full list: see
    # FASTAI_UNET_FACTS below): DynamicUnet is a SequentialEx, so every key starts with
    # "layers.<i>". layers = [encoder (resnet34 body), BatchNorm2d, ReLU, middle Sequential(ConvLayer, ConvLayer),
    # 4 UnetBlocks (shuf=PixelShuffle_ICNR[ConvLayer, PixelShuffle], bn, conv1, conv2, relu), PixelShuffle_ICNR,
    # ResizeToOrig, MergeLayer, ResBlock(convpath, idpath, act), ConvLayer(1x1), ToTensorBase]. norm_type=None,
    # so the decoder convs carry a bias and the PixelShuffle_ICNR convs are not weight-normalised.
    sd = camvid.state_dict()
    expected = {
        "layers.0.0.weight": (64, 3, 7, 7), "layers.0.4.0.conv1.weight": (64, 64, 3, 3),
        "layers.1.weight": (512,), "layers.1.running_mean": (512,),
        "layers.3.0.0.weight": (1024, 512, 3, 3), "layers.3.0.0.bias": (1024,), "layers.3.1.0.weight": (512, 1024, 3, 3),
        "layers.4.shuf.0.0.weight": (1024, 512, 1, 1), "layers.4.shuf.0.0.bias": (1024,),
        "layers.4.bn.weight": (256,), "layers.4.bn.num_batches_tracked": (),
        "layers.4.conv1.0.weight": (512, 512, 3, 3), "layers.4.conv2.0.bias": (512,),
        "layers.7.shuf.0.0.weight": (512, 256, 1, 1), "layers.7.conv1.0.weight": (96, 192, 3, 3),
        "layers.8.0.0.weight": (384, 96, 1, 1), "layers.8.0.0.bias": (384,),
        "layers.11.convpath.0.0.weight": (99, 99, 3, 3), "layers.11.convpath.1.0.bias": (99,),
        "layers.12.0.weight": (32, 99, 1, 1), "layers.12.0.bias": (32,),
    }
    assert {k: tuple(sd[k].shape) for k in expected} == expected
    assert not [k for k in sd if k.startswith(("layers.2.", "layers.9.", "layers.10.", "layers.13."))]


def test_variant_has_fastai_param_count(camvid_variant):
    assert n_params(camvid_variant) == 41_408_489


def test_variant_puts_self_attention_only_in_the_second_unet_block(camvid_variant):
    blocks = camvid_variant.layers[4:8]
    assert [any(isinstance(m, SelfAttention) for m in b.modules()) for b in blocks] == [False, True, False, False]
    sd = camvid_variant.state_dict()
    assert sd["layers.5.conv2.2.gamma"].item() == 0
    assert tuple(sd["layers.5.conv2.2.query.0.weight_orig"].shape) == (48, 384, 1)
    assert {"layers.5.conv2.2.key.0.weight_u", "layers.5.conv2.2.value.0.weight_v"} <= set(sd)


def test_variant_blurs_every_unet_block_upsampler_but_not_the_final_one(camvid_variant):
    assert [len(b.shuf) for b in camvid_variant.layers[4:8]] == [4, 4, 4, 4]
    assert isinstance(camvid_variant.layers[7].shuf[2], nn.ReplicationPad2d)
    assert len(camvid_variant.layers[8]) == 2


def test_variant_y_range_squashes_the_output(camvid_variant, exhibit_runs):
    assert [type(m) for m in camvid_variant.layers[-2:]] == [SigmoidRange, ToTensorBase]
    out = exhibit_runs("camvid-unet-blur-attention").output  # on the exhibit's (1, 3, 360, 480) image
    assert out.shape == (1, 32, 360, 480) and 0 <= out.min() and out.max() <= 1


@pytest.fixture(scope="module")
def unet_without_last_cross() -> DynamicUnet:
    # The structure (and so the count) depends on img_size only through where sizes change, which for a
    # resnet34 body is the same at 64x64 as at 360x480; the small size keeps the tests fast.
    return create_unet_model(torchvision.models.resnet34, 32, (64, 64), last_cross=False)


def test_last_cross_false_drops_the_merge_and_resblock(unet_without_last_cross):
    unet = unet_without_last_cross
    assert n_params(unet) == 41_047_456
    assert not any(isinstance(m, (MergeLayer, ResBlock)) for m in unet.layers)


def test_unet_owns_every_activation(camvid):
    relus = [m for _, m in camvid.named_modules(remove_duplicate=False) if isinstance(m, nn.ReLU)]
    assert len(relus) == len({id(r) for r in relus})


def test_dynamic_unet_accepts_any_sequential_encoder():
    encoder = create_body(torchvision.models.resnet18(weights=None), cut=-2)
    unet = DynamicUnet(encoder, 5, (32, 48)).eval()
    with torch.no_grad():
        assert unet(torch.rand(2, 3, 32, 48)).shape == (2, 5, 32, 48)


def test_create_unet_model_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(PretrainedWeightsNotFound, match="never downloads"):
        create_unet_model(torchvision.models.resnet34, 32, CAMVID, pretrained=True)


def test_create_unet_model_n_in_changes_the_first_conv_and_the_merge_width():
    unet = create_unet_model(torchvision.models.resnet18, 2, (64, 64), n_in=1).eval()
    assert unet.layers[0][0].in_channels == 1
    assert unet.layers[11].convpath[0][0].in_channels == 96 + 1  # last decoder width + the 1 input channel
    with torch.no_grad():
        assert unet(torch.rand(1, 1, 64, 64)).shape == (1, 2, 64, 64)


# --- exhibits --------------------------------------------------------------------------------------------------

EXPECTED_OUTPUTS = {
    "camvid-unet": (1, 32, 360, 480),
    "camvid-unet-blur-attention": (1, 32, 360, 480),
    "superres-unet": (1, 3, 128, 128),
    "nearest-upsample-segmenter": (1, 32, 224, 224),
}


def test_every_unet_exhibit_is_listed_here():
    names = [n for n, e in EXHIBITS.items() if e.inputs.__module__ == unet_exhibits.__name__]
    assert sorted(names) == sorted(EXPECTED_OUTPUTS)


@pytest.mark.parametrize("name", sorted(EXPECTED_OUTPUTS))
def test_unet_exhibit_is_in_eval_mode_with_cut_names_covering_its_children(name, exhibit_models):
    model = exhibit_models[name]
    assert not model.training and EXHIBITS[name].caption
    top = ([f"layers.{i}" for i in range(len(model))] if isinstance(model, DynamicUnet)
           else [n for n, _ in model.named_children()])
    assert sorted(n for names in EXHIBITS[name].options["cut"].values() for n in names) == sorted(top)


@pytest.mark.parametrize("name", sorted(EXPECTED_OUTPUTS))
def test_unet_exhibit_traces_with_the_expected_output(name, shared_exhibits):
    trace = shared_exhibits.trace(name)  # shapetrace.trace(model, *args, **kwargs) on the exhibit's inputs
    assert trace.calls[0].error is None and trace.calls[0].outputs.shape == EXPECTED_OUTPUTS[name]
    if name == "camvid-unet":  # the traced UnetBlocks show fastai's block outputs
        blocks = [c for c in trace.calls if c.cls == "UnetBlock"]
        assert [c.outputs.shape for c in blocks] == [(1, 512, 23, 30), (1, 384, 45, 60), (1, 256, 90, 120),
                                                     (1, 96, 180, 240)]


# Checked against fastai 2.8.12: create_unet_model(resnet34, ..., pretrained=False) with each exhibit's arguments ->
# state_dict digest (entries, sha256[:16] of the ordered "key (shape)" lines) and calls per module class on one
# image of the exhibit's size. Equal digests mean fastai's state_dict loads into ours with strict=True.
_CAMVID_CALLS = {"DynamicUnet": 1, "Sequential": 11, "Conv2d": 54, "BatchNorm2d": 41, "ReLU": 55, "MaxPool2d": 1,
                 "BasicBlock": 16, "ConvLayer": 18, "UnetBlock": 4, "PixelShuffle_ICNR": 5, "PixelShuffle": 5,
                 "ResizeToOrig": 1, "MergeLayer": 1, "ResBlock": 1, "ToTensorBase": 1}
_BLUR_SA_CALLS = {**_CAMVID_CALLS, "ConvLayer": 21, "ReplicationPad2d": 4, "AvgPool2d": 4, "SelfAttention": 1,
                  "Conv1d": 3, "SigmoidRange": 1}
FASTAI_UNET_FACTS = {
    "camvid-unet": ((277, "9e478330592f428b"), _CAMVID_CALLS),
    "camvid-unet-blur-attention": ((287, "09bdf85f88e9ac53"), _BLUR_SA_CALLS),
    "superres-unet": ((305, "df784b9aedf12303"), _BLUR_SA_CALLS),
}


@pytest.mark.parametrize("name", sorted(FASTAI_UNET_FACTS))
def test_unet_exhibit_state_dict_and_calls_are_fastai_2_8_12s(name, exhibit_models, exhibit_runs):
    digest, calls = FASTAI_UNET_FACTS[name]
    assert keys_digest(exhibit_models[name]) == digest
    assert exhibit_runs(name).calls == calls  # calls_per_class on the exhibit's input


def test_last_cross_false_state_dict_is_fastai_2_8_12s(unet_without_last_cross):
    # checked against fastai 2.8.12 at (360, 480); the keys and shapes do not depend on img_size for resnet34
    assert keys_digest(unet_without_last_cross) == (273, "0dd839207c385ae2")


def test_superres_unet_uses_weight_norm_and_a_3_channel_y_range(exhibit_models):
    model = exhibit_models["superres-unet"]
    sd = model.state_dict()
    assert {"layers.4.shuf.0.0.weight_g", "layers.4.shuf.0.0.weight_v", "layers.4.conv1.0.weight_v"} <= set(sd)
    assert isinstance(model.layers[-2], SigmoidRange) and (model.layers[-2].low, model.layers[-2].high) == (-3, 3)
