"""The capture engine: one global forward pre/post hook pair that hands each module call to *probes*.

Everything shapetrace measures per module call — shapes and tensor identities, FLOPs, peak memory, times —
is a probe (``tracer/probes/``): a small object with ``on_call_start`` / ``on_call_end`` that owns its piece
of the record. The engine does the part they share, once:

* **which calls count**: calls of the modules in a ``ModuleIndex`` (the traced model's modules), and of
  modules the forward attaches to one of them (a layer built on the first call); modules of other
  models, or built inside the forward and never attached, are ignored;
* **the call skeleton**: each counted call gets an id (its start order), its module's slot, its
  ``call_index`` (the n-th call of that module object) and its parent, in flat lists (``calls``). Calls
  made in other threads (a forward that runs branches in a thread pool) nest in a stack of their own
  thread, under the call open in the thread that entered the engine, and from the first of them on, the
  bookkeeping of every call holds a lock. Another thread's outermost call is adopted only while the
  engine's thread is inside a call, and only if its module is not that of a call open there: another
  thread running its own forward of the same model (calling the model itself, or between two traced
  forwards, or inside a call of the model the engine never saw start) is not recorded, nor anything it
  calls (``Engine._adopts``; ``foreign_calls`` counts them). The engine's own thread never goes through
  that test: its calls are the trace's, also after another thread's;
* **errors**: a call whose forward raised gets the exception in ``on_call_end``, except the exception
  ``torch.utils.checkpoint`` stops a recomputation with (the call ends without output, its id in
  ``stopped``); calls whose post-hook never ran (``KeyboardInterrupt``, a hook of someone else raising)
  are closed when the engine exits;
* **cleanup, guaranteed**: the hooks are removed and torch's hook registries left exactly as found, the
  probes are stopped and the recursion limit restored, whatever the forward did, each step even if one
  before it raised (a ``KeyboardInterrupt`` during the cleanup: ``cleanup.run_all``), and again, finishing
  what an interrupted leave left, if the engine is left a second time. Calls made in a thread
  that runs an engine of its own (two traces at once in two threads: of two models, as traces of one
  model take turns, ``model_lock``) are that engine's, not this one's.

Global hooks, filtered by module, rather than a hook on every module: a per-module hook changes what runs
(``nn.TransformerEncoderLayer`` skips its fused fast path when it sees one), and registering two hooks costs
the same for any model. The hook pair adds one Python frame (torch's ``inner``) to every nested module call,
so the engine raises the recursion limit by a third while it is entered: a forward recursing through
modules reaches the same depth traced as plain.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType, TracebackType
from typing import Any

import torch
import torch.utils.checkpoint
from torch import nn
from torch.nn.modules import module as torch_module

from .cleanup import run_all_then_raise
from .compiled import compile_used, compiled_forward_of_class, dynamo_loaded, is_compiled_callable
from .eager_stance import EagerHold
from .records import Trace
from .warning_filter import add_filter, remove_filter

__all__ = ["NO_KWARGS", "CallSkeleton", "Engine", "ModuleIndex", "Probe", "Unfinished", "caller_kwargs",
           "keyword_free_at"]


_no_torch_function = torch._C.DisableTorchFunction
# Engines active in this process, shared by every thread: how many, the recursion limit before the first was
# entered and the one it set (raised once, put back by the last to leave: engines of traces running in two
# threads at once overlap in any order), and the threads that entered one (their calls are their engine's,
# not another engine's foreign-thread calls).
_ACTIVE_LOCK = threading.Lock()
_ACTIVE: dict[str, int] = {"engines": 0, "limit": 0, "raised": 0}
_ENGINE_THREADS: dict[int, int] = {}  # thread id -> engines entered in that thread and not yet left
# What torch.utils.checkpoint raises to stop a recomputation in the backward pass once it has what it needs
# (and catches itself): control flow, not a failure. ``None`` where torch has no such class.
_STOP_RECOMPUTATION = getattr(torch.utils.checkpoint, "_StopRecomputationError", None)
_thread_id = threading.get_ident
_FOREIGN = -1  # on another thread's stack of open calls: a call of that thread's own, not the traced forward's


class Unfinished(Exception):
    """Given to ``on_call_end`` for a call whose post-hook never ran and no exception explains why."""

    def __init__(self) -> None:
        super().__init__("call did not finish")


class ModuleIndex:
    """The modules of one model, each object once, with what a trace needs to know before any call.

    ``slot_of`` maps ``id(module)`` to a slot (an index into ``modules``, ``names``, ``classes``,
    ``is_leaf``); ``names[slot]`` lists every name the module is registered under (a shared module has
    several), first the one ``named_modules()`` gives first. Built once per model and reused by every pass.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.slot_of: dict[int, int] = {}
        self.modules: list[nn.Module] = []
        self.names: list[list[str]] = []
        self.classes: list[str] = []
        self.is_leaf: list[bool] = []
        self.excluded: set[int] = set()  # ids of modules whose calls are not counted (``without``)
        # Slots of the modules with forward hooks of their own or compiled by ``module.compile()`` (lazy
        # layers are among them: they initialize in a pre-hook). Found in the walk, where every module is read
        # anyway: the engine and the tracer look at these few instead of scanning every module again.
        self.unusual: list[int] = []
        # Slots of torch.compile wrappers inside the model (``OptimizedModule``): the module each wraps is indexed
        # under the wrapper's name (``block``, not ``block._orig_mod``), the wrapper kept for the guard's sake.
        self.wrappers: set[int] = set()
        self._add(model, "")

    def _add(self, root: nn.Module, name: str, path: tuple[int, ...] = ()) -> int:
        """Index ``root`` (registered as ``name``) and the modules under it; how many slots were added."""
        slot_of, modules, names = self.slot_of, self.modules, self.names
        first = len(modules)
        # named_modules(remove_duplicate=False)'s pre-order, walked here without a generator per level (the
        # walk is part of every trace's fixed cost). A module registered inside itself is not entered again.
        todo: list[tuple[str, nn.Module, tuple[int, ...]]] = [(name, root, path)]
        while todo:
            name, m, path = todo.pop()
            attrs = m.__dict__
            slot = slot_of.get(id(m))
            if slot is None:
                slot_of[id(m)] = len(modules)
                try:  # subscripts, not .get: this runs for every module of every trace
                    unusual = (attrs["_forward_pre_hooks"] or attrs["_forward_hooks"]
                               or "_compiled_call_impl" in attrs)  # set on the instance by compile()
                except KeyError:  # a module whose __init__ skipped Module's
                    unusual = True  # looked at closely, by the few who read ``unusual``
                if unusual:
                    self.unusual.append(len(modules))
                modules.append(m)
                names.append([name])
            else:
                names[slot].append(name)
            children = attrs.get("_modules")
            if children is None:  # not in the instance's __dict__: a torch.jit.trace module holds its children
                children = _children_behind_getattr(m)  # in the TorchScript module behind its __getattr__
            if children:
                prefix = name + "." if name else ""
                inner = (*path, id(m))
                if "_orig_mod" in children and type(m).__name__ == "OptimizedModule":
                    self.wrappers.add(slot_of[id(m)])
                    wrapped = children["_orig_mod"]
                    if wrapped is not None and id(wrapped) not in inner:
                        todo.append((name, wrapped, inner))  # named as the wrapper, which calls it
                    continue
                for key, child in reversed(children.items()):
                    if child is not None and id(child) not in inner:
                        todo.append((prefix + key, child, inner))
        added = modules[first:]
        self.classes += [type(m).__name__ for m in added]
        self.is_leaf += [not m._modules for m in added]
        return len(added)

    def attach(self, parent: nn.Module, name: str, module: nn.Module) -> int:
        """Index ``module``, being registered as ``name`` on ``parent`` (a module of the index) while the
        model runs, with the modules under it; how many slots were added (0 when it was indexed already).

        A forward that builds a layer on its first call (``self.head = nn.Linear(...)``, then
        ``self.head(x)``) gets that layer's calls traced like any other's. The new slots come after every
        existing one, so slots stay in pre-order within each subtree."""
        if id(module) in self.slot_of or id(module) in self.excluded:
            return 0
        parent_name = self.names[self.slot_of[id(parent)]][0]
        return self._add(module, f"{parent_name}.{name}" if parent_name else name)

    def __len__(self) -> int:
        return len(self.modules)

    def without(self, excluded: Iterable[int]) -> ModuleIndex:
        """A copy that ignores the modules whose ``id`` is in ``excluded`` (their calls are not counted)."""
        out = object.__new__(ModuleIndex)
        out.__dict__.update(self.__dict__)
        drop = set(excluded)
        out.slot_of = {k: v for k, v in self.slot_of.items() if k not in drop}
        # Its own lists: a module attached while the copy is in use must not change this index.
        out.modules, out.classes, out.is_leaf = list(self.modules), list(self.classes), list(self.is_leaf)
        out.names = [list(n) for n in self.names]
        out.unusual = list(self.unusual)
        out.wrappers = set(self.wrappers)
        out.excluded = drop
        return out


