"""The ``shapetrace`` command line: a thin click layer over the session layer (``session.py``).

Each command parses its options, asks the session to trace (or load) and write, and turns what goes wrong
into one message: exit status 0 on success, 1 when the model's forward fails (the partial table is printed,
then which layer failed, with what input and why), 2 for usage errors (bad ``--input``, unknown model,
unimportable path, bad option, an output path that cannot be written, checked before the forward runs); a
saved trace whose content is not a trace (not JSON, cut short, failing validation) exits 1 with one line and no
usage banner (``session.TraceFileProblem``), as the command line was right;
141 with no message when stdout's reader goes away first (``| head -1``; ``cli_options.QuietPipeGroup``).
No traceback unless ``--debug``. Formats and ``-o`` suffixes come from the renderer registry
(``shapetrace.renderers``). torch is imported only by the commands that trace, so ``shapetrace render``
works on a machine without torch. Commands live in command modules (``cli_profile``, ``cli_lines``, ...)
that import ``cli_options`` and the session, never this module; registering one is one line below.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import click

from .cli_diff import diff_command
from .cli_lines import lines_command
from .cli_options import (
    CONTEXT,
    OUTPUT_HELP,
    QuietPipeGroup,
    SuggestingChoice,
    check_finite_option,
    check_plot_file,
    cli_errors,
    dash_is_stdout,
    emit,
    heat_option,
    note_diagram_only,
    note_plot_only,
    note_saved_failure,
    plot_data,
    plot_options,
    prepare_output,
    print_cause,
    profile_heat,
    report_finite,
    table_width,
    terminal_colour,
    width_option,
    write_plot,
)
from .cli_profile import profile_command
from .renderers import RenderOptions, formats, get
from .renderers.diagram import OVERLAYS
from .renderers.units import no_timings_reason
from .session import TraceRequest, UsageProblem, check_output_folder, read_trace, trace_model
from .tracer.user_warnings import one_line

_CONTEXT = CONTEXT

TRACE_HELP = """Trace MODEL's forward and print its shape table (or save the trace or a diagram).

\b
MODEL is one of
  a gallery exhibit name          (shapetrace gallery list)
  package.module:factory_or_attr  (a callable gets the --arg values; a module instance is used as is)
  path/to/file.py:factory
  a torchvision model             (resnet18, torchvision.models:resnet50; random weights, nothing downloaded)
Weights files (.pt, .pth, .ckpt) are never loaded: point MODEL at a factory that builds the model.

\b
--input SPEC is [NAME=][DTYPE:][FILL:]SHAPE[:LOW..HIGH]:
  1,3,224,224         float32, standard normal
  long:4,72           int64 in [0,10)
  long:8,5:0..100     int64 in [0,100) (HIGH exclusive)
  float32:4,10:-1..1  float32 uniform in [-1,1) (HIGH exclusive; randn takes no range)
  bool:2,16  bf16:1,3,64,64  zeros:long:2,16  rand:4,10
  input_ids=long:2,16 a keyword argument of forward()
Several --input give several positional inputs. Values are seeded (the same every run).

\b
Examples:
  shapetrace trace resnet18 --input 1,3,224,224 --depth 2
  shapetrace trace torchvision.models:resnet50 --arg num_classes=10 --format md -o resnet50.md
  shapetrace trace mymodels.py:build --arg layers=[2,2] --input long:8,72:0..1000
  shapetrace trace camvid-unet --format svg --layout u -o unet.svg
  shapetrace trace resnet152 --device meta --view modules
