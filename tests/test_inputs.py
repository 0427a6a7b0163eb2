"""The --input mini-language: shapes, dtypes, ranges, keywords, determinism and precise errors."""

from __future__ import annotations

import textwrap

import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from shapetrace.cli import main
from shapetrace.specs.inputs import DEFAULT_INT_RANGE, InputSpecError, make_inputs, parse_input


def one(spec: str) -> torch.Tensor:
    (args, kwargs) = make_inputs([spec])
    assert not kwargs
    return args[0]


def test_plain_shape_is_float32_normal():
    t = one("2,3,16,16")
    assert t.shape == (2, 3, 16, 16) and t.dtype == torch.float32
    assert t.min() < 0 < t.max()


def test_x_separated_shape_and_brackets_are_accepted():
    assert one("1x3x8x8").shape == (1, 3, 8, 8)
    assert one("(4,5)").shape == (4, 5)


def test_scalar_shape():
    assert one("scalar").shape == ()


def test_long_defaults_to_the_documented_integer_range():
    t = one("long:64,72")
    assert t.dtype == torch.int64
    assert DEFAULT_INT_RANGE == (0, 10)
    assert t.min() >= 0 and t.max() < 10 and t.max() > 0


def test_integer_range_is_half_open():
    t = one("long:200,50:3..7")
    assert t.min() == 3 and t.max() == 6


def test_bool_gives_true_and_false():
    t = one("bool:64,16")
    assert t.dtype == torch.bool and t.any() and not t.all()


@pytest.mark.parametrize("word,dtype", [("bf16", torch.bfloat16), ("float16", torch.float16), ("half", torch.float16),
                                        ("int32", torch.int32), ("double", torch.float64), ("uint8", torch.uint8)])
def test_dtype_aliases(word, dtype):
    assert one(f"{word}:3,4").dtype == dtype


def test_float_range_is_uniform_within_bounds():
    t = one("float32:1000:-1..1")
    assert t.min() >= -1 and t.max() < 1 and t.mean().abs() < 0.1


def test_zeros_and_ones_fills():
    assert one("zeros:long:2,3").sum() == 0 and one("zeros:long:2,3").dtype == torch.int64
    assert one("ones:2,3").sum() == 6


def test_named_spec_becomes_a_keyword_argument():
    args, kwargs = make_inputs(["1,4", "mask=bool:1,4"])
    assert len(args) == 1 and set(kwargs) == {"mask"} and kwargs["mask"].dtype == torch.bool


def test_same_specs_give_the_same_tensors():
    a, _ = make_inputs(["2,3", "long:5:0..1000"])
    b, _ = make_inputs(["2,3", "long:5:0..1000"])
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_other_seed_gives_other_values():
    a, _ = make_inputs(["8"], seed=0)
    b, _ = make_inputs(["8"], seed=1)
    assert not torch.equal(a[0], b[0])


def test_meta_device_gives_dataless_floating_tensors_and_integer_ones_with_the_cpus_values():
    specs = ["2,5,8", "long:4,72", "bool:2,5"]
    meta, _ = make_inputs(specs, device="meta")
    cpu, _ = make_inputs(specs)
    assert meta[0].device.type == "meta" and meta[0].shape == (2, 5, 8)
    assert torch.equal(meta[1], cpu[1]) and torch.equal(meta[2], cpu[2])  # forwards read ids, lengths, masks


def test_a_specs_values_do_not_depend_on_the_specs_before_it():
    alone, _ = make_inputs(["long:3:1..9"])
    after, _ = make_inputs(["4,4", "long:3:1..9"], seed=-1000003)  # seeded as the first spec was above
    assert torch.equal(alone[0], after[1])


@pytest.mark.parametrize("spec,words", [
    ("", ["empty"]),
    ("lnog:4,5", ["'lnog'", "did you mean 'long'"]),
    ("long", ["no shape"]),
    ("0..10:long:4", ["range comes after the shape"]),
    ("long:4:10..3", ["empty"]),
    ("long:4:0.5..3", ["integer bounds"]),
    ("4,-1", [">= 0"]),
    ("bool:4:0..1", ["bool"]),
    ("long:4:0..5:1..2", ["two ranges given ('1..2' after '0..5')"]),
    ("long:2,6:0..50:x", ["nothing may follow the range '0..50', got ':x'"]),
    ("long:4:1..3:x:y", ["got ':x:y'"]),
    ("long:4:x", ["only a range LOW..HIGH may follow, got 'x'"]),
    ("randn:long:4", ["floating dtype"]),
    ("1bad=4", ["keyword-argument name"]),
])
def test_bad_specs_say_what_is_wrong_and_show_an_example(spec, words):
    with pytest.raises(InputSpecError) as e:
        parse_input(spec)
    msg = str(e.value)
    for w in words:
        assert w in msg
    assert "1,3,224,224" in msg  # an example to copy


