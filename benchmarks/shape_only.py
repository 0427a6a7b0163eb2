"""Shape-only tracing (``device="meta"``) at sizes no CPU could run: time and memory.

Cases: the AWD-LSTM classifier on a padded (64, 1440) batch (fastai's sizes: 400/1152, 3 layers, 60,000
words), torchvision's ResNet-50 on a (8, 3, 224, 224) batch, and Llama-shaped decoders of 7B (32 layers, width 4096) and 70B shape (80 layers, width 8192,
8 key/value heads, MLP 28672), plus a sweep of layer counts. Baselines in the same run: the same forward on
``meta`` without shapetrace (under the shape-only mode, which the AWD-LSTM's integer-reading loop needs),
so the ratio is what tracing adds; and both again with the shape rules switched off (every op through
torch's own meta kernels, as before ``tracer/shape_rules`` existed). Resident memory is read from /proc
before building the model and after tracing it with the rules (the runs without them come after).

Run: ``python benchmarks/shape_only.py [--write docs/benchmarks.md]``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import platform
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torchvision

import shapetrace
from shapetrace.gallery.text import AWD_LSTM, get_text_classifier, pad_batch
from shapetrace.tracer.shape_only import ShapeOnlyMode, split_inputs
from shapetrace.tracer.shape_rules import RULES

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llama_shape import build_on_meta, llama_7b, llama_70b

BEGIN, END = "<!-- shape-only:begin -->", "<!-- shape-only:end -->"


@contextlib.contextmanager
def without_shape_rules() -> Iterator[None]:
    """Every op through torch's own meta kernels: the shape-only mode as it was before the shape rules."""
    saved = dict(RULES)
    RULES.clear()
    try:
        yield
    finally:
        RULES.update(saved)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def best_of(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def plain_on_meta(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def run() -> object:
        with torch.no_grad(), ShapeOnlyMode():
            return model(split_inputs(x))
    return run


def traced_on_meta(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], object]:
    return lambda: shapetrace.trace(model, x, device="meta")


def measure(name: str, model: torch.nn.Module, x: torch.Tensor, r0: float, rounds: int) -> dict:
    """Plain and traced times with and without shape rules; memory after the traces with rules."""
    calls = len(shapetrace.trace(model, x, device="meta").calls)
    plain = best_of(plain_on_meta(model, x), rounds)
    traced = best_of(traced_on_meta(model, x), rounds)
    rss = rss_mb() - r0
    with without_shape_rules():
        plain_before = best_of(plain_on_meta(model, x), rounds)
        traced_before = best_of(traced_on_meta(model, x), rounds)
    return {"case": name, "calls": calls, "plain": plain, "traced": traced, "rss": rss,
            "plain_before": plain_before, "traced_before": traced_before}


def awd_case(rounds: int) -> dict:
    r0 = rss_mb()
    with torch.device("meta"):
        model = get_text_classifier(AWD_LSTM, 60_000, 2).eval()
    g = torch.Generator().manual_seed(0)
    lengths = torch.linspace(1440, 100, 64).long().tolist()
    x = pad_batch([torch.randint(2, 60_000, (n,), generator=g) for n in lengths])
    return measure("AWD-LSTM classifier, padded (64, 1440)", model, x, r0, rounds)


def resnet_case(rounds: int) -> dict:
    """A CNN: torchvision's ResNet-50 on a (8, 3, 224, 224) batch (convolutions, batch norms, in-place ReLUs)."""
    r0 = rss_mb()
    with torch.device("meta"):
        model = torchvision.models.resnet50(weights=None).eval()
    return measure("ResNet-50 (torchvision), (8, 3, 224, 224)", model, torch.empty(8, 3, 224, 224), r0, rounds)


def llama_case(name: str, shape, rounds: int, seq: int = 2048) -> dict:
    r0 = rss_mb()
    model = build_on_meta(shape)
    x = torch.randint(0, shape.vocab, (1, seq))
    return measure(name, model, x, r0, rounds)


def sweep(rounds: int) -> list[tuple[int, int, float, float]]:
    """(layers, module calls, traced with shape rules, traced without) for Llama-7B-shaped decoders.

    The rounds go over all layer counts in turn, so that a busy spell on the machine falls on every size
    rather than on one; each size keeps its fastest round.
    """
    counts = (8, 16, 32, 64, 128)
    x = torch.randint(0, 32000, (1, 2048))
    models = {n: build_on_meta(llama_7b(n)) for n in counts}
    calls = {n: len(shapetrace.trace(models[n], x, device="meta").calls) for n in counts}
    best = dict.fromkeys(counts, float("inf"))
    for _ in range(rounds):
        for n in counts:
            best[n] = min(best[n], best_of(traced_on_meta(models[n], x), 1))
    with without_shape_rules():
        before = {n: best_of(traced_on_meta(models[n], x), max(1, rounds // 3)) for n in counts}
    return [(n, calls[n], best[n], before[n]) for n in counts]


def linear_fit(rows: list[tuple[int, int, float, float]]) -> tuple[float, float, float]:
    """Least squares time = a + b * layers (the times with shape rules), and the largest relative deviation."""
    xs, ys = [r[0] for r in rows], [r[2] for r in rows]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    a = my - b * mx
    worst = max(abs(y - (a + b * x)) / y for x, y in zip(xs, ys))
    return a, b, worst


def load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def markdown(cases: list[dict], rows: list[tuple[int, int, float, float]], rounds: int, loads: tuple[str, str]
             ) -> str:
    a, b, worst = linear_fit(rows)
    lines = [
        (f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, CPU; "
         f"load average (1, 5, 15 min) {loads[0]} before the run, {loads[1]} after. "
         f"Minimum of {rounds} rounds. *Plain on meta*: the forward on `meta` without shapetrace (under the "
         "shape-only mode, which keeps integer inputs real); *traced*: `shapetrace.trace(..., device=\"meta\")`; "
         "*before*: the same with the shape rules switched off, every op through torch's meta kernels; "
         "*memory*: resident memory added by building the model on `meta` and tracing it."),
        "",
        ("| model | module calls | plain on meta (s) | traced (s) | traced / plain | before: plain (s) | "
        "before: traced (s) | speed-up, traced | memory added (MB) |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cases:
        lines.append(f"| {c['case']} | {c['calls']} | {c['plain']:.3f} | {c['traced']:.3f} | "
                     f"{c['traced'] / c['plain']:.2f}× | {c['plain_before']:.3f} | {c['traced_before']:.3f} | "
                     f"{c['traced_before'] / c['traced']:.1f}× | {c['rss']:.0f} |")
    lines += ["", "Trace time against layer count (Llama-7B width, sequence 2048):", "",
              "| layers | module calls | traced (s) | per layer (ms) | before: traced (s) |",
              "|---:|---:|---:|---:|---:|"]
    for layers, calls, t, before in rows:
        lines.append(f"| {layers} | {calls} | {t:.3f} | {1000 * t / layers:.2f} | {before:.3f} |")
    lines += ["", (f"Least-squares fit of the traced times: {a * 1000:.1f} ms + {b * 1000:.2f} ms per layer; the "
              f"largest deviation of a measured time from the line is {100 * worst:.0f} %.")]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--write", type=Path, default=None, help="Replace the shape-only section of this file.")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = load()
    cases = [awd_case(args.rounds), resnet_case(args.rounds), llama_case("Llama-shaped 7B, (1, 2048)", llama_7b(), args.rounds),
             llama_case("Llama-shaped 70B (GQA, 8 KV heads), (1, 2048)", llama_70b(), args.rounds)]
    rows = sweep(args.rounds)
    text = markdown(cases, rows, args.rounds, (load_before, load()))
    print(text)
    if args.write:
        doc = args.write.read_text(encoding="utf-8")
        block = f"{BEGIN}\n{text}\n{END}"
        doc = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, doc, flags=re.DOTALL) \
            if BEGIN in doc else doc.rstrip() + "\n\n## Shape-only tracing on meta (`benchmarks/shape_only.py`)\n\n" + block + "\n"
        args.write.write_text(doc, encoding="utf-8")


if __name__ == "__main__":
    main()
