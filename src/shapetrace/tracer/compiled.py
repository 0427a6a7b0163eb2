"""What of a model ``torch.compile`` compiled, seen without running it, and whether Dynamo is in the process at all.

Dynamo compiles a module three ways a static look can see: a wrapper (``OptimizedModule``, ``torch.compile(m)``),
``module.compile()`` (an instance attribute ``_compiled_call_impl``) and a compiled *function* as the module's
forward (``@torch.compile`` on the class's ``forward``, ``m.forward = torch.compile(m.forward)``). Every callable
Dynamo wraps to compile carries the callable it wraps in ``_torchdynamo_orig_callable``; the wrappers of
``torch.compiler.disable`` carry it too, and are marked ``_torchdynamo_disable``.

A compiled function called *inside* a forward (a helper module-level ``torch.compile``'d, which may call the
model's layers) is seen by no static look. What is cheap instead: nothing can be compiled in a process where
``torch.compile`` was never used, which ``compile_used`` tells (loading Dynamo is not using it: torchvision and
transformers load it in most processes that never compile). So a trace makes sure Dynamo never compiles its hooks
where a static look found a compiled part or ``compile_used`` says yes, and leaves torch alone elsewhere.
"""

from __future__ import annotations

import sys
from types import FunctionType
from typing import Any

__all__ = ["compile_used", "compiled_forward", "compiled_forward_of_class", "dynamo_loaded", "is_compiled_callable"]


def dynamo_loaded() -> bool:
    """Whether Dynamo (``torch._dynamo``, which ``torch.compile`` imports) is loaded in this process: if not,
    nothing in it has been compiled, nor can run compiled."""
    return "torch._dynamo" in sys.modules


def compile_used() -> bool:
    """Whether ``torch.compile`` has made something to compile in this process (since Dynamo's last reset).

    Dynamo is loaded in most processes that never compile (torchvision and transformers import it), and its
    record of the backends of the compile contexts it made (``eval_frame.cached_backends``) tells the two
    apart: ``torch.compiler.disable`` leaves ``None`` there, ``torch.compile`` a backend. ``torch._dynamo.reset()``
    clears it, and a function compiled before runs (and compiles again) without putting its backend back; Dynamo's
    count of the frames it compiled (``counters["frames"]``), which a reset keeps, still says so. Left unseen: a
    function compiled, then reset before it ever ran. Where torch keeps no such record, the answer is yes."""
    if not dynamo_loaded():
        return False
    backends = getattr(sys.modules.get("torch._dynamo.eval_frame"), "cached_backends", None)
    if not isinstance(backends, dict):
        return True
    if any(backend is not None for backend in list(backends.values())):
        return True
    counters = getattr(sys.modules.get("torch._dynamo.utils"), "counters", None)
    frames = counters.get("frames") if isinstance(counters, dict) else None
    return bool(frames) and any(list(frames.values()))


def is_compiled_callable(fn: Any) -> bool:
    """Whether ``fn`` is a function Dynamo compiles when it is called (``torch.compile(f)``), not one it was told
    to leave alone (``torch.compiler.disable(f)``). Dynamo's wrappers are plain functions that keep these marks in
    their ``__dict__``, read here without running any attribute lookup of ``fn``'s own."""
    if not isinstance(fn, FunctionType):
        return False
    attrs = fn.__dict__
    return attrs.get("_torchdynamo_orig_callable") is not None and not attrs.get("_torchdynamo_disable", False)


def compiled_forward(module: Any) -> bool:
    """Whether ``module``'s forward is a function compiled by ``torch.compile``: set on the instance
    (``m.forward = torch.compile(m.forward)``) or on its class (``@torch.compile`` over ``def forward``)."""
    own = getattr(module, "__dict__", {}).get("forward")
    if own is not None:
        return is_compiled_callable(own)
    return compiled_forward_of_class(type(module))


def compiled_forward_of_class(cls: type) -> bool:
    """Whether the ``forward`` ``cls`` defines or inherits is a function compiled by ``torch.compile``."""
    for base in cls.__mro__:
        forward = base.__dict__.get("forward")
        if forward is not None:
            return is_compiled_callable(forward)
    return False
