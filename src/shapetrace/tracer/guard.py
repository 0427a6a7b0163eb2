"""``ModelGuard``: leave a model as it was found after a forward run for measuring, whatever happened.

Entering saves each module's ``training`` flag, every buffer's values (a trace in training mode updates
BatchNorm's running statistics), every parameter's ``requires_grad`` flag and version counter, sets the
requested training mode and grad mode; leaving puts the flags, buffers and grad mode back, even when the
forward raised or was interrupted.
Parameters are not copied (that would double a large model's memory): ``changed_params()`` names those the
forward wrote in place, from their version counters.

A forward can also *register* things on the model: assign a new tensor to a buffer (``self.steps =
self.steps + 1``), a new ``Parameter``, a submodule built on the first call (often into a name that held a
plain ``None``), or delete one and register it again. Entering keeps a shallow copy of every module's
``__dict__`` and of its parameter, buffer and module dicts (references only: nothing is copied but the dicts);
leaving puts back each module whose registries the forward changed (torch's registration hooks say which, and
a registry that shrank shows a ``del``) as it was, plain attributes included (``restored`` lists the names),
and whole: its class (``parametrize`` swaps in a class of its own, with a property per parametrized tensor) and
the hooks torch's reparametrizations keep on it (``prune`` and ``weight_norm`` add a forward pre-hook,
``spectral_norm`` state-dict hooks too, all into dicts the shallow copy shares) go back as well; anyone else's
hooks (the user's, added in a Tracer block) are left alone. Entering reads each module's class (one list) and
copies the hook dicts of the few modules found with forward hooks; on the others a hook added by the forward is
told by its handle id, newer than any found.
Modules with forward hooks of their own get their plain attributes put back too: a pre-hook such as
``torch.nn.utils.prune``'s recomputes ``module.weight`` at every call, here under ``no_grad``. Other plain
attributes a module's own forward sets (``self.cache = ...``) are left as a plain forward leaves them, except
on another device, where ``placement`` puts them back. With ``keep_registrations`` leaving keeps what the
forward registered until ``put_back_registrations()`` (the tracer counts parameters first, as they were in the
forward). Writes straight into ``_parameters`` or ``_buffers`` that keep their size go past torch's hooks and
are left as the forward left them.

Two guards in two threads whose models share modules (one model, or a model and its submodule) take turns
(``model_lock``): entering waits until another thread's guard of any of the same modules has put everything
back (registrations included, with ``keep_registrations``), so neither saves what the other set. A guard in
the same thread does not wait.

``torch.nn.utils.parametrize``'s cache of computed weights (inside ``parametrize.cached()``) goes back as
found, on every device: a weight the forward cached under the trace's ``no_grad`` (or from copies on ``meta``)
would be read, without its graph, by the caller's next forward in the same ``cached()`` block
(``parametrized.py``).

A forward run on copies of the buffers (``runs_copy``: placement's test, for a trace on ``meta`` or another
device) cannot write them: those are not copied, nor put back.

With ``keep_buffers_after_param_writes`` (a ``Tracer`` block, whose code is the user's: a training step, say),
buffers are put back only if no parameter was written in place: parameters cannot be put back, so a block
that wrote them (``optimizer.step()``) keeps its buffer updates too (BatchNorm's running statistics), and the
model is left as the block left it rather than half put back (``buffers_kept``).

Buffers go back with their version counters as they were when the guard was entered (an autograd graph
made before the trace that saved them still runs backward, even where the forward wrote them in place), and
each on its own where the one-call copy cannot write it (an inference tensor,
an expanded or nested one).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping
from types import MappingProxyType, TracebackType
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as torch_module
from torch.nn.parameter import UninitializedTensorMixin
from torch.utils.hooks import RemovableHandle

from .attributes import TORCH_ATTRIBUTES, changed_names, put_back_attributes
from .cleanup import run_all_then_raise
from .engine import ModuleIndex
from .model_lock import ModelLock
from .parametrized import cache_found, match_properties, put_back_cache, reparametrization_hook

__all__ = ["ModelGuard"]

_REGISTRIES = ("_parameters", "_buffers", "_modules")
# A module's hook dicts (forward, pre-forward and their companions, backward, state-dict): keyed by handle id
_HOOK_DICTS = tuple(sorted(k for k in TORCH_ATTRIBUTES if k.endswith("_hooks") or "_hooks_" in k))
_set_versions = getattr(torch._C._autograd, "_unsafe_set_version_counter", None)


def _version(t: torch.Tensor) -> int | None:
    """The tensor's version counter (bumped by every in-place write); ``None`` for inference tensors."""
    try:
        return t._version
    except RuntimeError:  # an inference tensor keeps no version counter
        return None


