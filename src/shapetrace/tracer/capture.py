"""``Tracer``: one forward of the capture engine with the shape probes, and the ``Trace`` built after it.

``Tracer`` is the context manager behind ``shapetrace.trace``::

    with Tracer(model) as t:
        model(x)
    t.trace  # a Trace: plain data

Entering puts the model's state under a ``ModelGuard`` (training flags, grad mode, buffer values where the forward runs the model's own), swaps in
copies of its tensors on another device when asked (``placement.placed``) and starts an ``Engine`` with the
``ShapeProbe`` (and, with ``ops=True``, the ``OpProbe``); leaving undoes all of it in
reverse order, also when the forward raises. The partial trace of a failed forward marks the innermost call
the exception left as failed, with its inputs and message. Parameter counts, aliases, never-called modules
and the model's totals are computed from the recorded calls after the forward.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import sys
import weakref
from collections.abc import Callable, Sequence
from types import TracebackType

import torch
from torch import nn

from .cleanup import run_all, run_all_then_raise
from .engine import Engine, ModuleIndex, Probe
from .errors import UnsupportedModel
from .flow import DataFlow
from .guard import ModelGuard
from .modelstats import model_stats
from .placement import model_device, placed, runs_copies
from .probes.finite import FiniteProbe
from .probes.lines import LinesProbe
from .probes.opcount import OpCountProbe
from .probes.ops import OpProbe
from .probes.shapes import ShapeProbe
from .records import Failure, Trace, Uncalled
from .shape_only import ShapeOnlyMode, explain_embedding_failure, failed_in_lookup
from .user_warnings import warn_user

__all__ = ["Checked", "LazyLayers", "NoValuesToCheck", "OwnForwardTracer", "TeardownFailed", "TraceNotBuilt", "Tracer", "UnsupportedModel",
           "check_traceable", "exported_child", "exported_program_message", "is_exported_program", "refuse_lazy", "uninitialized_lazy",
           "unwrap"]


class TraceNotBuilt(RuntimeError):
    """The forward ran (or failed) and the model was restored, but shapetrace could not build its trace: a
    bug in shapetrace, whose message says what to report."""


class TeardownFailed(RuntimeError):
    """The traced block ran through, but a step of shapetrace's teardown (removing its hooks, putting the
    model's state back) raised: a bug in shapetrace, not the forward's failure. Every other step still ran;
    ``trace`` holds the trace of the forward."""

    def __init__(self, message: str, trace: Trace | None) -> None:
        super().__init__(message)
        self.trace = trace


def _wrapped(model: nn.Module) -> tuple[str, nn.Module] | None:
    """``(kind, inner module)`` for a wrapper whose inner module is what should be traced, else ``None``."""
    inner = getattr(model, "_orig_mod", None)
    if isinstance(inner, nn.Module) and type(model).__name__ == "OptimizedModule":
        return "torch.compile", inner
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        return type(model).__name__, model.module
    return None


def check_traceable(model: object) -> None:
    """Raise ``UnsupportedModel`` with what to do instead when ``model`` cannot be traced by module hooks."""
    kind = type(model).__qualname__
    if not isinstance(model, nn.Module):
        hint = ""
        if callable(model):
            hint = (" To trace a function, wrap it in a module (class F(nn.Module) whose forward calls it) and "
                    "trace F(); its submodules' calls are what a trace records.")
        raise UnsupportedModel(f"shapetrace traces a torch.nn.Module; got a {kind}.{hint}")
    if isinstance(model, torch.jit.ScriptModule):
        raise UnsupportedModel(
            f"the model is a TorchScript module ({kind}, from torch.jit.script, torch.jit.trace or torch.jit.load): "
            "its layers run as compiled code, where module hooks never run, so only its outer call could be "
            "recorded. Trace the Python nn.Module it was made from instead.")
    if is_exported_program(model):
        raise UnsupportedModel(exported_program_message("the model"))
    child = exported_child(model)
    if child is not None:
        raise UnsupportedModel(exported_program_message(f"the model's submodule {child!r}", child=True))
    wrapped = _wrapped(model)
    if wrapped is not None:
        how, _ = wrapped
        raise UnsupportedModel(
            f"the model is wrapped by {how} ({kind}): the wrapper runs copies or compiled code of the real "
            f"model, where module hooks do not see each layer. Pass the inner module (model.{'_orig_mod' if how == 'torch.compile' else 'module'}) "
            "to Tracer, or use shapetrace.trace(), which unwraps it.")


def is_exported_program(model: object) -> bool:
    """Whether ``model`` is the module of a ``torch.export`` program (``ExportedProgram.module()``), read from its
    class's bases without importing ``torch.export``."""
    return any(c.__name__ == "_StatefulGraphModule" and c.__module__.startswith("torch.export")
               for c in type(model).__mro__)


