"""Behaviour of shapetrace.gallery.vision and its exhibits: body, head, cut and parameter groups as fastai 2.8.

Numbers come from /work/shared/facts/chapter15-fastai-2.8.md (measured on fastai 2.8.12, torchvision 0.29.1).
The state_dict keys, key digests, module call counts and splitter sizes marked "checked against fastai 2.8.12"
were compared with real fastai 2.8.12 models (torch 2.14.1, built with pretrained=False, in a scratch
environment outside this repository): they are recorded here as facts, and fastai is still never imported.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from fastai_checks import calls_per_class, keys_digest
from torch import nn

from shapetrace.gallery.exhibits import EXHIBITS
from shapetrace.gallery.exhibits import vision as vision_exhibits
from shapetrace.gallery.layers import AdaptiveConcatPool2d, Flatten, SigmoidRange
from shapetrace.gallery.photo import photo_tensor
from shapetrace.gallery.vision import (
    PretrainedWeightsNotFound,
    block_split,
    create_body,
    create_head,
    create_vision_model,
    default_split,
    freeze_to,
    has_pool_type,
    imagenet_stats,
    model_meta,
    param_groups,
    resnet_split,
)

VISION_EXHIBITS = [n for n, e in EXHIBITS.items() if e.build.__module__ == vision_exhibits.__name__]


def n_params(m) -> int:
    return sum(p.numel() for p in (m.parameters() if isinstance(m, nn.Module) else m))


def types(m: nn.Module) -> list[type]:
    return [type(c) for c in m.children()]


@pytest.fixture(scope="module")
def pet_model() -> nn.Module:
    return create_vision_model(torchvision.models.resnet34, 37).eval()


# --- cut and body -------------------------------------------------------------------------------------------

def test_has_pool_type_finds_pooling_layers_at_any_depth():
    assert has_pool_type(nn.Sequential(nn.Conv2d(1, 1, 1), nn.Sequential(nn.MaxPool2d(2))))
    assert not has_pool_type(nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU()))


def test_create_body_cuts_before_the_last_child_holding_a_pool():
    body = create_body(torchvision.models.resnet34(weights=None))
    assert len(body) == 8  # fastai 2.8: resnet34 cut at children index 8, dropping avgpool and fc
    assert types(body)[-1] is nn.Sequential and not any(isinstance(c, nn.AdaptiveAvgPool2d) for c in body)


def test_create_body_takes_an_int_or_a_callable_cut():
    tst = nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.AvgPool2d(1), nn.Linear(3, 4))
    assert len(create_body(tst)) == 2
    assert len(create_body(tst, cut=3)) == 3
    assert create_body(tst, cut=lambda m: m) is tst


@pytest.mark.parametrize("n_in", [1, 2, 4])
def test_create_body_replaces_the_first_conv_for_n_in_channels(n_in):
    body = create_body(torchvision.models.resnet18(weights=None), n_in=n_in)
    assert body[0].in_channels == n_in and body[0].out_channels == 64


def test_create_body_pretrained_adapts_first_conv_weights_like_fastai():
    model = torchvision.models.resnet18(weights=None)
    old = model.conv1.weight.detach().clone()
    assert torch.allclose(create_body(model, n_in=1, pretrained=True)[0].weight, old.sum(1, keepdim=True))
    model = torchvision.models.resnet18(weights=None)
    old = model.conv1.weight.detach().clone()
    w = create_body(model, n_in=4, pretrained=True)[0].weight
    assert torch.equal(w[:, :3], old) and torch.all(w[:, 3] == 0)


def test_resnet34_body_gives_512_channels_at_7x7():
    body = create_body(torchvision.models.resnet34(weights=None), cut=-2).eval()
    assert n_params(body) == 21_284_672
    with torch.no_grad():
        assert body(torch.rand(2, 3, 224, 224)).shape == (2, 512, 7, 7)


# --- create_head ---------------------------------------------------------------------------------------------

def test_default_head_layers_match_fastai():
    head = create_head(512, 37)
    assert types(head) == [AdaptiveConcatPool2d, Flatten, nn.BatchNorm1d, nn.Dropout, nn.Linear, nn.ReLU,
                           nn.BatchNorm1d, nn.Dropout, nn.Linear]
    assert head[2].num_features == 1024  # nf doubled by concat pooling inside create_head
    assert [head[3].p, head[7].p] == [0.25, 0.5]
    assert (head[4].in_features, head[4].out_features, head[4].bias) == (1024, 512, None)
    assert (head[8].in_features, head[8].out_features, head[8].bias) == (512, 37, None)
    assert n_params(head) == 546_304


def test_head_nf_is_doubled_by_concat_pooling_unlike_the_book_printout():
    assert create_head(20, 2)[2].num_features == 40


def test_head_lin_ftrs_and_ps_set_sizes_and_dropouts():
    head = create_head(512, 37, lin_ftrs=[1024, 512], ps=0.25)
    assert [m.p for m in head if isinstance(m, nn.Dropout)] == [0.125, 0.125, 0.25]
    assert [(m.in_features, m.out_features) for m in head if isinstance(m, nn.Linear)] == \
        [(1024, 1024), (1024, 512), (512, 37)]
    assert n_params(head) == 1_596_928


def test_head_without_concat_pool_uses_average_pooling_and_512_features():
    head = create_head(512, 37, concat_pool=False)
    assert isinstance(head[0], nn.AdaptiveAvgPool2d) and head[0].output_size == 1
    assert head[2].num_features == 512
    assert n_params(head) == 283_136


def test_head_bn_final_and_lin_first_match_fastai():
    head = create_head(512, 37, bn_final=True, lin_first=True)
    assert types(head) == [AdaptiveConcatPool2d, Flatten, nn.Dropout, nn.Linear, nn.ReLU, nn.BatchNorm1d,
                           nn.Dropout, nn.Linear, nn.BatchNorm1d]
    assert [head[2].p, head[6].p] == [0.25, 0.5]
    assert head[3].bias is None and head[7].bias is not None
    assert head[8].num_features == 37 and head[8].momentum == 0.01
    assert n_params(head) == 544_367


def test_head_y_range_ends_with_sigmoid_range():
    head = create_head(512, 1, y_range=(0, 5)).eval()
    assert isinstance(head[-1], SigmoidRange)
    out = head(torch.randn(2, 512, 3, 3) * 100)
    assert torch.all((out >= 0) & (out <= 5))


def test_head_first_bn_false_drops_only_the_first_batchnorm():
    head = create_head(512, 37, first_bn=False)
    assert types(head)[2:4] == [nn.Dropout, nn.Linear] and head[3].bias is not None


def test_head_hidden_blocks_each_own_their_relu():
    relus = [m for m in create_head(512, 37, lin_ftrs=[256, 128, 64]) if isinstance(m, nn.ReLU)]
    assert len(relus) == 3 and len({id(r) for r in relus}) == 3  # fastai shares a single ReLU object


def test_two_models_share_no_activation_module():
    a, b = create_head(512, 37), create_head(512, 37)
    assert not {id(m) for m in a.modules()} & {id(m) for m in b.modules()}


# --- the pet recognizer ---------------------------------------------------------------------------------------

def test_pet_recognizer_outputs_37_scores_with_fastai_param_count(pet_model):
    assert n_params(pet_model) == 21_830_976
    with torch.no_grad():
        assert pet_model(torch.rand(2, 3, 224, 224)).shape == (2, 37)


def test_pet_recognizer_state_dict_keys_match_fastai(pet_model):
    # Derived from fastai 2.8's structure, then checked against fastai 2.8.12 (the full list: see below): nn.Sequential(body, head); the body is nn.Sequential of resnet34's
    # first 8 children (0 conv1, 1 bn1, 4-7 layer1-4); the head is create_head's flat nn.Sequential
    # (2 BatchNorm1d, 4 Linear, 6 BatchNorm1d, 8 Linear; the Linears have no bias).
    sd = pet_model.state_dict()
    expected = {
        "0.0.weight": (64, 3, 7, 7), "0.1.running_var": (64,), "0.4.0.conv1.weight": (64, 64, 3, 3),
        "0.5.0.downsample.0.weight": (128, 64, 1, 1), "0.7.2.bn2.weight": (512,),
        "1.2.weight": (1024,), "1.2.num_batches_tracked": (), "1.4.weight": (512, 1024),
        "1.6.running_mean": (512,), "1.8.weight": (37, 512),
    }
    assert {k: tuple(sd[k].shape) for k in expected} == expected
    assert "1.4.bias" not in sd and "1.8.bias" not in sd
    assert not [k for k in sd if k.startswith(("1.0.", "1.1.", "1.3.", "1.5.", "1.7."))]


# Checked against fastai 2.8.12: (entries, sha256[:16] of the ordered "key (shape)" lines) of fastai's state_dict.
# Equal digests mean equal keys, order and shapes, so fastai's state_dict loads into ours with strict=True.
FASTAI_HEAD_DIGESTS = [
    ({}, (12, "eb17500379b87e67")),
    ({"lin_ftrs": [1024, 512], "ps": 0.25}, (18, "7d1d28e72581b694")),
    ({"concat_pool": False}, (12, "edec8c425c6dc106")),
    ({"bn_final": True, "lin_first": True}, (13, "f98d23a5ecfb82cd")),
]


@pytest.mark.parametrize(("kwargs", "digest"), FASTAI_HEAD_DIGESTS)
def test_head_state_dict_is_fastai_2_8_12s(kwargs, digest):
    assert keys_digest(create_head(512, 37, **kwargs)) == digest


def test_pet_recognizer_full_state_dict_and_calls_are_fastai_2_8_12s(pet_model):
    # checked against fastai 2.8.12: all 228 keys in order with their shapes, and the number of calls per module
    # class on a (2,3,224,224) batch (fastai's head reuses one ReLU object; calls are counted the same way)
    assert keys_digest(pet_model) == (228, "06d835a586154802")
    assert calls_per_class(pet_model, torch.rand(2, 3, 224, 224)) == {
        "Sequential": 10, "Conv2d": 36, "BatchNorm2d": 36, "ReLU": 34, "MaxPool2d": 1, "BasicBlock": 16,
        "AdaptiveConcatPool2d": 1, "AdaptiveMaxPool2d": 1, "AdaptiveAvgPool2d": 1, "Flatten": 1,
        "BatchNorm1d": 2, "Dropout": 2, "Linear": 2}


def test_create_vision_model_initialises_head_linears_and_zeroes_nothing_else():
    model = create_vision_model(torchvision.models.resnet18, 10, init=nn.init.zeros_)
    assert torch.all(model[1][4].weight == 0) and torch.all(model[1][2].weight == 1)


def test_create_vision_model_calls_the_builder_with_weights_none():
    seen = {}

    def builder(weights=None, **kwargs):
        seen["weights"] = weights
        return torchvision.models.resnet18(weights=None)

    create_vision_model(builder, 5)
    assert seen == {"weights": None}


def test_pretrained_without_weights_on_disk_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def no_download(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    with pytest.raises(PretrainedWeightsNotFound, match="not on disk.*never downloads"):
        create_vision_model(torchvision.models.resnet34, 37, pretrained=True)
    with pytest.raises(FileNotFoundError):
        create_vision_model(torchvision.models.resnet34, 37, weights="DEFAULT")


def test_pretrained_false_is_the_default():
    import inspect

    assert inspect.signature(create_vision_model).parameters["pretrained"].default is False
    assert inspect.signature(create_body).parameters["pretrained"].default is False


# --- splitters and freezing -----------------------------------------------------------------------------------

def test_resnet_split_gives_three_groups_with_fastai_sizes(pet_model):
    assert [n_params(g) for g in resnet_split(pet_model)] == [1_347_904, 19_936_768, 546_304]


def test_freezing_all_but_the_head_keeps_batchnorm_trainable():
    model = create_vision_model(torchvision.models.resnet34, 37)
    freeze_to(model, -1, resnet_split, train_bn=True)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 563_328
    freeze_to(model, -1, resnet_split, train_bn=False)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 546_304
    freeze_to(model, 0, resnet_split)
    assert all(p.requires_grad for p in model.parameters())


def test_default_split_is_body_then_head(pet_model):
    assert [n_params(g) for g in default_split(pet_model)] == [21_284_672, 546_304]


def test_block_split_has_one_group_for_the_stem_and_each_stage(pet_model):
    groups = param_groups(pet_model, block_split)
    assert groups == vision_exhibits.RESNET34_BLOCK_GROUPS
    sizes = [n_params(g) for g in block_split(pet_model)]
    assert sizes[0] == 9_408 + 128 and sizes[-1] == 546_304 and sum(sizes) == 21_830_976
    assert len(sizes) == 6


def test_param_groups_names_the_resnet_split_modules(pet_model):
    groups = param_groups(pet_model, resnet_split)
    assert groups == {"body-early": [f"0.{i}" for i in range(6)], "body-late": ["0.6", "0.7"], "head": ["1"]}


# --- model_meta -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("names", "cut", "split"), [
    (["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"], -2, "resnet_split"),
    (["squeezenet1_0", "squeezenet1_1"], -1, "squeezenet_split"),
    (["densenet121", "densenet161", "densenet169", "densenet201"], -1, "densenet_split"),
    (["vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"], -2, "vgg_split"),
    (["alexnet"], -2, "alexnet_split"),
])
def test_model_meta_gives_each_family_its_cut_splitter_and_imagenet_stats(names, cut, split):
    for name in names:
        meta = model_meta[getattr(torchvision.models, name)]
        assert (meta["cut"], meta["split"].__name__, meta["stats"]) == (cut, split, imagenet_stats)


def test_each_family_splits_into_three_groups_covering_every_parameter(shared_exhibits):
    bodies = shared_exhibits.model("model-meta-bodies")  # the exhibit's model as built, shared read-only
    for family, arch in vision_exhibits.META_FAMILIES.items():
        model = nn.Sequential(bodies.bodies[family], create_head(8, 2))
        groups = model_meta[arch]["split"](model)
        assert len(groups) == 3 and all(groups), family
        assert sorted(id(p) for g in groups for p in g) == sorted(id(p) for p in model.parameters()), family


# Checked against fastai 2.8.12: create_vision_model(arch, 37, pretrained=False) -> the parameter counts of
# model_meta[arch]["split"]'s groups, and the state_dict digest (entries, sha256[:16] as keys_digest computes it).
FASTAI_FAMILY_FACTS = {
    "resnet18": ([683_072, 10_493_440, 546_304], (132, "ae8300403b5c19f0")),
    "resnet34": ([1_347_904, 19_936_768, 546_304], (228, "06d835a586154802")),
    "resnet50": ([1_444_928, 22_063_104, 2_125_312], (330, "8503a99f092ac50f")),
    "resnet101": ([1_444_928, 41_055_232, 2_125_312], (636, "9038680277ed741f")),
    "resnet152": ([2_565_184, 55_578_624, 2_125_312], (942, "a1daf6d7a427f83b")),
    "squeezenet1_0": ([38_560, 696_864, 546_304], (62, "d310c1a97b9b7105")),
    "squeezenet1_1": ([25_632, 696_864, 546_304], (62, "6606fdb2a2b0a306")),
    "densenet121": ([1_297_536, 5_656_320, 1_072_640], (737, "fe2c10b3bb1c91ea")),
    "densenet169": ([1_297_536, 11_186_944, 1_730_560], (1025, "b4007b37dfab6ba2")),
    "densenet201": ([1_297_536, 16_795_392, 1_993_728], (1217, "30024613a585ac19")),
    "densenet161": ([2_901_696, 23_570_304, 2_289_792], (977, "ec20c3a6e7b71fa5")),
    "vgg11_bn": ([4_504_320, 4_721_664, 546_304], (68, "57d1efbaeb7aa753")),
    "vgg13_bn": ([2_327_360, 7_083_520, 546_304], (82, "1c448e8df8711b9f")),
    "vgg16_bn": ([1_737_792, 12_985_344, 546_304], (103, "64b629e75efb5238")),
    "vgg19_bn": ([1_737_792, 18_297_600, 546_304], (124, "788c2406664ada83")),
    "alexnet": ([330_688, 2_139_008, 283_136], (22, "0aaa35a113972234")),
}


@pytest.mark.parametrize("name", sorted(FASTAI_FAMILY_FACTS))
def test_each_family_model_and_split_are_fastai_2_8_12s(name):
    arch = getattr(torchvision.models, name)
    # Keys, shapes and parameter counts do not depend on the device: built on meta, which skips the weight
    # initialisation (seconds per VGG or DenseNet on a CPU). The CPU build has the same digest for resnet34:
    # test_pet_recognizer_full_state_dict_and_calls_are_fastai_2_8_12s.
    with torch.device("meta"):
        model = create_vision_model(arch, 37)
    assert {p.device.type for p in model.parameters()} == {"meta"}
    groups, digest = FASTAI_FAMILY_FACTS[name]
    assert [n_params(g) for g in model_meta[arch]["split"](model)] == groups
    assert keys_digest(model) == digest


# --- photo and exhibits ---------------------------------------------------------------------------------------

def test_photo_tensor_is_the_stored_photo_in_0_1():
    x = photo_tensor()
    assert x.shape == (1, 3, 600, 512) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1


def test_photo_crop_is_the_2x_upscale_centre_cropped():
    x = photo_tensor(1000, 846)
    assert x.shape == (1, 3, 1000, 846)
    up = torch.nn.functional.interpolate(photo_tensor(), scale_factor=2, mode="bilinear").clamp(0, 1)
    assert torch.allclose(x, up[..., 100:1100, 89:935])


EXPECTED_OUTPUTS = {
    "pet-recognizer-resnet34": (2, 37),
    "resnet34-cut": (2, 1000),
    "create-head-default": (2, 37),
    "create-head-lin-ftrs": (2, 37),
    "create-head-avg-pool": (2, 37),
    "create-head-bn-final-lin-first": (2, 37),
    "concat-pool-vs-avg-pool": [(2, 1024, 1, 1), (2, 512, 1, 1)],
    "siamese-resnet34": (2, 2),  # its own tests: test_gallery_siamese.py
    "nearest-upsample-photo": (1, 3, 1200, 1024),
    "transposed-conv-photo": (1, 6, 1002, 848),
    "resnet34-block-split": (2, 37),
    "model-meta-bodies": {"resnet": (1, 512, 7, 7), "squeezenet": (1, 512, 13, 13), "densenet": (1, 1024, 7, 7),
                          "vgg_bn": (1, 512, 7, 7), "alexnet": (1, 256, 6, 6)},
}


def _shapes(out):
    if isinstance(out, dict):
        return {k: tuple(v.shape) for k, v in out.items()}
    if isinstance(out, (tuple, list)):
        return [tuple(v.shape) for v in out]
    return tuple(out.shape)


def test_every_vision_exhibit_is_listed_here():
    assert sorted(VISION_EXHIBITS) == sorted(EXPECTED_OUTPUTS)


@pytest.mark.parametrize("name", sorted(EXPECTED_OUTPUTS))
def test_vision_exhibit_traces_in_eval_mode_with_the_expected_output(name, shared_exhibits):
    exhibit = EXHIBITS[name]
    model = shared_exhibits.model(name)  # exhibit.build(), shared read-only
    assert not model.training and exhibit.caption and exhibit.title
    trace = shared_exhibits.trace(name)  # shapetrace.trace(model, *args, **kwargs) on exhibit.inputs()
    root = trace.calls[0]
    assert root.module == "" and root.error is None
    out = root.outputs
    shapes = ({k: v.shape for k, v in out.items()} if isinstance(out, dict)
              else [v.shape for v in out] if isinstance(out, list) else out.shape)
    assert shapes == EXPECTED_OUTPUTS[name]


@pytest.mark.parametrize("name", ["pet-recognizer-resnet34", "resnet34-cut", "resnet34-block-split"])
def test_exhibit_overlay_options_name_real_modules(name, shared_exhibits):
    exhibit = EXHIBITS[name]
    modules = dict(shared_exhibits.model(name).named_modules())
    for key in ("cut", "param_groups"):
        for names in exhibit.options.get(key, {}).values():
            assert all(n in modules for n in names), (key, names)


def test_the_photo_pictures_do_not_depend_on_the_number_of_torch_threads():
    from shapetrace.gallery.layers import ConvLayer
    from shapetrace.gallery.photo import transposed_pictures

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = [p.png for p in transposed_pictures("t", lambda: ConvLayer(3, 6, transpose=True))]
        torch.set_num_threads(4)
        four = [p.png for p in transposed_pictures("t", lambda: ConvLayer(3, 6, transpose=True))]
    finally:
        torch.set_num_threads(threads)
    assert one == four
