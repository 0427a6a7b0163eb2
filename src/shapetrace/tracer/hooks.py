"""Forward pre/post hooks on every module: one ``Call`` per module invocation, cleanup guaranteed.

``Tracer`` is the context manager behind ``shapetrace.trace``::

    with Tracer(model) as t:
        model(x)
    t.trace  # a Trace: plain data

Entering puts hooks on every module (and, with ``ops=True``, a ``TorchFunctionMode`` that records the
functional operations between modules); leaving removes them and restores what the trace touched: each
module's ``training`` flag, grad mode, and every buffer's values. This holds when the forward raises: the
partial trace then marks the innermost call the exception left as failed, with its inputs and message.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import torch
from torch import nn

from .flow import EdgeSet, TensorIds
from .records import Call, Failure, ModelInfo, Op, TensorMeta, Trace, Uncalled, iter_tensors
from .values import describe, iter_live_tensors, map_tensors


@dataclass
class _ModuleInfo:
    """What the tracer knows of one module object before any call."""

    names: list[str]
    cls: str
    is_leaf: bool
    calls: int = 0


@dataclass
class _Open:
    """A call that has started and not yet ended."""

    call: Call
    module: nn.Module
    is_leaf: bool
    input_tids: set[int]
    exc_at_start: BaseException | None
    side_tids: set[int] = field(default_factory=set)


def _caller_kwargs() -> dict:
    """The keyword arguments of the module call whose global pre-hook is running.

    torch passes global forward pre-hooks the positional arguments only; the keyword arguments live in
    the calling frame of ``Module._call_impl``. When that frame is not what we expect, they are unknown.
    """
    try:
        frame = sys._getframe(2)  # 0: here, 1: _pre_hook, 2: inner or _call_impl
    except ValueError:
        return {}
    if frame.f_code.co_name not in ("inner", "_call_impl"):
        return {}
    kwargs = frame.f_locals.get("kwargs")
    return kwargs if isinstance(kwargs, dict) else {}


def _numel(t: torch.Tensor) -> int:
    try:
        return t.numel()
    except (RuntimeError, ValueError):  # an uninitialised lazy parameter
        return 0


def module_stats(model: nn.Module) -> dict[int, tuple[int, int, int, int]]:
    """For every module object of ``model`` (by ``id``): (params, own params, trainable params, buffer elements).

    One bottom-up pass over the module tree: a module's tensors are its own plus its children's, each
    tensor object counted once (a parameter shared by two children counts once in their parent).
    """
    out: dict[int, tuple[int, int, int, int]] = {}
    tensors: dict[int, tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]] = {}

    def visit(m: nn.Module) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
        if id(m) in tensors:
            return tensors[id(m)]
        own = {id(p): p for p in m._parameters.values() if p is not None}
        params, bufs = dict(own), {id(b): b for b in m._buffers.values() if b is not None}
        for child in m._modules.values():
            if child is not None:
                cp, cb = visit(child)
                params.update(cp)
                bufs.update(cb)
        tensors[id(m)] = (params, bufs)
        out[id(m)] = (sum(_numel(p) for p in params.values()), sum(_numel(p) for p in own.values()),
                      sum(_numel(p) for p in params.values() if p.requires_grad),
                      sum(_numel(b) for b in bufs.values()))
        return params, bufs

    visit(model)
    return out


def model_info(model: nn.Module, stats: dict[int, tuple[int, int, int, int]] | None = None) -> ModelInfo:
    """Totals for the whole model: each parameter object counted once, however often it is registered.

    ``stats`` is ``module_stats(model)`` when the caller has it already."""
    stats = stats if stats is not None else module_stats(model)
    params, _, trainable, buffer_count = stats[id(model)]
    counts: dict[int, int] = {}
    sizes: dict[int, tuple[int, int]] = {}
    modules: set[int] = set()
    for _, m in model.named_modules(remove_duplicate=False):
        modules.add(id(m))
        for p in m._parameters.values():
            if p is not None:
                counts[id(p)] = counts.get(id(p), 0) + 1
                sizes[id(p)] = (_numel(p), p.element_size())
    buffers = {id(b): b for b in model.buffers()}
    return ModelInfo(
        cls=type(model).__name__,
        params=params,
        trainable_params=trainable,
        buffers=buffer_count,
        param_bytes=sum(n * size for n, size in sizes.values()),
        buffer_bytes=sum(_numel(b) * b.element_size() for b in buffers.values()),
        modules=len(modules),
        shared_params=sum(sizes[k][0] for k, n in counts.items() if n > 1),
    )


def _moved_tensors(model: nn.Module, device: torch.device) -> dict[str, torch.Tensor]:
    """Every parameter and buffer slot of ``model``, each tensor copied to ``device`` once.

    One name per (module object, attribute): a module registered under two names (an embedding shared by
    an encoder and its dropout wrapper) is swapped once, or restoring it would put the copy back. A tensor
    shared by two modules (tied weights) gets one copy under both slots.
    """
    copies: dict[int, torch.Tensor] = {}
    out: dict[str, torch.Tensor] = {}
    for prefix, m in model.named_modules():  # each module object once
        for slots in (m._parameters, m._buffers):
            for name, t in slots.items():
                if t is None:
                    continue
                if id(t) not in copies:
                    moved = t.detach().to(device)
                    moved.requires_grad_(t.requires_grad)
                    copies[id(t)] = moved
                out[f"{prefix}.{name}" if prefix else name] = copies[id(t)]
    return out


@contextlib.contextmanager
def _tensor_attributes_kept(model: nn.Module) -> Iterator[None]:
    """Put back the plain tensor attributes a forward sets on its modules (not parameters or buffers).

    A forward on another device can leave such attributes on that device: ``WeightDropout`` assigns the
    dropped-out LSTM weights (and the LSTM's ``_flat_weights``) at every call.
    """
    saved = []
    for m in model.modules():
        attrs = {k: v for k, v in vars(m).items() if isinstance(v, torch.Tensor)}
        lists = {k: (v, list(v)) for k, v in vars(m).items()  # lists such as nn.LSTM's _flat_weights change in place
                 if isinstance(v, list) and v and isinstance(v[0], torch.Tensor)}
        saved.append((m, attrs, lists, {k for k in vars(m) if k not in attrs}))
    try:
        yield
    finally:
        for m, attrs, lists, others in saved:
            for k, v in attrs.items():
                if vars(m).get(k) is not v:
                    object.__setattr__(m, k, v)
            for k, (v, items) in lists.items():
                if vars(m).get(k) is not v:
                    object.__setattr__(m, k, v)
                if any(a is not b for a, b in zip(v, items)) or len(v) != len(items):
                    v[:] = items
            for k in [k for k, v in vars(m).items() if k not in attrs and k not in others
                      and isinstance(v, torch.Tensor)]:
                object.__delattr__(m, k)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model without any)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


class Tracer:
    """Record every module call of ``model`` while the ``with`` block runs.

    Options: ``grad`` keeps autograd on (off by default: the trace runs under ``torch.no_grad()``);
    ``train`` sets training mode for the trace (``None`` leaves each module's flag as it is; the flags are
    restored afterwards); ``device`` runs the model with its parameters and buffers moved there (the model
    itself is not moved; ``"meta"`` traces shapes without computing anything); ``ops`` records functional
    operations and data-flow edges between modules; ``lines`` records the source line of every call and op
    (and implies ``ops``; see ``tracer/lines.py``).
    """

    def __init__(self, model: nn.Module, *, grad: bool = False, train: bool | None = None,
                 device: str | torch.device | None = None, ops: bool = False, lines: bool = False) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"shapetrace traces a torch.nn.Module, got {type(model).__qualname__}")
        self.model = model
        self.grad = grad
        self.train = train
        self.device = torch.device(device) if device is not None else None
        self.ops = ops or lines
        self.lines = lines
        self.trace: Trace | None = None
        self.tracer_errors: list[str] = []
        self._active = False

    # ---- context manager ----------------------------------------------------------------------------
    def __enter__(self) -> Tracer:  # noqa: PYI034 - typing.Self needs Python 3.11
        if self._active:
            raise RuntimeError("this Tracer is already active; make a new one per trace")
        self._active = True
        model = self.model
        self._calls: list[Call] = []
        self._call_keys: list[int] = []  # id() of each call's module, parallel to _calls
        self._op_records: list[Op] = []
        self._stack: list[_Open] = []
        self._order = 0
        self._failure: Failure | None = None
        self._ids = TensorIds()
        self._edges = EdgeSet()
        self._info: dict[int, _ModuleInfo] = {}
        self._modules: dict[int, nn.Module] = {}
        for name, m in model.named_modules(remove_duplicate=False):
            info = self._info.get(id(m))
            if info is None:
                self._info[id(m)] = _ModuleInfo([name], type(m).__name__, not any(True for _ in m.children()))
                self._modules[id(m)] = m
            else:
                info.names.append(name)
        self._training = {id(m): m.training for m in self._modules.values()}
        params: dict[int, tuple[str, torch.Tensor]] = {}
        buffers: dict[int, torch.Tensor] = {}
        for key, m in self._modules.items():
            prefix = self._info[key].names[0]
            for n, p in m._parameters.items():
                if p is not None and id(p) not in params:
                    params[id(p)] = (f"{prefix}.{n}" if prefix else n, p)
            for b in m._buffers.values():
                if b is not None:
                    buffers.setdefault(id(b), b)
        self._params = list(params.values())
        self._buffers = [(b, b.detach().clone()) for b in buffers.values()]
        self._versions = {id(p): p._version for _, p in self._params}
        self._exit = contextlib.ExitStack()
        self._recorder = None  # the OpRecorder when ops are captured
        self._lines = None  # the LineRecorder when source lines are captured
        try:
            self._install()
        except BaseException:
            self._restore()
            raise
        return self

    def _install(self) -> None:
        stack = self._exit
        if self.train is not None:
            self.model.train(self.train)
        stack.enter_context(torch.set_grad_enabled(self.grad))
        if self.device is not None and self.device != model_device(self.model):
            moved = _moved_tensors(self.model, self.device)
            stack.enter_context(_tensor_attributes_kept(self.model))
            stack.enter_context(torch.nn.utils.stateless._reparametrize_module(self.model, moved))
        if self.device is not None and self.device.type == "meta":
            from .shape_only import ShapeOnlyMode  # torch function mode: entered before (under) the op recorder

            stack.enter_context(ShapeOnlyMode())
        # Global hooks, filtered by module, rather than a hook on every module: a per-module hook would
        # change what runs (nn.TransformerEncoderLayer skips its fused fast path when it sees one).
        from torch.nn.modules import module as torch_module

        stack.callback(torch_module.register_module_forward_pre_hook(self._pre_hook).remove)
        stack.callback(torch_module.register_module_forward_hook(
            self._post_hook, with_kwargs=True, always_call=True).remove)
        if self.ops:
            from .ops import FAST_PATH_MODULES, OpRecorder

            self._fast_path = FAST_PATH_MODULES
            self._recorder = stack.enter_context(OpRecorder(self))
        if self.lines:
            from .lines import LineRecorder

            self._lines = stack.enter_context(LineRecorder())

    def _restore(self) -> None:
        try:
            self._exit.close()
        finally:
            for m in self._modules.values():
                if m.training != self._training[id(m)]:  # Module.__setattr__ is slow: set only what changed
                    m.training = self._training[id(m)]
            with torch.no_grad():
                for live, saved in self._buffers:
                    if live.shape == saved.shape and live.device == saved.device:
                        live.copy_(saved)
            self._buffers = []

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        try:
            self._restore()
        finally:
            self._active = False
            self.trace = self._finish(exc)
        return False

    # ---- the hooks ----------------------------------------------------------------------------------
    def _tick(self) -> int:
        self._order += 1
        return self._order

    def _pre_hook(self, module: nn.Module, args: tuple) -> None:
        if id(module) not in self._info:
            return  # a module of another model, or one built inside the forward
        try:
            self._start_call(module, args, _caller_kwargs())
        except Exception as e:  # noqa: BLE001 - a tracer bug must never break the user's forward
            self.tracer_errors.append(f"pre-hook of {type(module).__name__}: {e!r}")

    def _post_hook(self, module: nn.Module, args: tuple, *rest: Any) -> None:
        # (kwargs, output) normally; (output,) when torch runs the hook after the forward raised.
        if id(module) not in self._info:
            return
        try:
            self._end_call(module, rest[-1], sys.exc_info()[1])
        except Exception as e:  # noqa: BLE001
            self.tracer_errors.append(f"post-hook of {type(module).__name__}: {e!r}")

    def _start_call(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        info = self._info[id(module)]
        order = self._tick()
        parent = self._stack[-1] if self._stack else None
        cid = len(self._calls)
        ids = self._ids
        if parent is None:
            # Tensors entering the top-level call are the trace's inputs.
            for i, a in enumerate(args):
                self._mark_inputs(a, f"input:{i}", order)
            for k, v in kwargs.items():
                self._mark_inputs(v, f"input:{k}", order)

        def tid_of(t: torch.Tensor) -> int:
            return ids.get_or_new(t, order)

        call = Call(
            id=cid, module=self._pick_name(info, parent), cls=info.cls, call_index=info.calls,
            parent=parent.call.id if parent else None, depth=parent.call.depth + 1 if parent else 0,
            start=order, aliases=[], inputs=describe(list(args), tid_of), kwargs=describe(dict(kwargs), tid_of),
        )
        call.aliases = [n for n in info.names if n != call.module]
        info.calls += 1
        self._calls.append(call)
        self._call_keys.append(id(module))
        metas = [m for _, m in iter_tensors([call.inputs, call.kwargs])]
        input_tids = {m.tid for m in metas if m.tid is not None}
        self._stack.append(_Open(call, module, info.is_leaf, input_tids, sys.exc_info()[1]))
        if self._lines is not None:
            self._lines.on_call(call, module, parent.module if parent else None)
        if self._recorder is not None:
            # A call inside a module the recorder stepped aside for means that module took its slow path:
            # record again from here on (its residual adds and norms are data flow worth drawing).
            self._recorder.step_back()
            if isinstance(module, self._fast_path):
                self._recorder.step_aside(cid)
        self._consume(metas, f"call:{cid}", skip_innermost=True)

    def _consume(self, metas: Iterable[TensorMeta], node: str, skip_innermost: bool = False) -> None:
        """Edges from each tensor's producer into ``node``, and side inputs of the open calls around it."""
        producer = self._ids.producer
        for meta in metas:
            src = producer.get(meta.tid)
            if src is not None:
                self._edges.add(src, node, meta)
                self.note_consumed(meta, skip_innermost)

    def _mark_inputs(self, value: Any, node: str, order: int) -> None:
        ids = self._ids
        for t in iter_live_tensors(value):
            tid = ids.lookup(t)
            if tid is None or ids.producer.get(tid) is None:
                ids.new(t, node, order)

    def _pick_name(self, info: _ModuleInfo, parent: _Open | None) -> str:
        """The module's name as seen from the calling parent (a shared module has several)."""
        if len(info.names) == 1 or parent is None:
            return info.names[0]
        pname = parent.call.module
        for n in info.names:
            head = n.rpartition(".")[0]
            if head == pname:
                return n
        return info.names[0]

    def note_consumed(self, meta: Any, skip_innermost: bool = False) -> None:
        """Record ``meta`` as a side input of every open call that uses it without having received it.

        A tensor is a side input of a call when it was produced before the call started and was not among
        the call's arguments: fastai's U-Net blocks read encoder activations stored by hooks this way.
        """
        tid = meta.tid
        at = self._ids.produced_at.get(tid)
        if at is None:
            return
        stack = self._stack
        src = self._ids.producer[tid]
        for i in range(len(stack) - (2 if skip_innermost else 1), -1, -1):
            open_ = stack[i]
            call = open_.call
            if at >= call.start:
                break  # produced inside this call, so inside every enclosing call too
            if tid in open_.input_tids or tid in open_.side_tids:
                continue
            open_.side_tids.add(tid)
            call.side_inputs.append(meta)
            self._edges.add(src, f"call:{call.id}", meta, side=True)

    def _end_call(self, module: nn.Module, output: Any, exc: BaseException | None) -> None:
        if not self._stack or self._stack[-1].module is not module:
            # The pre-hook never ran for this call (another pre-hook raised first): nothing to close.
            if not any(o.module is module for o in self._stack):
                return
            while self._stack[-1].module is not module:  # calls whose post-hooks never ran
                self._close_unfinished(self._stack.pop(), exc)
        open_ = self._stack.pop()
        call = open_.call
        if self._recorder is not None:
            self._recorder.step_back(call.id)
        order = self._tick()
        call.end = order
        if exc is not None and exc is not open_.exc_at_start:
            call.error = f"{type(exc).__name__}: {exc}"
            if self._failure is None:
                self._failure = Failure(call.id, type(exc).__name__, str(exc))
            if self._lines is not None:
                self._lines.on_raise(call, module, exc)
            return
        if self._failure is not None and self._failure.call is not None \
                and self._calls[self._failure.call].start > call.start:
            self._failure = None  # the exception was caught inside this call's forward
        ids, node, start = self._ids, f"call:{call.id}", call.start
        call.outputs = describe(output, lambda t: ids.produced_since(t, start, node, order))

    def _close_unfinished(self, open_: _Open, exc: BaseException | None) -> None:
        call = open_.call
        if self._recorder is not None:
            self._recorder.step_back(call.id)
        call.end = self._tick()
        if call.error is None:
            call.error = f"{type(exc).__name__}: {exc}" if exc is not None else "call did not finish"
        if self._failure is None:
            self._failure = Failure(call.id, type(exc).__name__ if exc else "Interrupted", str(exc or ""))

    # ---- functional ops (called by ops.OpRecorder) --------------------------------------------------
    @property
    def innermost(self) -> _Open | None:
        return self._stack[-1] if self._stack else None

    def record_op(self, name: str, args: Any, out: Any, inplace_target: torch.Tensor | None) -> None:
        """Record one functional op run in a container's forward code (or outside every module)."""
        ids = self._ids
        order = self._tick()
        oid = len(self._op_records)
        node = f"op:{oid}"
        inner = self.innermost
        inputs = describe(args, lambda t: ids.get_or_new(t, order))
        self._consume((meta for _, meta in iter_tensors(inputs)), node)
        if inplace_target is not None:
            ids.new(inplace_target, node, order)

        def tid_of(t: torch.Tensor) -> int:
            return ids.produced_since(t, order, node, order)

        outputs = describe(out, tid_of) if out is not None else (
            describe(inplace_target, tid_of) if inplace_target is not None else None)
        self._op_records.append(Op(oid, name, inner.call.id if inner else None, order, inputs, outputs))
        if self._lines is not None:
            self._lines.on_op(self._op_records[-1], inner.module if inner else None)

    def note_leaf_inputs(self, args: Any) -> None:
        """Inside a leaf module, look only for side inputs among the tensors its code touches."""
        ids = self._ids
        for t in iter_live_tensors(args):
            tid = ids.lookup(t)
            if tid is not None and tid in ids.produced_at:
                self.note_consumed(describe(t, lambda _t, tid=tid: tid))

    # ---- the result ---------------------------------------------------------------------------------
    def _finish(self, exc: BaseException | None) -> Trace:
        while self._stack:
            self._close_unfinished(self._stack.pop(), exc)
        if exc is not None and self._failure is None:
            self._failure = Failure(None, type(exc).__name__, str(exc))
        stats = module_stats(self.model)
        for call, key in zip(self._calls, self._call_keys):
            call.params, call.own_params, call.trainable_params, call.buffers = stats[key]
        # A ModuleList or ModuleDict has no forward: it holds modules but is never called itself.
        uncalled = [Uncalled(info.names[0], info.cls, stats[key][0])
                    for key, info in self._info.items()
                    if info.calls == 0 and _has_forward(self._modules[key])]
        roots = [c for c in self._calls if c.parent is None]
        first = roots[0] if roots else None
        trace = Trace(
            model=model_info(self.model, stats),
            calls=self._calls,
            inputs=first.inputs if first else [],
            kwargs=first.kwargs if first else {},
            outputs=first.outputs if first else None,
            ops=self._op_records,
            uncalled=uncalled,
            failure=self._failure,
            meta={"torch": torch.__version__, "grad": self.grad, "ops": self.ops,
                  "device": str(self.device or model_device(self.model)),
                  "training": bool(self.model.training if self.train is None else self.train)},
        )
        if first is not None and first.error is None:
            for path, meta in iter_tensors(first.outputs):
                src = self._ids.producer.get(meta.tid)
                if src is not None:
                    self._edges.add(src, f"output:{path or 'out'}", meta)
        trace.edges = self._edges.edges
        if self._lines is not None:
            self._lines.finish(trace)
        changed = [n for n, p in self._params if p._version != self._versions.get(id(p))]
        if changed:
            trace.meta["params_changed_in_place"] = changed
            warnings.warn(f"the forward changed parameters in place: {', '.join(changed[:5])}", stacklevel=3)
        if self.tracer_errors:
            trace.meta["tracer_errors"] = list(self.tracer_errors)
            warnings.warn("shapetrace hit an internal error while tracing; the trace may be incomplete: "
                          + self.tracer_errors[0], stacklevel=3)
        return trace


def _has_forward(module: nn.Module) -> bool:
    """Whether the module's class defines a forward (a ModuleList does not). Read statically: the ``forward``
    of a TorchScript module's class is a descriptor that fails when read from the class."""
    import inspect

    return inspect.getattr_static(type(module), "forward", None) is not nn.Module.forward


def prepare_inputs(args: tuple, kwargs: dict, device: torch.device | None) -> tuple[tuple, dict]:
    """Move every tensor of the forward's arguments to ``device`` (no copy when already there).

    On ``meta`` (shape-only tracing) integer and boolean tensors stay where they are: token ids, masks and
    lengths keep their values for forwards that read them (see ``shape_only``).
    """
    if device is None:
        return args, kwargs
    if device.type == "meta":
        from .shape_only import keeps_values

        def move(t: torch.Tensor) -> torch.Tensor:
            return t if keeps_values(t) else t.to(device)
    else:
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device)
    return map_tensors(args, move), map_tensors(kwargs, move)
