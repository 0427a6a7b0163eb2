"""Functional operations between modules (``torch.cat``, ``+``, ``F.interpolate``, ``view``, indexing, ...).

``OpRecorder`` is a ``TorchFunctionMode``: every torch function and tensor method called while a trace
runs passes through it. Ops run in the forward code of a container module (one with children), or outside
every module, become ``Op`` records with data-flow edges; ops inside a leaf module (the ``F.conv2d`` of a
``Conv2d``) are that module's own implementation and are not recorded, but the tensors they touch are
still checked for side inputs (a tensor the module reads from an attribute rather than its arguments).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch.overrides import TorchFunctionMode

from .values import iter_live_tensors

if TYPE_CHECKING:
    from .hooks import Tracer

# Tensor methods that only read metadata or convert to Python: never data flow.
_SKIP = {
    "size", "dim", "numel", "stride", "storage_offset", "is_contiguous", "data_ptr", "element_size",
    "__len__", "__repr__", "__format__", "__bool__", "__int__", "__float__", "__index__", "item", "tolist",
    "__hash__", "is_floating_point", "is_complex", "get_device", "__contains__", "__iter__",
    "has_names", "__reduce_ex__", "__deepcopy__", "__setstate__", "numpy", "__array__", "untyped_storage",
    "_is_view", "is_set_to", "__dlpack__", "nelement", "ndimension", "type",
}
# Ops that write into their first argument and return it (or None).
_INPLACE_DUNDER = {
    "__iadd__": "add_", "__isub__": "sub_", "__imul__": "mul_", "__itruediv__": "div_",
    "__ifloordiv__": "floor_divide_", "__imod__": "remainder_", "__ipow__": "pow_", "__iand__": "bitwise_and_",
    "__ior__": "bitwise_or_", "__ixor__": "bitwise_xor_", "__ilshift__": "bitwise_left_shift_",
    "__irshift__": "bitwise_right_shift_", "__imatmul__": "matmul_",
}


def op_name(func: Any) -> str:
    """A readable name for a torch function or tensor method: ``__add__`` -> ``add``."""
    name = getattr(func, "__name__", None) or type(func).__name__
    if name in _INPLACE_DUNDER:
        return _INPLACE_DUNDER[name]
    if name == "__getitem__":
        return "getitem"
    if name == "__setitem__":
        return "setitem"
    if name.startswith("__r") and name.endswith("__") and len(name) > 5:
        return name[3:-2]  # __radd__ -> add
    if name.startswith("__") and name.endswith("__"):
        return name[2:-2]
    return name


def _is_inplace(name: str, raw: str) -> bool:
    return raw in _INPLACE_DUNDER or raw == "__setitem__" or (name.endswith("_") and not name.startswith("_"))


# Modules with a fused fast path that torch skips whenever a TorchFunctionMode is active (their
# forward checks ``torch.overrides.has_torch_function``). The recorder steps aside when such a module is
# called, so a trace shows the path that really runs; if the module then calls a sub-module (it took its
# slow path after all), the recorder steps back in at that call.
FAST_PATH_MODULES: tuple[type, ...] = (torch.nn.TransformerEncoderLayer, torch.nn.TransformerEncoder,
                                       torch.nn.MultiheadAttention)


class OpRecorder(TorchFunctionMode):
    """The ``TorchFunctionMode`` that feeds functional ops to a ``Tracer``."""

    def __init__(self, tracer: Tracer) -> None:
        super().__init__()
        self.tracer = tracer
        self._stepped_aside_for: int | None = None  # the call during which the mode is off the stack

    def step_aside(self, call_id: int) -> None:
        """Take this mode off torch's function-mode stack until ``step_back(call_id)``."""
        if self._stepped_aside_for is not None or torch.overrides._get_current_function_mode() is not self:
            return
        torch._C._pop_torch_function_stack()
        self._stepped_aside_for = call_id

    def step_back(self, call_id: int | None = None) -> None:
        """Put the mode back (when ``call_id`` is the call it stepped aside for, or unconditionally)."""
        if self._stepped_aside_for is None or (call_id is not None and call_id != self._stepped_aside_for):
            return
        torch._C._push_on_torch_function_stack(self)
        self._stepped_aside_for = None

    def __exit__(self, *exc: object) -> None:
        self.step_back()  # a forward interrupted inside a fast-path module: restore the stack first
        super().__exit__(*exc)

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        raw = getattr(func, "__name__", "")
        if raw in _SKIP or raw == "__get__" or raw == "__set__":
            return out
        try:
            self._record(func, raw, args, kwargs, out)
        except Exception as e:  # noqa: BLE001 - a tracer bug must never break the user's forward
            self.tracer.tracer_errors.append(f"op {raw}: {e!r}")
        return out

    def _record(self, func: Any, raw: str, args: tuple, kwargs: dict, out: Any) -> None:
        tracer = self.tracer
        inner = tracer.innermost
        name = op_name(func)
        inplace = _is_inplace(name, raw)
        target = args[0] if inplace and args and isinstance(args[0], torch.Tensor) else None
        if inner is not None and inner.is_leaf:
            tracer.note_leaf_inputs((args, kwargs))
            if target is not None:
                # A leaf changing a tensor it was handed in place: the value after is the leaf's.
                tid = tracer._ids.lookup(target)
                if tid is not None and tracer._ids.produced_at.get(tid, -1) < inner.call.start:
                    tracer._ids.new(target, f"call:{inner.call.id}", tracer._order)
            return
        has_tensor_out = target is not None or next(iter_live_tensors(out), None) is not None
        if not has_tensor_out:
            return
        call_args = list(args) + ([kwargs] if kwargs else [])
        tracer.record_op(name, call_args, None if target is not None and out is None else out, target)
