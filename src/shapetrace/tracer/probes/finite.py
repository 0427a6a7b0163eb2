"""``FiniteProbe``: where a NaN or an Inf first appeared in the forward (``check_finite=True``).

Opt-in, because it reads tensor values. Each floating-point or complex tensor a call is given (when it starts)
or returns (when it ends), nested in tuples, lists and dicts too, is checked once per version: a tensor
already checked and not written since is not checked again (a container returning its last child's output, a
``Sequential`` passing one layer's output to the next cost nothing more). The check is one sum
(``torch.isfinite(t.sum())``: no full-size temporary; a sum holds NaN or Inf whenever a value does), and only a
tensor that fails it is counted value by value (NaN, +Inf, -Inf; a half-precision sum of finite values that
overflows is found finite there). Integer and bool tensors cannot hold either and are skipped, as are tensors
whose values cannot be read this way (sparse, nested, quantized, ``meta``). A call that raised has no output.

The *origin* of each kind (NaN, +Inf, -Inf) is found when the first call to end with that kind in its output
ends: that call made them, unless its own parameters are finite and one of its inputs already held that kind
when it started; then its enclosing call's own code is asked the same question, and so on up to the trace's
input (or, for a later forward in a ``Tracer`` block, the code outside the calls). Which kind is reported is
decided in ``merge``: NaN anywhere; else Inf that reached the model's output; ±Inf that stayed inside (an
attention mask's ``-inf``) and the trace inputs' non-finite values are recorded as facts, not as a problem.
Written to ``Call.nonfinite`` (every call whose output holds some) and ``Trace.meta["nonfinite"]``.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from ..engine import Engine, Probe
from ..flow import DataFlow
from ..metrics import NONFINITE_INPUT, NONFINITE_LAYER, NONFINITE_OUTSIDE, NONFINITE_OWN_CODE, CallNonfinite
from ..records import Trace

__all__ = ["FiniteProbe", "count_nonfinite", "value_tensors"]

Counts = tuple[int, int, int, int]  # nan, posinf, neginf, values
KINDS = ("nan", "posinf", "neginf")  # the order of the first three counts
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
    """Whether ``t`` holds floating-point or complex values that a reduction can check."""
    return ((t.is_floating_point() or t.is_complex()) and t.layout == torch.strided and not t.is_meta
            and not t.is_nested and not t.is_quantized)


def count_nonfinite(t: torch.Tensor) -> Counts | None:
    """``(nan, posinf, neginf, values)`` of a floating-point or complex tensor (zeros for one that is all
    finite); ``None`` for one whose values cannot be read (integer, bool, sparse, nested, quantized, ``meta``).
    A complex tensor counts its real and imaginary parts apart (``values`` is twice its elements)."""
    try:
        if not _readable(t):
            return None
        t = t.detach()
        values = t.numel() * (2 if t.is_complex() else 1)
        if values == 0 or bool(torch.isfinite(t.sum())):  # a sum is finite only when every value is
            return (0, 0, 0, values)
        if t.is_complex():  # the sum was not finite: count (a sum of finite values may have overflowed)
            t = torch.view_as_real(t.resolve_conj())
        return (int(torch.isnan(t).sum()), int(torch.isposinf(t).sum()), int(torch.isneginf(t).sum()), values)
    except Exception:  # noqa: BLE001 - a tensor subclass that refuses these reads: skipped, never the forward broken
        return None


def _added(a: Counts | None, b: Counts) -> Counts:
    return b if a is None else (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3])


def _bad(c: Counts | None) -> bool:
    return c is not None and (c[0] or c[1] or c[2]) > 0


class _Checked:
    """``count_nonfinite`` once per tensor version: keyed by ``id()``, kept while that tensor lives unchanged
    (a weak reference and its ``_version``, as ``flow.TensorIds`` does); a tensor without a version counter
    (an inference tensor) or weak references is checked each time."""

    def __init__(self) -> None:
        self._by_id: dict[int, tuple[weakref.ref, int, Counts | None]] = {}

    def __call__(self, t: torch.Tensor) -> Counts | None:
        entry = self._by_id.get(id(t))
        try:
            version = t._version
        except Exception:  # noqa: BLE001 - an inference tensor keeps no version counter
            version = None
        if entry is not None and version is not None and entry[1] == version and entry[0]() is t:
            return entry[2]
        counts = count_nonfinite(t)
        if version is not None:
            try:
                self._by_id[id(t)] = (weakref.ref(t), version, counts)
            except TypeError:  # no weak references to this tensor type: not remembered
                pass
        return counts

    def scan(self, value: Any) -> tuple[Counts | None, list[Counts | None]]:
        """The counts of the tensors in ``value`` summed (``None``: none readable), each tensor once, and each
        tensor's own counts in order (for naming the K-th input)."""
        total: Counts | None = None
        each: list[Counts | None] = []
        seen: set[int] = set()
        for t in value_tensors(value):
            counts = self(t)
            each.append(counts)
            if counts is not None and id(t) not in seen:
                seen.add(id(t))
                total = _added(total, counts)
        return total, each


