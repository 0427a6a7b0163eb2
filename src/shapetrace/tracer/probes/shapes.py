"""``ShapeProbe``: one ``Call`` record per module call, with its inputs, kwargs and outputs as value trees.

While the forward runs the probe does only what needs the live objects: it gives each tensor argument and
output its trace-local id (``DataFlow``'s tensor map) and reads its shape, dtype, device and grad flag into
a plain tuple. Everything else — the ``Call`` records, ``TensorMeta`` trees, names, depths, edges and side
inputs, parameter counts, aliases — is built after the forward (``build``) from what was recorded, so the
work per call in the hooks stays close to what a bare hook costs. Arguments other than plain tensors
(tuples of states, dicts, dataclasses) are described into value trees on the spot: they are rare and
their contents may be changed by the forward.

A call that raised keeps its inputs and the error's message; the innermost call the failing exception left
becomes the trace's ``Failure``, unless an enclosing call caught the exception and returned, or a later
exception (not raised from it, even one with the same type and message) failed the forward: then that one's
innermost call.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import bulk
from ..engine import Engine, ModuleIndex, Probe, Unfinished
from ..flow import DataFlow
from ..modelstats import Stats
from ..records import Call, Failure, Note, TensorMeta, exception_text, iter_tensors
from ..values import device_name, dtype_name

_Tensor = torch.Tensor

# A plain tensor as recorded in the hooks: (tid, shape, dtype, device, requires_grad). Value trees never
# hold tuples (a Python tuple becomes a list), so a tuple in a recorded argument list is always one of these.
Raw = tuple


class ShapeProbe(Probe):
    """Records each call's arguments and outputs; ``build`` turns them into ``calls`` (in start order, ids =
    the engine's call ids) and ``failure``."""

    needs_kwargs = True

    def __init__(self, index: ModuleIndex, flow: DataFlow, *, weight_devices: bool = True) -> None:
        self.index = index
        self.flow = flow
        # Note a failing call's weights on another device than its inputs (``_note_weights_elsewhere``): not in a
        # shape-only trace, whose integer inputs stay real on the CPU beside the weights' meta copies.
        self.weight_devices = weight_devices
        self.calls: list[Call] = []
        self.failure: Failure | None = None
        self.kwargs_unknown = False  # a call's kwargs could not be read (``trace.meta["kwargs_unknown"]``)
        # By call id (the start orders are the flow's ``starts``): the positional arguments (raw tuples or value trees),
        # the keyword arguments (a value tree, or None when there were none).
        self._args: list[list[Any]] = []
        self._kwargs: list[Any] = []
        # By call id, for the calls that ended: the event order at the end, and the output (raw or a tree).
        self._end: dict[int, int] = {}
        self._out: dict[int, Any] = {}
        self._error: dict[int, str] = {}
        self._notes: dict[int, list[Note]] = {}  # by call id: notes for ``build`` to give the calls
        self._failed_start = -1  # start order of the failure's call (the failure is cleared by a later return)
        # The failure's exception object carries this token (``_tag``): a later exception is the same one going
        # up, or raised from it, only if it or one in its chain carries it. ``False`` when it could not be set.
        self._token = object()
        self._tagged = False
        self._engine_stopped: list[int] = []  # the engine's ``stopped`` (set in ``start``)

    def start(self, engine: Engine) -> None:
        self._skeleton = engine.calls
        self._engine_stopped = engine.stopped

    # ---- the hooks: keep them small ---------------------------------------------------------------------
    def on_call_start(self, cid: int, module: nn.Module, args: tuple, kwargs: dict | None) -> None:
        if len(self._kwargs) != cid:  # an earlier start stopped part-way (see _pad)
            self._pad(cid)
        flow = self.flow
        flow.order += 1
        order = flow.order
        if kwargs is None:
            kwargs = {}
            self.kwargs_unknown = True
        if self._skeleton.parent[cid] is None:  # tensors entering a top-level call are the trace's inputs
            _mark_inputs(flow, args, kwargs, order)
        ids = flow.ids
        by_id = ids.by_id
        raw: list[Any] = []
        try:
            for a in args:
                if type(a) is _Tensor:
                    entry = by_id.get(id(a))
                    tid = entry[1] if entry is not None and entry[0]() is a else ids.new(a, None, order)
                    raw.append((tid, a.shape, a.dtype, a.device, a.requires_grad))
                else:
                    raw.append(flow.describe_in(a, order, 1))
        except (RuntimeError, TypeError, ValueError):  # a tensor without a plain shape (nested, jagged)
            raw = [flow.describe_in(a, order, 1) for a in args]
        flow.starts.append(order)
        self._args.append(raw)
        self._kwargs.append(flow.describe_in(dict(kwargs), order) if kwargs else None)

    def on_call_args(self, cid: int, module: nn.Module, args: tuple, kwargs: dict | None) -> None:
        """A pre-hook of the module's own ran: record what its forward receives instead.

        A tensor the hook made (``x.flatten(1)``) comes from the argument it replaced, as far as the data flow
        goes: it gets that argument's producer, so the edge into this call (and into the children of a container
        that read it) stays, with the shape the forward received: one of the two kinds of edge whose source does not
        list its tensor among its outputs (docs/trace-format.md, "edge")."""
        flow = self.flow
        order = flow.starts[cid]
        if kwargs is None:
            kwargs = {}
        ids, before = flow.ids, self._args[cid] if cid < len(self._args) else []
        for a, was in zip(args, before):
            if type(a) is _Tensor and type(was) is tuple and ids.lookup(a) is None:
                source = ids.producer.get(was[0])
                if source is not None:
                    ids.new(a, source, ids.produced_at[was[0]])
        if self._skeleton.parent[cid] is None:
            _mark_inputs(flow, args, kwargs, order)
        self._args[cid] = [flow.describe_in(a, order, 1) for a in args]
        self._kwargs[cid] = flow.describe_in(dict(kwargs), order) if kwargs else None

    def on_call_end(self, cid: int, module: nn.Module, output: Any, error: BaseException | None) -> None:
        flow = self.flow
        flow.order += 1
        order = flow.order
        self._end[cid] = order
        if error is not None:
            self._fail(cid, error)
            if self.weight_devices and self.failure is not None and self.failure.call == cid:
                self._note_weights_elsewhere(cid, module)
            return
        start = flow.starts[cid]
        if self.failure is not None and self._failed_start > start:
            self.failure = None  # the exception was caught inside this call's forward
        if type(output) is _Tensor:
            ids = flow.ids  # ids.produced_since(), inline: this runs on every call
            entry = ids.by_id.get(id(output))
            # entry[2] is None: an inference tensor, which has no version counter to read
            if (entry is not None and entry[0]() is output and ids.produced_at.get(entry[1], -1) >= start
                    and (entry[2] is None or output._version == entry[2])):
                tid = entry[1]
            else:
                tid = ids.new(output, f"call:{cid}", order)
            try:
                self._out[cid] = (tid, output.shape, output.dtype, output.device, output.requires_grad)
                return
            except (RuntimeError, TypeError, ValueError):
                pass
        self._out[cid] = flow.describe_out(output, start, f"call:{cid}", order)

    def _pad(self, calls: int) -> None:
        """Fill the per-call lists up to ``calls`` entries.

        They are indexed by call id, and a start can stop part-way: a ``RecursionError`` in a forward as deep
        as Python allows can strike inside the hooks themselves (the engine records it and the forward goes
        on). A call whose start was not recorded keeps no inputs and the event order of where it was noticed.
        """
        starts = self.flow.starts
        while len(starts) < calls:
            starts.append(self.flow.order)
        while len(self._args) < calls:
            self._args.append([])
        while len(self._kwargs) < calls:
            self._kwargs.append(None)

    def _note_weights_elsewhere(self, cid: int, module: nn.Module) -> None:
        """The failure's call (the innermost that raised) when its module's own parameters or buffers are on a
        device none of its input tensors is on (the commonest cause of "Expected all tensors to be on the same device") gets a
        ``weights-elsewhere`` note naming their devices: the trace records the inputs' devices, not the weights'.
        Only calls that raised pay for it."""
        try:
            weights = {device_name(t.device) for t in (*module._parameters.values(), *module._buffers.values())
                       if t is not None}
            given: set[str] = set()
            for a in [*self._args[cid], self._kwargs[cid]]:
                if type(a) is Raw:  # a plain tensor, as recorded in the hook
                    given.add(device_name(a[3]))
                else:
                    given.update(m.device for _, m in iter_tensors(a))
        except (AttributeError, RuntimeError, TypeError):  # a module without Module's registries; a jagged tensor
            return
        if given and weights - given:
            self._notes.setdefault(cid, []).append(Note("weights-elsewhere", text=", ".join(sorted(weights - given))))

    def _fail(self, cid: int, error: BaseException) -> None:
        if len(self._kwargs) <= cid:  # the call's start was not recorded (see _pad)
            self._pad(cid + 1)
        if isinstance(error, Unfinished):
            self._error.setdefault(cid, _said(error))
            if self.failure is None:
                self.failure = Failure(cid, "Interrupted", "")
                self._failed_start = self.flow.starts[cid]
            return
        self._error.setdefault(cid, exception_text(type(error).__name__, _said(error)))
        if self.failure is None or not _continues(error, self.failure, self._within(self.failure.call, cid),
                                                  self._token if self._tagged else None):
            self.failure = Failure(cid, type(error).__name__, _said(error))
            self._failed_start = self.flow.starts[cid]
            self._tagged = _tag(error, self._token)

    def _within(self, inner: int | None, cid: int) -> bool:
        """Whether call ``inner`` is call ``cid`` or one of its descendants (an exception it raised goes up
        through ``cid``)."""
        parent = self._skeleton.parent
        while inner is not None:
            if inner == cid:
                return True
            inner = parent[inner] if inner < len(parent) else None
        return False

    # ---- after the forward --------------------------------------------------------------------------------
    def build(self, exc: BaseException | None, stats: list[Stats]) -> list[Call]:
        """The ``Call`` records of the forward, the edges and side inputs (into the flow), and the failure
        outside every module when ``exc`` left the forward without a call failing. ``stats`` holds each
        module's parameter counts, by slot (``model_stats``)."""
        _untag(exc, self._token)  # the exception the caller gets back carries no mark of this trace
        skeleton, index = self._skeleton, self.index
        if len(self._kwargs) != len(skeleton):  # starts that stopped part-way, the last ones among them
            self._pad(len(skeleton))
        names, classes = index.names, index.classes
        to_meta = _RawToMeta()
        made = to_meta.made
        calls = self.calls = []
        ends, outs, errors = self._end, self._out, self._error
        for cid, (slot, parent, start, args, kwargs) in enumerate(
                zip(skeleton.slot, skeleton.parent, self.flow.starts, self._args, self._kwargs)):
            every = names[slot]
            if len(every) == 1:
                name, aliases = every[0], []
            else:
                name = _pick_name(every, calls[parent].module if parent is not None else None)
                aliases = [n for n in every if n != name]
            inputs = []
            for a in args:
                if type(a) is Raw:
                    a = made.get(a) or to_meta(a)
                inputs.append(a)
            out = outs.get(cid)
            if type(out) is tuple:
                out = made.get(out) or to_meta(out)
            call = bulk.call(cid, name, classes[slot], skeleton.index[cid], parent,
                             0 if parent is None else calls[parent].depth + 1, start, ends.get(cid), aliases,
                             inputs, kwargs if kwargs is not None else {}, out, *stats[slot])
            error = errors.get(cid)
            if error is not None:
                call.error = error
            calls.append(call)
        for cid in self._engine_stopped:  # recomputations torch.utils.checkpoint stopped (the engine's list)
            calls[cid].notes.append(Note("recomputation-stopped"))
        for cid, notes in self._notes.items():
            calls[cid].notes.extend(notes)
        self.flow.connect(calls)
        if exc is not None and self.failure is None:
            self.failure = Failure(None, type(exc).__name__, _said(exc))
        return calls


