"""``shapetrace profile``: per-layer times, FLOPs and memory beside the shapes, from the command line.

A thin click layer over the session's ``profile_model`` (see ``shapetrace.tracer.timing`` for the method);
``cli.py`` registers it with ``main.add_command(profile_command)``; this module never imports ``cli.py``. Exit status as for ``trace``: 0 on success, 1 when the forward
fails, 2 for usage errors (bad model, input or option; ``--device cuda`` without CUDA). No traceback unless
``--debug``.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from .cli_options import (
    CONTEXT,
    OUTPUT_HELP,
    SuggestingChoice,
    check_plot_file,
    cli_errors,
    dash_is_stdout,
    emit,
    heat_option,
    note_diagram_only,
    note_plot_only,
    plot_data,
    plot_options,
    prepare_output,
    print_cause,
    profile_heat,
    table_width,
    terminal_colour,
    width_option,
    write_plot,
)
from .renderers import RenderOptions, formats, get
from .renderers.rows import above_own_p90
from .renderers.units import fallback_text, literal, timer_kind_text
from .session import TraceRequest, UsageProblem, load, profile_model
from .tracer.records import profile_run_text

PROFILE_FORMATS = formats()

PROFILE_HELP = """Profile MODEL's forward: time per call (self and inclusive), FLOPs and memory beside the shapes.

\b
MODEL and --input are as for 'shapetrace trace' (see its --help). The forward runs --warmup times untimed,
then --repeat times timed; each iteration runs the plain forward and the instrumented one, so the overhead
is measured in the same process. On CUDA, kernel time is attributed to calls with torch.profiler (CUDA
events when CUPTI is missing); on CPU, wall-clock spans. Self times add up to the forward's time.

\b
Examples:
  shapetrace profile resnet18 --input 1,3,224,224 --device cpu --repeat 5
  shapetrace profile resnet50 --input 64,3,224,224 --device cuda --dtype bf16 --plot top.svg
  shapetrace profile awd-lstm-classifier --warmup 1 --repeat 3 --format json -o clas.json
  shapetrace profile camvid-unet --plot flow.png --plot-kind flow
  shapetrace profile pet-recognizer-resnet34 --device cpu -o heat.svg --depth 2