def _children_behind_getattr(module: nn.Module) -> dict[str, nn.Module | None] | None:
    """A copy of ``module._modules`` read through the class's ``__getattr__`` (a ``torch.jit.trace`` module
    forwards it to the compiled module it wraps), or ``None`` where that read fails (a module whose ``__init__``
    skipped Module's)."""
    try:
        return dict(module._modules.items())
    except Exception:  # noqa: BLE001 - no readable registry: indexed as a module without children
        return None


class CallSkeleton:
    """What the engine records of every counted call, as parallel lists indexed by call id (start order).

    ``slot[cid]`` is the module's slot in the ``ModuleIndex``, ``index[cid]`` its ``call_index``,
    ``parent[cid]`` the enclosing counted call (``None`` at the top). Three appends per call: what probes
    can derive from these (depths, names) they derive themselves.
    """

    def __init__(self) -> None:
        self.slot: list[int] = []
        self.index: list[int] = []
        self.parent: list[int | None] = []

    def __len__(self) -> int:
        return len(self.slot)

    def key(self, cid: int, index: ModuleIndex) -> tuple[str, int]:
        """``(module name, call_index)``: how passes of the engine over the same model match their calls.

        By name rather than by object: a layer the forward builds on its first call is a new object in every
        pass (the guard removes it after each), under the same name."""
        return index.names[self.slot[cid]][0], self.index[cid]


