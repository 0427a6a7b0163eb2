"""Transfer-learning models of chapter 15 in plain PyTorch: body, head, cut and parameter groups as fastai 2.8.

``create_vision_model(arch, n_out)`` gives ``nn.Sequential(body, head)`` exactly as fastai's
``create_vision_model``: the torchvision model cut at ``model_meta[arch]["cut"]`` (or at its last pooling
layer), then ``create_head``. Nothing is downloaded: ``pretrained=True`` loads torchvision weights only when
they are already in torch's hub cache, and otherwise raises :class:`PretrainedWeightsNotFound`.
"""

from __future__ import annotations

import inspect
import itertools
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torchvision import models

from .layers import (
    AdaptiveConcatPool2d,
    Flatten,
    LinBnDrop,
    SigmoidRange,
    apply_init,
    norm_types,
)

__all__ = [
    "PretrainedWeightsNotFound",
    "SiameseModel",
    "add_head",
    "alexnet_split",
    "block_groups",
    "block_split",
    "create_body",
    "create_head",
    "create_vision_model",
    "cut_model",
    "default_split",
    "densenet_split",
    "freeze_to",
    "has_pool_type",
    "imagenet_stats",
    "load_arch",
    "model_meta",
    "num_features_model",
    "param_groups",
    "resnet_split",
    "siamese_groups",
    "siamese_split",
    "squeezenet_split",
    "vgg_split",
]

imagenet_stats = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])

ModuleGroups = dict[str, list[nn.Module]]


class PretrainedWeightsNotFound(FileNotFoundError):
    """Raised when pretrained weights are asked for but are not on disk (shapetrace never downloads)."""


# --- cutting a model into a body ---------------------------------------------------------------------------

def _is_pool_type(m: nn.Module) -> bool:
    return re.search(r"Pool[123]d$", type(m).__name__) is not None


def has_pool_type(m: nn.Module) -> bool:
    """Whether ``m`` is, or contains, a pooling layer (a class named ``...Pool1d/2d/3d``)."""
    return _is_pool_type(m) or any(has_pool_type(c) for c in m.children())


def cut_model(model: nn.Module, cut: int | Callable[[nn.Module], nn.Module]) -> nn.Module:
    """The children of ``model`` before index ``cut`` as an ``nn.Sequential``, or ``cut(model)`` for a callable."""
    if isinstance(cut, int):
        return nn.Sequential(*list(model.children())[:cut])
    if callable(cut):
        return cut(model)
    raise TypeError(f"cut must be an int or a function, not {type(cut).__name__}")


def _first_layer(m: nn.Module) -> tuple[nn.Module, nn.Module | None, str | None]:
    """The first leaf module, following first children, with its parent and attribute name."""
    layer, parent, name = m, None, None
    while True:
        children = list(layer.named_children())
        if not children:
            return layer, parent, name
        parent, (name, layer) = layer, children[0]


def _update_first_layer(model: nn.Module, n_in: int, pretrained: bool) -> None:
    """Swap the first conv for one taking ``n_in`` channels (fastai's rule for copying pretrained weights)."""
    if n_in == 3:
        return
    first, parent, name = _first_layer(model)
    if not isinstance(first, nn.Conv2d) or parent is None:
        raise ValueError(f"changing the input channels needs a Conv2d first layer, found {type(first).__name__}")
    if first.in_channels != 3:
        raise ValueError(f"expected a first layer with 3 input channels, found {first.in_channels}")
    new = nn.Conv2d(n_in, first.out_channels, first.kernel_size, stride=first.stride, padding=first.padding,
                    dilation=first.dilation, groups=first.groups, bias=first.bias is not None,
                    padding_mode=first.padding_mode)
    if pretrained:
        with torch.no_grad():
            old = first.weight
            if n_in == 1:
                new.weight.copy_(old.sum(dim=1, keepdim=True))
            elif n_in == 2:
                new.weight.copy_(old[:, :2] * 1.5)
            else:
                new.weight[:, :3] = old
                new.weight[:, 3:] = 0
    setattr(parent, name, new)


def create_body(model: nn.Module, n_in: int = 3, pretrained: bool = False,
                cut: int | Callable[[nn.Module], nn.Module] | None = None) -> nn.Module:
    """The body of ``model``: its children up to ``cut``, or up to its last child holding a pooling layer.

    ``n_in != 3`` replaces the first conv (with ``pretrained``, its weights are adapted like fastai does).
    """
    _update_first_layer(model, n_in, pretrained)
    if cut is None:
        children = list(model.children())
        cut = next((i for i in reversed(range(len(children))) if has_pool_type(children[i])), None)
        if cut is None:
            raise ValueError("no pooling layer to cut at; pass cut explicitly")
    return cut_model(model, cut)


