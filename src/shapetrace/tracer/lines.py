"""Source lines: which line of which ``forward`` made each module call and each functional op.

``LineRecorder`` is what ``Tracer(lines=True)`` (``trace(..., lines=True)``) switches on; nothing here runs
otherwise. Per event it does one short walk up the Python stack to the frame running the enclosing module's
``forward`` (or a function, lambda or comprehension written inside it) and reads that frame's current line,
so a call made from a helper method defined elsewhere is attributed to the forward's line that called the
helper, and one made in a function nested in the forward to the nested function's own line. To tell lines never reached (a branch not taken)
from lines that ran but made no tensor, it also puts a ``sys.settrace`` function in place for the duration
of the forward that traces lines only in the frames of traced modules' forwards (not when a debugger or
coverage tool already has one: then no line is called unreached), and in the frames of functions written
inside those forwards, whose lines are the forward's lines too. After the forward, the source text of
every forward seen is read once and stored in the trace, so a saved trace shows its lines without the model.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from types import CodeType, FrameType
from typing import Any

import torch
from torch import nn

from .probes.ops import reads_only_its_own_state
from .records import Op, Trace
from .source_match import defaults_match, nested_codes, source_matches

__all__ = ["LineRecorder", "forward_code"]

# Why there is no Python source for a forward, by how it is implemented.
_NO_SOURCE_SCRIPTED = "it is TorchScript (torch.jit.script or trace), compiled, with no Python source"
_NO_SOURCE_BUILTIN = "it is built in or compiled (no Python code object)"


def forward_code(module: nn.Module) -> tuple[CodeType | None, str, str]:
    """The code object that runs ``module``'s forward (``None`` when no Python code runs it: a TorchScript
    module keeps the Python forward it was scripted from, but never runs it), its qualified name and the name
    of the Python module defining it."""
    if isinstance(module, torch.jit.ScriptModule):
        return None, f"{type(module).__qualname__}.forward", type(module).__module__
    forward = getattr(module, "forward", None)
    func = getattr(forward, "__func__", forward)
    for _ in range(8):  # what runs: a partial's function, a callable object's __call__
        if isinstance(func, functools.partial):
            func = func.func
        elif (not inspect.isfunction(func) and not isinstance(func, nn.Module)
              and inspect.isfunction(call := inspect.getattr_static(type(func), "__call__", None))):
            func = call
        else:
            break
        func = getattr(func, "__func__", func)
    qualname = f"{type(module).__qualname__}.forward"
    try:
        func = inspect.unwrap(func)
    except ValueError:
        pass
    code = getattr(func, "__code__", None)
    if isinstance(code, CodeType):
        defaults, kwdefaults = getattr(func, "__defaults__", None), getattr(func, "__kwdefaults__", None)
        _DEFAULTS.setdefault((code, code.co_filename), (defaults, kwdefaults))  # for source_match.defaults_match
        return code, getattr(func, "__qualname__", qualname), getattr(func, "__module__", None) or type(module).__module__
    return None, qualname, type(module).__module__


# A forward's default argument values, by its code object and file (as ``_SOURCES``: equal code objects from two
# files are two forwards): made when its class body ran, they are not in the code object the edit check compares,
# so it reads them here. Kept for the process, as the source text read for that code is.
_DEFAULTS: dict[tuple[CodeType, str], tuple[tuple | None, dict | None]] = {}


def _short_path(filename: str) -> str:
    """``filename`` relative to the ``sys.path`` entry it was imported from (``torch/nn/modules/linear.py``)."""
    best = ""
    absolute = os.path.abspath(filename)
    for entry in sys.path:
        root = os.path.abspath(entry or ".")
        if absolute.startswith(root + os.sep) and len(root) > len(best):
            best = root
    return os.path.relpath(absolute, best).replace(os.sep, "/") if best else os.path.basename(filename)


class LineRecorder:
    """Collects ``Call.line``, ``Call.code``, ``Op.line`` and ``Trace.sources`` for one traced forward."""

    def __init__(self) -> None:
        self._code: dict[int, CodeType | None] = {}  # id(module) -> code of its forward
        self._torch_layer: dict[int, bool] = {}  # id(module) -> a leaf layer of torch.nn itself
        self._keys: dict[CodeType, str] = {}  # code -> source key
        self._qualnames: dict[CodeType, str] = {}  # code -> the qualified name of its function
        self._missing: dict[str, tuple[str, str]] = {}  # source key -> (qualname, why there is no source)
        self._ran: dict[int, set[int]] = {}  # call id -> lines of its forward that ran
        self._pending: dict[CodeType, int] = {}  # forward frames about to start -> their call's id
        # Code written inside a forward (nested functions, lambdas, comprehensions) -> that forward's code.
        self._root_of: dict[CodeType, CodeType] = {}
        self._frame_call: dict[int, int] = {}  # id() of a running forward frame -> its call's id
        self._calls: dict[int, dict[str, Any]] = {}  # call id -> Call.code
        self._lines: dict[int, int | None] = {}  # call id -> Call.line
        self._previous_trace: Any = None
        self._tracing = False

    # ---- lifetime ------------------------------------------------------------------------------------
    def __enter__(self) -> LineRecorder:  # noqa: PYI034 - typing.Self needs Python 3.11
        if sys.gettrace() is None:  # a debugger or coverage tool keeps its own; we then skip reachability
            self._trace_fn = self._global_trace
            sys.settrace(self._trace_fn)
            self._tracing = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._tracing:
            sys.settrace(None)
            self._tracing = False
        self._pending.clear()
        self._frame_call.clear()

    # ---- the settrace functions (only while the forward runs) -----------------------------------------
    def _global_trace(self, frame: FrameType, event: str, arg: Any) -> Any:
        cid = self._pending.pop(frame.f_code, None) if self._pending else None
        if cid is not None:  # a forward frame: nested frames find their call through it
            self._frame_call[id(frame)] = cid
        else:
            root = self._root_of.get(frame.f_code)
            if root is None:
                return None
            cid = self._enclosing_call(frame, root)
            if cid is None:  # a nested function run after its forward returned (a hook, a callback)
                return None
        ran = self._ran.setdefault(cid, set())
        frame_calls = self._frame_call

        def local(frame: FrameType, event: str, arg: Any) -> Any:
            if event == "line":
                ran.add(frame.f_lineno)
            elif event == "return":  # also when an exception leaves the frame (a nested one was never in)
                frame_calls.pop(id(frame), None)
            return local

        return local

    def _enclosing_call(self, frame: FrameType, root: CodeType) -> int | None:
        """The call id of the innermost running frame of forward ``root`` below ``frame`` on the stack."""
        up = frame.f_back
        while up is not None:
            if up.f_code is root:
                return self._frame_call.get(id(up))
            up = up.f_back
        return None

    # ---- events (called by the Tracer) ----------------------------------------------------------------
    def code_of(self, module: nn.Module) -> CodeType | None:
        key = id(module)
        try:
            return self._code[key]
        except KeyError:
            pass
        code, qualname, modname = forward_code(module)
        self._code[key] = code
        if code is None:
            why = _NO_SOURCE_SCRIPTED if isinstance(module, torch.jit.ScriptModule) else _NO_SOURCE_BUILTIN
            self._missing.setdefault(self._key(module, None), (qualname, why))
        elif code not in self._keys:
            self._keys[code] = self._unique_key(f"{modname}.{qualname}", code)
            self._qualnames[code] = qualname
            for inner in nested_codes(code):
                self._root_of.setdefault(inner, code)
        return code

    def _unique_key(self, base: str, code: CodeType) -> str:
        """``module.Class.forward``, or, when another forward seen already has that name (a class redefined in a
        notebook cell, two lambdas assigned as forwards in one file), that name with its file and line."""
        taken = set(self._keys.values())
        if base not in taken:
            return base
        key = f"{base}@{_short_path(code.co_filename)}:{code.co_firstlineno}"
        n = 2
        while key in taken:
            key = f"{base}@{_short_path(code.co_filename)}:{code.co_firstlineno}#{n}"
            n += 1
        return key

    def _key(self, module: nn.Module, code: CodeType | None) -> str:
        if code is not None:
            return self._keys[code]
        return f"{type(module).__module__}.{type(module).__qualname__}.forward"

    def _line_in(self, code: CodeType | None) -> int | None:
        """The current line of the innermost frame on the stack running ``code`` or code written inside it."""
        if code is None:
            return None
        root_of = self._root_of
        frame = sys._getframe(2)
        while frame is not None and frame.f_code is not code and root_of.get(frame.f_code) is not code:
            frame = frame.f_back
        return frame.f_lineno if frame is not None else None

    def on_call(self, cid: int, module: nn.Module, parent: nn.Module | None) -> None:
        code = self.code_of(module)
        self._calls[cid] = {"source": self._key(module, code)}
        torch_layer = self._torch_layer.get(id(module))
        if torch_layer is None:
            torch_layer = self._torch_layer[id(module)] = reads_only_its_own_state(module)
        if torch_layer:  # its ops are torch's implementation, recorded for no call of it, even traced by itself
            self._calls[cid]["torch_layer"] = True
        if parent is not None:
            self._lines[cid] = self._line_in(self.code_of(parent))
        if code is not None and self._tracing:
            self._pending[code] = cid

    def on_op(self, op: Op, module: nn.Module | None) -> None:
        if module is not None:
            op.line = self._line_in(self.code_of(module))

    def on_raise(self, cid: int, module: nn.Module, exc: BaseException) -> None:
        code = self.code_of(module)
        if code is None or cid not in self._calls:
            return
        # The line of this call's forward frame the exception left by, or deeper, of a function written inside
        # that forward; not of a later frame of the same forward (a module calling one of its own class).
        raised = None
        tb = exc.__traceback__
        while tb is not None:
            at = tb.tb_frame.f_code
            if at is code:
                if raised is not None:
                    break
                raised = tb.tb_lineno
            elif raised is not None and self._root_of.get(at) is code:
                raised = tb.tb_lineno
            tb = tb.tb_next
        if raised is not None:
            self._calls[cid]["raised"] = raised

    # ---- after the forward ---------------------------------------------------------------------------
    def finish(self, trace: Trace) -> None:
        for cid, code in self._calls.items():
            trace.calls[cid].code = code
        for cid, line in self._lines.items():
            trace.calls[cid].line = line
        for call in trace.calls:
            ran = self._ran.get(call.id)
            if call.code is not None and ran is not None:
                call.code["ran"] = sorted(ran)
        used = {c.code["source"] for c in trace.calls if c.code}
        sources: dict[str, dict] = {}
        for code, key in self._keys.items():
            if key in used:
                found = _source_of(code, self._qualnames[code])
                sources[key] = ({**found, "text": list(found["text"]), "code_lines": list(found["code_lines"])}
                                if "text" in found else dict(found))
        for key, (qualname, why) in self._missing.items():
            if key in used:
                sources[key] = {"qualname": qualname, "missing": why}
        trace.sources = dict(sorted(sources.items()))
        trace.meta["lines"] = True


# Source text read once per forward per process: reading and tokenizing files is the costly part. Keyed with
# the file too: code objects compare equal by their bytecode alone, whichever file they were compiled from.
_SOURCES: dict[tuple[CodeType, str], dict] = {}


def _source_of(code: CodeType, qualname: str) -> dict:
    found = _SOURCES.get((code, code.co_filename))
    if found is None:
        found = _SOURCES[code, code.co_filename] = _read_source(code, qualname)
    return found


def _read_source(code: CodeType, qualname: str) -> dict:
    qualname = getattr(code, "co_qualname", qualname)
    try:
        text, first = inspect.getsourcelines(code)
    except (OSError, TypeError):
        return {"qualname": qualname, "file": _short_path(code.co_filename),
                "missing": f"its source file {code.co_filename!r} cannot be read (an interactive session, "
                           "a generated class or a file that has changed or gone)"}
    known = _DEFAULTS.get((code, code.co_filename))
    if not source_matches(code, text, first, qualname) or (known is not None and not defaults_match(text, *known)):
        return {"qualname": qualname, "file": _short_path(code.co_filename),
                "missing": f"its source file {code.co_filename!r} has changed since this code was loaded (reload "
                           "the module, or restart the interpreter, to see its lines)"}
    # The lines with instructions: a statement with none (`global`, an `assert` under -O) cannot run, and is
    # not called unreached.
    code_lines = sorted({line for c in (code, *nested_codes(code)) for _, _, line in c.co_lines() if line})
    return {"qualname": qualname, "file": _short_path(code.co_filename), "first_line": first or 1,
            "text": [line.rstrip("\n") for line in text], "code_lines": code_lines}