def exported_child(model: nn.Module) -> str | None:
    """The name of the first submodule of ``model`` that is a ``torch.export`` program's module, or ``None``.
    Free where nothing exported was ever made: such a module's class lives in a module ``import torch`` leaves
    unloaded."""
    if "torch.export._unlift" not in sys.modules:
        return None
    return next((name for name, m in model.named_modules() if name and is_exported_program(m)), None)


def exported_program_message(what: str, *, child: bool = False) -> str:
    """Why a ``torch.export`` program's module is refused, and what to trace instead (``what``: how it was given;
    ``child``: it is a submodule of the model given)."""
    instead = ("Trace the model with the nn.Module it was exported from in its place" if child
               else "Trace the nn.Module it was exported from instead")
    return (f"{what} is a torch.export program (ExportedProgram.module()): it runs the whole model as one graph "
            "of operations, where no layer is a module call (nor can it switch between train and eval), so only "
            f"its outer call could be recorded. {instead} (the shapes are the same).")


class Checked:
    """A module that ``check_traceable`` accepted, as ``trace()`` and ``profile()`` hand it to ``Tracer``.

    Made only by running the check (the constructor does), so a ``Tracer`` given one does not run it again: the
    check runs once per module traced, while ``Tracer(module)`` used directly checks as always."""

    __slots__ = ("_module",)

    def __init__(self, model: object) -> None:
        check_traceable(model)
        object.__setattr__(self, "_module", model)  # past __setattr__, which refuses every later write

    @property
    def module(self) -> nn.Module:
        """The module the check accepted; read-only, so the module traced is the one checked."""
        try:
            return self._module  # type: ignore[return-value] - check_traceable refused anything else
        except AttributeError:
            raise TypeError("this Checked was not made by its constructor, so no module was checked: "
                            "pass the module itself to Tracer, which checks it") from None

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"a Checked is read-only: its module is the one check_traceable accepted; "
                             f"make a new Checked(module) to check another (not setting {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"a Checked is read-only (not deleting {name!r})")