def test_positional_after_keyword_is_an_error():
    with pytest.raises(InputSpecError, match="positional inputs must come before"):
        make_inputs(["x=2,3", "2,3"])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=4), st.sampled_from(["", "long:", "bool:", "bf16:"]))
def test_any_shape_round_trips(dims, prefix):
    t = one(prefix + ",".join(map(str, dims)))
    assert tuple(t.shape) == tuple(dims)


def test_integer_bounds_are_exact_however_large():
    (ids,), _ = make_inputs(["long:64:9007199254740993..9007199254740995"])  # past float64's exact integers
    assert set(ids.tolist()) <= {9007199254740993, 9007199254740994}
    (low,), _ = make_inputs(["long:8:-9223372036854775808..-9223372036854775800"])
    assert low.min() >= -9223372036854775808 and low.max() < -9223372036854775800


@pytest.mark.parametrize("spec", ["float32:4:-1e39..1e39", "bf16:4:0..1e40", "f16:4:0..1e5"])
def test_float_bounds_past_the_dtypes_range_are_refused_rather_than_giving_inf_or_nan(spec):
    with pytest.raises(InputSpecError, match="reaches past what"):
        make_inputs([spec])


@pytest.fixture
def extremes(tmp_path):
    """A model file whose forward prints the smallest and largest value of each input, exactly."""
    path = tmp_path / "extremes.py"
    path.write_text(textwrap.dedent("""
        from torch import nn

        class Extremes(nn.Module):
            def forward(self, *xs):
                for x in xs:
                    print("EXTREMES", str(x.dtype), repr(x.min().item()), repr(x.max().item()))
                return xs[0]
    """))
    return path


def test_a_float_range_never_reaches_high_however_the_dtype_rounds(extremes):
    # Each of these rounded draws just below HIGH up to HIGH (in float32, or in the cast to bf16/half).
    specs = {"bf16:100000:0..1": 1.0, "float32:2000000:100..101": 101.0, "half:100000:1000..1001": 1001.0}
    args = [a for spec in specs for a in ("--input", spec)]
    r = CliRunner().invoke(main, ["trace", f"{extremes}:Extremes", *args, "-f", "json"])
    assert r.exit_code == 0, r.output
    seen = [line.split() for line in r.stderr.splitlines() if line.startswith("EXTREMES")]
    assert len(seen) == 3
    for (_, dtype, low, high), (spec, top) in zip(seen, specs.items()):
        assert float(low) >= top - 1 and float(high) < top, (spec, dtype, low, high)


def test_a_float_range_holding_no_value_of_the_dtype_is_refused():
    with pytest.raises(InputSpecError, match="float16 has no value in"):
        parse_input("half:4:1000.1..1000.2")  # float16's values there are 0.5 apart


def test_randn_with_a_range_is_a_usage_error_that_says_to_write_rand(extremes):
    r = CliRunner().invoke(main, ["trace", f"{extremes}:Extremes", "--input", "randn:1000:0..1", "-f", "json"])
    assert r.exit_code == 2, r.output
    assert "'randn' draws from the standard normal and takes no range" in r.output
    assert "(rand:1000:0..1)" in r.output and "EXTREMES" not in r.output


def test_an_input_keyword_may_be_any_python_identifier_unicode_too(tmp_path):
    path = tmp_path / "unicode_kw.py"
    path.write_text("from torch import nn\n\nclass Takes(nn.Module):\n    def forward(self, é):\n        return é * 2\n")
    r = CliRunner().invoke(main, ["trace", f"{path}:Takes", "--input", "é=2,3"])
    assert r.exit_code == 0, r.output
    assert "(2,3)" in r.stdout


@pytest.mark.parametrize("spec", ["long:1,4:0..1e9999999", "long:1,4:-1e999999999..1", "int8:2:0..1e99999999999"])
def test_integer_bounds_with_huge_exponents_are_refused_as_not_fitting_the_dtype(spec):
    # compared before conversion: building the ten-million-digit integer would take minutes
    with pytest.raises(InputSpecError, match="does not fit int"):
        parse_input(spec)


def test_a_dimension_of_thousands_of_digits_is_refused_as_too_large():
    # past 4300 digits int() itself refuses, with advice about sys.set_int_max_str_digits
    with pytest.raises(InputSpecError, match="more elements than a tensor can hold"):
        parse_input("1," + "9" * 5000)


