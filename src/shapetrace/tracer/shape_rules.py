"""Shape formulas for the torch functions that dominate a forward on ``meta``: answers in microseconds.

On ``meta`` every operation still runs torch's meta kernel, and for elementwise operations, attention and
normalisation those kernels are Python (``torch._refs`` decompositions that compute broadcasting, type
promotion and output strides symbolically): about 0.3 ms per ``mul``, 6 ms per ``scaled_dot_product_attention``.
A transformer forward is thousands of such calls. ``RULES`` maps a torch function (each spelling a forward
can reach it by: ``torch.mul``, ``Tensor.mul``, ``Tensor.__rsub__``, ``F.silu``...) to a small formula that
builds the same result, a ``meta`` tensor of the same shape, dtype and strides, with torch's C++ factories.

A rule answers only calls it fully understands: every tensor a plain strided tensor, at least one on
``meta`` (the others real and contiguous, as ``ShapeOnlyMode`` would move them), no autograd to record,
arguments of the expected kinds. Otherwise it returns ``None`` and the caller runs torch's own kernel, which
also raises torch's own error for a call that is wrong. The strides follow torch's meta kernels: for
elementwise operations the broadcast operands' stride order (``elementwise_strides``), as
``torch._prims_common`` computes it; for matmul, attention, softmax and normalisation contiguous outputs.
The oracle for every rule is torch itself (tests/test_shape_rules.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_META = torch.device("meta")
_PLAIN_TYPES = (torch.Tensor, nn.Parameter)
_SCALAR_TYPES = (int, float, bool)
_UPCAST = {torch.float16: torch.float32, torch.bfloat16: torch.float32, torch.complex32: torch.complex64}

Rule = Callable[[tuple, dict], Any]
RULES: dict[Any, Rule] = {}


# ---- which calls a rule may answer --------------------------------------------------------------------------
def usable(tensors: Sequence[torch.Tensor]) -> bool:
    """Whether a rule may stand in for the kernel: plain strided tensors, one on ``meta``, nothing for autograd.

    Real tensors among them must be contiguous (``ShapeOnlyMode`` moves them to ``meta`` with their strides,
    which only then are the strides the rule reads).
    """
    on_meta = False
    grad = torch.is_grad_enabled()
    for t in tensors:
        if type(t) not in _PLAIN_TYPES or t.layout != torch.strided or (grad and t.requires_grad):
            return False
        if t.is_meta:
            on_meta = True
        elif not t.is_contiguous():
            return False
    return on_meta


def _new(shape: Sequence[int], strides: Sequence[int] | None, dtype: torch.dtype) -> torch.Tensor:
    """A ``meta`` tensor: contiguous when ``strides`` is None (``empty_strided`` is torch's fastest factory)."""
    return torch.empty_strided(shape, contiguous_strides(shape) if strides is None else strides, dtype=dtype,
                               device=_META)


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any = None) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _only(kwargs: dict, allowed: frozenset[str]) -> bool:
    return not kwargs or allowed.issuperset(kwargs)


# ---- shapes and strides --------------------------------------------------------------------------------------
def broadcast_shapes(*shapes: Sequence[int]) -> tuple[int, ...] | None:
    """The broadcast of ``shapes`` (None where they do not broadcast)."""
    first = shapes[0]
    if all(s == first for s in shapes):
        return tuple(first)
    ndim = max(len(s) for s in shapes)
    out = [1] * ndim
    for shape in shapes:
        offset = ndim - len(shape)
        for i, size in enumerate(shape):
            current = out[offset + i]
            if current == 1:
                out[offset + i] = size
            elif size != 1 and size != current:
                return None
    return tuple(out)


def expanded_strides(t: torch.Tensor, shape: Sequence[int]) -> list[int]:
    """The strides of ``t.expand(shape)``: a stretched dimension gets stride 0, a new size-1 one a nested stride."""
    ndim, sizes, strides = len(shape), t.shape, t.stride()
    out = [0] * ndim
    offset = ndim - len(sizes)
    for i in range(ndim - 1, -1, -1):
        dim = i - offset
        if dim >= 0:
            size, stride = sizes[dim], strides[dim]
        else:
            size, stride = 1, (1 if i == ndim - 1 else shape[i + 1] * out[i + 1])
        out[i] = stride if size == shape[i] else 0
    return out


def contiguous_strides(shape: Sequence[int]) -> list[int]:
    strides, step = [0] * len(shape), 1
    for i in range(len(shape) - 1, -1, -1):
        strides[i] = step
        step *= max(shape[i], 1)
    return strides


def _is_contiguous(shape: Sequence[int], strides: Sequence[int]) -> bool:
    numel = 1
    for size in shape:
        numel *= size
    if numel < 2:
        return True
    expected = 1
    for i in range(len(shape) - 1, -1, -1):
        if shape[i] != 1:
            if strides[i] != expected:
                return False
            expected *= shape[i]
    return True


def _is_channels_last(shape: Sequence[int], strides: Sequence[int]) -> bool:
    if len(shape) != 4:
        return False
    expected = 1
    for i in (1, 3, 2, 0):
        if shape[i] != 1:
            if strides[i] != expected:
                return False
            expected *= shape[i]
    return True


