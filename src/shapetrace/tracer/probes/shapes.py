"""``ShapeProbe``: one ``Call`` record per module call, with its inputs, kwargs and outputs as value trees.

At a call's start the probe reads the arguments (positional from the hook, keyword from the calling frame)
into ``TensorMeta`` trees whose tensors carry trace-local ids from the trace's ``DataFlow``; at its end, the
outputs. A call that raised keeps its inputs and the error's message; the first failing call becomes the
trace's ``Failure`` unless an enclosing call caught the exception and returned. Everything a ``Call`` holds
that the recorded calls determine (parameter counts, aliases) is filled in after the forward.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..engine import Engine, ModuleIndex, Probe, Unfinished
from ..flow import DataFlow
from ..records import Call, Failure, TensorMeta


class ShapeProbe(Probe):
    """Builds ``calls`` (in start order, ids = the engine's call ids) and ``failure``."""

    needs_kwargs = True

    def __init__(self, index: ModuleIndex, flow: DataFlow) -> None:
        self.index = index
        self.flow = flow
        self.calls: list[Call] = []
        self.failure: Failure | None = None
        self.kwargs_unknown = False

    def start(self, engine: Engine) -> None:
        self._skeleton = engine.calls

    def on_call_start(self, cid: int, module: nn.Module, args: tuple, kwargs: dict | None) -> None:
        index, flow, skeleton = self.index, self.flow, self._skeleton
        slot = skeleton.slot[cid]
        parent = skeleton.parent[cid]
        flow.order += 1
        order = flow.order
        if kwargs is None:
            kwargs = {}
            self.kwargs_unknown = True
        if parent is None:  # tensors entering a top-level call are the trace's inputs
            for i, a in enumerate(args):
                flow.mark_inputs(a, f"input:{i}", order)
            for k, v in kwargs.items():
                flow.mark_inputs(v, f"input:{k}", order)
        metas: list[TensorMeta] = []
        inputs = flow.describe_in(args, order, metas)
        names = index.names[slot]
        call = Call(
            id=cid, module=names[0] if len(names) == 1 else self._pick_name(names, parent), cls=index.classes[slot],
            call_index=skeleton.index[cid], parent=parent,
            depth=0 if parent is None else self.calls[parent].depth + 1, start=order,
            inputs=inputs, kwargs=flow.describe_in(kwargs, order, metas) if kwargs else {},
        )
        self.calls.append(call)
        flow.open_call(call, index.is_leaf[slot], metas)

    def _pick_name(self, names: list[str], parent: int | None) -> str:
        """The module's name as seen from the calling parent (a shared module has several)."""
        if parent is None:
            return names[0]
        pname = self.calls[parent].module
        for n in names:
            if n.rpartition(".")[0] == pname:
                return n
        return names[0]

    def on_call_end(self, cid: int, module: nn.Module, output: Any, error: BaseException | None) -> None:
        call = self.calls[cid]
        flow = self.flow
        flow.order += 1
        order = flow.order
        call.end = order
        if error is not None:
            flow.pop_call(call)
        if isinstance(error, Unfinished):
            if call.error is None:
                call.error = str(error)
            if self.failure is None:
                self.failure = Failure(call.id, "Interrupted", "")
            return
        if error is not None:
            if call.error is None:
                call.error = f"{type(error).__name__}: {error}"
            if self.failure is None:
                self.failure = Failure(call.id, type(error).__name__, str(error))
            return
        failure = self.failure
        if failure is not None and failure.call is not None and self.calls[failure.call].start > call.start:
            self.failure = None  # the exception was caught inside this call's forward
        flow.close_call(call, output, order)

    def finish(self, exc: BaseException | None) -> None:
        """After the forward: the aliases of shared modules, and the failure outside every module."""
        names = self.index.names
        slots = self._skeleton.slot
        for call in self.calls:
            every = names[slots[call.id]]
            if len(every) > 1:
                call.aliases = [n for n in every if n != call.module]
        if exc is not None and self.failure is None:
            self.failure = Failure(None, type(exc).__name__, str(exc))
