"""The tracer against an earlier version of itself, both imported into one process and run interleaved.

Wall-clock ratios on a shared machine move by tens of percent between runs; two versions measured in the
same rounds see the same load, so their ratio holds. The earlier version is any checkout's ``src`` folder
(``git worktree add /tmp/before <commit>``); its ``shapetrace`` package is copied under another name
(``shapetrace_before``: the package uses relative imports only) and imported beside the current one.

For each case: the plain forward, the hook floor (``overhead.floor``), each version's ``trace`` and
``trace(ops=True)`` as ratios over the plain forward (minimum over minimum and median over median), each
version's fixed cost (a ``Tracer`` around no forward) and per-call cost ((trace − plain − fixed) / calls,
from minima), and the Python function calls per module call (``sys.setprofile``: deterministic).

    python benchmarks/engine_before_after.py --before /tmp/before/src --threads 1 --rounds 20
    python benchmarks/engine_before_after.py --before /tmp/before/src --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
import torchvision
from overhead import floor, function_calls, write_section
from torch import nn

import shapetrace

MARK_BEGIN = "<!-- engine-before-after:begin -->"
MARK_END = "<!-- engine-before-after:end -->"


def load_before(src: Path) -> ModuleType:
    """The ``shapetrace`` package under ``src``, imported as ``shapetrace_before``."""
    root = Path(tempfile.mkdtemp(prefix="shapetrace-before-"))
    shutil.copytree(src / "shapetrace", root / "shapetrace_before")
    sys.path.insert(0, str(root))
    return importlib.import_module("shapetrace_before")


def cases() -> list[tuple[str, nn.Module, torch.Tensor]]:
    blocks = nn.Sequential(*[nn.Sequential(nn.Linear(4, 4), nn.ReLU()) for _ in range(200)])
    return [
        ("resnet34, batch 1", torchvision.models.resnet34(weights=None).eval(), torch.randn(1, 3, 224, 224)),
        ("200 × (Linear 4→4, ReLU), batch 1: hooks dominate", blocks.eval(), torch.randn(1, 4)),
    ]


def fns(model: nn.Module, x: torch.Tensor, before: ModuleType) -> dict[str, Callable[[], object]]:
    def plain() -> object:
        with torch.no_grad():
            return model(x)

    return {
        "plain forward": plain,
        "hook floor": lambda: floor(model, x),
        "trace, before": lambda: before.trace(model, x),
        "trace, after": lambda: shapetrace.trace(model, x),
        "trace(ops=True), before": lambda: before.trace(model, x, ops=True),
        "trace(ops=True), after": lambda: shapetrace.trace(model, x, ops=True),
        "fixed, before": lambda: _fixed(before, model),
        "fixed, after": lambda: _fixed(shapetrace, model),
    }


def _fixed(package: ModuleType, model: nn.Module) -> None:
    with package.Tracer(model):
        pass


def measure(methods: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    for fn in methods.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in methods}
    order = list(methods)
    for r in range(rounds):
        for name in order[r % len(order):] + order[:r % len(order)]:
            t0 = time.perf_counter()
            methods[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def run(before: ModuleType, rounds: int) -> str:
    torch.manual_seed(0)
    out = [(f"Machine: {torch.get_num_threads()} torch threads, torch {torch.__version__}, CPU; {rounds} interleaved "
           "rounds. Ratios over the plain forward: minimum over minimum (median over median in brackets)."), "",
           ("| case | module calls | plain (ms) | floor | trace before | trace after | ops before | ops after | "
           "fixed before (ms) | fixed after (ms) | µs per call: floor / before / after | Python calls per call: "
           "floor / before / after |"),
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for label, model, x in cases():
        methods = fns(model, x, before)
        times = measure(methods, rounds)
        low = {k: min(v) for k, v in times.items()}
        mid = {k: statistics.median(v) for k, v in times.items()}
        calls = len(shapetrace.trace(model, x).calls)
        base, base_mid = low["plain forward"], mid["plain forward"]

        def ratio(k: str, low: dict = low, mid: dict = mid, base: float = base, base_mid: float = base_mid) -> str:
            return f"{low[k] / base:.3f}× ({mid[k] / base_mid:.3f}×)"

        per_call = [(low["hook floor"] - base) / calls,
                    (low["trace, before"] - base - low["fixed, before"]) / calls,
                    (low["trace, after"] - base - low["fixed, after"]) / calls]
        counts = {k: function_calls(methods[k]) for k in ("plain forward", "hook floor", "trace, before",
                                                          "trace, after", "fixed, before", "fixed, after")}
        plain_calls = counts["plain forward"]
        py = [(counts["hook floor"] - plain_calls) / calls,
              (counts["trace, before"] - plain_calls - counts["fixed, before"]) / calls,
              (counts["trace, after"] - plain_calls - counts["fixed, after"]) / calls]
        out.append(
            f"| {label} | {calls} | {base * 1e3:.1f} | {ratio('hook floor')} | {ratio('trace, before')} | "
            f"{ratio('trace, after')} | {ratio('trace(ops=True), before')} | {ratio('trace(ops=True), after')} | "
            f"{low['fixed, before'] * 1e3:.2f} | {low['fixed, after'] * 1e3:.2f} | "
            + " / ".join(f"{c * 1e6:.1f}" for c in per_call) + " | " + " / ".join(f"{c:.1f}" for c in py) + " |")
        print(out[-1], flush=True)
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="the src folder of the earlier checkout")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--write", type=Path, help="replace this section in a Markdown file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    table = run(load_before(args.before), args.rounds)
    print(table)
    if args.write:
        write_section(args.write, table, MARK_BEGIN, MARK_END)


if __name__ == "__main__":
    main()
