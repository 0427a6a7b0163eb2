"""The ``--input`` mini-language: a short text spec -> an example tensor for a model's forward.

Grammar (one spec per positional input; several ``--input`` options give several inputs)::

    SPEC   := [NAME "="] [WORD ":"]... SHAPE [":" LOW ".." HIGH]
    SHAPE  := INT ("," INT)*          dimensions, e.g. 1,3,224,224   (also 1x3x224x224, not mixed with
                                      commas; "scalar" for ()); decimal: 0x4 is refused, not read as (0, 4)
    WORD   := a dtype  float32 (float, fp32), float16 (half, fp16), bfloat16 (bf16), float64 (double),
                       float8_e4m3fn, float8_e5m2, int64 (long), int32 (int), int16, int8, uint8, uint16,
                       uint32, uint64, bool, complex64 (cfloat, c64), complex128 (cdouble, c128)
            | a fill   randn (the default for floats; takes no range), rand (uniform in [0, 1) or in the
                       range), zeros, ones

Examples::

    1,3,224,224          float32, standard normal values
    long:4,72            int64, integers in [0, 10)   (the default integer range; give one for embeddings)
    long:8,5:0..100      int64, integers in [0, 100)  (LOW..HIGH is half-open, like torch.randint)
    bool:2,16            bool, random True/False
    bf16:2,3,32,32       bfloat16, standard normal values
    complex64:2,257      complex64, real and imaginary parts standard normal (complex inputs take no range)
    float32:4,10:-1..1   float32, uniform in [-1, 1)   (never 1, however the dtype rounds: bf16:8:0..1 < 1)
    zeros:long:2,16      int64, all zeros
    input_ids=long:2,16  a keyword argument of the forward: forward(input_ids=...)

Values are deterministic: every spec list is generated from one ``torch.Generator`` seeded with ``seed``
(0 by default; the i-th spec's generator is seeded with ``seed + 1000003 * i``), so the same specs always
give the same tensors, and a spec's values do not depend on the specs before it. On the ``meta`` device
(shape-only tracing) floating-point tensors hold no data; integer and boolean ones are made as on the CPU,
with the same values, because forwards read them (token ids, lengths, masks: ``tracer/shape_only.py``). Before anything is allocated, the bytes the inputs need are estimated and
compared with the memory the device has free (RAM, or CUDA memory): inputs that cannot fit are refused
(``InputsTooLarge``), instead of a long wait and the allocator's message; a front end that can trace shapes
only (``trace --device meta``) says so (``session.load``).
"""

from __future__ import annotations

import decimal
import difflib
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["DEFAULT_INT_RANGE", "GRAMMAR_HELP", "InputSpec", "InputSpecError", "InputsTooLarge", "check_fits",
           "free_memory", "make_inputs", "parse_input"]

DEFAULT_INT_RANGE = (0, 10)

GRAMMAR_HELP = (
    "SPEC is [NAME=][DTYPE:][FILL:]SHAPE[:LOW..HIGH], e.g. 1,3,224,224 (float32 randn), long:4,72 "
    "(int64 in [0,10)), long:8,5:0..100 (int64 in [0,100)), bool:2,16, bf16:1,3,64,64, zeros:long:2,16, "
    "input_ids=long:2,16 (a keyword argument)."
)

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "float": torch.float32, "fp32": torch.float32, "f32": torch.float32,
    "float16": torch.float16, "half": torch.float16, "fp16": torch.float16, "f16": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float64": torch.float64, "double": torch.float64, "fp64": torch.float64, "f64": torch.float64,
    "int64": torch.int64, "long": torch.int64, "i64": torch.int64,
    "int32": torch.int32, "int": torch.int32, "i32": torch.int32,
    "int16": torch.int16, "short": torch.int16, "int8": torch.int8, "uint8": torch.uint8, "byte": torch.uint8,
    "uint16": torch.uint16, "uint32": torch.uint32, "uint64": torch.uint64,
    "bool": torch.bool,
    "complex64": torch.complex64, "cfloat": torch.complex64, "c64": torch.complex64,
    "complex128": torch.complex128, "cdouble": torch.complex128, "c128": torch.complex128,
    "float8_e4m3fn": torch.float8_e4m3fn, "float8_e5m2": torch.float8_e5m2,
}
_FILLS = ("randn", "rand", "zeros", "ones")
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_RANGE = re.compile(rf"^({_NUMBER})\.\.({_NUMBER})$")
_RANDN = re.compile("randn", re.IGNORECASE)


