"""Shape-only tracing: run a forward on ``meta`` tensors where that is possible, on real ones where it is not.

A model traced with ``device="meta"`` computes nothing: its parameters, buffers and floating-point inputs
are ``meta`` tensors, which carry a shape and a dtype and no values. Many forwards also *look at* their
integer inputs (token ids, masks, lengths, padding): the AWD-LSTM's BPT3C loop counts the rows of each
chunk that are not padding with ``.item()``. Those inputs are kept real, on the CPU (``split_inputs``),
and ``ShapeOnlyMode`` moves a real tensor to ``meta`` only at the moment it meets a ``meta`` one in an
operation. Arithmetic on integers alone stays real and exact, so loops and slices driven by the data run
as they would on a real input.

Recurrent layers on ``meta`` would run one decomposed step per time step (tens of seconds for a long
document); the mode answers ``torch._VF.lstm`` / ``gru`` / ``rnn_tanh`` / ``rnn_relu`` directly with
``meta`` tensors of the shapes torch's kernels return.

An operation whose output size depends on the values of a *real* integer or boolean operand (``h[mask]``,
``repeat_interleave(counts)``, ``pack_padded_sequence(x, lengths)``) and that ``meta`` cannot compute, is
run on the CPU with stand-ins for its floating ``meta`` operands (a zero broadcast to their shape, which
costs no memory; their values cannot change the output's size) and its outputs are moved back to ``meta``.
A device move of a ``meta`` tensor (``.to(device)``, ``.to(other)``, ``.cpu()``, ``.cuda()``) stays on
``meta``, with the dtype asked for: a move changes no shape, and in a shape-only run every device stands for
the model's (RoBERTa moves its integer ``token_type_ids`` buffer to the device of positions computed from the
real ids). An operation that needs the values of a ``meta`` tensor (``.item()``, ``if mask.all():``,
``nonzero``, ``unique``, masked selection by a ``meta`` mask: outputs whose size depends on data) raises
``ShapeOnlyUnsupported``, which names the operation, says what it needed (a value read by Python, an output
sized by values, a ``meta`` kernel torch lacks) and suggests a real run on a small input, or for a value read,
passing a mask the forward builds from constants as an integer input; so does an in-place write of a ``meta``
result into a real tensor (its values would be left stale).

``meta`` kernels skip some checks the CPU makes; the mode adds the ones a forward most often trips over:
the operands of ``linear``, the matrix products and the convolutions must share a dtype, a convolution's
input must have the channels its weight expects (said with the CPU's message), and the ids given
to ``embedding`` and ``embedding_bag`` (real, when they are an input) must be in range. Others (a ``.view`` of a result whose
strides the CPU lays out differently) can still pass on ``meta`` and fail on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from .shape_rules import rule_for

_META = torch.device("meta")
_NO_KWARGS: dict = {}


class ShapeOnlyUnsupported(RuntimeError):
    """A forward needed the values of a tensor that shape-only tracing does not compute, or an operation
    torch cannot run on ``meta``. ``reason`` says which (``_why``, unless the raiser gives it)."""

    def __init__(self, op: str, cause: BaseException | None, reason: str | None = None) -> None:
        self.op = op
        advice = ""
        if reason is None:
            reason, advice = _why(op, cause) if cause is not None else ("it needs tensor values", "")
        self.reason = reason
        said = f" ({type(cause).__name__}: {(str(cause).splitlines() or [''])[0][:160]})" if cause is not None else ""
        super().__init__(
            f"shape-only tracing cannot follow `{op}`: {reason}{said}. {advice}Trace a real run instead, on a "
            "small input (for instance --device cpu with a batch of 1).")


# Operations that hand a tensor's values to Python (``if mask.all():``, ``int(n)``, ``x.tolist()``).
_VALUE_READS = {"__bool__", "__int__", "__float__", "__index__", "__complex__", "item", "tolist", "numpy",
                "__array__", "__len__"}
# Operations whose output size is the count of some values (torch may lack a meta kernel for them as well).
_SIZED_BY_VALUES = {"nonzero", "argwhere", "unique", "unique_consecutive", "masked_select", "bincount", "histc",
                    "repeat_interleave", "__getitem__"}
_READ_ADVICE = (
    "If that tensor is a mask, ids or positions the forward makes itself from constants (torch.ones(..., "
    "device=x.device)), pass it to the forward as an integer or boolean input instead: those stay real on "
    "'meta', and so does what is computed from them alone. A value computed from the activations or the "
    "weights has none on 'meta'. ")


def _why(op: str, cause: BaseException) -> tuple[str, str]:
    """What an operation needed that a trace on ``meta`` does not have (from its name and torch's error: a
    tensor's values read by Python, an output size that depends on values, or a ``meta`` kernel), and advice
    to put before the suggestion of a real run ("" for none)."""
    text = str(cause)
    name = op.rsplit(".", 1)[-1]
    if name in _VALUE_READS or "item() cannot be called on meta" in text or "Cannot copy out of meta" in text:
        return "it reads the values of a tensor on 'meta', which a trace on 'meta' does not compute", _READ_ADVICE
    if name not in _SIZED_BY_VALUES and ("no fake impl or Meta kernel" in text or "Could not run" in text):
        no_kernel = ("torch has no 'meta' kernel for it, so a trace on 'meta' cannot run it (whether or not its "
                     "result depends on tensor values)")
        return no_kernel, ""
    return "its result depends on tensor values that a trace on 'meta' does not compute", ""


def keeps_values(t: torch.Tensor) -> bool:
    """Whether shape-only tracing keeps this input real: integer and boolean tensors (ids, masks, lengths)."""
    return not (t.is_floating_point() or t.is_complex())


def _placement(value: Any, depth: int = 0) -> int:
    """Where the tensors in ``value`` (and its lists, two levels down) are: 1 some on meta, 2 some real, 3 both."""
    if isinstance(value, torch.Tensor):
        return 1 if value.is_meta else 2
    found = 0
    if depth < 2 and isinstance(value, (list, tuple)):
        for v in value:
            found |= _placement(v, depth + 1)
    return found


def _has_meta(value: Any, depth: int = 0) -> bool:
    if isinstance(value, torch.Tensor):
        return value.device.type == "meta"
    if depth < 2 and isinstance(value, (list, tuple)):
        return any(_has_meta(v, depth + 1) for v in value)
    return False


def _to_meta(value: Any, depth: int = 0) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(_META) if value.device.type != "meta" else value
    if depth < 2 and isinstance(value, (list, tuple)):
        moved = [_to_meta(v, depth + 1) for v in value]
        return moved if isinstance(value, list) else tuple(moved)
    return value


def _op_name(func: Callable) -> str:
    name = getattr(func, "__name__", repr(func))
    owner = getattr(func, "__objclass__", None) or getattr(func, "__self__", None)
    if owner is torch.Tensor or (isinstance(owner, type) and issubclass(owner, torch.Tensor)):
        return f"Tensor.{name}"
    if name.startswith("__") or "." in name:
        return name
    return f"torch.{name}"


# ---- recurrent kernels, answered with shapes ---------------------------------------------------------------
def _rnn_output(inp: torch.Tensor, batch_sizes: torch.Tensor | None, h: torch.Tensor, bidirectional: bool,
                batch_first: bool) -> torch.Tensor:
    """The output of an RNN kernel: the input's shape with its feature size replaced by the hidden output's."""
    out_features = h.shape[-1] * (2 if bidirectional else 1)
    return torch.empty((*inp.shape[:-1], out_features), dtype=inp.dtype, device=_META)


def _lstm(args: tuple) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if isinstance(args[1], torch.Tensor):  # packed: data, batch_sizes, hx, params, bias, layers, p, train, bidir
        data, batch_sizes, hx, bidir = args[0], args[1], args[2], args[8]
        out = _rnn_output(data, batch_sizes, hx[0], bidir, False)
    else:  # input, hx, params, bias, layers, p, train, bidir, batch_first
        inp, hx, bidir, batch_first = args[0], args[1], args[7], args[8]
        out = _rnn_output(inp, None, hx[0], bidir, batch_first)
    return out, torch.empty_like(hx[0], device=_META), torch.empty_like(hx[1], device=_META)


def _gru_like(args: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(args[2], torch.Tensor):  # packed: data, batch_sizes, hx, params, ... (batched has params here)
        data, hx, bidir = args[0], args[2], args[8]
        out = _rnn_output(data, args[1], hx, bidir, False)
    else:  # input, hx, params, bias, layers, p, train, bidir, batch_first
        inp, hx, bidir, batch_first = args[0], args[1], args[7], args[8]
        out = _rnn_output(inp, None, hx, bidir, batch_first)
    return out, torch.empty_like(hx, device=_META)


_RNN_KERNELS: dict[Any, Callable[[tuple], Any]] = {
    torch._VF.lstm: _lstm,
    torch._VF.gru: _gru_like,
    torch._VF.rnn_tanh: _gru_like,
    torch._VF.rnn_relu: _gru_like,
}


def _is_meta_target(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.device.type == "meta"
    if isinstance(value, torch.device):
        return value.type == "meta"
    return isinstance(value, str) and value.startswith("meta")


def _to_target(args: tuple, kwargs: dict) -> tuple[bool, torch.dtype | None]:
    """Where ``Tensor.to(*args, **kwargs)`` sends a tensor: (whether to ``meta``, the dtype asked for)."""
    like = kwargs.get("tensor")  # .to(tensor=other): torch's keyword for the tensor form
    to_meta = _is_meta_target(kwargs.get("device")) or _is_meta_target(like) or any(_is_meta_target(a) for a in args)
    dtype = like.dtype if isinstance(like, torch.Tensor) else kwargs.get("dtype")
    for a in args:
        if isinstance(a, torch.dtype):
            dtype = a
        elif isinstance(a, torch.Tensor):
            dtype = a.dtype
    return to_meta, dtype


def _keep_real_to(args: tuple, kwargs: dict) -> Any:
    """``int_tensor.to(meta_device_or_tensor)``: keep the values, convert only the dtype (None: not such a call)."""
    self, rest = args[0], args[1:]
    if not isinstance(self, torch.Tensor) or self.device.type == "meta" or not keeps_values(self):
        return None
    to_meta, dtype = _to_target(rest, kwargs)
    if not to_meta or (dtype is not None and (dtype.is_floating_point or dtype.is_complex)):
        return None
    return self if dtype is None or dtype == self.dtype else self.to(dtype)


def _meta_target(value: Any) -> Any:
    """A ``.to()`` argument with its device made ``meta``: a device (or ordinal or string) is ``meta``, a
    tensor a ``meta`` stand-in of its dtype; anything else (a dtype, ``non_blocking``, ``copy``) as it is."""
    if isinstance(value, (torch.device, str)) or type(value) is int:
        return _META
    if isinstance(value, torch.Tensor):
        return value if value.is_meta else torch.empty((), dtype=value.dtype, device=_META)
    return value


def _meta_stays_meta(func: Callable, args: tuple, kwargs: dict) -> Any:
    """A device move of a ``meta`` tensor (``.to(device)``, ``.to(other)`` or ``.to(tensor=other)``, ``.cpu()``, ``.cuda()``,
    ``.type_as(other)``), answered on ``meta`` with the dtype asked for (None: not such a call).

    A move changes no shape, and in a shape-only run every device stands for the one the model runs on: the
    real move would copy out values that ``meta`` does not have (RoBERTa moves its ``token_type_ids`` buffer
    to the device of positions computed from the real ids). As for a tensor already on the target device,
    ``.to()`` without a dtype change gives the tensor itself."""
    self = args[0]
    if not isinstance(self, torch.Tensor) or not self.is_meta:
        return None
    if func is torch.Tensor.to:
        return func(self, *(_meta_target(a) for a in args[1:]),
                    **{k: _meta_target(v) if k in ("device", "tensor") else v for k, v in kwargs.items()})
    if func is torch.Tensor.type_as:
        other = args[1] if len(args) > 1 else kwargs.get("other")
        return self.to(other.dtype) if isinstance(other, torch.Tensor) else None
    memory_format = kwargs.get("memory_format", torch.preserve_format)  # .cpu() / .cuda()
    return self.to(memory_format=memory_format) if memory_format is not torch.preserve_format else self


_TO = {torch.Tensor.to, torch.Tensor.type_as}
_MOVES = _TO | {torch.Tensor.cpu, torch.Tensor.cuda}
_AUTOCAST_DEVICES = ("cpu", "cuda")


# ---- checks the CPU makes and meta kernels skip ----------------------------------------------------------
def _same_dtype(*names: str) -> Callable[[tuple, dict], None]:
    """A check that the tensor operands (the first three arguments: input, weight, bias) share a dtype; its
    message names the first operand and the first that differs from it, by ``names`` (in argument order)."""
    def check(args: tuple, kwargs: dict) -> None:
        if torch.is_autocast_enabled("cpu"):  # the CPU would cast the operands to one dtype first
            return
        named = [(n, a) for n, a in (*zip((*names, "", ""), args[:3]), *kwargs.items())
                 if isinstance(a, torch.Tensor)]
        if not named:
            return
        (first, t0), *rest = named
        other = next(((n, t) for n, t in rest if t.dtype != t0.dtype), None)
        if other is not None:
            dtypes = " and ".join(str(t.dtype).replace("torch.", "") for t in (t0, other[1]))
            raise RuntimeError(f"{first or 'the input'} and {other[0] or 'another operand'} must have the same dtype, "
                               f"but got {dtypes} (the CPU refuses this; a trace on 'meta' checks it the same way)")
    return check


def embedding_ids_problem(ids: Any, weight: Any) -> str | None:
    """What is wrong with an embedding's ids, in words (``the ids run from 2 to 9, and the embedding has 7
    rows``), or ``None`` when they are all rows of ``weight`` (or are not real ids to read)."""
    if not isinstance(ids, torch.Tensor) or ids.is_meta or ids.numel() == 0 or not isinstance(weight, torch.Tensor):
        return None
    low, high = (int(v) for v in torch.aminmax(ids))  # one pass over the real ids, on the CPU
    if low < 0 or high >= weight.shape[0]:
        return f"the ids run from {low} to {high}, and the embedding has {weight.shape[0]} rows"
    return None


def _embedding_ids_in_range(args: tuple, kwargs: dict) -> None:
    ids, weight = (args + (None, None))[:2]
    problem = embedding_ids_problem(kwargs.get("input", ids), kwargs.get("weight", weight))
    if problem is not None:
        raise IndexError(f"index out of range in self: {problem}")


def _embedding_bag_ids_in_range(ids: Any, weight: Any, offsets: Any) -> None:
    """The CPU's refusal of a bag of ids outside ``weight``'s rows, which the ``meta`` kernel skips, with what is
    wrong with them. Only for a call ``F.embedding_bag`` lets through to its kernel (integer ids, 2-D without
    ``offsets`` or 1-D with them): a call it refuses for another reason fails with its own error."""
    if (not isinstance(ids, torch.Tensor) or ids.dtype not in (torch.int64, torch.int32)
            or (ids.ndim, offsets is None) not in ((2, True), (1, False))):
        return
    problem = embedding_ids_problem(ids, weight)
    if problem is not None:
        flat, rows = ids.reshape(-1), weight.shape[0]
        at = int(((flat < 0) | (flat >= rows)).nonzero()[0])  # the first bad id, as the CPU names it
        raise RuntimeError(f"Index {at} of input takes value {int(flat[at])} which is not in the valid range "
                           f"[0, {rows}): {problem}")


def _argument(args: tuple, kwargs: dict, index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs.get(name)


def _functional_embedding_bag(args: tuple, kwargs: dict) -> None:
    """``F.embedding_bag(input, weight, offsets, ...)``'s ids (``nn.EmbeddingBag`` calls it)."""
    _embedding_bag_ids_in_range(_argument(args, kwargs, 0, "input"), _argument(args, kwargs, 1, "weight"),
                                _argument(args, kwargs, 2, "offsets"))


