"""Saving and loading traces: ``Trace.to_json`` and ``shapetrace.load`` against plain ``json`` on the same data.

The baseline, measured in the same rounds, is the standard library alone: ``json.dumps`` of the dictionary
``to_json`` writes (same indent and key order, so the same bytes) and ``json.loads`` of its text. What the
codec adds on top (walking the records by their type hints, checking every field on the way in) is the
ratio. With ``--before SRC`` an earlier checkout's package runs in the same rounds too
(``engine_before_after.load_before``).

    python benchmarks/trace_json.py --rounds 5
    python benchmarks/trace_json.py --before /tmp/before/src --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
import torchvision
from engine_before_after import load_before, measure
from overhead import write_section
from torch import nn

import shapetrace

MARK_BEGIN = "<!-- trace-json:begin -->"
MARK_END = "<!-- trace-json:end -->"


def cases() -> list[tuple[str, nn.Module, torch.Tensor]]:
    return [
        ("resnet34", torchvision.models.resnet34(weights=None).eval(), torch.randn(1, 3, 64, 64)),
        ("20,000 × Identity", nn.Sequential(*[nn.Identity() for _ in range(20_000)]), torch.randn(1, 2)),
    ]


def methods(trace: shapetrace.Trace, before: ModuleType | None) -> dict[str, Callable[[], object]]:
    data, text = trace.to_dict(), trace.to_json()
    out: dict[str, Callable[[], object]] = {
        "json.dumps": lambda: json.dumps(data, indent=1, sort_keys=True, allow_nan=False),
        "to_json": trace.to_json,
        "json.loads": lambda: json.loads(text),
        "load": lambda: shapetrace.load(text),
    }
    if before is not None:
        old = before.load(text)
        out["to_json, before"] = old.to_json
        out["load, before"] = lambda: before.load(text)
    return out


def run(before: ModuleType | None, rounds: int) -> str:
    has_before = before is not None
    head = "| case | calls | JSON (MB) | json.dumps (s) | to_json | json.loads (s) | load |"
    rule = "|---|---:|---:|---:|---:|---:|---:|"
    if has_before:
        head += " to_json before | load before |"
        rule += "---:|---:|"
    out = [(f"torch {torch.__version__}, CPU; {rounds} interleaved rounds, minima. `to_json` and `load` as "
            "ratios over `json.dumps` and `json.loads` of the same data in the same rounds."), "", head, rule]
    for label, model, x in cases():
        trace = shapetrace.trace(model, x)
        times = measure(methods(trace, before), rounds)  # interleaved rounds, each starting elsewhere
        low = {k: min(v) for k, v in times.items()}
        size = len(trace.to_json().encode()) / 1e6
        row = (f"| {label} | {len(trace.calls)} | {size:.1f} | {low['json.dumps']:.3f} | "
               f"{low['to_json'] / low['json.dumps']:.2f}× | {low['json.loads']:.3f} | "
               f"{low['load'] / low['json.loads']:.2f}× |")
        if has_before:
            row += (f" {low['to_json, before'] / low['json.dumps']:.2f}× | "
                    f"{low['load, before'] / low['json.loads']:.2f}× |")
        out.append(row)
        print(row, f"(medians: to_json {statistics.median(times['to_json']):.3f} s, "
                   f"load {statistics.median(times['load']):.3f} s)", flush=True)
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, help="the src folder of an earlier checkout, run in the same rounds")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--write", type=Path, help="replace this section in a Markdown file")
    args = parser.parse_args()
    table = run(load_before(args.before) if args.before else None, args.rounds)
    print(table)
    if args.write:
        write_section(args.write, table, MARK_BEGIN, MARK_END)


if __name__ == "__main__":
    main()
