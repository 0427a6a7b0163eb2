"""How the command line and the Sphinx directive show a Python warning: one line, whatever the message holds."""

from __future__ import annotations

from shapetrace import ShapetraceWarning
from shapetrace.tracer.user_warnings import one_line


def test_a_message_of_several_lines_is_joined_onto_one():
    text = one_line(UserWarning("first line\n  second line\r\n\tthird"), UserWarning, "/x/m.py", 3)
    assert text == "first line second line third (UserWarning at m.py:3)"
    assert "\n" not in text and "\r" not in text and "\t" not in text


def test_a_warning_of_shapetrace_itself_names_no_origin_and_is_one_line_too():
    text = one_line("the forward changed\nparameters in place", ShapetraceWarning, "/x/shapetrace/t.py", 9)
    assert text == "the forward changed parameters in place"