def _torch_embedding(args: tuple, kwargs: dict) -> None:
    """``torch.embedding(weight, indices, ...)``'s ids (``F.embedding`` calls it; some libraries call it
    directly): the same check as ``F.embedding``'s, its two first arguments the other way round."""
    _embedding_ids_in_range((_argument(args, kwargs, 1, "indices"), _argument(args, kwargs, 0, "weight")), {})


def _torch_embedding_bag(args: tuple, kwargs: dict) -> None:
    """``torch.embedding_bag(weight, indices, offsets, ...)``'s ids."""
    _embedding_bag_ids_in_range(_argument(args, kwargs, 1, "indices"), _argument(args, kwargs, 0, "weight"),
                                _argument(args, kwargs, 2, "offsets"))


def failed_in_lookup(module: Any, error_type: str) -> bool:
    """Whether an exception named ``error_type`` that left a call of ``module`` may be an embedding lookup given
    ids outside its rows, worth ``explain_embedding_failure``: an ``IndexError`` in an ``Embedding`` (torch's
    "index out of range in self"), an ``IndexError`` or ``RuntimeError`` in an ``EmbeddingBag`` ("Expected i <
    index_size to be true")."""
    if isinstance(module, torch.nn.EmbeddingBag):
        return error_type in ("IndexError", "RuntimeError")
    return isinstance(module, torch.nn.Embedding) and error_type == "IndexError"


