"""``OpCountProbe``: how many torch functions ran inside each module call, its children's included.

The count comes from the ops probe's recorder, which sees every torch function and tensor method (metadata
reads such as ``size()`` aside) run by Python forward code: the probe reads the recorder's running count at
each call's start and end. The recorder steps aside for ``torch.nn``'s own leaf layers and fused fast
paths, so their internals are not counted: their ``op_count`` is ``None`` (not looked into), and a
container's count is the ops of the Python code inside it. Written to ``Call.op_count`` after the forward.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..engine import Probe
from ..records import Trace
from .ops import OpProbe


class OpCountProbe(Probe):
    """``counts[cid]``: torch functions called between the call's start and end (read from ``ops.recorder``)."""

    def __init__(self, ops: OpProbe) -> None:
        self.ops = ops
        self.counts: dict[int, int | None] = {}
        self._at_start: dict[int, int] = {}

    def on_call_start(self, cid: int, module: nn.Module, args: tuple, kwargs: dict | None) -> None:
        self._at_start[cid] = self.ops.recorder.seen

    def on_call_end(self, cid: int, module: nn.Module, output: Any, error: BaseException | None) -> None:
        recorder = self.ops.recorder
        start = self._at_start.pop(cid)
        self.counts[cid] = None if recorder.stepped_aside_for == cid else recorder.seen - start

    def merge(self, trace: Trace) -> None:
        for cid, n in self.counts.items():
            trace.calls[cid].op_count = n