def unwrap(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """The module to trace inside ``torch.compile`` and ``DataParallel`` wrappers, and the wrappers' kinds."""
    kinds = []
    while (wrapped := _wrapped(model)) is not None:
        kinds.append(wrapped[0])
        model = wrapped[1]
    return model, kinds


def uninitialized_lazy(index: ModuleIndex) -> list[str]:
    """The names of the lazy layers (``nn.LazyLinear``...) whose parameters are not made yet: their first
    forward makes them from its input, and turns each into the plain layer (``Linear``) for good. (A lazy
    layer initializes in a forward pre-hook of its own, so it is among the index's ``unusual`` modules.)"""
    lazy = torch.nn.modules.lazy.LazyModuleMixin
    return [index.names[s][0] or type(index.modules[s]).__name__ for s in index.unusual
            if isinstance(index.modules[s], lazy) and index.modules[s].has_uninitialized_params()]  # type: ignore[operator]


class NoValuesToCheck(ValueError):
    """``check_finite`` was asked of a trace that computes no values (on ``meta``: shapes only)."""


def refuse_finite_on_meta(device: torch.device | None) -> None:
    """Raise ``NoValuesToCheck`` when the trace would run on ``meta``, where tensors hold no values to check."""
    if device is not None and device.type == "meta":
        raise NoValuesToCheck(
            "check_finite reads the values of every output, and a trace on 'meta' computes shapes only (no "
            "values, so no NaN or Inf to find): trace on the CPU or a GPU instead (device='cpu'; on the command "
            "line --device cpu), with the model's parameters on a device that holds values")


class LazyLayers(UnsupportedModel):
    """The model has lazy layers not initialized yet (``names``): a forward would initialize them for good."""

    def __init__(self, message: str, names: list[str]) -> None:
        super().__init__(message)
        self.names = names


def refuse_lazy(lazy: list[str]) -> None:
    """Raise ``LazyLayers`` for a model with uninitialized lazy layers, saying what to do."""
    if lazy:
        raise LazyLayers(
            f"the model has lazy layers whose weights are not made yet ({', '.join(lazy[:5])}): a forward would "
            "make them and turn each into its plain layer for good, changing the model. Run one forward first "
            "(model(x)), or trace a copy: shapetrace.trace(model, x) does that by itself, "
            "Tracer(copy.deepcopy(model), allow_lazy=True) by hand.", lazy)


# module class -> whether it defines a forward; weak, so that a class defined at run time dies with its modules.
_HAS_FORWARD: weakref.WeakKeyDictionary[type, bool] = weakref.WeakKeyDictionary()


def _has_forward(module: nn.Module) -> bool:
    """Whether the module's class defines a forward (a ``ModuleList`` or ``ModuleDict`` does not)."""
    cls = type(module)
    known = _HAS_FORWARD.get(cls)
    if known is None:
        known = _HAS_FORWARD[cls] = any("forward" in vars(c) for c in cls.__mro__ if c is not nn.Module)
    return known


# Layers torch can run as one fused kernel in eval without autograd (a "fast path"), on the CPU and CUDA only;
# a subclass inherits the fast path.
_FUSED_IN_EVAL = (nn.TransformerEncoderLayer,)


def _fused_layers_run_stepwise(calls: list, modules: list[nn.Module]) -> list[str]:
    """The calls (``modules``: each call's module, by call id) of layers with a fused fast path that called
    sub-layers (the fast path was not taken)."""
    parents = {c.parent for c in calls if c.parent is not None}
    return [c.label for c in calls if c.id in parents and isinstance(modules[c.id], _FUSED_IN_EVAL)]


def _resume_gc() -> None:
    """Python's automatic cyclic garbage collection on again after the records are built, with the youngest
    generation collected at once.

    It is paused (``Tracer._build``) while they are built: building the records after the forward makes
    thousands of small objects that all survive (``Call``, ``TensorMeta``, ``Edge`` and their lists), none of
    them in a reference cycle. With the collector on, every 700 of them start a collection that walks the young
    objects and promotes the survivors, bringing the next full collection of the whole process closer (100 ms
    with torch loaded). Paused, the trace pays for one collection of its young objects at the end, here rather
    than in whatever runs next, and only when the young objects are as many as would have started one (a
    trace of a small model, or a ``Tracer`` around no forward, makes fewer: their collection is left to the
    collector, as it would have been unpaused). Only this phase is paused, never the user's forward: a forward
    that makes cyclic garbage holding tensors (a caught exception kept with its traceback, a recursive closure)
    needs the collector as much traced as plain, or a trace could run out of memory where the plain forward
    does not (``docs/design-notes.md``).
    """
    gc.enable()
    threshold = gc.get_threshold()[0]
    if threshold and gc.get_count()[0] >= threshold:  # (a threshold of 0 turns automatic collection off)
        gc.collect(0)


# What autograd says when asked for gradients of tensors it never recorded (torch.autograd.grad, .backward()):
# under the trace's torch.no_grad(), every tensor the forward makes is such a tensor.
_NO_GRAPH = ("does not require grad", "does not have a grad_fn")


class Tracer:
    """Record every module call of ``model`` while the ``with`` block runs.

    Options: ``grad`` keeps autograd on (off by default: the trace runs under ``torch.no_grad()``);
    ``train`` sets training mode for the trace (``None`` leaves each module's flag as it is; the flags are
    restored afterwards); ``device`` runs the model with its parameters and buffers moved there (the model
    itself is not moved; ``"meta"`` traces shapes without computing anything); ``ops`` records functional
    operations and data-flow edges between modules; ``lines`` records the source line of every call and op
    (and implies ``ops``; see ``tracer/lines.py``). ``probes`` run in the same forward beside the shape
    probes (``profile()`` adds FLOPs and memory this way); they key what they record by call id. Python's
    automatic cyclic garbage collection is paused while the records are built after the block, never during
    it (see ``_gc_paused``). A model with lazy layers not initialized yet is refused (the forward would
    initialize them for good) unless ``allow_lazy``: for a copy (what ``trace()`` does). The block is the
    user's code: where it writes parameters in place (an optimizer step), which a trace cannot put back, its
    buffer updates are kept too, rather than the model left half-stepped, and a warning says so; flags and grad
    mode go back as found whatever the block did (``guard.py``). Traces of the same
    model in two threads take turns: entering waits while another thread's trace of it runs (``model_lock``).
    ``check_finite`` checks every call's floating-point inputs and outputs for NaN and Inf, and finds where the first came
    from (``probes/finite.py``; one sum per input and output tensor version; refused on ``meta``, where there are
    no values).
    """

    #: Whether the block is shapetrace's own forward (``OwnForwardTracer``) rather than the user's code.
    own_forward = False

    def __init__(self, model: nn.Module | Checked, *, grad: bool = False, train: bool | None = None,  # noqa: PLR0913 - the public keyword options of Tracer
                 device: str | torch.device | None = None, ops: bool = False, lines: bool = False,
                 probes: Sequence[Probe] = (), allow_lazy: bool = False, check_finite: bool = False) -> None:
        if isinstance(model, Checked):  # trace() and profile() checked it already (see Checked)
            model = model.module
        else:
            check_traceable(model)
        self.allow_lazy = allow_lazy
        self.model = model
        self.grad = grad
        self.train = train
        self.device = torch.device(device) if device is not None else None
        self.ops = ops or lines
        self.lines = lines
        self.check_finite = check_finite
        self.extra_probes = list(probes)
        #: The ``Trace`` of what ran inside the block, built when it ends (``None`` until then).
        self.trace: Trace | None = None
        self.tracer_errors: list[str] = []
        self._active = False
        self._gc_paused = False  # by this Tracer, while the records are built
        self._exit = contextlib.ExitStack()  # what entering did, undone by leaving (``_start``)

    def probes(self, index: ModuleIndex, flow: DataFlow) -> list[Probe]:
        """The probes of this trace: shapes always; functional ops with ``ops``; source lines with ``lines``."""
        shapes = ShapeProbe(index, flow, weight_devices=self.device is None or self.device.type != "meta")
        probes: list[Probe] = [shapes]
        if self.ops:
            ops = OpProbe(flow)
            probes += [ops, OpCountProbe(ops)]
        if self.lines:
            probes.append(LinesProbe(flow))
        if self.check_finite:
            probes.append(FiniteProbe(flow))
        return probes

    # ---- context manager ----------------------------------------------------------------------------
    def __enter__(self) -> Tracer:  # noqa: PYI034 - typing.Self needs Python 3.11
        if self._active:
            raise RuntimeError("this Tracer is already active; make a new one per trace")
        self._active = True
        try:
            self._start()
        except BaseException:
            self._active = False
            raise
        return self

    def _start(self) -> None:
        """Index the model, guard its state, place it and start the engine (undone in reverse on failure)."""
        if self.check_finite:
            refuse_finite_on_meta(self.device or model_device(self.model))
        self._index = ModuleIndex(self.model)
        if not self.allow_lazy:
            refuse_lazy(uninitialized_lazy(self._index))
        self._flow = DataFlow()
        self._probes = self.probes(self._index, self._flow) + self.extra_probes
        self._guard = ModelGuard(self._index, train=self.train, grad=self.grad,
                                 keep_registrations=True,  # put back in __exit__, after the counts
                                 runs_copy=None if self.device is None else runs_copies(self.model, self.device),
                                 keep_buffers_after_param_writes=not self.own_forward)
        self._engine = Engine(self._index, self._probes, eager_compiled=True)
        self._exit = contextlib.ExitStack()
        self._shape_only: ShapeOnlyMode | None = None
        try:
            self._exit.enter_context(self._guard)
            self._exit.enter_context(placed(self.model, self.device))
            if self.device is not None and self.device.type == "meta":
                # Shape-only tracing: a torch function mode, entered under the op recorder (see shape_only).
                counted = any(p.counts_dispatched_ops for p in self._probes)  # FLOPs: every op dispatched
                self._shape_only = self._exit.enter_context(ShapeOnlyMode(formulas=not counted))
            self._exit.enter_context(self._engine)
        except BaseException:
            run_all((self.release,))  # the error that stopped entering is the one raised
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        self._note_autograd_off(exc)
        try:
            try:
                self._exit.__exit__(exc_type, exc, tb)
            except Exception as e:
                raise self._teardown_failed(e, exc) from e
            finally:
                self._active = False
                try:
                    self._undo()  # what an interrupt in the teardown above left undone (registrations: _build)
                finally:
                    self._build(exc)
        except TeardownFailed as failed:
            failed.trace = self.trace  # built by now, from what the forward did
            raise
        return False

    def _note_autograd_off(self, exc: BaseException | None) -> None:
        """Tell, on autograd's own error, that the block ran under ``torch.no_grad()`` and how to keep autograd
        on: a training step (``loss.backward()``) in a ``Tracer(model)`` block otherwise fails with torch's bare
        "element 0 of tensors does not require grad". ``trace()`` says it in its own message (``api.py``)."""
        if (self.grad or self.own_forward or not isinstance(exc, RuntimeError)
                or not any(s in str(exc) for s in _NO_GRAPH) or not hasattr(exc, "add_note")):
            return
        exc.add_note("hint: the Tracer block ran without autograd (under torch.no_grad(), shapetrace's default), "
                     "and the code in it asks autograd for gradients (.backward(), torch.autograd.grad): pass "
                     "Tracer(model, grad=True) to keep autograd on.")

    def _teardown_failed(self, error: Exception, block_error: BaseException | None = None) -> TeardownFailed:
        """The ``TeardownFailed`` for ``error``, raised by a step of the teardown (after the block raised
        ``block_error``, if given)."""
        after = (f"after the forward raised {type(block_error).__name__}" if block_error is not None
                 else "after the traced block")
        return TeardownFailed(
            f"shapetrace failed while removing its hooks or putting the model's state back {after} "
            f"({type(error).__name__}: {error}); every other step of the teardown ran. This is a bug in "
            "shapetrace: please report it with the model's code (the traceback above shows where), and check the "
            "model (its training flags, buffers and attributes) before using it further", self.trace)

    def release(self) -> None:
        """Undo whatever of this trace is still in place: the engine's hooks and recursion limit, a function
        mode, the guard's grad mode, flags and buffers, the collector paused while the records are built, and
        last what the forward registered (layers it built), which releases the model's lock (``model_lock``):
        another thread's trace of the model no longer waits. No trace is built (``trace`` stays ``None`` when
        the block was not left).

        Leaving the ``with`` block does it all, each step even if one before it raised (a ``KeyboardInterrupt``
        during the teardown); each can run again without redoing anything, so calling this after the block
        (as ``trace()`` does) also covers an interrupt that came before ``__exit__`` could run. Safe to call
        any number of times, entered or not."""
        guard = getattr(self, "_guard", None)
        steps: list[Callable[[], object]] = [self._undo]
        if guard is not None:
            steps.append(guard.put_back_registrations)
        run_all_then_raise(steps)

    def _undo(self) -> None:
        """``release`` but for the registrations, which ``_build`` puts back after counting the parameters."""
        engine, guard = getattr(self, "_engine", None), getattr(self, "_guard", None)
        steps: list[Callable[[], object]] = [self._exit.close]
        if engine is not None:
            steps.append(functools.partial(engine.__exit__, None, None, None))
        if guard is not None:
            steps.append(functools.partial(guard.__exit__, None, None, None))
        steps.append(self._resume_gc)
        try:
            run_all_then_raise(steps)
        except Exception as e:  # a step of shapetrace's own teardown: its failure, never the forward's
            raise self._teardown_failed(e) from e

    def _resume_gc(self) -> None:
        if self._gc_paused:
            _resume_gc()
            self._gc_paused = False

    def _build(self, exc: BaseException | None) -> None:
        """Build the trace (``_finish``) with the collector paused, then put back what the forward registered."""
        try:
            # Parameters are counted as the forward saw them (a layer it built included), then what it
            # registered is put back.
            try:
                self._gc_paused = gc.isenabled()  # set first: resuming turns it on only if it was on
                if self._gc_paused:
                    gc.disable()
                self.trace = self._finish(exc)
            finally:
                error = run_all((self._resume_gc, self._guard.put_back_registrations))
                if self.trace is not None and self._guard.restored:
                    self.trace.meta["registrations_restored"] = list(self._guard.restored)
                if error is not None:
                    raise error
        except Exception as e:
                raise TraceNotBuilt(
                    f"shapetrace could not build the trace of this forward ({type(e).__name__}: {e}); the model "
                    "was left as found. This is a bug in shapetrace: please report it with the model's code (the "
                    "traceback above shows where)") from e

    def call_keys(self) -> list[tuple[str, int]]:
        """``(module name, call_index)`` of each call, by call id: how another pass's calls are matched."""
        calls, index = self._engine.calls, self._index
        return [calls.key(cid, index) for cid in range(len(calls))]

    def call_modules(self) -> list[nn.Module]:
        """The module object of each call, by call id (modules the forward attached included)."""
        modules = self._index.modules
        return [modules[slot] for slot in self._engine.calls.slot]

    def _note_meta_differences(self, trace: Trace, calls: list, shape_only: ShapeOnlyMode) -> None:
        """Where a trace on ``meta`` differs from the real device's, said in ``trace.meta`` and a warning: fused
        layers run step by step, an autocast that meta tensors take no part in."""
        if not trace.meta["training"] and not self.grad:
            stepwise = _fused_layers_run_stepwise(calls, self.call_modules())
            if stepwise:
                trace.meta["fused_layers_stepwise_on_meta"] = stepwise
                warn_user(
                    f"on 'meta' torch runs {', '.join(stepwise[:3])}{' ...' if len(stepwise) > 3 else ''} step by step "
                    "(their sub-layers are called); on the CPU or a GPU, in eval without autograd, torch may run each "
                    "as one fused kernel instead, with no sub-layer calls: trace on the CPU to see which")
        ignored = sorted(shape_only.autocast_ignored)
        if ignored:
            trace.meta["autocast_ignored_on_meta"] = ignored
            warn_user(
                f"autocast ({', '.join(ignored)}) was on, but tensors on 'meta' take no part in autocast: this trace "
                "shows the dtypes and bytes of a forward without it (the shapes are the same); trace on the real "
                "device to see autocast's dtypes")

    def _explain_embedding_failure(self, calls: list, failure: Failure | None, exc: BaseException) -> None:
        """An embedding that failed on ids outside its rows: torch's bare "index out of range in self" gets what
        is wrong with the ids, as on ``meta`` (``shape_only.explain_embedding_failure``); so does an
        ``EmbeddingBag``'s "Expected i < index_size to be true". Only after a forward that failed in an
        ``Embedding`` call with an ``IndexError``, or in an ``EmbeddingBag`` call with that or a ``RuntimeError``."""
        if failure is None or failure.call is None or not failed_in_lookup(self.call_modules()[failure.call],
                                                                          failure.type):
            return
        problem = explain_embedding_failure(exc)
        if problem is None or problem in failure.message:  # on meta the check said it already
            return
        failure.message = f"{failure.message}: {problem}"
        call = calls[failure.call]
        if call.error is not None:
            call.error = f"{call.error}: {problem}"

    def _warn_params_changed(self, changed: list[str]) -> None:
        """Warn about parameters written in place: by the forward of ``trace()`` or ``profile()``, or by the code
        in a ``Tracer`` block (an optimizer step), whose buffer updates were then kept too."""
        names = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        if self.own_forward:
            warn_user(f"the forward changed parameters in place: {names}")
            return
        kept = (" Parameters cannot be put back, so the buffers (BatchNorm's running statistics) were left as the "
                "block left them too; the training and requires_grad flags and the grad mode were put back as "
                "found" if self._guard.buffers_kept else "")
        warn_user(f"the code in the Tracer block changed parameters in place (an optimizer step, say): {names}.{kept}")

    def _warn_if_run_in_other_threads_only(self) -> None:
        """Warn when the model ran in the block only in other threads than the Tracer's (none of it recorded)."""
        if len(self._engine.calls) or not self._engine.foreign_calls:
            return
        warn_user(
            f"{type(self.model).__name__} was called only from another thread than the one that entered the "
            "Tracer (asyncio.to_thread, an executor, a server's worker thread), and a trace does not record "
            "another thread's own forward: this trace is empty. Call the model in the thread that entered "
            "the Tracer (calls its forward makes in a thread pool are recorded)")

    # ---- the result ---------------------------------------------------------------------------------
    def _note_compiled(self, trace: Trace) -> None:
        """Say that compiled parts ran eagerly, or that ``torch.compile`` came too late for them to."""
        if self._engine.forced_eager:
            trace.meta["compiled_ran_eagerly"] = True  # every layer seen; Dynamo's caches left as they were
        elif self._engine.compile_came_late:  # torch.compile first used inside the block: nothing kept it eager
            warn_user("torch.compile was first used in this process while the model was traced, so code it "
                      "compiled then may have hidden layers from this trace: trace again, now that it is loaded "
                      "(compiled code runs eagerly while a trace runs)")

    def _finish(self, exc: BaseException | None) -> Trace:
        """Build the ``Trace`` from what the probes recorded (the forward is over, the model restored)."""
        shapes = self._probes[0]
        assert isinstance(shapes, ShapeProbe)
        index = self._index
        stats, info = model_stats(index)
        calls = shapes.build(exc, stats)
        if exc is not None:
            self._explain_embedding_failure(calls, shapes.failure, exc)
        self.tracer_errors.extend(self._engine.errors)
        slots = self._engine.calls.slot
        self._warn_if_run_in_other_threads_only()
        # A ModuleList or ModuleDict has no forward: it holds modules but is never called itself.
        uncalled = []
        called = set(slots)
        if len(called) < len(index):
            known: dict[type, bool] = {}  # this trace's reads of the (weak, slower to read) class cache
            for s, m in enumerate(index.modules):
                if s not in called and s not in index.wrappers:
                    has = known.get(type(m))
                    if has is None:
                        has = known[type(m)] = _has_forward(m)
                    if has:
                        uncalled.append(Uncalled(index.names[s][0], index.classes[s], stats[s][0]))
        # The trace's inputs and outputs: the model's own first call, not another top-level one (a parametrized
        # weight read in a Tracer block before the forward runs its parametrization as a call of its own)
        first = next((c for c in calls if c.parent is None and slots[c.id] == 0), None) or next(
            (c for c in calls if c.parent is None), None)
        trace = Trace(
            model=info,
            calls=calls,
            inputs=first.inputs if first else [],
            kwargs=first.kwargs if first else {},
            outputs=first.outputs if first else None,
            ops=self._flow.ops,
            uncalled=uncalled,
            failure=shapes.failure,
            same_tensors=sorted(self._flow.ids.same.items()),
            meta={"torch": torch.__version__, "grad": self.grad, "ops": self.ops,
                  "device": str(self.device or model_device(self.model)), "shape_only": self._shape_only is not None,
                  "training": bool(self.model.training if self.train is None else self.train)},
        )
        if first is not None and first.error is None:
            self._flow.output_edges(first.outputs)
        trace.edges = self._flow.edges.edges
        for probe in self._probes[1:]:
            probe.merge(trace)
        if self._shape_only is not None:  # a trace on meta
            self._note_meta_differences(trace, calls, self._shape_only)
        self._note_compiled(trace)
        changed = self._guard.changed_params()
        if changed:
            trace.meta["params_changed_in_place"] = changed
        if changed and not self.allow_lazy:  # a copy (trace() of a lazy model): its lazy layers were just made
            self._warn_params_changed(changed)
        if shapes.kwargs_unknown:  # torch's Module._call_impl no longer looks as expected (a future torch)
            trace.meta["kwargs_unknown"] = True
            warn_user("shapetrace could not read the keyword arguments of some module calls (torch "
                          f"{torch.__version__} calls forward hooks from a frame it does not recognise): those "
                          "calls show their positional arguments only")
        if self.tracer_errors:
            trace.meta["tracer_errors"] = list(self.tracer_errors)
            warn_user("shapetrace hit an internal error while tracing; the trace may be incomplete: "
                          + self.tracer_errors[0])
        return trace


class OwnForwardTracer(Tracer):
    """The ``Tracer`` that ``trace()`` and ``profile()`` run their own forward under: shapetrace wrote the block,
    so the model is put back as found even where the forward wrote parameters in place (its buffers included;
    the warning names "the forward"). A ``Tracer`` used directly wraps the user's code instead (see ``Tracer``)."""

    own_forward = True