def explain_embedding_failure(error: BaseException) -> str | None:
    """For an ``IndexError`` a real device raised in an embedding lookup (torch says only "index out of range
    in self"): what is wrong with the ids, as a trace on ``meta`` says it (``embedding_ids_problem``). Read
    after the forward from the ids and weight in the traceback's ``F.embedding`` (or ``F.embedding_bag``)
    frame, so it costs nothing while the forward runs; ``None`` when no such frame holds them, or when reading
    the ids fails (CUDA ids after a device-side assert raise again): the explanation is a best effort, the
    original failure stays what is reported."""
    codes = {torch.nn.functional.embedding.__code__, torch.nn.functional.embedding_bag.__code__}
    tb = error.__traceback__
    found = None
    while tb is not None:  # the innermost lookup frame: the one that raised
        if tb.tb_frame.f_code in codes:
            found = tb.tb_frame.f_locals
        tb = tb.tb_next
    if found is None:
        return None
    try:
        return embedding_ids_problem(found.get("input"), found.get("weight"))
    except Exception:  # noqa: BLE001 - no explanation rather than a second error hiding the first
        return None


def _conv_channels(spatial: int, transposed: bool) -> Callable[[tuple, dict], None]:
    """A check that a convolution's input has the channels its weight expects, with the CPU's message: the
    ``meta`` kernels say only "Invalid channel dimensions", or (transposed) nothing at all."""
    def check(args: tuple, kwargs: dict) -> None:
        x = args[0] if args else kwargs.get("input")
        weight = args[1] if len(args) > 1 else kwargs.get("weight")
        groups = args[6] if len(args) > 6 else kwargs.get("groups", 1)  # the seventh in both signatures
        if (not isinstance(x, torch.Tensor) or not isinstance(weight, torch.Tensor) or type(groups) is not int
                or groups < 1 or weight.ndim != spatial + 2 or x.ndim not in (spatial + 1, spatial + 2)):
            return
        channels = x.shape[x.ndim - spatial - 1]
        expected = weight.shape[0] if transposed else weight.shape[1] * groups
        if channels == expected:
            return
        shape = list(x.shape) if x.ndim == spatial + 2 else [1, *x.shape]  # as the CPU names an unbatched one
        given = "transposed=1" if transposed else f"groups={groups}"
        raise RuntimeError(f"Given {given}, weight of size {list(weight.shape)}, expected input{shape} to have "
                           f"{expected} channels, but got {channels} channels instead")
    return check


