"""Whether the source text of a function read from its file now is the text its running code was compiled from.

``inspect`` reads a file as it is now; a notebook user who edits a model's file without reloading it runs the
old code, and the new text would show beside what the old code did. The text is compiled again, inside the
same kind of enclosing class and function the code was compiled in (the class ``__private`` names are mangled
with and ``super()`` needs; the enclosing function whose variables the code reads as free variables), with the
``__future__`` features the code was compiled with, after the file's top-level imports and again without them
(how a method of an imported module is called depends on them, and IPython compiles a cell's statements one by
one), and the result is compared with the running code object,
and recursively with the code written inside it: bytecode, constants, names, variables and the line every
instruction is on. Any difference, or text that does not compile, is a mismatch.
"""

from __future__ import annotations
import __future__

import ast
import functools
import io
import linecache
import math
import sys
import textwrap
import tokenize
from collections.abc import Iterator
from types import CodeType

__all__ = ["defaults_match", "nested_codes", "source_matches"]

_FUTURE_FLAGS = 0
for _feature in __future__.all_feature_names:
    _FUTURE_FLAGS |= getattr(__future__, _feature).compiler_flag

_OUTER = "_shapetrace_enclosing"  # the stand-in for the function a closure was written in


def defaults_match(text: list[str], defaults: tuple | None, kwdefaults: dict | None) -> bool:
    """Whether the literal default values written in the ``def`` of ``text`` are the function's ``defaults`` and
    ``kwdefaults`` (its ``__defaults__``, ``__kwdefaults__``). A default is made when the class body runs, not by
    the function's code, so an edit to one (``scale=2.0`` to ``3.0``) leaves the code object as it was. Defaults
    that are not literals (``torch.zeros(3)``, a name) are not compared; text that does not parse is left to the
    code comparison."""
    try:
        tree = ast.parse(textwrap.dedent("".join(text)))
    except (SyntaxError, ValueError):
        return True
    node = next((n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))), None)
    if node is None:
        return True
    written = [(d, v) for d, v in zip(node.args.defaults, defaults or ())]
    if len(node.args.defaults) != len(defaults or ()):
        return False
    kw = kwdefaults or {}
    for arg, d in zip(node.args.kwonlyargs, node.args.kw_defaults):
        if d is not None:
            if arg.arg not in kw:
                return False
            written.append((d, kw[arg.arg]))
    for node_value, value in written:
        try:
            literal = ast.literal_eval(node_value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            continue
        if type(literal) is not type(value) or not (literal == value or _is_nan(literal)):
            return False
    return True


def _is_nan(value: object) -> bool:
    """A float NaN, equal to nothing, itself included: a NaN default is taken as unedited."""
    return isinstance(value, float) and math.isnan(value)


def source_matches(code: CodeType, text: list[str], first: int, qualname: str = "") -> bool:
    """Whether ``text`` (the lines ``inspect.getsourcelines`` gives, starting at line ``first``) compiles to
    ``code``. A ``def`` is compiled as written; a lambda, whose lines may hold more than the lambda (the rest of
    an assignment, a bracket opened on an earlier line), is compiled as written or, failing that, each lambda
    in it cut out at the end of its expression."""
    if not text or first != code.co_firstlineno:
        return False
    cls = _mangling_class(qualname or getattr(code, "co_qualname", code.co_name))
    freevars = [n for n in code.co_freevars if n != "__class__"]
    sources = [(0, "".join(text), _indent_of(text[0]))]
    if code.co_name == "<lambda>":
        sources += [(line, f"({snippet}\n)\n", "") for line, snippet in _lambda_snippets("".join(text))]
    imported = _imported_names("".join(linecache.getlines(code.co_filename)))
    for offset, body, indent in sources:
        wrapped = _wrap(body, indent, cls, freevars)
        if wrapped is None:
            continue
        # The compiler calls a method of an imported module differently (``torch.cat(...)``), so the file's
        # imports go first; and again without them: IPython compiles a cell one statement at a time, a class
        # apart from the imports above it.
        contexts = [(f"import {', '.join(imported)}\n", 1), ("", 0)] if imported else [("", 0)]
        for prefix, lines in contexts:
            shift = first + offset - (wrapped[0] + lines + 1)  # compiled line + shift = line in the file
            target = code.co_firstlineno - shift
            for compiled in _compiled(prefix + wrapped[1], code.co_flags & _FUTURE_FLAGS):
                if any(c.co_name == code.co_name and c.co_firstlineno == target and _same_code(code, c, shift)
                       for c in nested_codes(compiled)):
                    return True
    return False


@functools.lru_cache(maxsize=16)
def _imported_names(file_text: str) -> tuple[str, ...]:
    """The names a file (its text as it is now) binds by ``import`` at its top level: an edit that changes them
    changes how the code would compile, and is a mismatch like any other."""
    try:
        tree = ast.parse(file_text)
    except (SyntaxError, ValueError):
        return ()
    names: set[str] = set()
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names if a.name != "*")
        elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(node))
    return tuple(sorted(names))


