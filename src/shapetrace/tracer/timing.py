"""``profile()``: per-call times, FLOPs and memory beside the shapes of a ``Trace``.

Method: passes of the capture engine (``tracer.engine``) with chosen probes, then one merge.
------
1. **Shape pass.** One forward under ``Tracer`` (the same shape and op recording as ``trace(ops=True)``)
   with two more probes: ``probes.flops.FlopProbe`` (``FlopCounterMode``'s total read at each call's start
   and end) and, on CUDA, ``probes.memory.PeakMemoryProbe`` (a stack of allocator peaks, ``PeakStack``).
2. **Timed repeats.** ``warmup + repeat`` iterations, each running the plain forward (no hooks) and an
   engine pass with ``probes.timing.TimerProbe`` alone, alternating which goes first. The timer probe reads
   ``time.perf_counter_ns`` and, on CUDA, pushes a profiler range; the shape recording never runs while
   timing. The engine's global hooks keep ``nn.TransformerEncoderLayer``'s fused fast path running.
3. **Merge.** Each timed call is keyed by ``(module, call_index)`` (so the three calls of a chunked LSTM are three
   rows) and matched to the shape pass's calls. Per repeat and call: the inclusive time, the self time
   (inclusive minus the direct children's inclusive time, so never negative) and the host time.

Self times add up: in every repeat the self times of all calls sum exactly to the root's inclusive time
(each child's time is subtracted from exactly one parent). Time outside every child — functional ops, a
fused fast path whose submodules are never called, Python overhead, the hooks' own cost — is the parent's
self time, never lost. Per-call *medians* cannot keep that property (a stall hits a different call in each
repeat, so the sum of medians falls short of the median of sums — by 4x on a busy 2-CPU machine), so
``total_ms``, ``self_ms`` and ``cpu_ms`` are *interquartile means*: means over the repeats whose root time
lies in the middle half (``central_repeats``: the middle one of 3), the same repeats for every call; the
summary's forward times use the same statistic (``TimingSummary.statistic``). Like a median they ignore
the fastest and slowest quarter; unlike per-call medians they add up exactly. A forward that does not run the
same calls every time has its repeats trimmed per group of alike repeats (``intervals.repeat_weights``); a call
that ran in only some of them gets its mean per forward and the note ``ran-in-some-timed-runs``. ``median_ms``, ``p10_ms`` and
``p90_ms`` are per-call quantiles of the inclusive time over all repeats.

Devices
-------
* CPU (``kind="cpu-wall"``): ``perf_counter_ns`` spans.
* CUDA, preferred (``kind="cuda-kernels"``): each instrumented repeat runs under
  ``torch.profiler`` with one ``record_function`` range per call. Each kernel is attributed to the innermost
  range whose CPU interval contains its launch (the CUDA runtime call, else the aten op that launched it);
  the GPU's busy time is split into segments and each segment is shared equally between the kernels running
  in it (so concurrent streams are not counted twice). Inclusive device time is the sum of self times over
  the subtree, idle gaps excluded; ``gpu_idle_fraction`` is the share of the forward's window (from the
  root's start to the later of its end and the last kernel's end) in which no kernel ran.
  ``attribute_kernels`` does this on plain interval lists.
* CUDA without CUPTI (``kind="cuda-events"``): CUDA events recorded in the hooks;
  spans on the GPU timeline, idle time included. Never synchronised inside the forward.

``torch.compile``d modules are timed as one region (their inner modules' hooks do not run in compiled code)
and CUDA-graph replays are attributed to the call that launched them; both are reported in ``Call.notes``
and ``trace.meta`` instead of silently missing hooks.

Memory
------
``Call.memory["activation_bytes"]`` (the call's output tensors) and ``["param_bytes"]`` come from shapes and
work on any device, ``meta`` included. On CUDA ``["peak_bytes"]`` is the peak allocated during the call minus
what was allocated at its start. ``torch.distributed._tools.mem_tracker.MemTracker`` was considered: it
attributes memory per module *and per category* (parameters, gradients, activations, optimizer state) by
wrapping storage allocation in a ``TorchDispatchMode`` and tracking module states; it is built for training
steps, keys results by module rather than by call (the chunk calls of one LSTM would merge), and lives in a
private namespace. A peak stack around ``torch.cuda.max_memory_allocated`` is a few lines, works per call,
and costs nothing in the timed runs, so it is used instead (``PeakStack``).
"""

from __future__ import annotations

import contextlib
import operator
import re
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.profiler  # looked up at each use (torch.profiler.profile), so a test can stand in for it
from torch import nn
from torch.autograd import DeviceType