def _all(*checks: Callable[[tuple, dict], None]) -> Callable[[tuple, dict], None]:
    """One check that runs ``checks`` in turn (the first to fail raises)."""
    def check(args: tuple, kwargs: dict) -> None:
        for c in checks:
            c(args, kwargs)
    return check


_CPU_CHECKS: dict[Any, Callable[[tuple, dict], None]] = {}
for _f in (torch._C._nn.linear, torch.nn.functional.linear):
    _CPU_CHECKS[_f] = _same_dtype("mat1", "mat2", "bias")
for _f in (torch.matmul, torch.mm, torch.bmm, torch.Tensor.matmul, torch.Tensor.mm, torch.Tensor.bmm,
           torch.Tensor.__matmul__, torch.Tensor.__rmatmul__):
    _CPU_CHECKS[_f] = _same_dtype("m1", "m2")
for _spatial, (_f, _t) in enumerate(((torch.conv1d, torch.conv_transpose1d), (torch.conv2d, torch.conv_transpose2d),
                                     (torch.conv3d, torch.conv_transpose3d)), start=1):
    _CPU_CHECKS[_f] = _all(_same_dtype("input", "weight", "bias"), _conv_channels(_spatial, transposed=False))
    _CPU_CHECKS[_t] = _all(_same_dtype("input", "weight", "bias"), _conv_channels(_spatial, transposed=True))