def is_dense(shape: Sequence[int], strides: Sequence[int]) -> bool:
    """Non-overlapping and dense: some order of the dimensions makes the tensor contiguous."""
    numel = 1
    for size in shape:
        numel *= size
    if numel < 2:
        return True
    if len(shape) == 1:
        return strides[0] == 1
    expected = 1
    for stride, size in sorted(zip(strides, shape)):
        if size != 1:
            if stride != expected:
                return False
            expected *= size
    return True


def elementwise_strides(shape: Sequence[int], operands: Sequence[Sequence[int]]) -> list[int] | None:
    """Output strides of an elementwise operation on operands already expanded to ``shape`` (None: contiguous).

    The order of the output's dimensions in memory follows the operands' strides, the first operand that
    tells two dimensions apart deciding (a broadcast dimension, stride 0, tells nothing); the output is then
    dense in that order. This is the rule torch's elementwise meta kernels apply.
    """
    ndim = len(shape)
    if ndim < 2 or not operands:
        return None
    contiguous = all(_is_contiguous(shape, s) for s in operands)
    channels_last = ndim == 4 and all(_is_channels_last(shape, s) for s in operands)
    if contiguous and not channels_last:
        return None
    if channels_last and not contiguous:
        perm = [0, 2, 3, 1]
    else:
        perm = _sorted_dims(shape, operands)
        if perm == list(range(ndim)):
            return None
    physical = contiguous_strides([shape[d] for d in perm])
    strides = [0] * ndim
    for position, dim in enumerate(perm):
        strides[dim] = physical[position]
    return strides


def iterator_strides(shape: Sequence[int], operands: Sequence[Sequence[int]], same_shape: bool) -> list[int] | None:
    """Output strides as torch's C++ ``TensorIterator`` gives them (for kernels with a C++ meta function).

    Where every operand has the output's shape it takes a shortcut: all contiguous, contiguous; all
    channels-last, channels-last; all dense with the same strides, those strides. Otherwise it orders the
    dimensions as ``elementwise_strides`` does, without that function's contiguous shortcut.
    """
    ndim = len(shape)
    if ndim < 2 or not operands:
        return None
    if same_shape:
        if all(_is_contiguous(shape, s) for s in operands):
            return None
        if ndim == 4 and all(_is_channels_last(shape, s) for s in operands):
            return [shape[1] * shape[3] * shape[2], 1, shape[3] * shape[1], shape[1]]
        first = list(operands[0])
        if is_dense(shape, first) and all(list(s) == first for s in operands[1:]):
            return first
    perm = _sorted_dims(shape, operands)
    if perm == list(range(ndim)):
        return None
    strides, step = [0] * ndim, 1
    for dim in reversed(perm):
        strides[dim] = step
        step *= shape[dim]
    return strides


def _sorted_dims(shape: Sequence[int], operands: Sequence[Sequence[int]]) -> list[int]:
    """Dimensions from outermost to innermost in memory, by an insertion sort that leaves ties in place."""
    def should_swap(a: int, b: int) -> int:
        for strides in operands:
            sa, sb = strides[a], strides[b]
            if sa == 0 or sb == 0:
                continue
            if sa == sb:
                if shape[b] >= shape[a]:
                    continue
                return 1
            return -1 if sb >= sa else 1
        return 0

    ndim = len(shape)
    perm = list(range(ndim - 1, -1, -1))  # innermost first while sorting
    for i in range(1, ndim):
        dim1 = i
        for dim0 in range(i - 1, -1, -1):
            comparison = should_swap(perm[dim0], perm[dim1])
            if comparison > 0:
                perm[dim0], perm[dim1] = perm[dim1], perm[dim0]
                dim1 = dim0
            elif comparison < 0:
                break
    perm.reverse()
    return perm


# ---- elementwise operations -----------------------------------------------------------------------------------
# Kinds of result dtype, as torch's type promotion names them.
DEFAULT, INT_TO_FLOAT, ALWAYS_BOOL = "default", "int_to_float", "always_bool"


def _result_dtype(kind: str, promoted: torch.dtype) -> torch.dtype | None:
    if kind == ALWAYS_BOOL:
        return torch.bool
    if kind == INT_TO_FLOAT and not (promoted.is_floating_point or promoted.is_complex):
        return torch.get_default_dtype()
    return promoted


