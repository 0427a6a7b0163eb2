"""The ``shapetrace`` command line: a thin click layer over tracing, the renderers and the gallery.

Exit status: 0 on success, 1 when the model's forward fails (the partial table is printed, then which
layer failed, with what input and why), 2 for usage errors (bad ``--input``, unknown model, unimportable
path, bad option). No traceback unless ``--debug``. torch is imported only by the commands that trace, so
``shapetrace render`` works on a machine without torch.
"""

from __future__ import annotations

import contextlib
import difflib
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from .cli_options import heat_option, table_width, width_option

TABLE_FORMATS = ("text", "md", "html", "csv")
DIAGRAM_FORMATS = ("svg", "png", "pdf", "dot")
FORMATS = (*TABLE_FORMATS, "json", *DIAGRAM_FORMATS)
BINARY_FORMATS = ("png", "pdf")
_SUFFIX_FORMAT = {".txt": "text", ".md": "md", ".markdown": "md", ".html": "html", ".htm": "html", ".csv": "csv",
                  ".json": "json", ".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": "dot", ".gv": "dot"}


class SuggestingChoice(click.Choice):
    """A ``click.Choice`` whose error names the closest valid value."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            close = difflib.get_close_matches(str(value), [str(c) for c in self.choices], n=1, cutoff=0.5)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            self.fail(f"{value!r} is not one of {', '.join(map(str, self.choices))}.{hint}", param, ctx)


@contextlib.contextmanager
def friendly_errors(debug: bool) -> Iterator[None]:
    """Turn an unexpected exception into a one-line error (exit 1); ``--debug`` shows the traceback."""
    try:
        yield
    except (click.ClickException, click.exceptions.Exit, SystemExit):
        raise
    except Exception as e:
        if debug:
            raise
        raise click.ClickException(f"{type(e).__name__}: {e} (rerun with --debug for the traceback)") from e


def _fail_usage(message: str) -> None:
    raise click.UsageError(message)


def _write(output: str | bytes, path: str | None, fmt: str) -> None:
    """Write to ``path``, or to stdout (text; bytes only when stdout is not a terminal)."""
    if path is not None:
        p = Path(path)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(output, bytes):
                p.write_bytes(output)
            else:
                p.write_text(output, encoding="utf-8")
        except OSError as e:
            _fail_usage(f"cannot write {path!r}: {e.strerror or e}")
        click.echo(f"wrote {path}", err=True)
        return
    if isinstance(output, bytes):
        if sys.stdout.isatty():
            _fail_usage(f"--format {fmt} is binary: pass -o FILE to write it")
        sys.stdout.buffer.write(output)
        sys.stdout.flush()
        return
    click.echo(output, nl=not output.endswith("\n"))


def _pick_format(fmt: str | None, output: str | None) -> str:
    if fmt is not None:
        return fmt
    if output is not None:
        return _SUFFIX_FORMAT.get(Path(output).suffix.lower(), "text")
    return "text"


def _render(trace: Any, fmt: str, *, depth: int | None, view: str, layout: str | None, style: str | None,
            unroll: bool, overlays: tuple[str, ...], options: dict | None, width: int | None = 100) -> str | bytes:
    if fmt == "json":
        return trace.to_json()
    if fmt in TABLE_FORMATS:
        from .renderers.table import render

        return render(trace, fmt, depth=depth, view=view, width=width)
    try:
        from .renderers import diagram
    except ImportError as e:
        raise click.ClickException(f"diagrams are not available in this installation ({e})") from e
    try:  # layout, style, depth and unroll left unset take the exhibit's options, then the renderer's defaults
        return diagram.render(trace, format=fmt, depth=depth, layout=layout, style=style, unroll=unroll or None,
                              overlays=list(overlays), options=options)
    except (ValueError, RuntimeError) as e:
        source = getattr(e, "source", None)
        if source:  # no Graphviz: keep the DOT text so nothing is lost
            Path("shapetrace-diagram.dot").write_text(source, encoding="utf-8")
            raise click.ClickException(f"{e}\nThe DOT source was written to shapetrace-diagram.dot "
                                       "(use --format dot to get it directly).") from e
        raise click.ClickException(f"the diagram could not be rendered: {e}") from e


def _note_diagram_only(fmt: str, **given: Any) -> None:
    if fmt in DIAGRAM_FORMATS:
        return
    used = [f"--{k}" for k, v in given.items() if v]
    if used:
        click.echo(f"note: {', '.join(used)} only affect diagram formats ({', '.join(DIAGRAM_FORMATS)})", err=True)


_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

TRACE_HELP = """Trace MODEL's forward and print its shape table (or save the trace or a diagram).