class InputSpecError(ValueError):
    """An ``--input`` spec that does not parse; the message says what is wrong and shows an example."""


class InputsTooLarge(InputSpecError):
    """The inputs would need more memory than the device has free; nothing was allocated. ``on_meta``: they were
    refused on the ``meta`` device already (so tracing shapes only would not help)."""

    def __init__(self, message: str, on_meta: bool = False) -> None:
        super().__init__(message)
        self.on_meta = on_meta


@dataclass(frozen=True)
class InputSpec:
    """One parsed spec: the tensor it describes, and the forward keyword it goes to (``None``: positional)."""

    text: str
    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32
    fill: str | None = None
    low: float | int | None = None  # int for an integer dtype: exact, however large
    high: float | int | None = None
    name: str | None = None

    @property
    def is_float(self) -> bool:
        return self.dtype.is_floating_point

    @property
    def nbytes(self) -> int:
        """The bytes of the tensor this spec makes."""
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def scratch_bytes(self) -> int:
        """The most bytes alive at once while ``make`` makes the tensor, the tensor included: what it draws and
        converts, step by step (zeros and ones are made in place; integers and bools are drawn as int64 and
        converted, int64 staying as drawn; uniform floats as a float32 draw, scaled into a second float32 tensor
        and then converted; normal floats as float32, then converted)."""
        n = math.prod(self.shape)
        if self.fill in ("zeros", "ones") or self.dtype.is_complex:  # complex values are drawn as they are
            return self.nbytes
        if not self.is_float:
            return 8 * n + (self.nbytes if self.dtype != torch.int64 else 0)
        converted = 0 if self.dtype == torch.float32 else self.nbytes  # .to(dtype) of a float32 tensor copies
        if self.low is not None or self.fill == "rand":
            return max(8 * n, 4 * n + converted)  # the draw and its scaled copy, then the scaled one converted
        return 4 * n + converted

    def make(self, generator: torch.Generator, device: str | torch.device | None = None) -> torch.Tensor:
        """The example tensor (on CPU unless ``device`` is given). On ``meta`` a floating-point tensor holds no
        data, and an integer or boolean one is made on the CPU, as it would be there (shape-only tracing keeps
        such inputs real)."""
        if device is not None and torch.device(device).type == "meta":
            if self.is_float or self.dtype.is_complex:
                return torch.empty(self.shape, dtype=self.dtype, device="meta")
            device = None
        shape, dtype = self.shape, self.dtype
        if self.fill == "zeros":
            t = torch.zeros(shape, dtype=dtype)
        elif self.fill == "ones":
            t = torch.ones(shape, dtype=dtype)
        elif dtype == torch.bool:
            t = torch.randint(0, 2, shape, generator=generator).bool()
        elif dtype.is_complex:  # real and imaginary parts from the standard normal
            t = torch.randn(shape, generator=generator, dtype=dtype)
        elif not self.is_float:
            low, high = (self.low, self.high) if self.low is not None else DEFAULT_INT_RANGE
            t = torch.randint(int(low), int(high), shape, generator=generator, dtype=torch.int64).to(dtype)
        elif self.low is not None or self.fill == "rand":
            low, high = (self.low, self.high) if self.low is not None else (0.0, 1.0)
            t = (torch.rand(shape, generator=generator) * (high - low) + low).to(dtype)
            # float32 arithmetic and the cast to a narrower dtype round some draws up to HIGH (or below LOW):
            # HIGH is exclusive, so such values go to the nearest value of the dtype inside the range.
            bounds = _representable_range(float(low), float(high), dtype)
            if dtype.itemsize == 1:  # float8: no clamp kernel; clamped in float32, where its values are exact
                t = t.float().clamp_(*bounds).to(dtype)
            else:
                t = t.clamp_(*bounds)
        else:
            t = torch.randn(shape, generator=generator).to(dtype)
        return t.to(device) if device is not None else t


_ECHOED = 80  # the most characters of a spec (or a part of one) an error message repeats


def _shortened(text: str) -> str:
    """``text`` as an error message repeats it: quoted, its middle cut when it is long (a 100 KB spec)."""
    if len(text) <= _ECHOED:
        return repr(text)
    half = _ECHOED // 2
    return f"{text[:half]!r}...{text[-half:]!r} ({len(text)} characters)"


