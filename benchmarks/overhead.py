"""Overhead of a shape trace against the plain forward, the hook floor, torchinfo, torchview, torchlens and a
torch.profiler run, measured in one run.

The plain forward, the floor and shapetrace's two modes run on the same model and input, interleaved round
by round, so drift in the machine's speed hits all of them alike. Each result is the median wall time of its
rounds divided by the plain forward's median from the same run (and minimum over minimum). Each other tool
(torchinfo, torchview, torchlens, the profiler) is measured the same way in a child process of its own,
interleaved with a plain forward timed there: what a tool leaves in a process (torchlens's wrappers around
torch's functions; after torchview, slower reads of every parameter) would slow every later measurement in
it. torchlens is optional (its column reads "not installed" without it).

The *floor* is the least a hook-based shape tracer can cost: one bare global forward pre-hook and one
global forward hook that append each call's input and output shapes to a list. Per-call costs (floor and
shapetrace) are read from minima: (method − plain forward − fixed cost) / module calls, where the fixed
cost is a ``Tracer`` entered and left around no forward.

    python benchmarks/overhead.py                # all cases, prints a Markdown table
    python benchmarks/overhead.py --quick        # small cases only (a smoke test)
    python benchmarks/overhead.py --case "resnet34, batch 1" --threads 1   # one case, one torch thread
    python benchmarks/overhead.py --write docs/benchmarks.md   # also replace the table in the doc
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

import shapetrace

MARK_BEGIN = "<!-- overhead:begin -->"
MARK_END = "<!-- overhead:end -->"


class ChunkedLSTM(nn.Module):
    """An AWD-LSTM-sized LSTM run once per 72-token chunk, as BPT3C does."""

    def __init__(self, vocab: int = 1000, emb: int = 400, hid: int = 1152, chunk: int = 72):
        super().__init__()
        self.chunk = chunk
        self.emb = nn.Embedding(vocab, emb)
        self.lstm = nn.LSTM(emb, hid, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.emb(x)
        state, outs = None, []
        for i in range(0, x.shape[1], self.chunk):
            out, state = self.lstm(x[:, i:i + self.chunk], state)
            outs.append(out)
        return torch.cat(outs, dim=1)


TINY_BLOCKS = "200 × (Linear 4→4, ReLU), batch 1"


def cases(quick: bool, only: list[str] | None = None
          ) -> list[tuple[str, Callable[[], nn.Module], Callable[[], torch.Tensor]]]:
    def encoder() -> nn.Module:
        layer = nn.TransformerEncoderLayer(512, 8, 2048, batch_first=True)
        return nn.TransformerEncoder(layer, 12, enable_nested_tensor=False)

    if quick:
        return [("resnet18, batch 1, 64x64", lambda: torchvision.models.resnet18(weights=None),
                 lambda: torch.randn(1, 3, 64, 64))]
    every = [
        ("resnet34, batch 1", lambda: torchvision.models.resnet34(weights=None), lambda: torch.randn(1, 3, 224, 224)),
        ("resnet34, batch 64", lambda: torchvision.models.resnet34(weights=None),
         lambda: torch.randn(64, 3, 224, 224)),
        ("transformer encoder, 12 layers, (8, 128, 512)", encoder, lambda: torch.randn(8, 128, 512)),
        ("LSTM per 72-token chunk, (8, 288)", ChunkedLSTM, lambda: torch.randint(0, 1000, (8, 288))),
        # Almost nothing but module calls: the per-call costs that resnet34's long forward hides in its noise.
        (TINY_BLOCKS, lambda: nn.Sequential(*[nn.Sequential(nn.Linear(4, 4), nn.ReLU()) for _ in range(200)]),
         lambda: torch.randn(1, 4)),
    ]
    return [c for c in every if not only or c[0] in only]


METHODS = ("plain forward", "hook floor", "shapetrace.trace", "shapetrace.trace(ops=True)", "torchinfo.summary",
           "torchview.draw_graph", "torchlens.trace", "torch.profiler run")


# The other tools run each in a child process of its own, beside a plain forward timed there: what they
# leave in a process changes what runs after them. torchlens, once imported, replaces torch's functions with
# wrappers for good; after one torchview.draw_graph (or torchinfo, or a profiler run) plain Python reads of
# the same parameters take 1.7x as long in that process (measured: a walk reading every parameter's numel,
# 27 -> 45 us), which a tracer's fixed cost and hooks would pay.
IN_A_CHILD = ("torchinfo.summary", "torchview.draw_graph", "torchlens.trace", "torch.profiler run")


def methods(model: nn.Module, x: torch.Tensor, child: str | None = None) -> dict[str, Callable[[], object]]:
    """The methods of ``METHODS`` measured in this process (the plain forward, the floor, shapetrace's), or
    (``child``) the plain forward and that one tool, if it is installed (torchlens is optional)."""
    def plain() -> object:
        with torch.no_grad():
            return model(x)

    if child is None:
        return {"plain forward": plain, "hook floor": lambda: floor(model, x),
                "shapetrace.trace": lambda: shapetrace.trace(model, x),
                "shapetrace.trace(ops=True)": lambda: shapetrace.trace(model, x, ops=True)}
    tool = _tool(child, model, x)
    return {"plain forward": plain, child: tool} if tool is not None else {}


def _tool(name: str, model: nn.Module, x: torch.Tensor) -> Callable[[], object] | None:
    """One of the other tools, imported only in the child process that measures it."""
    if name == "torchinfo.summary":
        import torchinfo  # noqa: PLC0415 - each tool is imported in its own process only (IN_A_CHILD)
        return lambda: torchinfo.summary(model, input_data=x, verbose=0, depth=100)
    if name == "torchview.draw_graph":
        import torchview  # noqa: PLC0415 - in its own process only
        return lambda: torchview.draw_graph(model, input_data=x, depth=100, expand_nested=True)
    if name == "torch.profiler run":  # what a user pays for the profiler's per-op table of one forward
        from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415 - in its own process only

        def profiler_run() -> object:
            with profile(activities=[ProfilerActivity.CPU]) as prof, torch.no_grad():
                model(x)
            return prof.key_averages()
        return profiler_run
    try:
        import torchlens  # noqa: PLC0415 - optional: its column reads "not installed" without it
    except ImportError:
        return None
    return lambda: torchlens.trace(model, x)  # its default capture: every op's output kept


def in_a_child(tool: str, label: str, quick: bool, rounds: int, budget_s: float) -> tuple[float, float] | None:
    """(median ratio, minimum ratio) of ``tool`` over the plain forward, both timed in a fresh Python
    process; ``None`` when the tool is not installed there."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", tool, "--rounds", str(rounds), "--budget",
           str(budget_s), "--threads", str(torch.get_num_threads())] + (["--quick"] if quick else ["--case", label])
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    return None if answer is None else (answer["median"], answer["min"])


