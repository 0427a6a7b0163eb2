"""Benchmark ``shapetrace.profile`` on the GPU machine: overhead and how much device time it attributes.

For each model: the plain forward, the profiled (instrumented) forward, their ratio (the overhead), the
device time attributed to calls against the profiler's total kernel time, and the GPU idle fraction.
Prints a Markdown table and, when ``$OUT`` is set (or ``--json PATH`` is given), writes the rows as JSON.

Run from the source tree; needs only torch, torchvision, matplotlib and click::

    PYTHONPATH=src python benchmarks/gpu_profile.py                   # the GPU run (a few minutes)
    PYTHONPATH=src python benchmarks/gpu_profile.py --device cpu --quick   # a small CPU smoke run

Models: resnet34 at batch 1 and 64 (fp32), resnet50 at batch 64 (bf16), the CamVid U-Net exhibit, a
24-layer transformer encoder (fused fast path in eval) and the AWD-LSTM classifier exhibit (BPT3C).
``--quick`` shrinks batches, images, depth and repeats so the CPU run takes well under a minute.

Each case also times the other tools on the same model, input and device (a ``torch.profiler`` run,
``torchinfo.summary``, ``torchview.draw_graph``, ``torchlens.trace``; ``--no-peers`` skips them), as wall
time over the plain forward's. On the GPU machine torchinfo, torchview and torchlens are missing unless
their wheels are carried (see ``benchmarks/gpu_session.sh``). On CUDA the batch-64 cases run a second time with ``gpu_timer="events"`` (CUDA events in the hooks, the
fallback without CUPTI), so one run measures both timers' overhead. Made for a short lease: the JSON is
rewritten after every case (a run cut off at its time limit keeps what it finished), ``--budget-s`` skips
the cases left once that many seconds have passed, and ``--traces FILE.tar.gz`` (default with ``$OUT``)
keeps every profiled trace, so the tables, plots and heat diagrams can be drawn on another machine.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import statistics
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torch.profiler import ProfilerActivity, profile

import shapetrace
from shapetrace.gallery.exhibits import exhibit_names, get_exhibit
from shapetrace.tracer.timing import resolve_dtype


def _resnet(name: str, batch: int, size: int) -> Callable[[], tuple[nn.Module, tuple]]:
    def build() -> tuple[nn.Module, tuple]:
        model = getattr(torchvision.models, name)(weights=None).eval()
        return model, (torch.randn(batch, 3, size, size),)

    return build


def _exhibit(name: str, fallback: str) -> Callable[[], tuple[nn.Module, tuple]]:
    def build() -> tuple[nn.Module, tuple]:
        names = exhibit_names()
        ex = get_exhibit(name if name in names else next(n for n in names if fallback in n))
        args, kwargs = ex.inputs()
        assert not kwargs, "exhibit with keyword inputs"
        return ex.build(), tuple(args)

    return build


def _transformer(layers: int, d: int, batch: int, seq: int) -> Callable[[], tuple[nn.Module, tuple]]:
    def build() -> tuple[nn.Module, tuple]:
        layer = nn.TransformerEncoderLayer(d, d // 64, 4 * d, batch_first=True)
        model = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False).eval()
        return model, (torch.randn(batch, seq, d),)

    return build


def cases(quick: bool) -> list[tuple[str, str | None, Callable[[], tuple[nn.Module, tuple]]]]:
    """``(label, dtype, build)`` for each benchmark case (a label with "b64" is also run with CUDA events)."""
    if quick:
        return [
            ("resnet34 b1 fp32", None, _resnet("resnet34", 1, 64)),
            ("resnet34 b4 fp32", None, _resnet("resnet34", 4, 64)),
            ("resnet50 b4 bf16", "bf16", _resnet("resnet50", 4, 64)),
            ("camvid-unet b1", None, _exhibit("camvid-unet", "unet")),
            ("transformer 4x256", None, _transformer(4, 256, 2, 64)),
            ("awd-lstm-classifier", None, _exhibit("awd-lstm-classifier", "classifier")),
        ]
    return [
        ("resnet34 b1 fp32", None, _resnet("resnet34", 1, 224)),
        ("resnet34 b64 fp32", None, _resnet("resnet34", 64, 224)),
        ("resnet50 b64 bf16", "bf16", _resnet("resnet50", 64, 224)),
        ("camvid-unet b1", None, _exhibit("camvid-unet", "unet")),
        ("transformer 24x1024 b8x512", None, _transformer(24, 1024, 8, 512)),
        ("awd-lstm-classifier", None, _exhibit("awd-lstm-classifier", "classifier")),
    ]


def run_case(label: str, dtype: str | None, build: Callable[[], tuple[nn.Module, tuple]], device: str,
             warmup: int, repeat: int, gpu_timer: str = "auto", keep: dict[str, str] | None = None,
             peers: bool = False) -> dict[str, Any]:
    """Profile one case; its row of numbers (and, with ``keep``, its trace's JSON under ``keep[label]``;
    with ``peers``, the other tools' overhead on the same model under ``row["peers"]``)."""
    model, inputs = build()
    t0 = time.perf_counter()
    trace = shapetrace.profile(model, *inputs, device=device, warmup=warmup, repeat=repeat, dtype=dtype,
                               gpu_timer=gpu_timer)
    if keep is not None:
        keep[label] = trace.to_json()
    t = trace.timing or {}
    root = trace.calls[0]
    attributed = t.get("attributed_ms") or 0.0
    reference = t.get("kernel_ms") if t.get("kind", "").startswith("cuda-kernels") else t.get("root_ms")
    row = {
        "model": label, "kind": t.get("kind"), "device": t.get("device"), "dtype": t.get("dtype"),
        "forward_ms": t.get("forward_ms"), "profiled_ms": t.get("profiled_ms"), "overhead": t.get("overhead"),
        "attributed_ms": attributed, "reference_ms": reference,
        "attributed_vs_reference": round(attributed / reference, 4) if reference else None,
        "kernel_ms": t.get("kernel_ms"), "busy_ms": t.get("busy_ms"), "gpu_idle_fraction": t.get("gpu_idle_fraction"),
        "root_ms": t.get("root_ms"), "calls": len(trace.calls), "timed_calls": sum(1 for c in trace.calls if c.timing),
        "uncalled": len(trace.uncalled), "gflops": round((root.flops or 0) / 1e9, 3),
        "wall_s": round(time.perf_counter() - t0, 2), "repeats": repeat, "warmup": warmup,
    }
    leaf_self = sum(c.timing["self_ms"] for c in trace.leaves() if c.timing)
    row["leaf_share"] = round(leaf_self / attributed, 4) if attributed else None  # naive leaf-only coverage
    if peers:
        row["peers"] = peer_ratios(model, inputs, device, dtype)
    return row


PEERS = ("torch.profiler run", "torchinfo.summary", "torchview.draw_graph", "torchlens.trace")


def peer_ratios(model: nn.Module, inputs: tuple, device: str, dtype: str | None, rounds: int = 5
                ) -> dict[str, Any]:
    """Wall time of the other tools on the same model, input and device, over the plain forward's, from
    interleaved rounds (medians). ``torch.profiler run`` is what a user pays for one profiled forward:
    the profiler started, the forward, the profiler stopped and its events parsed. A tool that is not
    installed (torchinfo, torchview and torchlens are not on the GPU machine unless carried) reads
    "not installed"."""
    dt = resolve_dtype(dtype)
    dev = torch.device(device)
    model = model.to(device=dev, dtype=dt) if dt is not None else model.to(dev)
    xs = [x.to(dev, dtype=dt) if dt is not None and x.is_floating_point() else x.to(dev) for x in inputs]

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def plain() -> None:
        with torch.no_grad():
            model(*xs)
        sync()

    def profiler_run() -> None:
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
        with profile(activities=acts) as prof:
            plain()
        prof.key_averages()  # what a user reads next: the events parsed and aggregated

    fns: dict[str, Callable[[], Any]] = {"plain forward": plain, "torch.profiler run": profiler_run}
    out: dict[str, Any] = {}
    try:
        import torchinfo  # noqa: PLC0415 - optional here: not on the GPU machine unless carried

        fns["torchinfo.summary"] = lambda: torchinfo.summary(model, input_data=xs, verbose=0, depth=100,
                                                             device=dev)
    except ImportError:
        out["torchinfo.summary"] = "not installed"
    try:
        import torchview  # noqa: PLC0415 - optional here: not on the GPU machine unless carried

        fns["torchview.draw_graph"] = lambda: torchview.draw_graph(model, input_data=xs, depth=100,
                                                                   expand_nested=True, device=dev)
    except ImportError:
        out["torchview.draw_graph"] = "not installed"
    try:
        import torchlens  # noqa: PLC0415 - optional here: not on the GPU machine unless carried

        fns["torchlens.trace"] = lambda: torchlens.trace(model, xs)
    except ImportError:
        out["torchlens.trace"] = "not installed"
    times: dict[str, list[float]] = {name: [] for name in fns}
    failed: dict[str, str] = {}
    order = list(fns)
    for r in range(rounds + 1):  # the first round warms up and is not counted
        for name in order[r % len(order):] + order[:r % len(order)]:
            if name in failed:
                continue
            t0 = time.perf_counter()
            try:
                fns[name]()
            except Exception as e:  # noqa: BLE001 - a peer that fails on a model is a result, not a crash
                failed[name] = f"error: {type(e).__name__}: {str(e)[:120]}"
                continue
            if r:
                times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["plain forward"])
    out["plain_ms"] = round(base * 1e3, 4)
    for name in PEERS:
        if name in failed:
            out[name] = failed[name]
        elif times.get(name):
            out[name] = round(statistics.median(times[name]) / base, 3)
    return out


