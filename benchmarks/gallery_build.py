"""Time ``shapetrace gallery build`` (the whole gallery, cold, into an empty folder) against a baseline.

The baseline is another checkout's ``src`` folder (for instance the commit before a change, made with
``git worktree add /tmp/gallery-before <commit>``); the two builds alternate round by round in one run, so
both see the same machine load, and the report gives each one's wall-clock and CPU seconds (the CPU time of
the build and every process it starts) with the after/before ratio of the medians::

    python benchmarks/gallery_build.py --before /tmp/gallery-before/src --rounds 3 [--jobs 2]

Prints a Markdown table for ``docs/benchmarks.md``.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="the baseline checkout's src folder")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=None, help="--jobs for the new build (default: its own)")
    args = parser.parse_args()
    extra = ["--jobs", str(args.jobs)] if args.jobs else []
    runs: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
    for r in range(args.rounds):
        for label, src, opts in (("before", args.before, []), ("after", HERE, extra)):
            wall, cpu = build_once(src, opts)
            runs[label].append((wall, cpu))
            print(f"round {r + 1} {label}: {wall:.1f} s wall, {cpu:.1f} s CPU", file=sys.stderr)
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in runs.items()}
    print(f"| build | wall s (median of {args.rounds}) | CPU s | runs (wall) |")
    print("|---|---:|---:|---|")
    for k in ("before", "after"):
        print(f"| {k} | {med[k][0]:.1f} | {med[k][1]:.1f} | {', '.join(f'{w:.1f}' for w, _ in runs[k])} |")
    print(f"| after / before | {med['after'][0] / med['before'][0]:.2f}× | {med['after'][1] / med['before'][1]:.2f}× | |")


if __name__ == "__main__":
    main()
