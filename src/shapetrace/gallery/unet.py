"""fastai 2.8's dynamic U-Net in plain PyTorch: a decoder sized by running the encoder once.

``DynamicUnet(encoder, n_out, img_size)`` runs a dummy batch of ``img_size`` through the encoder, finds the
encoder children after which the feature map's width changes, and keeps a forward hook on each of them.
Each ``UnetBlock`` reads its skip connection from such a hook (``hook.stored``) rather than from its forward
arguments: the skip is a side input that the module tree does not show.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import (
    BatchNorm,
    ConvLayer,
    MergeLayer,
    NormType,
    PixelShuffle_ICNR,
    ResBlock,
    ResizeToOrig,
    SelfAttention,
    SequentialEx,
    SigmoidRange,
    ToTensorBase,
    apply_init,
)
from .vision import _default_meta, _in_channels, create_body, load_arch, model_meta

__all__ = ["DynamicUnet", "Hook", "ResizeToOrig", "UnetBlock", "create_unet_model", "model_sizes"]


class Hook:
    """A forward hook that keeps the latest output of ``module`` in ``stored`` (not detached by default)."""

    def __init__(self, module: nn.Module, detach: bool = False) -> None:
        self.module, self.detach = module, detach
        self.stored: torch.Tensor | None = None
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        self.stored = output.detach() if self.detach else output

    def remove(self) -> None:
        self.handle.remove()


def _dummy_eval(m: nn.Module, size: Sequence[int]) -> torch.Tensor:
    """Run one random batch of spatial ``size`` through ``m`` in eval mode (fastai's ``dummy_eval``)."""
    param = next(m.parameters())
    x = torch.empty(1, _in_channels(m), *size, dtype=param.dtype, device=param.device).uniform_(-1.0, 1.0)
    with torch.no_grad():
        return m.eval()(x)


def model_sizes(m: nn.Sequential, size: Sequence[int] = (64, 64)) -> list[torch.Size]:
    """The output shape of each child of ``m`` for one dummy batch of spatial ``size``."""
    hooks = [Hook(child, detach=True) for child in m]
    try:
        _dummy_eval(m, size)
        return [h.stored.shape for h in hooks]
    finally:
        for h in hooks:
            h.remove()


def _size_change_idxs(sizes: Sequence[torch.Size]) -> list[int]:
    """Indices of the children after which the last dimension (width) changes, as fastai compares them."""
    widths = [s[-1] for s in sizes]
    return [i for i in range(len(widths) - 1) if widths[i] != widths[i + 1]]


class UnetBlock(nn.Module):
    """One decoder step: upsample ``up_in`` with ``PixelShuffle_ICNR`` to half its channels, resize (nearest) to
    the skip's size if needed, concatenate with the batch-normalised skip read from ``hook.stored``, ReLU, then
    two ``ConvLayer``s (the second optionally followed by ``SelfAttention``)."""

    def __init__(self, up_in_c: int, x_in_c: int, hook: Hook, final_div: bool = True, blur: bool = False,
                 act_cls: Callable[[], nn.Module] = nn.ReLU, self_attention: bool = False,
                 init: Callable | None = nn.init.kaiming_normal_, norm_type: NormType | None = None,
                 **kwargs) -> None:
        super().__init__()
        self.hook = hook  # a plain attribute: not a submodule, so not in the state_dict
        self.shuf = PixelShuffle_ICNR(up_in_c, up_in_c // 2, blur=blur, act_cls=act_cls, norm_type=norm_type)
        self.bn = BatchNorm(x_in_c)
        ni = up_in_c // 2 + x_in_c
        nf = ni if final_div else ni // 2
        self.conv1 = ConvLayer(ni, nf, act_cls=act_cls, norm_type=norm_type, **kwargs)
        self.conv2 = ConvLayer(nf, nf, act_cls=act_cls, norm_type=norm_type,
                               xtra=SelfAttention(nf) if self_attention else None, **kwargs)
        self.relu = act_cls()
        apply_init(nn.Sequential(self.conv1, self.conv2), init)

    def forward(self, up_in: torch.Tensor) -> torch.Tensor:
        skip = self.hook.stored
        up_out = self.shuf(up_in)
        if skip.shape[-2:] != up_out.shape[-2:]:
            up_out = F.interpolate(up_out, skip.shape[-2:], mode="nearest")
        cat_x = self.relu(torch.cat([up_out, self.bn(skip)], dim=1))
        return self.conv2(self.conv1(cat_x))


class DynamicUnet(SequentialEx):
    """fastai 2.8's ``DynamicUnet`` around ``encoder`` (an ``nn.Sequential``, e.g. a ResNet body).

    ``layers`` holds, in order: the encoder, BatchNorm2d + ReLU, the middle convs (channels x2 then back), one
    ``UnetBlock`` per size change of the encoder (deepest first; self-attention in the third-from-last), a
    ``PixelShuffle_ICNR`` when the first encoder output is smaller than ``img_size``, ``ResizeToOrig``, with
    ``last_cross`` a dense ``MergeLayer`` (adds the input image's channels) and a ``ResBlock``, a 1x1
    ``ConvLayer`` to ``n_out``, ``SigmoidRange`` when ``y_range`` is given, and ``ToTensorBase``.
    """

    def __init__(self, encoder: nn.Sequential, n_out: int, img_size: Sequence[int], blur: bool = False,
                 blur_final: bool = True, self_attention: bool = False, y_range: tuple[float, float] | None = None,
                 last_cross: bool = True, bottle: bool = False, act_cls: Callable[[], nn.Module] = nn.ReLU,
                 init: Callable | None = nn.init.kaiming_normal_, norm_type: NormType | None = None,
                 **kwargs) -> None:
        imsize = tuple(img_size)
        sizes = model_sizes(encoder, size=imsize)
        sz_chg_idxs = list(reversed(_size_change_idxs(sizes)))
        sfs = [Hook(encoder[i]) for i in sz_chg_idxs]
        x = _dummy_eval(encoder, imsize).detach()

        ni = sizes[-1][1]
        middle_conv = nn.Sequential(ConvLayer(ni, ni * 2, act_cls=act_cls, norm_type=norm_type, **kwargs),
                                    ConvLayer(ni * 2, ni, act_cls=act_cls, norm_type=norm_type, **kwargs)).eval()
        with torch.no_grad():
            x = middle_conv(x)
        layers: list[nn.Module] = [encoder, BatchNorm(ni), nn.ReLU(), middle_conv]

        for i, idx in enumerate(sz_chg_idxs):
            not_final = i != len(sz_chg_idxs) - 1
            up_in_c, x_in_c = int(x.shape[1]), int(sizes[idx][1])
            do_blur = blur and (not_final or blur_final)
            sa = self_attention and (i == len(sz_chg_idxs) - 3)
            block = UnetBlock(up_in_c, x_in_c, sfs[i], final_div=not_final, blur=do_blur, self_attention=sa,
                              act_cls=act_cls, init=init, norm_type=norm_type, **kwargs).eval()
            layers.append(block)
            with torch.no_grad():
                x = block(x)

        ni = x.shape[1]
        if imsize != tuple(sizes[0][-2:]):
            layers.append(PixelShuffle_ICNR(ni, act_cls=act_cls, norm_type=norm_type))
        layers.append(ResizeToOrig())
        if last_cross:
            layers.append(MergeLayer(dense=True))
            ni += _in_channels(encoder)
            layers.append(ResBlock(1, ni, ni // 2 if bottle else ni, act_cls=act_cls, norm_type=norm_type, **kwargs))
        layers.append(ConvLayer(ni, n_out, ks=1, act_cls=None, norm_type=norm_type, **kwargs))
        apply_init(nn.Sequential(layers[3], layers[-2]), init)
        if y_range is not None:
            layers.append(SigmoidRange(*y_range))
        layers.append(ToTensorBase())
        super().__init__(*layers)
        self.sfs = sfs  # the encoder hooks, deepest first (a plain list: no state)
        self.train()  # the dummy passes left parts in eval mode; start uniformly in training mode

    def remove_hooks(self) -> None:
        """Detach the encoder hooks (the U-Net cannot run afterwards)."""
        for h in self.sfs:
            h.remove()


def create_unet_model(arch: Callable[..., nn.Module], n_out: int, img_size: Sequence[int], pretrained: bool = False,
                      weights: object = None, cut: int | Callable | None = None, n_in: int = 3,
                      **kwargs) -> DynamicUnet:
    """fastai 2.8's ``create_unet_model``: a ``DynamicUnet`` on the body of a torchvision ``arch``.

    ``kwargs`` go to :class:`DynamicUnet`. Weights are never downloaded (see ``vision.load_arch``).
    """
    meta = model_meta.get(arch, _default_meta)
    model = load_arch(arch, pretrained, weights)
    body = create_body(model, n_in, pretrained or weights is not None, meta["cut"] if cut is None else cut)
    return DynamicUnet(body, n_out, img_size, **kwargs)