def _said(error: BaseException) -> str:
    """What the exception says; Python's own stand-in when its ``__str__`` raises (a user's exception class)."""
    try:
        return str(error)
    except Exception:  # noqa: BLE001 - anything a broken __str__ raises
        return "<exception str() failed>"


def _mark_inputs(flow: DataFlow, args: tuple, kwargs: dict, order: int) -> None:
    """The tensors entering a top-level call are the trace's inputs (``input:0``, ``input:name``)."""
    for i, a in enumerate(args):
        flow.mark_inputs(a, f"input:{i}", order)
    for k, v in kwargs.items():
        flow.mark_inputs(v, f"input:{k}", order)


def _continues(error: BaseException, failure: Failure, going_up: bool, token: object | None) -> bool:
    """Whether ``error``, leaving a call, is the recorded ``failure`` going up (``going_up``: the failure's call
    is this call or one inside it, and ``error`` is the same exception) or raised from it (``raise X from e``,
    or while handling it) rather than a new one: the forward caught the recorded one and went on (a fallback
    after a fast path failed, a retry), then failed elsewhere — perhaps with the same type and message, which
    alone do not tie a later call's exception to an earlier, caught one.

    By the ``token`` the failure's exception object carries (``_tag``), along the chain of causes: a new
    exception of the same type and message raised after the recorded one was caught is not it. Where the
    exception took no attribute (``token`` is ``None``), by type and message. Never by a reference to the
    exception: exceptions cannot be weakly referenced, and a strong reference would keep the failing frames'
    tensors alive until the trace ends."""
    seen: set[int] = set()
    e: BaseException | None = error if going_up else _raised_from(error)
    while e is not None and id(e) not in seen:
        if token is not None:
            if _tagged(e, token):
                return True
        elif type(e).__name__ == failure.type and _said(e) == failure.message:
            return True
        seen.add(id(e))
        e = _raised_from(e)
    return False