_CPU_CHECKS[torch.nn.functional.embedding] = _embedding_ids_in_range
_CPU_CHECKS[torch.embedding] = _torch_embedding
_CPU_CHECKS[torch.nn.functional.embedding_bag] = _functional_embedding_bag
_CPU_CHECKS[torch.embedding_bag] = _torch_embedding_bag


# ---- operations that write in place --------------------------------------------------------------------
_IN_PLACE_DUNDERS = {f"__i{op}__" for op in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "and",
                                              "or", "xor", "lshift", "rshift", "matmul")} | {"__setitem__"}


def _written(func: Callable, args: tuple, kwargs: dict) -> torch.Tensor | None:
    """The tensor an in-place operation writes (``x.add_(y)``, ``x += y``, ``x[i] = y``, ``out=x``), if any."""
    out = kwargs.get("out")
    if isinstance(out, torch.Tensor):
        return out
    name = getattr(func, "__name__", "")
    in_place = name in _IN_PLACE_DUNDERS or (name.endswith("_") and not name.startswith("__"))
    return args[0] if in_place and args and isinstance(args[0], torch.Tensor) else None


_set_versions = getattr(torch._C._autograd, "_unsafe_set_version_counter", None)


def _bump_version(t: torch.Tensor) -> None:
    """Move ``t``'s version counter on by one, as the in-place kernel a shape rule stood in for would: the
    trace tells a tensor written in place from one passed through unchanged by it."""
    if _set_versions is not None and not t.is_inference():
        _set_versions((t,), (t._version + 1,))


