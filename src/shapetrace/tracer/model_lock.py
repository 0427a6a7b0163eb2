"""``model_lock``: one lock per model, so that traces of the same model in two threads run one after the other.

A trace changes the model while its forward runs (training flags, grad mode, buffers a BatchNorm updates, layers
built on the first call) and puts it all back afterwards (``ModelGuard``). Two traces of one model at once would
each save what the other had already changed, and put back in the wrong order: the model left in training mode,
its running statistics updated. So a guard holds its model's lock from entering to putting the last thing back;
another thread's trace of the same model waits for it. Traces of different models still run at once.

The lock is re-entrant for the thread holding it (a ``Tracer`` inside a ``Tracer`` of the same model, ``trace()``
called inside a forward), and any thread may release it (a ``Tracer`` entered in one thread and left in another).
Held per model object, weakly: a model that is dropped drops its lock.
"""

from __future__ import annotations

import threading
import time
import weakref

from .user_warnings import warn_user

__all__ = ["PATIENCE_S", "ModelLock", "model_lock"]

# How long a trace waits for another thread's trace of the same model before it warns that it is waiting.
PATIENCE_S = 10.0


def _thread_name(ident: int | None) -> str:
    return next((t.name for t in threading.enumerate() if t.ident == ident), str(ident))


class ModelLock:
    """A lock its holding thread may take again (released when as many releases came), released by any thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._owner: int | None = None
        self._depth = 0

    def acquire(self, patience_s: float = PATIENCE_S) -> None:
        """Take the lock, waiting while another thread holds it; past ``patience_s`` of waiting, warn once, naming
        that thread (a wait that never ends is a thread waiting, inside its own trace of the model, for this one:
        the warning says why the program stopped)."""
        me = threading.get_ident()
        waited, warned = 0.0, False
        with self._cond:
            while self._owner is not None and self._owner != me:
                step = patience_s if not warned else None
                start = time.monotonic()
                self._cond.wait(step)
                waited += time.monotonic() - start
                if not warned and waited >= patience_s and self._owner not in (None, me):
                    warned = True
                    warn_user(f"this trace has waited {waited:.0f} s for another trace of the same model, in thread "
                              f"{_thread_name(self._owner)!r}, to end: traces of one model take turns. If that thread "
                              "is waiting for this one (a trace started inside a Tracer block and awaited there), "
                              "neither can go on: trace a copy of the model (copy.deepcopy) in one of them")
            self._owner, self._depth = me, self._depth + 1

    def release(self) -> None:
        """Give back one ``acquire``; the last wakes a thread waiting for the lock."""
        with self._cond:
            if self._depth == 0:
                raise RuntimeError("release of a ModelLock that is not held")
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._cond.notify()

    @property
    def held(self) -> bool:
        """Whether some thread holds the lock."""
        return self._owner is not None


# id(model) -> (a weak reference to the model, its lock). By id rather than a WeakKeyDictionary: a module class
# may define __eq__ without __hash__.
_LOCKS: dict[int, tuple[weakref.ref, ModelLock]] = {}
_LOCKS_LOCK = threading.RLock()  # re-entrant: a model's weak-reference callback may run inside ``model_lock``


def model_lock(model: object) -> ModelLock:
    """The lock of ``model`` (made on first use, dropped with the model)."""
    key = id(model)
    with _LOCKS_LOCK:
        known = _LOCKS.get(key)
        if known is not None and known[0]() is model:
            return known[1]
        lock = ModelLock()

        def forget(_: weakref.ref, key: int = key, lock: ModelLock = lock) -> None:
            with _LOCKS_LOCK:
                if key in _LOCKS and _LOCKS[key][1] is lock:
                    del _LOCKS[key]

        _LOCKS[key] = (weakref.ref(model, forget), lock)
        return lock
