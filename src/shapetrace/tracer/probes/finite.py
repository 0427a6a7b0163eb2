"""``FiniteProbe``: where a NaN or an Inf first appeared in the forward (``check_finite=True``).

Opt-in, because it reads tensor values: each floating-point or complex tensor a call returns (those nested in
tuples, lists and dicts too) costs one reduction, ``torch.isfinite(t).all()`` (on a GPU, a sync); only a
tensor that is not all finite is counted (NaN, +Inf, -Inf). Integer and bool tensors cannot hold either and are
skipped, as are tensors whose values cannot be read this way (sparse, nested, quantized, ``meta``). A call that
raised has no output to check. The first top-level call's inputs, the trace's own, are checked when it starts.

The *origin* is found in event order, when calls end: the first call to end with a non-finite output. If
its inputs were finite (or it is a top-level call), it made them: a call without child calls is the layer
itself; a call with child calls (whose outputs were all finite, or one of them would have ended first) made
them in its own Python code. If its inputs already held them, the code that made those inputs did: its
parent's own code, between its children. A trace input that holds them is the origin, whatever comes after
(and the inputs of a later top-level call, in a ``Tracer`` block, blame the code outside the calls).
The module whose code is blamed has its own parameters and buffers checked too (a ``Linear`` with a NaN
weight says so). Written to ``Call.nonfinite`` (every call whose output holds some) and
``Trace.meta["nonfinite"]`` after the forward.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from ..engine import Engine, Probe
from ..metrics import NONFINITE_INPUT, NONFINITE_LAYER, NONFINITE_OUTSIDE, NONFINITE_OWN_CODE, CallNonfinite
from ..records import Trace

__all__ = ["FiniteProbe", "count_nonfinite", "value_tensors"]

Counts = tuple[int, int, int, int]  # nan, posinf, neginf, values
_MAX_NESTING = 32  # how deep into nested containers an output is searched for tensors


def value_tensors(value: Any, depth: int = 0) -> Iterator[torch.Tensor]:
    """The tensors in ``value`` and in the tuples, lists and dicts inside it, in order."""
    if isinstance(value, torch.Tensor):
        yield value
    elif depth < _MAX_NESTING and isinstance(value, (tuple, list)):
        for v in value:
            yield from value_tensors(v, depth + 1)
    elif depth < _MAX_NESTING and isinstance(value, Mapping):
        for v in value.values():
            yield from value_tensors(v, depth + 1)


def _readable(t: torch.Tensor) -> bool:
    """Whether ``t`` holds floating-point or complex values that one reduction can check."""
    return ((t.is_floating_point() or t.is_complex()) and t.layout == torch.strided and not t.is_meta
            and not t.is_nested and not t.is_quantized)


def count_nonfinite(t: torch.Tensor) -> Counts | None:
    """``(nan, posinf, neginf, values)`` of a tensor that is not all finite; ``None`` for one that is, or whose
    values cannot be read (not floating-point or complex, sparse, nested, quantized, on ``meta``). A complex
    tensor counts its real and imaginary parts apart (``values`` is twice its elements)."""
    try:
        if not _readable(t):
            return None
        if bool(torch.isfinite(t).all()):  # the one reduction every checked tensor costs
            return None
        t = t.detach()
        if t.is_complex():
            t = torch.view_as_real(t.resolve_conj())
        return (int(torch.isnan(t).sum()), int(torch.isposinf(t).sum()), int(torch.isneginf(t).sum()), t.numel())
    except Exception:  # noqa: BLE001 - a tensor subclass that refuses these reads: skipped, never the forward broken
        return None


def _added(a: Counts | None, b: Counts) -> Counts:
    return b if a is None else (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3])


def _scan(value: Any, skip: frozenset[int] = frozenset()) -> Counts | None:
    """The non-finite values of the tensors in ``value`` summed (``None``: all finite), each tensor once, the
    tensors whose storage is in ``skip`` left out; ``values`` counts only the tensors that hold some."""
    total: Counts | None = None
    seen: set[int] = set()
    for t in value_tensors(value):
        if id(t) in seen or (skip and _storage(t) in skip):
            continue
        seen.add(id(t))
        counts = count_nonfinite(t)
        if counts is not None:
            total = _added(total, counts)
    return total


def _storage(t: torch.Tensor) -> int:
    try:
        return t.untyped_storage().data_ptr()
    except Exception:  # noqa: BLE001 - no storage to compare (a subclass): never taken for another's
        return -1 - id(t)


def _own_nonfinite(module: nn.Module) -> list[str]:
    """The names of ``module``'s own parameters and buffers (not its children's) that hold NaN or Inf."""
    own = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
    return [name for name, t in own if count_nonfinite(t) is not None]


class FiniteProbe(Probe):
    """``found[cid]``: the non-finite counts of each call's output that holds some; ``origin``: where the first
    came from (``None`` while everything is finite)."""

    def __init__(self) -> None:
        self.found: dict[int, Counts] = {}
        self.origin: dict[str, Any] | None = None
        self._open: dict[int, tuple[tuple, Any]] = {}  # the arguments of each open call
        self._engine: Engine | None = None
        self._inputs_checked = False

    def start(self, engine: Engine) -> None:
        self._engine = engine
        engine.quiet = True  # the checks' own reductions are not the forward's ops, for any torch function mode

    def on_call_start(self, cid: int, module: nn.Module, args: tuple, kwargs: Mapping | None) -> None:
        self._open[cid] = (args, kwargs)
        if self.origin is None and self._engine is not None and self._engine.calls.parent[cid] is None:
            self._check_inputs(cid, args, kwargs)  # a top-level call's inputs: the first one's are the trace's
            self._inputs_checked = True

    def _check_inputs(self, cid: int, args: tuple, kwargs: Mapping | None) -> None:
        for k, t in enumerate(value_tensors((args, kwargs or {}))):
            counts = count_nonfinite(t)
            if counts is not None:
                if self._inputs_checked:  # a later forward in a Tracer block: the code between them made them
                    self.origin = {"first": None, "where": NONFINITE_OUTSIDE, "seen_in": cid, **_fields(counts)}
                else:
                    self.origin = {"first": f"input:{k}", "where": NONFINITE_INPUT, **_fields(counts)}
                return

    def on_call_end(self, cid: int, module: nn.Module, output: Any, error: BaseException | None) -> None:
        opened = self._open.pop(cid, None)
        if error is not None:
            return  # no output to check
        counts = _scan(output)
        if counts is None:
            return
        self.found[cid] = counts
        if self.origin is None and self._engine is not None:
            self._find_origin(cid, module, output, counts, opened)

    def _find_origin(self, cid: int, module: nn.Module, output: Any, counts: Counts,
                     opened: tuple[tuple, Any] | None) -> None:
        """The first call to end with a non-finite output: it made them, or (its inputs held them already) the
        code that made its inputs did, its parent's own code."""
        engine = self._engine
        assert engine is not None
        parent = engine.calls.parent[cid]
        given = None
        if opened is not None and parent is not None:
            out_storages = frozenset(_storage(t) for t in value_tensors(output))  # written in place: its own doing
            given = _scan(opened, out_storages)
        if given is None:  # layer or own code: decided in merge, from whether it has child calls
            self.origin = {"first": cid, "where": NONFINITE_LAYER, **_fields(counts)}
            blamed = module
        else:
            self.origin = {"first": parent, "where": NONFINITE_OWN_CODE, "seen_in": cid, **_fields(given)}
            blamed = engine.index.modules[engine.calls.slot[parent]]
        try:
            bad = _own_nonfinite(blamed)
        except Exception:  # noqa: BLE001 - a module whose parameters cannot be listed: not said
            bad = []
        if bad:
            self.origin["own_nonfinite"] = bad

    def merge(self, trace: Trace) -> None:
        for cid, (nan, posinf, neginf, values) in self.found.items():
            if 0 <= cid < len(trace.calls):
                trace.calls[cid].nonfinite = CallNonfinite(nan=nan, posinf=posinf, neginf=neginf, values=values)
        summary: dict[str, Any] = {"first": None, "calls": len(self.found)}
        if self.origin is not None:
            summary.update(self.origin)
            first = summary["first"]
            if summary["where"] == NONFINITE_LAYER and any(c.parent == first for c in trace.calls):
                summary["where"] = NONFINITE_OWN_CODE  # its children's outputs were finite: its own code made them
        trace.meta["nonfinite"] = summary


def _fields(counts: Counts) -> dict[str, int]:
    nan, posinf, neginf, values = counts
    return {"nan": nan, "posinf": posinf, "neginf": neginf, "values": values}
