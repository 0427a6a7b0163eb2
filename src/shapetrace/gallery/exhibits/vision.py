"""Gallery exhibits: transfer learning for vision (body, head, cut, pooling, upsampling, parameter groups)."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from ..layers import AdaptiveConcatPool2d, ConvLayer
from ..photo import photo_tensor, transposed_pictures, upsample_pictures
from ..vision import (
    SiameseModel,
    block_split,
    create_body,
    create_head,
    create_vision_model,
    model_meta,
    siamese_split,
)
from .registry import Exhibit, register

__all__: list[str] = []

_RESNET34_CHILDREN = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
_PET_CUT = {"body": ["0"], "head": ["1"]}
# block_split's groups for create_vision_model(resnet34, ...), as module names (checked by the tests).
RESNET34_BLOCK_GROUPS = {"stem": ["0.0", "0.1", "0.2", "0.3"], "layer1": ["0.4"], "layer2": ["0.5"],
                         "layer3": ["0.6"], "layer4": ["0.7"], "head": ["1"]}
# One member of each torchvision family in model_meta, with the cut fastai uses.
META_FAMILIES = {"resnet": torchvision.models.resnet18, "squeezenet": torchvision.models.squeezenet1_1,
                 "densenet": torchvision.models.densenet121, "vgg_bn": torchvision.models.vgg11_bn,
                 "alexnet": torchvision.models.alexnet}


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def _image(batch: int = 2, size: int = 224) -> tuple[tuple, dict]:
    return (_rand(batch, 3, size, size),), {}


def _features() -> tuple[tuple, dict]:
    return (_rand(2, 512, 7, 7),), {}


def _pet_model() -> nn.Module:
    return create_vision_model(torchvision.models.resnet34, 37).eval()


register(Exhibit(
    name="pet-recognizer-resnet34",
    question='What does the whole pet-breed model look like, body and head together?',
    title="The pet recognizer: resnet34 body + fastai head",
    caption=(
        "create_vision_model(resnet34, 37) is nn.Sequential(body, head). The body is torchvision's resnet34 with "
        "its last two children (average pool and fc) cut off, so it ends on layer4's 512 channels at 7x7 for a "
        "224x224 image; the head pools, flattens and classifies into the 37 breeds. 21,830,976 parameters, "
        "546,304 of them in the head."),
    build=_pet_model,
    inputs=_image,
    cost=2,
    options={"depth": 2, "cut": _PET_CUT, "overlays": ["cut"]},
))


def _resnet34_full() -> nn.Module:
    return torchvision.models.resnet34(weights=None).eval()


register(Exhibit(
    name="resnet34-cut",
    question='Where does fastai cut a pretrained model, and what is left of it?',
    title="Where fastai cuts resnet34",
    caption=(
        "model_meta gives resnet34 a cut of -2: create_body keeps children 0-7 (conv1 to layer4) and drops "
        "avgpool and fc, which only make sense for ImageNet's 1000 classes. With no cut in the table, fastai "
        "cuts before the last child that contains a pooling layer, which here is the same place. The body alone "
        "has 21,284,672 parameters."),
    build=_resnet34_full,
    inputs=_image,
    cost=2,
    options={"depth": 1, "cut": {"body": _RESNET34_CHILDREN, "removed": ["avgpool", "fc"]}, "overlays": ["cut"]},
))


class FamilyBodies(nn.Module):
    """The body of one architecture per ``model_meta`` family, each run on the same image."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies = nn.ModuleDict({
            family: create_body(arch(weights=None), cut=model_meta[arch]["cut"])
            for family, arch in META_FAMILIES.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {family: body(x) for family, body in self.bodies.items()}


def _meta_table() -> dict:
    return {family: {"arch": arch.__name__, "cut": model_meta[arch]["cut"],
                     "split": model_meta[arch]["split"].__name__, "stats": model_meta[arch]["stats"]}
            for family, arch in META_FAMILIES.items()}


