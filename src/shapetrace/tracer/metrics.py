"""Typed per-call and per-trace measurements: timing, memory, the profile's timing summary and call notes.

These are plain records like the rest of ``tracer.records`` (no torch, no presentation): numbers and short
codes only. The English a person reads (what a timer kind means, what a note says, why the GPU timer fell
back) is written by ``shapetrace.renderers.units``.

The metric records are dataclasses with typed attributes (``call.timing.total_ms``) that also read and
write as mappings of their present fields (``call.timing["total_ms"]``, ``"peak_bytes" in call.memory``,
``call.memory == {"activation_bytes": ..., "param_bytes": ...}``), the form ``design.md`` promises and
older scripts use. A field whose value is ``None`` is absent from the mapping view and from the JSON.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field, fields
from typing import Any

from typing_extensions import Self

__all__ = [
    "DTYPE_MIXED",
    "FALLBACK_NO_KERNELS",
    "FALLBACK_PROFILER_ERROR",
    "KIND_CPU",
    "KIND_EVENTS",
    "KIND_PROFILER",
    "NONFINITE_INPUT",
    "NONFINITE_LAYER",
    "NONFINITE_OUTSIDE",
    "NONFINITE_OWN_CODE",
    "NOTE_CODES",
    "STATISTIC_IQM",
    "CallMemory",
    "CallNonfinite",
    "CallTiming",
    "Note",
    "TimingSummary",
]

# Timer kinds (``CallTiming.kind`` and ``TimingSummary.kind``): how a time was measured.
KIND_CPU = "cpu-wall"          # perf_counter_ns spans on the host
KIND_PROFILER = "cuda-kernels"  # device time of the kernels a call launched (torch.profiler), idle excluded
KIND_EVENTS = "cuda-events"     # CUDA-event span on the GPU timeline, idle included

# Why the CUDA-events timer replaced torch.profiler (``TimingSummary.fallback``).
FALLBACK_NO_KERNELS = "no-kernels"          # the profiler ran but recorded no CUDA kernels (no CUPTI?)
FALLBACK_PROFILER_ERROR = "profiler-error"  # the profiler raised; ``fallback_error`` holds its first line

# Where the first NaN or Inf of a ``check_finite`` trace came from (``Trace.meta["nonfinite"]["where"]``).
NONFINITE_INPUT = "input"          # the trace's own input held it (``first``: ``"input:K"``, K-th input tensor)
NONFINITE_LAYER = "layer"          # a call without child calls made it (``first``: its call id)
NONFINITE_OWN_CODE = "own-code"    # the Python code of a call with child calls, around or between them
NONFINITE_OUTSIDE = "outside"      # code outside any traced call (a ``Tracer`` block between two forwards)

# ``Note.code`` values.
# ``TimingSummary.dtype`` of a model whose floating-point parameters have more than one dtype (no ``dtype=``
# cast given): ``Trace.model.param_dtypes`` has the bytes of each.
DTYPE_MIXED = "mixed"
STATISTIC_IQM = "interquartile-mean"  # TimingSummary.statistic: every time a mean over the middle half of the repeats
NOTE_CODES = (
    "flops-analytic",          # FLOPs from an analytic formula; ``count`` is what FlopCounterMode counted
    "compiled-region",         # a torch.compile'd region, timed as a whole
    "inside-compiled-region",  # inside such a region: not timed separately
    "cuda-graph-launches",     # ``count`` CUDA-graph replays, attributed to this call as one region
    "not-timed",               # seen by the shape pass, not called in the timed runs
    "ran-in-some-timed-runs",  # called in ``count`` of the ``of`` timed runs: its means are per forward, 0 where absent
    "untraced-calls",          # ``count`` calls inside it ran in the timed runs only: their time is in its self time
    "moved-in-timed-runs",     # the timed runs called it under another parent than the traced forward did
    "children-overlapped",     # its children ran at the same time (threads): its self time is what none covered
    "recomputation-stopped",   # rerun in backward by torch.utils.checkpoint and stopped by it on purpose
    "weights-elsewhere",       # raised, its own parameters or buffers on devices (``text``) none of its inputs is on
    "text",                    # a free-text remark read from a format-1 trace (``text``)
)

class _MetricMapping(MutableMapping):
    """The mapping view of a metric dataclass: its fields that are not ``None``."""

    __slots__ = ()
    _JSON_OMIT_NONE = True  # the codec leaves out fields that are None

    def _names(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self))  # type: ignore[arg-type]

    def __getitem__(self, key: str) -> Any:
        if key not in self._names() or getattr(self, key) is None:
            raise KeyError(key)
        return getattr(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in self._names():
            raise KeyError(f"{type(self).__name__} has no field {key!r}; its fields: {', '.join(self._names())}")
        setattr(self, key, value)

    def __delitem__(self, key: str) -> None:
        self[key]
        setattr(self, key, None)

    def __iter__(self) -> Iterator[str]:
        return (n for n in self._names() if getattr(self, n) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self.items()) == dict(other.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.items())
        return f"{type(self).__name__}({inner})"

    @classmethod
    def coerce(cls, value: Any) -> Self | None:
        """``value`` as this record: ``None`` stays ``None``, a mapping becomes the record (its keys must be
        field names), a record of this type is returned as is."""
        if value is None or isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
            unknown = sorted(set(value) - names)
            if unknown:
                raise TypeError(f"{cls.__name__} has no field {', '.join(map(repr, unknown))}; "
                                f"its fields: {', '.join(sorted(names))}")
            return cls(**value)
        raise TypeError(f"expected a {cls.__name__} or a mapping, got {type(value).__name__}")


@dataclass(eq=False, repr=False)
class CallTiming(_MetricMapping):
    """One call's times in milliseconds over the timed repeats (see ``docs/profiling.md``).

    ``total_ms`` (inclusive), ``self_ms`` (without child calls) and ``cpu_ms`` (host time; on a GPU the
    launching time) are interquartile means; ``median_ms``, ``p10_ms``, ``p90_ms`` are quantiles of the
    inclusive time. ``kind`` is the timer (``KIND_CPU``, ``KIND_PROFILER``, ``KIND_EVENTS``).
    """

    total_ms: float | None = None
    self_ms: float | None = None
    median_ms: float | None = None
    p10_ms: float | None = None
    p90_ms: float | None = None
    cpu_ms: float | None = None
    kind: str | None = None


@dataclass(eq=False, repr=False)
class CallMemory(_MetricMapping):
    """One call's memory in bytes: its output tensors (each distinct tensor once), its module's parameters
    (children included) and, on CUDA, the allocator's peak during the call above what was allocated at its
    start."""

    activation_bytes: int | None = None
    param_bytes: int | None = None
    peak_bytes: int | None = None


@dataclass(eq=False, repr=False)
class CallNonfinite(_MetricMapping):
    """The non-finite values in one call's output (``check_finite=True``), set only where there are some.

    ``nan``, ``posinf`` and ``neginf`` count the elements of its floating-point and complex output tensors
    (those nested in tuples, lists and dicts too; a complex tensor counts its real and imaginary parts apart)
    that are NaN, +Inf and -Inf; ``values`` is how many values all its checked output tensors hold, the finite
    ones included (a tensor returned twice counted once).
    """

    nan: int | None = None
    posinf: int | None = None
    neginf: int | None = None
    values: int | None = None


@dataclass(eq=False, repr=False)
class TimingSummary(_MetricMapping):
    """How a profile was timed and what the whole forward took (``Trace.timing``).

    ``forward_ms`` is the plain forward, ``profiled_ms`` the instrumented one, ``overhead`` their ratio;
    ``attributed_ms`` the sum of every call's self time and ``root_ms`` the root call's total. On CUDA with
    the profiler: ``kernel_ms`` (kernel time), ``busy_ms`` and ``gpu_idle_fraction``. ``fallback`` is a
    ``FALLBACK_*`` code when the CUDA-events timer replaced the profiler, ``fallback_error`` the first line of
    the profiler's exception. ``statistic`` names how the repeats are summed up (``STATISTIC_IQM``, the same for
    every time above and every call's ``total_ms`` / ``self_ms``); absent in profiles made before it was
    stored, whose ``forward_ms`` and ``profiled_ms`` are medians.
    """

    kind: str | None = None
    device: str | None = None
    dtype: str | None = None
    repeats: int | None = None
    warmup: int | None = None
    forward_ms: float | None = None
    profiled_ms: float | None = None
    overhead: float | None = None
    attributed_ms: float | None = None
    root_ms: float | None = None
    kernel_ms: float | None = None
    busy_ms: float | None = None
    gpu_idle_fraction: float | None = None
    fallback: str | None = None
    fallback_error: str | None = None
    statistic: str | None = None


@dataclass(frozen=True)
class Note:
    """A remark on one call, as a code (``NOTE_CODES``) with the numbers it needs (``count``, and ``of`` for a
    count out of a total); renderers word it."""

    code: str
    count: int | None = None
    text: str | None = None
    of: int | None = field(default=None, metadata={"omit": True})  # left out of the JSON when None
