"""``ModelGuard``: leave a model as it was found after a forward run for measuring, whatever happened.

Entering saves each module's ``training`` flag, every buffer's values (a trace in training mode updates
BatchNorm's running statistics) and every parameter's version counter, sets the requested training mode and
grad mode; leaving puts flags, buffers and grad mode back, even when the forward raised or was interrupted.
Parameters are not copied (that would double a large model's memory): ``changed_params()`` names those the
forward wrote in place, from their version counters.
"""

from __future__ import annotations

import contextlib
from types import TracebackType

import torch

from .engine import ModuleIndex

__all__ = ["ModelGuard"]


def _version(t: torch.Tensor) -> int | None:
    """The tensor's version counter (bumped by every in-place write); ``None`` for inference tensors."""
    try:
        return t._version
    except RuntimeError:  # an inference tensor keeps no version counter
        return None


def _versions(tensors: list[torch.Tensor]) -> list[int | None]:
    """``_version`` of each tensor: one list comprehension in the common case (part of every trace's fixed
    cost), one call per tensor when some are inference tensors."""
    try:
        return [t._version for t in tensors]
    except RuntimeError:
        return [_version(t) for t in tensors]


class ModelGuard:
    """Save and restore a model's state around a forward (see the module docstring)."""

    def __init__(self, index: ModuleIndex, *, train: bool | None = None, grad: bool = False) -> None:
        self.index = index
        self.train = train
        self.grad = grad

    def __enter__(self) -> ModelGuard:  # noqa: PYI034 - typing.Self needs Python 3.11
        modules = self.index.modules
        self._training = [m.training for m in modules]
        # Every parameter and buffer, a tensor registered twice listed twice (harmless for both uses).
        self._params = [p for m in modules for p in m._parameters.values() if p is not None]
        self._versions = _versions(self._params)
        # A copy of every buffer, written back after the forward. Version counters cannot say which buffers
        # changed: BatchNorm's kernel updates its running statistics without bumping them.
        self._live = [b for m in modules for b in m._buffers.values() if b is not None]
        with torch.no_grad():
            self._saved = list(torch._foreach_clone(self._live)) if self._live else []
        self._grad = contextlib.ExitStack()
        try:
            if self.train is not None:
                self.index.model.train(self.train)
            self._grad.enter_context(torch.set_grad_enabled(self.grad))
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        self._restore()
        return False

    def _restore(self) -> None:
        try:
            self._grad.close()
        finally:
            for m, was in zip(self.index.modules, self._training):
                if m.training != was:  # Module.__setattr__ is slow: set only what changed
                    m.training = was
            live, saved = getattr(self, "_live", []), getattr(self, "_saved", [])
            self._live, self._saved = [], []
            with torch.no_grad():
                try:
                    torch._foreach_copy_(live, saved)  # one call for all (the common case: nothing resized)
                except RuntimeError:
                    for b, copy in zip(live, saved):
                        if b.shape == copy.shape and b.device == copy.device:
                            b.copy_(copy)

    def changed_params(self) -> list[str]:
        """Names of the parameters whose version counter moved: the forward wrote to them in place."""
        now = _versions(self._params)
        changed = {id(p) for p, v, w in zip(self._params, self._versions, now) if v is not None and w != v}
        if not changed:
            return []
        out: list[str] = []
        for m, names in zip(self.index.modules, self.index.names):
            for n, p in m._parameters.items():
                if p is not None and id(p) in changed:
                    changed.discard(id(p))  # named once, where first registered
                    out.append(f"{names[0]}.{n}" if names[0] else n)
        return out
