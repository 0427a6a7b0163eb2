"""The guide's code examples run, and the values their comments promise are the values they give."""

from __future__ import annotations

import ast
import re
from pathlib import Path

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide.md"
# A line ``expression  # (2, 8, 30, 30): ...``: the comment opens with the tuple the expression gives.
PROMISE = re.compile(r"^(?P<expr>[^#]+?)\s*#\s*(?P<value>\([\d, ]*\))")


def first_python_block(text: str) -> str:
    """The code of the first ```python block in ``text``."""
    return re.search(r"```python\n(.*?)```", text, re.DOTALL).group(1)


def test_the_guides_first_example_gives_the_shapes_its_comments_promise():
    code = first_python_block(GUIDE.read_text(encoding="utf-8"))
    namespace: dict = {}
    promises = []
    for line in code.splitlines():
        m = PROMISE.match(line)
        if m:
            promises.append((m["expr"], ast.literal_eval(m["value"])))
        else:
            exec(line, namespace)  # noqa: S102 - the guide's own example: imports, model, trace, a line each
    assert promises, "the example promises no value any more: update this test"
    for expr, value in promises:
        assert eval(expr, namespace) == value, expr