def _versions(tensors: list[torch.Tensor]) -> list[int | None]:
    """``_version`` of each tensor: one list comprehension in the common case (part of every trace's fixed
    cost), one call per tensor when some are inference tensors."""
    try:
        return [t._version for t in tensors]
    except RuntimeError:
        return [_version(t) for t in tensors]


# __dict__, _parameters, _buffers, _modules, non-persistent buffer names, each a shallow copy
Snapshot = tuple[dict, Mapping, Mapping, Mapping, frozenset]
_EMPTY: Mapping = MappingProxyType({})
_NO_NAMES: frozenset = frozenset()


def _snapshot(attrs: dict) -> Snapshot:
    """Shallow copies of one module's ``__dict__`` and registries (a module whose ``__init__`` skipped Module's
    may lack some)."""
    return (attrs.copy(), dict(attrs.get("_parameters") or {}), dict(attrs.get("_buffers") or {}),
            dict(attrs.get("_modules") or {}), frozenset(attrs.get("_non_persistent_buffers_set") or ()))


def _put_back_buffers(live: list[torch.Tensor], saved: list[torch.Tensor], versions: list[int | None]) -> None:
    """Write each saved copy back into its buffer, and its version counter back to ``versions`` (read when
    the guard was entered).

    An autograd graph that saved a buffer (BatchNorm's running statistics in eval, a buffer a forward scales)
    checks its version in backward: with the values and the counter as they were, a graph made before the
    trace still runs after it, even when the forward wrote the buffer in place (``self.scale.mul_(...)``,
    ``self.steps += 1``). A graph made during the trace that saved a buffer the forward then wrote refuses
    to run backward, rightly: the values it saved are gone. Views of a buffer share its counter, so they
    go back with it. One call for all in the common case; buffers it cannot write (an inference tensor, an
    expanded or nested one, one the forward resized) one by one."""
    if _set_versions is not None and None not in versions:
        try:
            torch._foreach_copy_(live, saved)
        except Exception:  # noqa: BLE001, S110 - a buffer no foreach kernel writes: one by one below
            pass
        else:
            _set_versions(live, versions)
            return
    for b, copy, version in zip(live, saved, versions):
        with torch.inference_mode() if b.is_inference() else contextlib.nullcontext():
            try:
                _put_back_buffer(b, copy)
            except Exception:  # noqa: BLE001, S112 - its dtype changed too (``.data =``), or no kernel writes it: left
                continue
        if version is not None and _set_versions is not None and _version(b) not in (None, version):
            _set_versions([b], [version])