def elementwise(operands: Sequence[Any], kind: str, no_bool: bool = False, tensors_only: bool = False,
                iterator: bool = False) -> torch.Tensor | None:
    """The result of an elementwise operation on tensors and Python numbers (None: leave it to torch).

    ``no_bool``: torch refuses boolean operands (``sub``, ``neg``); ``tensors_only``: and Python numbers
    (``maximum``); ``iterator``: the kernel's meta function is C++ (``iterator_strides``), not Python.
    """
    tensors = [o for o in operands if isinstance(o, torch.Tensor)]
    if not usable(tensors) or any(type(o) not in _SCALAR_TYPES for o in operands if not isinstance(o, torch.Tensor)):
        return None
    if len(operands) == 1:
        promoted = tensors[0].dtype
    elif len(operands) == 2:
        promoted = torch.result_type(operands[0], operands[1])
    else:
        return None
    if promoted.is_complex or (no_bool and any(o.dtype == torch.bool if isinstance(o, torch.Tensor) else type(o) is bool
                                               for o in operands)):
        return None
    if tensors_only and len(tensors) != len(operands):
        return None
    dtype = _result_dtype(kind, promoted)
    if dtype is None:
        return None
    shape = tensors[0].shape if len(tensors) == 1 else broadcast_shapes(*(t.shape for t in tensors))
    if shape is None:
        return None
    computed_in = dtype if kind == INT_TO_FLOAT else promoted
    computed_in = _UPCAST.get(computed_in, computed_in)
    strided = []
    plain = True  # every operand contiguous, none broadcast and, in 4-d, not also channels-last contiguous
    for t in tensors:
        if t.shape == shape:
            strides = t.stride()
            plain = plain and t.is_contiguous() and (len(shape) != 4 or not t.is_contiguous(
                memory_format=torch.channels_last))
        else:
            strides, plain = expanded_strides(t, shape), False
        if t.dtype != computed_in and not is_dense(t.shape, t.stride()):
            return None  # torch converts it first, and the conversion of a non-dense tensor changes its strides
        strided.append(strides)
    if plain and (not iterator or len(tensors) == len(operands)):
        return _new(shape, None, dtype)
    if iterator:
        same = len(tensors) == len(operands) and all(t.shape == shape for t in tensors)
        return _new(shape, iterator_strides(shape, strided, same), dtype)
    return _new(shape, elementwise_strides(shape, strided), dtype)


def _binary(kind: str, *, swap: bool = False, no_bool: bool = False, tensors_only: bool = False) -> Rule:
    def rule(args: tuple, kwargs: dict) -> torch.Tensor | None:
        if len(args) != 2 or kwargs or not isinstance(args[0], torch.Tensor):
            return None
        return elementwise((args[1], args[0]) if swap else args, kind, no_bool, tensors_only)
    return rule


def _unary(kind: str, *, no_bool: bool = False, floating: bool = False, iterator: bool = False) -> Rule:
    def rule(args: tuple, kwargs: dict) -> torch.Tensor | None:
        if kwargs or len(args) != 1 or not isinstance(args[0], torch.Tensor):
            return None
        if floating and not args[0].is_floating_point():
            return None
        if iterator and not _regular(args[0]):
            return None
        return elementwise(args, kind, no_bool, iterator=iterator)
    return rule


def _true_divide(args: tuple, kwargs: dict) -> torch.Tensor | None:
    if len(args) != 2 or not isinstance(args[0], torch.Tensor):
        return None
    mode = kwargs.get("rounding_mode") if kwargs else None
    if kwargs and set(kwargs) != {"rounding_mode"}:
        return None
    if mode is None:
        return elementwise(args, INT_TO_FLOAT)
    return elementwise(args, DEFAULT, no_bool=True) if mode in ("trunc", "floor") else None


