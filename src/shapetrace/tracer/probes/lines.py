"""``LinesProbe``: which line of which ``forward`` made each module call and each functional op.

The adapter between the engine and ``tracer.lines.LineRecorder`` (which does the stack walks, the
``sys.settrace`` reachability and the source reading): the recorder is entered with the engine, told of
each call as it starts, of each exception that leaves a call, and
of each op the trace's ``DataFlow`` records; after the forward it fills ``Trace.sources``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..engine import Engine, Probe, Unfinished
from ..flow import DataFlow
from ..lines import LineRecorder
from ..records import Op, Trace


class LinesProbe(Probe):
    """Source lines of calls and ops (``Tracer(lines=True)``), keyed by call id until ``merge``."""

    def __init__(self, flow: DataFlow) -> None:
        self.flow = flow
        self.recorder = LineRecorder()
        self._modules: list[nn.Module] = []  # the open calls' modules, innermost last

    def start(self, engine: Engine) -> None:
        self.recorder.__enter__()
        self.flow.on_op = self._on_op

    def stop(self, engine: Engine, exc: BaseException | None) -> None:
        self.flow.on_op = None
        self.recorder.__exit__(None, None, None)

    def on_call_start(self, cid: int, module: nn.Module, args: tuple, kwargs: dict | None) -> None:
        parent = self._modules[-1] if self._modules else None
        self._modules.append(module)
        self.recorder.on_call(cid, module, parent)

    def on_call_end(self, cid: int, module: nn.Module, output: Any, error: BaseException | None) -> None:
        if self._modules and self._modules[-1] is module:
            self._modules.pop()
        if error is not None and not isinstance(error, Unfinished):
            self.recorder.on_raise(cid, module, error)

    def _on_op(self, op: Op) -> None:
        self.recorder.on_op(op, self._modules[-1] if self._modules else None)

    def merge(self, trace: Trace) -> None:
        self.recorder.finish(trace)
