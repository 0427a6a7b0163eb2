"""Shape rules (``tracer/shape_rules``) give exactly what torch's own meta kernels give, or step aside.

The oracle for every rule is torch: the same call on ``meta`` tensors with no mode active. Where the rule
answers, its result must have torch's shape, dtype and strides; where torch raises, the rule must decline
(return None) so torch raises its own error. Inputs cover broadcasting, type promotion, Python scalars,
zero-size and size-1 dimensions, and non-contiguous layouts (permuted, sliced, expanded, channels-last).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shapetrace
from shapetrace.tracer.records import iter_tensors
from shapetrace.tracer.shape_only import ShapeOnlyMode
from shapetrace.tracer.shape_rules import RULES, rule_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from llama_shape import LlamaDecoder, LlamaShape

META = torch.device("meta")
FLOATS = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
DTYPES = [*FLOATS, torch.int64, torch.int32, torch.uint8, torch.bool]


def laid_out(shape: tuple[int, ...], layout: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A meta tensor of ``shape`` in a given memory layout."""
    n = len(shape)
    if layout == "permuted" and n >= 2:  # dense, dimensions stored in reverse order
        return torch.empty(shape[::-1], dtype=dtype, device=META).permute(*range(n - 1, -1, -1))
    if layout == "transposed" and n >= 2:  # the last two dimensions swapped, as attention heads are
        return torch.empty((*shape[:-2], shape[-1], shape[-2]), dtype=dtype, device=META).transpose(-1, -2)
    if layout == "sliced" and n >= 1:  # not dense: every other element of the last dimension
        return torch.empty((*shape[:-1], 2 * shape[-1]), dtype=dtype, device=META)[..., ::2]
    if layout == "chunk" and n >= 2:  # not dense: the first half of a transposed tensor's last dimension
        full = torch.empty((*shape[:-2], shape[-1] * 2, shape[-2]), dtype=dtype, device=META).transpose(-1, -2)
        return full[..., : shape[-1]]
    if layout == "expanded" and n >= 1 and shape[0] != 0:  # a stretched size-1 dimension, stride 0
        return torch.empty((1, *shape[1:]), dtype=dtype, device=META).expand(shape)
    if layout == "channels_last" and n == 4:
        return torch.empty(shape, dtype=dtype, device=META).contiguous(memory_format=torch.channels_last)
    return torch.empty(shape, dtype=dtype, device=META)


LAYOUTS = ["contiguous", "permuted", "transposed", "sliced", "chunk", "expanded", "channels_last"]


def oracle(func: Callable, args: tuple, kwargs: dict) -> Any:
    """torch's own answer (its meta kernels), or the exception it raises."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return func(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - any refusal by torch is what the rule must match by declining
            return e


def check_rule(func: Callable, args: tuple, kwargs: dict | None = None, *, must_answer: bool = False) -> bool:
    """Whether the rule answered; where it did, its result is torch's (shape, dtype, strides, device)."""
    kwargs = kwargs or {}
    expected = oracle(func, args, kwargs)
    got = rule_for(func)(args, kwargs)
    if isinstance(expected, Exception):
        assert got is None, f"torch raises {expected!r} but the rule answered {got}"
        return False
    if got is None:
        assert not must_answer, f"the rule declined {func} on {describe(args)}"
        return False
    assert got.device == META
    assert got.shape == expected.shape, describe(args)
    assert got.dtype == expected.dtype, describe(args)
    assert got.stride() == expected.stride(), f"{describe(args)}: {got.stride()} != {expected.stride()}"
    return True


def describe(args: Any) -> str:
    if isinstance(args, torch.Tensor):
        return f"{str(args.dtype)[6:]}{tuple(args.shape)}@{args.stride()}"
    if isinstance(args, (list, tuple)):
        return "(" + ", ".join(describe(a) for a in args) + ")"
    return repr(args)


# ---- elementwise --------------------------------------------------------------------------------------------
sizes = st.sampled_from([0, 1, 2, 3, 5])
shapes = st.lists(sizes, min_size=0, max_size=4).map(tuple)