from .api import TraceFailed, copy_for_lazy_layers, traceable
from .arguments import arguments_kept
from .capture import Checked, OwnForwardTracer, UnsupportedModel, uninitialized_lazy
from .compiled import compiled_forward, dynamo_loaded
from .engine import Engine, ModuleIndex
from .errors import ForwardInterrupted
from .guard import ModelGuard
from .input_writes import InputWrites
from .intervals import (
    Attribution,
    attribute_kernels,
    central_repeats,
    interquartile_mean,
    nested_self_times,
    quantile,
    repeat_weights,
    summarise,
    tree_self_times,
    weighted,
)
from .metrics import (
    DTYPE_MIXED,
    FALLBACK_NO_KERNELS,
    FALLBACK_PROFILER_ERROR,
    KIND_CPU,
    KIND_EVENTS,
    KIND_PROFILER,
    STATISTIC_IQM,
    CallMemory,
    CallTiming,
    Note,
    TimingSummary,
)
from .placement import forward_state_kept, model_device, place_inputs, placed
from .probes.flops import FlopProbe
from .probes.memory import PeakMemoryProbe, PeakStack
from .probes.timing import RANGE_PREFIX, TimerProbe
from .records import Failure, Trace, iter_tensors
from .shape_only import explain_embedding_failure, failed_in_lookup
from .state_values import values_kept
from .values import iter_live_tensors

__all__ = [
    "DTYPE_MIXED",
    "KIND_CPU",
    "KIND_EVENTS",
    "KIND_PROFILER",
    "Attribution",
    "PeakStack",
    "ProfileUsageError",
    "attribute_kernels",
    "central_repeats",
    "event_kind",
    "kineto_intervals",
    "nested_self_times",
    "profile",
    "quantile",
    "resolve_device",
    "resolve_dtype",
    "summarise",
]

# Timer kinds are short codes (``tracer.metrics``); ``renderers.units.timer_kind_text`` words them.
_RANGE = RANGE_PREFIX


class ProfileUsageError(ValueError):
    """A ``profile`` option that cannot be honoured here (CUDA asked for without CUDA, an unknown dtype)."""


# ---- options -------------------------------------------------------------------------------------------

def resolve_device(device: str | torch.device | None, cpu_advice: str = 'device="cpu"') -> torch.device:
    """``None`` means CUDA when available, else CPU; CUDA asked for without CUDA is a ``ProfileUsageError``
    whose advice names ``cpu_advice`` (the API's argument; a front end passes its own option)."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ProfileUsageError(f"unknown device {device!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ProfileUsageError("device 'cuda' was asked for, but torch.cuda.is_available() is False on this "
                                f"machine (no GPU, or a CPU-only torch build); use {cpu_advice}")
    if dev.type not in ("cpu", "cuda", "meta"):
        try:  # an accelerator this torch has no support for (mps on Linux) fails here, not inside the forward
            torch.zeros(0).to(dev)
        except (RuntimeError, AssertionError) as e:
            first = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
            raise ProfileUsageError(f"device {device!r} cannot be used on this machine ({first}); "
                                    f"use {cpu_advice}") from None
    return dev


def _whole_number(value: object, name: str, least: int) -> int:
    """``value`` as an int when it is a whole number >= ``least`` (``repeat``, ``warmup``), else a
    ``ProfileUsageError`` naming the argument."""
    try:
        number = operator.index(value)  # an int or numpy integer; 2.5, "3" and True are refused
    except TypeError:
        number = None
    if number is None or isinstance(value, bool) or number < least:
        raise ProfileUsageError(f"{name} must be a whole number >= {least}, got {value!r}")
    return number


_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
           "half": torch.float16, "fp32": torch.float32, "float32": torch.float32, "float": torch.float32}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``"bf16"``, ``"fp16"``, ``"fp32"`` (or a floating-point ``torch.dtype``) -> ``torch.dtype``; ``None``
    stays ``None``. Anything else is a ``ProfileUsageError``: the dtype casts parameters, which only a
    floating-point dtype can hold (``torch.int8`` would fail inside torch, which cannot give an integer
    tensor ``requires_grad``)."""
    if dtype is None:
        return None
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ProfileUsageError(f"dtype {dtype} is not a floating-point dtype: profile() casts the model's "
                                    "floating parameters and inputs to it; use bf16, fp16 or fp32")
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ProfileUsageError(f"unknown dtype {dtype!r}; use bf16, fp16 or fp32") from None


# ---- the timed repeats ---------------------------------------------------------------------------------

_RUNTIME_NAME = re.compile(r"(cuda|cu|hip)[A-Z]")  # CUDA runtime / driver and HIP API calls
_DEVICE_KINDS = ("kernel", "gpu_memcpy", "gpu_memset")


def event_kind(event: Any) -> str:
    """A profiler event's Kineto activity type (``"cpu_op"``, ``"user_annotation"``, ``"cuda_runtime"``,
    ``"kernel"``, ``"gpu_memcpy"``, ``"cuda_sync"``, ...).

    torch 2.11 and older have no ``activity_type()`` on their events; there it is inferred from the device,
    ``is_user_annotation()`` and the name: CPU events named like a CUDA/HIP API call (``cudaLaunchKernel``,
    ``cuLaunchKernel``) are runtime calls, device events named ``... Synchronize`` or ``Stream Wait Event``
    are synchronisation spans (not kernels: they would count the idle wait as busy), ``Memcpy``/``Memset``
    are copies.
    """
    get = getattr(event, "activity_type", None)
    if get is not None:
        return str(get() or "")
    name = event.name()
    annotation = name.startswith(_RANGE) or bool(getattr(event, "is_user_annotation", lambda: False)())
    if event.device_type() == DeviceType.CPU:
        if annotation:
            return "user_annotation"
        return "cuda_runtime" if "::" not in name and _RUNTIME_NAME.match(name) else "cpu_op"
    if annotation:
        return "gpu_user_annotation"
    low = name.lower()
    if "synchronize" in low or "wait event" in low:
        return "cuda_sync"
    if "memcpy" in low:
        return "gpu_memcpy"
    if "memset" in low:
        return "gpu_memset"
    return "kernel"


