"""``shapetrace diff``: two models (or saved traces) compared call by call, or one model against torchinfo or
torchview (``--against``). The comparison itself lives in ``renderers/diff.py`` and ``compare.py``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import click

from .cli_options import (
    CONTEXT,
    OUTPUT_HELP,
    SuggestingChoice,
    cli_errors,
    dash_is_stdout,
    emit,
    prepare_output,
    print_cause,
    table_width,
    terminal_colour,
    width_option,
)
from .renderers import RenderOptions
from .renderers.diff import COMPARISON_FORMATS, diagram_options, diff_traces, render_trace_diff
from .renderers.diff import render as render_comparison
from .session import (
    OtherToolFailed,
    TraceRequest,
    UsageProblem,
    check_model,
    compare_model,
    is_saved_trace,
    pick_format,
    read_trace,
    trace_model,
    write_output,
)

DIAGRAM_FORMATS = ("svg", "png", "pdf", "dot")
# --against: the other tool failed on a model shapetrace traced (not 1, a forward that failed; nor 2, usage).
TOOL_FAILED_STATUS = 3
DIFF_FORMATS = ("text", "md", "html", "json", *DIAGRAM_FORMATS)


def _side(spec: str, inputs: tuple[str, ...], args: tuple[str, ...], train: bool | None, ops: bool,
          debug: bool) -> tuple[Any, str | None]:
    """The trace of one side: a saved trace read back, or the model traced; and a note when its forward failed."""
    if is_saved_trace(spec):
        given = [name for name, value in (("--arg", args), ("--input", inputs), ("--train/--eval", train is not None))
                 if value]
        if given:
            click.echo(f"note: {', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to the saved trace "
                       f"{spec}", err=True)
        saved = read_trace(spec)
        failure = saved.failure
        return saved, (f"the forward of {spec} (a saved trace) failed: {failure.text}"
                       if failure is not None else None)
    outcome = trace_model(TraceRequest(spec, inputs, args, train=train, ops=ops))
    for note in outcome.notes:
        click.echo(f"note: {note}", err=True)
    if debug:
        print_cause(outcome.cause)
    return outcome.trace, (f"the forward of {spec} failed: {outcome.error}" if outcome.failed else None)


@click.command("diff", context_settings=CONTEXT)
@click.argument("a", metavar="A")
@click.argument("b", metavar="[B]", required=False)
@click.option("--input", "-i", "inputs", multiple=True, metavar="SPEC",
              help="An example input (as for trace), used for both models. Default: each model's own.")
@click.option("--arg", "-a", "args", multiple=True, metavar="KEY=VALUE", help="Factory keyword argument for both.")
@click.option("--a-arg", "a_args", multiple=True, metavar="KEY=VALUE", help="Factory keyword argument for A only.")
@click.option("--b-arg", "b_args", multiple=True, metavar="KEY=VALUE", help="Factory keyword argument for B only.")
@click.option("--against", type=SuggestingChoice(["torchinfo", "torchview"]), default=None,
              help="With one MODEL: compare shapetrace with this tool instead (pip install 'shapetrace[compare]'); "
                   "written as text, md or json.")
@click.option("--format", "-f", "fmt", type=SuggestingChoice(DIFF_FORMATS), default=None,
              help="text, md, html, json, or a diagram of B with the changes marked (svg, png, pdf, dot) "
                   "[default: from -o's suffix, else text].")
@click.option("--output", "-o", type=click.Path(dir_okay=False, allow_dash=True), default=None, callback=dash_is_stdout,
              help=OUTPUT_HELP + " (checked before anything runs; written whole or not at all).")
@click.option("--train/--eval", "train", default=None,
              help="Trace in training / eval mode. Default: an exhibit as built, any other model in eval.")
@width_option
@click.option("--debug", is_flag=True, help="Show Python tracebacks.")
def diff_command(a: str, b: str | None, inputs: tuple[str, ...], args: tuple[str, ...], a_args: tuple[str, ...],
                 b_args: tuple[str, ...], against: str | None, fmt: str | None, output: str | None,
                 train: bool | None, width: int | None, debug: bool) -> None:
    """Compare two models call by call, or one model's trace with torchinfo's or torchview's.

    \b
    A and B are model specs (as for 'shapetrace trace') or saved traces
    (TRACE.json). Calls are aligned by module name and call order; the diff
    shows the layers that changed (class, own parameters, or output for the
    same input), calls only one side has, and the parameter difference. Layers
    whose shapes changed only because their input did are summed up in one line.
    Where both traces were profiled, times are shown too, and a layer whose own
    time changed beyond noise (1.5x, 1% of the forward, past both sides' p10-p90
    spread) is listed even when nothing else about it changed.

    \b
    With one MODEL and --against: shapetrace against torchinfo or torchview,
    each difference with the reason where the other tool is known to be wrong
    (formats: text, md, json).

    \b
    Exit status: 0 whatever differs (shapes or times), 1 when a model's forward failed (the diff of what ran is
    still shown, with --against the partial table, with a note naming the
    failure) or a saved trace's content is not a trace, 2 for a usage error,
    3 when the --against tool failed on a model shapetrace traced (the error
    names the tool and its innermost cause). What the model prints goes to
    stderr, in the other tool's run of it too.

    \b
    Examples:
      shapetrace diff create-head-default create-head-avg-pool
      shapetrace diff shapetrace.gallery:create_head shapetrace.gallery:create_head \\
          --arg nf=512 --arg n_out=37 --b-arg concat_pool=False --input 2,512,7,7
      shapetrace diff old.json new.json --format svg -o changes.svg
      shapetrace diff resnet18 --against torchview --input 1,3,64,64
    """
    with cli_errors(debug):
        fmt = pick_format(fmt, output)
        if fmt not in DIFF_FORMATS:
            raise UsageProblem(f"diff writes {', '.join(DIFF_FORMATS)}, not {fmt}")  # diff's own message
        prepare_output(fmt, output, inputs=(a, b), models=(a, b))
        if b is None:
            if a_args or b_args:
                raise UsageProblem("--a-arg and --b-arg are for two models (A and B); with one MODEL use --arg")
            if is_saved_trace(a):
                how = f"--against {against}" if against else "diff with one argument (--against torchinfo)"
                raise UsageProblem(_AGAINST_NEEDS_A_MODEL.format(spec=a, how=how, tool=against or "torchinfo"))
            notes = _against(a, inputs, args, against or "torchinfo", fmt, output, train, width, debug)
        elif against is not None:
            raise UsageProblem("--against compares one MODEL with another tool; give either B or --against, "
                               "not both")
        else:
            notes = _two(a, b, inputs, args, a_args, b_args, train, fmt, output, width, debug)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    if notes:  # a forward failed: the diff of what ran was shown, and the status says it is partial
        click.get_current_context().exit(1)


_AGAINST_NEEDS_A_MODEL = (
    "{spec!r} is a saved trace, but {how} runs {tool} on the model itself, so it needs a MODEL spec as 'shapetrace "
    "trace' takes it (resnet18, file.py:factory, package.module:factory), not a trace. To compare two saved "
    "traces, give both: shapetrace diff A.json B.json")


def _two(a: str, b: str, inputs: tuple[str, ...], args: tuple[str, ...], a_args: tuple[str, ...],
         b_args: tuple[str, ...], train: bool | None, fmt: str, output: str | None, width: int | None,
         debug: bool) -> list[str]:
    if a == b == "-":
        raise UsageProblem("A and B are both '-': only one of them can be read from stdin")
    ops = fmt in DIAGRAM_FORMATS
    sides = (("A", a, "--a-arg", a_args), ("B", b, "--b-arg", b_args))
    for side, spec, option, own in sides:  # both specs checked before either is built or traced
        if not is_saved_trace(spec):
            with _naming(side, spec):
                check_model(spec, (("--arg", args), (option, own)))
    (ta, note_a), (tb, note_b) = (_naming_side(side, spec, inputs, args + own, train, ops, debug)
                                  for side, spec, _, own in sides)
    result = diff_traces(ta, tb, a, b)
    if fmt in DIAGRAM_FORMATS:  # B's diagram, its own render hints plus the diff overlay
        tb.meta["options"] = {**dict(tb.meta.get("options") or {}), **diagram_options(result)}
        emit(tb, fmt, RenderOptions(overlays=("diff",)), output)
    else:
        _echo(render_trace_diff(result, fmt, table_width(width, output)), output)
    return [n for n in (note_a, note_b) if n]


@contextlib.contextmanager
def _naming(side: str, spec: str) -> Iterator[None]:
    """A usage problem of one side of the diff, said as that side's (``B (nope): unknown model 'nope'``)."""
    try:
        yield
    except UsageProblem as e:
        raise UsageProblem(f"{side} ({spec}): {e}") from e


