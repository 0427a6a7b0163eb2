"""``TimerProbe``: a clock read at each module call's start and end, plus a profiler range or CUDA events.

The probe of ``profile()``'s timed repeats, where nothing else runs in the hooks. ``mode="wall"`` reads
``time.perf_counter_ns`` only; ``mode="profiler"`` also opens one ``torch.profiler`` range per call (named
``shapetrace/<call id>``, so device kernels can be attributed to calls afterwards); ``mode="events"`` records
a pair of CUDA events per call, reused from one repeat to the next. The clock is read last in
``on_call_start`` and first in ``on_call_end``, so the engine's own bookkeeping lands in the parent's self
time, never in the call's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..engine import CallSkeleton, Engine, Probe

RANGE_PREFIX = "shapetrace/"

# A profiler range (a context manager taking its name): torch's C++ ``_RecordFunctionFast`` where it exists
# (about 1 us a range under the profiler, against 8 us for ``record_function``, a cost paid once per call
# in the timed forward: benchmarks/profiler_ranges.py), else ``record_function``. Looked up once.
_profiler_range: Callable[[str], Any] = (getattr(torch._C._profiler, "_RecordFunctionFast", None)
                                         or torch.autograd.profiler.record_function)


class TimerProbe(Probe):
    """Per call id: ``t0``/``t1`` (ns), and ``ranges`` or ``ev0``/``ev1`` by mode. ``reset()`` between repeats."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self._events: list[Any] = []  # CUDA events, reused from one repeat to the next
        self.reset()

    def reset(self) -> None:
        self._used = 0
        self.t0: list[int] = []
        self.t1: list[int] = []
        self.ranges: list[Any] = []
        self.ev0: list[Any] = []
        self.ev1: list[Any] = []
        self.skeleton: CallSkeleton | None = None
        self.failed: int | None = None  # the first (innermost) timed call an exception left

    def event(self) -> Any:
        """A recorded CUDA event from the pool (creating a CUDA event costs a driver call: once per slot)."""
        if self._used == len(self._events):
            self._events.append(torch.cuda.Event(enable_timing=True))
        ev = self._events[self._used]
        self._used += 1
        ev.record()
        return ev

    def start(self, engine: Engine) -> None:
        self.skeleton = engine.calls
        self.index = engine.index

    def on_call_start(self, cid: int, module: nn.Module, args: tuple, kwargs: dict | None) -> None:
        self.t1.append(0)
        if self.mode == "profiler":
            rf = _profiler_range(f"{RANGE_PREFIX}{cid}")
            rf.__enter__()
            self.ranges.append(rf)
        elif self.mode == "events":
            self.ev0.append(self.event())
            self.ev1.append(None)
        self.t0.append(time.perf_counter_ns())

    def on_call_end(self, cid: int, module: nn.Module, output: Any, error: BaseException | None) -> None:
        t = time.perf_counter_ns()
        self.t1[cid] = t
        if error is not None and self.failed is None:
            self.failed = cid
        if self.mode == "profiler":
            self.ranges[cid].__exit__(None, None, None)
        elif self.mode == "events":
            self.ev1[cid] = self.event()

    def keyed(self, call_of: dict[tuple[str, int], int]) -> list[tuple[int, int]]:
        """``(timed call id, shape-pass call id)`` for each finished timed call that matches a call of the
        shape pass by ``(module name, call_index)`` (``CallSkeleton.key``)."""
        skeleton, index = self.skeleton, self.index
        if skeleton is None:
            return []
        return [(j, cid) for j in range(len(self.t0))
                if self.t1[j] and (cid := call_of.get(skeleton.key(j, index))) is not None]

    def tree(self, call_of: dict[tuple[str, int], int]) -> dict[int, int | None]:
        """For each matched timed call (shape-pass call id), the shape-pass call id of its nearest matched
        ancestor in this run's call tree (``None``: none): the call whose self time its time is taken from."""
        skeleton = self.skeleton
        if skeleton is None:
            return {}
        matched = dict(self.keyed(call_of))
        out: dict[int, int | None] = {}
        for j, cid in matched.items():
            parent = skeleton.parent[j]
            while parent is not None and parent not in matched:
                parent = skeleton.parent[parent]
            out[cid] = matched[parent] if parent is not None else None
        return out

    def moved(self, call_of: dict[tuple[str, int], int], parents: Sequence[int | None]) -> set[int]:
        """Shape-pass call ids of the matched timed calls whose parent is not the one the shape pass saw (its
        ``parents``, by call id): a forward that calls a layer from elsewhere after its first run."""
        skeleton, index = self.skeleton, self.index
        if skeleton is None or not parents:
            return set()
        out = set()
        for j, cid in self.keyed(call_of):
            parent = skeleton.parent[j]
            now = call_of.get(skeleton.key(parent, index)) if parent is not None else None
            if cid < len(parents) and now != parents[cid]:
                out.add(cid)
        return out

    def unmatched(self, call_of: dict[tuple[str, int], int]) -> dict[int | None, dict[str, int]]:
        """Timed calls the shape pass did not see (a forward that calls a layer more often after its first
        run, a branch it did not take), counted by the shape-pass call whose self time holds them: ``{call id
        of the nearest matched ancestor (None: none): {module name: how many calls}}``. Only the outermost such
        calls are counted."""
        skeleton, index = self.skeleton, self.index
        if skeleton is None:
            return {}
        out: dict[int | None, dict[str, int]] = {}
        for j in range(len(self.t0)):
            name = skeleton.key(j, index)
            if call_of.get(name) is not None:
                continue
            parent = skeleton.parent[j]
            owner = call_of.get(skeleton.key(parent, index)) if parent is not None else None
            if parent is None or owner is not None:
                found = out.setdefault(owner, {})
                found[name[0]] = found.get(name[0], 0) + 1
        return out

    def called_modules(self) -> set[str]:
        """The names of the modules this run called (every call, matched or not)."""
        skeleton, index = self.skeleton, self.index
        if skeleton is None:
            return set()
        return {index.names[slot][0] for slot in set(skeleton.slot)}

    def failed_key(self) -> tuple[str, int] | None:
        """``(module name, call_index)`` of the innermost call that raised in this pass, if one did."""
        if self.failed is None or self.skeleton is None:
            return None
        return self.skeleton.key(self.failed, self.index)

