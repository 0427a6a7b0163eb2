"""Behaviour of shapetrace.gallery.layers: the fastai 2.8 building blocks, re-made in plain PyTorch.

Numbers marked "fastai 2.8" come from /work/shared/facts/chapter15-fastai-2.8.md (measured on fastai 2.8.12).
The state_dict keys below (weight norm, spectral norm, PixelShuffle_ICNR, SelfAttention) were checked against
real fastai 2.8.12 layers (torch 2.14.1, in a scratch environment outside this repository): same keys, order,
shapes, parameter counts, calls and outputs for ConvLayer (plain, transpose, stride 2, 1d, weight/spectral/
instance norm, BatchZero with bn_1st=False, no norm or activation), AdaptiveConcatPool2d, LinBnDrop,
PixelShuffle_ICNR, SelfAttention and ResBlock.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shapetrace.gallery.layers import (
    AdaptiveConcatPool2d,
    BatchNorm,
    ConvLayer,
    Flatten,
    LinBnDrop,
    MergeLayer,
    NormType,
    PixelShuffle_ICNR,
    ResBlock,
    ResizeToOrig,
    SelfAttention,
    SequentialEx,
    SigmoidRange,
    ToTensorBase,
    icnr_init,
    sigmoid_range,
)
from shapetrace.gallery.photo import photo_tensor


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def types(m: nn.Module) -> list[type]:
    return [type(c) for c in m.children()]


@pytest.fixture(scope="module")
def photo_crop() -> torch.Tensor:
    return photo_tensor(1000, 846)


# --- Flatten, LinBnDrop, SigmoidRange ----------------------------------------------------------------------

def test_flatten_keeps_the_batch_dimension():
    assert Flatten()(torch.zeros(2, 3, 4, 5)).shape == (2, 60)


def test_flatten_full_gives_one_dimension():
    assert Flatten(full=True)(torch.zeros(2, 3, 4)).shape == (24,)


def test_linbndrop_default_order_is_batchnorm_dropout_linear_act():
    m = LinBnDrop(10, 5, p=0.2, act=nn.ReLU())
    assert types(m) == [nn.BatchNorm1d, nn.Dropout, nn.Linear, nn.ReLU]
    assert m[0].num_features == 10


def test_linbndrop_lin_first_order_is_linear_act_batchnorm_dropout():
    m = LinBnDrop(10, 5, p=0.2, act=nn.ReLU(), lin_first=True)
    assert types(m) == [nn.Linear, nn.ReLU, nn.BatchNorm1d, nn.Dropout]
    assert m[2].num_features == 5


def test_linbndrop_linear_has_a_bias_only_without_batchnorm():
    assert LinBnDrop(10, 5)[-1].bias is None
    assert LinBnDrop(10, 5, bn=False)[-1].bias is not None


def test_linbndrop_leaves_out_dropout_when_p_is_zero():
    assert types(LinBnDrop(10, 5, bn=False)) == [nn.Linear]


def test_batchnorm_starts_with_bias_1e_3_and_weight_1_or_0_for_batchzero():
    bn = BatchNorm(4)
    assert torch.all(bn.bias == 1e-3) and torch.all(bn.weight == 1)
    assert torch.all(BatchNorm(4, norm_type=NormType.BatchZero).weight == 0)
    assert isinstance(BatchNorm(4, ndim=1), nn.BatchNorm1d)


def test_sigmoid_range_maps_into_low_high():
    x = torch.tensor([-100.0, 0.0, 100.0])
    assert torch.allclose(SigmoidRange(-3, 3)(x), torch.tensor([-3.0, 0.0, 3.0]))
    assert torch.allclose(sigmoid_range(x, 0, 1), torch.sigmoid(x))


# --- AdaptiveConcatPool2d -----------------------------------------------------------------------------------

def test_adaptive_concat_pool_doubles_channels():
    # fastai 2.8: (2,512,7,7) -> (2,1024,1,1)
    assert AdaptiveConcatPool2d()(torch.rand(2, 512, 7, 7)).shape == (2, 1024, 1, 1)


def test_adaptive_concat_pool_puts_max_first_then_average():
    x = torch.randn(2, 512, 7, 7)
    out = AdaptiveConcatPool2d()(x)
    assert torch.equal(out[:, :512], F.adaptive_max_pool2d(x, 1))
    assert torch.allclose(out[:, 512:], F.adaptive_avg_pool2d(x, 1))


def test_adaptive_concat_pool_size_sets_both_pools():
    assert AdaptiveConcatPool2d(2)(torch.rand(1, 3, 8, 8)).shape == (1, 6, 2, 2)


# --- ConvLayer ----------------------------------------------------------------------------------------------

def test_transposed_convlayer_on_the_photo_crop_grows_each_side_by_ks_minus_1(photo_crop):
    # fastai 2.8: ConvTranspose2d(ks 3, stride 1, padding 0, bias=False) -> BatchNorm2d -> ReLU; 174 params
    m = ConvLayer(3, 6, transpose=True).eval()
    assert photo_crop.shape == (1, 3, 1000, 846)
    assert types(m) == [nn.ConvTranspose2d, nn.BatchNorm2d, nn.ReLU]
    assert m[0].padding == (0, 0) and m[0].stride == (1, 1) and m[0].bias is None
    assert n_params(m) == 174
    with torch.no_grad():
        assert m(photo_crop).shape == (1, 6, 1002, 848)


def test_convlayer_pads_ks_minus_1_over_2_and_keeps_the_size(photo_crop):
    m = ConvLayer(3, 6).eval()
    assert m[0].padding == (1, 1)
    with torch.no_grad():
        assert m(photo_crop).shape == (1, 6, 1000, 846)


def test_transposed_convlayer_with_stride_2_doubles_the_size(photo_crop):
    # fastai 2.8: ConvLayer(3,6, ks=4, stride=2, transpose=True, padding=1) -> (1,6,2000,1692); 300 params
    m = ConvLayer(3, 6, ks=4, stride=2, transpose=True, padding=1).eval()
    assert n_params(m) == 300
    with torch.no_grad():
        assert m(photo_crop).shape == (1, 6, 2000, 1692)


@pytest.mark.parametrize(("norm_type", "norm_cls", "bias"), [
    (NormType.Batch, nn.BatchNorm2d, False),
    (NormType.BatchZero, nn.BatchNorm2d, False),
    (NormType.Instance, nn.InstanceNorm2d, False),
    (NormType.InstanceZero, nn.InstanceNorm2d, False),
    (None, None, True),
])
def test_convlayer_has_a_bias_only_without_batch_or_instance_norm(norm_type, norm_cls, bias):
    m = ConvLayer(3, 8, norm_type=norm_type)
    assert (m[0].bias is not None) == bias
    assert [type(c) for c in m.children()][1:] == ([norm_cls, nn.ReLU] if norm_cls else [nn.ReLU])


def test_convlayer_zero_norm_types_start_with_weight_zero():
    assert torch.all(ConvLayer(3, 8, norm_type=NormType.BatchZero)[1].weight == 0)
    assert torch.all(ConvLayer(3, 8, norm_type=NormType.InstanceZero)[1].weight == 0)


def test_convlayer_weight_norm_wraps_the_conv_with_weight_g_and_weight_v():
    keys = set(ConvLayer(3, 8, norm_type=NormType.Weight).state_dict())
    assert keys == {"0.bias", "0.weight_g", "0.weight_v"}


def test_convlayer_spectral_norm_wraps_the_conv_with_weight_orig():
    keys = set(ConvLayer(3, 8, norm_type=NormType.Spectral).state_dict())
    assert keys == {"0.bias", "0.weight_orig", "0.weight_u", "0.weight_v"}


def test_convlayer_bn_1st_false_puts_the_activation_before_the_norm():
    assert types(ConvLayer(3, 8, bn_1st=False)) == [nn.Conv2d, nn.ReLU, nn.BatchNorm2d]


def test_convlayer_act_cls_none_leaves_out_the_activation_and_xtra_comes_last():
    assert types(ConvLayer(3, 8, act_cls=None, xtra=nn.Identity())) == [nn.Conv2d, nn.BatchNorm2d, nn.Identity]


@pytest.mark.parametrize(("ndim", "conv", "norm", "shape"), [
    (1, nn.Conv1d, nn.BatchNorm1d, (1, 3, 9)),
    (3, nn.Conv3d, nn.BatchNorm3d, (1, 3, 4, 4, 4)),
])
def test_convlayer_builds_1d_and_3d_layers(ndim, conv, norm, shape):
    m = ConvLayer(3, 8, ndim=ndim).eval()
    assert types(m) == [conv, norm, nn.ReLU]
    assert m(torch.rand(shape)).shape == (1, 8, *shape[2:])


def test_convlayer_bias_is_drawn_with_std_bias_std():
    assert torch.all(ConvLayer(3, 8, norm_type=None, bias_std=0)[0].bias == 0)
    assert ConvLayer(3, 64, norm_type=None)[0].bias.abs().max() < 0.1


# --- PixelShuffle_ICNR, icnr_init, SelfAttention -----------------------------------------------------------

def test_icnr_init_repeats_each_kernel_scale_squared_times():
    w = icnr_init(torch.empty(16 * 4, 8, 1, 1))
    for i in range(0, 64, 4):
        assert torch.equal(w[i], w[i + 1]) and torch.equal(w[i], w[i + 3])
    assert not torch.equal(w[0], w[4])


def test_pixelshuffle_icnr_doubles_the_size_with_zero_bias_and_weight_norm_by_default():
    m = PixelShuffle_ICNR(16, 8).eval()
    assert types(m) == [ConvLayer, nn.PixelShuffle]
    assert set(m.state_dict()) == {"0.0.bias", "0.0.weight_g", "0.0.weight_v"}
    assert torch.all(m[0][0].bias == 0)
    assert m(torch.rand(1, 16, 5, 7)).shape == (1, 8, 10, 14)


def test_pixelshuffle_icnr_output_starts_without_checkerboard():
    m = PixelShuffle_ICNR(4, 4, norm_type=None).eval()
    out = m(torch.rand(1, 4, 3, 3))
    assert torch.allclose(out[..., 0::2, 0::2], out[..., 1::2, 1::2])


def test_pixelshuffle_icnr_blur_adds_replication_pad_and_avg_pool_and_keeps_the_size():
    m = PixelShuffle_ICNR(16, blur=True).eval()
    assert types(m) == [ConvLayer, nn.PixelShuffle, nn.ReplicationPad2d, nn.AvgPool2d]
    assert m(torch.rand(1, 16, 5, 5)).shape == (1, 16, 10, 10)


def test_self_attention_starts_as_the_identity():
    m = SelfAttention(64).eval()
    x = torch.randn(2, 64, 4, 5)
    assert m.gamma.item() == 0
    assert torch.allclose(m(x), x)


def test_self_attention_uses_spectral_normed_1d_convs_without_bias():
    m = SelfAttention(64)
    assert set(m.state_dict()) == {"gamma"} | {f"{p}.0.weight_{s}" for p in ("query", "key", "value")
                                               for s in ("orig", "u", "v")}
    assert m.query[0].weight_orig.shape == (8, 64, 1) and m.value[0].weight_orig.shape == (64, 64, 1)
    assert n_params(m) == 64 * 8 * 2 + 64 * 64 + 1


# --- ResBlock, SequentialEx, MergeLayer, ResizeToOrig -------------------------------------------------------

def test_resblock_expansion_1_is_two_convs_the_second_without_activation():
    m = ResBlock(1, 99, 99, norm_type=None)
    assert [types(c) for c in m.convpath] == [[nn.Conv2d, nn.ReLU], [nn.Conv2d]]
    assert len(m.idpath) == 0
    assert n_params(m) == 2 * (99 * 99 * 9 + 99)


def test_resblock_batch_norm_zero_initialises_the_last_norm():
    m = ResBlock(1, 8, 8)
    assert torch.all(m.convpath[1][1].weight == 0) and torch.all(m.convpath[0][1].weight == 1)


def test_resblock_bottleneck_with_stride_pools_then_projects_the_identity():
    m = ResBlock(4, 16, 8, stride=2).eval()
    assert len(m.convpath) == 3
    assert types(m.idpath) == [nn.AvgPool2d, ConvLayer]
    assert m(torch.rand(1, 64, 8, 8)).shape == (1, 32, 4, 4)


def test_sequentialex_lets_merge_layer_concatenate_the_block_input():
    m = SequentialEx(nn.Conv2d(3, 5, 1), MergeLayer(dense=True))
    x = torch.rand(1, 3, 4, 4)
    out = m(x)
    assert out.shape == (1, 8, 4, 4)
    assert torch.equal(out[:, 5:], x)


def test_merge_layer_adds_the_block_input_when_not_dense():
    m = SequentialEx(nn.Identity(), MergeLayer())
    x = torch.rand(1, 3, 4, 4)
    assert torch.equal(m(x), 2 * x)


def test_sequentialex_clears_orig_attributes_after_the_forward():
    x = torch.rand(1, 3, 4, 4)
    out = SequentialEx(nn.Conv2d(3, 3, 1))(x)
    assert x.orig is None and out.orig is None


def test_resize_to_orig_interpolates_back_to_the_input_size():
    m = SequentialEx(nn.Upsample(scale_factor=2), ResizeToOrig())
    assert m(torch.rand(1, 3, 5, 7)).shape == (1, 3, 5, 7)


def test_to_tensor_base_returns_a_plain_tensor():
    class Sub(torch.Tensor):
        pass

    x = torch.rand(2).as_subclass(Sub)
    assert type(ToTensorBase()(x)) is torch.Tensor


# --- no shared activations ----------------------------------------------------------------------------------

def test_each_convlayer_owns_its_activation():
    a, b = ConvLayer(3, 3), ConvLayer(3, 3)
    assert a[2] is not b[2]


def test_resblock_owns_its_activations():
    m = ResBlock(1, 8, 8)
    acts = [mod for mod in m.modules() if isinstance(mod, nn.ReLU)]
    assert len({id(a) for a in acts}) == len(acts) == 2


def test_every_public_architecture_name_is_importable_from_shapetrace_gallery():
    import importlib

    from shapetrace import gallery

    for topic in ("layers", "vision", "unet", "tabular", "text"):
        module = importlib.import_module(f"shapetrace.gallery.{topic}")
        missing = [n for n in module.__all__ if getattr(gallery, n, None) is not getattr(module, n)]
        assert not missing, f"shapetrace.gallery lacks {topic}'s {missing}"
