"""How much of the hook floor is torch's hook dispatch: global hooks against a wrapper of ``Module.__call__``.

``overhead.py``'s *floor* is a bare global forward pre-hook and forward hook recording each call's shapes: the
least a tracer built on global hooks can cost. But registering any global hook sends every module call down
``Module._call_impl``'s slow path (the lists of hooks built, the pre-hooks' results checked, the result
checked for a ``grad_fn``), whatever the hooks do. A class-level wrapper of ``Module.__call__`` sees the same calls
with their keyword arguments and exceptions, while each call keeps torch's fast path. This script measures both,
empty and recording the floor's shapes, against the plain forward, interleaved round by round in one process;
per-call costs are (method − plain) / module calls, from minima.

It measures a mechanism, not shapetrace: what an engine on a ``__call__`` wrapper could save per call. (What such
an engine must also do, and what the hooks give for free, is in ``docs/benchmarks.md``.)

    python benchmarks/call_floor.py --threads 1                       # both cases, a Markdown table
    python benchmarks/call_floor.py --threads 1 --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import TINY_BLOCKS, cases, interleaved, write_section  # the sibling script's cases and writer

MARK_BEGIN = "<!-- call-floor:begin -->"
MARK_END = "<!-- call-floor:end -->"
CASES = ("resnet34, batch 1", TINY_BLOCKS)
METHODS = ("plain forward", "global hooks, empty", "global hooks, shapes (the floor)", "__call__ wrapper, empty",
           "__call__ wrapper, shapes")


def _record_in(shapes: list) -> Callable[[tuple], None]:
    def record(args: tuple) -> None:
        shapes.append([tuple(a.shape) for a in args if isinstance(a, torch.Tensor)])
    return record


def _record_out(shapes: list) -> Callable[[object], None]:
    def record(out: object) -> None:
        shapes.append(tuple(out.shape) if isinstance(out, torch.Tensor) else None)
    return record


@contextlib.contextmanager
def global_hooks(shapes: list | None) -> Iterator[None]:
    """A global forward pre-hook and forward hook (recording into ``shapes``, or doing nothing)."""
    if shapes is None:
        def pre(module: nn.Module, args: tuple) -> None:
            return None

        def post(module: nn.Module, args: tuple, out: object) -> None:
            return None
    else:
        record_in, record_out = _record_in(shapes), _record_out(shapes)

        def pre(module: nn.Module, args: tuple) -> None:
            record_in(args)

        def post(module: nn.Module, args: tuple, out: object) -> None:
            record_out(out)
    handles = [register_module_forward_pre_hook(pre), register_module_forward_hook(post)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def call_wrapper(shapes: list | None) -> Iterator[None]:
    """``Module.__call__`` replaced by a function that calls torch's own implementation (the compiled one where
    ``module.compile()`` set it), recording into ``shapes`` before and after, or doing nothing."""
    original = nn.Module.__call__
    impl = nn.Module._call_impl
    if shapes is None:
        def call(self: nn.Module, *args: object, **kwargs: object) -> object:
            compiled = self._compiled_call_impl
            return compiled(*args, **kwargs) if compiled is not None else impl(self, *args, **kwargs)
    else:
        record_in, record_out = _record_in(shapes), _record_out(shapes)

        def call(self: nn.Module, *args: object, **kwargs: object) -> object:
            record_in(args)
            compiled = self._compiled_call_impl
            out = compiled(*args, **kwargs) if compiled is not None else impl(self, *args, **kwargs)
            record_out(out)
            return out
    nn.Module.__call__ = call
    try:
        yield
    finally:
        nn.Module.__call__ = original


def methods(model: nn.Module, x: torch.Tensor) -> dict[str, Callable[[], list]]:
    """Each method runs one forward under ``torch.no_grad()`` and returns the shapes it recorded."""
    def run(around: Callable[[list | None], contextlib.AbstractContextManager] | None, record: bool) -> list:
        shapes: list = []
        with torch.no_grad(), (around(shapes if record else None) if around else contextlib.nullcontext()):
            model(x)
        return shapes

    return {"plain forward": lambda: run(None, False),
            "global hooks, empty": lambda: run(global_hooks, False),
            "global hooks, shapes (the floor)": lambda: run(global_hooks, True),
            "__call__ wrapper, empty": lambda: run(call_wrapper, False),
            "__call__ wrapper, shapes": lambda: run(call_wrapper, True)}


def measure(model: nn.Module, x: torch.Tensor, rounds: int) -> dict[str, list[float]]:
    """Seconds per round for each method, the methods interleaved, each round starting with a different one."""
    fns = methods(model, x)
    for fn in fns.values():  # warm-up
        fn()
    return interleaved(fns, rounds)


def module_calls(model: nn.Module, x: torch.Tensor) -> int:
    return len(methods(model, x)["global hooks, shapes (the floor)"]()) // 2


def run(rounds: int, only: tuple[str, ...]) -> str:
    header = ("| model | rounds | module calls | plain forward (ms) | "
              + " | ".join(f"{m} (µs per call)" for m in METHODS[1:]) + " |")
    machine = (f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
               "CPU. Per-call cost from minima of interleaved rounds: (method − plain forward) / module calls "
               "(in brackets: from medians).")
    lines = [machine, "", header, "|---|---:|" + "---:|" * (len(METHODS) + 1)]
    for label, build, make_input in cases(False, list(only)):
        model, x = build().eval(), make_input()
        calls = module_calls(model, x)
        times = measure(model, x, rounds)
        lo = {k: min(v) for k, v in times.items()}
        mid = {k: statistics.median(v) for k, v in times.items()}
        cells = [f"{(lo[m] - lo['plain forward']) / calls * 1e6:.1f} ({(mid[m] - mid['plain forward']) / calls * 1e6:.1f})"
                 for m in METHODS[1:]]
        lines.append(f"| {label} | {rounds} | {calls} | {lo['plain forward'] * 1e3:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=40, help="interleaved rounds per case")
    parser.add_argument("--case", action="append", help=f"only this case (repeatable; default: {', '.join(CASES)})")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--write", type=Path, help="replace the call-floor table in this Markdown file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    table = run(args.rounds, tuple(args.case or CASES))
    print(table)
    if args.write:
        write_section(args.write, table, MARK_BEGIN, MARK_END)


if __name__ == "__main__":
    main()