def child_main(tool: str, quick: bool, rounds: int, budget_s: float, only: list[str] | None) -> None:
    """``--child TOOL``: time the plain forward and the tool for the one case asked; print their ratios."""
    [(_, build, make_input)] = cases(quick, only)
    torch.manual_seed(0)
    model, x = build().eval(), make_input()
    if not methods(model, x, tool):
        print(json.dumps(None))
        return
    medians, minima, _ = measure(model, x, rounds, budget_s, tool)
    print(json.dumps({"median": medians[tool] / medians["plain forward"],
                      "min": minima[tool] / minima["plain forward"]}))


def floor(model: nn.Module, x: torch.Tensor) -> list:
    """The floor: a bare global pre+post hook pair recording each call's input and output shapes."""
    shapes: list = []

    def pre(module: nn.Module, args: tuple) -> None:
        shapes.append([tuple(a.shape) for a in args if isinstance(a, torch.Tensor)])

    def post(module: nn.Module, args: tuple, out: object) -> None:
        shapes.append(tuple(out.shape) if isinstance(out, torch.Tensor) else None)

    handles = [register_module_forward_pre_hook(pre), register_module_forward_hook(post)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return shapes


def measure(model: nn.Module, x: torch.Tensor, rounds: int, budget_s: float,
            child: str | None = None) -> tuple[dict[str, float], dict[str, float], int]:
    """Median and minimum seconds per method. Each round runs every method once, starting with a different one each
    round; fast models get more rounds (up to what ``budget_s`` allows), never fewer than ``rounds``."""
    fns = methods(model, x, child)
    first: dict[str, float] = {}
    for name, fn in fns.items():  # warm-up: allocator, lazy imports, oneDNN kernels
        t0 = time.perf_counter()
        fn()
        first[name] = time.perf_counter() - t0
    rounds = max(rounds, min(50, int(budget_s / max(sum(first.values()), 1e-9))))
    times = interleaved(fns, rounds)
    return ({name: statistics.median(ts) for name, ts in times.items()}, {name: min(ts) for name, ts in times.items()},
            rounds)


def interleaved(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Seconds of each run of each method: every round runs every method once, starting with a different one
    each round, so drift in the machine's speed hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns)
    for r in range(rounds):
        for name in order[r % len(order):] + order[:r % len(order)]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def run(quick: bool, rounds: int, budget_s: float, only: list[str] | None = None) -> str:
    torch.manual_seed(0)
    lines = [
        (f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, CPU. Interleaved rounds, each starting with a different method. Each cell: "
         "the method's median over the plain forward's median (in brackets: minimum over minimum, the "
         "estimate least disturbed by other load on the machine)."),
        "",
        "| model | rounds | plain forward (ms) | " + " | ".join(METHODS[1:]) + " |",
        "|---|---:|---:|" + "---:|" * (len(METHODS) - 1),
    ]
    measured = []
    for label, build, make_input in cases(quick, only):
        model = build().eval()
        x = make_input()
        medians, minima, n = measure(model, x, rounds, budget_s)
        base, base_min = medians["plain forward"], minima["plain forward"]
        ratios = {k: (medians[k] / base, minima[k] / base_min) for k in medians}
        for tool in IN_A_CHILD:
            apart = in_a_child(tool, label, quick, rounds, budget_s)
            if apart is not None:
                ratios[tool] = apart
        cells = [f"{ratios[k][0]:.2f}× ({ratios[k][1]:.2f}×)" if k in ratios else "not installed" for k in METHODS[1:]]
        lines.append(f"| {label} | {n} | {base * 1e3:.1f} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
        calls = len(shapetrace.trace(model, x).calls)
        fns = methods(model, x)

        def fixed(model: nn.Module = model) -> None:
            with shapetrace.Tracer(model):
                pass

        counts = {k: function_calls(fns[k]) for k in ("plain forward", "hook floor", "shapetrace.trace",
                                                       "shapetrace.trace(ops=True)")}
        counts["fixed"] = function_calls(fixed)
        measured.append((label, calls, fixed_cost(model), base_min, minima, counts))
    costs = ["", ("Per-call costs from the same run's minima: *floor* = (hook floor − plain) / calls; *trace* = "
                  "(shapetrace.trace − plain − fixed) / calls; *ops* the same for `trace(ops=True)`. *Fixed* is a "
                  "`Tracer` entered and left around no forward. On long forwards the differences are below the "
                  "machine's run-to-run noise: read the per-call costs where the forward per call is shortest."),
             "", ("| model | module calls | fixed (ms) | floor per call (µs) | trace per call (µs) | "
                 "trace / floor | ops per call (µs) |"), "|---|---:|---:|---:|---:|---:|---:|"]
    for label, calls, fixed, base_min, minima, _ in measured:
        floor_call = (minima["hook floor"] - base_min) / calls
        trace_call = (minima["shapetrace.trace"] - base_min - fixed) / calls
        ops_call = (minima["shapetrace.trace(ops=True)"] - base_min - fixed) / calls
        ratio = f"{trace_call / floor_call:.1f}×" if floor_call > 0 else "—"
        costs.append(f"| {label} | {calls} | {fixed * 1e3:.2f} | {floor_call * 1e6:.1f} | {trace_call * 1e6:.1f} | "
                     f"{ratio} | {ops_call * 1e6:.1f} |")
    costs += ["", ("Python function calls per module call (`sys.setprofile`, deterministic: the interpreter work "
                   "the hooks add, whatever the load on the machine): *floor* = (hook floor − plain) / calls; "
                   "*trace* and *ops* = (method − plain − fixed) / calls; *fixed* = the calls of a `Tracer` "
                   "around no forward."),
              "", "| model | floor | trace | ops | fixed (calls) |", "|---|---:|---:|---:|---:|"]
    for label, calls, _, _, _, counts in measured:
        plain = counts["plain forward"]
        per = {k: (counts[k] - plain - (counts["fixed"] if k != "hook floor" else 0)) / calls
               for k in ("hook floor", "shapetrace.trace", "shapetrace.trace(ops=True)")}
        costs.append(f"| {label} | {per['hook floor']:.1f} | {per['shapetrace.trace']:.1f} | "
                     f"{per['shapetrace.trace(ops=True)']:.1f} | {counts['fixed']} |")
    return "\n".join(lines + costs) + "\n"


def function_calls(fn: Callable[[], object]) -> int:
    """Python function calls made by one run of ``fn`` (``sys.setprofile``): a measure of interpreter work
    that, unlike wall time, does not move with the load on the machine."""
    count = [0]

    def profiler(frame: object, event: str, arg: object) -> None:
        if event == "call":
            count[0] += 1

    fn()
    sys.setprofile(profiler)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return count[0]


def fixed_cost(model: nn.Module, repeat: int = 20) -> float:
    """Minimum seconds to enter and leave a ``Tracer`` around no forward at all."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        with shapetrace.Tracer(model):
            pass
        times.append(time.perf_counter() - t0)
    return min(times)


def write_section(doc: Path, table: str, begin: str = MARK_BEGIN, end: str = MARK_END) -> None:
    """Replace the text between the ``begin`` and ``end`` markers of ``doc`` (or append the section)."""
    text = doc.read_text(encoding="utf-8") if doc.exists() else ""
    block = f"{begin}\n{table}{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text + ("\n" if text else "") + block + "\n"
    doc.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one small model, for a smoke test")
    parser.add_argument("--rounds", type=int, default=5, help="at least this many rounds per model")
    parser.add_argument("--budget", type=float, default=60.0,
                        help="seconds per model: fast models get more rounds (at most 50)")
    parser.add_argument("--case", action="append", help="run only the case with this label (repeatable)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--write", type=Path, help="replace the overhead table in this Markdown file")
    parser.add_argument("--child", choices=IN_A_CHILD, help=argparse.SUPPRESS)  # see IN_A_CHILD
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        child_main(args.child, args.quick, args.rounds, args.budget, args.case)
        return
    table = run(args.quick, args.rounds, args.budget, args.case)
    print(table)
    if args.write:
        write_section(args.write, table)


if __name__ == "__main__":
    main()
