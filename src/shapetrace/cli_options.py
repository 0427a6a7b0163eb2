"""What the command modules (``cli.py``, ``cli_profile.py``, ...) share: click options and choices, how their
values resolve, how errors become one-line messages, and how output reaches stdout or a file.

A command module imports this one and the session layer, never ``cli.py`` (which only registers commands).
"""

from __future__ import annotations

import contextlib
import difflib
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from .leftover_threads import exit_now
from .renderers import RenderOptions, formats, get
from .renderers.display import MIN_TABLE_WIDTH, table_width_problem
from .renderers.finite import summary_line
from .renderers.units import ellipsize, failure_place, literal
from .session import (
    Interrupted,
    OutputProblem,
    SessionError,
    UsageProblem,
    check_output,
    is_saved_trace,
    pick_format,
    render_output,
    write_output,
)
from .specs.names import source_file
from .stdout_guard import guard_stdout

__all__ = [
    "BROKEN_PIPE_STATUS",
    "CONTEXT",
    "HEAT_KINDS",
    "OUTPUT_HELP",
    "QuietPipeGroup",
    "SuggestingChoice",
    "TableWidth",
    "a_file",
    "a_file_not_stdout",
    "check_finite_option",
    "cli_errors",
    "dash_is_stdout",
    "distinct_outputs",
    "emit",
    "heat_option",
    "note_diagram_only",
    "note_saved_failure",
    "note_suffix_mismatch",
    "output_not_an_input",
    "output_not_the_model",
    "prepare_output",
    "print_cause",
    "profile_heat",
    "refuse_binary_on_terminal",
    "report_finite",
    "table_width",
    "terminal_colour",
    "width_option",
]

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
HEAT_KINDS = ("time", "memory", "activations")
# The status a shell reports for a process that SIGPIPE ended (128 + 13), as `cat big | head` gives: the reader
# of stdout went away. Not 1 (a forward that failed) nor 2 (a usage error).
BROKEN_PIPE_STATUS = 141
# The status a shell reports for a program Ctrl-C ended (128 + SIGINT's 2): also for a forward whose code raised
# KeyboardInterrupt. Not 1 (a forward that failed).
INTERRUPTED_STATUS = 130


@contextlib.contextmanager
def _quiet_broken_pipe() -> Iterator[None]:
    """A closed stdout (``shapetrace trace m | head -1``) ends the command quietly with ``BROKEN_PIPE_STATUS``.

    As Python's note on SIGPIPE recommends (https://docs.python.org/3/library/signal.html#note-on-sigpipe),
    stdout is pointed at devnull first, so the flush at interpreter exit does not fail a second time and print
    "Exception ignored ... BrokenPipeError"; SIGPIPE itself keeps Python's disposition.
    """
    try:
        yield
    except BrokenPipeError:
        with contextlib.suppress(AttributeError, OSError, ValueError):  # not a real file: a test runner's buffer
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        raise click.exceptions.Exit(BROKEN_PIPE_STATUS) from None


