"""Numbers and codes as people read them, once for every renderer: shapes, bytes, counts, times, and the
English for the short codes records store (timer kinds, call notes, the GPU timer's fallback).

Pure functions of plain values; imports ``shapetrace.tracer`` records only.
"""

from __future__ import annotations

from ..tracer.metrics import (
    FALLBACK_NO_KERNELS,
    FALLBACK_PROFILER_ERROR,
    KIND_CPU,
    KIND_EVENTS,
    KIND_PROFILER,
    Note,
    TimingSummary,
)

__all__ = ["fallback_text", "note_text", "timer_kind_text"]

_KIND_TEXT = {
    KIND_CPU: "cpu-wall",
    KIND_PROFILER: "cuda-kernels (profiler)",
    KIND_EVENTS: "cuda-events (GPU span, includes idle)",
}


def timer_kind_text(kind: str | None) -> str:
    """What a timer kind code means, as the profile tables write it."""
    return _KIND_TEXT.get(kind or "", kind or "unknown timer")


def fallback_text(timing: TimingSummary) -> str | None:
    """Why the CUDA-events timer replaced torch.profiler, or ``None`` when it did not."""
    if timing.fallback is None:
        return None
    if timing.fallback == FALLBACK_PROFILER_ERROR:
        return f"torch.profiler failed: {timing.fallback_error or 'no message'}"
    if timing.fallback == FALLBACK_NO_KERNELS:
        return "torch.profiler recorded no CUDA kernels (CUPTI unavailable?)"
    return timing.fallback


def note_text(note: Note, cls: str = "") -> str:
    """One call note in English (``cls`` is the call's class, named by some notes)."""
    if note.code == "flops-analytic":
        return f"flops: analytic {cls or 'module'} formula (FlopCounterMode counted {note.count})"
    if note.code == "compiled-region":
        return ("torch.compile'd region: timed as a whole; the modules inside it run as compiled code, "
                "where their hooks do not run")
    if note.code == "inside-compiled-region":
        return "inside a torch.compile'd region: not timed separately"
    if note.code == "cuda-graph-launches":
        return (f"{note.count} CUDA-graph launch(es): their kernels are attributed to the call that replayed "
                "the graph, as one region")
    if note.code == "not-timed":
        return "not called in the timed runs (the shape pass saw it; the timed forward did not)"
    return note.text or note.code