@torch.no_grad()
def _clones(live: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The buffers to put back and a copy of each: one call for all in the common case."""
    try:
        return live, list(torch._foreach_clone(live)) if live else []
    except Exception:  # noqa: BLE001 - a nested, masked or sub-byte tensor, say: one by one
        # An uninitialized buffer (a lazy layer's, traced on a copy) holds nothing to put back; one torch cannot
        # copy (a uint4 or quint4x2 buffer: no copy kernel) is left as the forward leaves it, rather than
        # refusing to trace the model at all (a forward rarely writes such a buffer).
        kept: list[torch.Tensor] = []
        copies: list[torch.Tensor] = []
        for b in live:
            if isinstance(b, UninitializedTensorMixin):
                continue
            try:
                copies.append(b.clone())
            except Exception:  # noqa: BLE001, S112 - no clone for this dtype or layout
                continue
            kept.append(b)
        return kept, copies


def _put_back_buffer(b: torch.Tensor, copy: torch.Tensor) -> None:
    """One buffer back as ``copy`` holds it: written where it is when its layout is the same (unless equal,
    which keeps an expanded buffer's aliasing), else its own storage swapped back (``resize_``, ``set_``)."""
    if b.shape == copy.shape and b.device == copy.device and b.dtype == copy.dtype:
        try:
            if torch.equal(b, copy):
                return
        except Exception:  # noqa: BLE001, S110 - a layout torch.equal cannot compare (a jagged nested tensor)
            pass
        if b.stride() == copy.stride():
            b.copy_(copy)
            return
    b.set_(copy)


_THREAD = threading.local()


def _grad_guards() -> list[ModelGuard]:
    """The guards of this thread that set a grad mode and are not left yet, in the order entered."""
    stack = getattr(_THREAD, "guards", None)
    if stack is None:
        stack = _THREAD.guards = []
    return stack


class ModelGuard:
    """Save and restore a model's state around a forward (see the module docstring)."""

    def __init__(self, index: ModuleIndex, *, train: bool | None = None, grad: bool = False,
                 keep_registrations: bool = False, runs_copy: Callable[[torch.Tensor], bool] | None = None,
                 keep_buffers_after_param_writes: bool = False) -> None:
        self.index = index
        # The user's own code ran under the guard (a Tracer block): when it wrote parameters in place (an
        # optimizer step), which cannot be put back, the buffers are left as it left them too (``buffers_kept``).
        self.keep_buffers_after_param_writes = keep_buffers_after_param_writes
        self.buffers_kept = False
        self._changed: list[str] | None = None  # changed_params(), once worked out after the forward
        self.runs_copy = runs_copy
        self.train = train
        self.grad = grad
        self.keep_registrations = keep_registrations
        self.restored: list[str] = []  # names the forward registered anew, put back on leaving
        # What leaving puts back, empty until entered: leaving works (and does nothing more) whenever it comes.
        self._training: list[bool] = []
        self._params: list[torch.Tensor] = []
        self._requires_grad: list[bool] = []
        self._live: list[torch.Tensor] = []
        self._saved: list[torch.Tensor] = []
        self._buffer_versions: list[int | None] = []
        self._snapshots: list[Snapshot] = []
        self._classes: list[type] = []
        self._hooks: dict[int, dict[str, dict]] = {}  # slot -> copies of its non-empty hook dicts (hooked modules)
        self._next_hook = 0  # the id torch gives the next hook registered (any hook of a later id is newer)
        self._parametrize_cache: dict | None = None
        self._touched: set[int] = set()  # slots of the modules the forward registered something on
        self._grad = contextlib.ExitStack()
        self._grad_left = True
        self._lock = ModelLock(index.modules)  # the modules indexed now (see model_lock)
        self._locked = False  # holding the model's lock (from entering until everything is back)
        self._state_back = self._registrations_back = False

    def __enter__(self) -> ModelGuard:  # noqa: PYI034 - typing.Self needs Python 3.11
        self._lock.acquire()  # another thread's trace of these modules puts them back first (see model_lock)
        self._locked = True
        self._state_back = self._registrations_back = False
        self._changed = None
        try:
            self._save()
        except BaseException:
            self._restore()
            raise
        return self

    def _save(self) -> None:
        """Save what leaving puts back, set the trace's training and grad modes."""
        modules = self.index.modules
        self._training = [m.training for m in modules]
        # Every parameter and buffer, a tensor registered twice listed twice (harmless for both uses).
        self._params = [p for m in modules for p in m._parameters.values() if p is not None]
        self._versions = _versions(self._params)
        # A lazy layer's parameters, made (materialised in place) by its first forward: not the forward's writes.
        self._lazy = {id(p) for p in self._params if isinstance(p, UninitializedTensorMixin)}
        self._requires_grad = [p.requires_grad for p in self._params]
        # A copy of every buffer, written back after the forward. Version counters cannot say which buffers
        # changed: BatchNorm's kernel updates its running statistics without bumping them.
        live = [b for m in modules for b in m._buffers.values() if b is not None]
        if self.runs_copy is not None:  # the forward runs copies of these (on meta, say): it cannot write them
            live = [b for b in live if not self.runs_copy(b)]
        live, saved = _clones(live)
        self._live, self._saved, self._buffer_versions = live, saved, _versions(live)  # one statement: all or none
        dicts = [m.__dict__ for m in modules]
        try:  # the common case as one comprehension: part of every trace's fixed cost
            # Most registries are empty (a ReLU's, a Linear's buffers): shared empty stand-ins, not copies.
            self._snapshots: list[Snapshot] = [
                (d.copy(), p.copy() if (p := d["_parameters"]) else _EMPTY, b.copy() if (b := d["_buffers"]) else _EMPTY,
                 c.copy() if (c := d["_modules"]) else _EMPTY,
                 frozenset(n) if (n := d["_non_persistent_buffers_set"]) else _NO_NAMES) for d in dicts]
        except (KeyError, AttributeError):
            self._snapshots = [_snapshot(d) for d in dicts]
        # A module whose registrations are put back goes back whole: its class (parametrize swaps in a class of
        # its own) and its reparametrization hooks (prune and weight_norm add a pre-hook into the same dict). Hook dicts are
        # copied only for the few modules with forward hooks (the index's ``unusual``); on any other, a hook
        # the forward added is told by its id, newer than any found here.
        self._classes = list(map(type, modules))  # one C-level pass: part of every trace's fixed cost
        self._next_hook = RemovableHandle.next_id
        self._hooks = {s: {k: dict(h) for k in _HOOK_DICTS if isinstance(h := dicts[s].get(k), dict) and h}
                       for s in self.index.unusual}
        self._parametrize_cache = cache_found()
        self._found = len(self.index)  # slots indexed before the forward (the index can grow during it)
        for register, registry in ((torch_module.register_module_parameter_registration_hook, "_parameters"),
                                   (torch_module.register_module_buffer_registration_hook, "_buffers"),
                                   (torch_module.register_module_module_registration_hook, "_modules")):
            self._grad.callback(register(self._registering(registry)).remove)
        if self.train is not None:
            self.index.model.train(self.train)
        self._enter_grad_mode()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        self._restore()
        return False

    def _enter_grad_mode(self) -> None:
        """Set the trace's grad mode; leaving gives back the mode found, also when guards of this thread are
        left in another order than entered (two Tracers left in the order they were entered, say, across
        notebook cells): a guard left before a later one hands that one the mode it found."""
        stack = _grad_guards()
        self.grad_found = torch.is_grad_enabled()  # public: the guard left before this one hands it its own
        self._grad_left = False
        stack.append(self)
        torch.set_grad_enabled(self.grad)

    def _leave_grad_mode(self) -> None:
        """Give back the grad mode (see ``_enter_grad_mode``); once: a second call (after an interrupted one)
        finishes what the first left."""
        if self._grad_left:
            return
        stack = _grad_guards()
        at = next((i for i, g in enumerate(stack) if g is self), None)
        if at is None or at == len(stack) - 1:  # the innermost (or left in another thread): the mode back
            torch.set_grad_enabled(self.grad_found)
            if at is not None:
                stack.pop()
        else:
            stack[at + 1].grad_found = self.grad_found  # the next one gives back what this one found
            del stack[at]
        self._grad_left = True

    def _registering(self, registry: str) -> Any:
        """A registration hook for ``registry`` (``_parameters``, ``_buffers``, ``_modules``) that notes which
        module (found before the forward) the forward registers something on."""
        touched, slot_of = self._touched, self.index.slot_of

        def hook(module: nn.Module, name: str, value: Any) -> None:
            slot = slot_of.get(id(module))
            if slot is not None and slot < self._found:
                touched.add(slot)

        return hook

    def put_back_registrations(self) -> None:
        """Put back, as they were before the forward, the modules whose registries it changed, and the plain
        attributes of the modules with hooks of their own (see the module docstring); once only, by
        ``__exit__`` unless ``keep_registrations``."""
        try:
            self._put_back_registrations()
        finally:
            self._registrations_back = True
            self._unlock_when_all_back()

    def _put_back_registrations(self) -> None:
        snapshots, self._snapshots = self._snapshots, []
        if not snapshots:
            return
        modules, names = self.index.modules, self.index.names
        check = set(self._touched) | {s for s in self.index.unusual if s < len(snapshots)}
        try:  # a registry that shrank or grew past torch's hooks (``del self.layer``); one comprehension
            check.update([slot for slot, (m, (_, p, b, c, _)) in enumerate(zip(modules, snapshots))
                          if len(m._parameters) != len(p) or len(m._buffers) != len(b) or len(m._modules) != len(c)])
        except AttributeError:  # a module whose __init__ skipped Module's: all looked at
            check.update(range(len(snapshots)))
        rnns, any_put_back = [], False
        for slot in sorted(check):
            m, (attrs, *registries, persistent) = modules[slot], snapshots[slot]
            live = m.__dict__
            prefix = names[slot][0] + "." if names[slot][0] else ""
            changed_params = restored = False
            for registry, held in zip(_REGISTRIES, registries):
                entries = live.get(registry)
                if not isinstance(entries, dict):
                    continue
                differ = changed_names(entries, held)
                if differ:
                    entries.clear()
                    entries.update(held)
                    self.restored += [prefix + k for k in differ if prefix + k not in self.restored]
                    changed_params |= registry == "_parameters"
                    restored = True
            put_back_attributes(live, attrs)
            self._put_back_whole(m, slot, restored)
            any_put_back |= restored
            kept = live.get("_non_persistent_buffers_set")
            if isinstance(kept, set) and kept != persistent:
                kept.clear()
                kept.update(persistent)
            if changed_params and isinstance(m, nn.RNNBase):
                rnns.append(m)
        if any_put_back:  # parametrize's properties, once every registry is back; every module looked at, as
            for m in modules[:len(snapshots)]:  # the ModuleDict put back may be all that changed (on meta, say)
                match_properties(m)
        self._classes, self._hooks = [], {}
        for rnn in rnns:  # an RNN keeps its own list of its weights, read by its kernel: rebuilt from the names
            rebuild = getattr(rnn, "_init_flat_weights", None)
            if rebuild is not None:
                rebuild()

    def _put_back_whole(self, m: nn.Module, slot: int, restored: bool) -> None:
        """What goes back with a module's registrations (``restored``): its class (parametrize swaps in a class
        of its own); and its reparametrization hooks, also on a module found with hooks whose registries are as
        found (a forward that failed after prune took away the hook it was replacing)."""
        if restored and slot < len(self._classes) and type(m) is not self._classes[slot]:
            m.__class__ = self._classes[slot]
        if restored or slot in self._hooks:
            self._put_back_reparametrization_hooks(m, slot)

    def _put_back_reparametrization_hooks(self, m: nn.Module, slot: int) -> None:
        """The hooks ``prune``, ``weight_norm`` and ``spectral_norm`` keep on a module, as found: those the forward
        added are taken away, those it removed (on a module found with hooks, whose hook dicts were copied) given
        back. Anyone else's hooks (the user's, in a Tracer block; another thread's) are left alone."""
        live, copied, newer = m.__dict__, self._hooks.get(slot), self._next_hook
        for name in _HOOK_DICTS:
            hooks = live.get(name)
            if not isinstance(hooks, dict):
                continue
            held = copied.get(name, _EMPTY) if copied is not None else _EMPTY
            for k in [k for k, v in hooks.items() if k not in held and reparametrization_hook(v)
                      and (copied is not None or (isinstance(k, int) and k >= newer))]:
                del hooks[k]
            for k, v in held.items():
                if k not in hooks and reparametrization_hook(v):
                    hooks[k] = v

    def _restore(self) -> None:
        """Put back what ``_save`` saved. Each step runs even if one before it raised (a ``KeyboardInterrupt``
        arriving during the cleanup included), the first error raised after all ran; and each can run again,
        so a second call finishes what an interrupted one left (``Tracer.release``)."""
        steps: list[Any] = [self._grad.close, self._leave_grad_mode]
        if not self.keep_registrations:
            steps.append(self.put_back_registrations)
        steps += [self._put_back_flags, self._put_back_buffer_values, self._put_back_parametrize_cache,
                  self._state_put_back]
        run_all_then_raise(steps)

    def _put_back_parametrize_cache(self) -> None:
        """``parametrize``'s cache of computed weights as found (``parametrized.py``), once."""
        saved, self._parametrize_cache = self._parametrize_cache, None
        put_back_cache(saved)

    def _state_put_back(self) -> None:
        self._state_back = True
        self._unlock_when_all_back()

    def _unlock_when_all_back(self) -> None:
        """Release the model's lock once the flags, buffers and registrations are all back (with
        ``keep_registrations`` the registrations come back last, in ``put_back_registrations``); once."""
        if self._locked and self._state_back and (self._registrations_back or not self.keep_registrations):
            self._locked = False
            self._lock.release()

    def _put_back_flags(self) -> None:
        """Each module's ``training`` flag and each parameter's ``requires_grad`` as found (once: the lists are
        forgotten when all are back)."""
        for m, was in zip(self.index.modules, self._training):
            if m.training != was:  # Module.__setattr__ is slow: set only what changed
                m.training = was
        params, flags = self._params, self._requires_grad
        if flags and [p.requires_grad for p in params] != flags:  # a forward that froze or unfroze parameters
            for p, was in zip(params, flags):
                if p.requires_grad != was:
                    p.requires_grad_(was)
        self._training, self._requires_grad = [], []

    def _put_back_buffer_values(self) -> None:
        """The saved buffers' values and version counters, once (forgotten only when all are back)."""
        if not self._live:
            return
        if self.keep_buffers_after_param_writes:
            self._changed = self.changed_params()  # kept: the trace reports the same list (changed_params)
            if self._changed:
                self.buffers_kept = True
                self._live, self._saved, self._buffer_versions = [], [], []
                return
        with torch.no_grad():
            _put_back_buffers(self._live, self._saved, self._buffer_versions)
        self._live, self._saved, self._buffer_versions = [], [], []

    def changed_params(self) -> list[str]:
        """Names of the parameters whose version counter moved: the forward wrote to them in place (a lazy
        layer's parameters, made by the forward, are not counted). Worked out once: leaving a guard with
        ``keep_buffers_after_param_writes`` keeps its answer, given back from then on."""
        if self._changed is not None:
            return self._changed
        now = _versions(self._params)
        changed = {id(p) for p, v, w in zip(self._params, self._versions, now) if v is not None and w != v}
        changed -= self._lazy
        if not changed:
            return []
        out: list[str] = []
        for m, names in zip(self.index.modules, self.index.names):
            for n, p in m._parameters.items():
                if p is not None and id(p) in changed:
                    changed.discard(id(p))  # named once, where first registered
                    out.append(f"{names[0]}.{n}" if names[0] else n)
        return out
