"""Building blocks of chapter 15's models in plain PyTorch, matching fastai 2.8's layers.

Each layer reproduces the structure of its fastai namesake (child module names, order, bias and padding
rules, initialisation), so state_dict keys and shapes agree with fastai's. Unlike fastai, no activation
module is ever shared between layers or models: every layer owns a fresh instance.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BatchNorm", "Flatten", "LinBnDrop", "SigmoidRange", "sigmoid_range"]


def BatchNorm(nf: int, ndim: int = 2, zero: bool = False, **kwargs) -> nn.Module:
    """A ``BatchNorm{ndim}d`` with fastai's init: bias 1e-3, weight 1 (or 0 when ``zero``)."""
    if ndim not in (1, 2, 3):
        raise ValueError(f"ndim must be 1, 2 or 3, not {ndim}")
    bn = getattr(nn, f"BatchNorm{ndim}d")(nf, **kwargs)
    if bn.affine:
        with torch.no_grad():
            bn.bias.fill_(1e-3)
            bn.weight.fill_(0.0 if zero else 1.0)
    return bn


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
