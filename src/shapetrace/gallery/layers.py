"""Building blocks of chapter 15's models in plain PyTorch, matching fastai 2.8's layers.

Each layer reproduces the structure of its fastai namesake (child module names and order, bias and padding
rules, initialisation), so state_dict keys and shapes agree with fastai's. Two deliberate differences:
no activation module is ever shared between layers or models (every layer owns a fresh instance), and
``ToTensorBase`` only strips tensor subclasses, since fastai's ``TensorBase`` does not exist here.
"""

from __future__ import annotations

import enum
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "AdaptiveConcatPool2d",
    "AvgPool",
    "BatchNorm",
    "ConvLayer",
    "Flatten",
    "InstanceNorm",
    "LinBnDrop",
    "MergeLayer",
    "NormType",
    "PixelShuffle_ICNR",
    "ResBlock",
    "ResizeToOrig",
    "SelfAttention",
    "SequentialEx",
    "SigmoidRange",
    "ToTensorBase",
    "apply_init",
    "icnr_init",
    "init_linear",
    "norm_types",
    "sigmoid_range",
]


class NormType(enum.Enum):
    """The normalisations ``ConvLayer`` knows (fastai's names; the ``Zero`` kinds start with weight 0)."""

    Batch = 1
    BatchZero = 2
    Weight = 3
    Spectral = 4
    Instance = 5
    InstanceZero = 6


norm_types = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm1d, nn.InstanceNorm2d,
               nn.InstanceNorm3d, nn.LayerNorm)


def _norm(prefix: str, nf: int, ndim: int, zero: bool, **kwargs) -> nn.Module:
    if ndim not in (1, 2, 3):
        raise ValueError(f"ndim must be 1, 2 or 3, not {ndim}")
    norm = getattr(nn, f"{prefix}{ndim}d")(nf, **kwargs)
    if norm.affine:
        with torch.no_grad():
            norm.bias.fill_(1e-3)
            norm.weight.fill_(0.0 if zero else 1.0)
    return norm


def BatchNorm(nf: int, ndim: int = 2, norm_type: NormType = NormType.Batch, **kwargs) -> nn.Module:
    """``BatchNorm{ndim}d`` initialised like fastai: bias 1e-3, weight 1 (0 for ``NormType.BatchZero``)."""
    return _norm("BatchNorm", nf, ndim, zero=norm_type == NormType.BatchZero, **kwargs)


def InstanceNorm(nf: int, ndim: int = 2, norm_type: NormType = NormType.Instance, affine: bool = True,
                 **kwargs) -> nn.Module:
    """``InstanceNorm{ndim}d`` initialised like fastai: bias 1e-3, weight 1 (0 for ``InstanceZero``)."""
    return _norm("InstanceNorm", nf, ndim, zero=norm_type == NormType.InstanceZero, affine=affine, **kwargs)


def AvgPool(ks: int = 2, stride: int | None = None, padding: int = 0, ndim: int = 2,
            ceil_mode: bool = False) -> nn.Module:
    """``AvgPool{ndim}d`` with fastai's argument names."""
    return getattr(nn, f"AvgPool{ndim}d")(ks, stride=stride, padding=padding, ceil_mode=ceil_mode)


class Flatten(nn.Module):
    """Flatten to ``(batch, -1)``, or to one dimension when ``full``."""

    def __init__(self, full: bool = False) -> None:
        super().__init__()
        self.full = full

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1) if self.full else x.reshape(x.size(0), -1)

    def extra_repr(self) -> str:
        return "full=True" if self.full else ""


class LinBnDrop(nn.Sequential):
    """BatchNorm1d, Dropout and Linear (+ activation) as one ``nn.Sequential``, in fastai's order.

    With ``lin_first=False`` the order is BatchNorm1d(n_in) -> Dropout -> Linear -> act; with
    ``lin_first=True`` it is Linear -> act -> BatchNorm1d(n_out) -> Dropout. The Linear has a bias only when
    there is no batchnorm; Dropout is left out when ``p == 0``.
    """

    def __init__(self, n_in: int, n_out: int, bn: bool = True, p: float = 0.0, act: nn.Module | None = None,
                 lin_first: bool = False) -> None:
        norm_drop: list[nn.Module] = [BatchNorm(n_out if lin_first else n_in, ndim=1)] if bn else []
        if p != 0:
            norm_drop.append(nn.Dropout(p))
        lin: list[nn.Module] = [nn.Linear(n_in, n_out, bias=not bn)]
        if act is not None:
            lin.append(act)
        super().__init__(*(lin + norm_drop if lin_first else norm_drop + lin))


