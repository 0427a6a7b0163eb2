"""``ModelGuard``: leave a model as it was found after a forward run for measuring, whatever happened.

Entering saves each module's ``training`` flag, every buffer's values (a trace in training mode updates
BatchNorm's running statistics), every parameter's ``requires_grad`` flag and version counter, sets the
requested training mode and grad mode; leaving puts the flags, buffers and grad mode back, even when the
forward raised or was interrupted.
Parameters are not copied (that would double a large model's memory): ``changed_params()`` names those the
forward wrote in place, from their version counters.

A forward can also *register* things on the model: assign a new tensor to a buffer (``self.steps =
self.steps + 1``), a new ``Parameter``, a submodule built on the first call. torch's registration hooks
tell the guard of each, before it happens, so it keeps what each name held and puts it back on leaving
(``restored`` lists the names): nothing is copied for a forward that registers nothing. With ``placed``
(the model runs with tensor copies swapped in, ``placement.placed``) a parameter or buffer name that held
something is left to the placement, which puts back the tensors it swapped; modules are put back here. With ``keep_registrations`` leaving keeps
them until ``put_back_registrations()`` (the tracer counts parameters first, as they were in the
forward). Removals (``del self.layer``) and writes straight into ``_parameters`` or ``_buffers`` go past
torch's hooks and are left as the forward left them.
"""

from __future__ import annotations

import contextlib
from types import TracebackType
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as torch_module

from .engine import ModuleIndex

__all__ = ["ModelGuard"]

_ABSENT = object()  # "this name held nothing before the forward"


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