# ---- running on the CPU what meta cannot --------------------------------------------------------------
def _only_floating_on_meta(value: Any, depth: int = 0) -> bool:
    """Whether every ``meta`` tensor in ``value`` is floating-point (so its values cannot size an output)."""
    if isinstance(value, torch.Tensor):
        return not value.is_meta or value.is_floating_point() or value.is_complex()
    if depth < 2 and isinstance(value, (list, tuple)):
        return all(_only_floating_on_meta(v, depth + 1) for v in value)
    return True


def _stand_ins(value: Any, depth: int = 0) -> Any:
    """``meta`` tensors replaced by a CPU zero broadcast to their shape (no memory), the rest as it is."""
    if isinstance(value, torch.Tensor):
        return torch.zeros((), dtype=value.dtype).expand(value.shape) if value.is_meta else value
    if depth < 2 and isinstance(value, (list, tuple)):
        moved = [_stand_ins(v, depth + 1) for v in value]
        return moved if isinstance(value, list) else tuple(moved)
    return value


# Operations whose integer outputs come from their real operands alone: those outputs stay real.
_INTEGER_OUTPUTS_FROM_REAL = {torch._pack_padded_sequence}


def _outputs_to_meta(value: Any, keep_integers: bool, depth: int = 0) -> Any:
    if isinstance(value, torch.Tensor):
        if keep_integers and keeps_values(value):
            return value
        return torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device=_META)
    if depth < 2 and isinstance(value, tuple):
        moved = [_outputs_to_meta(v, keep_integers, depth + 1) for v in value]
        return type(value)(*moved) if hasattr(value, "_fields") else tuple(moved)
    if depth < 2 and isinstance(value, list):
        return [_outputs_to_meta(v, keep_integers, depth + 1) for v in value]
    return value


