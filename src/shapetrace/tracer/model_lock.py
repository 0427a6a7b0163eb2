"""``ModelLock``: traces whose models share modules, in two threads, run one after the other.

A trace changes the model while its forward runs (training flags, grad mode, buffers a BatchNorm updates, layers
built on the first call) and puts it all back afterwards (``ModelGuard``). Two traces at once of one model, or of
a model and one of its submodules (``trace(model)`` in one thread, ``trace(model[1])`` in another), would each
save what the other had already changed, and put back in the wrong order: the shared modules left in training
mode, their running statistics updated. So a guard holds a lock on every module it guards (``ModelLock``, made
from the trace's module index) from entering to putting the last thing back, and another thread's guard whose
modules overlap those waits for it. Traces of models that share no module still run at once.

Locking is all or nothing: a guard takes every one of its modules at once, when no other thread holds any of
them, so two guards can never each hold part of what the other waits for. A guard may take modules its own
thread holds already (a ``Tracer`` inside a ``Tracer`` of the same model, ``trace()`` called inside a forward,
a trace of a submodule inside a trace of the model), and any thread may release a hold (a ``Tracer`` entered in
one thread and left in another). The cost is a few set operations per trace, none per module call.

Two asyncio tasks of one thread cannot take turns this way: the second would block the thread the first needs
to finish. A guard whose modules another task of its own thread holds (two ``Tracer`` blocks of one model held
across an ``await``) is refused at once (``ModelBusy``), rather than saving what the other changed.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable

from .user_warnings import warn_user

__all__ = ["PATIENCE_S", "ModelBusy", "ModelLock", "model_lock"]


class ModelBusy(RuntimeError):
    """Another asyncio task of this thread holds a trace of (some of) these modules: they cannot take turns."""


def _owner() -> tuple[int, int | None]:
    """Who takes a hold: this thread, and the asyncio task running in it, if any (``None`` when asyncio was never
    imported: no task can be running)."""
    task = None
    asyncio = sys.modules.get("asyncio")
    if asyncio is not None:
        try:
            task = asyncio.current_task()
        except RuntimeError:  # no event loop running in this thread
            task = None
    return threading.get_ident(), (id(task) if task is not None else None)


# How long a trace waits for another thread's trace of the same modules before it warns that it is waiting.
PATIENCE_S = 10.0

# The holds in force, one per acquire not released yet: [owner (thread ident, asyncio task id or None), module
# ids, the lock]. Few at any time (one per trace running), so a waiting guard looks at each.
_HOLDS: list[tuple[tuple[int, int | None], frozenset[int], ModelLock]] = []
_CHANGED = threading.Condition(threading.Lock())  # guards _HOLDS; notified whenever a hold is released


def _thread_name(ident: int | None) -> str:
    return next((t.name for t in threading.enumerate() if t.ident == ident), str(ident))


def _blocker(ids: frozenset[int], me: tuple[int, int | None]) -> int | None:
    """The thread of a hold by another thread on some of ``ids`` (``_CHANGED`` held), else ``None``; ``ModelBusy``
    for a hold by another asyncio task of this thread."""
    for owner, held, _ in _HOLDS:
        if owner != me and not ids.isdisjoint(held):
            if owner[0] != me[0]:
                return owner[0]
            if owner[1] is not None and me[1] is not None:
                raise ModelBusy("another asyncio task of this thread is tracing this model (a Tracer block held "
                                "across an await): two traces of one model cannot overlap, and tasks of one thread "
                                "cannot wait for each other here. Trace one task at a time, or trace a copy of the "
                                "model (copy.deepcopy) in one of them")
    return None


class ModelLock:
    """A lock on a set of modules (by id: the guard keeps them alive while it holds them). Its thread may take
    it again, or take modules it holds already through another lock; any thread may release it."""

    def __init__(self, modules: Iterable[object]) -> None:
        self._ids = frozenset(map(id, modules))

    def acquire(self, patience_s: float = PATIENCE_S) -> None:
        """Take every module at once, waiting while another thread holds any of them; past ``patience_s`` of
        waiting, warn once, naming that thread (a wait that never ends is a thread waiting, inside its own trace
        of these modules, for this one: the warning says why the program stopped)."""
        me, ids = _owner(), self._ids
        waited, warned = 0.0, False
        with _CHANGED:
            while (other := _blocker(ids, me)) is not None:
                start = time.monotonic()
                _CHANGED.wait(patience_s if not warned else None)
                waited += time.monotonic() - start
                if not warned and waited >= patience_s and (other := _blocker(ids, me)) is not None:
                    warned = True
                    warn_user(f"this trace has waited {waited:.0f} s for another trace of the same model (or of a "
                              f"model sharing modules with it), in thread {_thread_name(other)!r}, to end: traces "
                              "of one model take turns. If that thread is waiting for this one (a trace started "
                              "inside a Tracer block and awaited there), neither can go on: trace a copy of the "
                              "model (copy.deepcopy) in one of them")
            _HOLDS.append((me, ids, self))

    def release(self) -> None:
        """Give back one ``acquire`` of this lock (the calling thread's last, else any); wakes waiting threads."""
        me = _owner()
        with _CHANGED:
            mine = [i for i, (_, _, lock) in enumerate(_HOLDS) if lock is self]
            if not mine:
                raise RuntimeError("release of a ModelLock that is not held")
            own = [i for i in mine if _HOLDS[i][0] == me] or [i for i in mine if _HOLDS[i][0][0] == me[0]]
            del _HOLDS[(own or mine)[-1]]
            _CHANGED.notify_all()

    @property
    def held(self) -> bool:
        """Whether some thread holds any of these modules (through this lock or another)."""
        with _CHANGED:
            return any(not self._ids.isdisjoint(held) for _, held, _ in _HOLDS)


def model_lock(model: object) -> ModelLock:
    """A lock on ``model`` and every module under it (``model.modules()`` when it has that method)."""
    modules = getattr(model, "modules", None)
    return ModelLock(modules() if callable(modules) else (model,))