def _in_channels(m: nn.Module) -> int:
    for layer in m.modules():
        if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return layer.in_channels
    raise ValueError("no convolution found to tell the number of input channels")


def num_features_model(m: nn.Module) -> int:
    """Channels coming out of ``m``, found with a dummy forward (64x64, growing if the model needs more)."""
    was_training = m.training
    m.eval()
    try:
        size, last_error = 64, None
        while size <= 2048:
            try:
                with torch.no_grad():
                    return int(m(torch.zeros(1, _in_channels(m), size, size)).shape[1])
            except RuntimeError as e:  # too small for the model's downsampling
                last_error, size = e, size * 2
        raise ValueError(f"could not run a dummy batch through the model: {last_error}")
    finally:
        m.train(was_training)


# --- the head ----------------------------------------------------------------------------------------------

def create_head(nf: int, n_out: int, lin_ftrs: Sequence[int] | None = None, ps: float | Sequence[float] = 0.5,
                pool: bool = True, concat_pool: bool = True, first_bn: bool = True, bn_final: bool = False,
                lin_first: bool = False, y_range: tuple[float, float] | None = None) -> nn.Sequential:
    """fastai 2.8's classifier head for ``nf`` body features and ``n_out`` outputs, as one flat ``nn.Sequential``.

    ``nf`` is doubled here when pooling is concat pooling. Hidden sizes default to ``[512]``; a single ``ps``
    gives the last dropout ``ps`` and each earlier one ``ps / 2``. Every hidden block is a ``LinBnDrop`` with
    its own ReLU; ``lin_first`` puts a Dropout before the blocks and a biased Linear after them.
    """
    if pool and concat_pool:
        nf *= 2
    sizes = [nf, 512, n_out] if lin_ftrs is None else [nf, *lin_ftrs, n_out]
    bns = [first_bn] + [True] * len(sizes[1:])
    ps = [ps] if isinstance(ps, (int, float)) else list(ps)
    if len(ps) == 1:
        ps = [ps[0] / 2] * (len(sizes) - 2) + ps
    n_hidden = len(sizes) - 2
    layers: list[nn.Module] = []
    if pool:
        layers += [AdaptiveConcatPool2d() if concat_pool else nn.AdaptiveAvgPool2d(1), Flatten()]
    if lin_first:
        layers.append(nn.Dropout(ps.pop(0)))
    for i, (ni, no, bn, p) in enumerate(zip(sizes[:-1], sizes[1:], bns, ps)):
        act = nn.ReLU(inplace=True) if i < n_hidden else None  # a fresh ReLU per block (fastai shares one)
        layers += list(LinBnDrop(ni, no, bn=bn, p=p, act=act, lin_first=lin_first))
    if lin_first:
        layers.append(nn.Linear(sizes[-2], n_out))
    if bn_final:
        layers.append(nn.BatchNorm1d(sizes[-1], momentum=0.01))
    if y_range is not None:
        layers.append(SigmoidRange(*y_range))
    return nn.Sequential(*layers)


def add_head(body: nn.Module, nf: int, n_out: int, init: Callable | None = nn.init.kaiming_normal_,
             head: nn.Module | None = None, concat_pool: bool = True, pool: bool = True,
             lin_ftrs: Sequence[int] | None = None, ps: float | Sequence[float] = 0.5, first_bn: bool = True,
             bn_final: bool = False, lin_first: bool = False, y_range: tuple[float, float] | None = None
             ) -> nn.Sequential:
    """``nn.Sequential(body, head)``, with ``head`` from :func:`create_head` unless given; ``init`` applied to it."""
    if head is None:
        head = create_head(nf, n_out, lin_ftrs=lin_ftrs, ps=ps, pool=pool, concat_pool=concat_pool,
                           first_bn=first_bn, bn_final=bn_final, lin_first=lin_first, y_range=y_range)
    model = nn.Sequential(body, head)
    if init is not None:
        apply_init(model[1], init)
    return model


# --- parameter groups (fastai's splitters) -----------------------------------------------------------------

def _params(groups: ModuleGroups) -> list[list[nn.Parameter]]:
    return [[p for m in mods for p in m.parameters()] for mods in groups.values()]


def _three(body: Sequence[nn.Module], at: int, head: Sequence[nn.Module]) -> ModuleGroups:
    return {"body-early": list(body)[:at], "body-late": list(body)[at:], "head": list(head)}


def default_groups(m: nn.Module) -> ModuleGroups:
    """fastai's ``default_split`` as modules: the body, then everything after it."""
    return {"body": [m[0]], "head": list(m)[1:]}


def resnet_groups(m: nn.Module) -> ModuleGroups:
    """fastai's ResNet split: stem + layer1 + layer2, layer3 + layer4, head."""
    return _three(m[0], 6, list(m)[1:])