def test_a_huge_bad_spec_is_echoed_shortened_in_the_error():
    with pytest.raises(InputSpecError) as error:
        parse_input("x" * 100_000)
    assert len(str(error.value)) < 1000 and "(100000 characters)" in str(error.value)


# Bytes per element alive at once while each kind of input is made (measured: peak RSS matches within 1%).
@pytest.mark.parametrize(("spec", "per_element"), [
    ("1,3,28000,28000", 4),      # a float32 normal draw is the tensor itself (9.4 GB, not 28 GB)
    ("f16:1000", 4 + 2),         # drawn as float32, then converted
    ("f32:1000:0..1", 4 + 4),    # a uniform draw and its scaled copy
    ("f64:1000:0..1", 4 + 8),    # the scaled float32 copy and its float64 conversion
    ("long:1000", 8),            # drawn as int64: the tensor itself
    ("int8:1000", 8 + 1),        # drawn as int64, then converted
    ("bool:1000", 8 + 1),
    ("zeros:f64:1000", 8),       # made in place
])
def test_the_memory_estimate_is_the_peak_of_making_the_input(spec, per_element):
    p = parse_input(spec)
    assert p.scratch_bytes == per_element * p.nbytes // p.dtype.itemsize


@pytest.mark.parametrize("spec", ["0x4", "0x10,3", "long:0X1f"])
def test_a_hexadecimal_looking_shape_is_refused_rather_than_read_as_dimensions(spec):
    with pytest.raises(InputSpecError, match="reads as a hexadecimal number"):
        parse_input(spec)


def test_a_shape_mixing_x_and_commas_is_refused():
    with pytest.raises(InputSpecError, match="mixes 'x' and ','"):
        parse_input("1,3x4")


@pytest.mark.parametrize(("spec", "shape"), [("1x3x224x224", (1, 3, 224, 224)), ("10x4", (10, 4)), ("1×3", (1, 3)),
                                             ("(1,3)", (1, 3)), ("1,3,", (1, 3)), ("0,4", (0, 4)),
                                             ("0x3x4", (0, 3, 4))])
def test_the_documented_shape_forms_still_parse(spec, shape):
    assert parse_input(spec).shape == shape


def test_complex_inputs_draw_real_and_imaginary_parts_from_the_standard_normal():
    (x, y), _ = make_inputs(["complex64:4000", "c128:2,3"])
    assert x.dtype == torch.complex64 and y.dtype == torch.complex128 and y.shape == (2, 3)
    assert abs(x.real.std().item() - 0.707) < 0.05 and abs(x.imag.std().item() - 0.707) < 0.05  # torch.randn's


def test_a_complex_input_on_meta_holds_no_data():
    (x,), _ = make_inputs(["complex64:2,3"], device="meta")
    assert x.is_meta and x.dtype == torch.complex64


@pytest.mark.parametrize(("spec", "message"), [("complex64:2,3:0..1", "complex inputs take no range"),
                                               ("rand:complex64:2,3", "complex inputs are drawn with randn")])
def test_complex_inputs_refuse_what_only_real_numbers_take(spec, message):
    with pytest.raises(InputSpecError, match=message):
        parse_input(spec)


@pytest.mark.parametrize("dtype", ["uint16", "uint32", "uint64"])
def test_unsigned_inputs_take_a_range_up_to_what_randint_draws(dtype):
    (x,), _ = make_inputs([f"{dtype}:500:60000..65000"])
    values = x.to(torch.int64)
    assert str(x.dtype) == f"torch.{dtype}" and values.min() >= 60000 and values.max() < 65000


@pytest.mark.parametrize("dtype", ["float8_e4m3fn", "float8_e5m2"])
def test_float8_inputs_stay_inside_a_range_the_cast_would_round_out_of(dtype):
    (x,), _ = make_inputs([f"{dtype}:4000:0..2"])
    values = x.float()
    assert str(x.dtype) == f"torch.{dtype}" and values.min() >= 0 and values.max() < 2  # 2 itself is a float8 value


def test_a_uint64_range_is_refused_past_what_randint_can_draw_not_crashed_on():
    with pytest.raises(InputSpecError, match="HIGH \\(exclusive\\) at most 9223372036854775807"):
        parse_input("uint64:4:0..9223372036854775808")
    (x,), _ = make_inputs(["uint64:4:9223372036854775806..9223372036854775807"])
    assert x.dtype == torch.uint64