class Probe:
    """One thing measured per module call. Override what you need; every method is optional.

    * ``start(engine)``: when the engine is entered, before the hooks go in (enter a torch mode here);
    * ``on_call_start(cid, module, args, kwargs)``: in the pre-hook, probes in the order given (``kwargs`` is
      ``None`` unless a probe sets ``needs_kwargs``, and then ``None`` only when torch's calling frame was not
      recognised; read it, never change it: a call without keywords gets the shared ``NO_KWARGS``);
    * ``on_call_args(cid, module, args, kwargs)``: for a module with forward pre-hooks of its own, after
      them: what its forward receives (they may have changed the arguments ``on_call_start`` saw);
    * ``on_call_end(cid, module, output, error)``: in the post-hook, probes in reverse order (they nest like
      the calls); ``error`` is the exception that left the call (``output`` is then ``None``); for a module
      with forward hooks of its own, after them (the output the caller gets, or the error a hook raised);
    * ``stop(engine, exc)``: after the hooks are removed, in reverse order of ``start``, even when the
      forward raised;
    * ``merge(trace)``: after the forward, to write what the probe recorded into the ``Trace``
      (``trace.calls[cid]`` is the call with that id).

    Keep the two call methods small: they run on every module call. Anything derivable from what they
    recorded belongs in ``merge``.
    """

    needs_kwargs = False
    #: Counts the operations torch dispatches (``FlopCounterMode``): on ``meta`` every operation must then run
    #: torch's kernel, never a shape formula that answers without dispatching (``ShapeOnlyMode(formulas=False)``).
    counts_dispatched_ops = False

    def start(self, engine: Engine) -> None:
        """Called when the engine is entered."""

    def stop(self, engine: Engine, exc: BaseException | None) -> None:
        """Called when the engine exits (``exc``: what the ``with`` block raised, or ``None``)."""

    def merge(self, trace: Trace) -> None:
        """Called after the forward with the trace the passes are merged into."""


def _overrides(probe: Probe, name: str) -> bool:
    return getattr(type(probe), name, None) is not None and name in {
        k for cls in type(probe).__mro__ if cls is not Probe for k in vars(cls)}


def caller_kwargs(depth: int = 2) -> dict | None:
    """The keyword arguments of the module call whose global pre-hook is running ``depth`` frames up.

    torch passes global forward pre-hooks the positional arguments only; the keyword arguments are a free
    variable of ``Module._call_impl``'s ``inner`` function, the frame that calls the hook. ``None`` when that
    frame is not what is expected (a future torch), so the caller can say the kwargs are unknown.
    """
    try:
        frame = sys._getframe(depth)
    except ValueError:
        return None
    code = frame.f_code
    if code is not _CALLER_CODE[0]:
        if code.co_name not in _CALLER_NAMES:
            return None
        _CALLER_CODE[0] = code
    kwargs = frame.f_locals.get("kwargs")
    return kwargs if type(kwargs) is dict else None


_CALLER_CODE: list[Any] = [None]  # the code object of torch's frame that calls global pre-hooks, once seen
_CALLER_NAMES = ("inner", "_call_impl")  # the names that code has had in torch's Module._call_impl

# "This call had no keyword arguments", given to the probes: one read-only empty mapping for every such call.
NO_KWARGS: Mapping[str, Any] = MappingProxyType({})

def _inner_code() -> Any:
    """The code of the ``inner`` function torch's ``Module._call_impl`` defines, or ``None`` if it has none.

    ``inner`` runs the forward and then the forward hooks; when it raises, ``_call_impl``'s ``except``
    clause calls the hooks registered with ``always_call``. So a post-hook called from ``inner`` ends a call
    that returned, and one called from anywhere else ends a call that raised: one frame check per call
    instead of reading ``sys.exc_info()`` at both ends of every call (a call made inside an ``except`` block
    sees that block's exception at both ends without having raised it).
    """
    for const in torch_module.Module._call_impl.__code__.co_consts:
        if getattr(const, "co_name", None) == "inner":
            return const
    return None


_INNER = _inner_code()
_CALL_IMPL = torch_module.Module._call_impl.__code__  # the frame of a module call, ``self`` its module

_ALWAYS = sys.maxsize  # "read the keyword arguments whatever the positional ones"
# module class -> (a weak reference to its forward as last seen, keyword_free_at() of it): computed once per
# class, again if the class's forward is replaced (patching a class's forward is a common way to change a
# library's model). Weak both ways: a class defined at run time (a notebook cell run again, a factory) dies
# with its last module, with its forward's closure and globals, traced or not. Read on a slot's first call only.
_POSITIONAL: weakref.WeakKeyDictionary[type, tuple[Callable[[], Any], int]] = weakref.WeakKeyDictionary()


def _forward_ref(forward: Any) -> Callable[[], Any]:
    """A weak reference to ``forward``, or (for what cannot be referenced weakly: a C function) a strong one."""
    try:
        return weakref.ref(forward)
    except TypeError:
        return lambda: forward


def _class_forward(cls: type) -> Any:
    """``cls.forward`` as read from the class, or ``None`` where reading it raises: TorchScript's
    ``torch.jit.trace`` module keeps a descriptor there that reads the compiled forward of an instance and raises
    when read from the class. Never raises, as a pre-hook must not break the user's forward."""
    try:
        return cls.forward
    except Exception:  # noqa: BLE001 - a descriptor that raises: the forward is not readable from the class
        return None