def squeezenet_groups(m: nn.Module) -> ModuleGroups:
    return _three(m[0][0], 5, list(m)[1:])


def densenet_groups(m: nn.Module) -> ModuleGroups:
    return _three(m[0][0], 7, list(m)[1:])


def vgg_groups(m: nn.Module) -> ModuleGroups:
    return _three(m[0][0], 22, list(m)[1:])


def alexnet_groups(m: nn.Module) -> ModuleGroups:
    return _three(m[0][0], 6, list(m)[1:])


def block_groups(m: nn.Module) -> ModuleGroups:
    """One group per stage: the stem (everything before the first stage), each ``nn.Sequential`` stage of the
    body (``layer1`` ... ``layer4`` for a ResNet), then the head."""
    body = list(m[0])
    stage_idx = [i for i, c in enumerate(body) if isinstance(c, nn.Sequential)]
    if not stage_idx:
        raise ValueError("the body has no nn.Sequential stages to split at")
    groups: ModuleGroups = {"stem": body[:stage_idx[0]]}
    bounds = [*stage_idx, len(body)]
    for n, (a, b) in enumerate(itertools.pairwise(bounds), start=1):
        groups[f"layer{n}"] = body[a:b]
    groups["head"] = list(m)[1:]
    return groups


def siamese_groups(m: nn.Module) -> ModuleGroups:
    """The chapter's Siamese splitter as modules: the shared encoder, then the head."""
    return {"encoder": [m.encoder], "head": [m.head]}


def default_split(m: nn.Module) -> list[list[nn.Parameter]]:
    """Two parameter groups: body (``m[0]``) and head (``m[1:]``)."""
    return _params(default_groups(m))


def resnet_split(m: nn.Module) -> list[list[nn.Parameter]]:
    """Three parameter groups for a ResNet: ``m[0][:6]``, ``m[0][6:]``, ``m[1:]``."""
    return _params(resnet_groups(m))


def squeezenet_split(m: nn.Module) -> list[list[nn.Parameter]]:
    """Three parameter groups: ``m[0][0][:5]``, ``m[0][0][5:]``, ``m[1:]``."""
    return _params(squeezenet_groups(m))


def densenet_split(m: nn.Module) -> list[list[nn.Parameter]]:
    """Three parameter groups: ``m[0][0][:7]``, ``m[0][0][7:]``, ``m[1:]``."""
    return _params(densenet_groups(m))


def vgg_split(m: nn.Module) -> list[list[nn.Parameter]]:
    """Three parameter groups: ``m[0][0][:22]``, ``m[0][0][22:]``, ``m[1:]``."""
    return _params(vgg_groups(m))


def alexnet_split(m: nn.Module) -> list[list[nn.Parameter]]:
    """Three parameter groups: ``m[0][0][:6]``, ``m[0][0][6:]``, ``m[1:]``."""
    return _params(alexnet_groups(m))


def block_split(m: nn.Module) -> list[list[nn.Parameter]]:
    """Per-block parameter groups: stem, one per body stage, head (6 for a ResNet)."""
    return _params(block_groups(m))


def siamese_split(m: nn.Module) -> list[list[nn.Parameter]]:
    """Two parameter groups for a :class:`SiameseModel`: ``m.encoder``, ``m.head``."""
    return _params(siamese_groups(m))


_GROUPS_OF: dict[Callable, Callable[[nn.Module], ModuleGroups]] = {
    default_split: default_groups, resnet_split: resnet_groups, squeezenet_split: squeezenet_groups,
    densenet_split: densenet_groups, vgg_split: vgg_groups, alexnet_split: alexnet_groups,
    block_split: block_groups, siamese_split: siamese_groups,
}


def param_groups(model: nn.Module, splitter: Callable = resnet_split) -> dict[str, list[str]]:
    """The groups of ``splitter`` named, each as the qualified names of its modules in ``model``.

    ``{"body-early": ["0.0", "0.1", ...], "body-late": [...], "head": ["1"]}`` for ``resnet_split``.
    """
    groups_of = _GROUPS_OF.get(splitter)
    if groups_of is None:
        raise ValueError(f"no named groups known for splitter {getattr(splitter, '__name__', splitter)!r}")
    names = {id(mod): name for name, mod in model.named_modules()}
    return {group: [names[id(mod)] for mod in mods] for group, mods in groups_of(model).items()}