class QuietPipeGroup(click.Group):
    """The command group: its help and every command's output end quietly when stdout's reader goes away; while
    a command runs, stdout is shapetrace's alone (``stdout_guard``: what the model's code writes goes to stderr)."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        # standalone: click exits the process when the command ends (the console entry, python -m shapetrace)
        try:
            with guard_stdout(whole_process=standalone_mode):
                return super().main(*args, standalone_mode=standalone_mode, **kwargs)
        except SystemExit as e:  # standalone: the command is done
            # The console entry reads its arguments from sys.argv (args None): the process ends now. A caller
            # passing arguments (click's CliRunner, a script) owns the process and its threads: left alone.
            # After the guard: what exit handlers print goes where descriptor 1 now points (stderr), as at exit.
            if standalone_mode and (args[0] if args else kwargs.get("args")) is None:
                exit_now(0 if e.code is None else e.code if isinstance(e.code, int) else 1)
            raise

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        with _quiet_broken_pipe():  # `shapetrace --help | true`
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        with _quiet_broken_pipe():
            return super().invoke(ctx)


# Other names users give a choice -> its name here: a hint in the error, never accepted in its place.
_OTHER_NAMES = {"gpu": "cuda", "markdown": "md", "txt": "text", "jpeg": "jpg", "htm": "html"}


class SuggestingChoice(click.Choice):
    """A ``click.Choice`` that takes its values in any case (``-f MD`` is ``md``, as a file's ``.MD`` suffix
    is) and whose error names the valid value meant: the one a common other name stands for (``gpu`` is
    ``cuda`` here), else the closest in spelling."""

    def __init__(self, choices: Any, case_sensitive: bool = False) -> None:
        super().__init__(choices, case_sensitive=case_sensitive)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            choices = [str(c) for c in self.choices]
            meant = _OTHER_NAMES.get(str(value).lower())
            close = [meant] if meant in choices else difflib.get_close_matches(str(value), choices, n=1, cutoff=0.5)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            self.fail(f"{value!r} is not one of {', '.join(map(str, self.choices))}.{hint}", param, ctx)


class TableWidth(click.ParamType):
    """``--width``: 0 (no limit) or a whole number of columns from ``MIN_TABLE_WIDTH`` up, the bound
    ``trace.table(width=...)`` keeps (one place says how narrow a table can be)."""

    name = "integer"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        width = click.INT.convert(value, param, ctx)
        problem = table_width_problem(width)
        if problem:
            self.fail(problem, param, ctx)
        return width


width_option = click.option(
    "--width", "-w", type=TableWidth(), default=None, metavar="N",
    help=f"Text table width in columns, {MIN_TABLE_WIDTH} or more [default: the terminal's width, else 100; "
         "0: no limit].")


check_finite_option = click.option(
    "--check-finite", is_flag=True,
    help="Check every call's floating-point inputs and outputs for NaN and Inf, mark the call that made the "
         "first (‼) and those whose outputs held some (·), and print where the first came from to stderr ('all "
         "outputs finite' when none; ±Inf that stays inside, as an attention mask's -inf, is told, not blamed). "
         "Reads values: one sum per tensor version (a GPU sync each); refused with --device meta, which computes "
         "shapes only.")


def report_finite(trace: Any) -> None:
    """The ``--check-finite`` summary, one line on stderr after the output is written (nothing for a trace made
    without the check)."""
    line = summary_line(trace)
    if line is not None:
        click.echo(f"check-finite: {line}", err=True)


def terminal_colour(output: str | None) -> bool:
    """Colour the text table only on a terminal that takes it: writing to stdout, stdout a TTY, no
    ``NO_COLOR`` (https://no-color.org) and a ``TERM`` other than ``dumb``."""
    return (output is None and sys.stdout.isatty() and not os.environ.get("NO_COLOR")
            and os.environ.get("TERM", "") != "dumb")


def table_width(width: int | None, output: str | None) -> int | None:
    """``--width``: as given (0: no limit), else the terminal's width when writing to one, else 100."""
    if width is not None:
        return width or None
    if output is None and sys.stdout.isatty():
        return max(_columns(), 60)
    return 100


def _columns() -> int:
    """The width of the terminal stdout is (``COLUMNS`` first, as ``shutil.get_terminal_size`` reads it): asked
    of ``sys.stdout`` itself, since while a command runs descriptor 1 is stderr's (``stdout_guard``)."""
    with contextlib.suppress(ValueError):
        columns = int(os.environ.get("COLUMNS", ""))  # as shutil reads it: " 70" counts, 0 or less does not
        if columns > 0:
            return columns
    with contextlib.suppress(AttributeError, OSError, ValueError):
        return os.get_terminal_size(sys.stdout.fileno()).columns
    return 100


PLOT_KINDS = ("bars", "forward", "flops", "flow")


def plot_options(command: Any) -> Any:
    """``--plot FILE`` and ``--plot-kind``, for the commands that can save a plot of a profile (``profile``, and
    ``render`` for a saved one); each gives its own ``--top``."""
    command = click.option(
        "--plot-kind", type=SuggestingChoice(PLOT_KINDS), default="bars", show_default=True,
        help="bars: top calls (modules with --view modules) by self time; forward: the same in forward order; "
             "flops: time vs FLOPs; flow: channels and spatial size along the forward.")(command)
    return click.option("--plot", "plot_file", type=click.Path(dir_okay=False), default=None, callback=a_file,
                        help="Also save a plot (.svg or .png).")(command)


def check_plot_file(plot_file: str | None, output: str | None, *specs: str | None) -> None:
    """``--plot FILE``, before anything runs: an .svg or .png that can be written, neither ``-o``'s file nor
    one of ``specs`` (the model, the trace read)."""
    if plot_file is None:
        return
    if Path(plot_file).suffix.lower() not in (".svg", ".png"):
        raise UsageProblem(f"--plot {plot_file!r}: the file must end in .svg or .png")
    check_output(plot_file)
    distinct_outputs("--plot", plot_file, output, "the plot")
    output_not_an_input(plot_file, *specs, option="--plot")
    output_not_the_model("--plot", plot_file, *specs)


def plot_data(trace: Any, kind: str, path: str, top: int, view: str = "calls") -> str | bytes:
    """The ``--plot-kind`` plot of ``trace`` for ``path`` (its suffix picks svg or png); a ``UsageProblem`` saying
    why when the trace lacks what the plot shows (a trace without timings, for the time plots)."""
    from .renderers.plots import render_plot  # noqa: PLC0415 - matplotlib is imported only when a plot is asked for

    options = {"top": top, "view": view} if kind in ("bars", "forward") else {}
    try:
        return render_plot(trace, kind, format=Path(path).suffix[1:].lower(), **options)
    except ValueError as e:
        raise UsageProblem(f"--plot {path} --plot-kind {kind}: {e}") from None


def write_plot(data: str | bytes, path: str) -> None:
    """Write a plot made by ``plot_data`` to ``path`` (atomically) and say so on stderr."""
    write_output(data, path)
    click.echo(f"wrote {path}", err=True)


heat_option = click.option(
    "--heat", type=SuggestingChoice(HEAT_KINDS), default=None,
    help="Diagram heat overlay: colour nodes by self time, peak memory (CUDA profiles) or activation size "
         "[default for a profile: time].")


@contextlib.contextmanager
def cli_errors(debug: bool) -> Iterator[None]:
    """Turn errors into one-line messages: a ``UsageProblem`` exits 2, anything else 1 (a ``BaseException``
    such as ``GeneratorExit`` too; ``SystemExit`` keeps its own handling); a ``KeyboardInterrupt`` (Ctrl-C, or
    raised by the model's code) exits 130 with a line saying where (``session.Interrupted``); ``--debug``
    shows the traceback as well."""
    try:
        yield
    except (click.ClickException, click.exceptions.Exit, SystemExit, BrokenPipeError):
        raise  # a BrokenPipeError: stdout's reader went away, the group ends quietly (QuietPipeGroup)
    except UsageProblem as e:
        if debug:
            traceback.print_exc()
        raise click.UsageError(str(e)) from e
    except SessionError as e:
        if debug:
            traceback.print_exc()
        raise click.ClickException(str(e)) from e
    except Exception as e:  # anything unexpected: one line, unless --debug
        if debug:
            raise
        raise click.ClickException(f"{type(e).__name__}: {e} (rerun with --debug for the traceback)") from e
    except KeyboardInterrupt as e:  # Ctrl-C, or the model's code raising it: one line, the status of an interrupt
        if debug:
            traceback.print_exc()
        where = str(e) if isinstance(e, Interrupted) and str(e) else "KeyboardInterrupt stopped the command"
        click.echo(f"Interrupted: {where}", err=True)
        raise click.exceptions.Exit(INTERRUPTED_STATUS) from None
    except BaseException as e:  # GeneratorExit or a BaseException subclass of the model's own, from its code
        if debug:
            raise
        raise click.ClickException(_not_an_exception(e)) from e


def _not_an_exception(e: BaseException) -> str:
    """The message for a ``BaseException`` that is not an ``Exception`` (``GeneratorExit``, a model's own
    subclass) raised in the model's code: what it was, why it stopped the command, and what to do."""
    what = type(e).__name__ + (f": {e}" if str(e) else "")
    return (f"{what} was raised in the model's code. It is a BaseException, not an Exception: shapetrace, like "
            "most Python code, does not catch it as an error, so the run stopped with nothing to show; raise an "
            "Exception (RuntimeError, ValueError, ...) there instead (rerun with --debug for the traceback)")


OUTPUT_HELP = "Write to FILE instead of stdout ('-': stdout)"


def dash_is_stdout(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``-o -``: stdout, as for most Unix tools (the value ``None``, as when ``-o`` is not given); an empty
    ``-o ''`` is refused (``a_file``)."""
    return None if value == "-" else a_file(ctx, param, value)


def a_file(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A file to write, refused before anything runs when it is empty (``-o ''``, an unset shell variable):
    no file has that name, and the command would run only to fail writing it."""
    if value == "":
        example = _EXAMPLE_FILE.get(param.name or "", "out.txt")
        raise click.BadParameter(f"an empty path names no file; give a file name, e.g. {example}", ctx, param)
    return value


# A file name each output option takes, for its messages (-o: any renderer's).
_EXAMPLE_FILE = {"plot_file": "plot.svg", "save_trace": "trace.json"}


def a_file_not_stdout(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A second output file (``lines --save-trace``): as ``a_file``, and ``-`` is refused, since stdout carries
    the command's own output and a file named ``-`` is not what the dash means anywhere else."""
    if value == "-":
        raise click.BadParameter("'-' would be stdout, which carries the command's own output; give a file name, "
                                 "e.g. trace.json (for the trace alone on stdout: shapetrace trace MODEL -f json)",
                                 ctx, param)
    return a_file(ctx, param, value)


def prepare_output(fmt: str | None, output: str | None, allowed: tuple[str, ...] | None = None, *,
                   inputs: tuple[str | None, ...] = (), models: tuple[str | None, ...] = ()) -> str:
    """The format to write, checked before anything runs: from ``--format`` or ``-o``'s suffix; ``-o`` must be
    writable, and be none of the command's ``inputs`` files nor the file a MODEL spec of ``models`` is read
    from; a binary format needs ``-o`` when stdout is a terminal. ``UsageProblem`` otherwise. A note on ``-o``'s
    suffix comes only once ``-o`` is known to be written (not before a refusal)."""
    chosen = pick_format(fmt, output)
    if allowed is not None and chosen not in allowed:
        raise UsageProblem(f"the {chosen} format is not available here; use one of {', '.join(allowed)}")
    if output is not None:
        check_output(output)
        output_not_an_input(output, *inputs)
        output_not_the_model("-o", output, *models)
        note_suffix_mismatch(chosen, output)
    refuse_binary_on_terminal(chosen, output)
    return chosen


def refuse_binary_on_terminal(fmt: str, output: str | None) -> None:
    """Refuse (``OutputProblem``) writing a binary format (png, pdf, ... as the renderer registry marks them) to
    stdout when stdout is a terminal, where it would be noise; a file, a pipe or a redirect takes it."""
    if output is None and get(fmt).binary and sys.stdout.isatty():
        raise OutputProblem(f"--format {fmt} is binary and stdout is a terminal: pass -o FILE to write it (or "
                            "pipe or redirect stdout: ... > FILE)")


def distinct_outputs(option: str, path: str | None, output: str | None, what: str) -> None:
    """Refuse (``UsageProblem``) an ``option`` file that is ``-o``'s file too, however each is written
    (``./x`` and ``x``, a symbolic link and its target): one would overwrite the other."""
    if path is not None and output is not None and Path(path).resolve() == Path(output).resolve():
        raise UsageProblem(f"{option} and -o both name {path!r}: one would overwrite the other; give {what} a "
                           "file of its own")


def output_not_an_input(output: str | None, *inputs: str | None, option: str = "-o") -> None:
    """Refuse (``UsageProblem``) an output (``option``: ``-o``, ``--plot``) that is one of the command's input
    files, however each is written (``./t.json`` and ``t.json``, a link and its target): writing would replace
    the input."""
    if output is None:
        return
    for given in inputs:
        if given is not None and _same_file(given, output):
            raise UsageProblem(f"{option} {output!r} is the input file {given!r}: writing there would replace it; "
                               f"give {option} a file of its own")


def output_not_the_model(option: str, output: str | None, *specs: str | None) -> None:
    """Refuse (``UsageProblem``), before anything runs, an output (``option``: ``-o``, ``--plot``...) that is the
    Python file a MODEL spec is read from (``models.py:build``, or ``mymodels:build``'s ``mymodels.py``):
    writing there would replace the model's own source."""
    if output is None:
        return
    for spec in specs:
        if spec is None or is_saved_trace(spec):
            continue
        source = source_file(spec)
        if source is not None and _same_file(source, output):
            raise UsageProblem(f"{option} {output!r} is the file MODEL {spec!r} is read from: writing there would "
                               f"replace the model's source; give {option} a file of its own (e.g. "
                               f"{_own_file(option, output)})")


def _own_file(option: str, output: str) -> str:
    """A file name ``option`` takes, to suggest instead of ``output`` (``--plot`` writes .svg or .png only): the
    example of its parameter, named after the option (``--save-trace``: ``save_trace``) or after it with
    ``_file`` (``--plot``: ``plot_file``)."""
    name = option.lstrip("-").replace("-", "_")
    example = _EXAMPLE_FILE.get(name) or _EXAMPLE_FILE.get(f"{name}_file")
    if example is not None:
        return example
    return Path(output).with_suffix(".txt").name if Path(output).suffix == ".py" else "out.txt"


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):  # either is missing (or not a path): not the same existing file
        return False


def note_suffix_mismatch(fmt: str, output: str | None) -> None:
    """Say on stderr when ``-o``'s suffix names another known format than the one written (Markdown into a
    ``.svg``, JSON into a ``.html``): the file is written as asked, but whatever opens it by its suffix fails."""
    if output is None:
        return
    suffix = Path(output).suffix.lower()
    implied = next((f for f in formats() if suffix in get(f).suffixes), None)
    if implied is not None and suffix not in get(fmt).suffixes:
        click.echo(f"note: writing {fmt} into {Path(output).name}, whose suffix says {implied}", err=True)


def note_diagram_only(fmt: str, **given: Any) -> None:
    """Say on stderr when diagram options are given for a format that ignores them."""
    if get(fmt).dataflow:
        return
    used = [f"--{k.replace('_', '-')}" for k, v in given.items() if v]
    if used:
        verb = "affects" if len(used) == 1 else "affect"
        click.echo(f"note: {', '.join(used)} only {verb} diagram formats ({', '.join(formats(dataflow=True))})",
                   err=True)


def note_plot_only(plot_file: str | None, *names: str) -> None:
    """Say on stderr when options that only shape ``--plot`` (``names``: parameter names, ``plot_kind``) were given
    on the command line without it."""
    if plot_file is not None:
        return
    ctx = click.get_current_context()
    given = [f"--{n.replace('_', '-')}" for n in names
             if ctx.get_parameter_source(n) is click.core.ParameterSource.COMMANDLINE]
    if given:
        click.echo(f"note: {', '.join(given)} only {'affects' if len(given) == 1 else 'affect'} --plot, which was "
                   "not given", err=True)


def emit(trace: Any, fmt: str, options: RenderOptions, output: str | None) -> None:
    """Render ``trace`` to ``output`` (atomically) or to stdout."""
    rendered = render_output(trace, fmt, options, output)
    if output is not None:
        click.echo(f"wrote {output}", err=True)
        return
    if isinstance(rendered, bytes):
        sys.stdout.buffer.write(rendered)
        sys.stdout.flush()
        return
    click.echo(rendered, nl=not rendered.endswith("\n"))


def note_saved_failure(trace: Any, shown: str) -> None:
    """Say on stderr when a saved trace is of a forward that failed, naming the failure: what is ``shown`` is
    partial. The status stays 0: the command did what was asked (``diff`` exits 1, its comparison is partial)."""
    failure = trace.failure
    if failure is not None:
        error = ellipsize(literal(failure.text), 120)
        click.echo(f"note: this trace is of a forward that failed {failure_place(trace)} ({error}); {shown} is "
                   "partial", err=True)


def print_cause(cause: BaseException | None) -> None:
    """The traceback of what made a forward fail (for ``--debug``)."""
    if cause is not None:
        traceback.print_exception(type(cause), cause, cause.__traceback__)


def profile_heat(trace: Any, heat: str | None) -> str | None:
    """``--heat`` as given; else, for a profiled trace (its calls have times), the diagram is coloured by
    self time, as ``shapetrace profile`` draws it and ``render`` redraws it."""
    return heat or ("time" if any(c.timing for c in trace.calls) else None)
