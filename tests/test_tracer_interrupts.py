"""A ``KeyboardInterrupt`` arriving anywhere in a trace's teardown leaves no global state changed.

Each case runs ``shapetrace.trace`` once per line of the teardown (every line event in the tracer modules that
undo a trace's state, after the traced forward returned), raising ``KeyboardInterrupt`` from ``sys.settrace`` at that line,
and checks torch's global hook registries, the grad mode, the recursion limit, the torch function-mode stack
and the garbage collector afterwards. Line events of ``try:`` and ``with`` statements are skipped: CPython 3.11
reports one for a ``try:``'s no-op instruction and one for a ``with`` block's end before its ``__exit__`` is
called, both outside the frame's exception table, so an exception a trace function raises there escapes every
handler of the frame (a ``with lock:`` would stay locked); a real interrupt cannot arrive there (the
interpreter looks for signals at calls and backward jumps, not at those instructions).
"""

from __future__ import annotations

import gc
import linecache
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.modules import module as torch_module

import shapetrace
from shapetrace.tracer import engine

# The modules that set up and undo a trace's state (the probes' and the records' own lines are not counted).
TEARDOWN = {"api.py", "capture.py", "cleanup.py", "engine.py", "guard.py", "placement.py", "attributes.py"}
_REGISTRIES = [name for name in dir(torch_module) if name.startswith("_global_")
               and name.endswith(("hooks", "hooks_always_called", "hooks_with_kwargs"))]


@pytest.fixture(autouse=True)
def every_trace_round_trips():
    """Not here: the traces of the interrupted runs are thrown away (and there are hundreds of them)."""


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.lin = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2)
        self.returned = False

    def forward(self, x):
        out = self.lin(self.bn(self.conv(x)).mean((2, 3)))
        self.returned = True  # the line events after this one are the teardown's
        return out


def _global_state() -> dict:
    return {"hooks": {name: len(getattr(torch_module, name)) for name in _REGISTRIES
                      if isinstance(getattr(torch_module, name), dict)},
            "grad": torch.is_grad_enabled(), "recursion limit": sys.getrecursionlimit(),
            "function modes": torch._C._len_torch_function_stack(), "gc": gc.isenabled(),
            "engines": dict(engine._ACTIVE)["engines"]}


def _interrupted(model: _Net, at: int, options: dict) -> str | None:
    """Trace ``model``, raising ``KeyboardInterrupt`` at the ``at``-th line event of the teardown; where it
    was raised (``None``: the teardown has fewer lines)."""
    seen, where = [0], []

    def local(frame, event, arg):
        if event == "line" and model.returned:
            line = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
            if not line.startswith(("try:", "with ")):
                seen[0] += 1
                if seen[0] == at:
                    where.append(f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno} {line}")
                    raise KeyboardInterrupt
        return local

    building = [False]  # inside Tracer._finish (building the records, not undoing anything): not counted

    def finish(frame, event, arg):
        if event == "return":
            building[0] = False
        return finish

    def call(frame, event, arg):
        code = frame.f_code
        if building[0] or Path(code.co_filename).name not in TEARDOWN:
            return None
        if code.co_name == "_finish":
            building[0] = True
            return finish
        return local

    model.returned = False
    sys.settrace(call)
    try:
        shapetrace.trace(model, torch.randn(2, 3, 8, 8), **options)
    except KeyboardInterrupt:
        pass
    finally:
        sys.settrace(None)
    return where[0] if where else None


# The plain trace's sweep runs in `make test`; the ops and meta teardowns (longer, about 14 s) in `make test-all`.
@pytest.mark.parametrize("options", [{}, pytest.param({"ops": True}, marks=pytest.mark.slow),
                                     pytest.param({"device": "meta"}, marks=pytest.mark.slow)],
                         ids=["plain", "ops", "meta"])
def test_an_interrupt_anywhere_in_the_teardown_leaves_no_global_state_changed(options):
    model = _Net().eval()
    shapetrace.trace(model, torch.randn(2, 3, 8, 8), **options)  # one-time set-up (imports, caches) done untraced
    before = _global_state()
    changed = []
    for at in range(1, 2000):
        where = _interrupted(model, at, options)
        if where is None:
            break
        after = _global_state()
        if after != before:
            changed.append((where, {k: (before[k], after[k]) for k in before if before[k] != after[k]}))
            torch.set_grad_enabled(before["grad"])  # so that the next points are judged on their own
    assert at > 20  # the teardown was reached
    assert changed == []
