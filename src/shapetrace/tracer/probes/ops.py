"""``OpProbe``: functional operations between modules (``torch.cat``, ``+``, ``F.interpolate``, ``view``, ...).

The probe enters a ``TorchFunctionMode`` (``OpRecorder``): every torch function and tensor method called
while a trace runs passes through it and is handed to the trace's ``DataFlow``. Ops run in the forward code
of a container module (one with children), or outside every module, become ``Op`` records with data-flow
edges; ops inside a leaf module (the ``F.conv2d`` of a ``Conv2d``) are that module's own implementation and
are not recorded, but the tensors they touch are still checked for side inputs (a tensor the module reads
from an attribute rather than its arguments). A tensor property that is data flow (``k.T``, ``z.real``,
``x.data``: ``TENSOR_PROPERTIES``) is an op named after it; other property reads (``.shape``, ``.grad``) are not.

Only what can be a side input is looked at: a leaf layer built into ``torch.nn`` (``Conv2d``, ``Linear``,
``BatchNorm2d``, ``LSTM``, ...) reads nothing but its arguments and its own parameters and buffers, so the
recorder steps aside (leaves torch's function-mode stack) for the length of such a call and its ops cost
nothing extra. A user-defined leaf is watched op by op. A user-defined leaf traced by itself (the
outermost call: ``shapetrace lines my_layer.py:Attention``) has its ops recorded like a container's: its
forward is the code being looked at, so the line-by-line view shows the shape each of its lines makes and
a diagram draws what it does. Inside a model, leaves stay boxes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..engine import Engine, Probe
from ..flow import DataFlow
from ..values import iter_live_tensors

# Tensor methods that only read metadata or convert to Python: never data flow.
_SKIP = {
    "size", "dim", "numel", "stride", "storage_offset", "is_contiguous", "data_ptr", "element_size",
    "__len__", "__repr__", "__format__", "__bool__", "__int__", "__float__", "__index__", "item", "tolist",
    "__hash__", "is_floating_point", "is_complex", "get_device", "__contains__", "__iter__",
    "has_names", "__reduce_ex__", "__deepcopy__", "__setstate__", "numpy", "__array__", "untyped_storage",
    "_is_view", "is_set_to", "__dlpack__", "nelement", "ndimension", "type",
}
# Tensor properties whose value is the tensor itself seen another way (a transposed view, the real or
# imaginary part, a detached alias): data flow, recorded as an op named after the property (``k.T`` is op
# ``T``). Every other property read is metadata (``.shape``, ``.dtype``) or another tensor altogether
# (``.grad``, ``._base``) and is passed on unrecorded.
TENSOR_PROPERTIES = frozenset({"T", "mT", "H", "mH", "real", "imag", "data"})
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


def property_name(getter: Any) -> str:
    """The name of the tensor property a ``__get__`` reads: the getter is bound to the property's descriptor."""
    return getattr(getattr(getter, "__self__", None), "__name__", "")


def _is_inplace(name: str, raw: str) -> bool:
    return raw in _INPLACE_DUNDER or raw == "__setitem__" or (name.endswith("_") and not name.startswith("_"))


# Modules with a fused fast path that torch skips whenever a TorchFunctionMode is active (their
# forward checks ``torch.overrides.has_torch_function``). The recorder steps aside when such a module is
# called, so a trace shows the path that really runs; if the module then calls a sub-module (it took its
# slow path after all), the recorder steps back in at that call.
FAST_PATH_MODULES: tuple[type, ...] = (torch.nn.TransformerEncoderLayer, torch.nn.TransformerEncoder,
                                       torch.nn.MultiheadAttention)


_mode_stack_depth = torch._C._len_torch_function_stack
_mode_at = torch._C._get_function_stack_at


