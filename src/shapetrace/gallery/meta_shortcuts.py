"""Shortcuts for the gallery's builds on PyTorch's ``meta`` device: the answer torch would give, without the work.

On ``meta`` a tensor has a shape and no values, yet torch still runs some operations through Python
decompositions that compute the result's shape op by op: an eval-mode batch norm costs 2 ms, a ReLU almost 1,
against 0.06 ms for a convolution, and the gallery's exhibits make about 750 of each (the U-Nets also run their
encoder at construction to size the decoder). Filling a ``meta`` tensor with random numbers, which is what
weight initialisation does, costs as much and changes nothing. ``MetaShortcuts`` is a ``TorchFunctionMode``
that answers these operations directly when their tensor is on ``meta``:

* weight initialisation (``Tensor.normal_``, ``uniform_``, ``fill_``, ``zero_`` and the ``nn.init`` functions
  that dispatch themselves) returns the tensor unchanged, with ``initialisation=True`` (while building a model:
  a forward's own in-place writes are left to torch);
* eval-mode ``batch_norm``, ``relu`` and ``torch._weight_norm`` return an empty ``meta`` tensor shaped like
  their input (``relu_`` and ``relu(inplace=True)`` the input itself), exactly the shape, dtype and layout
  torch's own meta kernels give.

Everything else, and any call it cannot answer with certainty (a batch norm in training mode, channel counts
that do not match, inputs that autograd follows), goes to torch unchanged, so a mistake in a model still raises
torch's error. Entered outside the tracer, it sees each operation after the tracer has recorded it: the trace is
the same call for call and op for op (``tests/test_exhibits_meta.py`` checks every exhibit with and without it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["MetaShortcuts"]


def _on_meta(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.device.type == "meta"


def _untracked(*tensors: Any) -> bool:
    """Whether autograd would record nothing for an operation on ``tensors`` (the shortcut makes no graph)."""
    return not torch.is_grad_enabled() or not any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors)


def _filled(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor | None:
    """Weight initialisation of a ``meta`` tensor: nothing to fill."""
    return tensor if _on_meta(tensor) else None


def _batch_norm(x: torch.Tensor, running_mean: torch.Tensor | None = None, running_var: torch.Tensor | None = None,
                weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, training: bool = False,
                *args: Any, **kwargs: Any) -> torch.Tensor | None:
    """An eval-mode batch norm of a ``meta`` tensor whose statistics and affine parameters fit its channels."""
    if training or not _on_meta(x) or x.dim() < 2:
        return None
    per_channel = [t for t in (running_mean, running_var, weight, bias) if t is not None]
    if any(not _on_meta(t) or t.shape != (x.shape[1],) for t in per_channel) or not _untracked(x, *per_channel):
        return None
    return torch.empty_like(x)


def _relu(x: torch.Tensor, inplace: bool = False) -> torch.Tensor | None:
    if not _on_meta(x) or not _untracked(x):
        return None
    return x if inplace else torch.empty_like(x)


def _relu_(x: torch.Tensor) -> torch.Tensor | None:
    return _relu(x, inplace=True)


def _weight_norm(v: torch.Tensor, g: torch.Tensor, dim: int = 0) -> torch.Tensor | None:
    """``torch._weight_norm(v, g, dim)``: ``v`` rescaled per slice, so ``v``'s shape."""
    if not (_on_meta(v) and _on_meta(g)) or v.dim() != g.dim() or not _untracked(v, g):
        return None
    return torch.empty_like(v)


_INITIALISATION: dict[Callable, Callable[..., torch.Tensor | None]] = {
    torch.Tensor.normal_: _filled,
    torch.Tensor.uniform_: _filled,
    torch.Tensor.fill_: _filled,
    torch.Tensor.zero_: _filled,
    torch.nn.init.normal_: _filled,
    torch.nn.init.uniform_: _filled,
    torch.nn.init.constant_: _filled,
    torch.nn.init.kaiming_uniform_: _filled,
}

_COMPUTATION: dict[Callable, Callable[..., torch.Tensor | None]] = {
    F.batch_norm: _batch_norm,
    torch.batch_norm: _batch_norm,
    F.relu: _relu,
    torch.relu: _relu,
    torch.Tensor.relu: _relu,
    torch.relu_: _relu_,
    F.relu_: _relu_,
    torch.Tensor.relu_: _relu_,
    torch._weight_norm: _weight_norm,
}


class MetaShortcuts(TorchFunctionMode):
    """Answers eval-mode batch norm, ReLU, weight norm and, with ``initialisation``, weight initialisation on
    ``meta`` tensors directly (see the module docstring); passes every other call to torch."""

    def __init__(self, initialisation: bool = False) -> None:
        super().__init__()
        self.shortcuts = {**_COMPUTATION, **_INITIALISATION} if initialisation else _COMPUTATION

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        shortcut = self.shortcuts.get(func)
        if shortcut is not None and args:
            try:
                answer = shortcut(*args, **kwargs)
            except TypeError:  # called with arguments the shortcut does not know: let torch judge them
                answer = None
            if answer is not None:
                return answer
        return func(*args, **kwargs)
