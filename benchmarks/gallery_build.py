"""Time ``shapetrace gallery build`` (the whole gallery, cold, into an empty folder) against a baseline.

The baseline is another checkout's ``src`` folder (for instance the commit before a change, made with
``git worktree add /tmp/gallery-before <commit>``); the two builds alternate round by round in one run, so
both see the same machine load, and the report gives each one's wall-clock and CPU seconds (the CPU time of
the build and every process it starts: workers, Graphviz) as the minimum and the median over the rounds, with
the after/before ratios, and the load average before and after the run (``os.getloadavg``)::

    python benchmarks/gallery_build.py --before /tmp/gallery-before/src --rounds 5 [--jobs 2]

Without ``--before`` only this checkout is timed. Prints a Markdown table for ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1] / "src"


def build_once(src: Path, extra: list[str]) -> tuple[float, float]:
    """One cold build with ``src`` first on the path: (wall seconds, CPU seconds of the child processes)."""
    out = Path(tempfile.mkdtemp(prefix="gallery-bench-"))
    env = {**os.environ, "PYTHONPATH": str(src)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "shapetrace", "gallery", "build", "-o", str(out), *extra],
                          env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    shutil.rmtree(out, ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(f"the build with {src} failed:\n{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, default=None, help="the baseline checkout's src folder")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=None, help="--jobs for the new build (default: its own)")
    args = parser.parse_args()
    extra = ["--jobs", str(args.jobs)] if args.jobs else []
    builds = ([("before", args.before, [])] if args.before else []) + [("after", HERE, extra)]
    runs: dict[str, list[tuple[float, float]]] = {label: [] for label, _, _ in builds}
    load_before = _load()
    for r in range(args.rounds):
        for label, src, opts in builds:
            wall, cpu = build_once(src, opts)
            runs[label].append((wall, cpu))
            print(f"round {r + 1} {label}: {wall:.1f} s wall, {cpu:.1f} s CPU (load {_load()})", file=sys.stderr)
    stats = {k: {"wall": (min(w for w, _ in v), statistics.median(w for w, _ in v)),
                 "cpu": (min(c for _, c in v), statistics.median(c for _, c in v))} for k, v in runs.items()}
    print(f"load average (1 / 5 / 15 min) before the run {load_before}, after it {_load()}")
    print()
    print(f"| build | wall s, min of {args.rounds} | wall s, median | CPU s, min | CPU s, median | runs (wall) |")
    print("|---|---:|---:|---:|---:|---|")
    for k, rounds in runs.items():
        w, c = stats[k]["wall"], stats[k]["cpu"]
        walls = ", ".join(f"{x:.1f}" for x, _ in rounds)
        print(f"| {k} | {w[0]:.1f} | {w[1]:.1f} | {c[0]:.1f} | {c[1]:.1f} | {walls} |")
    if "before" in stats:
        ratio = {m: [stats["after"][m][i] / stats["before"][m][i] for i in (0, 1)] for m in ("wall", "cpu")}
        print(f"| after / before | {ratio['wall'][0]:.2f}× | {ratio['wall'][1]:.2f}× | {ratio['cpu'][0]:.2f}× "
              f"| {ratio['cpu'][1]:.2f}× | |")


if __name__ == "__main__":
    main()
