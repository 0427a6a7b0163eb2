"""Cost of recording source lines (``trace(..., lines=True)``) against the plain forward, measured in one run.

Four methods on the same model and input, interleaved round by round so drift in the machine's speed hits
all alike: the plain forward (under ``torch.no_grad()``, as shapetrace traces), ``shapetrace.trace``,
``shapetrace.trace(ops=True)`` (what line recording builds on: it needs the functional ops) and
``shapetrace.trace(lines=True)``. Each result is the method's median over the plain forward's median (and
minimum over minimum). Target: lines=True at most 1.5x the plain forward on resnet34, batch 1.

    python benchmarks/lines.py                         # resnet34, batch 1
    python benchmarks/lines.py --quick                 # a small case only (a smoke test)
    python benchmarks/lines.py --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch import nn

import shapetrace

MARK_BEGIN = "<!-- lines:begin -->"
MARK_END = "<!-- lines:end -->"
METHODS = ("plain forward", "trace", "trace(ops=True)", "trace(lines=True)")


def cases(quick: bool) -> list[tuple[str, Callable[[], nn.Module], Callable[[], tuple]]]:
    if quick:
        return [("resnet18, batch 1, 64x64", lambda: torchvision.models.resnet18(weights=None),
                 lambda: (torch.randn(1, 3, 64, 64),))]
    return [("resnet34, batch 1", lambda: torchvision.models.resnet34(weights=None),
             lambda: (torch.randn(1, 3, 224, 224),))]


def measure(model: nn.Module, args: tuple, rounds: int, budget_s: float) -> tuple[dict[str, list[float]], int]:
    model.eval()

    def plain() -> object:
        with torch.no_grad():
            return model(*args)

    runs: dict[str, Callable[[], object]] = {
        "plain forward": plain,
        "trace": lambda: shapetrace.trace(model, *args),
        "trace(ops=True)": lambda: shapetrace.trace(model, *args, ops=True),
        "trace(lines=True)": lambda: shapetrace.trace(model, *args, lines=True),
    }
    for fn in runs.values():  # warm up every path once
        fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    started = time.perf_counter()
    done = 0
    for r in range(rounds):
        names = list(runs)
        names = names[r % len(names):] + names[:r % len(names)]  # each round starts with a different method
        for name in names:
            t0 = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - t0)
        done += 1
        if time.perf_counter() - started > budget_s:
            break
    return times, done


def run(quick: bool, rounds: int, budget_s: float) -> str:
    torch.manual_seed(0)
    head = ("| model | rounds | plain forward (ms) | " + " | ".join(METHODS[1:]) + " |\n"
            + "|---|---:|---:|" + "---:|" * (len(METHODS) - 1) + "\n")
    rows = []
    for label, build, inputs in cases(quick):
        times, done = measure(build(), inputs(), rounds, budget_s)
        base_med = statistics.median(times["plain forward"])
        base_min = min(times["plain forward"])
        cells = [f"{statistics.median(times[m]) / base_med:.2f}× ({min(times[m]) / base_min:.2f}×)"
                 for m in METHODS[1:]]
        rows.append(f"| {label} | {done} | {base_med * 1000:.1f} | " + " | ".join(cells) + " |")
    machine = (f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
               "CPU. Each cell: median over the plain forward's median (in brackets: minimum over minimum).")
    return f"{machine}\n\n{head}" + "\n".join(rows) + "\n"


def write_section(doc: Path, table: str) -> None:
    text = doc.read_text(encoding="utf-8")
    block = f"{MARK_BEGIN}\n{table}{MARK_END}"
    if MARK_BEGIN in text and MARK_END in text:
        before, _, rest = text.partition(MARK_BEGIN)
        _, _, after = rest.partition(MARK_END)
        text = before + block + after
    else:
        text = text.rstrip("\n") + "\n\n## Cost of line recording (`benchmarks/lines.py`)\n\n" + block + "\n"
    doc.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small case (a smoke test)")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--budget", type=float, default=120.0, help="seconds per case at most")
    parser.add_argument("--write", type=Path, default=None, help="replace the table in this Markdown file")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (1 keeps a busy shared machine from distorting the ratios)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    table = run(args.quick, args.rounds, args.budget)
    print(table)
    if args.write is not None:
        write_section(args.write, table)


if __name__ == "__main__":
    main()