def _reverse_divide(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """``number / tensor``: ``Tensor.__rdiv__``, a reciprocal (integers become floats) times the number."""
    if kwargs or len(args) != 2 or not isinstance(args[0], torch.Tensor) or type(args[1]) not in (int, float):
        return None
    reciprocal = elementwise(args[:1], INT_TO_FLOAT)
    if reciprocal is None:
        return None
    return _new(reciprocal.shape, elementwise_strides(reciprocal.shape, [reciprocal.stride()]), reciprocal.dtype)


def _pow(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """Powers with a floating result (integer powers have checks on the values; ``x ** 1`` is a copy of ``x``)."""
    if kwargs or len(args) != 2 or any(type(a) in _SCALAR_TYPES and a == 1 for a in args):
        return None
    out = elementwise(args, DEFAULT)
    return out if out is None or out.is_floating_point() or out.is_complex() else None


def _reverse_pow(args: tuple, kwargs: dict) -> torch.Tensor | None:
    return _pow((args[1], args[0]), kwargs) if len(args) == 2 else None


def _in_place(kind: str) -> Rule:
    """``a.add_(b)`` and friends: ``a`` itself, where ``b`` broadcasts to it and the result casts to its dtype."""
    def rule(args: tuple, kwargs: dict) -> torch.Tensor | None:
        if kwargs or len(args) != 2:
            return None
        self = args[0]
        if not isinstance(self, torch.Tensor) or not self.is_meta or 0 in self.stride():
            return None
        out = elementwise(args, kind)
        if out is None or out.shape != self.shape or not torch.can_cast(out.dtype, self.dtype):
            return None
        return self
    return rule


def _regular(t: torch.Tensor) -> bool:
    """Exactly contiguous, or without size-0 and size-1 dimensions.

    Activations' meta kernels (``relu``, ``gelu``, ``mish``) give strides for size-0 and size-1 dimensions of
    other layouts by rules of their own; the activation rules leave such rare inputs to them.
    """
    shape = t.shape
    return 0 not in shape and 1 not in shape or list(t.stride()) == contiguous_strides(shape)


def _activation(*, check: Callable[[dict], bool] | None = None, iterator: bool = False) -> Rule:
    """``F.silu(x, inplace=...)`` and the like: floating inputs only; in place, the input itself."""
    def rule(args: tuple, kwargs: dict) -> torch.Tensor | None:
        if len(args) != 1 or not isinstance(args[0], torch.Tensor) or not args[0].is_floating_point():
            return None
        if not _regular(args[0]) or not _only(kwargs, _ACTIVATION_KWARGS) or (check is not None and not check(kwargs)):
            return None
        x = args[0]
        if kwargs.get("inplace"):
            return x if x.is_meta and usable((x,)) and 0 not in x.stride() else None
        return elementwise((x,), DEFAULT, iterator=iterator)
    return rule


_ACTIVATION_KWARGS = frozenset({"inplace", "approximate"})


def _register(rule: Rule, *funcs: Any) -> None:
    for func in funcs:
        if func is not None:
            RULES[func] = rule


def _spellings(name: str) -> list[Any]:
    """``torch.NAME`` and ``Tensor.NAME``: the objects a torch function mode receives for them."""
    return [getattr(torch, name, None), getattr(torch.Tensor, name, None)]


for _name in ("add", "mul", "eq", "ne", "lt", "le", "gt", "ge"):
    _register(_binary(ALWAYS_BOOL if _name not in ("add", "mul") else DEFAULT), *_spellings(_name))
_register(_binary(DEFAULT, no_bool=True), *_spellings("sub"))
for _name in ("maximum", "minimum"):
    _register(_binary(DEFAULT, tensors_only=True), *_spellings(_name))
for _name, _kind in [("add_", DEFAULT), ("mul_", DEFAULT), ("sub_", DEFAULT)]:
    _register(_in_place(_kind), getattr(torch.Tensor, _name))
_register(_in_place(INT_TO_FLOAT), torch.Tensor.div_)
_register(_binary(DEFAULT, swap=True, no_bool=True), torch.Tensor.__rsub__)
_register(_true_divide, *_spellings("div"), *_spellings("true_divide"))
_register(_reverse_divide, torch.Tensor.__rdiv__, torch.Tensor.__rtruediv__)
_register(_pow, *_spellings("pow"), torch.Tensor.__pow__)
_register(_reverse_pow, torch.Tensor.__rpow__)
_register(_unary(DEFAULT, no_bool=True), *_spellings("neg"), torch.Tensor.__neg__)
_register(_unary(DEFAULT, no_bool=True), *_spellings("abs"), torch.Tensor.__abs__)
for _name in ("cos", "sin", "exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid", "reciprocal", "erf"):
    _register(_unary(INT_TO_FLOAT), *_spellings(_name))
_register(_unary(DEFAULT, floating=True, iterator=True), *_spellings("relu"))
_register(_activation(check=lambda kw: "approximate" not in kw), F.silu, F.mish)
_register(_activation(check=lambda kw: "approximate" not in kw, iterator=True), F.relu)
_register(_activation(check=lambda kw: "inplace" not in kw and kw.get("approximate", "none") in ("none", "tanh"),
                      iterator=True), F.gelu)


# ---- matrix products ---------------------------------------------------------------------------------------------
def matmul_shape(a: Sequence[int], b: Sequence[int]) -> tuple[int, ...] | None:
    """The shape of ``a @ b`` (None where the sizes do not agree)."""
    if not a or not b:
        return None
    k_a = a[-1]
    k_b = b[-2] if len(b) >= 2 else b[0]
    if k_a != k_b:
        return None
    batch = broadcast_shapes(a[:-2], b[:-2])
    if batch is None:
        return None
    return (*batch, *a[-2:-1], *(b[-1:] if len(b) >= 2 else ()))


def _same_dtype(*tensors: torch.Tensor) -> bool:
    first = tensors[0].dtype
    return all(t.dtype == first for t in tensors)


def _matmul(args: tuple, kwargs: dict) -> torch.Tensor | None:
    if kwargs or len(args) != 2 or not all(isinstance(a, torch.Tensor) for a in args):
        return None
    a, b = args
    if not usable(args) or not _same_dtype(a, b) or a.dtype == torch.bool:
        return None
    shape = matmul_shape(a.shape, b.shape)
    return None if shape is None else _new(shape, None, a.dtype)


def _bmm(args: tuple, kwargs: dict) -> torch.Tensor | None:
    if kwargs or len(args) != 2 or not all(isinstance(a, torch.Tensor) for a in args):
        return None
    a, b = args
    if a.ndim != 3 or b.ndim != 3 or a.shape[0] != b.shape[0] or a.shape[2] != b.shape[1]:
        return None
    if not usable(args) or not _same_dtype(a, b) or a.dtype == torch.bool:
        return None
    return _new((a.shape[0], a.shape[1], b.shape[2]), None, a.dtype)


def _linear(args: tuple, kwargs: dict) -> torch.Tensor | None:
    if not _only(kwargs, frozenset({"bias"})) or not 2 <= len(args) <= 3:
        return None
    x, weight = args[0], args[1]
    bias = _arg(args, kwargs, 2, "bias")
    tensors = (x, weight) if bias is None else (x, weight, bias)
    if not all(isinstance(t, torch.Tensor) for t in tensors) or weight.ndim != 2 or x.ndim == 0:
        return None
    if x.shape[-1] != weight.shape[1] or (bias is not None and tuple(bias.shape) != (weight.shape[0],)):
        return None
    if not usable(tensors) or not _same_dtype(*tensors) or not x.is_floating_point():
        return None
    return _new((*x.shape[:-1], weight.shape[0]), None, x.dtype)


def _addmm(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """``torch.addmm(input, mat1, mat2)`` (GPT-2's ``Conv1D``): ``(n, m)``, contiguous; ``input`` broadcasts to it."""
    if len(args) != 3 or not _only(kwargs, frozenset({"beta", "alpha"})):
        return None
    if not all(type(v) in (int, float) for v in kwargs.values()) or not all(isinstance(a, torch.Tensor) for a in args):
        return None
    bias, a, b = args
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0] or bias.ndim > 2:
        return None
    shape = (a.shape[0], b.shape[1])
    if broadcast_shapes(bias.shape, shape) != shape or not a.is_floating_point() or not _same_dtype(*args):
        return None
    return _new(shape, None, a.dtype) if usable(args) else None


_register(_matmul, *_spellings("matmul"), torch.Tensor.__matmul__)
_register(_bmm, *_spellings("bmm"))
_register(_addmm, *_spellings("addmm"))
_register(_linear, F.linear)


# ---- attention, softmax, normalisation -----------------------------------------------------------------------
_SDPA_KWARGS = frozenset({"attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa"})


def _attention(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """``F.scaled_dot_product_attention``: (..., L, E) queries, (..., S, E) keys, (..., S, Ev) values → (..., L, Ev)."""
    if len(args) != 3 or not _only(kwargs, _SDPA_KWARGS):
        return None
    q, k, v = args
    mask, causal, gqa = kwargs.get("attn_mask"), kwargs.get("is_causal", False), kwargs.get("enable_gqa", False)
    dropout, scale = kwargs.get("dropout_p", 0.0), kwargs.get("scale")
    if not all(isinstance(t, torch.Tensor) for t in args) or not q.ndim == k.ndim == v.ndim or q.ndim not in (3, 4):
        return None
    if type(causal) is not bool or type(gqa) is not bool or (mask is not None and causal):
        return None
    if type(dropout) not in (int, float) or not (scale is None or type(scale) in (int, float)):
        return None
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2] or k.shape[:-2] != v.shape[:-2]:
        return None
    if q.shape[:-3] != k.shape[:-3]:
        return None
    heads, kv_heads = q.shape[-3], k.shape[-3]
    if heads != kv_heads and not (gqa and q.ndim == 4 and kv_heads > 0 and heads % kv_heads == 0):
        return None
    tensors = (q, k, v) if mask is None else (q, k, v, mask)
    if not q.is_floating_point() or not _same_dtype(q, k, v) or not usable(tensors):
        return None
    out_shape = (*q.shape[:-1], v.shape[-1])
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dtype not in (torch.bool, q.dtype):
            return None
        if broadcast_shapes(mask.shape, (*q.shape[:-1], k.shape[-2])) != (*q.shape[:-1], k.shape[-2]):
            return None
    return _new(out_shape, None, q.dtype)


def _softmax(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """``softmax`` / ``log_softmax`` along one dimension: a contiguous tensor of the input's shape."""
    if not args or not isinstance(args[0], torch.Tensor) or len(args) > 3:
        return None
    if not _only(kwargs, frozenset({"dim", "dtype", "_stacklevel"})):
        return None
    x, dim, dtype = args[0], _arg(args, kwargs, 1, "dim"), _arg(args, kwargs, 2, "dtype")
    if len(args) == 3 and not isinstance(dtype, torch.dtype):
        return None
    if type(dim) is not int or not -max(x.ndim, 1) <= dim < max(x.ndim, 1):
        return None
    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        return None
    if dtype is None and not x.is_floating_point():
        return None
    if not usable((x,)):
        return None
    return _new(x.shape, None, dtype or x.dtype)


def _normalized(x: torch.Tensor, normalized_shape: Any, *params: torch.Tensor | None) -> bool:
    if not isinstance(normalized_shape, (list, tuple, torch.Size)) or not normalized_shape:
        return False
    if any(type(s) is not int for s in normalized_shape) or len(normalized_shape) > x.ndim:
        return False
    if tuple(x.shape[-len(normalized_shape):]) != tuple(normalized_shape):
        return False
    return all(p is None or (isinstance(p, torch.Tensor) and tuple(p.shape) == tuple(normalized_shape)
                             and p.dtype == x.dtype) for p in params)


def _rms_norm(args: tuple, kwargs: dict) -> torch.Tensor | None:
    if not _only(kwargs, frozenset({"weight", "eps"})) or not 2 <= len(args) <= 4:
        return None
    x, shape = args[0], args[1]
    weight, eps = _arg(args, kwargs, 2, "weight"), _arg(args, kwargs, 3, "eps")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or not (eps is None or type(eps) in (int, float)):
        return None
    if not _normalized(x, shape, weight) or not usable((x,) if weight is None else (x, weight)):
        return None
    return _new(x.shape, None, x.dtype)


def _layer_norm(args: tuple, kwargs: dict) -> torch.Tensor | None:
    if not _only(kwargs, frozenset({"weight", "bias", "eps"})) or not 2 <= len(args) <= 5:
        return None
    x, shape = args[0], args[1]
    weight, bias, eps = _arg(args, kwargs, 2, "weight"), _arg(args, kwargs, 3, "bias"), _arg(args, kwargs, 4, "eps", 1e-5)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or type(eps) not in (int, float):
        return None
    tensors = [t for t in (x, weight, bias) if t is not None]
    if not _normalized(x, shape, weight, bias) or not usable(tensors):
        return None
    return _new(x.shape, None, x.dtype)


_register(_attention, F.scaled_dot_product_attention)
_register(_softmax, *_spellings("softmax"), *_spellings("log_softmax"), F.softmax, F.log_softmax)
_register(_rms_norm, torch.rms_norm, F.rms_norm)
_register(_layer_norm, F.layer_norm, torch.layer_norm)


# ---- joining and repeating ---------------------------------------------------------------------------------
def _channels_last_like(shape: Sequence[int], strides: Sequence[int]) -> bool:
    """Whether a 4-d tensor's strides look channels-last (torch's ``suggest_memory_format`` heuristic)."""
    if strides[1] == 0:
        return False
    smallest = 0
    for d in (1, 3, 2, 0):
        if shape[d] == 0 or strides[d] < smallest:
            return False
        if d == 0 and smallest == strides[1]:
            return False
        smallest = strides[d] * max(shape[d], 1)
    return True


def _cat(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """``torch.cat``: sizes add up along ``dim``; dtypes promote; contiguous unless every input looks channels-last."""
    if not 1 <= len(args) <= 2 or not _only(kwargs, frozenset({"dim"})):
        return None
    tensors, dim = args[0], _arg(args, kwargs, 1, "dim", 0)
    if not isinstance(tensors, (list, tuple)) or not tensors or type(dim) is not int:
        return None
    if not all(isinstance(t, torch.Tensor) for t in tensors) or not usable(tensors):
        return None
    legacy_empty = [t for t in tensors if t.shape == (0,)]  # torch skips 1-d empty tensors (an empty cache)
    if legacy_empty and len(legacy_empty) < len(tensors):
        tensors = [t for t in tensors if t.shape != (0,)]
        if any(t.dtype != tensors[0].dtype for t in (*tensors, *legacy_empty)):
            return None
    first = tensors[0]
    ndim = first.ndim
    if ndim == 0 or ndim == 5 or not -ndim <= dim < ndim:
        return None
    dim %= ndim
    shape = list(first.shape)
    dtype = first.dtype
    for t in tensors[1:]:
        if t.ndim != ndim or any(t.shape[d] != shape[d] for d in range(ndim) if d != dim):
            return None
        shape[dim] += t.shape[dim]
        dtype = torch.promote_types(dtype, t.dtype)
    if ndim == 4 and all(_channels_last_like(t.shape, t.stride()) for t in tensors):
        return None  # a channels-last result: leave it to torch
    return _new(shape, None, dtype)


def _outer(args: tuple, kwargs: dict) -> torch.Tensor | None:
    if kwargs or len(args) != 2 or not all(isinstance(t, torch.Tensor) for t in args):
        return None
    a, b = args
    if a.ndim != 1 or b.ndim != 1 or (a.shape[0] > 1 and a.stride(0) != 1) or (b.shape[0] > 1 and b.stride(0) != 1):
        return None
    if not usable(args) or a.dtype == torch.bool or b.dtype == torch.bool:
        return None
    column = [1, 0] if b.shape[0] != 1 else [1, 1]
    row = [0 if a.shape[0] != 1 else b.shape[0], 1]
    shape = (a.shape[0], b.shape[0])
    return _new(shape, elementwise_strides(shape, [column, row]), torch.promote_types(a.dtype, b.dtype))


def _repeat_interleave(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """``x.repeat_interleave(n, dim)`` with an int ``n``: ``dim`` grows ``n`` times (no ``dim``: flattened)."""
    if not 2 <= len(args) <= 3 or not _only(kwargs, frozenset({"dim"})):
        return None
    x, repeats, dim = args[0], args[1], _arg(args, kwargs, 2, "dim")
    if not isinstance(x, torch.Tensor) or type(repeats) is not int or repeats < 0 or not usable((x,)):
        return None
    if dim is None:
        return _new((x.numel() * repeats,), None, x.dtype)
    if type(dim) is not int or x.ndim == 0 or not -x.ndim <= dim < x.ndim:
        return None
    shape = list(x.shape)
    shape[dim] *= repeats
    return _new(shape, None, x.dtype)


def _embedding(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """``F.embedding`` without ``max_norm`` (which renormalises the weight in place) and not sparse."""
    if len(args) != 2 or not _only(kwargs, frozenset({"padding_idx", "max_norm", "norm_type", "scale_grad_by_freq",
                                                      "sparse"})):
        return None
    ids, weight = args
    if kwargs.get("max_norm") is not None or kwargs.get("sparse"):
        return None
    if not isinstance(ids, torch.Tensor) or not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        return None
    if ids.dtype not in (torch.int64, torch.int32):
        return None
    padding_idx = kwargs.get("padding_idx")
    if padding_idx is not None and (type(padding_idx) is not int or not -weight.shape[0] <= padding_idx < weight.shape[0]):
        return None
    if not usable((ids, weight)):
        return None
    return _new((*ids.shape, weight.shape[1]), None, weight.dtype)


_register(_cat, torch.cat, torch.concat, torch.concatenate)
_register(_outer, *_spellings("outer"), *_spellings("ger"))
_register(_repeat_interleave, *_spellings("repeat_interleave"))
_register(_embedding, F.embedding)




# ---- convolutional networks -------------------------------------------------------------------------------------
def _batch_norm(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """``F.batch_norm``: the input's shape, dtype and, where it is dense, strides (otherwise contiguous)."""
    if len(args) != 3 or not _only(kwargs, frozenset({"weight", "bias", "training", "momentum", "eps"})):
        return None
    x, mean, var = args
    weight, bias, training = kwargs.get("weight"), kwargs.get("bias"), kwargs.get("training", False)
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or not x.is_floating_point() or type(training) is not bool:
        return None
    if type(kwargs.get("momentum", 0.1)) not in (int, float) or type(kwargs.get("eps", 1e-5)) not in (int, float):
        return None
    params = [p for p in (mean, var, weight, bias) if p is not None]
    if not all(isinstance(p, torch.Tensor) and tuple(p.shape) == (x.shape[1],) and p.dtype == x.dtype
               for p in params):
        return None
    if (mean is None or var is None) and not training:
        return None  # torch refuses: evaluation needs running statistics
    if training and x.numel() // max(x.shape[1], 1) <= 1:
        return None  # torch refuses: one value per channel
    if not usable([x, *params]):
        return None
    if is_dense(x.shape, x.stride()):
        return _new(x.shape, x.stride(), x.dtype)
    if x.ndim == 4 and _channels_last_like(x.shape, x.stride()):
        return None
    return _new(x.shape, None, x.dtype)


def _as_tuple(value: Any, n: int) -> tuple[int, ...] | None:
    if type(value) is int:
        return (value,) * n
    if isinstance(value, (list, tuple)) and all(type(v) is int for v in value):
        if len(value) == n:
            return tuple(value)
        if len(value) == 1:
            return (value[0],) * n
    return None


def _convolution(spatial: int) -> Rule:
    """``F.conv1d`` / ``conv2d`` / ``conv3d``: output sizes from kernel, stride, padding, dilation; contiguous."""
    names = ("bias", "stride", "padding", "dilation", "groups")

    def rule(args: tuple, kwargs: dict) -> torch.Tensor | None:
        if not 2 <= len(args) <= 7 or not _only(kwargs, frozenset(names)):
            return None
        x, weight = args[0], args[1]
        bias, stride, padding, dilation, groups = (_arg(args, kwargs, 2 + i, name, default) for i, (name, default)
                                                   in enumerate(zip(names, (None, 1, 0, 1, 1))))
        if not isinstance(x, torch.Tensor) or not isinstance(weight, torch.Tensor) or weight.ndim != spatial + 2:
            return None
        if x.ndim not in (spatial + 1, spatial + 2) or type(groups) is not int or groups < 1:
            return None
        batched = x.ndim == spatial + 2
        channels, sizes = x.shape[int(batched)], x.shape[-spatial:]
        out_channels, kernel = weight.shape[0], weight.shape[2:]
        if channels != weight.shape[1] * groups or out_channels % groups or 0 in kernel or 0 in weight.shape[:2]:
            return None
        if bias is not None and (not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (out_channels,)):
            return None
        stride, dilation = _as_tuple(stride, spatial), _as_tuple(dilation, spatial)
        if stride is None or dilation is None or min(stride) < 1 or min(dilation) < 1:
            return None
        if padding == "valid":
            padding = (0,) * spatial
        elif padding == "same":
            if any(s != 1 for s in stride):
                return None
            out = tuple(sizes)
            padding = None
        else:
            padding = _as_tuple(padding, spatial)
            if padding is None or min(padding) < 0:
                return None
        if padding is not None:
            out = tuple((n + 2 * p - d * (k - 1) - 1) // s + 1
                        for n, p, d, k, s in zip(sizes, padding, dilation, kernel, stride))
            if any(n + 2 * p < d * (k - 1) + 1 for n, p, d, k in zip(sizes, padding, dilation, kernel)):
                return None  # kernel larger than the padded input: torch raises
        tensors = (x, weight) if bias is None else (x, weight, bias)
        if not x.is_floating_point() or not _same_dtype(*tensors) or not usable(tensors):
            return None
        shape = (x.shape[0], out_channels, *out) if batched else (out_channels, *out)
        return _new(shape, None, x.dtype)
    return rule


_register(_batch_norm, F.batch_norm)
_register(_convolution(1), F.conv1d, torch.conv1d)
_register(_convolution(2), F.conv2d, torch.conv2d)
_register(_convolution(3), F.conv3d, torch.conv3d)


# ---- grouped matrix products (mixture-of-experts layers) -----------------------------------------------------
_GROUPED_MM_DTYPES = frozenset({torch.float32, torch.bfloat16, torch.float16})
_GROUPED_MM_KWARGS = frozenset({"offs", "bias", "out_dtype"})


def _aligned(t: torch.Tensor) -> bool:
    """The CPU kernel's layout check: one unit stride among the last two, every other stride 16-byte aligned."""
    strides = t.stride()
    if 1 not in strides[-2:]:
        return False
    return all(st * t.element_size() % 16 == 0 for st in strides if st != 1)


def _grouped_mm(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """``torch._grouped_mm(a, b, offs=...)``, as the CPU kernel computes it: the ``meta`` kernel refuses float32,
    which the CPU (and a mixture-of-experts forward run there) accepts. 2-D ``a`` (M, K) and 3-D ``b`` (G, K, N)
    give (M, N); 3-D and 2-D give (M, N); 2-D and 2-D give (G, M, N); 3-D and 3-D (no ``offs``) give (G, M, N)."""
    if not 2 <= len(args) <= 5 or not _only(kwargs, _GROUPED_MM_KWARGS):
        return None
    a, b = args[0], args[1]
    offs, bias, out_dtype = (_arg(args, kwargs, 2 + i, name) for i, name in enumerate(("offs", "bias", "out_dtype")))
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or bias is not None:
        return None
    if a.dtype not in _GROUPED_MM_DTYPES or b.dtype != a.dtype or out_dtype not in (None, a.dtype):
        return None
    if a.ndim not in (2, 3) or b.ndim not in (2, 3) or a.shape[-1] != b.shape[-2] or not (_aligned(a) and _aligned(b)):
        return None
    if a.ndim == 3 and b.ndim == 3:
        if offs is not None or a.shape[0] != b.shape[0]:
            return None
        shape, tensors = (a.shape[0], a.shape[1], b.shape[2]), (a, b)
    else:
        if not isinstance(offs, torch.Tensor) or offs.ndim != 1 or offs.dtype != torch.int32:
            return None
        groups = offs.shape[0]
        if (a.ndim == 3 and a.shape[0] != groups) or (b.ndim == 3 and b.shape[0] != groups):
            return None
        shape = (groups, a.shape[0], b.shape[1]) if a.ndim == b.ndim == 2 else (a.shape[-2], b.shape[-1])
        tensors = (a, b, offs)
    if not usable(tensors):
        return None
    return _new(shape, None, a.dtype)


if hasattr(torch, "_grouped_mm"):
    _register(_grouped_mm, torch._grouped_mm)


def _suggested_format(t: torch.Tensor) -> torch.memory_format:
    if t.ndim == 4 and _channels_last_like(t.shape, t.stride()):
        return torch.channels_last
    return torch.contiguous_format


def _adaptive_avg_pool2d(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """``F.adaptive_avg_pool2d``: the last two sizes become ``output_size`` (None keeps one), in the input's format."""
    if len(args) + len(kwargs) != 2 or not _only(kwargs, frozenset({"output_size"})):
        return None
    x, size = args[0], _arg(args, kwargs, 1, "output_size")
    if not isinstance(x, torch.Tensor) or x.ndim not in (3, 4) or 0 in x.shape[-3:] or not x.is_floating_point():
        return None
    size = (size, size) if type(size) is int else size
    if not isinstance(size, (list, tuple)) or len(size) != 2:
        return None
    out = [x.shape[-2 + i] if s is None else s for i, s in enumerate(size)]
    if any(type(s) is not int or s < 0 for s in out) or not usable((x,)):
        return None
    return torch.empty((*x.shape[:-2], *out), dtype=x.dtype, device=_META, memory_format=_suggested_format(x))


def _contiguous(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """``x.contiguous()``: ``x`` itself where it already is, else a contiguous tensor like it."""
    if len(args) != 1 or not isinstance(args[0], torch.Tensor) or not _only(kwargs, frozenset({"memory_format"})):
        return None
    if kwargs.get("memory_format", torch.contiguous_format) is not torch.contiguous_format or not usable(args):
        return None
    x = args[0]
    return x if x.is_contiguous() else _new(x.shape, None, x.dtype)


_register(_adaptive_avg_pool2d, F.adaptive_avg_pool2d)
_register(_contiguous, torch.Tensor.contiguous)

# torchlens, once used in a process, leaves its own wrappers in place of torch's functions, and a torch function
# mode then receives the wrapper; each carries the id of the function it wraps.
_BY_ID = {id(func): func for func in RULES}


def rule_for(func: Any) -> Rule | None:
    """The rule for ``func``, or for the torch function it wraps (None: no rule)."""
    rule = RULES.get(func)
    if rule is None:
        wrapped = getattr(func, "__tl_original_id__", None)
        if wrapped is not None:
            rule = RULES.get(_BY_ID.get(wrapped))
    return rule