class ModelGuard:
    """Save and restore a model's state around a forward (see the module docstring)."""

    def __init__(self, index: ModuleIndex, *, train: bool | None = None, grad: bool = False,
                 placed: bool = False, keep_registrations: bool = False) -> None:
        self.index = index
        self.train = train
        self.grad = grad
        self.placed = placed
        self.keep_registrations = keep_registrations
        self.restored: list[str] = []  # names the forward registered anew, put back on leaving

    def __enter__(self) -> ModelGuard:  # noqa: PYI034 - typing.Self needs Python 3.11
        modules = self.index.modules
        self._training = [m.training for m in modules]
        # Every parameter and buffer, a tensor registered twice listed twice (harmless for both uses).
        self._params = [p for m in modules for p in m._parameters.values() if p is not None]
        self._versions = _versions(self._params)
        self._requires_grad = [p.requires_grad for p in self._params]
        # A copy of every buffer, written back after the forward. Version counters cannot say which buffers
        # changed: BatchNorm's kernel updates its running statistics without bumping them.
        self._live = [b for m in modules for b in m._buffers.values() if b is not None]
        with torch.no_grad():
            self._saved = list(torch._foreach_clone(self._live)) if self._live else []
        self._grad = contextlib.ExitStack()
        # What each (module, registry, name) held before the forward first registered something there.
        self._before: dict[tuple[int, str, str], tuple[nn.Module, str, str, Any]] = {}
        # A module's non-persistent buffer names, kept when the forward first registers a buffer on it.
        self._persistence: dict[int, tuple[nn.Module, set[str]]] = {}
        self._found = len(self.index)  # slots indexed before the forward (the index can grow during it)
        try:
            for register, registry in ((torch_module.register_module_parameter_registration_hook, "_parameters"),
                                       (torch_module.register_module_buffer_registration_hook, "_buffers"),
                                       (torch_module.register_module_module_registration_hook, "_modules")):
                self._grad.callback(register(self._registering(registry)).remove)
            if self.train is not None:
                self.index.model.train(self.train)
            self._grad.enter_context(torch.set_grad_enabled(self.grad))
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        self._restore()
        return False

    def _registering(self, registry: str) -> Any:
        """A registration hook for ``registry`` (``_parameters``, ``_buffers``, ``_modules``) that keeps what
        a name of a module found before the forward held, the first time the forward registers it."""
        before, persistence, slot_of = self._before, self._persistence, self.index.slot_of

        def hook(module: nn.Module, name: str, value: Any) -> None:
            slot = slot_of.get(id(module))
            if slot is None or slot >= self._found or (id(module), registry, name) in before:
                return
            held = module.__dict__.get(registry)
            before[(id(module), registry, name)] = (
                module, registry, name, held.get(name, _ABSENT) if held is not None else _ABSENT)
            if registry == "_buffers" and id(module) not in persistence:
                persistence[id(module)] = (module, set(getattr(module, "_non_persistent_buffers_set", ())))

        return hook

    def put_back_registrations(self) -> None:
        """Give every name the forward registered anew what it held before (see the module docstring); once
        only, by ``__exit__`` unless ``keep_registrations``."""
        before, self._before = getattr(self, "_before", {}), {}
        persistence, self._persistence = getattr(self, "_persistence", {}), {}
        for module, held in persistence.values():  # which of its buffers a module leaves out of state_dict
            kept = getattr(module, "_non_persistent_buffers_set", None)
            if isinstance(kept, set) and kept != held:
                kept.clear()
                kept.update(held)
        rnns = []
        for module, registry, name, held in before.values():
            entries = module.__dict__[registry]
            if self.placed and held is not _ABSENT and registry != "_modules":
                continue  # a tensor copy swapped in by name: the placement puts the original back
            if held is _ABSENT:
                if name not in entries:
                    continue
                del entries[name]
            elif entries.get(name, _ABSENT) is not held:
                entries[name] = held
            else:
                continue
            prefix = self.index.names[self.index.slot_of[id(module)]][0]
            self.restored.append(f"{prefix}.{name}" if prefix else name)
            if registry == "_parameters" and isinstance(module, nn.RNNBase) and module not in rnns:
                rnns.append(module)
        for rnn in rnns:  # an RNN keeps its own list of its weights, read by its kernel: rebuilt from the names
            rebuild = getattr(rnn, "_init_flat_weights", None)
            if rebuild is not None:
                rebuild()

    def _restore(self) -> None:
        try:
            self._grad.close()
            if not self.keep_registrations:
                self.put_back_registrations()
        finally:
            for m, was in zip(self.index.modules, self._training):
                if m.training != was:  # Module.__setattr__ is slow: set only what changed
                    m.training = was
            params, flags = getattr(self, "_params", []), getattr(self, "_requires_grad", [])
            if [p.requires_grad for p in params] != flags:  # a forward that froze or unfroze parameters
                for p, was in zip(params, flags):
                    if p.requires_grad != was:
                        p.requires_grad_(was)
            live, saved = getattr(self, "_live", []), getattr(self, "_saved", [])
            self._live, self._saved = [], []
            # With autograd on, the output's graph may hold buffers (BatchNorm's running statistics) and checks
            # their version counters in backward: the values go back through ``.data``, which leaves them alone.
            into = [b.data for b in live] if self.grad else live
            with torch.no_grad():
                try:
                    torch._foreach_copy_(into, saved)  # one call for all (the common case: nothing resized)
                except RuntimeError:  # a buffer resized in place (resize_, set_): its own storage back as it was
                    for b, target, copy in zip(live, into, saved):
                        if b.shape == copy.shape and b.stride() == copy.stride() and b.device == copy.device:
                            target.copy_(copy)
                        else:
                            with contextlib.suppress(RuntimeError):  # its dtype changed too (`.data =`): left
                                b.set_(copy)

    def changed_params(self) -> list[str]:
        """Names of the parameters whose version counter moved: the forward wrote to them in place."""
        now = _versions(self._params)
        changed = {id(p) for p, v, w in zip(self._params, self._versions, now) if v is not None and w != v}
        if not changed:
            return []
        out: list[str] = []
        for m, names in zip(self.index.modules, self.index.names):
            for n, p in m._parameters.items():
                if p is not None and id(p) in changed:
                    changed.discard(id(p))  # named once, where first registered
                    out.append(f"{names[0]}.{n}" if names[0] else n)
        return out