def _nonfinite_params(module: nn.Module, recurse: bool) -> list[str]:
    """The names of ``module``'s parameters and buffers (``recurse``: its submodules' too) holding NaN or Inf."""
    own = [*module.named_parameters(recurse=recurse), *module.named_buffers(recurse=recurse)]
    return [name for name, t in own if _bad(count_nonfinite(t))]


class FiniteProbe(Probe):
    """``found[cid]``: the counts over each call's checked output tensors, for calls whose output holds NaN or
    Inf; ``origins[kind]``: where the first of each kind came from; ``inputs``: the trace inputs holding some."""

    def __init__(self, flow: DataFlow | None = None) -> None:
        self._flow = flow  # the tensor ids, to name the inputs that held them (``seen_tensors``)
        self._bad_inputs: dict[int, list[tuple[int | None, Counts]]] = {}  # cid -> (tid, counts) of each
        self.found: dict[int, Counts] = {}
        self.origins: dict[str, dict[str, Any]] = {}
        self.inputs: list[dict[str, int]] = []
        self._given: dict[int, Counts] = {}  # the non-finite inputs of each call, as they were when it started
        self._parents_of_children: set[int] = set()
        self._top: list[int] = []  # the top-level calls, in order
        self._order = 0
        self._check = _Checked()
        self._engine: Engine | None = None

    def start(self, engine: Engine) -> None:
        self._engine = engine
        engine.quiet = True  # the checks' own reductions are not the forward's ops, for any torch function mode

    def on_call_start(self, cid: int, module: nn.Module, args: tuple, kwargs: Mapping | None) -> None:
        engine = self._engine
        parent = engine.calls.parent[cid] if engine is not None else None
        if parent is None:
            self._top.append(cid)
        else:
            self._parents_of_children.add(parent)
        given, each = self._check.scan((args, kwargs or {}))
        if _bad(given):
            self._given[cid] = given
            ids = self._flow.ids if self._flow is not None else None
            tensors = list(value_tensors((args, kwargs or {})))
            self._bad_inputs[cid] = [(ids.lookup(t) if ids is not None else None, c)
                                     for t, c in zip(tensors, each) if c is not None and _bad(c)]
            if len(self._top) == 1 and parent is None:  # the trace's own inputs: a fact, not a verdict
                self.inputs = [{"input": k, **_fields(c)} for k, c in enumerate(each) if _bad(c)]

    def on_call_end(self, cid: int, module: nn.Module, output: Any, error: BaseException | None) -> None:
        if error is not None:
            return  # no output to check
        counts, _ = self._check.scan(output)
        if not _bad(counts):
            return
        self.found[cid] = counts
        for k, kind in enumerate(KINDS):
            if counts[k] and kind not in self.origins and self._engine is not None:
                self.origins[kind] = self._blame(cid, module, k)

    def _blame(self, cid: int, module: nn.Module, k: int) -> dict[str, Any]:
        """Where the first values of kind ``k`` seen in ``cid``'s output came from (see the module docstring)."""
        self._order += 1
        leaf = cid not in self._parents_of_children
        try:  # a leaf's submodules' parameters too: it used them without calling them
            params = _nonfinite_params(module, recurse=leaf)
        except Exception:  # noqa: BLE001 - a module whose parameters cannot be listed: not said
            params = []
        given = self._given.get(cid)
        if params or given is None or not given[k]:
            found: dict[str, Any] = {"first": cid, "where": NONFINITE_LAYER if leaf else NONFINITE_OWN_CODE,
                                     **_fields(self.found[cid])}
            if params:
                found["own_nonfinite"] = params
        else:
            found = self._climb(cid, k)
        found["order"] = self._order
        first = found.get("first")
        held = self._given.get(first) if isinstance(first, int) else None
        if held is not None:  # the inputs it was given held other kinds (an attention mask's -inf, an Inf)
            found["given"] = {kind: n for kind, n in zip(KINDS, held) if n}
            kind = 1 if held[1] else 2 if held[2] else None
            if k == 0 and kind is not None:  # the NaN was made from an Inf it was given: where that came from,
                # the Inf's recorded origin when one was found (a layer that ran before, ``first``'s sibling),
                came = self.origins.get(KINDS[kind]) or self._climb(first, kind)  # else up from ``first``
                found["given_from"] = {key: came[key] for key in ("first", "where", "seen_in") if key in came}
        return found

    def _climb(self, cid: int, k: int) -> dict[str, Any]:
        """The origin of kind ``k`` in the inputs ``cid`` was given: its enclosing call's own code, unless that
        call's own parameters hold some or its own inputs held that kind already (then the next one up)."""
        engine = self._engine
        assert engine is not None
        c = cid
        while True:
            parent = engine.calls.parent[c]
            if parent is None:  # a top-level call was given them
                given = self._given[c]
                held = next((i for i in self.inputs if i[KINDS[k]]), None)
                if c == self._top[0] and held is not None:  # the first input holding them, its own counts
                    return {"first": f"input:{held['input']}", "where": NONFINITE_INPUT,
                            **{key: v for key, v in held.items() if key != "input"}}
                return {"first": None, "where": NONFINITE_OUTSIDE, "seen_in": c, **_fields(given)}
            try:
                params = _nonfinite_params(engine.index.modules[engine.calls.slot[parent]], recurse=False)
            except Exception:  # noqa: BLE001 - a module whose parameters cannot be listed: not said
                params = []
            above = self._given.get(parent)
            if params or above is None or not above[k]:
                found: dict[str, Any] = {"first": parent, "where": NONFINITE_OWN_CODE, "seen_in": c,
                                         **_fields(self._given[c])}
                tids = [tid for tid, counts in self._bad_inputs.get(c, []) if counts[k] and tid is not None]
                if tids:
                    found["seen_tensors"] = tids
                if params:
                    found["own_nonfinite"] = params
                return found
            c = parent

    def merge(self, trace: Trace) -> None:
        for cid, (nan, posinf, neginf, values) in self.found.items():
            if 0 <= cid < len(trace.calls):
                trace.calls[cid].nonfinite = CallNonfinite(nan=nan, posinf=posinf, neginf=neginf, values=values)
        summary: dict[str, Any] = {"first": None, "calls": len(self.found)}
        origin = self._verdict()
        if origin is not None:
            summary.update({key: v for key, v in origin.items() if key != "order"})
        if self.inputs:
            summary["inputs"] = self.inputs
        trace.meta["nonfinite"] = summary

    def _verdict(self) -> dict[str, Any] | None:
        """The origin reported: the first NaN's, made anywhere; else the first Inf's of a sign that reached the
        model's output; else none (±Inf that stayed inside, an attention mask's -inf, is no problem)."""
        if "nan" in self.origins:
            return self.origins["nan"]
        out = [self.found[c] for c in self._top if c in self.found]
        reached = [kind for k, kind in enumerate(KINDS[1:], 1) if any(c[k] for c in out) and kind in self.origins]
        return min((self.origins[kind] for kind in reached), key=lambda o: o["order"], default=None)


def _fields(counts: Counts) -> dict[str, int]:
    nan, posinf, neginf, values = counts
    return {"nan": nan, "posinf": posinf, "neginf": neginf, "values": values}