def _indent_of(line: str) -> str:
    return line[:len(line) - len(line.lstrip(" \t\f"))]


def _wrap(body: str, indent: str, cls: str, freevars: list[str]) -> tuple[int, str] | None:
    """``body`` (its first line indented by ``indent``) inside a function that defines ``freevars`` and a class
    named ``cls`` in it, each opened at a shorter prefix of ``indent`` so that ``body`` compiles unchanged; the
    number of lines put before it and the source. ``None`` when ``indent`` is too short to hold them."""
    levels = (["def"] if freevars else []) + (["class"] if cls else [])
    if not indent and body.startswith("(") and levels:  # a cut-out lambda: any indentation will do
        indent = " " * len(levels)
        body = indent + body
    if len(indent) < len(levels):
        return None
    lines: list[str] = []
    for i, level in enumerate(levels):
        inner = indent[:i + 1] if i + 1 < len(levels) else indent
        if level == "def":
            lines += [f"{indent[:i]}def {_OUTER}():", f"{inner}{' = '.join(freevars)} = None"]
        else:
            lines.append(f"{indent[:i]}class {cls}:")
    return len(lines), "".join(line + "\n" for line in lines) + body


def _compiled(source: str, flags: int) -> Iterator[CodeType]:
    """``source`` compiled at this interpreter's optimization level, then at the others (a ``.pyc`` made under
    ``python -O``, a file compiled with ``optimize=``): asserts, ``if __debug__:`` and docstrings differ."""
    levels = [sys.flags.optimize, *(level for level in (0, 1, 2) if level != sys.flags.optimize)]
    for level in levels:
        try:
            yield compile(source, "<source read again>", "exec", flags=flags, dont_inherit=True, optimize=level)
        except (SyntaxError, ValueError):
            return


def nested_codes(code: CodeType) -> Iterator[CodeType]:
    """The code objects written inside ``code`` (functions, lambdas, comprehensions, classes), at any depth."""
    todo = [code]
    while todo:
        for const in todo.pop().co_consts:
            if isinstance(const, CodeType):
                yield const
                todo.append(const)


def _same_code(running: CodeType, compiled: CodeType, shift: int) -> bool:
    """Whether two code objects do the same thing on the same lines (``compiled``'s lines moved by ``shift``)."""
    if (running.co_code != compiled.co_code or running.co_names != compiled.co_names
            or running.co_varnames != compiled.co_varnames or running.co_cellvars != compiled.co_cellvars
            or running.co_freevars != compiled.co_freevars or running.co_name != compiled.co_name
            or running.co_argcount != compiled.co_argcount
            or running.co_posonlyargcount != compiled.co_posonlyargcount
            or running.co_kwonlyargcount != compiled.co_kwonlyargcount
            or getattr(running, "co_exceptiontable", b"") != getattr(compiled, "co_exceptiontable", b"")
            or len(running.co_consts) != len(compiled.co_consts)):
        return False
    if [(s, e, line) for s, e, line in running.co_lines()] != [
            (s, e, None if line is None else line + shift) for s, e, line in compiled.co_lines()]:
        return False
    previous = None
    for a, b in zip(running.co_consts, compiled.co_consts):
        if not (_same_qualname(a, b, running, previous) or _same_const(a, b, shift)):
            return False
        previous = a
    return True


