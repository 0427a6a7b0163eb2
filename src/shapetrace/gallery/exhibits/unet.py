"""Gallery exhibits: segmentation and image-to-image models (the dynamic U-Net, a naive upsampling head)."""

from __future__ import annotations

import itertools

import torch
import torchvision
from torch import nn

from ..layers import ConvLayer, NormType
from ..unet import create_unet_model
from ..vision import create_body
from .registry import Exhibit, register

__all__: list[str] = []

CAMVID_SIZE = (360, 480)


# Drawn as single nodes in the diagrams: the decoder blocks and the tail's composite layers.
UNET_FOLD = ["UnetBlock", "ResBlock", "PixelShuffle_ICNR"]


def unet_cut(n_layers: int) -> dict[str, list[str]]:
    """The body/head split of a ``DynamicUnet`` with ``n_layers`` entries in ``layers``: the encoder is the body."""
    return {"body": ["layers.0"], "head": [f"layers.{i}" for i in range(1, n_layers)]}


def _rand(*shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(0))


def _camvid_input() -> tuple[tuple, dict]:
    return (_rand(1, 3, *CAMVID_SIZE),), {}


register(Exhibit(
    name="camvid-unet",
    question='How does DynamicUnet build its decoder, and where do its skip connections come from?',
    title="The CamVid U-Net: DynamicUnet on a resnet34 body",
    caption=(
        "create_unet_model(resnet34, 32, (360, 480)) runs a dummy image through the encoder, hooks the encoder "
        "children after which the spatial size changes (6, 5, 4 and 2) and builds one UnetBlock per hook, deepest first. "
        "Each block upsamples with PixelShuffle_ICNR, resizes to its skip if the sizes differ (12x15 doubles to "
        "24x30 but the skip is 23x30) and reads the skip from the hook, a side input that is not an argument of "
        "its forward: skips of 256@23x30, 128@45x60, 64@90x120 and 64@180x240, giving block outputs of "
        "512@23x30, 384@45x60, 256@90x120 and 96@180x240. A last PixelShuffle_ICNR reaches 360x480, "
        "the input image is concatenated back (99 channels), and a ResBlock and a 1x1 ConvLayer give 32 class "
        "scores per pixel. 41,224,168 parameters; fastai 2.8 also puts a ResizeToOrig before that last cross "
        "and a ToTensorBase at the very end."),
    build=lambda: create_unet_model(torchvision.models.resnet34, 32, CAMVID_SIZE).eval(),
    inputs=_camvid_input,
    topic="unet",
    cost=4,
    options={"layout": "u", "depth": 2, "fold": UNET_FOLD, "cut": unet_cut(14)},
))


register(Exhibit(
    name="camvid-unet-blur-attention",
    question='What do blur, self_attention, last_cross and y_range add to the U-Net?',
    title="The CamVid U-Net with blur, self-attention, last_cross and y_range",
    caption=(
        "blur=True appends ReplicationPad2d and a 2x2 stride-1 AvgPool2d to every PixelShuffle_ICNR in the "
        "UnetBlocks, against checkerboard artefacts (the final upsampler outside the blocks is never blurred). "
        "self_attention=True adds a SelfAttention layer after the second conv of the second UnetBlock only (the "
        "third from last), its gamma starting at 0. last_cross keeps the dense merge with the input and the "
        "ResBlock; y_range=(0, 1) ends with a SigmoidRange. 41,408,489 parameters; without last_cross the plain "
        "U-Net has 41,047,456. The diagram folds each UnetBlock into one box, so the blur and self-attention "
        "layers are inside those boxes; the table below lists them."),
    build=lambda: create_unet_model(torchvision.models.resnet34, 32, CAMVID_SIZE, blur=True, self_attention=True,
                                    last_cross=True, y_range=(0, 1)).eval(),
    inputs=_camvid_input,
    topic="unet",
    cost=4,
    options={"layout": "u", "depth": 2, "fold": UNET_FOLD, "cut": unet_cut(15)},
))


SUPERRES_SIZE = (128, 128)

register(Exhibit(
    name="superres-unet",
    question='How does the same U-Net serve image-to-image tasks such as super-resolution?',
    title="An image-to-image U-Net (super-resolution, colourisation)",
    caption=(
        "For image-to-image work the U-Net outputs 3 channels, one per colour, instead of class scores, and "
        "y_range=(-3, 3) bounds them with a SigmoidRange to the range of normalised pixels. This is the setup of "
        "fastai's super-resolution and colourisation examples: weight-normalised convolutions "
        "(norm_type=NormType.Weight, so the decoder convs hold weight_g and weight_v), blur and self-attention."),
    build=lambda: create_unet_model(torchvision.models.resnet34, 3, SUPERRES_SIZE, blur=True, self_attention=True,
                                    norm_type=NormType.Weight, y_range=(-3.0, 3.0)).eval(),
    inputs=lambda: ((_rand(1, 3, *SUPERRES_SIZE),), {}),
    topic="unet",
    cost=5,
    options={"layout": "u", "depth": 2, "fold": UNET_FOLD, "cut": unet_cut(15)},
))


def nearest_segmentation_head(n_out: int = 32) -> nn.Sequential:
    """Five stages of (nearest-neighbour x2 upsample, ConvLayer) from 512 channels down to 16, then a 1x1 conv."""
    chans = [512, 256, 128, 64, 32, 16]
    stages = [nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), ConvLayer(ni, nf))
              for ni, nf in itertools.pairwise(chans)]
    return nn.Sequential(*stages, ConvLayer(chans[-1], n_out, ks=1, act_cls=None, norm_type=None))


def _naive_segmenter() -> nn.Module:
    body = create_body(torchvision.models.resnet34(weights=None), cut=-2)
    return nn.Sequential(body, nearest_segmentation_head(32)).eval()


register(Exhibit(
    name="nearest-upsample-segmenter",
    question="Why is upsampling the body's 7×7 output not enough for segmentation?",
    title="A segmentation head that only upsamples",
    caption=(
        "The chapter's first idea for segmentation: keep the resnet34 body and grow its 7x7 grid back to "
        "224x224 with five rounds of nearest-neighbour upsampling (x2) and a 3x3 ConvLayer, then a 1x1 conv to "
        "32 classes. It runs, but all detail must come through the 7x7 bottleneck; the U-Net adds skip "
        "connections from the encoder for that reason."),
    build=_naive_segmenter,
    cost=2,
    inputs=lambda: ((_rand(1, 3, 224, 224),), {}),
    topic="unet",
    options={"depth": 2, "cut": {"body": ["0"], "head": ["1"]}},
))