def peers_markdown(rows: list[dict[str, Any]]) -> str:
    """The other tools' wall time over the plain forward, one row per case that measured them."""
    head = ["model", "plain ms", "shapetrace.profile (timed forward)", *PEERS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        p = r.get("peers")
        if not p:
            continue
        cells = [f"{p[k]:.2f}×" if isinstance(p.get(k), (int, float)) else str(p.get(k, "—")) for k in PEERS]
        lines.append(f"| {r['model']} | {p['plain_ms']:.3f} | {r['overhead']:.2f}× | " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def markdown(rows: list[dict[str, Any]]) -> str:
    head = ["model", "dtype", "plain ms", "profiled ms", "overhead", "attributed ms", "reference ms", "attr/ref",
            "leaf-only share", "GPU idle", "GFLOP", "kind"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def f(x: Any, nd: int = 3) -> str:
        return "—" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))

    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | error: {r['error']} |" + " |" * (len(head) - 2))
            continue
        idle = r.get("gpu_idle_fraction")
        lines.append("| " + " | ".join([
            r["model"], f(r["dtype"]), f(r["forward_ms"]), f(r["profiled_ms"]), f(r["overhead"], 2) + "×",
            f(r["attributed_ms"]), f(r["reference_ms"]), f(r["attributed_vs_reference"], 4),
            f(r["leaf_share"], 3), "—" if idle is None else f"{100 * idle:.1f}%", f(r["gflops"]), r["kind"],
        ]) + " |")
    return "\n".join(lines)


def _write_json(path: str, data: dict[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=1), encoding="utf-8")


def _write_traces(path: str, traces: dict[str, str]) -> None:
    """Every trace's JSON as ``<label>.json`` (letters, digits, ``-``) in one gzipped tar."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for label, text in traces.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-") + ".json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (CPU smoke run)")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--only", default=None, help="run only the cases whose label contains this text")
    parser.add_argument("--json", default=None, help="write the rows here (default: $OUT/gpu_profile.json)")
    parser.add_argument("--gpu-timer", default="auto", choices=["auto", "events"],
                        help="auto: torch.profiler kernel attribution; events: CUDA events in the hooks")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="skip the cases left once this many seconds have passed (default: no limit)")
    parser.add_argument("--traces", default=None,
                        help="save every profiled trace's JSON in this .tar.gz (default: $OUT/gpu_traces.tar.gz)")
    parser.add_argument("--no-peers", dest="peers", action="store_false",
                        help="skip timing torch.profiler, torchinfo, torchview and torchlens on each case")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: 1 with --device cpu, so a busy shared machine's "
                             "OpenMP spin-waits do not swamp the numbers; torch's default otherwise)")
    ns = parser.parse_args(argv)
    threads = ns.threads if ns.threads is not None else (1 if ns.device == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    if ns.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here; use --device cpu --quick")
    warmup = ns.warmup if ns.warmup is not None else (1 if ns.quick else 3)
    repeat = ns.repeat if ns.repeat is not None else (3 if ns.quick else 10)
    card = torch.cuda.get_device_name() if ns.device == "cuda" else platform.processor() or platform.machine()
    print(f"# shapetrace.profile benchmark on {ns.device} ({card}); torch {torch.__version__}; "
          f"warmup {warmup}, repeat {repeat}, {torch.get_num_threads()} CPU thread(s)", flush=True)
    out_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else None
    target = ns.json or (str(out_dir / "gpu_profile.json") if out_dir else None)
    traces = ns.traces or (str(out_dir / "gpu_traces.tar.gz") if out_dir else None)
    info = {"device": ns.device, "card": card, "torch": torch.__version__, "cuda": torch.version.cuda,
            "warmup": warmup, "repeat": repeat}
    runs = []
    for label, dtype, build in cases(ns.quick):
        if ns.only and ns.only not in label:
            continue
        runs.append((label, dtype, build, ns.gpu_timer))
        if ns.device == "cuda" and ns.gpu_timer == "auto" and "b64" in label:
            runs.append((f"{label} (events)", dtype, build, "events"))
    rows: list[dict[str, Any]] = []
    kept: dict[str, str] = {}
    start = time.perf_counter()
    for label, dtype, build, timer in runs:
        if ns.budget_s is not None and time.perf_counter() - start > ns.budget_s:
            rows.append({"model": label, "error": f"skipped: the {ns.budget_s:.0f} s budget was spent"})
            continue
        try:
            row = run_case(label, dtype, build, ns.device, warmup, repeat, timer, kept if traces else None,
                           peers=ns.peers and timer == ns.gpu_timer)
        except Exception as e:  # noqa: BLE001 - one failing case must not lose the others
            row = {"model": label, "error": f"{type(e).__name__}: {e}"}
        rows.append(row)
        print(f"  {label}: {json.dumps(row)}", file=sys.stderr, flush=True)
        if ns.device == "cuda":
            torch.cuda.empty_cache()
        if target:  # after every case, so a run cut off at its time limit keeps what it finished
            _write_json(target, {**info, "rows": rows})
        if traces:
            _write_traces(traces, kept)
    print(markdown(rows))
    side_by_side = peers_markdown(rows)
    if side_by_side:
        print("\n" + side_by_side)
    if target:
        _write_json(target, {**info, "rows": rows})
        print(f"wrote {target}", file=sys.stderr)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