_LOCALS = ".<locals>."


def _same_qualname(a: object, b: object, running: CodeType, previous: object) -> bool:
    """Whether ``a`` and ``b`` are the same qualified name held as a constant of ``running``, written inside other
    enclosing functions: the text compiled again is inside stand-ins for them, so only the part after the last
    ``<locals>`` can be compared (the code objects around it are compared themselves). Only a name that is one:
    a class body's own ``__qualname__`` (its last part is the body's name), or, before Python 3.11, a nested
    function's (its last part is the name of the code object just before it); any other string, a literal in
    the forward, is compared whole."""
    if type(a) is not str or type(b) is not str or a == b or _LOCALS not in a or _LOCALS not in b:
        return False
    name = a.rpartition(".")[2]
    own = name == running.co_name
    nested = isinstance(previous, CodeType) and name == previous.co_name
    return (own or nested) and a.rpartition(_LOCALS)[2] == b.rpartition(_LOCALS)[2]


def _same_const(a: object, b: object, shift: int) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, CodeType):
        return _same_code(a, b, shift)  # type: ignore[arg-type]
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_same_const(x, y, shift) for x, y in zip(a, b))  # type: ignore[arg-type]
    if isinstance(a, frozenset):  # `x in {"a", "b"}`: its order depends on how it was built
        return a == b and {(type(x), repr(x)) for x in a} == {(type(y), repr(y)) for y in b}  # type: ignore[union-attr]
    return repr(a) == repr(b)  # not ==: 0.0 is not -0.0, 1 is not True, nan is nan


def _mangling_class(qualname: str) -> str:
    """The class whose name Python mangles ``__private`` names with in the function ``qualname``: the innermost
    class the function is written in (``C.forward.<locals>.f`` -> ``C``), ``""`` for none."""
    parts = qualname.split(".")[:-1]  # the function itself is not a class
    classes = [p for i, p in enumerate(parts) if p != "<locals>" and (i + 1 >= len(parts) or parts[i + 1] != "<locals>")]
    cls = classes[-1] if classes else ""
    return cls if cls.isidentifier() else ("C" if cls else "")


def _lambda_snippets(source: str) -> list[tuple[int, str]]:
    """The lambdas in ``source``, which may not compile by itself (``lambda x: m.lin(x))``, the second line of
    ``m.forward = (``), each cut out at the end of its expression (a bracket it did not open, a comma or ``for``
    after its ``:``, the end of the statement), with the index of the line it starts on."""
    lines = source.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    tokens: list[tokenize.TokenInfo] = []
    try:
        tokens.extend(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass  # unbalanced brackets: the tokens up to there are what we need
    found: list[tuple[int, str]] = []
    for i, tok in enumerate(tokens):
        if tok.type != tokenize.NAME or tok.string != "lambda":
            continue
        depth, colon, end = 0, False, None
        for later in tokens[i + 1:]:
            if later.type == tokenize.OP and later.string in "([{":
                depth += 1
            elif later.type == tokenize.OP and later.string in ")]}":
                depth -= 1
            if depth < 0 or later.type in (tokenize.NEWLINE, tokenize.ENDMARKER) or (depth == 0 and colon and (
                    (later.type == tokenize.OP and later.string in ",;") or later.string in ("for", "async"))):
                end = later.start
                break
            colon = colon or (depth == 0 and later.type == tokenize.OP and later.string == ":")
        if end is None:
            end = (len(lines), len(lines[-1]) if lines else 0)
        start = offsets[tok.start[0] - 1] + tok.start[1]
        found.append((tok.start[0] - 1, source[start:offsets[end[0] - 1] + end[1]]))
    return found
