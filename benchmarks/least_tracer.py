"""What the least tracer recording the same facts as shapetrace costs per module call, in pure Python.

Issue 10 asks for a trace at most 3× the hook floor's per-call cost (``overhead.py``). The floor records shapes
only. A trace must also record, for each call, each tensor's identity (a weak reference and version counter,
so that edges name the value that flowed and a freed tensor's reused ``id()`` is not taken for it), its shape,
dtype, device and grad flag, and the call tree; and build one record per call and per tensor afterwards. This
script measures a bare-minimum tracer that does exactly that and nothing else (no keyword arguments, threads,
failures, names, parameter counts, side inputs, guard or placement): its hooks alone, and its hooks plus the
records (``Call``, ``TensorMeta`` and ``Edge`` built with shapetrace's own fast constructors), beside the plain
forward, the floor and ``shapetrace.trace``, interleaved round by round in one process. Per-call costs are
(method − plain forward) / module calls, from minima; for ``shapetrace.trace`` its fixed cost (a ``Tracer``
around no forward) is taken off too, as ``overhead.py`` does.

    python benchmarks/least_tracer.py --threads 1 --rounds 60
"""

from __future__ import annotations

import argparse
import platform
import sys
import weakref
from pathlib import Path

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

import shapetrace
from shapetrace.tracer import bulk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import TINY_BLOCKS, cases, floor, interleaved  # the sibling script's case, floor and rounds

_Tensor = torch.Tensor


def least_tracer(model: nn.Module, x: torch.Tensor, build: bool) -> list | None:
    """One forward with the least hooks that record what a trace needs; with ``build``, the records after it."""
    slot_of = {id(m): i for i, m in enumerate(model.modules())}
    by_id: dict[int, tuple[weakref.ref, int, int]] = {}
    producer: dict[int, int] = {}
    stack: list[int] = []
    slots: list[int] = []
    parents: list[int | None] = []
    inputs: list[list[tuple]] = []
    outputs: dict[int, tuple] = {}
    next_tid = [0]

    def tid_of(t: torch.Tensor) -> tuple[int, bool]:
        entry = by_id.get(id(t))
        if entry is not None and entry[0]() is t:
            return entry[1], False
        tid = next_tid[0]
        next_tid[0] += 1
        by_id[id(t)] = (weakref.ref(t), tid, t._version)
        return tid, True

    def pre(module: nn.Module, args: tuple) -> None:
        slot = slot_of.get(id(module))
        if slot is None:
            return
        cid = len(slots)
        slots.append(slot)
        parents.append(stack[-1] if stack else None)
        stack.append(cid)
        raw = []
        for a in args:
            if type(a) is _Tensor:
                raw.append((tid_of(a)[0], a.shape, a.dtype, a.device, a.requires_grad))
        inputs.append(raw)

    def post(module: nn.Module, args: tuple, out: object) -> None:
        if slot_of.get(id(module)) is None:
            return
        cid = stack.pop()
        if type(out) is _Tensor:
            tid, new = tid_of(out)
            if new:
                producer[tid] = cid
            outputs[cid] = (tid, out.shape, out.dtype, out.device, out.requires_grad)

    handles = [register_module_forward_pre_hook(pre), register_module_forward_hook(post)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return _records(slots, parents, inputs, outputs, producer) if build else None


def _records(slots: list[int], parents: list[int | None], inputs: list[list[tuple]], outputs: dict[int, tuple],
             producer: dict[int, int]) -> list:
    """One ``Call`` per call, one ``TensorMeta`` per distinct tensor value, one ``Edge`` per producer→consumer."""
    made: dict[tuple, object] = {}

    def meta(raw: tuple) -> object:
        record = made.get(raw)
        if record is None:
            record = made[raw] = bulk.tensor_meta(tuple(raw[1]), str(raw[2]), str(raw[3]), raw[0], raw[4])
        return record

    calls, edges = [], []
    for cid, (parent, raw_in) in enumerate(zip(parents, inputs)):
        metas = [meta(r) for r in raw_in]
        out = outputs.get(cid)
        calls.append(bulk.call(cid, "", "", 0, parent, 0, 0, 0, [], metas, {}, meta(out) if out else None, 0, 0, 0, 0))
        for m in metas:
            src = producer.get(m.tid)  # type: ignore[attr-defined]
            if src is not None:  # built and dropped: building them is part of what the script measures
                edges.append(bulk.edge(f"call:{src}", f"call:{cid}", m.tid, m.shape, m.dtype, False))  # type: ignore[attr-defined]
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    [(label, build, make_input)] = cases(False, [TINY_BLOCKS])
    torch.manual_seed(0)
    model, x = build().eval(), make_input()

    def plain() -> None:
        with torch.no_grad():
            model(x)

    def fixed() -> None:
        with shapetrace.Tracer(model):
            pass

    fns = {"plain forward": plain, "hook floor": lambda: floor(model, x),
           "least tracer, hooks": lambda: least_tracer(model, x, False),
           "least tracer, hooks + records": lambda: least_tracer(model, x, True),
           "shapetrace.trace": lambda: shapetrace.trace(model, x), "fixed": fixed}
    for fn in fns.values():  # warm-up
        fn()
    times = {k: min(v) for k, v in interleaved(fns, args.rounds).items()}
    calls = len(floor(model, x)) // 2
    per_call = {k: (v - times["plain forward"] - (times["fixed"] if k == "shapetrace.trace" else 0.0)) / calls
                for k, v in times.items() if k not in ("plain forward", "fixed")}
    print(f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, CPU; "
          f"{label}, {calls} module calls, {args.rounds} interleaved rounds, minima; plain forward "
          f"{times['plain forward'] * 1e3:.2f} ms.\n")
    print("| method | per call (µs) | × the floor |\n|---|---:|---:|")
    for k, v in per_call.items():
        print(f"| {k} | {v * 1e6:.1f} | {v / per_call['hook floor']:.1f}× |")


if __name__ == "__main__":
    main()
