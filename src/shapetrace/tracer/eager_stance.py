"""torch's "force_eager" stance, held for the process while any trace needs it, and given back as it was found.

``torch.compiler.set_stance`` sets one value for the whole process, and leaving a ``set_stance`` puts back the
stance seen when it was entered. Traces running in two threads at once (supported: each thread traces by itself)
end in any order, so each entering and leaving a stance of its own would leave the wrong one behind: the first
to end would restore the default under the other, the last would put back ``force_eager`` for good. Instead the
traces share one hold, counted under a lock: the first to need it saves the user's stance and sets
``force_eager``; the others only join; the last to leave puts back exactly the stance the first one saved.

No stance can be set inside a ``torch.compile`` region (torch raises, and Dynamo refuses to trace the call): a
trace started there (a compiled function calling ``shapetrace.trace``) neither takes nor joins the hold, and keeps
its hooks from Dynamo another way (see ``Engine._keep_hooks_from_dynamo``).
"""

from __future__ import annotations

import threading
from typing import Any

import torch

__all__ = ["EagerHold", "in_compiled_region"]

_LOCK = threading.Lock()
# holders: the holds taken and not given back; stance: the set_stance object whose exit puts back the stance
# found by the first holder (None while nobody holds it).
_HOLD: dict[str, Any] = {"holders": 0, "stance": None}


def in_compiled_region() -> bool:
    """Whether code running now in this thread is compiled or traced by Dynamo (where no stance may be set):
    Dynamo tracing it (``torch.compiler.is_compiling()``) or a compiled frame's callback set in this thread."""
    if torch.compiler.is_compiling():
        return True
    get_callback = getattr(getattr(torch._C, "_dynamo", None), "eval_frame", None)
    get_callback = getattr(get_callback, "get_eval_frame_callback", None)
    if get_callback is None:  # a torch without it: set_stance itself says so (a RuntimeError)
        return False
    callback = get_callback()
    return callback is not None and callback is not False


class EagerHold:
    """One trace's share of the process-wide ``force_eager`` stance: ``take`` joins (or starts) the hold, ``give_back``
    leaves it, once, whenever it is called (again after an interrupted call: it finishes what that one left)."""

    def __init__(self) -> None:
        self.held = False

    def take(self) -> bool:
        """Hold ``force_eager`` (setting it if nobody does yet); whether compiled code now runs eagerly here.
        ``False`` inside a compiled region, or where torch has no stances."""
        set_stance = getattr(torch.compiler, "set_stance", None)
        if set_stance is None or in_compiled_region():
            return False
        with _LOCK:
            if self.held:
                return True
            if _HOLD["stance"] is None:
                try:
                    _HOLD["stance"] = set_stance("force_eager")  # keeps the stance it replaced, to put back
                except RuntimeError:  # "attempted to set_stance in a torch.compile region"
                    return False
            _HOLD["holders"], self.held = _HOLD["holders"] + 1, True
        return True

    def give_back(self) -> None:
        """Leave the hold; the last holder to leave puts back the stance the first one found (that object)."""
        with _LOCK:
            if self.held:
                _HOLD["holders"], self.held = _HOLD["holders"] - 1, False
            stance = _HOLD["stance"]
            if _HOLD["holders"] == 0 and stance is not None:
                stance.__exit__(None, None, None)
                _HOLD["stance"] = None