def keyword_free_at(module: nn.Module) -> int:
    """How many positional arguments leave no room for a keyword argument in a call of ``module``.

    A forward whose parameters are all positional-or-keyword (plus ``*args``, with no keyword-only
    parameter and no ``**kwargs``) cannot take a keyword once each of its named parameters has been given
    positionally: any keyword would raise ``TypeError`` before the forward ran. So a call with at least that
    many positional arguments has no keyword arguments, and the pre-hook need not read the caller's frame
    for them, about a quarter of what a call cost on top of the floor (``nn.Sequential``, ``Conv2d``,
    ``Linear``, ``ReLU``: one parameter each; ``docs/benchmarks.md``). ``_ALWAYS`` where the signature cannot say (``**kwargs``,
    keyword-only parameters, a decorator's ``(*args, **kwargs)``, a forward set on the instance, no
    signature).
    """
    if "forward" in module.__dict__:
        return _ALWAYS  # set on this instance: rare, and not what the class says
    cls = type(module)
    forward = _class_forward(cls)
    known = _POSITIONAL.get(cls)
    if known is None or known[0]() is not forward:
        # The attribute as stored: a staticmethod's function has no ``self`` to skip.
        known = (_forward_ref(forward), _keyword_free_at(inspect.getattr_static(cls, "forward", None)))
        try:
            _POSITIONAL[cls] = known
        except TypeError:  # a class that cannot be referenced weakly: not cached
            pass
    return known[1]


def _keyword_free_at(forward: Any) -> int:
    if not inspect.isfunction(forward):  # a staticmethod or classmethod, a callable object, a C function
        return _ALWAYS
    try:  # the signature as written, not one a decorator copied from what it wraps
        params = list(inspect.signature(forward, follow_wrapped=False).parameters.values())[1:]
    except Exception:  # noqa: BLE001 - a signature that cannot be read (a bad __signature__): read the frame
        return _ALWAYS
    if any(p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD) for p in params):
        return _ALWAYS
    return sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


# torch's registries of global forward hooks. ``RemovableHandle.remove`` forgets a hook in
# ``_global_forward_hooks`` and ``_global_forward_hooks_always_called`` but not in
# ``_global_forward_hooks_with_kwargs`` (a torch bug): every dict an id may be in is cleaned by hand.
# torch's warning (torch/nn/modules/module.py, OptimizedModule's first call) that global hooks fire an extra time
_COMPILE_HOOKS_WARNING = r"Using `torch\.compile\(module\)` when there are global hooks on modules"
_REGISTRIES = ("_global_forward_pre_hooks", "_global_forward_hooks", "_global_forward_hooks_with_kwargs",
               "_global_forward_hooks_always_called")


def _compiled_in(index: ModuleIndex) -> bool:
    """Whether a module of ``index`` runs compiled by ``torch.compile``: a wrapper (``OptimizedModule``), a
    module whose ``compile()`` was called (among the index's ``unusual``) or one whose forward is a compiled
    function (on the instance or its class: looked for only where Dynamo is loaded, as nothing is compiled
    elsewhere)."""
    if "OptimizedModule" in index.classes:
        return True
    if any(index.modules[s].__dict__.get("_compiled_call_impl") is not None for s in index.unusual):
        return True
    if not dynamo_loaded():
        return False
    classes = {type(m) for m in index.modules}
    return (any(compiled_forward_of_class(cls) for cls in classes)
            or any(is_compiled_callable(m.__dict__.get("forward")) for m in index.modules
                   if "forward" in getattr(m, "__dict__", ())))


def _remove_hook(handle: Any) -> None:
    """Remove one hook from every registry torch may hold it in (again: a no-op)."""
    handle.remove()
    _forget_hook(handle.id)


def _forget_hook(hook_id: int) -> None:
    for name in _REGISTRIES:
        registry = getattr(torch_module, name, None)
        if isinstance(registry, dict):
            registry.pop(hook_id, None)