def _fail(spec: str, problem: str) -> InputSpecError:
    """The error for one bad spec: what is wrong with which part, one example, where the grammar is."""
    end = " " if problem.endswith("?") else ". "
    return InputSpecError(f"bad --input {_shortened(spec)}: {problem}{end}Example: --input 1,3,224,224 "
                          "(see 'shapetrace trace --help' for the grammar)")


def _parse_shape(spec: str, text: str) -> tuple[int, ...] | None:
    """The shape in ``text``, or ``None`` when ``text`` does not look like a shape at all."""
    t = text.strip().strip("()[]").replace(" ", "")
    if t in ("scalar", ""):
        return () if t == "scalar" else None
    if re.fullmatch(r"[-+]?0[xX][0-9a-fA-F]+", t.split(",")[0]):  # 0x4 would be read as the shape (0, 4)
        # (a hexadecimal literal before any comma; 0x3x4 is no literal: the zero-size shape (0, 3, 4))
        dims = re.sub("[x×]", ",", t)
        shape = f", or {dims} for that shape" if re.fullmatch(r"[-+]?\d+(,\d+)*,?", dims) else ""
        raise _fail(spec, f"{_shortened(text)} reads as a hexadecimal number, but dimensions are decimal: write "
                          f"the number in decimal{shape}")
    parts = re.split(r"[,x×]", t.rstrip(","))
    if not all(re.fullmatch(r"[-+]?\d+", p) for p in parts):
        return None
    if "," in t.rstrip(",") and re.search("[x×]", t):
        raise _fail(spec, f"{_shortened(text)} mixes 'x' and ',' between dimensions; use one of them, as in "
                          "1,3,224,224 or 1x3x224x224")
    too_long = next((p for p in parts if len(p.lstrip("+-").lstrip("0")) > _LARGEST_DIGITS), None)
    if too_long is not None:  # int() refuses past 4300 digits; any past 19 is more than a tensor holds anyway
        raise _fail(spec, f"the dimension {_shortened(too_long)} is more elements than a tensor can hold (at most "
                          "2**63 - 1)")
    dims = tuple(int(p) for p in parts)
    if any(d < 0 for d in dims):
        raise _fail(spec, f"dimensions must be >= 0, got {_shortened(text)}")
    return dims


_LARGEST = 2**63 - 1  # torch sizes are int64
_LARGEST_DIGITS = len(str(_LARGEST))