register(Exhibit(
    name="model-meta-bodies",
    question='How does fastai know where to cut each architecture, and which statistics its weights expect?',
    title="model_meta: one body per known family",
    caption=(
        "fastai's model_meta tells, for each torchvision builder it knows, where to cut the body off, how to "
        "split the parameters into groups for discriminative learning rates, and which normalisation stats "
        "(ImageNet's) the pretrained weights expect. ResNets and VGGs are cut at -2, SqueezeNet and DenseNet at "
        "-1 (their classifier is one child), AlexNet at -2. Each body keeps its feature maps: 512, 512, 1024, "
        "512 and 256 channels here."),
    build=lambda: FamilyBodies().eval(),
    cost=11,
    inputs=lambda: _image(batch=1),
    options={"depth": 2, "model_meta": _meta_table()},
))


HEAD_QUESTIONS = {
    "create-head-default": "What does create_head build, and why does its first layer see 1024 features?",
    "create-head-lin-ftrs": "What do lin_ftrs and ps change in the head?",
    "create-head-avg-pool": "What changes in the head without concat pooling?",
    "create-head-bn-final-lin-first": "What do bn_final and lin_first change in the head?",
}


def _head_exhibit(name: str, title: str, caption: str, **kwargs) -> None:
    register(Exhibit(name=name, title=title, caption=caption, question=HEAD_QUESTIONS[name],
                     build=lambda: create_head(512, 37, **kwargs).eval(), inputs=_features,
                     options={"depth": 1, "create_head": {"nf": 512, "n_out": 37, **kwargs}}))


_head_exhibit(
    "create-head-default", "create_head(512, 37): the default head",
    "Concat pooling turns the (2,512,7,7) features into 1024 numbers per image: create_head doubles nf itself "
    "in fastai 2.8 (the book's create_head(20,2) printout with BatchNorm1d(20) predates that and would show 40 "
    "now). Then two BatchNorm1d-Dropout-Linear blocks, 1024 -> 512 -> 37, with dropout ps/2 = 0.25 then 0.5; "
    "the Linears have no bias because a batchnorm precedes them. 546,304 parameters.")
_head_exhibit(
    "create-head-lin-ftrs", "create_head with lin_ftrs=[1024, 512], ps=0.25",
    "lin_ftrs sets the hidden sizes, so there are three Linear layers, 1024 -> 1024 -> 512 -> 37. A single ps is "
    "the last dropout; every earlier one is ps/2, giving 0.125, 0.125, 0.25. 1,596,928 parameters. fastai "
    "shares one ReLU object between the two hidden blocks; here each block owns its ReLU, which changes no "
    "weights.",
    lin_ftrs=[1024, 512], ps=0.25)
_head_exhibit(
    "create-head-avg-pool", "create_head with concat_pool=False",
    "Plain AdaptiveAvgPool2d(1) instead of concat pooling: nf is not doubled, so the first BatchNorm1d and "
    "Linear see 512 features and the head has 283,136 parameters instead of 546,304.",
    concat_pool=False)
_head_exhibit(
    "create-head-bn-final-lin-first", "create_head with bn_final=True, lin_first=True",
    "lin_first moves each Linear before its batchnorm and dropout, puts a Dropout(0.25) straight after Flatten "
    "and ends with a separate Linear(512, 37) that has a bias; bn_final adds BatchNorm1d(37, momentum=0.01) at "
    "the very end. 544,367 parameters.",
    bn_final=True, lin_first=True)


class ConcatVsAvgPool(nn.Module):
    """Concat pooling and average pooling side by side on the same feature map."""

    def __init__(self) -> None:
        super().__init__()
        self.concat = AdaptiveConcatPool2d()
        self.avg = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.concat(x), self.avg(x)


register(Exhibit(
    name="concat-pool-vs-avg-pool",
    question='What does AdaptiveConcatPool2d give the head that average pooling does not?',
    title="AdaptiveConcatPool2d against AdaptiveAvgPool2d",
    caption=(
        "On a (2,512,7,7) feature map, average pooling gives (2,512,1,1); AdaptiveConcatPool2d runs an adaptive "
        "max pool and an adaptive average pool and concatenates them on channels, max first, giving "
        "(2,1024,1,1). The head then sees both the strongest and the typical activation of every channel."),
    build=lambda: ConcatVsAvgPool().eval(),
    inputs=_features,
))