def freeze_to(model: nn.Module, n: int, splitter: Callable = resnet_split, train_bn: bool = True) -> None:
    """Make the parameter groups before group ``n`` untrainable and the rest trainable, as fastai's
    ``freeze_to``; with ``train_bn`` the normalisation layers stay trainable everywhere. ``n=-1`` is ``freeze``."""
    groups = splitter(model)
    for i, group in enumerate(groups):
        trainable = i >= (n % len(groups))
        for p in group:
            p.requires_grad_(trainable)
    if train_bn:
        for mod in model.modules():
            if isinstance(mod, norm_types):
                for p in mod.parameters(recurse=False):
                    p.requires_grad_(True)


# --- a model of one's own: the Siamese network ------------------------------------------------------------

class SiameseModel(nn.Module):
    """Chapter 15's Siamese network: one ``encoder`` run on each of two images, the two feature maps
    concatenated on channels, then ``head``. The encoder is a single module called twice, so both images go
    through the same weights."""

    def __init__(self, encoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        features = torch.cat([self.encoder(x1), self.encoder(x2)], dim=1)
        return self.head(features)


# --- the architectures fastai knows ------------------------------------------------------------------------

def _meta(cut: int, split: Callable) -> dict:
    return {"cut": cut, "split": split, "stats": imagenet_stats, "weights": "DEFAULT"}


_default_meta = {"cut": None, "split": default_split}

model_meta: dict[Callable, dict] = {
    **{arch: _meta(-2, resnet_split)
       for arch in (models.resnet18, models.resnet34, models.resnet50, models.resnet101, models.resnet152)},
    **{arch: _meta(-1, squeezenet_split) for arch in (models.squeezenet1_0, models.squeezenet1_1)},
    **{arch: _meta(-1, densenet_split)
       for arch in (models.densenet121, models.densenet169, models.densenet201, models.densenet161)},
    **{arch: _meta(-2, vgg_split) for arch in (models.vgg11_bn, models.vgg13_bn, models.vgg16_bn, models.vgg19_bn)},
    models.alexnet: _meta(-2, alexnet_split),
}
"""fastai 2.8's table for torchvision builders: where to cut, how to split, which normalisation stats."""


def _cached_weights_path(weights: object) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


def load_arch(arch: Callable[..., nn.Module], pretrained: bool = False, weights: object = None) -> nn.Module:
    """Build ``arch`` (a torchvision builder such as ``torchvision.models.resnet34``), randomly initialised
    unless ``pretrained`` or ``weights``; weights are read from torch's hub cache and never downloaded."""
    params = inspect.signature(arch).parameters
    if not (pretrained or weights is not None):
        if "weights" in params:
            return arch(weights=None)
        return arch(pretrained=False) if "pretrained" in params else arch()
    name = getattr(arch, "__name__", repr(arch))
    try:
        enum = torchvision.models.get_model_weights(arch)
    except (ValueError, KeyError, AttributeError):
        raise PretrainedWeightsNotFound(f"pretrained weights for {name} are not known to torchvision; "
                                        "use pretrained=False or load a state_dict yourself") from None
    chosen = enum.DEFAULT if weights is None or weights == "DEFAULT" else enum.verify(weights)
    path = _cached_weights_path(chosen)
    if not path.exists():
        raise PretrainedWeightsNotFound(
            f"pretrained weights {chosen} for {name} are not on disk (expected {path}); shapetrace never "
            "downloads weights: use pretrained=False, or put the checkpoint there first")
    return arch(weights=chosen)  # torchvision reads the cached file


def create_vision_model(arch: Callable[..., nn.Module], n_out: int, pretrained: bool = False, weights: object = None,
                        cut: int | Callable | None = None, n_in: int = 3,
                        init: Callable | None = nn.init.kaiming_normal_, custom_head: nn.Module | None = None,
                        concat_pool: bool = True, pool: bool = True, lin_ftrs: Sequence[int] | None = None,
                        ps: float | Sequence[float] = 0.5, first_bn: bool = True, bn_final: bool = False,
                        lin_first: bool = False, y_range: tuple[float, float] | None = None) -> nn.Sequential:
    """fastai 2.8's ``create_vision_model``: ``nn.Sequential(body, head)`` for a torchvision ``arch``.

    The body is ``arch`` cut at ``cut`` (default: ``model_meta``'s, else the last pooling layer); the head is
    ``custom_head`` or :func:`create_head` with the body's feature count, initialised with ``init``.
    """
    meta = model_meta.get(arch, _default_meta)
    model = load_arch(arch, pretrained, weights)
    body = create_body(model, n_in, pretrained or weights is not None, meta["cut"] if cut is None else cut)
    nf = num_features_model(nn.Sequential(*body.children())) if custom_head is None else None
    return add_head(body, nf, n_out, init=init, head=custom_head, concat_pool=concat_pool, pool=pool,
                    lin_ftrs=lin_ftrs, ps=ps, first_bn=first_bn, bn_final=bn_final, lin_first=lin_first,
                    y_range=y_range)