\b
MODEL is one of
  a gallery exhibit name          (shapetrace gallery list)
  package.module:factory_or_attr  (a callable gets the --arg values; a module instance is used as is)
  path/to/file.py:factory
  a torchvision model             (resnet18, torchvision.models:resnet50; random weights)

\b
--input SPEC is [NAME=][DTYPE:][FILL:]SHAPE[:LOW..HIGH]:
  1,3,224,224         float32, standard normal
  long:4,72           int64 in [0,10)
  long:8,5:0..100     int64 in [0,100) (HIGH exclusive)
  bool:2,16  bf16:1,3,64,64  zeros:long:2,16  float32:4,10:-1..1
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


@click.group(context_settings=_CONTEXT)
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


@main.command("trace", help=TRACE_HELP, context_settings=_CONTEXT)
@click.argument("model")
@click.option("--input", "-i", "inputs", multiple=True, metavar="SPEC",
              help="An example input (see above); repeat for several. Defaults: the exhibit's inputs.")
@click.option("--arg", "-a", "args", multiple=True, metavar="KEY=VALUE",
              help="Keyword argument for the model factory, a Python literal (e.g. num_classes=10).")
@click.option("--depth", "-d", type=click.IntRange(min=0), default=None,
              help="Fold calls deeper than N into their parent row (0 = the model only).")
@click.option("--view", type=SuggestingChoice(["calls", "modules"]), default="calls", show_default=True,
              help="One row per call, or one row per module with its calls counted.")
@click.option("--format", "-f", "fmt", type=SuggestingChoice(FORMATS), default=None,
              help="Output format [default: from -o's suffix, else text].")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write to FILE instead of stdout.")
@click.option("--device", type=SuggestingChoice(["cpu", "cuda", "meta"]), default=None,
              help="Run there (meta: shapes only, nothing computed). Default: the model's device.")
@click.option("--train/--eval", "train", default=None,
              help="Trace in training / eval mode. Default: an exhibit as built, any other model in eval.")
@click.option("--grad", is_flag=True, help="Keep autograd on (default: torch.no_grad()).")
@click.option("--layout", type=SuggestingChoice(["tb", "lr", "u"]), default=None,
              help="Diagram direction: top-bottom, left-right, or a U for encoder-decoders.")
@click.option("--overlay", "overlays", multiple=True, metavar="NAME", help="Diagram overlay (repeatable).")
@click.option("--style", type=SuggestingChoice(["compact", "detailed"]), default=None, help="Diagram style.")
@click.option("--unroll", is_flag=True, help="Diagram: one node per call instead of folding repeats into ×N.")
@width_option
@click.option("--debug", is_flag=True, help="Show Python tracebacks.")
def trace_command(model: str, inputs: tuple[str, ...], args: tuple[str, ...], depth: int | None, view: str,
                  fmt: str | None, output: str | None, device: str | None, train: bool | None, grad: bool,
                  layout: str | None, overlays: tuple[str, ...], style: str | None, unroll: bool,
                  width: int | None, debug: bool) -> None:
    fmt = _pick_format(fmt, output)
    _note_diagram_only(fmt, layout=layout, overlay=overlays, style=style, unroll=unroll)
    with friendly_errors(debug):
        _trace(model, inputs, args, depth, view, fmt, output, device, train, grad, layout, overlays, style,
               unroll, table_width(width, output), debug)