def kineto_intervals(events: Sequence[Any]) -> tuple[dict[int, tuple[int, int]], list[tuple[int | None, int, int]],
                                                     int]:
    """From raw profiler events: ``shapetrace/<j>`` ranges, device kernels ``(launch, start, end)`` and the
    number of CUDA-graph launches. A kernel's launch time is its runtime call's start (matched by correlation
    id), else the start of the aten op that launched it (its linked correlation id), else ``None``.
    Synchronisation spans and annotations on the device timeline are not kernels (``event_kind``)."""
    ranges: dict[int, tuple[int, int]] = {}
    runtime: dict[int, int] = {}
    ops: dict[int, int] = {}
    device: list[Any] = []
    graphs = 0
    for e in events:
        name = e.name()
        kind = event_kind(e)
        if e.device_type() == DeviceType.CPU:
            if kind.endswith(("_runtime", "_driver")):
                runtime[e.correlation_id()] = e.start_ns()
                graphs += "GraphLaunch" in name
                continue
            if name.startswith(_RANGE):
                ranges[int(name[len(_RANGE):])] = (e.start_ns(), e.end_ns())
            if e.linked_correlation_id() == 0:  # an op or a range: what kernels link to
                ops.setdefault(e.correlation_id(), e.start_ns())
        elif kind in _DEVICE_KINDS:
            device.append(e)
    kernels = [(runtime.get(e.correlation_id(), ops.get(e.linked_correlation_id())), e.start_ns(), e.end_ns())
               for e in device]
    return ranges, kernels, graphs


@dataclass
class _Run:
    """Everything the timed repeats gathered: per repeat, ``{call id: (inclusive, self, host)}`` in ms."""

    repeats: list[dict[int, tuple[float, float, float]]] = field(default_factory=list)
    plain: list[float] = field(default_factory=list)
    profiled: list[float] = field(default_factory=list)
    idle: list[float] = field(default_factory=list)
    kernel: list[float] = field(default_factory=list)
    busy: list[float] = field(default_factory=list)
    unlinked: int = 0
    graphs: int = 0
    no_kernels: int = 0  # timed repeats in which torch.profiler saw no device kernel (kept, with no device time)
    fallback: str | None = None  # why the CUDA-events timer replaced the profiler (a FALLBACK_* code)
    fallback_error: str | None = None  # the profiler's exception, first line
    # Timed calls the shape pass did not see, by the shape-pass call holding their time (most in a repeat).
    untraced: dict[int | None, dict[str, int]] = field(default_factory=dict)  # {owner: {module name: calls}}
    called: set[str] = field(default_factory=set)  # the names of the modules the timed runs called
    shape_parents: list[int | None] = field(default_factory=list)  # each shape-pass call's parent, by call id
    moved: set[int] = field(default_factory=set)  # calls a timed run made under another parent
    overlapped: set[int] = field(default_factory=set)  # calls whose children ran at the same time (threads)

    def note_untraced(self, timer: TimerProbe, call_of: dict) -> None:
        """The calls this timed run made that the shape pass did not (most in a run, per owner and module),
        and the modules it called."""
        for owner, found in timer.unmatched(call_of).items():
            held = self.untraced.setdefault(owner, {})
            for name, n in found.items():
                held[name] = max(held.get(name, 0), n)
        self.called |= timer.called_modules()

    def note_moved(self, timer: TimerProbe, call_of: dict) -> None:
        """The calls this timed run made under another parent than the shape pass saw."""
        self.moved |= timer.moved(call_of, self.shape_parents)

    def begin(self) -> dict[int, tuple[float, float, float]]:
        self.repeats.append({})
        return self.repeats[-1]