def sigmoid_range(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Squash ``x`` into ``(low, high)`` with a sigmoid."""
    return torch.sigmoid(x) * (high - low) + low


class SigmoidRange(nn.Module):
    """Module form of :func:`sigmoid_range`."""

    def __init__(self, low: float, high: float) -> None:
        super().__init__()
        self.low, self.high = low, high

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sigmoid_range(x, self.low, self.high)

    def extra_repr(self) -> str:
        return f"low={self.low}, high={self.high}"


class AdaptiveConcatPool2d(nn.Module):
    """Adaptive max pooling and adaptive average pooling, concatenated on channels: max first, then average.

    Doubles the channel count; ``size`` is the output size of both pools (1 by default).
    """

    def __init__(self, size: int | tuple[int, int] | None = None) -> None:
        super().__init__()
        self.size = size or 1
        self.ap = nn.AdaptiveAvgPool2d(self.size)
        self.mp = nn.AdaptiveMaxPool2d(self.size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.mp(x), self.ap(x)], dim=1)


# The weight init fastai attaches to activations (``__default_init__``), kept in a table instead.
_DEFAULT_INIT: dict[type, Callable] = {
    nn.ReLU: nn.init.kaiming_uniform_, nn.ReLU6: nn.init.kaiming_uniform_, nn.LeakyReLU: nn.init.kaiming_uniform_,
    nn.Sigmoid: nn.init.xavier_uniform_, nn.Tanh: nn.init.xavier_uniform_,
}


def init_linear(m: nn.Module, act: nn.Module | None = None, init: Callable | str | None = "auto",
                bias_std: float | None = 0.01) -> None:
    """Initialise a linear or conv layer like fastai: bias ~ N(0, bias_std) (zero when 0), and the weight with
    ``init`` ("auto": the init that suits ``act``, none when there is no activation)."""
    bias = getattr(m, "bias", None)
    with torch.no_grad():
        if bias is not None and bias_std is not None:
            if bias_std != 0:
                nn.init.normal_(bias, 0.0, bias_std)
            else:
                bias.zero_()
    if init == "auto":
        init = _DEFAULT_INIT.get(type(act)) if act is not None else None
    if init is not None:
        init(m.weight)


def _conv_class(ndim: int, transpose: bool) -> type[nn.Module]:
    if ndim not in (1, 2, 3):
        raise ValueError(f"ndim must be 1, 2 or 3, not {ndim}")
    return getattr(nn, f"Conv{'Transpose' if transpose else ''}{ndim}d")


def _weight_norm(m: nn.Module) -> nn.Module:
    # The classic weight_norm (parameters ``weight_g``/``weight_v``) gives fastai's state_dict keys.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return nn.utils.weight_norm(m)


class ConvLayer(nn.Sequential):
    """A 1-3d convolution (or transposed convolution) followed by normalisation and activation, as fastai builds it.

    Padding defaults to ``(ks-1)//2`` (0 for ``transpose``). The convolution has a bias unless a batch or
    instance norm follows (``bias=None``). Children: the conv, then batchnorm and activation (norm first when
    ``bn_1st``), then ``xtra`` when given. Weight and spectral norm wrap the conv itself.
    """

    def __init__(self, ni: int, nf: int, ks: int = 3, stride: int = 1, padding: int | None = None,
                 bias: bool | None = None, ndim: int = 2, norm_type: NormType | None = NormType.Batch,
                 bn_1st: bool = True, act_cls: Callable[[], nn.Module] | None = nn.ReLU, transpose: bool = False,
                 init: Callable | str | None = "auto", xtra: nn.Module | None = None, bias_std: float = 0.01,
                 **kwargs) -> None:
        if padding is None:
            padding = 0 if transpose else (ks - 1) // 2
        bn = norm_type in (NormType.Batch, NormType.BatchZero)
        inn = norm_type in (NormType.Instance, NormType.InstanceZero)
        if bias is None:
            bias = not (bn or inn)
        conv = _conv_class(ndim, transpose)(ni, nf, kernel_size=ks, bias=bias, stride=stride, padding=padding,
                                            **kwargs)
        act = None if act_cls is None else act_cls()
        init_linear(conv, act, init=init, bias_std=bias_std)
        if norm_type == NormType.Weight:
            conv = _weight_norm(conv)
        elif norm_type == NormType.Spectral:
            conv = nn.utils.spectral_norm(conv)
        act_bn: list[nn.Module] = []
        if act is not None:
            act_bn.append(act)
        if bn:
            act_bn.append(BatchNorm(nf, norm_type=norm_type, ndim=ndim))
        if inn:
            act_bn.append(InstanceNorm(nf, norm_type=norm_type, ndim=ndim))
        if bn_1st:
            act_bn.reverse()
        layers = [conv, *act_bn]
        if xtra is not None:
            layers.append(xtra)
        super().__init__(*layers)


def icnr_init(x: torch.Tensor, scale: int = 2, init: Callable = nn.init.kaiming_normal_) -> torch.Tensor:
    """ICNR init for a conv weight ``x`` (out, in, h, w) that feeds ``PixelShuffle(scale)``.

    Draws ``out // scale**2`` kernels with ``init`` and repeats each one ``scale**2`` times in a row, so every
    output pixel of a shuffle group starts with the same kernel (no checkerboard at initialisation).
    """
    n_out = x.shape[0]
    base = init(x.new_zeros((n_out // scale**2, *x.shape[1:])))
    return base.repeat_interleave(scale**2, dim=0)


class PixelShuffle_ICNR(nn.Sequential):
    """Upsample ``scale`` times: a 1x1 ``ConvLayer`` to ``nf * scale**2`` channels (ICNR init, zero bias), then
    ``nn.PixelShuffle``; with ``blur``, a ``ReplicationPad2d((1,0,1,0))`` and a 2x2 stride-1 average pool."""

    def __init__(self, ni: int, nf: int | None = None, scale: int = 2, blur: bool = False,
                 norm_type: NormType | None = NormType.Weight, act_cls: Callable[[], nn.Module] | None = nn.ReLU
                 ) -> None:
        nf = ni if nf is None else nf
        conv_layer = ConvLayer(ni, nf * scale**2, ks=1, norm_type=norm_type, act_cls=act_cls, bias_std=0)
        conv = conv_layer[0]
        with torch.no_grad():
            if norm_type == NormType.Weight:
                conv.weight_v.copy_(icnr_init(conv.weight_v, scale))
                conv.weight_g.copy_(conv.weight_v.pow(2).sum(dim=(1, 2, 3), keepdim=True).sqrt())
            else:
                conv.weight.copy_(icnr_init(conv.weight, scale))
        layers: list[nn.Module] = [conv_layer, nn.PixelShuffle(scale)]
        if blur:
            layers += [nn.ReplicationPad2d((1, 0, 1, 0)), nn.AvgPool2d(2, stride=1)]
        super().__init__(*layers)


class SelfAttention(nn.Module):
    """Self-attention over the positions of a feature map (SAGAN style), as fastai's ``SelfAttention``.

    Query and key project to ``n_channels // 8``, value keeps ``n_channels``; each is a 1x1 ``Conv1d`` with
    spectral norm and no bias. The result is ``gamma * attention + x`` with ``gamma`` starting at 0, so the
    layer begins as the identity.
    """

    def __init__(self, n_channels: int) -> None:
        super().__init__()
        self.query = self._conv(n_channels, n_channels // 8)
        self.key = self._conv(n_channels, n_channels // 8)
        self.value = self._conv(n_channels, n_channels)
        self.gamma = nn.Parameter(torch.tensor([0.0]))

    @staticmethod
    def _conv(n_in: int, n_out: int) -> ConvLayer:
        return ConvLayer(n_in, n_out, ks=1, ndim=1, norm_type=NormType.Spectral, act_cls=None, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.size()
        x = x.view(*size[:2], -1)
        f, g, h = self.query(x), self.key(x), self.value(x)
        beta = F.softmax(torch.bmm(f.transpose(1, 2), g), dim=1)
        out = self.gamma * torch.bmm(h, beta) + x
        return out.view(*size).contiguous()


class ResBlock(nn.Module):
    """fastai's residual block: ``act(convpath(x) + idpath(x))``.

    ``expansion=1`` gives two ``ks`` convs (ni -> nh2 -> nf); ``expansion>1`` a 1x1 / ks / 1x1 bottleneck with
    ``ni`` and ``nf`` multiplied by ``expansion``. The last conv has no activation and a zero-initialised norm
    (``BatchZero``/``InstanceZero`` when ``norm_type`` is Batch/Instance). The identity path gets a 1x1
    ``ConvLayer`` when channels change and an average pool when ``stride != 1``. (fastai's ``reduction`` and
    ``sa`` options are not reproduced.)
    """

    def __init__(self, expansion: int, ni: int, nf: int, stride: int = 1, groups: int = 1, nh1: int | None = None,
                 nh2: int | None = None, dw: bool = False, g2: int = 1, norm_type: NormType | None = NormType.Batch,
                 act_cls: Callable[[], nn.Module] = nn.ReLU, ndim: int = 2, ks: int = 3,
                 pool: Callable[..., nn.Module] = AvgPool, pool_first: bool = True, **kwargs) -> None:
        super().__init__()
        norm2 = {NormType.Batch: NormType.BatchZero, NormType.Instance: NormType.InstanceZero}.get(norm_type,
                                                                                                  norm_type)
        nh2 = nf if nh2 is None else nh2
        nh1 = nh2 if nh1 is None else nh1
        nf, ni = nf * expansion, ni * expansion
        k0 = dict(norm_type=norm_type, act_cls=act_cls, ndim=ndim, **kwargs)
        k1 = dict(norm_type=norm2, act_cls=None, ndim=ndim, **kwargs)
        if expansion == 1:
            convpath = [ConvLayer(ni, nh2, ks, stride=stride, groups=ni if dw else groups, **k0),
                        ConvLayer(nh2, nf, ks, groups=g2, **k1)]
        else:
            convpath = [ConvLayer(ni, nh1, 1, **k0),
                        ConvLayer(nh1, nh2, ks, stride=stride, groups=nh1 if dw else groups, **k0),
                        ConvLayer(nh2, nf, 1, groups=g2, **k1)]
        self.convpath = nn.Sequential(*convpath)
        idpath: list[nn.Module] = []
        if ni != nf:
            idpath.append(ConvLayer(ni, nf, 1, act_cls=None, ndim=ndim, **kwargs))
        if stride != 1:
            idpath.insert(0 if pool_first else 1, pool(stride, ndim=ndim, ceil_mode=True))
        self.idpath = nn.Sequential(*idpath)
        self.act = nn.ReLU(inplace=True) if act_cls is nn.ReLU else act_cls()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.convpath(x) + self.idpath(x))


class SequentialEx(nn.Module):
    """Like ``nn.Sequential`` (children in a ``layers`` ModuleList), but each layer can see the block's input.

    Before each layer runs, its input tensor gets an ``orig`` attribute holding the block's original input;
    ``MergeLayer`` and ``ResizeToOrig`` read it. The attributes are cleared after each layer.
    """

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = x
        for layer in self.layers:
            res.orig = x
            nres = layer(res)
            res.orig = None  # drop the references so activations are not kept alive
            nres.orig = None
            res = nres
        return res

    def __getitem__(self, i: int | slice) -> nn.Module:
        return self.layers[i]

    def __len__(self) -> int:
        return len(self.layers)

    def append(self, layer: nn.Module) -> None:
        self.layers.append(layer)

    def extend(self, layers: list[nn.Module]) -> None:
        self.layers.extend(layers)

    def insert(self, i: int, layer: nn.Module) -> None:
        self.layers.insert(i, layer)


class MergeLayer(nn.Module):
    """Merge the input of the enclosing ``SequentialEx`` (``x.orig``) into ``x``: concatenate on channels
    (``dense``, ``x`` first) or add."""

    def __init__(self, dense: bool = False) -> None:
        super().__init__()
        self.dense = dense

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x.orig], dim=1) if self.dense else x + x.orig

    def extra_repr(self) -> str:
        return f"dense={self.dense}"


class ResizeToOrig(nn.Module):
    """Resize ``x`` (interpolation ``mode``) to the spatial size of ``x.orig`` when they differ."""

    def __init__(self, mode: str = "nearest") -> None:
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.orig.shape[-2:] != x.shape[-2:]:
            x = F.interpolate(x, x.orig.shape[-2:], mode=self.mode)
        return x

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"


class ToTensorBase(nn.Module):
    """The last layer of fastai's ``DynamicUnet`` (there it casts to fastai's ``TensorBase``); here it returns
    a plain ``torch.Tensor``, keeping fastai's module list and call count."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if type(x) is torch.Tensor else x.as_subclass(torch.Tensor)


def apply_init(m: nn.Module, init: Callable | None = nn.init.kaiming_normal_) -> None:
    """fastai's ``apply_init``: every trainable, non-norm module with a weight gets ``init`` on it and a zero bias."""
    for mod in m.modules():
        if isinstance(mod, norm_types):
            continue
        first = next(mod.parameters(), None)
        if first is None or not first.requires_grad:
            continue
        weight = getattr(mod, "weight", None)
        if init is not None and isinstance(weight, torch.Tensor):
            with torch.no_grad():
                init(weight)
        bias = getattr(mod, "bias", None)
        if isinstance(bias, torch.Tensor):
            with torch.no_grad():
                bias.zero_()