def load_model_and_inputs(model: str, inputs: tuple[str, ...], args: tuple[str, ...], device: str | None,
                          debug: bool) -> tuple[Any, tuple, dict]:
    """The model a MODEL spec names and the inputs to run it on; a usage error (exit 2) when either is wrong."""
    from .tracer.inputs import InputSpecError
    from .tracer.models import ModelSpecError
    from .tracer.models import load_model_and_inputs as resolve

    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            _fail_usage("--device cuda: CUDA is not available here; use --device cpu or --device meta")
    try:
        return resolve(model, inputs, args, device)
    except (ModelSpecError, InputSpecError) as e:
        if debug:
            traceback.print_exc()
        _fail_usage(str(e))
        raise  # unreachable: _fail_usage raises


def _trace(model: str, inputs: tuple[str, ...], args: tuple[str, ...], depth: int | None, view: str, fmt: str,
           output: str | None, device: str | None, train: bool | None, grad: bool, layout: str | None,
           overlays: tuple[str, ...], style: str | None, unroll: bool, width: int | None, debug: bool) -> None:
    loaded, fargs, fkwargs = load_model_and_inputs(model, inputs, args, device, debug)
    if train is None and loaded.exhibit is None:
        train = False
    from .tracer.api import TraceFailed, failure_message, trace

    try:
        result = trace(loaded.module, *fargs, grad=grad, train=train, device=device,
                       ops=fmt in DIAGRAM_FORMATS, strict=True, forward_kwargs=fkwargs)
    except TraceFailed as e:
        result = e.trace
        cause = e.__cause__
        if debug and cause is not None:
            traceback.print_exception(type(cause), cause, cause.__traceback__)
    options = getattr(loaded.exhibit, "options", None)
    rendered = _render(result, fmt, depth=depth, view=view, layout=layout, style=style, unroll=unroll,
                       overlays=overlays, options=options, width=width)
    _write(rendered, output, fmt)
    if result.failed:
        click.echo(f"error: {failure_message(result)}", err=True)
        sys.exit(1)


@main.command("diff", context_settings=_CONTEXT)
@click.argument("model")
@click.option("--input", "-i", "inputs", multiple=True, metavar="SPEC", help="An example input (as for trace).")
@click.option("--arg", "-a", "args", multiple=True, metavar="KEY=VALUE", help="Keyword argument for the factory.")
@click.option("--against", type=SuggestingChoice(["torchinfo", "torchview"]), default="torchinfo",
              show_default=True, help="The tool to compare with (pip install 'shapetrace[compare]').")
@click.option("--format", "-f", "fmt", type=SuggestingChoice(["text", "md"]), default="text", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), default=None)
@click.option("--debug", is_flag=True, help="Show Python tracebacks.")
def diff_command(model: str, inputs: tuple[str, ...], args: tuple[str, ...], against: str, fmt: str,
                 output: str | None, debug: bool) -> None:
    """Compare shapetrace's per-layer shapes and parameters with torchinfo's or torchview's.

    \b
    Each difference says why, where the other tool is known to be wrong
    (first tensor of a tuple output only, shared or tied parameters counted twice,
    hooks that switch a fused fast path off).

    \b
    Examples:
      shapetrace diff resnet18 --input 1,3,64,64
      shapetrace diff awd-lstm-language-model --against torchinfo --format md
    """
    loaded, fargs, fkwargs = load_model_and_inputs(model, inputs, args, None, debug)
    with friendly_errors(debug):
        from . import compare
        from .renderers.diff import render
        from .tracer.api import trace

        module = loaded.module.eval() if loaded.exhibit is None else loaded.module
        ours = trace(module, *fargs, forward_kwargs=fkwargs)
        fn = compare.diff_torchinfo if against == "torchinfo" else compare.diff_torchview
        try:
            result = fn(module, ours, *fargs, **fkwargs)
        except ImportError as e:
            _fail_usage(f"{against} is not installed ({e}); install it with: pip install 'shapetrace[compare]'")
    _write(render(result, fmt), output, fmt)


@main.command("render", context_settings=_CONTEXT)
@click.argument("trace_file", metavar="TRACE.json", type=click.Path(exists=True, dir_okay=False))
@click.option("--format", "-f", "fmt", type=SuggestingChoice(FORMATS), default=None,
              help="Output format [default: from -o's suffix, else text].")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write to FILE instead of stdout.")