class OpRecorder(TorchFunctionMode):
    """The ``TorchFunctionMode`` that feeds functional ops to a ``DataFlow``; ``errors`` collects its own
    failures (a recorder bug never breaks the user's forward)."""

    def __init__(self, flow: DataFlow, engine: Engine) -> None:
        super().__init__()
        self.flow = flow
        self.errors = engine.errors
        self._open = engine.stack  # the open calls' ids, innermost last
        self._slot = engine.calls.slot
        self._is_leaf = engine.index.is_leaf
        self._parent = engine.calls.parent
        self._modules = engine.index.modules
        self._own_code: dict[int, bool] = {}  # slot -> a user-defined leaf (not a layer of torch.nn)
        self.seen = 0  # torch functions that could be data flow (not metadata reads), for OpCountProbe
        # The call during which the recorder is off torch's function-mode stack (``None``: it is on). Read
        # it; only step_aside and step_back change it.
        self.stepped_aside_for: int | None = None
        self._popped = False  # stepped aside by leaving the stack (not just by passing every function on)

    def step_aside(self, call_id: int) -> None:
        """Take this mode off torch's function-mode stack until ``step_back(call_id)``; when another mode is
        above it (a ``Tracer`` inside a ``Tracer``), stay on the stack but pass every function on unseen."""
        if self.stepped_aside_for is not None:
            return
        depth = _mode_stack_depth()  # torch.overrides._get_current_function_mode(), without its Python frame
        if not depth:
            return
        self._popped = _mode_at(depth - 1) is self
        if self._popped:
            torch._C._pop_torch_function_stack()
        self.stepped_aside_for = call_id

    def step_back(self, call_id: int | None = None) -> None:
        """Put the mode back (when ``call_id`` is the call it stepped aside for, or unconditionally)."""
        if self.stepped_aside_for is None or (call_id is not None and call_id != self.stepped_aside_for):
            return
        if self._popped:
            torch._C._push_on_torch_function_stack(self)
        self.stepped_aside_for = None

    def __exit__(self, *exc: object) -> None:
        self.step_back()  # a forward interrupted inside a fast-path module: restore the stack first
        super().__exit__(*exc)

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.stepped_aside_for is not None:  # aside, though on the stack below another mode: unseen
            return out
        raw = getattr(func, "__name__", "")
        if raw in _SKIP or raw == "__set__":
            return out
        if raw == "__get__":  # a property read: ``.shape`` (constantly), ``.dtype``, ... or ``.T``
            if not isinstance(out, torch.Tensor):
                return out
            name = property_name(func)
            if name not in TENSOR_PROPERTIES:
                return out
        else:
            name = op_name(func)
        self.seen += 1
        try:
            self._record(name, raw, args, kwargs, out)
        except Exception as e:  # noqa: BLE001 - a tracer bug must never break the user's forward
            self.errors.append(f"op {raw}: {e!r}")
        return out

    def _record(self, name: str, raw: str, args: tuple, kwargs: dict, out: Any) -> None:
        flow = self.flow
        inner = self._open[-1] if self._open else None
        inplace = _is_inplace(name, raw)
        target = args[0] if inplace and args and isinstance(args[0], torch.Tensor) else None
        # (a leaf inside the model is told by one list read: only an outermost leaf call asks further)
        if inner is not None and self._is_leaf[self._slot[inner]] and (
                self._parent[inner] is not None or not self._own_leaf(self._slot[inner])):
            # A leaf's own implementation: only side inputs (and a handed tensor changed in place) matter.
            flow.note_leaf_op((args, kwargs), target, inner)
            return
        has_tensor_out = target is not None or next(iter_live_tensors(out), None) is not None
        if not has_tensor_out:
            return
        call_args = list(args) + ([kwargs] if kwargs else [])
        flow.record_op(name, call_args, None if target is not None and out is None else out, target, inner)


    def _own_leaf(self, slot: int) -> bool:
        """Whether this leaf is user-defined (not a layer of ``torch.nn``): traced by itself, its ops are
        recorded."""
        known = self._own_code.get(slot)
        if known is None:
            known = self._own_code[slot] = not reads_only_its_own_state(self._modules[slot])
        return known


def reads_only_its_own_state(module: nn.Module) -> bool:
    """A leaf layer of ``torch.nn`` itself: its forward reads its arguments, parameters and buffers only."""
    return not module._modules and type(module).__module__.startswith("torch.nn.modules.")


class OpProbe(Probe):
    """Records functional ops into ``flow`` while the engine runs; steps aside for fused fast paths and for
    ``torch.nn``'s own leaf layers."""

    def __init__(self, flow: DataFlow) -> None:
        self.flow = flow
        self.recorder: OpRecorder | None = None
        self._aside: dict[type, bool] = {}  # module class -> whether the recorder steps aside for it

    def start(self, engine: Engine) -> None:
        engine.quiet = True  # the hooks' own metadata reads are not ops
        self.recorder = OpRecorder(self.flow, engine)
        self.recorder.__enter__()

    def stop(self, engine: Engine, exc: BaseException | None) -> None:
        if self.recorder is not None:
            self.recorder.__exit__(None, None, None)

    def on_call_start(self, cid: int, module: nn.Module, args: tuple, kwargs: dict | None) -> None:
        recorder = self.recorder
        assert recorder is not None
        # A call inside a module the recorder stepped aside for means that module took its slow path:
        # record again from here on (its residual adds and norms are data flow worth drawing).
        if recorder.stepped_aside_for is not None:
            recorder.step_back()
        aside = self._aside.get(type(module))
        if aside is None:
            aside = self._aside[type(module)] = isinstance(module, FAST_PATH_MODULES) or reads_only_its_own_state(module)
        if aside:
            recorder.step_aside(cid)

    def on_call_end(self, cid: int, module: nn.Module, output: Any, error: BaseException | None) -> None:
        recorder = self.recorder
        assert recorder is not None
        if recorder.stepped_aside_for == cid:
            recorder.step_back(cid)