"""


@click.group(cls=QuietPipeGroup, context_settings=_CONTEXT)
@click.version_option(package_name="shapetrace", prog_name="shapetrace")
def main() -> None:
    """shapetrace: see what a PyTorch network does to its data.

    \b
    Examples:
      shapetrace trace resnet18 --input 1,3,224,224
      shapetrace trace resnet18 --format json -o resnet18.json
      shapetrace render resnet18.json --format md
      shapetrace gallery list
    """
    warnings.showwarning = _show_warning


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """A Python warning as one line on stderr (``warning: ...``), with where it came from when that is not
    shapetrace itself (a library's deprecation, the model's own code), instead of a file path and a source
    line that read like a traceback."""
    click.echo(f"warning: {one_line(message, category, filename, lineno)}", err=True)


def _with_diagram(fmt: str, asked: bool) -> bool:
    """``--with-diagram`` applies to the HTML page only; elsewhere say it is ignored."""
    if asked and fmt != "html":
        click.echo(f"note: --with-diagram only affects --format html, not {fmt}", err=True)
        return False
    return asked


@main.command("trace", help=TRACE_HELP, context_settings=_CONTEXT)
@click.argument("model")
@click.option("--input", "-i", "inputs", multiple=True, metavar="SPEC",
              help="An example input (see above); repeat for several. Defaults: the exhibit's inputs.")
@click.option("--arg", "-a", "args", multiple=True, metavar="KEY=VALUE",
              help="Keyword argument for the model factory, a Python literal (num_classes=10, bias=False); other "
                   "text is a string, spaces around it stripped (act=relu); true/false/none are refused: write "
                   "True/False/None.")
@click.option("--depth", "-d", type=click.IntRange(min=0), default=None,
              help="Fold calls deeper than N into their parent row (0 = the model only).")
@click.option("--view", type=SuggestingChoice(["calls", "modules"]), default="calls", show_default=True,
              help="One row per call, or one row per module with its calls counted.")
@click.option("--format", "-f", "fmt", type=SuggestingChoice(formats()), default=None,
              help="Output format [default: from -o's suffix, else text].")
@click.option("--output", "-o", type=click.Path(dir_okay=False, allow_dash=True), default=None, callback=dash_is_stdout,
              help=OUTPUT_HELP + " (checked before the forward runs; written whole or not at all).")
@click.option("--device", type=SuggestingChoice(["cpu", "cuda", "meta"]), default=None,
              help="Run there (meta: shapes only, nothing computed). Default: the model's device.")
@click.option("--train/--eval", "train", default=None,
              help="Trace in training / eval mode. Default: an exhibit as built, any other model in eval.")
@click.option("--grad", is_flag=True, help="Keep autograd on (default: torch.no_grad()).")
@click.option("--layout", type=SuggestingChoice(["tb", "lr", "u"]), default=None,
              help="Diagram direction: top-bottom, left-right, or a U for encoder-decoders.")
@click.option("--overlay", "overlays", multiple=True, type=SuggestingChoice(OVERLAYS),
              help="Diagram overlay (repeatable).")
@click.option("--style", type=SuggestingChoice(["compact", "detailed"]), default=None, help="Diagram style.")
@click.option("--unroll", is_flag=True, help="Diagram: one node per call instead of folding repeats into ×N.")
@click.option("--with-diagram", is_flag=True,
              help="With --format html: put the diagram (the diagram options apply) above the table.")
@click.option("--all-ops", is_flag=True,
              help="Diagram: draw every functional op; by default ops that only index, cast or create constants "
                   "are folded into the arrows they feed.")
@check_finite_option
@width_option
@click.option("--debug", is_flag=True, help="Show Python tracebacks.")
def trace_command(model: str, inputs: tuple[str, ...], args: tuple[str, ...], depth: int | None, view: str,
                  fmt: str | None, output: str | None, device: str | None, train: bool | None, grad: bool,
                  layout: str | None, overlays: tuple[str, ...], style: str | None, unroll: bool,
                  with_diagram: bool, all_ops: bool, check_finite: bool, width: int | None, debug: bool) -> None:
    with cli_errors(debug):
        fmt = prepare_output(fmt, output, models=(model,))
        with_diagram = _with_diagram(fmt, with_diagram)
        if not with_diagram:
            note_diagram_only(fmt, layout=layout, overlay=overlays, style=style, unroll=unroll, all_ops=all_ops)
        # Functional ops are recorded for every format: diagrams draw the data flow with them, a saved trace
        # keeps them for a later render, and tables show the side inputs a layer reads through an op
        # (MergeLayer's torch.cat of a hooked tensor), so a table is the same traced or rendered from the JSON.
        request = TraceRequest(model, inputs, args, device, train, grad, ops=True, shapes_only="--device meta",
                               grad_option="--grad", check_finite=check_finite)
        outcome = trace_model(request)
        for note in outcome.notes:
            click.echo(f"note: {note}", err=True)
        if debug:
            print_cause(outcome.cause)
        options = RenderOptions(depth=depth, view=view, width=table_width(width, output), layout=layout,
                                style=style, unroll=unroll or None, overlays=overlays, with_diagram=with_diagram,
                                all_ops=all_ops or None, color=terminal_colour(output))
        emit(outcome.trace, fmt, options, output)
        report_finite(outcome.trace)
    if outcome.failed:
        click.echo(f"error: {outcome.error}", err=True)
        sys.exit(1)


@main.command("render", context_settings=_CONTEXT)
@click.argument("trace_file", metavar="TRACE.json", type=click.Path(allow_dash=True))
@click.option("--format", "-f", "fmt", type=SuggestingChoice(formats()), default=None,
              help="Output format [default: from -o's suffix, else text].")
@click.option("--output", "-o", type=click.Path(dir_okay=False, allow_dash=True), default=None, callback=dash_is_stdout,
              help=OUTPUT_HELP + " (written whole or not at all).")
@click.option("--depth", "-d", type=click.IntRange(min=0), default=None, help="Fold calls deeper than N.")
@click.option("--view", type=SuggestingChoice(["calls", "modules"]), default="calls", show_default=True,
              help="One row per call, or one row per module.")
@click.option("--layout", type=SuggestingChoice(["tb", "lr", "u"]), default=None, help="Diagram direction.")
@click.option("--overlay", "overlays", multiple=True, type=SuggestingChoice(OVERLAYS),
              help="Diagram overlay (repeatable).")
@click.option("--style", type=SuggestingChoice(["compact", "detailed"]), default=None, help="Diagram style.")
@click.option("--unroll", is_flag=True, help="Diagram: one node per call.")
@click.option("--all-ops", is_flag=True,
              help="Diagram: draw every functional op; by default ops that only index, cast or create constants "
                   "are folded into the arrows they feed.")
@heat_option
@click.option("--with-diagram", is_flag=True,
              help="With --format html: put the diagram (the diagram options apply) above the table.")
@plot_options
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True, help="Calls in the bars plot.")
@width_option
@click.option("--debug", is_flag=True, help="Show Python tracebacks.")
def render_command(trace_file: str, fmt: str | None, output: str | None, depth: int | None, view: str,
                   layout: str | None, overlays: tuple[str, ...], style: str | None, unroll: bool,
                   all_ops: bool, heat: str | None, with_diagram: bool, plot_file: str | None, plot_kind: str,
                   top: int, width: int | None, debug: bool) -> None:
    """Render a saved trace (from --format json; '-': read it from stdin); needs no torch and no model.

    \b
    Examples:
      shapetrace render resnet18.json
      shapetrace render resnet18.json --format html -o resnet18.html --depth 2
      shapetrace render profile.json --plot top.svg --plot-kind bars
    """
    with cli_errors(debug):
        fmt = prepare_output(fmt, output, inputs=(trace_file,))
        check_plot_file(plot_file, output, trace_file)
        note_plot_only(plot_file, "plot_kind", "top")
        with_diagram = _with_diagram(fmt, with_diagram)
        if not with_diagram:
            note_diagram_only(fmt, layout=layout, overlay=overlays, style=style, unroll=unroll, heat=heat,
                              all_ops=all_ops)
        trace = read_trace(trace_file)
        heat = profile_heat(trace, heat)
        _check_heat(trace, heat, drawn=get(fmt).dataflow or with_diagram)
        # The trace's saved render hints (trace.meta["options"]) apply; the options given here win over them.
        options = RenderOptions(depth=depth, view=view, width=table_width(width, output), layout=layout,
                                style=style, unroll=unroll or None, overlays=overlays, heat=heat,
                                with_diagram=with_diagram, all_ops=all_ops or None,
                                color=terminal_colour(output))
        # made before anything is written: a trace the plot cannot show is refused whole
        plot = plot_data(trace, plot_kind, plot_file, top, view) if plot_file is not None else None
        emit(trace, fmt, options, output)
        if plot is not None:
            write_plot(plot, plot_file)
        report_finite(trace)  # a trace saved with --check-finite: where its first NaN or Inf came from
    note_saved_failure(trace, "the table" if not get(fmt).dataflow else "the diagram")


def _check_heat(trace: Any, heat: str | None, drawn: bool) -> None:
    """``--heat time`` or ``memory`` on a saved trace that has no such measurement: a usage error, before
    rendering (a trace is profiled by ``shapetrace profile``; peak memory is measured on CUDA only)."""
    if not drawn or heat not in ("time", "memory"):
        return
    if heat == "time" and not any(c.timing for c in trace.calls):
        raise UsageProblem(f"--heat time: this trace has no timings: {no_timings_reason(trace, plot_hint=False)}; or use --heat "
                           "activations (sizes from shapes)")
    if heat == "memory" and not any(c.memory and c.memory.peak_bytes is not None for c in trace.calls):
        raise UsageProblem("--heat memory: this trace has no peak memory (measured by a profile on CUDA only); use "
                           "--heat activations (sizes from shapes), or render a profile saved with 'shapetrace "
                           "profile MODEL --device cuda --format json -o FILE'")


@main.group("gallery", cls=QuietPipeGroup, context_settings=_CONTEXT)
def gallery() -> None:
    """The built-in exhibits: list them, or build the static gallery site."""


@gallery.command("list")
def gallery_list() -> None:
    """List the exhibits (name, topic, title)."""
    from .gallery.exhibits import EXHIBITS, exhibit_names  # noqa: PLC0415 - torch stays out of `shapetrace render`

    names = exhibit_names()
    if not names:
        click.echo("no exhibits are registered")
        return
    width = max(len(n) for n in names)
    for n in names:
        ex = EXHIBITS[n]
        click.echo(f"{n:<{width}}  {ex.topic:<8}  {ex.title}")


@gallery.command("build")
@click.option("--output", "-o", "out_dir", type=click.Path(file_okay=False), default="site", show_default=True,
              help="The folder to write the site into.")
@click.option("--only", "--exhibit", "-e", "names", multiple=True, metavar="NAME",
              help="Build only these exhibits (repeat it, or separate names with commas). Default: all.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=None,
              help="Worker processes building exhibits side by side. Default: the number of CPUs.")
@click.option("--debug", is_flag=True, help="Show Python tracebacks for failing exhibits.")
def gallery_build(out_dir: str, names: tuple[str, ...], jobs: int | None, debug: bool) -> None:
    """Trace every exhibit and write one page per exhibit (diagram, tables, shape flow, downloads) and an index.

    A failing exhibit is reported by name while the others still build; the exit status is 1 when any failed.
    A progress bar shows on a terminal. With --only, the exhibits join the gallery already in the folder. A
    folder with files the build would overwrite (index.html, NAME.txt...) that no earlier gallery build wrote
    (no .shapetrace-gallery file lists them) is refused.

    \b
    Examples:
      shapetrace gallery build -o site
      shapetrace gallery build --only camvid-unet --only awd-lstm-classifier -j 2
    """
    wanted = [n.strip() for arg in names for n in arg.split(",") if n.strip()]
    # Everything that takes time runs inside cli_errors, the imports (torch) and the bar too: a Ctrl-C at any
    # point exits 130 with one "Interrupted:" line, as trace, lines and profile do.
    with cli_errors(debug):
        from .gallery.exhibits import exhibit_names, get_exhibit  # noqa: PLC0415 - torch stays out of `shapetrace render`
        from .gallery.site import (  # noqa: PLC0415 - torch stays out of render
            GalleryBuildFailed,
            build_site,
            check_site_folder,
            default_jobs,
        )

        if names and not wanted:  # --only '' or --only ',': building everything would not be what was asked
            raise UsageProblem("--only: no exhibit named; give one or more names ('shapetrace gallery list' lists "
                               "them), or leave --only out to build the whole gallery")
        for n in wanted:
            try:
                get_exhibit(n)
            except KeyError as e:
                raise UsageProblem(str(e.args[0])) from e
        check_output_folder(out_dir)
        check_site_folder(out_dir, wanted or None)  # someone's own index.html, NAME.txt: not overwritten
        total = len(wanted) or len(exhibit_names())
        show_bar = sys.stderr.isatty()
        with click.progressbar(length=total, label=f"building {total} exhibits on {jobs or default_jobs()} workers",
                               file=sys.stderr, show_pos=True, item_show_func=lambda n: n,
                               hidden=not show_bar) as bar:

            def progress(name: str, ok: bool, message: str) -> None:
                if not ok:
                    click.echo(f"\nFAIL {name}: {message}" if show_bar else f"FAIL {name}: {message}", err=True)
                bar.update(1, name)

            try:
                written = build_site(Path(out_dir), wanted or None, jobs=jobs, progress=progress, debug=debug)
            except GalleryBuildFailed as e:
                failed: GalleryBuildFailed | None = e
            else:
                failed = None
    if failed is not None:
        click.echo(f"error: {len(failed.failures)} exhibit(s) failed: {', '.join(failed.failures)}; "
                   f"wrote {len(failed.written)} files to {out_dir}", err=True)
        sys.exit(1)
    click.echo(f"wrote {len(written)} files to {out_dir} (open {Path(out_dir) / 'index.html'})", err=True)


# One line per command module: each imports cli_options and the session, never this module.
main.add_command(profile_command)
main.add_command(lines_command)
main.add_command(diff_command)


if __name__ == "__main__":  # pragma: no cover
    main()