@st.composite
def broadcast_pair(draw) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A shape and another that broadcasts with it (size-1 dimensions, fewer leading dimensions)."""
    a = draw(shapes)
    b = [1 if draw(st.booleans()) else s for s in a][draw(st.integers(0, len(a))):]
    if draw(st.booleans()):
        a, b = tuple(b), a
    return tuple(a), tuple(b)


BINARY = [torch.add, torch.Tensor.add, torch.mul, torch.Tensor.mul, torch.sub, torch.Tensor.sub, torch.div,
          torch.Tensor.div, torch.Tensor.__rsub__, torch.pow, torch.Tensor.__pow__, torch.Tensor.__rpow__,
          torch.maximum, torch.eq, torch.Tensor.lt, torch.Tensor.ge]
UNARY = [torch.neg, torch.Tensor.neg, torch.abs, torch.cos, torch.Tensor.sin, torch.exp, torch.Tensor.rsqrt,
         torch.sqrt, torch.tanh, torch.sigmoid, torch.Tensor.reciprocal, torch.relu, F.silu, F.relu, F.gelu, F.mish,
         torch.Tensor.__rdiv__]

operand_dtypes = st.sampled_from(DTYPES)
scalars = st.sampled_from([2, 2.5, True, -1])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(func=st.sampled_from(BINARY), pair=broadcast_pair(), layouts=st.tuples(*[st.sampled_from(LAYOUTS)] * 2),
       dtypes=st.tuples(operand_dtypes, operand_dtypes), scalar=st.none() | scalars, scalar_first=st.booleans())
def test_binary_elementwise_rules_match_torch(func, pair, layouts, dtypes, scalar, scalar_first) -> None:
    a = laid_out(pair[0], layouts[0], dtypes[0])
    if scalar is None:
        args = (a, laid_out(pair[1], layouts[1], dtypes[1]))
    else:
        args = (scalar, a) if scalar_first and func in BINARY[:4:2] else (a, scalar)  # torch.add(2, x), torch.mul
    plain = scalar is None and dtypes == (torch.float32, torch.float32) and func.__name__ != "__rpow__"
    check_rule(func, args, must_answer=plain and "sliced" not in layouts)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(func=st.sampled_from(UNARY), shape=shapes, layout=st.sampled_from(LAYOUTS), dtype=operand_dtypes)
def test_unary_elementwise_rules_match_torch(func, shape, layout, dtype) -> None:
    x = laid_out(shape, layout, dtype)
    args = (x, 2) if func.__name__ == "__rdiv__" else (x,)  # names: other tools (torchlens) rebind torch's attributes
    regular = layout == "contiguous" or all(size > 1 for size in shape)  # activations leave the rest to torch
    check_rule(func, args, must_answer=dtype == torch.float32 and regular)


@pytest.mark.parametrize("layouts", [("transposed", "contiguous"), ("chunk", "chunk"), ("permuted", "expanded"),
                                     ("channels_last", "contiguous"), ("channels_last", "channels_last")])
@pytest.mark.parametrize("func", [torch.mul, torch.add])
def test_elementwise_strides_follow_the_first_operand_that_decides(func, layouts) -> None:
    """``q * cos`` with transposed attention heads keeps the heads' layout, as torch's kernels do."""
    a, b = laid_out((2, 4, 6, 8), layouts[0]), laid_out((2, 4, 6, 8), layouts[1])
    assert check_rule(func, (a, b), must_answer=True)
    assert check_rule(func, (a, laid_out((6, 8), "contiguous")), must_answer=True)


@pytest.mark.parametrize(("func", "args", "kwargs"), [
    (torch.add, "xy", {"alpha": 2}),  # alpha: not covered
    (torch.maximum, "x2", {}),  # maximum with a number: torch refuses
    (torch.sub, "bb", {}),  # subtraction of booleans: torch refuses
    (torch.mul, "xz", {}),  # shapes that do not broadcast
    (torch.Tensor.add_, "yx", {}),  # in place into a smaller tensor
    (torch.Tensor.div_, "ix", {}),  # true division in place into integers
    (torch.div, "xy", {"rounding_mode": "round"}),
    (torch.pow, "ii", {}),  # integer powers: left to torch
])
def test_rules_decline_calls_they_do_not_cover_and_torch_answers_them(func, args, kwargs) -> None:
    values = {"x": torch.empty(3, 4, device=META), "y": torch.empty(4, device=META), "2": 2,
              "b": torch.empty(3, dtype=torch.bool, device=META), "z": torch.empty(5, device=META),
              "i": torch.empty(3, 4, dtype=torch.long, device=META)}
    call = tuple(values[k] for k in args)
    assert rule_for(func)(call, kwargs) is None
    expected = oracle(func, call, kwargs)
    with ShapeOnlyMode():
        got = oracle(func, call, kwargs)
    if isinstance(expected, Exception):
        assert type(got) is type(expected) or "shape-only" in str(got)
    else:
        assert (got.shape, got.dtype, got.stride()) == (expected.shape, expected.dtype, expected.stride())


@pytest.mark.parametrize("func", [torch.Tensor.add_, torch.Tensor.mul_, torch.Tensor.sub_])
def test_in_place_rules_return_the_tensor_itself(func) -> None:
    x = laid_out((2, 3, 4), "transposed")
    with ShapeOnlyMode():
        assert func(x, torch.empty(4, device=META)) is x
        assert func(x, 2) is x
    with ShapeOnlyMode():
        assert F.relu(x, inplace=True) is x


# ---- matrix products -------------------------------------------------------------------------------------------
MATMUL_CASES = [((3, 4), (4, 5)), ((4,), (4,)), ((4,), (4, 5)), ((3, 4), (4,)), ((2, 3, 4), (4, 5)),
                ((2, 3, 4), (4,)), ((4,), (2, 4, 5)), ((3, 4), (2, 4, 5)), ((2, 1, 3, 4), (5, 4, 6)),
                ((0, 3, 4), (4, 0)), ((2, 3, 4), (2, 5, 6)), ((2, 3, 4), (3, 4, 5))]


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "permuted", "sliced"])
@pytest.mark.parametrize(("a", "b"), MATMUL_CASES)
@pytest.mark.parametrize("func", [torch.matmul, torch.Tensor.__matmul__])
def test_matmul_rule_matches_torch(func, a, b, layout) -> None:
    check_rule(func, (laid_out(a, layout), laid_out(b, "contiguous")), must_answer=layout == "contiguous"
               and oracle(func, (laid_out(a, layout), laid_out(b, "contiguous")), {}) is not None)
    check_rule(func, (laid_out(a, "contiguous"), laid_out(b, layout)))


@pytest.mark.parametrize(("a", "b"), [((2, 3, 4), (2, 4, 5)), ((2, 3, 4), (3, 4, 5)), ((3, 4), (4, 5))])
@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_bmm_rule_matches_torch(a, b, layout) -> None:
    check_rule(torch.bmm, (laid_out(a, layout), laid_out(b, layout)))


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "permuted", "sliced", "expanded"])
@pytest.mark.parametrize("shape", [(4,), (3, 4), (2, 3, 4), (2, 1, 3, 4), (0, 4)])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_linear_rule_matches_torch(shape, layout, bias, dtype) -> None:
    x, w = laid_out(shape, layout, dtype), torch.empty(5, 4, dtype=dtype, device=META)
    args = (x, w, torch.empty(5, dtype=dtype, device=META)) if bias else (x, w)
    check_rule(F.linear, args, must_answer=True)


def test_linear_rule_declines_mismatched_sizes_and_dtypes() -> None:
    x = torch.empty(3, 4, device=META)
    assert not check_rule(F.linear, (x, torch.empty(5, 3, device=META)))
    assert not check_rule(F.linear, (x, torch.empty(5, 4, dtype=torch.float16, device=META)))
    assert not check_rule(F.linear, (x, torch.empty(5, 4, device=META), torch.empty(5, 1, device=META)))


@pytest.mark.parametrize("layouts", [("contiguous", "contiguous"), ("transposed", "transposed"),
                                     ("sliced", "permuted")])
@pytest.mark.parametrize("bias_shape", [(5,), (3, 5), (1, 5), (), (3, 1), (4,)])
@pytest.mark.parametrize("kwargs", [{}, {"beta": 0.5, "alpha": 2}])
def test_addmm_rule_matches_torch(layouts, bias_shape, kwargs) -> None:
    a, b = laid_out((3, 4), layouts[0]), laid_out((4, 5), layouts[1])
    bias = torch.empty(bias_shape, device=META)
    check_rule(torch.addmm, (bias, a, b), kwargs, must_answer=bias_shape != (4,))
    check_rule(torch.addmm, (bias, a, laid_out((3, 5), layouts[1])), kwargs)


# ---- attention, softmax, normalisation -----------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "permuted"])
@pytest.mark.parametrize("kwargs", [{}, {"is_causal": True}, {"scale": 0.5}, {"dropout_p": 0.0},
                                    {"attn_mask": "bool"}, {"attn_mask": "float"}, {"attn_mask": "row"}])
@pytest.mark.parametrize(("heads", "kv_heads", "gqa"), [(4, 4, False), (8, 2, True), (8, 2, False)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_attention_rule_matches_torch(layout, kwargs, heads, kv_heads, gqa, dtype) -> None:
    q = laid_out((2, heads, 5, 8), layout, dtype)
    k, v = laid_out((2, kv_heads, 7, 8), layout, dtype), laid_out((2, kv_heads, 7, 6), layout, dtype)
    masks = {"bool": torch.empty(5, 7, dtype=torch.bool, device=META),
             "float": torch.empty(2, 1, 5, 7, dtype=dtype, device=META),
             "row": torch.empty(2, 1, 1, 7, dtype=torch.bool)}  # real, on the CPU, as a padding mask is
    if "attn_mask" in kwargs:
        kwargs = {"attn_mask": masks[kwargs["attn_mask"]]}
    if gqa:
        kwargs = {**kwargs, "enable_gqa": True}
    func = F.scaled_dot_product_attention
    if "attn_mask" in kwargs and not kwargs["attn_mask"].is_meta:  # torch needs it on meta; the mode moves it
        expected = oracle(func, (q, k, v), {**kwargs, "attn_mask": kwargs["attn_mask"].to(META)})
        got = rule_for(func)((q, k, v), kwargs)
        if isinstance(expected, Exception):
            assert got is None
        else:
            assert got is not None and (got.shape, got.dtype, got.stride()) == (
                expected.shape, expected.dtype, expected.stride())
        return
    check_rule(func, (q, k, v), kwargs, must_answer=heads == kv_heads or gqa)


@pytest.mark.parametrize("func", [F.softmax, F.log_softmax, torch.softmax, torch.Tensor.softmax,
                                  torch.Tensor.log_softmax])
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "sliced", "channels_last"])
@pytest.mark.parametrize("dim", [-1, 1, 0])
@pytest.mark.parametrize("dtype", [None, torch.float64])
def test_softmax_rules_match_torch(func, layout, dim, dtype) -> None:
    x = laid_out((2, 3, 4, 5), layout, torch.float16)
    kwargs = {"dtype": dtype} if dtype is not None else {}
    check_rule(func, (x, dim), kwargs, must_answer=True)
    check_rule(func, (laid_out((2, 3), "contiguous", torch.long), dim), kwargs)


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "sliced", "permuted"])
@pytest.mark.parametrize("weight", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_normalisation_rules_match_torch(layout, weight, dtype) -> None:
    x = laid_out((2, 3, 8), layout, dtype)
    w = torch.empty(8, dtype=dtype, device=META) if weight else None
    check_rule(F.rms_norm, (x, (8,)), {"weight": w, "eps": 1e-6}, must_answer=True)
    check_rule(torch.rms_norm, (x, [8], w, None), must_answer=True)
    check_rule(F.layer_norm, (x, (8,)), {"weight": w, "bias": w, "eps": 1e-5}, must_answer=True)
    check_rule(F.layer_norm, (x, (3, 8)), {})
    check_rule(F.rms_norm, (x, (4,)), {})  # does not match the input: torch raises, the rule declines


# ---- joining, repeating, embedding -------------------------------------------------------------------------------
@pytest.mark.parametrize("layouts", [("contiguous", "contiguous"), ("chunk", "chunk"), ("transposed", "sliced"),
                                     ("channels_last", "channels_last"), ("channels_last", "contiguous"),
                                     ("permuted", "permuted")])
@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("dtypes", [(torch.float32, torch.float32), (torch.float16, torch.float32),
                                    (torch.long, torch.float16)])
def test_cat_rule_matches_torch(layouts, dim, dtypes) -> None:
    a, b = laid_out((2, 3, 4, 5), layouts[0], dtypes[0]), laid_out((2, 3, 4, 5), layouts[1], dtypes[1])
    check_rule(torch.cat, ([a, b], dim), must_answer="channels_last" not in layouts)
    check_rule(torch.cat, ((a, b, a),), {"dim": dim})
    check_rule(torch.cat, ([laid_out((2, 3), layouts[0]), laid_out((2, 4), layouts[1])], dim))
    empty = torch.empty(0, dtype=dtypes[0], device=META)  # an empty key/value cache, skipped by torch
    check_rule(torch.cat, ([empty, b], dim), must_answer=dtypes[0] == dtypes[1] and "channels_last" not in layouts)
    check_rule(torch.cat, ([a, empty, b], dim))
    check_rule(torch.cat, ([empty, empty], 0))


@pytest.mark.parametrize(("n", "m"), [(3, 4), (1, 4), (3, 1), (0, 2)])
@pytest.mark.parametrize("dtypes", [(torch.float32, torch.float32), (torch.long, torch.float16)])
def test_outer_rule_matches_torch(n, m, dtypes) -> None:
    a, b = laid_out((n,), "contiguous", dtypes[0]), laid_out((m,), "contiguous", dtypes[1])
    check_rule(torch.outer, (a, b), must_answer=True)
    check_rule(torch.outer, (laid_out((n,), "sliced"), b))


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "chunk"])
@pytest.mark.parametrize(("repeats", "dim"), [(2, 1), (3, -1), (1, 0), (0, 2), (2, None)])
def test_repeat_interleave_rule_matches_torch(layout, repeats, dim) -> None:
    x = laid_out((2, 4, 5, 6), layout)
    kwargs = {"dim": dim} if dim is not None else {}
    check_rule(torch.Tensor.repeat_interleave, (x, repeats), kwargs, must_answer=True)
    check_rule(torch.repeat_interleave, (x, repeats), kwargs, must_answer=True)


@pytest.mark.parametrize("ids_shape", [(2, 7), (5,), (0, 3), ()])
@pytest.mark.parametrize("kwargs", [{}, {"padding_idx": 1}, {"padding_idx": -2}])
def test_embedding_rule_matches_torch(ids_shape, kwargs) -> None:
    weight = torch.empty(10, 4, device=META)
    ids = torch.zeros(ids_shape, dtype=torch.long)
    expected = F.embedding(ids.to(META), weight, **kwargs)
    got = rule_for(F.embedding)((ids, weight), kwargs)
    assert (got.shape, got.dtype, got.stride()) == (expected.shape, expected.dtype, expected.stride())
    assert rule_for(F.embedding)((ids, weight), {"padding_idx": 10}) is None  # out of range: torch says so
    assert rule_for(F.embedding)((ids.float(), weight), {}) is None


# ---- convolutional networks -----------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "permuted", "sliced", "transposed"])
@pytest.mark.parametrize("shape", [(2, 4, 5, 6), (2, 4, 7), (2, 4), (1, 4, 1, 1), (3, 4, 1, 5), (2, 4, 3, 1, 2)])
@pytest.mark.parametrize(("params", "training"), [(True, False), (False, False), (True, True), ("stats_only", True)])
def test_batch_norm_rule_matches_torch(layout, shape, params, training) -> None:
    x = laid_out(shape, layout)
    c = shape[1]
    stats = (torch.empty(c, device=META), torch.empty(c, device=META)) if params else (None, None)
    kwargs = {"training": training}
    if params is True:
        kwargs.update(weight=torch.empty(c, device=META), bias=torch.empty(c, device=META))
    check_rule(F.batch_norm, (x, *stats), kwargs, must_answer=(x.numel() // c > 1 or not training) and (
        training or params) and layout != "sliced")


def test_batch_norm_rule_declines_a_single_value_per_channel_in_training() -> None:
    x = torch.empty(1, 4, 1, 1, device=META)
    assert rule_for(F.batch_norm)((x, None, None), {"training": True}) is None
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.batch_norm(x, None, None, training=True)


CONVS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


@pytest.mark.parametrize("spatial", [1, 2, 3])
@pytest.mark.parametrize("options", [{}, {"stride": 2}, {"padding": 1}, {"padding": "same"}, {"padding": "valid"},
                                     {"dilation": 2, "padding": 2}, {"groups": 2}, {"stride": (2,), "padding": [1]},
                                     {"padding": 3, "stride": 3, "dilation": 1}, {"padding": "same", "stride": 2},
                                     {"groups": 3}])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced"])
@pytest.mark.parametrize(("batched", "bias"), [(True, True), (False, False)])
def test_convolution_rules_match_torch(spatial, options, layout, batched, bias) -> None:
    sizes = (9, 8, 7)[:spatial]
    x = laid_out((2, 4, *sizes) if batched else (4, *sizes), layout)
    groups = options.get("groups", 1)
    weight = torch.empty(6, 4 // groups if 4 % groups == 0 else 1, *(3,) * spatial, device=META)
    args = (x, weight, torch.empty(6, device=META)) if bias else (x, weight)
    check_rule(CONVS[spatial], args, options, must_answer=groups != 3 and options.get("stride") != 2
               or "padding" not in options)
    check_rule(CONVS[spatial], (x, weight, None, *options.values()) if "groups" not in options else args, {})


@pytest.mark.parametrize(("x", "weight", "options"), [
    ((1, 4, 2, 2), (6, 4, 3, 3), {}),  # kernel larger than the input
    ((1, 4, 5, 5), (6, 3, 3, 3), {}),  # channels do not match
    ((1, 4, 5, 5), (6, 4, 3, 3), {"stride": 0}),
    ((1, 4, 5, 5), (6, 4, 3, 3), {"padding": -1}),  # torch's meta kernel accepts it; the rule leaves it to torch
    ((1, 4, 5, 5), (6, 4, 3, 3), {"padding": "full"}),
    ((1, 4, 5, 5), (6, 4, 3, 3), {"stride": (1, 1, 1)}),
])
def test_convolution_rule_declines_unusual_arguments_and_torch_answers(x, weight, options) -> None:
    args = (torch.empty(x, device=META), torch.empty(weight, device=META))
    assert rule_for(F.conv2d)(args, options) is None
    expected = oracle(F.conv2d, args, options)
    with ShapeOnlyMode():
        got = oracle(F.conv2d, args, options)
    if isinstance(expected, Exception):
        assert type(got) is type(expected) or "shape-only" in str(got)
    else:
        assert (got.shape, got.stride()) == (expected.shape, expected.stride())


GROUPED_MM_CALLS = {  # (a, b, offs, b transposed): the four ways torch._grouped_mm groups its operands
    "2d-3d": ((10, 16), (3, 16, 24), [3, 5, 10], False),
    "2d-3d, b transposed": ((10, 16), (3, 24, 16), [3, 5, 10], True),
    "3d-2d": ((3, 4, 16), (16, 24), [8, 16, 24], False),
    "2d-2d": ((4, 24), (24, 16), [8, 16, 24], False),
    "3d-3d": ((3, 4, 16), (3, 16, 24), None, False),
}


def _grouped_mm_operands(a: tuple, b: tuple, offs: list | None, transposed: bool, dtype: torch.dtype) -> tuple:
    mat_b = torch.randn(b, dtype=dtype)
    return (torch.randn(a, dtype=dtype), mat_b.transpose(-2, -1) if transposed else mat_b,
            None if offs is None else torch.tensor(offs, dtype=torch.int32))


@pytest.mark.skipif(not hasattr(torch, "_grouped_mm"), reason="this torch has no grouped matrix product")
@pytest.mark.parametrize("call", list(GROUPED_MM_CALLS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_grouped_mm_rule_matches_the_cpu_kernel(call, dtype) -> None:
    # The oracle is the CPU kernel: the meta one refuses float32, which a mixture-of-experts forward on the CPU uses.
    a, b, offs = _grouped_mm_operands(*GROUPED_MM_CALLS[call], dtype)
    expected = torch._grouped_mm(a, b, offs=offs)
    meta = [None if t is None else t.to(META) for t in (a, b, offs)]
    got = rule_for(torch._grouped_mm)((meta[0], meta[1]), {"offs": meta[2]})
    assert (got.device, got.shape, got.dtype, got.stride()) == (META, expected.shape, expected.dtype, expected.stride())


@pytest.mark.skipif(not hasattr(torch, "_grouped_mm"), reason="this torch has no grouped matrix product")
@pytest.mark.parametrize(("a", "b", "offs", "kwargs"), [
    ((10, 16), (3, 24, 24), [3, 5, 10], {}),  # contraction sizes differ
    ((10, 16), (2, 16, 24), [3, 5, 10], {}),  # three groups, two matrices
    ((10, 16), (3, 16, 24), None, {}),  # a 2-D operand needs offsets
    ((3, 4, 16), (3, 16, 24), [3, 5, 10], {}),  # two 3-D operands take none
    ((10, 16), (3, 16, 6), [3, 5, 10], {}),  # rows of 24 bytes: not 16-byte aligned
    ((10, 16), (3, 16, 24), [3, 5, 10], {"bias": torch.zeros(3, 24)}),
    ((10, 16), (3, 16, 24), [3, 5, 10], {"out_dtype": torch.bfloat16}),
    ((10, 16), (3, 16, 24), torch.tensor([3, 5, 10]), {}),  # int64 offsets: they must be int32
])
def test_grouped_mm_rule_declines_what_the_cpu_kernel_refuses(a, b, offs, kwargs) -> None:
    a, b, int32_offs = _grouped_mm_operands(a, b, offs if isinstance(offs, list) else None, False, torch.float32)
    offs = offs if isinstance(offs, torch.Tensor) else int32_offs
    with pytest.raises(RuntimeError):
        torch._grouped_mm(a, b, offs=offs, **kwargs)
    on_meta = [None if t is None else t.to(META) for t in (a, b, offs)]
    kwargs = {k: v.to(META) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    assert rule_for(torch._grouped_mm)((on_meta[0], on_meta[1]), {"offs": on_meta[2], **kwargs}) is None


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced", "permuted", "transposed"])
@pytest.mark.parametrize("shape", [(2, 4, 9, 10), (4, 9, 10), (2, 4, 1, 1), (1, 4, 3, 3)])
@pytest.mark.parametrize("size", [(1, 1), 3, (None, 2), (5, 7), 1])
def test_adaptive_avg_pool_rule_matches_torch(layout, shape, size) -> None:
    check_rule(F.adaptive_avg_pool2d, (laid_out(shape, layout), size), must_answer=True)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 1), (0, 4), (5,)])
def test_contiguous_rule_matches_torch_and_returns_a_contiguous_tensor_itself(layout, shape) -> None:
    x = laid_out(shape, layout)
    check_rule(torch.Tensor.contiguous, (x,), must_answer=True)
    if x.is_contiguous():
        assert rule_for(torch.Tensor.contiguous)((x,), {}) is x


# ---- the mode as a whole --------------------------------------------------------------------------------------
def test_rules_leave_all_real_calls_to_torch() -> None:
    """Integer tensors kept real for the forward to read must stay real and exact."""
    ids = torch.tensor([[3, 0, 0], [1, 2, 0]])
    with ShapeOnlyMode():
        lengths = (ids != 0).sum(1)
        doubled = ids * 2 + 1
    assert lengths.tolist() == [1, 2]
    assert doubled.tolist() == [[7, 1, 1], [3, 5, 1]]


def test_rules_step_aside_when_autograd_must_record() -> None:
    w = torch.empty(3, 4, device=META, requires_grad=True)
    with torch.enable_grad(), ShapeOnlyMode():
        out = w * 2
    assert out.requires_grad and out.grad_fn is not None
    assert rule_for(torch.Tensor.mul)((w, 2), {}) is None


def test_a_torch_function_rebound_by_torchlens_still_finds_its_rule() -> None:
    """torchlens replaces torch's functions with wrappers that carry the original's id; the mode sees those."""
    mul = next(f for f in RULES if getattr(f, "__qualname__", "") == "TensorBase.mul")

    def wrapper(*args, **kwargs):
        return mul(*args, **kwargs)
    wrapper.__tl_original_id__ = id(mul)
    assert rule_for(wrapper) is RULES[mul]
    assert rule_for(lambda x: x) is None


class CountAtenOps(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def test_a_resnet_on_meta_runs_no_convolution_or_batch_norm_kernel() -> None:
    torchvision = pytest.importorskip("torchvision")
    with torch.device("meta"):
        model = torchvision.models.resnet18(weights=None).eval()
    x = torch.empty(2, 3, 64, 64, device=META)
    with torch.no_grad(), CountAtenOps() as counted, ShapeOnlyMode():
        out = model(x)
    assert out.shape == (2, 1000)
    assert not {"aten.convolution", "aten.native_batch_norm", "aten._native_batch_norm_legit_no_training",
                "aten.relu", "aten.add_"} & set(counted.ops), set(counted.ops)


def test_a_llama_decoder_layer_on_meta_runs_no_elementwise_or_attention_kernel() -> None:
    """The rules answer every elementwise op, attention and norm of a decoder: only factories and views remain."""
    shape = LlamaShape(vocab=64, width=32, layers=2, heads=4, kv_heads=2, mlp=48)
    with torch.device("meta"):
        model = LlamaDecoder(shape).eval()
    ids = torch.randint(0, 64, (2, 9))
    with torch.no_grad(), CountAtenOps() as counted, ShapeOnlyMode():
        model(ids)
    computing = {op for op in counted.ops if not op.startswith(("aten.empty", "aten.view", "aten.transpose",
                                                                 "aten.split", "aten.slice", "aten.arange",
                                                                 "aten._unsafe_view", "aten.clone",
                                                                 "aten.expand", "aten.unsqueeze", "aten.copy_", "aten.promote_types",
                                                                 "aten._to_copy", "aten.reshape", "aten.t"))}
    # aminmax: the embedding's check that the (real, CPU) ids are in range, as the CPU kernel would check
    allowed = {"aten.mul", "aten.div", "aten.neg", "aten.pow", "aten.aminmax", "aten._local_scalar_dense"}
    assert computing <= allowed and len(counted.ops) < 40 * 2 + 60, computing


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_llama_decoder_on_meta_has_the_shapes_of_the_real_run_call_by_call(kv_heads: int) -> None:
    shape = LlamaShape(vocab=64, width=32, layers=3, heads=4, kv_heads=kv_heads, mlp=48)
    torch.manual_seed(0)
    model = LlamaDecoder(shape).eval()
    ids = torch.randint(0, 64, (2, 9))
    meta = shapetrace.trace(model, ids, device="meta", ops=True)
    real = shapetrace.trace(model, ids, ops=True)

    def shapes(value: Any) -> list[tuple[tuple[int, ...], str]]:
        return [(tuple(m.shape), m.dtype) for m in _metas(value)]
    assert [(c.module, shapes([c.inputs, c.kwargs]), shapes(c.outputs)) for c in meta.calls] == \
        [(c.module, shapes([c.inputs, c.kwargs]), shapes(c.outputs)) for c in real.calls]
    meta_ops = [(o.name, shapes(o.inputs), shapes(o.outputs)) for o in meta.ops]
    assert any(name == "scaled_dot_product_attention" for name, _, _ in meta_ops), [n for n, _, _ in meta_ops]
    assert meta_ops == [(o.name, shapes(o.inputs), shapes(o.outputs)) for o in real.ops]


def _metas(value: Any) -> list:
    return [m for _, m in iter_tensors(value)]
