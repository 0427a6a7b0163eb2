"""``OpCountProbe``: how many torch functions ran inside each module call, its children's included.

The count comes from the ops probe's recorder, which sees every torch function and tensor method (metadata
reads such as ``size()`` aside): the probe reads the recorder's running count at each call's start and end.
Inside a fused fast path the recorder steps aside, so those calls count the ops of their slow path only
when it runs. Written to ``Call.op_count`` after the forward.
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
        self.counts: dict[int, int] = {}
        self._at_start: dict[int, int] = {}

    def on_call_start(self, cid: int, module: nn.Module, args: tuple, kwargs: dict | None) -> None:
        self._at_start[cid] = self.ops.recorder.seen

    def on_call_end(self, cid: int, module: nn.Module, output: Any, error: BaseException | None) -> None:
        self.counts[cid] = self.ops.recorder.seen - self._at_start.pop(cid)

    def merge(self, trace: Trace) -> None:
        for cid, n in self.counts.items():
            trace.calls[cid].op_count = n
