"""``PeakMemoryProbe``: the CUDA memory allocated at its peak during each module call, beyond its start.

One global peak counter (``torch.cuda.max_memory_allocated``) serves every nested call through a
``PeakStack``: the counter is reset at each call's start and end, and a child's peak is folded into its
parent's, so children never clobber parents.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..engine import Engine, Probe


class PeakStack:
    """Peak memory per nested call from one global peak counter, children never clobbering parents.

    ``push(allocated, peak)`` at a call's start and ``pop(peak) -> peak_bytes`` at its end, where ``peak`` is
    the counter's peak since its last reset; reset the counter after each push and pop. A child's peak is
    folded into its parent's, and the parent's peak so far is saved before the child resets the counter.
    """

    def __init__(self) -> None:
        self._frames: list[list[int]] = []

    def push(self, allocated: int, peak: int) -> None:
        if self._frames:
            self._frames[-1][1] = max(self._frames[-1][1], peak)
        self._frames.append([allocated, allocated])

    def pop(self, peak: int) -> int:
        start, top = self._frames.pop()
        top = max(top, peak)
        if self._frames:
            self._frames[-1][1] = max(self._frames[-1][1], top)
        return top - start


class PeakMemoryProbe(Probe):
    """``results[cid]``: bytes allocated at the call's peak beyond what was allocated at its start."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.results: dict[int, int] = {}
        self._peaks = PeakStack()

    def start(self, engine: Engine) -> None:
        torch.cuda.reset_peak_memory_stats(self.device)

    def on_call_start(self, cid: int, module: nn.Module, args: tuple, kwargs: dict | None) -> None:
        cuda = torch.cuda
        self._peaks.push(cuda.memory_allocated(self.device), cuda.max_memory_allocated(self.device))
        cuda.reset_peak_memory_stats(self.device)

    def on_call_end(self, cid: int, module: nn.Module, output: Any, error: BaseException | None) -> None:
        cuda = torch.cuda
        self.results[cid] = self._peaks.pop(cuda.max_memory_allocated(self.device))
        cuda.reset_peak_memory_stats(self.device)