class Engine:
    """Dispatch every call of the modules in ``index`` to ``probes`` while the ``with`` block runs.

    ``calls`` (a ``CallSkeleton``) holds the calls seen; ``errors`` the messages of probe failures (a probe
    bug never breaks the user's forward: the failure is recorded and the forward goes on).
    """

    def __init__(self, index: ModuleIndex, probes: Iterable[Probe], *, eager_compiled: bool = False) -> None:
        self.index = index
        self.eager_compiled = eager_compiled  # run torch.compile'd parts eagerly while entered (see __enter__)
        self.probes = list(probes)
        self.calls = CallSkeleton()
        self.errors: list[str] = []
        # Set when a torch function mode is active (the op recorder's, shape-only tracing's, the user's):
        # the probes' own reads of tensor metadata in the hooks then run with torch functions disabled,
        # unseen by any mode.
        self.quiet = False
        self.stack: list[int] = []  # the ids of the calls open right now (in the engine's thread), innermost last
        self.stopped: list[int] = []  # calls torch.utils.checkpoint stopped on purpose (see the module docstring)
        #: Outermost calls of the model's modules made in other threads and not recorded (``_adopts``).
        self.foreign_calls = 0
        self._active = False
        # What leaving undoes, empty until entered: leaving works (and does nothing) whenever it comes.
        self._handles: list[Any] = []
        self._started: list[Probe] = []
        self._stacks: dict[int, list[int]] = {}
        self._counted = False
        self._thread: int | None = None
        self._eager = False  # compiled code ran eagerly while entered (torch's "force_eager" stance, held)
        self._hold = EagerHold()  # this engine's share of that process-wide stance
        self._quiet_compile: Any = None  # torch's warning about global hooks, silenced while only ours are in
        self._compiled = False  # a compiled part of the model was seen when entering (``_compiled_in``)
        self._compile_at_start = True  # torch.compile had been used in the process when the engine was entered

    # ---- entering and leaving -------------------------------------------------------------------------
    def __enter__(self) -> Engine:  # noqa: PYI034 - typing.Self needs Python 3.11
        if self._active:
            raise RuntimeError("this Engine is already active; make a new one per pass")
        self._active = True
        self.stack = []
        self._thread = _thread_id()  # the thread that entered the engine: its calls use ``stack``
        self._threaded = False  # set by the first call from another thread: then every call takes the lock
        self._lock = threading.RLock()  # re-entrant: a probe may build (and attach) a module inside a hook
        self._stacks: dict[int, list[int]] = {}  # the other threads' open calls, by thread id
        self.foreign_calls = 0
        # Without torch's ``inner`` to recognise, the exception being handled at each call's start tells
        # (at its end) an exception the call raised from one it was called under.
        self._exc_at_start: list[BaseException | None] | None = [] if _INNER is None else None
        self._counts = [0] * len(self.index)
        self._slot_of = self.index.slot_of
        if self.eager_compiled and self.index.wrappers:
            # A compiled child's wrapper runs the module it wraps, which is recorded under the wrapper's name:
            # the wrapper's own call is not (profiling's timed passes, which time compiled code, time it instead).
            self._slot_of = {k: v for k, v in self._slot_of.items() if v not in self.index.wrappers}
        self._starts: tuple[Callable[..., Any], ...] = tuple(
            p.on_call_start for p in self.probes if _overrides(p, "on_call_start"))  # type: ignore[attr-defined]
        self._ends: tuple[Callable[..., Any], ...] = tuple(  # innermost first: probes nest like the calls
            p.on_call_end for p in reversed(self.probes) if _overrides(p, "on_call_end"))  # type: ignore[attr-defined]
        self._kwargs = any(p.needs_kwargs for p in self.probes)
        self._keyword_free_at: list[int | None] = [None] * len(self.index)  # by slot, filled on first call
        # class -> (its forward, keyword_free_at()) for this pass: the strong, plain-dict copy of the weak
        # ``_POSITIONAL`` the slots' first calls read (dropped with the engine, so no class is kept alive).
        self._free_at_by_class: dict[type, tuple[Any, int]] = {}
        self._started: list[Probe] = []
        self._handles: list[Any] = []
        self._counted = False
        self._late_post: set[int] = set()  # slots whose calls end after their own forward hooks
        others = any(getattr(torch_module, name, None) for name in _REGISTRIES)  # before our probes add theirs
        try:
            for probe in self.probes:
                probe.start(self)
                self._started.append(probe)
            if torch._C._len_torch_function_stack():  # any function mode (shape-only, the user's own)
                self.quiet = True
            self._count_in()
            self._depth = 1  # frames between a hook and torch's frame that calls it
            pre, post = self._pre, self._post
            self._compile_at_start = compile_used()
            self._compiled = _compiled_in(self.index)
            # Most processes load Dynamo (torchvision imports it) and never compile: there the hooks stay plain
            # and torch's stance is left alone (it is process-wide: other threads' compiled code would run eagerly).
            if self._compiled or self._compile_at_start:
                pre, post = self._keep_hooks_from_dynamo(others)
            self._handles.append(torch_module.register_module_forward_pre_hook(pre))
            self._handles.append(torch_module.register_module_forward_hook(post, always_call=True))
            self._handles.append(torch_module.register_module_module_registration_hook(self._attached))
            self._hook_after_own_hooks()
        except BaseException as e:
            self._leave(e)
            raise
        return self

    def _keep_hooks_from_dynamo(self, others: bool) -> tuple[Callable[..., Any], Callable[..., Any]]:
        """The pre- and post-hook to register where something may run compiled, so that Dynamo never traces them:
        a compiled part of the model was seen (``_compiled_in``) or torch.compile was used in this process.

        A torch.compile'd part would trace the hooks into its graph (and fail on the probes' state). With
        ``eager_compiled`` compiled code runs eagerly while the engine is entered (torch's "force_eager" stance,
        for the whole process, held with any other engine that holds it: ``EagerHold``): every layer is seen,
        whatever Dynamo cached before, and the trace's own grad and autocast modes add no cache entry (no
        recompilation, no recompile limit reached). That covers what no static look sees, a compiled function
        the forward calls; the hooks stay the plain ones then, unless a compiled part of the model was seen.
        There, inside a compiled region (a compiled function that starts a trace: no stance can be set there),
        and wherever code runs compiled (profiling's timed passes, which time compiled code), the hooks are
        disabled for Dynamo: they run as plain Python, one wrapper frame further down."""
        pre, post = self._pre, self._post
        eager = self._eager = self.eager_compiled and self._hold.take()
        if self._compiled or not eager:
            pre, post = torch.compiler.disable(pre), torch.compiler.disable(post)
            self._depth = 2
        if self._compiled and not others:
            # torch warns that global hooks fire once more for a torch.compile'd module's wrapper: with no
            # global hook but ours and our probes' (FlopCounterMode's module tracker), that is about ours (the
            # wrapper is not a module the engine counts). That one filter entry only, and only where a compiled
            # part is: each entry made clears every module's warning registry.
            self._quiet_compile = add_filter("ignore", _COMPILE_HOOKS_WARNING, UserWarning)
        return pre, post

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        self._leave(exc)
        return False

    def _leave(self, exc: BaseException | None) -> None:
        """Remove the hooks, close unfinished calls, stop the probes, restore the recursion limit.

        Each step runs even if one before it raised (a ``KeyboardInterrupt`` arriving during the cleanup
        included), the first error raised after all ran; and each can run again, redoing nothing done, so
        ``_leave`` called again after an interrupted one finishes what that one left."""
        steps: list[Callable[[], object]] = [functools.partial(_remove_hook, h) for h in self._handles]
        steps.append(functools.partial(self._close_open, exc))
        steps += [functools.partial(self._stop_probe, exc) for _ in self._started]
        steps.append(self._count_out)
        steps.append(self._hold.give_back)
        steps.append(self._leave_quiet_compile)
        run_all_then_raise(steps)
        self._handles, self._active = [], False
        self._free_at_by_class = {}  # no class outlives the pass through this engine

    @property
    def forced_eager(self) -> bool:
        """Whether compiled parts of the model (seen before it ran: ``_compiled_in``) ran eagerly (torch's
        ``force_eager`` stance) in this engine."""
        return self._eager and self._compiled

    @property
    def compile_came_late(self) -> bool:
        """Whether torch.compile was first used (since Dynamo's last reset) while the engine was entered and ran
        nothing eagerly (the forward called ``torch.compile``): code compiled then may have traced the hooks,
        which nothing kept from it. Loading Dynamo (an import, ``torch.compiler.disable``) is not using it."""
        return not self._compile_at_start and not self._eager and compile_used()

    def _leave_quiet_compile(self) -> None:
        """Remove the filter entry that silenced torch's warning (that entry only), once."""
        quiet, self._quiet_compile = self._quiet_compile, None
        if quiet is not None:
            remove_filter(*quiet)

    def _close_open(self, exc: BaseException | None) -> None:
        """End the calls still open (their post-hooks never ran), innermost first."""
        for stack in [self.stack, *self._stacks.values()]:
            while stack:
                cid = stack.pop()
                if cid != _FOREIGN:
                    self._close(cid, exc if exc is not None else Unfinished())

    def _stop_probe(self, exc: BaseException | None) -> None:
        """Stop the probe started last and not stopped yet (taken off the list first: never stopped twice)."""
        if self._started:
            self._started.pop().stop(self, exc)

    def _hook_after_own_hooks(self) -> None:
        """For the modules with forward hooks of their own, hooks of the engine's that run after them.

        torch runs global hooks before a module's own: a pre-hook of its own can change what the forward
        receives (flatten the input), a forward hook what the call returns (or raise). After its own
        pre-hooks the engine tells the probes what the forward receives (``on_call_args``); after its own
        forward hooks it ends the call, with the output the caller gets or the error a hook raised (the
        global post-hook leaves such a module's calls to it). A module that has hooks already gets one
        more, which changes nothing about how it runs; the others are not touched.
        """
        self._args_changed = tuple(p.on_call_args for p in self.probes if _overrides(p, "on_call_args"))  # type: ignore[attr-defined]
        for slot in self.index.unusual:
            module = self.index.modules[slot]
            if getattr(module, "_forward_pre_hooks", None) and self._args_changed:
                after = self._after_own_pre_hooks
                self._handles.append(module.register_forward_pre_hook(
                    torch.compiler.disable(after) if self._depth == 2 else after, with_kwargs=True))
            if getattr(module, "_forward_hooks", None):
                late = functools.partial(self._post, late=True)
                if self._depth == 2:
                    late = torch.compiler.disable(late)
                self._handles.append(module.register_forward_hook(late, always_call=True))
                self._late_post.add(slot)

    def _after_own_pre_hooks(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        """What the forward of a module with pre-hooks of its own receives, told to the probes."""
        slot = self._slot_of.get(id(module))
        with self._lock:
            stack = self._stack_here()
            if slot is None or not stack or stack[-1] == _FOREIGN or self.calls.slot[stack[-1]] != slot:
                return  # the engine's pre-hook did not open this call (another thread's engine's, say)
            cid = stack[-1]
        kwargs = (kwargs or NO_KWARGS) if self._kwargs else None
        with _no_torch_function() if self.quiet else contextlib.nullcontext():
            for changed in self._args_changed:
                try:
                    changed(cid, module, args, kwargs)
                except Exception as e:  # noqa: BLE001 - a probe bug must never break the user's forward
                    self.errors.append(f"pre-hook of {type(module).__name__}: {e!r}")

    def _count_in(self) -> None:
        """Count this engine among the active ones; the first raises the recursion limit."""
        with _ACTIVE_LOCK:
            if _ACTIVE["engines"] == 0:
                limit = sys.getrecursionlimit()
                _ACTIVE["limit"], _ACTIVE["raised"] = limit, limit + limit // 3
                sys.setrecursionlimit(_ACTIVE["raised"])
            _ACTIVE["engines"] += 1
            _ENGINE_THREADS[self._thread] = _ENGINE_THREADS.get(self._thread, 0) + 1
            self._counted = True

    def _count_out(self) -> None:
        """The reverse of ``_count_in``: the last engine to leave puts the limit back (unless it was changed).
        Safe to call again after an interrupted call: the counts change in one statement, with the flag."""
        with _ACTIVE_LOCK:
            if self._counted:
                left = _ENGINE_THREADS.get(self._thread, 1) - 1
                self._counted, _ACTIVE["engines"], _ENGINE_THREADS[self._thread] = False, _ACTIVE["engines"] - 1, left
            if not _ENGINE_THREADS.get(self._thread, 1):
                del _ENGINE_THREADS[self._thread]
            if _ACTIVE["engines"] == 0 and sys.getrecursionlimit() == _ACTIVE["raised"]:
                sys.setrecursionlimit(_ACTIVE["limit"])

    def _attached(self, parent: nn.Module, name: str, value: nn.Module | None) -> None:
        """torch's module-registration hook: a module attached to one of the index's modules while the
        model runs is indexed, so that its calls count."""
        if value is None or id(parent) not in self._slot_of:
            return
        with self._lock:  # another thread's hooks may be reading the per-slot lists
            try:
                added = self.index.attach(parent, name, value)
            except Exception as e:  # noqa: BLE001 - never break the user's forward
                self.errors.append(f"attaching {type(value).__name__} as {name!r}: {e!r}")
                return
            if added:
                if self._slot_of is not self.index.slot_of:  # this engine's copy without the wrappers
                    first = len(self.index) - added
                    self._slot_of.update((k, v) for k, v in self.index.slot_of.items() if v >= first)
                self._counts += [0] * added
                self._keyword_free_at += [None] * added

    # ---- the hooks: the hot path ----------------------------------------------------------------------
    def _pre(self, module: nn.Module, args: tuple) -> None:
        slot = self._slot_of.get(id(module))
        if slot is None:
            return  # a module of another model, or one built inside the forward
        kwargs = None
        if self._kwargs:
            free_at = self._keyword_free_at[slot]
            if free_at is None:  # the slot's first call: keyword_free_at(), through this pass's cache by class
                cls = type(module)
                try:  # _class_forward(), inline: most modules are called once, so this runs for most calls
                    forward = cls.forward
                except Exception:  # noqa: BLE001 - TorchScript's jit.trace module: a descriptor that raises
                    forward = None
                known = self._free_at_by_class.get(cls)
                if known is not None and known[0] is forward and "forward" not in module.__dict__:
                    free_at = known[1]
                else:  # the process-wide cache (weak: a pure-Python mapping, read once per class and pass)
                    free_at = keyword_free_at(module)
                    if "forward" not in module.__dict__:
                        self._free_at_by_class[cls] = (forward, free_at)
                self._keyword_free_at[slot] = free_at
            if len(args) >= free_at:
                kwargs = NO_KWARGS  # the signature leaves no room for one
            else:  # caller_kwargs(), inline for the frame seen before
                frame = sys._getframe(self._depth)
                if frame.f_code is _CALLER_CODE[0]:
                    kwargs = frame.f_locals.get("kwargs")
                    if type(kwargs) is not dict:
                        kwargs = None
                else:
                    kwargs = caller_kwargs(self._depth + 1)
        ident = _thread_id()
        if self._threaded or ident != self._thread:
            self._pre_threaded(slot, module, args, kwargs, ident)
            return
        stack = self.stack
        self._begin(slot, module, args, kwargs, stack, stack[-1] if stack else None)

    def _pre_threaded(self, slot: int, module: nn.Module, args: tuple, kwargs: Mapping[str, Any] | None,
                      ident: int) -> None:
        """``_pre`` once another thread has called one of the model's modules: under the lock, each thread's
        calls on its own stack; another thread's outermost call recorded only if ``_adopts`` says so."""
        if ident != self._thread and ident in _ENGINE_THREADS:
            return  # a thread tracing by itself (two traces at once in two threads)
        with self._lock:
            self._threaded = True
            if ident == self._thread:  # the engine's own thread: its calls are the trace's, even at the top
                stack = self.stack
                self._begin(slot, module, args, kwargs, stack, stack[-1] if stack else None)
                return
            stack = self._stack_here()
            if stack:
                parent = stack[-1]
                if parent == _FOREIGN:  # inside a call of this thread's that is not the trace's
                    stack.append(_FOREIGN)
                    return
            elif self._adopts(slot):
                parent = self.stack[-1]
            else:
                stack.append(_FOREIGN)  # its calls are skipped until it ends
                self.foreign_calls += 1
                return
            self._begin(slot, module, args, kwargs, stack, parent)

    def _adopts(self, slot: int) -> bool:
        """Whether the outermost call (of the module in ``slot``) of a thread other than the engine's is part of
        the traced forward (holding the lock).

        A forward that runs branches in a thread pool calls, from the pool's threads, modules under the call
        it is in (the engine's thread is waiting inside it): adopted, under that call. Another thread's own
        forward of the same model calls the model itself, whose call is open in the engine's thread, or runs
        while the engine's thread is in no call at all, or is inside a call of the model that started before
        the engine (its frames show it): not adopted, nor any call it makes. (A thread that
        calls one of the model's submodules on its own, while the traced forward runs, cannot be told from a
        pool's branch: adopted.)"""
        own = self.stack
        if not own:
            return False
        slots = self.calls.slot
        if any(slots[cid] == slot for cid in own):
            return False
        # A forward this thread started before the engine saw it (the trace began in the middle of it): a
        # call of one of the model's modules open in this thread's frames, besides the one starting now.
        slot_of, inside = self._slot_of, 0
        frame: Any = sys._getframe(1)
        while frame is not None:
            if frame.f_code is _CALL_IMPL and id(frame.f_locals.get("self")) in slot_of:
                inside += 1
                if inside > 1:
                    return False
            frame = frame.f_back
        return True

    def _stack_here(self) -> list[int]:
        """The open calls of the thread running now (``stack`` in the engine's own thread)."""
        ident = _thread_id()
        if ident == self._thread:
            return self.stack
        stack = self._stacks.get(ident)
        if stack is None:
            stack = self._stacks[ident] = []
        return stack

    def _begin(self, slot: int, module: nn.Module, args: tuple, kwargs: Mapping[str, Any] | None,
               stack: list[int], parent: int | None) -> None:
        """Give the call its id and skeleton entries, open it on ``stack`` and tell the probes."""
        calls = self.calls
        cid = len(calls.slot)
        calls.slot.append(slot)
        calls.index.append(self._counts[slot])
        self._counts[slot] += 1
        calls.parent.append(parent)
        stack.append(cid)
        if self._exc_at_start is not None:
            self._exc_at_start.append(sys.exc_info()[1])
        if self.quiet:
            with _no_torch_function():
                for start in self._starts:
                    try:
                        start(cid, module, args, kwargs)
                    except Exception as e:  # noqa: BLE001 - a probe bug must never break the user's forward
                        self.errors.append(f"pre-hook of {type(module).__name__}: {e!r}")
            return
        for start in self._starts:  # the same loop, without the context manager's cost
            try:
                start(cid, module, args, kwargs)
            except Exception as e:  # noqa: BLE001
                self.errors.append(f"pre-hook of {type(module).__name__}: {e!r}")

    def _post(self, module: nn.Module, args: tuple, output: Any, late: bool = False) -> None:
        slot = self._slot_of.get(id(module))
        if slot is None or (self._late_post and not late and slot in self._late_post):
            return  # not the model's, or ended by the hook that runs after the module's own (see above)
        error = None
        if self._exc_at_start is None and sys._getframe(self._depth).f_code is not _INNER:
            # Not from inner: from _call_impl's except clause, where the exception is being handled. (Any
            # other caller, e.g. a library's own copy of _call_impl: an exception being handled, if any.)
            error = sys.exc_info()[1]
        ident = _thread_id()
        if self._threaded or ident != self._thread:
            if ident != self._thread and ident in _ENGINE_THREADS:
                return
            with self._lock:
                self._threaded = True
                stack = self._stack_here()
                if stack and stack[-1] == _FOREIGN:  # the end of a call that was not adopted
                    stack.pop()
                    return
                self._finish_call(slot, module, output, error, stack)
            return
        self._finish_call(slot, module, output, error, self.stack)

    def _finish_call(self, slot: int, module: nn.Module, output: Any, error: BaseException | None,
                     stack: list[int]) -> None:
        """Close the innermost open call of ``module`` on ``stack`` and tell the probes."""
        calls = self.calls
        if not stack or calls.slot[stack[-1]] != slot:
            # The pre-hook never ran for this call (another pre-hook raised first): nothing to close.
            if not any(calls.slot[c] == slot for c in stack):
                return
            while calls.slot[stack[-1]] != slot:  # calls whose post-hooks never ran
                self._close(stack.pop(), sys.exc_info()[1] or Unfinished())
        cid = stack.pop()
        if self._exc_at_start is not None:
            exc = sys.exc_info()[1]
            error = exc if exc is not None and exc is not self._exc_at_start[cid] else None
        if error is not None:
            output = None
            if type(error) is _STOP_RECOMPUTATION:  # stopped on purpose: no output, and nothing failed
                self.stopped.append(cid)
                error = None
        if self.quiet:
            with _no_torch_function():
                for end in self._ends:  # as _end, inline: this runs on every call
                    try:
                        end(cid, module, output, error)
                    except Exception as e:  # noqa: BLE001
                        self.errors.append(f"post-hook of {type(module).__name__}: {e!r}")
            return
        for end in self._ends:  # the same loop, without the context manager's cost
            try:
                end(cid, module, output, error)
            except Exception as e:  # noqa: BLE001
                self.errors.append(f"post-hook of {type(module).__name__}: {e!r}")

    def _end(self, cid: int, module: nn.Module, output: Any, error: BaseException | None) -> None:
        for end in self._ends:
            try:
                end(cid, module, output, error)
            except Exception as e:  # noqa: BLE001
                self.errors.append(f"post-hook of {type(module).__name__}: {e!r}")

    def _close(self, cid: int, error: BaseException) -> None:
        """End a call whose post-hook never ran."""
        self._end(cid, self.index.modules[self.calls.slot[cid]], None, error)