def _raised_from(error: BaseException) -> BaseException | None:
    """The exception ``error`` was raised from (``raise X from e``) or while handling, unless it said ``from None``."""
    return error.__cause__ or (None if error.__suppress_context__ else error.__context__)


_TAG = "_shapetrace_failure"


def _tagged(error: BaseException, token: object) -> bool:
    """Whether ``_tag`` gave ``error`` this ``token`` (each trace its own: traces nested in one forward each mark
    the same exception)."""
    try:
        tokens = error.__dict__.get(_TAG)
    except Exception:  # noqa: BLE001 - an exception type that hides its instance dictionary
        return False
    return isinstance(tokens, set) and token in tokens


def _tag(error: BaseException, token: object) -> bool:
    """Mark ``error`` as a trace's failure with ``token`` (one attribute on the exception object, a set of the
    tokens of the traces it failed, each holding nothing else; taken off again by ``_untag`` where the trace can
    reach the exception); ``False`` where the exception takes no attribute."""
    try:
        tokens = error.__dict__.setdefault(_TAG, set())
        if not isinstance(tokens, set):
            return False
        tokens.add(token)
    except Exception:  # noqa: BLE001 - an exception type without an instance dictionary, or a read-only one
        return False
    return True


def _untag(error: BaseException | None, token: object) -> None:
    """Take ``token`` off ``error`` and the exceptions it was raised from, and the attribute once it is empty."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        try:
            tokens = error.__dict__.get(_TAG)
            if isinstance(tokens, set):
                tokens.discard(token)
                if not tokens:
                    del error.__dict__[_TAG]
        except Exception:  # noqa: BLE001, S110 - an exception type that hides its instance dictionary: nothing was set
            pass
        error = error.__cause__ or error.__context__


def _pick_name(names: list[str], parent_name: str | None) -> str:
    """The module's name as seen from the calling parent (a shared module has several)."""
    if parent_name is None:
        return names[0]
    for n in names:
        if n.rpartition(".")[0] == parent_name:
            return n
    return names[0]


class _RawToMeta:
    """Turns raw tensor tuples from the hooks into ``TensorMeta``s, each distinct one once (``made``): the
    output of one call is usually the input of the next, and both get the same record."""

    def __init__(self) -> None:
        self.made: dict[Raw, TensorMeta] = {}
        self.names: dict[torch.dtype | torch.device, str] = {}  # this trace's few dtypes and devices, named once

    def __call__(self, raw: Raw) -> TensorMeta:
        tid, shape, dtype, device, grad = raw
        names = self.names
        shape = tuple(shape)
        if shape and type(shape[0]) is not int:  # under torch.jit.trace sizes are 0-dim tensors
            shape = tuple(int(s) for s in shape)
        meta = self.made[raw] = bulk.tensor_meta(
            shape, names.get(dtype) or names.setdefault(dtype, dtype_name(dtype)),
            names.get(device) or names.setdefault(device, device_name(device)), tid, grad)
        return meta