_NOT_RUN = object()


def _run_with_stand_ins(func: Callable, args: tuple, kwargs: dict) -> Any:
    """``func`` run on the CPU with stand-ins for its floating ``meta`` operands, outputs moved to ``meta``;
    ``_NOT_RUN`` when a ``meta`` operand's values could size the output, or the output is not plain tensors."""
    if not (_only_floating_on_meta(args) and all(_only_floating_on_meta(v) for v in kwargs.values())):
        return _NOT_RUN
    try:
        out = func(*_stand_ins(args), **{k: _stand_ins(v) for k, v in kwargs.items()})
    except Exception:  # noqa: BLE001 - not runnable this way either: the caller reports the meta error
        return _NOT_RUN
    if isinstance(out, torch.Tensor) and (out.is_nested or out.layout != torch.strided):
        return _NOT_RUN
    return _outputs_to_meta(out, func in _INTEGER_OUTPUTS_FROM_REAL)


def _no_formula(func: Any) -> None:
    """No shape formula for any operation (``ShapeOnlyMode(formulas=False)``)."""


class ShapeOnlyMode(TorchFunctionMode):
    """Moves real tensors to ``meta`` where they meet ``meta`` ones; answers RNN kernels with shapes.

    Enter it around a forward whose parameters and floating-point inputs are on ``meta``. Integer and
    boolean tensors stay real as long as they can: ``.to()`` a ``meta`` device or tensor keeps their values
    (only the dtype changes), a ``meta`` tensor moved to any device stays on ``meta``, and a factory asked for an integer tensor on ``meta`` (``torch.arange(n,
    device=x.device)``) makes it on the CPU, so positions, masks and lengths can be read by the forward.

    ``formulas=False`` runs torch's ``meta`` kernel for every operation instead of answering the common ones
    with a shape formula (``shape_rules``): slower, but every operation reaches torch's dispatcher, where a
    dispatch mode that counts them (``FlopCounterMode``) sees it. The shapes are the same either way.
    """

    def __init__(self, formulas: bool = True) -> None:
        super().__init__()
        self._rule_for = rule_for if formulas else _no_formula
        # Autocast regions ("cpu:bfloat16") active at a matrix product or convolution run on meta: meta tensors
        # take no part in autocast, so those ops kept their operands' dtype where the real device casts them.
        self.autocast_ignored: set[str] = set()

    def _note_autocast(self) -> None:
        """At an op autocast casts first (a matrix product, a convolution): note each autocast on, which meta ignores."""
        for device in _AUTOCAST_DEVICES:
            if torch.is_autocast_enabled(device):
                self.autocast_ignored.add(f"{device}:{str(torch.get_autocast_dtype(device))[6:]}")

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        check = _CPU_CHECKS.get(func)
        if check is not None and (_placement(args) & 1 or any(_placement(v) & 1 for v in (kwargs or {}).values())):
            self._note_autocast()
            check(args, kwargs or _NO_KWARGS)
        rule = self._rule_for(func)
        if rule is not None:  # a shape formula (shape_rules), when it understands the call
            out = rule(args, kwargs or _NO_KWARGS)
            if out is not None:
                target = _written(func, args, kwargs or _NO_KWARGS)
                if target is None and args and out is args[0] and (
                        (kwargs or _NO_KWARGS).get("inplace") is True or (len(args) > 1 and args[-1] is True)):
                    target = out  # F.relu(x, inplace=True): the functional form of an in-place write
                if target is not None:  # a write answered without running: its version moves as a run's would
                    _bump_version(target)
                return out
        kwargs = kwargs or _NO_KWARGS
        kernel = _RNN_KERNELS.get(func)
        if kernel is not None and _has_meta(args):
            return kernel(_to_meta(args))
        if func in _MOVES and args:
            moved = _meta_stays_meta(func, args, kwargs)
            if moved is None and func in _TO:
                moved = _keep_real_to(args, kwargs)
            if moved is not None:
                return moved
        placed = _placement(args)
        if kwargs:
            if _is_meta_target(kwargs.get("device")) and not placed & 1:  # a factory on meta
                out = func(*args, **kwargs)
                if isinstance(out, torch.Tensor) and out.device.type == "meta" and keeps_values(out):
                    return func(*args, **{**kwargs, "device": "cpu"})
                return out
            for v in kwargs.values():
                placed |= _placement(v)
        if placed & 1:
            return _on_meta(func, args, kwargs, mixed=bool(placed & 2))
        return func(*args, **kwargs)


