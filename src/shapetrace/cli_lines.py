"""``shapetrace lines``: a forward's source with the shapes each line produced (see ``renderers/lines.py``)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import click

from .cli_options import (
    CONTEXT,
    OUTPUT_HELP,
    SuggestingChoice,
    a_file_not_stdout,
    check_finite_option,
    cli_errors,
    dash_is_stdout,
    distinct_outputs,
    note_saved_failure,
    note_suffix_mismatch,
    output_not_an_input,
    output_not_the_model,
    print_cause,
    report_finite,
    table_width,
    width_option,
)
from .renderers.lines import LinesError, NotReached, build_view, lines_page
from .renderers.lines import render as render_lines
from .session import TraceRequest, UsageProblem, check_output, is_saved_trace, read_trace, trace_model, write_output

_SUFFIX = {".html": "html", ".htm": "html", ".md": "md", ".markdown": "md", ".json": "json", ".txt": "text",
           ".text": "text"}


@click.command("lines", context_settings=CONTEXT)
@click.argument("model")
@click.option("--module", "-m", "module", default="", metavar="NAME",
              help="Show this submodule's forward (a name from named_modules(), e.g. 0 or layers.1). "
                   "Default: the model's own forward.")
@click.option("--input", "-i", "inputs", multiple=True, metavar="SPEC",
              help="An example input (as for 'shapetrace trace'); repeat for several.")
@click.option("--arg", "-a", "args", multiple=True, metavar="KEY=VALUE", help="Keyword argument for the factory.")
@click.option("--format", "-f", "fmt", type=SuggestingChoice(["text", "md", "html", "json"]), default=None,
              help="Output format [default: from -o's suffix, else text].")
@click.option("--output", "-o", type=click.Path(dir_okay=False, allow_dash=True), default=None, callback=dash_is_stdout,
              help=OUTPUT_HELP + " (checked before the forward runs; written whole or not at all).")
@click.option("--save-trace", type=click.Path(dir_okay=False), default=None, metavar="FILE", callback=a_file_not_stdout,
              help="Also save the trace (with its line information) as JSON, to render again without the model "
                   "(a file other than -o's: the same file for both is refused).")
@click.option("--train/--eval", "train", default=None,
              help="Trace in training / eval mode. Default: an exhibit as built, any other model in eval.")
@check_finite_option
@width_option
@click.option("--debug", is_flag=True, help="Show Python tracebacks.")
def lines_command(model: str, module: str, inputs: tuple[str, ...], args: tuple[str, ...], fmt: str | None,
                  output: str | None, save_trace: str | None, train: bool | None, check_finite: bool,
                  width: int | None, debug: bool) -> None:
    """Print MODEL's forward source with, beside each line, the module calls and
    functional ops it ran and their output shapes.

    \b
    A line run several times (a loop) shows its runs folded as ×N with each
    run's shape; lines never reached are marked · (dimmed in HTML); the line an
    error left by is marked ✗; with --check-finite, the line that made the first
    NaN or Inf is marked ‼. MODEL is a model spec as for 'shapetrace trace',
    or a trace saved as JSON with line information (--save-trace, or
    shapetrace.trace(model, x, lines=True).to_json()).

    \b
    Exit status: 0; 1 when the model's forward fails (what ran is shown,
    then the failure; for a --module the failure stopped short of, that it
    was not reached) or a saved trace's content is not a trace; 2 for a
    usage error. A saved trace of a failed
    forward is shown with status 0 and a note naming the failure, as
    'shapetrace render' does.

    \b
    Examples:
      shapetrace lines tabular-model
      shapetrace lines awd-lstm-classifier --module 0
      shapetrace lines mymodels.py:build --input 2,3,64,64 --format html -o lines.html
    """
    with cli_errors(debug):
        failure_note = _lines(model, module, inputs, args, fmt, output, save_trace, train, width, debug,
                              check_finite)
    if failure_note:
        click.echo(f"error: {failure_note}", err=True)
        sys.exit(1)


def _lines(model: str, module: str, inputs: tuple[str, ...], args: tuple[str, ...], fmt: str | None,
           output: str | None, save_trace: str | None, train: bool | None, width: int | None,
           debug: bool, check_finite: bool = False) -> str | None:
    """Write the lines view; the failure message when the forward failed, else ``None``."""
    if fmt is None and output is not None and Path(output).suffix and Path(output).suffix.lower() not in _SUFFIX:
        raise UsageProblem(f"no lines format writes {Path(output).suffix!r} files; use one of "
                           f"{', '.join(_SUFFIX)}, or give --format")
    fmt = fmt or (_SUFFIX.get(Path(output).suffix.lower(), "text") if output else "text")
    for path in (output, save_trace):
        if path is not None:
            check_output(path)
    distinct_outputs("--save-trace", save_trace, output, "the trace")
    output_not_an_input(output, model)
    output_not_the_model("-o", output, model)
    output_not_the_model("--save-trace", save_trace, model)
    note_suffix_mismatch(fmt, output)
    note_suffix_mismatch("json", save_trace)
    failure_note = None
    if is_saved_trace(model):
        if inputs or args or check_finite:
            raise UsageProblem("--input, --arg and --check-finite do not apply to a saved trace (a trace saved with "
                               "--check-finite shows what it found)")
        result = read_trace(model)
        _check_has_lines(result, model)
    else:
        outcome = trace_model(TraceRequest(model, inputs, args, train=train, lines=True, check_finite=check_finite))
        result, failure_note = outcome.trace, outcome.error
        if debug:
            print_cause(outcome.cause)
    if save_trace is not None:
        write_output(result.to_json(), save_trace)
    try:
        view = build_view(result, module)
    except NotReached as e:  # the failure, not the command line: told with the failure (status 1)
        if failure_note is None:  # a saved trace: this is all there is to tell
            return str(e)
        click.echo(f"error: {e}", err=True)
        return failure_note
    except LinesError as e:
        raise UsageProblem(str(e)) from e
    text = render_lines(view, fmt, table_width(width, output))
    if output is not None and fmt == "html":  # a file of its own: a whole page, not a fragment
        text = lines_page(text, f"{result.model.cls}{'.' + module if module else ''}: line by line")
    if output is None:
        click.echo(text, nl=not text.endswith("\n"))
    else:
        write_output(text, output)
        click.echo(f"wrote {output}", err=True)
    report_finite(result)
    if is_saved_trace(model):
        note_saved_failure(result, "the lines view")
    return failure_note


def _check_has_lines(trace: Any, path: str) -> None:
    """A saved profile has no line information (``profile()`` records none): a usage error saying what gives a
    line-by-line view, and that it has no times (the profile's stay in its file), before the generic one."""
    if trace.meta.get("profiled") and not trace.meta.get("lines") and not trace.sources:
        raise UsageProblem(
            "this is a saved profile, which has no line information (shapetrace.profile() records none): a line-by-"
            "line view comes from a trace made with lines ('shapetrace lines MODEL', or shapetrace.trace(model, ..., "
            "lines=True)), which has shapes but no times; no trace has both, and this file keeps the profile's "
            f"times (render it: shapetrace render {shlex.quote(path)})")
