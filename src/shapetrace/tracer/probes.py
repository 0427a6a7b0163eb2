"""``CallProbe``: measure something around every call of a fixed set of modules, keyed like a trace's calls.

A probe puts one global forward pre-hook and one global forward hook in place while it is entered (global,
as ``Tracer`` does, so fused fast paths keep running) and calls ``start`` and ``end`` for each call of a
watched module, with the key ``(id(module), call_index)`` that matches ``Call.call_index``. Subclasses say
what is read at each end: FLOPs counted so far (``flops.FlopRecorder``), CUDA allocator peaks
(``timing._PeakRecorder``).
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

Key = tuple[int, int]  # (id(module), call_index)


class CallProbe:
    """Base class: subclasses implement ``start(key, module, args)`` and ``end(key)``."""

    def __init__(self, modules: dict[int, nn.Module]) -> None:
        self.modules = modules
        self._counts: dict[int, int] = {}
        self._open: list[Key] = []
        self._handles: list[Any] = []

    def __enter__(self) -> CallProbe:  # noqa: PYI034 - typing.Self needs Python 3.11
        self._handles = [register_module_forward_pre_hook(self._pre),
                         register_module_forward_hook(self._post, always_call=True)]
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def start(self, key: Key, module: nn.Module, args: tuple) -> None:
        raise NotImplementedError

    def end(self, key: Key) -> None:
        raise NotImplementedError

    def _pre(self, module: nn.Module, args: tuple) -> None:
        mid = id(module)
        if mid not in self.modules:
            return
        index = self._counts.get(mid, 0)
        self._counts[mid] = index + 1
        key = (mid, index)
        self._open.append(key)
        self.start(key, module, args)

    def _post(self, module: nn.Module, args: tuple, output: Any) -> None:
        if not self._open or self._open[-1][0] != id(module):
            return
        self.end(self._open.pop())
