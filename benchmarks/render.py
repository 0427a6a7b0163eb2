"""Time diagram rendering (graph build + Graphviz ``dot``) of a 24-layer transformer and torchvision's resnet152.

Run: ``python benchmarks/render.py``. Prints a Markdown table: for each model and depth, the nodes and edges
drawn, the graph-building time, and the full ``render(format="svg")`` time (graph build + DOT text + dot).
Tracing is done once per model and not counted. Times are the median of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import warnings

import torch
import torchview
import torchvision
from torch import nn

import shapetrace
from shapetrace.renderers.diagram import render
from shapetrace.renderers.graph import build_graph


def models() -> list[tuple[str, nn.Module, torch.Tensor, bool]]:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, batch_first=True)
    transformer = nn.TransformerEncoder(layer, num_layers=24, enable_nested_tensor=False).eval()
    x = torch.randn(1, 10, 32)
    return [
        # In eval each layer runs its fused fast path: one node per layer, sub-layers never called.
        ("TransformerEncoder, 24 layers (d_model 32), 1×10×32, eval", transformer, x, False),
        # In training mode the sub-layers run: attention, feed-forward, norms, dropouts, residual adds.
        ("TransformerEncoder, 24 layers (d_model 32), 1×10×32, train", transformer, x, True),
        ("resnet152, 1×3×64×64", torchvision.models.resnet152().eval(), torch.randn(1, 3, 64, 64), False),
    ]


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def torchview_svg(model: nn.Module, x: torch.Tensor, depth: int | None) -> bytes:
    """torchview's own diagram of the same model, capture and Graphviz rendering included."""
    graph = torchview.draw_graph(model, input_data=x, depth=1000 if depth is None else depth, expand_nested=True)
    return graph.visual_graph.pipe(format="svg")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, CPU, median of "
          f"{args.repeat}. Ratios are against shapetrace's own trace(ops=True) of the same model in the same run; "
          "torchview's column times its draw_graph + Graphviz SVG for the same depth.\n")
    print("| model | depth | nodes | edges | trace(ops=True) (ms) | graph build | render svg | torchview svg |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, model, x, train in models():
        trace = shapetrace.trace(model, x, ops=True, train=train)
        base = median_time(lambda m=model, x=x, t=train: shapetrace.trace(m, x, ops=True, train=t), args.repeat)
        model.train(train)  # torchview runs the model as it is
        for depth in (None, 2):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # resnet152 at full depth is past the 500-node warning
                g = build_graph(trace, depth=depth)
                build = median_time(lambda t=trace, d=depth: build_graph(t, depth=d, warn=False), args.repeat)
                full = median_time(lambda t=trace, d=depth: render(t, format="svg", depth=d), args.repeat)
                tv = median_time(lambda m=model, x=x, d=depth: torchview_svg(m, x, d), args.repeat)
            print(f"| {name} | {'full' if depth is None else depth} | {len(g.nodes)} | {len(g.edges)} "
                  f"| {base * 1e3:.0f} | {build / base:.2f}× | {full / base:.2f}× | {tv / base:.2f}× |")
            print(f"|  | (absolute) | | | | {build * 1e3:.0f} ms | {full * 1e3:.0f} ms | {tv * 1e3:.0f} ms |")


if __name__ == "__main__":
    main()