def parse_input(spec: str) -> InputSpec:  # noqa: C901 - one branch per part of the --input grammar; to split by part
    """Parse one spec (see the module docstring); ``InputSpecError`` says what is wrong."""
    if not isinstance(spec, str) or not spec.strip():
        raise _fail(str(spec), "the spec is empty")
    text = spec.strip()
    name = None
    if "=" in text:
        name, _, text = text.partition("=")
        name = name.strip()
        if not name.isidentifier():  # as Python takes a keyword argument's name (Unicode too: é=2)
            raise _fail(spec, f"{_shortened(name)} is not a valid keyword-argument name")
        if not text.strip():
            raise _fail(spec, f"no shape given after {name}=")
        if name == "self":  # forward(self=...) fails only once the forward is called
            raise _fail(spec, "'self' is the module itself, not a keyword argument the forward can take")
    parts = [p.strip() for p in text.split(":")]
    dtype: torch.dtype | None = None
    fill: str | None = None
    shape: tuple[int, ...] | None = None
    rng: tuple[float, float] | None = None
    for i, part in enumerate(parts):
        word = part.lower()
        if shape is None:
            parsed = _parse_shape(spec, part)
            if parsed is not None:
                shape = parsed
                continue
            if word in _DTYPES:
                if dtype is not None:
                    raise _fail(spec, f"two dtypes given ({_shortened(part)} after an earlier one)")
                dtype = _DTYPES[word]
                continue
            if word in _FILLS:
                if fill is not None:
                    raise _fail(spec, f"two fills given ({_shortened(part)} after {fill!r})")
                fill = word
                continue
            if _RANGE.match(part):
                raise _fail(spec, "the range comes after the shape, as in long:8,5:0..100")
            close = difflib.get_close_matches(word, [*_DTYPES, *_FILLS], n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise _fail(spec, f"{_shortened(part)} is neither a shape (like 4,72), a dtype (like long) nor a fill "
                              f"(randn, rand, zeros, ones){hint}")
        m = _RANGE.match(part)
        if m is not None and i != len(parts) - 1:  # the range is fine; what follows it is not
            after = parts[i + 1]
            if _RANGE.match(after):
                raise _fail(spec, f"two ranges given ({_shortened(after)} after {_shortened(part)})")
            raise _fail(spec, f"nothing may follow the range {_shortened(part)}, got "
                              f"{_shortened(':' + ':'.join(parts[i + 1:]))} after it")
        if m is None:
            raise _fail(spec, f"after the shape only a range LOW..HIGH may follow, got {_shortened(part)}")
        rng = (m.group(1), m.group(2))
    if shape is None:
        raise _fail(spec, "no shape given")
    if any(d > _LARGEST for d in shape) or math.prod(d for d in shape if d) > _LARGEST:
        raise _fail(spec, f"the shape {','.join(map(str, shape))} has more elements than a tensor can hold "
                          f"(at most 2**63 - 1)")
    dtype = dtype or torch.float32
    low = high = None
    if rng is not None:
        if fill in ("zeros", "ones"):
            raise _fail(spec, f"a range makes no sense with {fill!r}")
        if fill == "randn":  # a range means uniform values: drawing those silently would not be what was asked
            raise _fail(spec, "'randn' draws from the standard normal and takes no range; for uniform values in "
                              f"[{rng[0]}, {rng[1]}) write 'rand' or leave the fill out "
                              f"({name + '=' if name else ''}{_RANDN.sub('rand', text.strip(), 1)})")
        if dtype == torch.bool:
            raise _fail(spec, "bool inputs take no range (they are random True/False)")
        if dtype.is_complex:
            raise _fail(spec, "complex inputs take no range (real and imaginary parts are drawn from the standard "
                              "normal)")
        low, high = _bounds(spec, part, rng, dtype)
    if fill == "rand" and dtype.is_complex:
        raise _fail(spec, "the fill 'rand' draws real numbers; complex inputs are drawn with randn (the default)")
    if fill in ("randn", "rand") and not (dtype.is_floating_point or dtype.is_complex):
        raise _fail(spec, f"the fill {fill!r} needs a floating dtype; integers take a range like 0..100")
    return InputSpec(text=spec, shape=shape, dtype=dtype, fill=fill, low=low, high=high, name=name)


def _bounds(spec: str, part: str, texts: tuple[str, str], dtype: torch.dtype) -> tuple[float | int, float | int]:
    """LOW and HIGH of a range, checked for ``dtype``: exact integers for an integer dtype (``float`` would
    round 9007199254740993 to ...992), finite numbers within a floating dtype's range (``1e39`` is ``inf`` in
    float32, and the values would be ``nan``)."""
    name = str(dtype).removeprefix("torch.")
    if not dtype.is_floating_point:
        try:
            exact = [decimal.Decimal(t) for t in texts]
        except decimal.InvalidOperation:
            raise _fail(spec, f"the range {_shortened(part)} is not two numbers") from None
        if any(not d.is_finite() or d != d.to_integral_value() for d in exact):
            raise _fail(spec, f"an integer dtype needs integer bounds, got {_shortened(part)}")
        info = torch.iinfo(dtype)
        top = min(info.max, 2**63 - 1)  # torch.randint takes HIGH as an int64
        high_most = top + (info.max < 2**63 - 1)  # HIGH is exclusive: past the largest value, if int64 holds it
        # compared as Decimals before int(): int(Decimal('1e9999999')) would build a ten-million-digit number
        if exact[0] < info.min or exact[1] > high_most:
            raise _fail(spec, f"the range {_shortened(part)} does not fit {name}: LOW at least {info.min}, HIGH (exclusive) "
                              f"at most {high_most}")
        low, high = (int(d) for d in exact)
    else:
        low, high = (float(t) for t in texts)
        largest = torch.finfo(dtype).max
        if not (math.isfinite(low) and math.isfinite(high)) or max(abs(low), abs(high)) > largest \
                or high - low > torch.finfo(torch.float32).max:
            raise _fail(spec, f"the range {_shortened(part)} reaches past what {name} can hold (about ±{largest:.4g}; values "
                              "are drawn in float32): give smaller bounds")
    if high <= low:
        raise _fail(spec, f"the range {_shortened(part)} is empty (HIGH is exclusive and must exceed LOW)")
    if dtype.is_floating_point:
        first, last = _representable_range(low, high, dtype)
        if first > last:
            raise _fail(spec, f"{name} has no value in [{texts[0]}, {texts[1]}) (its values there are further "
                              "apart): give a wider range or a wider dtype")
    return low, high


def _representable_range(low: float, high: float, dtype: torch.dtype) -> tuple[float, float]:
    """The smallest value of the floating ``dtype`` that is ``>= low`` and the largest that is ``< high``: the
    bounds of ``[low, high)`` in that dtype (the first exceeds the second when the range holds none of its
    values, as ``float16`` has none in ``[1000.1, 1000.2)``)."""
    wide = torch.float64
    if dtype.itemsize == 1:  # float8: no nextafter kernel, but only 256 values to look through
        values = torch.arange(256, dtype=torch.uint8).view(dtype).to(wide)
        values = values[torch.isfinite(values)]
        inside_low, inside_high = values[values >= low], values[values < high]
        return (inside_low.min().item() if inside_low.numel() else math.inf,
                inside_high.max().item() if inside_high.numel() else -math.inf)

    def nearest(value: float, toward: float) -> torch.Tensor:
        return torch.nextafter(torch.tensor(value, dtype=dtype), torch.tensor(toward, dtype=dtype))

    lo = torch.tensor(low, dtype=wide).to(dtype)
    if lo.to(wide).item() < low:
        lo = nearest(lo.item(), math.inf)
    hi = torch.tensor(high, dtype=wide).to(dtype)
    if hi.to(wide).item() >= high:
        hi = nearest(hi.item(), -math.inf)
    return lo.item(), hi.item()


def _format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB", "EB"):
        if n < 1000 or unit == "EB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def free_memory(device: str | torch.device | None) -> int | None:
    """Bytes free for new tensors on ``device`` (available RAM for the CPU), or ``None`` when unknown/unbounded."""
    kind = torch.device(device).type if device is not None else "cpu"
    if kind == "meta":
        return None
    if kind == "cuda":
        if not torch.cuda.is_available():
            return None
        index = torch.device(device).index
        free, _ = torch.cuda.mem_get_info(index if index is not None else torch.cuda.current_device())
        return int(free)
    if kind != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(parsed: Sequence[InputSpec], device: str | torch.device | None = None) -> None:
    """Refuse (``InputsTooLarge``) inputs that need more memory than ``device`` (and the CPU they are drawn on)
    has free, before anything is allocated."""
    on_meta = device is not None and torch.device(device).type == "meta"
    if on_meta:  # only the integer and boolean inputs are made, on the CPU
        parsed, device = [p for p in parsed if not p.is_float], None
        if not parsed:
            return
    total = sum(p.nbytes for p in parsed)
    peak_cpu = total + max((p.scratch_bytes - p.nbytes for p in parsed), default=0)
    places = [("cpu", peak_cpu, "this machine has", "of RAM available")]
    if device is not None and torch.device(device).type == "cuda":
        places.append((str(device), total, f"{device} has", "of CUDA memory free"))
    for where, need, has, what in places:
        free = free_memory(where)
        if free is not None and need > free:
            biggest = max(parsed, key=lambda p: p.nbytes)
            raise InputsTooLarge(
                f"the inputs need about {_format_bytes(need)} but {has} {_format_bytes(free)} {what} "
                f"(the largest: --input {_shortened(biggest.text)}, {_format_bytes(biggest.nbytes)}). "
                + ("On --device meta integer and boolean inputs are still made (the forward may read their "
                   "values): give a smaller one." if on_meta else "Give a smaller input."), on_meta)


def make_inputs(specs: Sequence[str | InputSpec], *, seed: int = 0,
                device: str | torch.device | None = None) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``(args, kwargs)`` for the forward from a list of specs: positional in order, ``NAME=`` ones as kwargs.

    Raises ``InputSpecError`` for a spec that does not parse, and ``InputsTooLarge`` (before allocating
    anything) when the inputs cannot fit in the memory ``device`` has free.
    """
    parsed = [s if isinstance(s, InputSpec) else parse_input(s) for s in specs]
    check_fits(parsed, device)
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for i, p in enumerate(parsed):
        t = p.make(torch.Generator().manual_seed(seed + 1000003 * i), device)
        if p.name is None:
            if kwargs:
                raise InputSpecError(f"bad --input {_shortened(p.text)}: positional inputs must come before keyword inputs "
                                     f"({', '.join(kwargs)}=...)")
            args.append(t)
        else:
            if p.name in kwargs:
                raise InputSpecError(f"bad --input {_shortened(p.text)}: keyword {p.name!r} given twice")
            kwargs[p.name] = t
    return tuple(args), kwargs