class _TimedRunFailed(Exception):
    """A forward raised in the timed runs, after the shape pass had run through: which run (1-based, warm-ups
    first) of how many (``warmup`` of them warm-ups), and the ``(module name, call_index)`` of the innermost call it left (``None`` when it
    was a plain forward, where no hook sees the calls)."""

    def __init__(self, run: int, of: int, key: tuple[str, int] | None, warmup: int | None = None) -> None:
        super().__init__(f"run {run} of {of} failed")
        self.run, self.of, self.key, self.warmup = run, of, key, warmup


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _instrumented(forward: Callable[[], Any], index: ModuleIndex, timer: TimerProbe, device: torch.device,
                  call_of: dict, run: _Run | None) -> bool:
    """One instrumented forward (an engine pass with the timer probe over the modules of ``index``); its
    samples go into ``run`` (``None`` for warm-up). Returns ``False`` when the profiler saw no device kernels
    (no CUPTI), so the caller falls back to CUDA events; a timed repeat without kernels is still recorded (no
    device time in it), so every requested repeat is in the averages."""
    timer.reset()
    if timer.mode == "profiler":
        with warnings.catch_warnings():
            # one profiler per repeat, on purpose: torch's note that a profiler keeps only its last cycle is noise
            warnings.filterwarnings("ignore", message=".*Profiler clears events at the end of each cycle")
            activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
            with torch.profiler.profile(activities=activities) as prof:
                _sync(device)
                t0 = time.perf_counter_ns()
                with Engine(index, [timer]):
                    forward()
                _sync(device)
                wall = time.perf_counter_ns() - t0
        ranges, kernels, graphs = kineto_intervals(prof.profiler.kineto_results.events())
        if not kernels and run is None:  # the try before the repeats (no CUPTI?), or a warm-up
            return False
        keyed = [(cid, *ranges[j]) for j, cid in timer.keyed(call_of) if j in ranges]
        att = attribute_kernels(keyed, kernels)
        if run is not None:  # a timed repeat without kernels is kept: no device time in it (and said so)
            run.no_kernels += not kernels
            run.profiled.append(wall / 1e6)
            run.idle.append(att.idle_fraction)
            run.kernel.append(att.kernel_sum / 1e6)
            run.busy.append(att.busy / 1e6)
            run.unlinked = max(run.unlinked, att.unlinked)
            run.graphs = max(run.graphs, graphs)
            rep = run.begin()
            for j, cid in timer.keyed(call_of):
                rep[cid] = (att.total.get(cid, 0.0) / 1e6, att.self.get(cid, 0.0) / 1e6,
                            (timer.t1[j] - timer.t0[j]) / 1e6)
            run.note_untraced(timer, call_of)
            run.note_moved(timer, call_of)
        return bool(kernels)
    ref = None
    if timer.mode == "events":
        _sync(device)
        ref = timer.event()
    t0 = time.perf_counter_ns()
    with Engine(index, [timer]):
        forward()
    _sync(device)
    wall = time.perf_counter_ns() - t0
    if run is None:
        return True
    run.profiled.append(wall / 1e6)
    keyed = timer.keyed(call_of)
    if ref is not None:
        spans = [(cid, ref.elapsed_time(timer.ev0[j]), ref.elapsed_time(timer.ev1[j])) for j, cid in keyed]
    else:
        spans = [(cid, timer.t0[j] / 1e6, timer.t1[j] / 1e6) for j, cid in keyed]
    # Self times from the run's call tree, not from how the spans nest: a call run at the same time in another
    # thread lies inside its sibling's span without being its child.
    times, overlapped = tree_self_times(spans, timer.tree(call_of))
    run.overlapped |= overlapped
    rep = run.begin()
    for j, cid in keyed:
        total, self_ = times[cid]
        rep[cid] = (total, self_, (timer.t1[j] - timer.t0[j]) / 1e6)
    run.note_untraced(timer, call_of)
    run.note_moved(timer, call_of)
    return True


