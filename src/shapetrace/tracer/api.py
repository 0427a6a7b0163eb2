"""``trace()``: run a model's forward once under a ``Tracer`` and return the ``Trace``."""

from __future__ import annotations

import contextlib
import copy
import inspect
import types
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import UninitializedBuffer

from .arguments import arguments_kept
from .capture import _NO_GRAPH, Checked, LazyLayers, OwnForwardTracer, TeardownFailed, UnsupportedModel, unwrap
from .placement import model_device, place_inputs, runs_elsewhere
from .records import Trace, labelled_tensors, profile_run_text, raiser_name

# Values whose code runs only when they are consumed: a forward returning one has not run yet.
_LAZY = (types.GeneratorType, map, filter, zip)


class TraceFailed(RuntimeError):
    """The model's forward raised while being traced. ``.trace`` holds the partial trace."""

    def __init__(self, trace: Trace, cause: BaseException) -> None:
        #: The partial ``Trace``: the calls up to the failing one, whose ``error`` and ``inputs`` say what it got.
        self.trace = trace
        super().__init__(failure_message(trace) or f"{type(cause).__name__}: {cause}")

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as the message and the partial trace (the cause need not pickle), so the error crosses
        process boundaries (a ``ProcessPoolExecutor`` worker's failed trace arrives as itself)."""
        return _rebuilt_error, (type(self), str(self)), self.__dict__


def _rebuilt_error(cls: type[TraceFailed], message: str) -> TraceFailed:
    """A ``TraceFailed`` (or subclass) with ``message``, its other attributes set by unpickling."""
    error = cls.__new__(cls)
    RuntimeError.__init__(error, message)
    return error


def failure_message(trace: Trace, grad_option: str | None = "grad=True") -> str | None:
    """One paragraph saying which layer failed, with what input, and why; for a forward that needed autograd
    while the trace ran without it, how to turn it on: ``grad_option`` (the API's ``grad=True``, the CLI's
    ``--grad``; ``None`` where the caller has no such option)."""
    message = _where_and_why(trace)
    hint = _autograd_hint(trace, grad_option)
    return f"{message}\n  {hint}" if message is not None and hint else message




def _autograd_hint(trace: Trace, grad_option: str | None) -> str | None:
    """The advice for a forward that failed for want of autograd, while the trace had turned it off."""
    f = trace.failure
    if f is None or trace.meta.get("grad") is not False or not any(s in f.message for s in _NO_GRAPH):
        return None
    told = (f"trace with {grad_option} to keep autograd on" if grad_option else
            "this command has no option for it; 'shapetrace trace --grad' (from Python: trace(model, x, grad=True)) "
            "keeps autograd on")
    return ("hint: the trace ran without autograd (under torch.no_grad(), shapetrace's default), and this forward "
            f"asks autograd for gradients (torch.autograd.grad, .backward()): {told}.")


def _where_and_why(trace: Trace) -> str | None:
    f = trace.failure
    if f is None:
        return None
    call = trace.failed_call
    timed = trace.meta.get("failed_in_timed_run")
    when = (f"{profile_run_text(timed.get('run'), timed.get('of'), timed.get('warmup'))} of the profile (the traced "
            "forward before it had "
            "run through)") if isinstance(timed, dict) else None
    if call is None:
        if when:
            return (f"the forward failed in {when}, in one of its forwards run without hooks, so the layer is not "
                    f"known: {f.text}")
        return f"the forward failed outside any module: {f.text}"
    labelled = labelled_tensors(call.inputs, call.cls, "inputs") + labelled_tensors(call.kwargs, call.cls, "kwargs")
    weights = next((n.text for n in call.notes if n.code == "weights-elsewhere"), None)
    shapes = ", ".join(f"{name} {tuple(m.shape)} {m.dtype}" + (f" on {m.device}" if weights else "")
                       for name, m in labelled)
    done = sum(1 for c in trace.calls if c.error is None)
    after = f"after {done} completed call{'s' if done != 1 else ''}" if done else "before any call completed"
    if when:
        after = f"in {when}"
    held = (f"\n  weights: its own parameters or buffers are on {weights}, not on "
            f"{', '.join(sorted({m.device for _, m in labelled}))}" if weights else "")
    instead = trace.raised_instead()
    raised = ""
    if instead is not None:
        who = raiser_name(instead[0])
        raised = f"\n  raised: {_indented(instead[1])} ({who} raised it from the error above)"
    return (f"the forward failed in {call.label} ({call.cls}) {after}.\n"
            f"  input: {shapes or 'no tensors'}{held}\n  error: {_indented(f.text)}{raised}")


def _indented(text: str) -> str:
    """A message of several lines with its later lines indented under the first, inside the error block."""
    return text.rstrip("\n").replace("\n", "\n    ")


def trace(model: nn.Module, *args: Any, grad: bool = False, train: bool | None = None,  # noqa: PLR0913 - its public options
          device: str | torch.device | None = None, ops: bool = False, lines: bool = False, strict: bool = True,
          check_finite: bool = False, forward_kwargs: dict | None = None, **kwargs: Any) -> Trace:
    """Run ``model(*args, **kwargs)`` once and return the ``Trace`` of every module call.

    ``grad``, ``train``, ``device``, ``ops`` and ``lines`` are the ``Tracer`` options (``lines=True`` records
    the source line of every call and op, for ``trace.lines()``); ``check_finite=True`` checks every call's
    floating-point outputs (and the inputs) for NaN and Inf and finds where the first came from
    (``trace.meta["nonfinite"]``, ``call.nonfinite``; refused with ``device="meta"``). Inputs are moved to ``device``
    (or to the model's device when ``device`` is ``None``). When the forward raises, a ``TraceFailed``
    carrying the partial trace is raised (``strict=True``) or the partial trace is returned with its
    ``failure`` set (``strict=False``). Keyword arguments for the forward that clash with these option names
    go in ``forward_kwargs``.

    A model wrapped by ``torch.compile`` or ``DataParallel`` is unwrapped and its inner module traced, run
    eagerly on one device (``trace.meta["unwrapped"]`` names the wrappers). A model with lazy layers not
    initialized yet (``nn.LazyLinear``) is traced on a copy, which the forward initializes, so the model stays
    lazy (``trace.meta["lazy_traced_on_copy"]`` names them). Anything that cannot be traced
    (a function, a TorchScript module, a forward returning a generator) raises ``UnsupportedModel`` (a
    ``TypeError``) saying what to pass instead.
    """
    kwargs = {**kwargs, **(forward_kwargs or {})}
    checked, wrappers = traceable(model)
    options = {"grad": grad, "train": train, "device": device, "ops": ops, "lines": lines, "check_finite": check_finite}
    try:
        result = _trace_once(checked, args, kwargs, strict, options)
    except LazyLayers as e:  # refused before anything ran: the forward would initialize them for good
        if device is not None and torch.device(device).type == "meta":
            raise UnsupportedModel(
                f"device='meta' cannot trace lazy layers whose weights are not made yet ({', '.join(e.names[:5])}): "
                "a lazy layer makes real weights from its first input. Run one forward on real data first "
                "(model(x)), then trace on meta.") from None
        result = _trace_once(Checked(copy_for_lazy_layers(checked.module, e.names)), args, kwargs, strict,
                             {**options, "allow_lazy": True})
        result.meta["lazy_traced_on_copy"] = e.names
    if wrappers:
        result.meta["unwrapped"] = wrappers
    return result


def traceable(model: object) -> tuple[Checked, list[str]]:
    """The module ``trace()`` and ``profile()`` run for ``model``, checked (``Checked``: their ``Tracer`` does not
    check it again): the inner module of ``torch.compile`` and ``DataParallel`` wrappers, with the wrappers'
    kinds (for ``meta["unwrapped"]``). Anything module hooks cannot trace (a function, ``None``, a TorchScript
    module) raises ``UnsupportedModel`` saying what to pass."""
    inner, wrappers = unwrap(model) if isinstance(model, nn.Module) else (model, [])
    return Checked(inner), wrappers


def copy_for_lazy_layers(model: nn.Module, lazy: list[str]) -> nn.Module:
    """A copy of a model with lazy layers, for the forward to initialize instead of the model.

    ``copy.deepcopy`` copies an uninitialized parameter but not an uninitialized buffer (the running statistics
    of ``LazyBatchNorm2d``): those are made anew, as uninitialized as they were."""
    memo: dict[int, Any] = {}
    for b in model.buffers():
        if isinstance(b, UninitializedBuffer):
            memo[id(b)] = UninitializedBuffer(requires_grad=b.requires_grad, device=b.device, dtype=b.dtype,
                                              persistent=getattr(b, "persistent", True))
    try:
        return copy.deepcopy(model, memo)
    except Exception as e:
        raise UnsupportedModel(
            f"{type(model).__name__} has lazy layers not initialized yet ({', '.join(map(repr, lazy[:5]))}): a trace would "
            "initialize them for good, so shapetrace traces a copy, and the model cannot be copied "
            f"({type(e).__name__}: {e}). Run one forward on real data first (model(x)), then trace.") from e


def _trace_once(checked: Checked, args: tuple, kwargs: dict, strict: bool, options: dict[str, Any]) -> Trace:
    """One traced forward of the checked module (``trace()`` without its unwrapping and lazy-layer handling)."""
    model = checked.module
    tracer = OwnForwardTracer(checked, **options)
    target = tracer.device if tracer.device is not None else model_device(model)
    # On another device (meta), what the forward stores into the caller's objects (a cache) is put back after it
    kept = arguments_kept((args, kwargs)) if runs_elsewhere(model, tracer.device) else contextlib.nullcontext()
    args, kwargs = place_inputs(args, target), place_inputs(kwargs, target)
    try:
        try:
            with kept, tracer:
                out = model(*args, **kwargs)
        finally:
            tracer.release()  # for an interrupt between the forward's return and the Tracer's __exit__
    except Exception as e:
        if tracer.trace is None or isinstance(e, TeardownFailed):  # the Tracer could not start, build the trace
            raise  # or put the model back: shapetrace's failure, never the forward's (nor hidden by strict=False)
        if strict:
            raise TraceFailed(tracer.trace, e) from e
        return tracer.trace
    assert tracer.trace is not None
    if isinstance(out, _LAZY) or inspect.isasyncgen(out) or inspect.iscoroutine(out):
        kind = type(out).__name__
        if inspect.iscoroutine(out):
            out.close()  # never awaited: closed here rather than warned about by Python at exit
            raise UnsupportedModel(
                f"{type(model).__name__}.forward is async: it returned a coroutine, whose body runs only when "
                "awaited, after the trace has ended, so there is nothing to trace. Make the forward a plain "
                "def (module calls inside never need await).")
        raise UnsupportedModel(
            f"{type(model).__name__}.forward returned a {kind}: its body runs only when the {kind} is consumed, "
            "after the trace has ended, so there is nothing to trace. Trace a module whose forward consumes "
            "it, e.g. one returning torch.stack(list(model(x))), or make the forward return a list or tuple.")
    return tracer.trace
