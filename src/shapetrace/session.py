"""The one pipeline every front end runs: MODEL spec + inputs + options -> a ``Trace`` -> an output file.

The CLI's ``trace``/``profile``/``render`` commands, the Sphinx directive and the gallery builder all call
this module, so these rules hold once for all of them:

* **Resolving.** ``load(request)`` turns the MODEL spec (``specs.models``) and the ``--input`` specs
  (``specs.inputs``) into a module and its forward arguments; any problem is a ``UsageProblem`` saying what to
  fix (exit status 2 in the CLI). ``--device cuda`` without CUDA is refused here, before anything runs.
* **Train or eval.** A gallery exhibit runs as built (its builder chose the mode the concept needs); any
  other model runs in eval mode, unless the request says otherwise (``train_mode``).
* **Failures.** A forward that raises gives an ``Outcome`` holding the partial trace and the failure
  message (the CLI prints the partial table and exits 1); nothing raises past the session for it.
* **Render hints.** An exhibit's render hints (layout, fold, cut, overlays) are saved in the trace as
  ``trace.meta["options"]``, so a saved JSON re-renders the same diagram.
* **Reading.** ``read_trace(spec)`` reads a saved trace from a regular file, or from stdin for ``-`` (and
  ``/dev/stdin``, ``/dev/fd/N``), at most ``MAX_TRACE_BYTES``; a FIFO or device by name (``/dev/zero``) is refused
  rather than read until memory or patience runs out (``tracer.tracefile``, the rule ``shapetrace.load`` follows
  too). A path that cannot be read as named is a ``UsageProblem``; content that is not a trace (empty, not
  JSON, cut short, failing validation) a ``TraceFileProblem`` (exit status 1: the command line was right).
* **Writing.** ``check_output(path)`` is called before the forward runs (a folder that cannot be written is
  refused at once); ``write_output`` writes to a temporary file in the target folder and renames it into
  place, so a failure never leaves a half-written file. ``render_output`` renders and writes; when Graphviz
  is missing, the diagram's DOT source is written next to the requested file instead.

torch and the model specs are imported on first use (inside the functions that trace), so rendering a saved
trace with ``render_output`` needs no torch.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .renderers import RenderOptions, UnknownFormat, format_for_path, hints_to_save, render
from .renderers.atomic import resolve_target, write_atomically
from .renderers.diagram import GraphvizNotFound, OverlayNeedsOptions
from .specs.exits import FactoryExited
from .specs.names import NAME_TOO_LONG, path_problem
from .stdout_guard import reroute
from .tracer.records import Opaque, Trace, profile_run_text
from .tracer.records import load as load_trace
from .tracer.tracefile import MAX_TRACE_BYTES, TraceFileRefused, read_bounded, read_path

__all__ = [
    "MAX_TRACE_BYTES",
    "Loaded",
    "OtherToolFailed",
    "Outcome",
    "OutputProblem",
    "RenderFailed",
    "SessionError",
    "TraceFileProblem",
    "TraceRequest",
    "UsageProblem",
    "WriteFailed",
    "check_model",
    "check_output",
    "check_output_folder",
    "compare_model",
    "is_saved_trace",
    "load",
    "pick_format",
    "profile_model",
    "read_trace",
    "render_output",
    "trace_model",
    "train_mode",
    "write_output",
]


class SessionError(Exception):
    """A problem the session reports to the user in one message (no traceback needed)."""


class Interrupted(KeyboardInterrupt):
    """A ``KeyboardInterrupt`` (Ctrl-C, or raised by the model's code) in the model's own code; its message says
    where, in words (which run of a profile). Still a ``KeyboardInterrupt``: the CLI exits 130 on it."""


def _interrupted_text(e: KeyboardInterrupt, doing: str) -> str:
    """Where a ``KeyboardInterrupt`` stopped the model's code: a profile's run (``ForwardInterrupted``), else
    what was being done (``doing``)."""
    run, of = getattr(e, "run", None), getattr(e, "of", None)
    if isinstance(run, int) and isinstance(of, int):
        if run == 0:
            return "the forward was interrupted (KeyboardInterrupt) in the profile's shape pass, its first forward"
        kind = ", a forward without hooks" if getattr(e, "plain", False) else ""
        which = profile_run_text(run, of, getattr(e, "warmup", None))
        return f"the forward was interrupted (KeyboardInterrupt) in {which} of the profile{kind}"
    return f"the model's code was interrupted (KeyboardInterrupt) while {doing}"


class UsageProblem(SessionError):
    """The request cannot run as given (bad MODEL, ``--input``, ``--arg``, device or output path): fix and rerun."""


class OutputProblem(UsageProblem):
    """The output cannot be written where asked (checked before the forward runs)."""


class WriteFailed(SessionError):
    """Writing the output failed after the work was done (a full disk, a folder removed meanwhile): the
    command line was right, so not a usage error (exit status 1 in the CLI). ``check_output`` refuses, as an
    ``OutputProblem``, what can be told before anything runs."""


class TraceFileProblem(SessionError):
    """A saved trace whose content is not a trace (empty, not JSON, cut short, failing validation): the command
    line was right, the file is not (exit status 1 in the CLI, without the usage banner)."""


class CannotTrace(SessionError):
    """The model ran, but in a way no trace can show (a forward that returns a generator); the message says
    what to change."""


class OtherToolFailed(SessionError):
    """shapetrace traced the model, but the tool it is compared with (``--against``) failed on it: the message
    names the tool, the innermost cause and where in the tool it was raised, and what to try instead."""

    def __init__(self, message: str, tool: str) -> None:
        super().__init__(message)
        self.tool = tool


class RenderFailed(SessionError):
    """The trace was made but could not be rendered (Graphviz missing or failing); the message says what was
    kept instead."""


@dataclass(frozen=True)
class TraceRequest:
    """What to trace: a MODEL spec, ``--input`` specs, ``--arg KEY=VALUE`` texts, and how to run it.

    ``train=None`` applies the session's rule (an exhibit as built, any other model in eval); ``ops=True``
    records functional ops and data flow (what a diagram needs); ``lines=True`` the source line of every call
    and op (what ``shapetrace lines`` shows).
    """

    model: str
    inputs: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    device: str | None = None
    train: bool | None = None
    grad: bool = False
    ops: bool = False
    lines: bool = False
    # Check every call's outputs for NaN and Inf (the CLI's --check-finite); refused on meta
    check_finite: bool = False
    # How the front end traces shapes only (the CLI's trace: "--device meta"), named when the inputs are too
    # large for memory; None where it has no such option (lines, diff, profile).
    shapes_only: str | None = None
    # How the front end keeps autograd on (the CLI's trace: "--grad"), named when a forward that needs autograd
    # fails under the trace's torch.no_grad(); None where it has no such option.
    grad_option: str | None = None


@dataclass
class Loaded:
    """A resolved request: the module, its forward arguments, its exhibit (or ``None``), the mode to run in."""

    module: Any
    args: tuple
    kwargs: dict
    exhibit: Any = None
    train: bool | None = None
    source: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    """A finished run: the trace (partial when the forward failed), its exhibit, and the failure if any."""

    trace: Trace
    exhibit: Any = None
    error: str | None = None
    cause: BaseException | None = field(default=None, repr=False)
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.error is not None


@contextlib.contextmanager
def _user_code(doing: str, problem: type[SessionError] = CannotTrace) -> Iterator[None]:
    """Run the model's own code (its import, its factory, its forward): what it prints goes to stderr, so it
    never mixes into an output written to stdout (``--format json > t.json``; below Python's ``print``, the CLI's
    ``stdout_guard`` keeps descriptor 1 on stderr); a ``sys.exit`` in it (a
    script's argparse at import) is a ``problem`` that says so, not shapetrace quietly exiting: a ``CannotTrace``
    in the forward (status 1, as a forward raising), a ``UsageProblem`` while loading (status 2, as an import or
    factory raising)."""
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    except KeyboardInterrupt as e:  # Ctrl-C, or the model's own ``raise KeyboardInterrupt``: said where
        if isinstance(e, Interrupted):
            raise
        raise Interrupted(_interrupted_text(e, doing)) from e
    except SystemExit as e:
        exited = f"the model's own code exited (SystemExit({e.code!r})) while {doing}, so there is nothing to show."
        if isinstance(e, FactoryExited):
            raise problem(f"{exited} It was its factory: a factory returns the module rather than exiting; if "
                          "it reads a command line (argparse), point MODEL at a function that takes the "
                          "settings as arguments (given with --arg), or at the model class") from None
        raise problem(
            f"{exited} A script that reads its command line or runs on import needs an `if __name__ == "
            "\"__main__\":` guard around that part, or put the model in a module of its own") from None


def train_mode(train: bool | None, exhibit: Any) -> bool | None:
    """The mode to trace in: as asked; else an exhibit as built (``None``: leave it) and anything else eval."""
    if train is not None:
        return train
    return None if exhibit is not None else False


def load(request: TraceRequest) -> Loaded:
    """Resolve the request's MODEL and inputs; ``UsageProblem`` says what to fix."""
    # torch, torchvision and the gallery load only when something is traced (`shapetrace render` needs none)
    from .specs.inputs import InputSpecError, InputsTooLarge  # noqa: PLC0415 - torch loads on first trace
    from .specs.models import ModelSpecError, load_model_and_inputs  # noqa: PLC0415 - torch loads on first trace

    _check_device(request.device)
    try:
        # exiting while the model loads is a usage problem, as an exception raised there is (status 2)
        with _user_code(f"loading {request.model!r}", UsageProblem):
            loaded, args, kwargs = load_model_and_inputs(request.model, request.inputs, request.args,
                                                         request.device)
    except InputsTooLarge as e:
        advice = (f" Or trace shapes only with {request.shapes_only} (nothing is allocated)."
                  if request.shapes_only and not e.on_meta else "")
        raise UsageProblem(f"{e}{advice}") from e
    except (ModelSpecError, InputSpecError) as e:
        raise UsageProblem(str(e)) from e
    _check_traceable(loaded.module, request.model)
    module, notes = _unwrapped(loaded.module)
    return Loaded(module, args, kwargs, loaded.exhibit, train_mode(request.train, loaded.exhibit), loaded.source,
                  notes)


def check_model(spec: str, arg_groups: tuple[tuple[str, tuple[str, ...]], ...] = ()) -> None:
    """Check, before anything runs, what can be told of a MODEL spec and its ``--arg`` texts without running the
    model's code (``specs.models.locate_model``): ``UsageProblem`` says what to fix. ``arg_groups``: ``(option,
    texts)`` pairs that all go to this model's factory (``diff``'s ``--arg`` and ``--a-arg``); each text's
    problem names its option, and a key two of them give is refused."""
    from .specs.models import ModelSpecError, locate_model, parse_args  # noqa: PLC0415 - torch loads on first trace

    try:
        locate_model(spec)
        given: dict[str, str] = {}
        for option, texts in arg_groups:
            for key in parse_args(texts, option):
                if key in given:
                    raise UsageProblem(f"{key} is given by both {given[key]} and {option}; give it once")
                given[key] = option
    except ModelSpecError as e:
        raise UsageProblem(str(e)) from e


def _check_device(device: str | None) -> None:
    if device is None or not device.startswith("cuda"):
        return
    import torch  # noqa: PLC0415 - torch loads on first trace

    if not torch.cuda.is_available():
        raise UsageProblem(f"--device {device}: CUDA is not available here; use --device cpu or --device meta")


def _check_traceable(module: Any, spec: str) -> None:
    """Refuse modules whose submodule calls no hook can see, saying what to point MODEL at instead."""
    import torch  # noqa: PLC0415 - torch loads on first trace

    if isinstance(module, torch.jit.ScriptModule):
        raise UsageProblem(f"{spec!r} gives a TorchScript module (torch.jit.script or torch.jit.trace): its "
                           "submodules run as compiled TorchScript, where no forward hook runs, so there is "
                           "nothing to trace. Point MODEL at a factory that returns the nn.Module before "
                           "scripting (shapes are the same).")
    from .tracer.capture import exported_child, exported_program_message, is_exported_program  # noqa: PLC0415 - torch loads on first trace

    if is_exported_program(module):
        raise UsageProblem(exported_program_message(f"{spec!r} gives a module that"))
    child = exported_child(module) if isinstance(module, torch.nn.Module) else None
    if child is not None:
        raise UsageProblem(exported_program_message(f"{spec!r} gives a module whose submodule {child!r}", child=True))


def _unwrapped(module: Any) -> tuple[Any, list[str]]:
    """The module to trace inside wrappers that hide it from module hooks or split its batch
    (``tracer.capture.unwrap``), and a note for each wrapper taken off."""
    from .tracer.capture import unwrap  # noqa: PLC0415 - torch loads on first trace

    module, kinds = unwrap(module)
    notes = [("the model is torch.compile'd: tracing the module it compiles (compiled code runs no module "
              "hooks, and the shapes are the same)") if kind == "torch.compile" else
             (f"the model is wrapped in {kind}: tracing the wrapped module on the whole batch (the wrapper only "
              "splits the batch across devices)") for kind in kinds]
    return module, notes


def _render_hints(trace: Trace, exhibit: Any) -> None:
    """Save an exhibit's render hints in the trace (as JSON would give them back), so its JSON re-renders the
    same picture; the parameter groups keep the exhibit's order (``renderers.hints_to_save``)."""
    options = getattr(exhibit, "options", None)
    if options:
        trace.meta["options"] = hints_to_save(options)


_NO_VALUES = ("--check-finite reads the values of every output, and a trace on 'meta' computes shapes only: there "
              "are no values to check. Trace on the CPU or a GPU (--device cpu)")


def trace_model(request: TraceRequest, loaded: Loaded | None = None) -> Outcome:
    """Trace the request's model once (``loaded``: an already resolved request). A failing forward gives the
    partial trace in the outcome; problems with the request raise ``UsageProblem``."""
    from .tracer.api import (  # noqa: PLC0415 - torch loads on first trace
        TraceFailed,
        UnsupportedModel,
        failure_message,
        trace,
    )
    from .tracer.capture import NoValuesToCheck  # noqa: PLC0415 - torch loads on first trace

    if request.check_finite and request.device == "meta":
        raise UsageProblem(_NO_VALUES)
    loaded = loaded or load(request)
    try:
        with _user_code("running its forward"):
            result = trace(loaded.module, *loaded.args, grad=request.grad, train=loaded.train,
                           device=request.device, ops=request.ops, lines=request.lines, strict=True,
                           check_finite=request.check_finite, forward_kwargs=loaded.kwargs)
    except NoValuesToCheck as e:  # the model's own parameters are on meta
        raise UsageProblem(f"{_NO_VALUES} (the model's parameters are on 'meta')") from e
    except UnsupportedModel as e:  # the forward ran in a way no trace can show (it returned a generator)
        raise CannotTrace(str(e)) from e
    except TraceFailed as e:
        _render_hints(e.trace, loaded.exhibit)
        return Outcome(e.trace, loaded.exhibit, failure_message(e.trace, request.grad_option), e.__cause__,
                       loaded.notes)
    _check_ran(result, request.model)
    _render_hints(result, loaded.exhibit)
    return Outcome(result, loaded.exhibit, notes=loaded.notes)


# What a forward may return that runs its body only when consumed: the trace would show none of it.
LAZY_OUTPUTS = ("generator", "async_generator", "coroutine", "map", "filter", "zip")


def _check_ran(trace: Trace, spec: str) -> None:
    root = trace.calls[0] if trace.calls else None
    if root is not None and isinstance(root.outputs, Opaque) and root.outputs.kind in LAZY_OUTPUTS:
        kind = root.outputs.kind
        raise CannotTrace(f"the forward of {spec!r} returned a {kind}, so its body had not run when the forward "
                          f"returned (a {kind} runs only when consumed) and there is nothing to trace. Trace a "
                          "module whose forward consumes it, e.g. one returning torch.stack(list(model(x))).")


def profile_model(request: TraceRequest, *, warmup: int = 3, repeat: int = 10, dtype: str | None = None,
                  progress: Callable[[int, int], None] | None = None, loaded: Loaded | None = None) -> Outcome:
    """Profile the request's model (``shapetrace.profile``) on ``request.device``; as ``trace_model`` otherwise.

    ``UsageProblem`` when the device or dtype cannot be used here.
    """
    from .tracer.api import TraceFailed, failure_message  # noqa: PLC0415 - torch loads on first trace
    from .tracer.timing import ProfileUsageError, profile  # noqa: PLC0415 - torch loads on first trace

    loaded = loaded or load(TraceRequest(request.model, request.inputs, request.args, None, request.train))
    try:
        with _user_code("running its forward"):
            result = profile(loaded.module, *loaded.args, device=request.device, warmup=warmup, repeat=repeat,
                             dtype=dtype, train=loaded.train, grad=request.grad, progress=progress,
                             forward_kwargs=loaded.kwargs)
    except ProfileUsageError as e:
        raise UsageProblem(str(e)) from e
    except TraceFailed as e:
        _render_hints(e.trace, loaded.exhibit)
        return Outcome(e.trace, loaded.exhibit, failure_message(e.trace, request.grad_option), e.__cause__,
                       loaded.notes)
    _render_hints(result, loaded.exhibit)
    return Outcome(result, loaded.exhibit, notes=loaded.notes)


def compare_model(request: TraceRequest, against: str) -> tuple[Outcome, Any]:
    """Trace the request's model as ``trace_model`` does, then run ``against`` (``"torchinfo"`` or
    ``"torchview"``) on the same module and inputs: ``(outcome, comparison)`` (``compare.Comparison``), the
    comparison ``None`` when the forward failed (the outcome holds the partial trace and the failure; the other
    tool would fail on it too). The other tool's run of the forward is the model's own code as much as ours:
    what it prints goes to stderr and a ``sys.exit`` in it is a ``CannotTrace``.

    ``UsageProblem`` when the tool is not installed or cannot be given these inputs; ``OtherToolFailed`` when it
    raises on a model our trace succeeded on.
    """
    from . import compare  # noqa: PLC0415 - torch loads on first trace

    loaded = load(request)
    # The session's rule (--train/--eval, else an exhibit as built and anything else eval), set on the model
    # itself: the other tool then runs it in the mode we traced it in.
    if loaded.train is not None:
        loaded.module.train(loaded.train)
    outcome = trace_model(request, loaded)
    if outcome.failed:
        return outcome, None
    run = compare.diff_torchinfo if against == "torchinfo" else compare.diff_torchview
    try:
        with _user_code(f"running its forward under {against}"):
            result = run(loaded.module, outcome.trace, *loaded.args, **loaded.kwargs)
    except ImportError as e:
        raise UsageProblem(f"{against} is not installed ({e}); install it with: "
                           "pip install 'shapetrace[compare]'") from e
    except compare.InputsNotPassable as e:
        raise UsageProblem(str(e)) from e
    except SessionError:  # the model's own code exiting (CannotTrace), said as such
        raise
    except Exception as e:  # the other tool's own failure: ours succeeded, so it is theirs to report
        raise OtherToolFailed(_tool_failure(against, e), against) from e
    return outcome, result


def _tool_failure(tool: str, error: BaseException) -> str:
    """What to say when ``tool`` raised ``error``: its innermost cause (a tool's "failed, see above" wraps
    the real one), where in the tool it came from, that our trace succeeded, and what to try."""
    cause = error
    seen = {id(cause)}
    while (cause.__cause__ or cause.__context__) is not None and id(cause.__cause__ or cause.__context__) not in seen:
        cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
        seen.add(id(cause))
    frames = []
    tb = cause.__traceback__
    while tb is not None:
        frames.append((tb.tb_frame.f_code.co_filename, tb.tb_lineno, tb.tb_frame.f_code.co_name))
        tb = tb.tb_next
    mine = [f for f in frames if f"{os.sep}{tool}{os.sep}" in f[0]]
    where = ""
    if mine:
        path, line, func = mine[-1]
        where = f", raised in {tool}'s {Path(path).name}:{line} ({func})"
        if frames[-1] != mine[-1]:
            where += f" through {Path(frames[-1][0]).name}:{frames[-1][1]} ({frames[-1][2]})"
    other = "torchview" if tool == "torchinfo" else "torchinfo"
    message = str(cause).strip().splitlines()[0] if str(cause).strip() else "(no message)"
    return (f"{tool} failed on this model: {type(cause).__name__}: {message}{where}. shapetrace's own trace of "
            f"the model succeeded, so this is {tool}'s failure, not the model's: compare with --against {other} "
            f"instead, or see shapetrace's table alone with 'shapetrace trace MODEL' (rerun with --debug for "
            f"{tool}'s traceback)")


# ---- reading a saved trace ---------------------------------------------------------------------------------------
# The bounds and what is read (regular files, inherited descriptors) are ``tracer.tracefile``'s, which
# ``shapetrace.load`` reads through as well.
STDIN = "-"
# What the command line suggests for a FIFO or a device named as the trace.
_FROM_STDIN = "or from stdin as '-' (cat FILE | shapetrace render -)"


def is_saved_trace(spec: str) -> bool:
    """Whether a command's MODEL argument names a saved trace rather than a model: ``-`` (stdin) or a ``.json``
    file (a MODEL spec never ends in ``.json``)."""
    return spec == STDIN or spec.lower().endswith(".json")


def read_trace(spec: str) -> Trace:
    """The trace saved in the file ``spec`` (``-``: stdin). ``UsageProblem`` when it cannot be read as named (no
    such file, a folder, a FIFO, over the size limit); ``TraceFileProblem`` when what it holds is not a trace."""
    where = "stdin" if spec == STDIN else repr(spec)
    data = _trace_bytes(spec, where)
    if not data.strip():
        raise TraceFileProblem(f"{where} is empty: a saved trace is the JSON that 'shapetrace trace MODEL --format json "
                           "-o FILE' writes")
    try:
        return load_trace(data)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        raise TraceFileProblem(f"{where} is not a readable shapetrace trace: {e}") from e


def _trace_bytes(spec: str, where: str) -> bytes:
    try:
        if spec == STDIN:
            return read_bounded(sys.stdin.buffer, where)
        return read_path(spec, where, instead=_FROM_STDIN)
    except TraceFileRefused as e:
        raise UsageProblem(str(e)) from None
    except FileNotFoundError:
        raise UsageProblem(f"{spec}: no such file (a saved trace, from --format json)") from None
    except OSError as e:
        raise UsageProblem(f"cannot read {where}: {e.strerror or e}") from e


# ---- output --------------------------------------------------------------------------------------------------
def pick_format(fmt: str | None, output: str | Path | None, default: str = "text") -> str:
    """``--format`` when given, else the format ``output``'s suffix asks for, else ``default``; an ``-o`` suffix
    no renderer claims is a ``UsageProblem`` listing those that are."""
    if fmt is not None:
        return fmt
    if output is None:
        return default
    try:
        return format_for_path(output, default)
    except UnknownFormat as e:
        raise OutputProblem(str(e)) from e


def _existing_ancestor(path: Path) -> Path:
    for folder in [path, *path.parents]:
        if folder.exists():
            return folder
    return Path(".")


def _probe_folder(folder: Path, what: str) -> None:
    """Refuse (``OutputProblem``) a folder that cannot be created or written, by trying to."""
    base = _existing_ancestor(folder)
    if not base.is_dir():
        raise OutputProblem(f"cannot write {what}: {str(base)!r} is a file, not a folder; choose another path")
    try:
        fd, probe = tempfile.mkstemp(dir=base, prefix=".shapetrace-probe-")
    except OSError as e:
        raise OutputProblem(f"cannot write {what}: the folder {str(base)!r} is not writable "
                            f"({e.strerror or e}); choose a folder you can write to") from e
    os.close(fd)
    os.unlink(probe)


def _written_through(target: Path) -> bool:
    """Whether ``target`` is written into as it is rather than replaced: a device, a FIFO or one of the
    process's own descriptors (``/dev/stdout``, ``/dev/fd/3``, ``/dev/null``). Replacing one with a file would
    break it (as root, even ``/dev/null``)."""
    return (target.exists() and not target.is_file()) or os.path.realpath(target).startswith("/proc/")


def _check_names_a_file(path: str | Path) -> None:
    """Refuse a path ending in a separator (``-o newdir/``): it names a folder, and writing a file by the
    folder's name (``Path`` drops the slash) would not be what was asked."""
    text = os.fspath(path)
    if not text:  # Path("") is ".", the current folder
        raise OutputProblem("cannot write '': an empty path names no file; give a file name, e.g. out.txt")
    if text.endswith(tuple(sep for sep in (os.sep, os.altsep) if sep)):
        raise OutputProblem(f"cannot write {text!r}: a path ending in {text[-1]!r} names a folder, not a "
                            f"file; give a file name, e.g. {os.path.join(text, 'out.txt')}")


def check_output(path: str | Path) -> Path:
    """Check, before anything runs, that a file can be written at ``path``; ``OutputProblem`` says why not."""
    _check_names_a_file(path)
    problem = path_problem(path)
    if problem is not None:
        advice = "choose a shorter name" if problem.startswith(NAME_TOO_LONG) else "choose another path"
        raise OutputProblem(f"cannot write {str(path)!r}: {problem}; {advice}")
    target = Path(reroute(os.fspath(path)))  # /dev/stdout: the real stdout, while descriptor 1 is on stderr
    if _written_through(target):
        if not os.access(target, os.W_OK):
            raise OutputProblem(f"cannot write {str(path)!r}: it is not writable")
        return target
    target = resolve_target(target)
    if target.is_dir():
        raise OutputProblem(f"cannot write {str(path)!r}: it is a folder; give a file name, e.g. {target / 'out.txt'}")
    _probe_folder(target.parent, repr(str(path)))
    if target.exists() and not os.access(target, os.W_OK):
        raise OutputProblem(f"cannot write {str(path)!r}: the file exists and is read-only")
    return target


def check_output_folder(folder: str | Path) -> Path:
    """Check, before anything runs, that files can be written in ``folder`` (created if missing)."""
    target = Path(folder)
    if target.exists() and not target.is_dir():
        raise OutputProblem(f"cannot write into {str(folder)!r}: it is a file, not a folder")
    _probe_folder(target, f"into {str(folder)!r}")
    return target


def write_output(data: str | bytes, path: str | Path) -> Path:
    """Write ``data`` to ``path`` atomically: into a temporary file in the same folder, renamed into place
    (through a symbolic link: into the file it points to). A device, FIFO or ``/dev/stdout`` is written into
    directly, as a shell's ``>`` would.

    On any failure the temporary file is removed and ``path`` is left as it was. ``WriteFailed`` when the
    file cannot be written (what ``check_output`` could tell beforehand was refused there).
    """
    target = Path(reroute(os.fspath(path)))  # /dev/stdout: the real stdout, while descriptor 1 is on stderr
    payload = data.encode("utf-8") if isinstance(data, str) else data
    if _written_through(target):
        try:
            with open(target, "wb") as f:
                f.write(payload)
        except BrokenPipeError:  # -o /dev/stdout, whose reader went away: as for stdout itself, not a usage error
            raise
        except OSError as e:
            raise WriteFailed(_write_failed(path, e)) from e
        return target
    target = resolve_target(target)
    try:
        write_atomically(target, payload, suffix=".part")
    except OSError as e:
        raise WriteFailed(_write_failed(path, e)) from e
    return target


def _write_failed(path: str | Path, error: OSError) -> str:
    return (f"cannot write {str(path)!r}: {error.strerror or error}; nothing was written there (free some space "
            "or choose another place with -o, then run the command again)")


def _unused(path: Path) -> Path:
    """``path``, or ``name-1.dot``, ``name-2.dot``... when a file is there already."""
    n, candidate = 0, path
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


# What the command line can do for an overlay whose data the trace lacks (the renderer's message speaks Python).
_OVERLAY_DATA = {
    "cut": ("--overlay cut needs to know which part of the model is the body and which the head: it works on a "
            "model built as nn.Sequential(body, head) (fastai's create_body + create_head) and on the gallery "
            "exhibits that define their cut (shapetrace gallery list). From Python, pass options={'cut': {'body': "
            "[...], 'head': [...]}} to trace.diagram(); a saved trace keeps it in meta.options for shapetrace render."),
    "groups": ("--overlay groups needs the model's parameter groups: it works on the gallery exhibits that define "
               "theirs (shapetrace gallery list); --overlay frozen shows what is trainable for any model. From Python, "
               "pass options={'param_groups': {group: [module names]}} to trace.diagram()."),
    "diff": ("--overlay diff needs a second model to compare with: 'shapetrace diff A B -o b.svg' draws B with "
             "what changed from A marked."),
}


def render_output(trace: Trace, fmt: str, options: RenderOptions | None = None,
                  path: str | Path | None = None) -> str | bytes:
    """Render ``trace``; with ``path``, also write it there (atomically). Returns what was rendered.

    When Graphviz is missing and ``path`` is given, the diagram's DOT source is written next to it (same name,
    ``.dot``) and ``RenderFailed`` says so; a Graphviz failure is a ``RenderFailed`` too.
    """
    try:
        out = render(trace, fmt, options)
    except GraphvizNotFound as e:
        if path is None or not e.source:
            raise RenderFailed(f"{e}") from e
        kept = _unused(Path(path).with_suffix(".dot"))  # a file of the user's by that name is left alone
        write_output(e.source, kept)
        raise RenderFailed(f"{e}\nThe diagram's DOT source was written to {kept} instead.") from e
    except OverlayNeedsOptions as e:
        raise UsageProblem(_OVERLAY_DATA[e.overlay]) from e
    except (ValueError, RuntimeError) as e:
        raise RenderFailed(f"the {fmt} output could not be rendered: {e}") from e
    if path is not None:
        write_output(out, path)
    return out