def _naming_side(side: str, spec: str, *rest: Any) -> tuple[Any, str | None]:
    with _naming(side, spec):
        return _side(spec, *rest)


def _echo(text: str, output: str | None) -> None:
    if output is None:
        click.echo(text, nl=not text.endswith("\n"))
    else:
        write_output(text, output)
        click.echo(f"wrote {output}", err=True)


def _against(model: str, inputs: tuple[str, ...], args: tuple[str, ...], against: str, fmt: str,
             output: str | None, train: bool | None, width: int | None, debug: bool) -> list[str]:
    """Write the comparison with ``against``; a note when the forward failed (its partial table is written
    instead, as ``shapetrace trace`` writes it: there is nothing to compare)."""
    if fmt not in COMPARISON_FORMATS:
        raise UsageProblem(f"--against writes {', '.join(COMPARISON_FORMATS)}, not {fmt} (the diagram and html "
                           "formats are for a diff of two models)")
    try:
        outcome, result = compare_model(TraceRequest(model, inputs, args, train=train), against)
    except OtherToolFailed as e:
        if debug:
            print_cause(e.__cause__)
        click.echo(f"Error: {e}", err=True)
        click.get_current_context().exit(TOOL_FAILED_STATUS)
    for note in outcome.notes:
        click.echo(f"note: {note}", err=True)
    if debug:
        print_cause(outcome.cause)
    if result is None:
        emit(outcome.trace, fmt, RenderOptions(width=table_width(width, output), color=terminal_colour(output)),
             output)
        return [f"the forward of {model} failed, so there is nothing to compare with {against}: {outcome.error}"]
    _echo(render_comparison(result, fmt, table_width(width, output)), output)
    return []
