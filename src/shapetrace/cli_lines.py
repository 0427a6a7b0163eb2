"""``shapetrace lines``: a forward's source with the shapes each line produced (see ``renderers/lines.py``)."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import click

from .cli import _CONTEXT, SuggestingChoice, _fail_usage, _write, friendly_errors, load_model_and_inputs

_SUFFIX = {".html": "html", ".htm": "html", ".md": "md", ".markdown": "md", ".json": "json"}


@click.command("lines", context_settings=_CONTEXT)
@click.argument("model")
@click.option("--module", "-m", "module", default="", metavar="NAME",
              help="Show this submodule's forward (a name from named_modules(), e.g. 0 or layers.1). "
                   "Default: the model's own forward.")
@click.option("--input", "-i", "inputs", multiple=True, metavar="SPEC",
              help="An example input (as for 'shapetrace trace'); repeat for several.")
@click.option("--arg", "-a", "args", multiple=True, metavar="KEY=VALUE", help="Keyword argument for the factory.")
@click.option("--format", "-f", "fmt", type=SuggestingChoice(["text", "md", "html", "json"]), default=None,
              help="Output format [default: from -o's suffix, else text].")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write to FILE instead of stdout.")
@click.option("--save-trace", type=click.Path(dir_okay=False, writable=True), default=None, metavar="FILE",
              help="Also save the trace (with its line information) as JSON, to render again without the model.")
@click.option("--train/--eval", "train", default=None,
              help="Trace in training / eval mode. Default: an exhibit as built, any other model in eval.")
@click.option("--debug", is_flag=True, help="Show Python tracebacks.")
def lines_command(model: str, module: str, inputs: tuple[str, ...], args: tuple[str, ...], fmt: str | None,
                  output: str | None, save_trace: str | None, train: bool | None, debug: bool) -> None:
    """Print MODEL's forward source with, beside each line, the module calls and
    functional ops it ran and their output shapes.

    \b
    A line run several times (a loop) shows its runs folded as ×N with each
    run's shape; lines never reached are marked · (dimmed in HTML); the line an
    error left by is marked ✗. MODEL is a model spec as for 'shapetrace trace',
    or a trace saved as JSON with line information (--save-trace, or
    shapetrace.trace(model, x, lines=True).to_json()).

    \b
    Examples:
      shapetrace lines tabular-model
      shapetrace lines awd-lstm-classifier --module 0
      shapetrace lines mymodels.py:build --input 2,3,64,64 --format html -o lines.html
    """
    fmt = fmt or (_SUFFIX.get(Path(output).suffix.lower(), "text") if output else "text")
    from .renderers.lines import LinesError, build_view, render

    failure_note = None
    if model.endswith(".json") and Path(model).is_file():
        if inputs or args:
            _fail_usage("--input and --arg do not apply to a saved trace")
        from .tracer.records import load

        try:
            result = load(Path(model))
        except (ValueError, KeyError, TypeError) as e:
            _fail_usage(f"{model!r} is not a readable shapetrace trace: {e}")
    else:
        loaded, fargs, fkwargs = load_model_and_inputs(model, inputs, args, None, debug)
        if train is None and loaded.exhibit is None:
            train = False
        with friendly_errors(debug):
            from .tracer.api import TraceFailed, failure_message, trace

            try:
                result = trace(loaded.module, *fargs, train=train, lines=True, strict=True, forward_kwargs=fkwargs)
            except TraceFailed as e:
                result = e.trace
                failure_note = failure_message(result)
                if debug and e.__cause__ is not None:
                    traceback.print_exception(type(e.__cause__), e.__cause__, e.__cause__.__traceback__)
    if save_trace:
        _write(result.to_json(), save_trace, "json")
    try:
        view = build_view(result, module)
    except LinesError as e:
        _fail_usage(str(e))
    _write(render(view, fmt), output, fmt)
    if failure_note:
        click.echo(f"error: {failure_note}", err=True)
        sys.exit(1)
