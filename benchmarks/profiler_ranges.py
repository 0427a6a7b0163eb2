"""What one profiler range costs: ``record_function`` against ``_RecordFunctionFast``, under the profiler.

``shapetrace.profile`` on CUDA pushes one ``torch.profiler`` range per module call in its timed forward,
so the range's cost lands in the reported overhead once per call (132 calls for resnet34). This measures
the cost of entering and leaving one range, with the CPU profiler running and without, for both ways of
making one, in the same process (rounds interleaved; median of the rounds). Runs on any machine::

    PYTHONPATH=src python benchmarks/profiler_ranges.py [--n 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile


def per_range_us(make: Callable[[str], Any], n: int) -> float:
    names = [f"shapetrace/{i}" for i in range(n)]
    t0 = time.perf_counter_ns()
    for name in names:
        r = make(name)
        r.__enter__()
        r.__exit__(None, None, None)
    return (time.perf_counter_ns() - t0) / n / 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20000, help="ranges per measurement")
    parser.add_argument("--rounds", type=int, default=5)
    ns = parser.parse_args(argv)
    fast = getattr(torch._C._profiler, "_RecordFunctionFast", None)
    makers = {"record_function": record_function}
    if fast is not None:
        makers["_RecordFunctionFast"] = fast
    results: dict[tuple[str, bool], list[float]] = {}
    warnings.filterwarnings("ignore")
    for _ in range(ns.rounds):
        for profiled in (True, False):
            for label, make in makers.items():
                if profiled:
                    with profile(activities=[ProfilerActivity.CPU]):
                        us = per_range_us(make, ns.n)
                else:
                    us = per_range_us(make, ns.n)
                results.setdefault((label, profiled), []).append(us)
    print(f"# one range entered and left; torch {torch.__version__}; {ns.n} ranges x {ns.rounds} rounds, median")
    print("| range | under the profiler (µs) | no profiler (µs) |")
    print("|---|---:|---:|")
    for label in makers:
        on = statistics.median(results[(label, True)])
        off = statistics.median(results[(label, False)])
        print(f"| `{label}` | {on:.2f} | {off:.2f} |")
    if fast is not None:
        ratio = statistics.median(results[("record_function", True)]) / statistics.median(
            results[("_RecordFunctionFast", True)])
        print(f"\nunder the profiler, record_function costs {ratio:.1f}x _RecordFunctionFast")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
