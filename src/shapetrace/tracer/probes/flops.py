"""``FlopProbe``: inclusive FLOPs of every module call, read from ``FlopCounterMode``'s running total.

The probe enters ``torch.utils.flop_counter.FlopCounterMode`` (with ``tracer.flops.CUSTOM_FLOPS`` for the
fused ops it would count as 0) and reads its total at each call's start and end; the difference is what
the call computed. For a recurrent module it also keeps the analytic count of ``tracer.flops.rnn_flops``
(``FlopCounterMode`` sees one opaque op there). After the forward ``tracer.flops.merge_flops`` writes the
two into ``Call.flops``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..engine import Engine, Probe
from ..flops import CUSTOM_FLOPS, merge_flops, rnn_flops
from ..records import Trace


class FlopProbe(Probe):
    """``results[cid] = (counted, analytic)``; ``total`` is the counter's grand total after the forward."""

    counts_dispatched_ops = True

    def __init__(self) -> None:
        self.results: dict[int, tuple[int, int | None]] = {}
        self.total = 0
        self._before: dict[int, tuple[int, int | None]] = {}
        self.counter: Any = None

    def start(self, engine: Engine) -> None:
        # imported when FLOPs are asked for: torch.utils.flop_counter adds about 0.2 s to torch's import (triton)
        from torch.utils.flop_counter import FlopCounterMode  # noqa: PLC0415 - slow import, only for FLOPs

        self.counter = FlopCounterMode(display=False, custom_mapping=CUSTOM_FLOPS)
        self.counter.__enter__()

    def stop(self, engine: Engine, exc: BaseException | None) -> None:
        if self.counter is not None:
            self.total = self.counter.get_total_flops()
            self.counter.__exit__(None, None, None)

    def on_call_start(self, cid: int, module: nn.Module, args: tuple, kwargs: dict | None) -> None:
        try:
            analytic = rnn_flops(module, args, kwargs)
        except Exception:  # noqa: BLE001 - a formula must never break the forward
            analytic = None
        self._before[cid] = (self.counter.get_total_flops(), analytic)

    def on_call_end(self, cid: int, module: nn.Module, output: Any, error: BaseException | None) -> None:
        before, analytic = self._before.pop(cid)
        self.results[cid] = (self.counter.get_total_flops() - before, analytic)

    def merge(self, trace: Trace) -> None:
        merge_flops(trace.calls, self.results)