def _on_meta(func: Callable, args: tuple, kwargs: dict, mixed: bool) -> Any:
    """Run ``func`` on ``meta`` (``mixed``: with real operands too, moved to ``meta`` first, or run on the CPU
    with stand-ins when only their values can size the output); ``ShapeOnlyUnsupported`` when neither can."""
    real = (args, kwargs)
    if mixed:
        target = _written(func, args, kwargs)
        if target is not None and not target.is_meta:
            raise ShapeOnlyUnsupported(_op_name(func), None, reason=(
                f"it writes a result computed on 'meta' into a real {str(target.dtype)[6:]} tensor of shape "
                f"{tuple(target.shape)}, whose values the forward may read afterwards"))
        args = _to_meta(args)
        kwargs = {k: _to_meta(v) for k, v in kwargs.items()}
    try:
        return func(*args, **kwargs)
    except (NotImplementedError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and not ("meta" in str(e).lower() or "Scalar" in str(e)):
            raise
        out = _run_with_stand_ins(func, *real) if mixed else _NOT_RUN
        if out is not _NOT_RUN:
            return out
        raise ShapeOnlyUnsupported(_op_name(func), e) from e


def split_inputs(value: Any) -> Any:
    """The forward's inputs for a shape-only run: floating-point tensors on ``meta``, integer ones kept real."""
    if isinstance(value, torch.Tensor):
        return value if keeps_values(value) else value.to(_META)
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(split_inputs(v) for v in value))
    if isinstance(value, (list, tuple)):
        return type(value)(split_inputs(v) for v in value)
    if isinstance(value, dict):
        return type(value)({k: split_inputs(v) for k, v in value.items()})
    return value
