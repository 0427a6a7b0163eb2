"""Building the gallery's models on PyTorch's ``meta`` device without the work that changes nothing there.

A model built under ``torch.device("meta")`` has parameters with shapes and no values, yet building it still
does two costly things. Weight initialisation fills every parameter with random numbers, which on ``meta``
costs about a millisecond a tensor (torch's Python meta kernels) and leaves nothing behind. And some builders
run the model while building it: ``DynamicUnet`` runs its encoder, the middle convs and each decoder block on a
dummy image to size the decoder, through the same Python meta kernels that tracing on ``meta`` avoids with
shape formulas (``tracer/shape_rules.py``: 2 ms for a batch norm, against microseconds for its formula).

``MetaShortcuts`` is a ``TorchFunctionMode`` for the build: weight initialisation of a ``meta`` tensor
(``Tensor.normal_``, ``uniform_``, ``fill_``, ``zero_`` and the ``nn.init`` functions that dispatch themselves)
returns the tensor unchanged, and any call a shape rule answers is answered by it, as ``ShapeOnlyMode`` does
while tracing. Everything else, and every call on real tensors, goes to torch unchanged; a rule that does not
fully understand a call leaves it to torch too, which raises torch's own error for a call that is wrong. The
model built is the same module tree with the same shapes: ``tests/test_gallery_meta_shortcuts.py`` checks that
every exhibit's trace is the same JSON with and without it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from ..tracer.shape_rules import rule_for

__all__ = ["MetaShortcuts"]

# Weight initialisation: each returns the tensor it fills. Kept by id, so that a function some tool has wrapped
# (torchlens rebinds torch's functions and marks each wrapper with ``__tl_original_id__``) is still recognised.
_INITIALISERS = (torch.Tensor.normal_, torch.Tensor.uniform_, torch.Tensor.fill_, torch.Tensor.zero_,
                 torch.nn.init.normal_, torch.nn.init.uniform_, torch.nn.init.constant_, torch.nn.init.kaiming_uniform_)
_INITIALISATION = frozenset({id(f) for f in _INITIALISERS}
                            | {f.__tl_original_id__ for f in _INITIALISERS if hasattr(f, "__tl_original_id__")})
_NO_KWARGS: dict = {}


def _initialises(func: Callable) -> bool:
    return id(func) in _INITIALISATION or getattr(func, "__tl_original_id__", None) in _INITIALISATION


class MetaShortcuts(TorchFunctionMode):
    """Skips weight initialisation of ``meta`` tensors and answers with the tracer's shape rules the calls they
    understand, while a model is built (see the module docstring); passes everything else to torch."""

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if _initialises(func):
            tensor = args[0] if args else (kwargs or _NO_KWARGS).get("tensor")  # nn.init passes it by name
            if isinstance(tensor, torch.Tensor) and tensor.is_meta:
                return tensor
        rule = rule_for(func)
        if rule is not None:
            out = rule(args, kwargs or _NO_KWARGS)
            if out is not None:
                return out
        return func(*args, **(kwargs or _NO_KWARGS))