def _plain(forward: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter_ns()
    forward()
    _sync(device)
    return (time.perf_counter_ns() - t0) / 1e6


# ---- putting it together -------------------------------------------------------------------------------

def _compiled_regions(model: nn.Module) -> tuple[dict[str, nn.Module], set[int]]:
    """``torch.compile``d modules by name (a wrapper, ``module.compile()``, a compiled forward), and the ids of the
    modules inside them."""
    regions: dict[str, nn.Module] = {}
    inner: set[int] = set()
    for name, m in model.named_modules():
        if any(id(m) in {id(d) for d in r.modules()} for r in regions.values()):
            continue
        compiled = (type(m).__name__ == "OptimizedModule" or getattr(m, "_compiled_call_impl", None) is not None
                    or (dynamo_loaded() and compiled_forward(m)))
        if compiled or isinstance(getattr(m, "_orig_mod", None), nn.Module):
            regions[name] = m
            inner.update(id(d) for d in m.modules() if d is not m)
    return regions, inner


def _r(x: float) -> float:
    return round(float(x), 6)


def profile(model: nn.Module, *inputs: Any, device: str | torch.device | None = None, warmup: int = 3,  # noqa: PLR0913 - the public keyword options of shapetrace.profile
            repeat: int = 10, dtype: str | torch.dtype | None = None, flops: bool = True, memory: bool = True,
            progress: Callable[[int, int], None] | None = None, grad: bool = False, train: bool | None = None,
            gpu_timer: str = "auto", forward_kwargs: dict | None = None, **kwargs: Any) -> Trace:
    """Trace ``model(*inputs, **kwargs)`` and time every call; return the ``Trace`` with timings.

    ``device`` defaults to CUDA when available, else CPU (the model is not moved: copies of its parameters
    are swapped in for the duration); ``"meta"`` gives FLOPs and memory from shapes alone, without timing.
    ``dtype`` (``"bf16"``, ``"fp16"``, ``"fp32"`` or a floating-point ``torch.dtype``) casts floating
    parameters, buffers and inputs the same way. ``warmup`` untimed and ``repeat`` timed iterations each run the plain and the
    instrumented forward. ``flops`` fills ``Call.flops`` (inclusive), ``memory`` fills ``Call.memory``.
    ``progress(done, total)`` is called after each iteration. ``grad`` and ``train`` are the ``Tracer``
    options. ``gpu_timer="events"`` skips ``torch.profiler`` on CUDA and uses CUDA events in the hooks (GPU
    spans, idle included), which ``"auto"`` falls back to when CUPTI is missing. Forward keyword arguments
    that clash with these names go in ``forward_kwargs``.

    As with ``trace()``, a model wrapped by ``torch.compile`` or ``DataParallel`` is unwrapped and its inner
    module profiled (``trace.meta["unwrapped"]`` names the wrappers), and anything that cannot be traced (a
    function, a TorchScript module) raises ``UnsupportedModel`` saying what to pass instead.

    Raises ``TraceFailed`` (with the partial trace) when the forward fails and ``ProfileUsageError`` for
    impossible options. See the module docstring for the method; results are in ``trace.timing`` and each
    ``Call.timing`` / ``Call.flops`` / ``Call.memory``.
    """
    if "check_finite" in kwargs:  # a trace option, not a forward keyword: Linear.forward would raise TypeError
        raise ProfileUsageError("profile has no check_finite (its reductions would add to the time, memory and FLOPs "
                                "it measures): use shapetrace.trace(model, ..., check_finite=True); a forward "
                                "keyword of that name goes in forward_kwargs")
    checked, wrappers = traceable(model)
    try:
        # ~2 * (warmup + repeat) + 1 forwards: in train mode each Dropout draws from the global generator, which
        # is put back as found (like the model), so code after a profile draws the numbers it would have drawn
        # What the forwards store into the caller's objects (a cache each of them grows) is put back as well: a
        # profile measures, it is not the caller's forward (on the model's own device as elsewhere).
        # The objects kept are the ones the forwards get: ``forward_kwargs`` among them.
        forward = {**kwargs, **(forward_kwargs or {})}
        with torch.random.fork_rng(devices=_rng_devices(resolve_device(device))), arguments_kept((inputs, forward)):
            result = _profile_module(checked, inputs, device=device, warmup=warmup, repeat=repeat, dtype=dtype,
                                     flops=flops, memory=memory, progress=progress, grad=grad, train=train,
                                     gpu_timer=gpu_timer, kwargs=forward)
    except TraceFailed as failed:  # a profile's partial trace says it is one, so renderers can say why it has no times
        _mark_profiled(failed.trace, wrappers)
        raise
    _mark_profiled(result, wrappers)
    return result


def _rng_devices(dev: torch.device) -> list[int]:
    """The CUDA devices whose random state a profile on ``dev`` saves and restores (none off CUDA; the CPU
    generator always)."""
    if dev.type != "cuda":
        return []
    return [dev.index if dev.index is not None else torch.cuda.current_device()]


def _mark_profiled(trace: Trace, wrappers: list[str]) -> None:
    """``meta["profiled"]`` on every trace ``profile()`` returns or raises with (its ``failure``, ``device``
    and ``failed_in_timed_run`` say why one has no timings), and the wrappers it took off."""
    trace.meta["profiled"] = True
    if wrappers:
        trace.meta["unwrapped"] = wrappers


def _profile_module(checked: Checked, inputs: tuple, *, device: str | torch.device | None, warmup: int,  # noqa: PLR0913 - profile()'s options
                    repeat: int, dtype: str | torch.dtype | None, flops: bool, memory: bool,
                    progress: Callable[[int, int], None] | None, grad: bool, train: bool | None, gpu_timer: str,
                    kwargs: dict) -> Trace:
    """``profile()`` of a module that hooks can trace (unwrapped, checked)."""
    model = checked.module
    dev = resolve_device(device)
    dt = resolve_dtype(dtype)
    if gpu_timer not in ("auto", "events"):
        raise ProfileUsageError(f"gpu_timer must be 'auto' or 'events', not {gpu_timer!r}")
    repeat, warmup = _whole_number(repeat, "repeat", 1), _whole_number(warmup, "warmup", 0)
    index = ModuleIndex(model)
    lazy = uninitialized_lazy(index)
    if lazy:  # as trace() does: a copy is profiled, which its first forward initializes; the model stays lazy
        if dev.type == "meta":
            raise UnsupportedModel(
                f"device='meta' cannot profile lazy layers whose weights are not made yet ({', '.join(lazy[:5])}): "
                "a lazy layer makes real weights from its first input. Profile on the CPU or a GPU, or run one "
                "forward on real data first (model(x)).")
        model = copy_for_lazy_layers(model, lazy)
        # Made here, where the inputs are, before any copy is cast or moved (what it stores into the caller's
        # objects is put back with the rest, by profile()).
        first_args = place_inputs(tuple(inputs), model_device(model)), place_inputs(kwargs, model_device(model))
        first = InputWrites(first_args)  # the caller's tensors it writes come back as given (input_writes)
        try:
            with torch.no_grad(), first.watched():
                model(*first_args[0], **first_args[1])
        finally:
            first.restore()
        result = _profile_module(Checked(model), inputs, device=device, warmup=warmup, repeat=repeat, dtype=dtype,
                                 flops=flops, memory=memory, progress=progress, grad=grad, train=train,
                                 gpu_timer=gpu_timer, kwargs=kwargs)
        result.meta["lazy_traced_on_copy"] = lazy
        return result
    args = place_inputs(tuple(inputs), dev, dt)
    kwargs = place_inputs(kwargs, dev, dt)
    regions, inner = _compiled_regions(model)
    # the model's own plain attributes (a hidden state it keeps between calls) are put back on every device
    # and what they write in place into its plain tensors and nested lists and dicts (``values_kept``)
    # Every run starts from the input tensors as given, and the caller gets them back so (``input_writes``).
    writes = InputWrites((args, kwargs))
    with forward_state_kept(model), values_kept(model), placed(model, dev, dt, keep_state=False), \
            _restored_at_end(writes):
        # Pass 1: shapes, data flow, FLOPs and peak memory, in one forward. What it leaves on the model is put
        # back after it, so the timed runs start from the state it started from (forward_state_kept, values_kept;
        # the guard puts back buffers): the first timed run is the traced forward again, whatever it writes.
        flop_probe = FlopProbe() if flops else None
        peak_probe = PeakMemoryProbe(dev) if memory and dev.type == "cuda" else None
        try:
            with forward_state_kept(model), values_kept(model), writes.watched():
                trace, keys, called = _shape_pass(checked, args, kwargs, [p for p in (flop_probe, peak_probe) if p],
                                                  grad, train, dev)
        except KeyboardInterrupt as e:  # run 0: the shape pass
            raise ForwardInterrupted(0, warmup + repeat, warmup=warmup) from e
        except TraceFailed as failed:
            if flop_probe is None:
                raise
            # torch's FlopCounterMode cannot run some forwards that run by themselves (a jagged nested tensor
            # through a Linear): without it, the profile goes on and says why FLOPs are missing.
            peak_probe = PeakMemoryProbe(dev) if peak_probe is not None else None  # a fresh one for the new pass
            writes.restore()
            with forward_state_kept(model), values_kept(model), writes.watched():
                trace, keys, called = _shape_pass(checked, args, kwargs, [peak_probe] if peak_probe else [], grad,
                                                  train, dev)
            failure = failed.trace.failure
            trace.meta["flops_unavailable"] = failure.text if failure else str(failed)
        writes.restore()
        call_of = {key: cid for cid, key in enumerate(keys)}
        # Passes 2...: the timed repeats, the timer probe alone, compiled regions' insides left out.
        if dev.type == "meta":  # shapes only: FLOPs and memory, nothing to time
            run, kind = _Run(), ""
        else:
            try:
                run, kind = _timed(model, args, kwargs, index.without(inner), dev, warmup, repeat, call_of, grad,
                                   train, progress, gpu_timer, parents=[c.parent for c in trace.calls],
                                   before=writes.restore)
            except _TimedRunFailed as failed:
                raise TraceFailed(_failed_in_timed_run(trace, failed, call_of, called),
                                  failed.__cause__) from failed.__cause__
        if memory:  # parameter bytes read while the cast copies are in place (``dtype``)
            _fill_memory(trace, called, peak_probe)
    # The merge: every probe's results into the shape pass's calls.
    weighed = _fill_timing(trace, run, kind)
    if not run.repeats:  # device 'meta': FLOPs and memory from shapes, no timing
        return trace
    _notes(trace, regions, run, kind)
    root = next((c for c in trace.calls if c.parent is None and c.timing), None)
    # One statistic for every time in the summary: the calls' interquartile means. The instrumented forward is
    # averaged over the same repeats with the same weights as the calls (its root among them), the plain one
    # over its own middle half.
    weights = None
    if len(run.profiled) == len(run.repeats):
        root_id, weights = weighed
        if root_id != (root.id if root else 0):  # the first root call was in no repeat: weights of this one
            weights = repeat_weights(run.repeats, root.id if root else 0)

    def central(xs: Sequence[float]) -> float:
        return weighted(xs, weights) if weights is not None and len(xs) == len(run.repeats) else interquartile_mean(xs)

    plain = interquartile_mean(run.plain)
    profiled = central(run.profiled)
    trace.timing = summary = TimingSummary(
        forward_ms=_r(plain), profiled_ms=_r(profiled), overhead=_r(profiled / plain) if plain else None,
        kind=kind, device=str(dev), dtype=_dtype_name(dt) if dt else _run_dtype(model, args, kwargs),
        attributed_ms=_r(sum(c.timing.self_ms or 0.0 for c in trace.calls if c.timing)),
        root_ms=root.timing.total_ms if root else None, repeats=repeat, warmup=warmup,
        fallback=run.fallback, fallback_error=run.fallback_error, statistic=STATISTIC_IQM,
    )
    if kind == KIND_PROFILER:
        summary.gpu_idle_fraction = _r(central(run.idle))
        summary.kernel_ms = _r(central(run.kernel))
        summary.busy_ms = _r(central(run.busy))
    return trace


@contextlib.contextmanager
def _restored_at_end(writes: InputWrites) -> Iterator[None]:
    """The input tensors the forwards wrote get their values back when the block ends, raising or not."""
    try:
        yield
    finally:
        writes.restore()


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _run_dtype(model: nn.Module, args: tuple, kwargs: dict) -> str:
    """The dtype the model runs in without a cast: its floating-point parameters' one dtype (``DTYPE_MIXED``
    when they have several); without any, its floating-point inputs'; else torch's default dtype."""
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if not dtypes:
        dtypes = {t.dtype for t in iter_live_tensors([args, kwargs]) if t.is_floating_point()}
    if len(dtypes) > 1:
        return DTYPE_MIXED
    return _dtype_name(dtypes.pop() if dtypes else torch.get_default_dtype())


def _shape_pass(checked: Checked, args: tuple, kwargs: dict, probes: list, grad: bool, train: bool | None,
                dev: torch.device) -> tuple[Trace, list[tuple[str, int]], list[nn.Module]]:
    """The trace (with ops: the profile's diagram shows data flow), each call's ``(module name, call_index)``
    and module object; ``probes`` run in the same forward and key their results by call id.

    The model is placed on ``dev`` already (``placed``). On ``meta`` the ``Tracer`` is told so, and traces
    shapes as ``trace(device="meta")`` does (``shape_only.ShapeOnlyMode``): real integer inputs and real
    tensors in the caller's objects meet ``meta`` ones, and the CPU's checks fail the same forwards."""
    tracer = OwnForwardTracer(checked, grad=grad, train=train, ops=True, probes=probes,
                              device=dev if dev.type == "meta" else None)
    try:
        with tracer:
            checked.module(*args, **kwargs)
    except Exception as e:
        if tracer.trace is None:  # the Tracer could not start, or could not build the trace
            raise
        raise TraceFailed(tracer.trace, e) from e
    assert tracer.trace is not None
    return tracer.trace, tracer.call_keys(), tracer.call_modules()


def _timed(model: nn.Module, args: tuple, kwargs: dict, index: ModuleIndex, dev: torch.device, warmup: int,  # noqa: PLR0913 - to take profile()'s options as one object
           repeat: int, call_of: dict, grad: bool, train: bool | None,
           progress: Callable[[int, int], None] | None, gpu_timer: str = "auto",
           parents: Sequence[int | None] = (), before: Callable[[], None] = lambda: None) -> tuple[_Run, str]:
    """The warm-up and timed runs; ``before()`` runs before each forward, outside its timed span (it puts back
    the input tensors a forward wrote)."""
    mode = "wall" if dev.type != "cuda" else "events" if gpu_timer == "events" else "profiler"
    timer = TimerProbe(mode)
    run = _Run(shape_parents=list(parents))

    total = warmup + repeat
    now = [1]  # the run going on (1-based, warm-ups first)

    def forward() -> Any:
        try:
            return model(*args, **kwargs)
        except Exception as e:  # the forward itself (not shapetrace's bookkeeping around it)
            raise _TimedRunFailed(now[0], total, timer.failed_key(), warmup) from e
        except KeyboardInterrupt as e:  # which run it stopped (the model's ``raise KeyboardInterrupt``, or Ctrl-C)
            if isinstance(e, ForwardInterrupted):
                raise
            raise ForwardInterrupted(now[0], total, plain=plain_now[0], warmup=warmup) from e

    plain_now = [False]  # whether the forward running is the plain one (no hooks)

    with ModelGuard(index, train=train, grad=grad):
        if mode == "profiler":  # one try: without CUPTI, CUDA events in the hooks instead
            error = None
            try:
                before()
                ok = _instrumented(forward, index, timer, dev, call_of, None)
            except RuntimeError as e:
                ok, error = False, str(e).splitlines()[0] if str(e) else repr(e)
            if not ok:
                run.fallback = FALLBACK_PROFILER_ERROR if error is not None else FALLBACK_NO_KERNELS
                run.fallback_error = error
                timer = TimerProbe("events")
        for i in range(total):
            measured = run if i >= warmup else None
            now[0] = i + 1
            # Alternating which goes first; an instrumented forward first of all, so that a layer the forward
            # builds on its first call is built where an engine sees it attached (and indexes it).
            if i % 2 == 1:
                timer.failed = None  # the plain forward's failure is seen by no hook
                before()
                plain_now[0] = True
                plain = _plain(forward, dev)
                plain_now[0] = False
                before()
                _instrumented(forward, index, timer, dev, call_of, measured)
            else:
                before()
                _instrumented(forward, index, timer, dev, call_of, measured)
                timer.failed = None
                before()
                plain_now[0] = True
                plain = _plain(forward, dev)
                plain_now[0] = False
            if measured is not None:
                run.plain.append(plain)
            if progress is not None:
                progress(i + 1, total)
    kind = {"profiler": KIND_PROFILER, "events": KIND_EVENTS}.get(timer.mode, KIND_CPU)
    return run, kind


def _fill_timing(trace: Trace, run: _Run, kind: str) -> tuple[int, dict[int, float]]:
    """Each call's interquartile means and quantiles over the timed repeats; the root call's id and the
    repeats' weights (``repeat_weights``) they were averaged with."""
    root = next((c.id for c in trace.calls if c.parent is None), 0)
    if not run.repeats:
        return root, {}
    weights = repeat_weights(run.repeats, root)
    stats = summarise(run.repeats, root, weights)
    timed_runs = len(run.repeats)
    for call in trace.calls:
        s = stats.get(call.id)
        if s is not None:
            call.timing = CallTiming(total_ms=_r(s["total"]), self_ms=_r(s["self"]), median_ms=_r(s["median"]),
                                     p10_ms=_r(s["p10"]), p90_ms=_r(s["p90"]), cpu_ms=_r(s["cpu"]), kind=kind)
            if s["runs"] < timed_runs:  # its means are per forward, counting 0 where it did not run
                call.notes.append(Note("ran-in-some-timed-runs", count=int(s["runs"]), of=timed_runs))
    partly = sum(1 for c in trace.calls if any(n.code == "ran-in-some-timed-runs" for n in c.notes))
    if partly:
        trace.meta["calls_in_some_timed_runs"] = partly
    return root, weights


def _fill_memory(trace: Trace, called: list[nn.Module], peak_probe: PeakMemoryProbe | None) -> None:
    """Activation bytes (the call's distinct output tensors) and parameter bytes from shapes; CUDA peaks.
    ``called`` holds each call's module, by call id."""
    pbytes: dict[int, int] = {}
    for call in trace.calls:
        module = called[call.id]
        mid = id(module)
        if mid not in pbytes:
            pbytes[mid] = sum(p.numel() * p.element_size() for p in module.parameters())
        seen: set = set()
        act = 0
        for _, meta in iter_tensors(call.outputs):
            ident = meta.tid if meta.tid is not None else object()
            if ident not in seen:
                seen.add(ident)
                act += meta.nbytes
        call.memory = CallMemory(activation_bytes=act, param_bytes=pbytes[mid])
        if peak_probe is not None and call.id in peak_probe.results:
            call.memory.peak_bytes = peak_probe.results[call.id]


def _failed_in_timed_run(trace: Trace, failed: _TimedRunFailed, call_of: dict, called: list[nn.Module]) -> Trace:
    """The shape pass's trace with where a timed run failed: ``trace.failure`` names the innermost call it left
    (when an instrumented forward saw it) and the exception, ``meta["failed_in_timed_run"]`` which run of how
    many. The calls stay as the shape pass saw them, every one returned (no ``Call.error``): the trace
    describes that forward, and the failure says which later forward failed where. An embedding that failed on
    ids outside its rows gets what is wrong with them, as in a failed trace (``explain_embedding_failure``);
    ``called`` holds each call's module, by call id."""
    error = failed.__cause__
    cid = call_of.get(failed.key) if failed.key is not None else None
    message = str(error) if error is not None else ""
    kind = type(error).__name__
    if error is not None and cid is not None and failed_in_lookup(called[cid], kind):
        problem = explain_embedding_failure(error)
        if problem is not None:
            message = f"{message}: {problem}"
    trace.failure = Failure(cid, kind, message)
    trace.meta["failed_in_timed_run"] = {"run": failed.run, "of": failed.of, "warmup": failed.warmup}
    return trace


def _notes(trace: Trace, regions: dict[str, nn.Module], run: _Run, kind: str) -> None:
    if regions:
        trace.meta["compiled_regions"] = sorted(regions)
        for call in trace.calls:
            if call.module in regions:
                call.notes.append(Note("compiled-region"))
            elif any(call.module.startswith(r + ".") or r == "" for r in regions) and call.timing is None:
                call.notes.append(Note("inside-compiled-region"))
    if run.graphs:
        trace.meta["cuda_graph_launches"] = run.graphs
        root = next((c for c in trace.calls if c.parent is None), None)
        if root is not None:
            root.notes.append(Note("cuda-graph-launches", count=run.graphs))
    if run.unlinked:
        trace.meta["unlinked_kernels"] = run.unlinked
    if run.no_kernels:
        trace.meta["timed_runs_without_kernels"] = run.no_kernels
    for call in trace.calls:
        compiled = any(n.code in ("compiled-region", "inside-compiled-region") for n in call.notes)
        if call.timing is None and not compiled and call.error is None:
            call.notes.append(Note("not-timed"))
    if run.moved:  # nested otherwise than the table shows: inclusive times do not add up along its tree
        trace.meta["calls_moved_in_timed_runs"] = len(run.moved)
        for cid in sorted(run.moved):
            trace.calls[cid].notes.append(Note("moved-in-timed-runs"))
    if run.overlapped:  # children run at once (threads): their self times add up to more than the forward
        trace.meta["calls_with_overlapping_children"] = len(run.overlapped)
        for cid in sorted(run.overlapped):
            trace.calls[cid].notes.append(Note("children-overlapped"))
    _timed_only_notes(trace, run)


def _timed_only_notes(trace: Trace, run: _Run) -> None:
    """What only the timed runs called: noted on the call whose self time holds it, and not uncalled."""
    if run.untraced:  # calls only the timed runs made: their time is in an enclosing call's self time
        trace.meta["untraced_timed_calls"] = sum(sum(found.values()) for found in run.untraced.values())
        for cid, found in run.untraced.items():
            if cid is not None:  # the modules named, in the order the model lists them, as a fact in ``text``
                trace.calls[cid].notes.append(Note("untraced-calls", count=sum(found.values()),
                                                   text=", ".join(sorted(found, key=_module_order(trace)))))
    # A module only the timed runs called was called: it is named by its owner's note, not listed as uncalled.
    timed_only = [u.module for u in trace.uncalled if u.module in run.called]
    if timed_only:
        trace.meta["called_only_in_timed_runs"] = timed_only
        trace.uncalled = [u for u in trace.uncalled if u.module not in run.called]


def _module_order(trace: Trace) -> Callable[[str], tuple[int, str]]:
    """A sort key putting module names in the order the trace lists them (its calls, then its uncalled
    modules); a name it lists nowhere goes last."""
    order: dict[str, int] = {}
    for name in [c.module for c in trace.calls] + [u.module for u in trace.uncalled]:
        order.setdefault(name, len(order))
    return lambda name: (order.get(name, len(order)), name)