register(Exhibit(
    name="nearest-upsample-photo",
    question='How does a model make a small grid bigger, and what does nearest-neighbour upsampling do to a picture?',
    title="Nearest-neighbour upsampling on the photo",
    caption=(
        "nn.Upsample(scale_factor=2, mode='nearest') copies every pixel into a 2x2 block: the photo, "
        "600×512 pixels (height × width, the order of torch's (N, C, H, W)), becomes 1200×1024 with no new "
        "detail and no parameters. It is the simplest way to grow a feature map back towards image size."),
    build=lambda: nn.Upsample(scale_factor=2, mode="nearest").eval(),
    cost=2,
    inputs=lambda: ((photo_tensor(),), {}),
    topic="unet",
    pictures=upsample_pictures,
))


register(Exhibit(
    name="transposed-conv-photo",
    question="What does a transposed convolution (stride 1) do to an image's size?",
    title="ConvLayer(3, 6, transpose=True) on the photo",
    caption=(
        "A transposed ConvLayer uses ConvTranspose2d with padding 0 (fastai's rule for transpose), no bias "
        "because a BatchNorm2d follows, then ReLU: 174 parameters. With stride 1 it grows each side by ks-1, so "
        "the 1000×846 crop (height × width, the order of torch's (N, C, H, W)) becomes 1002×848; zeros between "
        "input pixels only appear with stride > 1 (ks=4, stride=2, padding=1 doubles the size)."),
    build=lambda: ConvLayer(3, 6, transpose=True).eval(),
    cost=5,
    inputs=lambda: ((photo_tensor(1000, 846),), {}),
    topic="unet",
    pictures=lambda name: transposed_pictures(name, lambda: ConvLayer(3, 6, transpose=True)),
))


register(Exhibit(
    name="resnet34-block-split",
    question="How are a model's parameters split into groups for discriminative learning rates?",
    title="Parameter groups, one per ResNet stage",
    caption=(
        "The per-block splitter puts the stem (conv1, bn1, relu, maxpool), each of layer1-layer4 and the head in "
        "groups of their own, so each stage can get its own learning rate. fastai's resnet splitter is coarser, "
        "three groups: stem to layer2 (1,347,904 parameters), layer3 and layer4 (19,936,768), the head "
        "(546,304); freezing all but the head while batchnorm stays trainable leaves 563,328 trainable."),
    build=_pet_model,
    inputs=_image,
    cost=2,
    options={"depth": 2, "param_groups": RESNET34_BLOCK_GROUPS, "cut": _PET_CUT, "overlays": ["groups"],
             "splitter": block_split.__name__},
))



def _siamese_model() -> nn.Module:
    # fastai 2.8's create_head doubles nf for concat pooling: the two 512-channel maps make 1024 channels,
    # so nf is 512*2 (the book's 512*4 predates the doubling and builds a head for 4096 features).
    encoder = create_body(torchvision.models.resnet34(weights=None), cut=-2)
    return SiameseModel(encoder, create_head(512 * 2, 2, ps=0.5)).eval()


def _image_pair() -> tuple[tuple, dict]:
    return (_rand(2, 3, 224, 224, seed=0), _rand(2, 3, 224, 224, seed=1)), {}


SIAMESE_GROUPS = {"encoder": ["encoder"], "head": ["head"]}

register(Exhibit(
    name="siamese-resnet34",
    question="How does one resnet34 body compare two images, and how many features must the head take?",
    title="A Siamese network: one encoder called on both images",
    caption=(
        "SiameseModel runs one encoder, resnet34 cut at -2, on each image and concatenates the two (2,512,7,7) "
        "feature maps on channels into (2,1024,7,7) for a head with 2 outputs: same breed or not. The encoder is "
        "a single module called twice, so its 21,284,672 parameters are shared and counted once. The book's "
        "create_head(512*4, 2, ps=0.5) counts both images and concat pooling, as its create_head did not double "
        "nf; fastai 2.8's does, so 512*4 now builds BatchNorm1d(4096) and Linear(4096, 512) and the forward "
        "fails on the 2048 pooled features. create_head(512*2, 2, ps=0.5), drawn here, gives BatchNorm1d(2048) "
        "and Linear(2048, 512): a head of 1,054,720 parameters, 22,339,392 in all. (fastai 2.8's create_body "
        "also takes a model, resnet34(), where the book passes the builder.) The splitter makes two parameter "
        "groups, the encoder and the head."),
    build=_siamese_model,
    inputs=_image_pair,
    cost=3,
    options={"depth": 1, "param_groups": SIAMESE_GROUPS, "overlays": ["groups"],
             "splitter": siamese_split.__name__},
))