@click.option("--depth", "-d", type=click.IntRange(min=0), default=None, help="Fold calls deeper than N.")
@click.option("--view", type=SuggestingChoice(["calls", "modules"]), default="calls", show_default=True,
              help="One row per call, or one row per module.")
@click.option("--layout", type=SuggestingChoice(["tb", "lr", "u"]), default=None, help="Diagram direction.")
@click.option("--overlay", "overlays", multiple=True, metavar="NAME", help="Diagram overlay (repeatable).")
@click.option("--style", type=SuggestingChoice(["compact", "detailed"]), default=None, help="Diagram style.")
@click.option("--unroll", is_flag=True, help="Diagram: one node per call.")
@heat_option
@width_option
def render_command(trace_file: str, fmt: str | None, output: str | None, depth: int | None, view: str,
                   layout: str | None, overlays: tuple[str, ...], style: str | None, unroll: bool,
                   heat: str | None, width: int | None) -> None:
    """Render a saved trace (from --format json); needs no torch and no model.

    \b
    Examples:
      shapetrace render resnet18.json
      shapetrace render resnet18.json --format html -o resnet18.html --depth 2
    """
    from .tracer.records import load

    fmt = _pick_format(fmt, output)
    _note_diagram_only(fmt, layout=layout, overlay=overlays, style=style, unroll=unroll, heat=heat)
    try:
        trace = load(Path(trace_file))
    except (ValueError, KeyError, TypeError) as e:
        _fail_usage(f"{trace_file!r} is not a readable shapetrace trace: {e}")
    options = dict(trace.meta.get("options") or {})
    if heat:  # --heat turns the overlay on
        options["heat"] = heat
        overlays = tuple(dict.fromkeys([*overlays, "heat"]))
    _write(_render(trace, fmt, depth=depth, view=view, layout=layout, style=style, unroll=unroll,
                   overlays=overlays, options=options or None, width=table_width(width, output)),
           output, fmt)
    if trace.failed:
        click.echo("note: this trace is of a forward that failed; the table is partial", err=True)


@main.group("gallery", context_settings=_CONTEXT)
def gallery() -> None:
    """The built-in exhibits: list them, or build the static gallery site."""


@gallery.command("list")
def gallery_list() -> None:
    """List the exhibits (name, topic, title)."""
    from .gallery.exhibits import EXHIBITS, exhibit_names

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
@click.option("--exhibit", "-e", "names", multiple=True, metavar="NAME",
              help="Build only these exhibits (repeatable). Default: all.")
@click.option("--debug", is_flag=True, help="Show Python tracebacks for failing exhibits.")
def gallery_build(out_dir: str, names: tuple[str, ...], debug: bool) -> None:
    """Trace every exhibit and write its JSON, tables and diagram, plus index.html and index.md.

    A failing exhibit does not stop the build; the exit status is 1 when any failed.
    """
    from .gallery.exhibits import get_exhibit
    from .gallery.site import GalleryBuildFailed, build_site

    for n in names:
        try:
            get_exhibit(n)
        except KeyError as e:
            _fail_usage(str(e.args[0]))

    def progress(name: str, ok: bool, message: str) -> None:
        click.echo(f"{'ok  ' if ok else 'FAIL'} {name}{'' if ok else ': ' + message}", err=not ok)

    try:
        written = build_site(Path(out_dir), list(names) or None, progress=progress, debug=debug)
    except GalleryBuildFailed as e:
        click.echo(f"error: {len(e.failures)} exhibit(s) failed: {', '.join(e.failures)}; "
                   f"wrote {len(e.written)} files to {out_dir}", err=True)
        sys.exit(1)
    click.echo(f"wrote {len(written)} files to {out_dir}")


from .cli_profile import profile_command  # last: it imports helpers from this module inside its functions

main.add_command(profile_command)
main.add_command(__import__("shapetrace.cli_lines", fromlist=["lines_command"]).lines_command)


if __name__ == "__main__":  # pragma: no cover
    main()