"""


@click.command("profile", help=PROFILE_HELP, context_settings=CONTEXT)
@click.argument("model")
@click.option("--input", "-i", "inputs", multiple=True, metavar="SPEC", help="An input tensor spec (repeatable).")
@click.option("--arg", "-a", "args", multiple=True, metavar="KEY=VALUE", help="Keyword argument for the builder.")
@click.option("--device", type=SuggestingChoice(["cuda", "cpu"]), default=None,
              help="Where to run (default: cuda when available, else cpu).")
@click.option("--warmup", type=click.IntRange(min=0), default=3, show_default=True, help="Untimed iterations.")
@click.option("--repeat", type=click.IntRange(min=1), default=10, show_default=True, help="Timed iterations.")
@click.option("--dtype", type=SuggestingChoice(["bf16", "fp16", "fp32"]), default=None,
              help="Cast floating parameters, buffers and inputs (default: as they are).")
@click.option("--format", "-f", "fmt", type=SuggestingChoice(PROFILE_FORMATS), default=None,
              help="Output format (default: from -o's suffix, else text); svg/png/pdf/dot draw the diagram "
                   "coloured by self time.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              callback=dash_is_stdout,
              help=OUTPUT_HELP + " (checked before the forward runs; written whole or not at all).")
@click.option("--depth", "-d", type=click.IntRange(min=0), default=None, help="Fold calls deeper than N.")
@click.option("--view", type=SuggestingChoice(["calls", "modules"]), default="calls", show_default=True,
              help="One row per call, or one row per module with the times of all its calls added up (the summary "
                   "and the bars plots follow it).")
@plot_options
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True,
              help="Calls in the summary (stderr) and in the bars plot.")
@click.option("--train/--eval", "train", default=None, help="Run in training or eval mode.")
@click.option("--grad", is_flag=True, help="Keep autograd on (default: torch.no_grad()), as a training forward runs.")
@heat_option
@width_option
@click.option("--debug", is_flag=True, help="Show Python tracebacks.")
def profile_command(model: str, inputs: tuple[str, ...], args: tuple[str, ...], device: str | None, warmup: int,
                    repeat: int, dtype: str | None, fmt: str | None, output: str | None, depth: int | None,
                    view: str, plot_file: str | None, plot_kind: str, top: int, train: bool | None, grad: bool,
                    heat: str | None, width: int | None, debug: bool) -> None:
    with cli_errors(debug):
        fmt = prepare_output(fmt, output, PROFILE_FORMATS, models=(model,))
        check_plot_file(plot_file, output, model)
        note_plot_only(plot_file, "plot_kind")  # --top also sizes the summary
        note_diagram_only(fmt, heat=heat)
        request = TraceRequest(model, inputs, args, _resolve_device(device), train, grad=grad, grad_option="--grad")
        if heat == "memory" and not str(request.device).startswith("cuda") and get(fmt).dataflow:
            raise UsageProblem("--heat memory: peak memory is measured on CUDA only; use --heat activations "
                               "(sizes from shapes) or --heat time on this device")
        loaded = load(TraceRequest(model, inputs, args, None, train))
        with click.progressbar(length=warmup + repeat, label=f"profiling on {request.device}", file=sys.stderr,
                               show_pos=True) as bar:
            outcome = profile_model(request, warmup=warmup, repeat=repeat, dtype=dtype, loaded=loaded,
                                    progress=lambda done, total: bar.update(1))
        for note in outcome.notes:
            click.echo(f"note: {note}", err=True)
        if debug:
            print_cause(outcome.cause)
        # A diagram of a profile is coloured by self time (the heat overlay; --heat picks memory or activations)
        # unless the trace has no timings (a forward that failed).
        if outcome.failed and heat in ("time", "memory"):  # measured by the runs after the one that failed
            click.echo(f"note: --heat {heat}: {_why_nothing_measured(outcome.trace, 'measured')}; the diagram is "
                       "drawn without the heat overlay", err=True)
            heat = None
        heat = profile_heat(outcome.trace, heat)
        emit(outcome.trace, fmt, RenderOptions(depth=depth, view=view, width=table_width(width, output), heat=heat,
                                               color=terminal_colour(output)), output)
        if outcome.failed and plot_file is not None:
            click.echo(f"note: --plot {plot_file}: not written, {_why_nothing_measured(outcome.trace, 'timed')}",
                       err=True)
        if not outcome.failed:
            click.echo(summary(outcome.trace, top, view), err=True)
            if plot_file is not None:
                write_plot(plot_data(outcome.trace, plot_kind, plot_file, top, view), plot_file)
    if outcome.failed:
        click.echo(f"error: {outcome.error}", err=True)
        sys.exit(1)


def _resolve_device(device: str | None) -> str:
    """``--device``, or cuda when available, else cpu; ``UsageProblem`` for cuda without CUDA."""
    from .tracer.timing import ProfileUsageError, resolve_device  # noqa: PLC0415 - torch stays out of `render`

    try:
        return str(resolve_device(device, cpu_advice="--device cpu"))
    except ProfileUsageError as e:
        raise UsageProblem(f"--device {device}: {e}") from e


def _why_nothing_measured(trace: Any, what: str) -> str:
    """Why a failed profile has no times (``what``: timed, measured): it failed in the traced forward, before
    any run, or in a timed run after others completed, whose times are not kept."""
    timed = trace.meta.get("failed_in_timed_run") if trace is not None else None
    if isinstance(timed, dict):
        which = profile_run_text(timed.get("run"), timed.get("of"), timed.get("warmup"))
        return f"the forward failed in {which}, and no timings were kept"
    return f"the forward failed before anything was {what}"


def _times(count: Any, noun: str) -> str:
    """``1 repeat``, ``10 repeats``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def summary(trace: Any, top: int = 10, view: str = "calls") -> str:
    """A few lines for stderr: forward and profiled time, overhead, and the ``top`` calls by self time (with
    ``view="modules"``: the ``top`` modules, each call's self time added up)."""
    t = trace.timing or {}
    lines = [(f"{timer_kind_text(t.get('kind'))} on {t.get('device')} ({t.get('dtype')}), {_times(t.get('repeats'), 'repeat')}: "
             f"forward {t.get('forward_ms', 0):.3f} ms plain, {t.get('profiled_ms', 0):.3f} ms profiled "
             f"({t.get('overhead') or 0:.2f}x); self times add up to {t.get('attributed_ms', 0):.3f} ms")]
    why = fallback_text(trace.timing) if trace.timing else None
    if why:
        lines.append(f"GPU timer: CUDA events instead of torch.profiler: {why}")
    if "gpu_idle_fraction" in t:
        lines.append(f"GPU idle {100 * t['gpu_idle_fraction']:.1f}% of the forward; kernels "
                     f"{t.get('kernel_ms', 0):.3f} ms")
    ranked: dict[str, list[Any]] = {}  # label -> [self ms, class, calls, the call when it is one]
    for c in trace.calls:
        if c.timing:
            key = (c.module or "(root)") if view == "modules" else c.label
            entry = ranked.setdefault(key, [0.0, c.cls, 0, c])
            entry[0] += c.timing["self_ms"]
            entry[2] += 1
    whole = t.get("attributed_ms") or 1.0
    for label, (self_ms, cls, calls, call) in sorted(ranked.items(), key=lambda kv: -kv[1][0])[:top]:
        times = f", {calls} calls" if calls > 1 else ""
        lines.append(f"  {self_ms:9.3f} ms {100 * self_ms / whole:5.1f}%  {literal(label)} ({literal(cls)}{times})"
                     + (_stall_text(call.timing) if calls == 1 else ""))
    return "\n".join(lines)


def _stall_text(timing: Any) -> str:
    """`` ! above its p90 (median 0.038 ms): a stall`` for a call whose time a stall set (``above_own_p90``)."""
    if not above_own_p90(timing):
        return ""
    median = timing.get("median_ms")
    said = f" (median {median:.3f} ms)" if isinstance(median, (int, float)) else ""
    return f"  ! above its own p90{said}: a stall in the repeats kept"
