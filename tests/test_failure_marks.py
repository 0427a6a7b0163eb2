"""How a failed forward is marked in the shape table: the row the failure shows on (folded by ``depth`` too),
and the error text the failing row and the footer give."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import shapetrace
from shapetrace.renderers import table
from shapetrace.renderers.html import CSS
from shapetrace.tracer.records import iter_tensors


class ConvThenHead(nn.Module):
    """Features, then a classifier whose first Linear expects the wrong width: the forward fails two levels
    down, inside ``classifier``."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(99, 16), nn.ReLU(), nn.Linear(16, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _failed() -> shapetrace.Trace:
    return shapetrace.trace(ConvThenHead(), torch.randn(2, 3, 8, 8), strict=False)


def test_a_failure_folded_by_depth_marks_the_row_it_is_folded_into():
    text = table.render_text(_failed(), width=200, depth=1)
    row = next(line for line in text.splitlines() if "classifier" in line and "Sequential" in line)
    assert "✗ classifier" in row and "RuntimeError: mat1 and mat2 shapes cannot be multiplied" in row
    assert "✗ features" not in text and "✗ (root)" not in text


def test_a_failure_folded_by_depth_marks_the_row_in_markdown_and_html():
    t = _failed()
    assert "`✗ classifier`" in table.render_markdown(t, depth=1)
    html = table.render_html(t, depth=1)
    assert html.count('<tr class="failed">') == 1 and "✗ classifier" in html


def test_a_failure_folded_by_depth_marks_the_module_in_the_modules_view():
    text = table.render_text(_failed(), width=200, depth=1, view="modules")
    assert "✗ classifier" in text and "✗ features" not in text


def test_without_depth_only_the_call_the_forward_failed_in_is_marked():
    text = table.render_text(_failed(), width=200)
    assert "✗ 1 " in text and "✗ classifier" not in text


class DecoderReraises(nn.Module):
    """Catches its decoder's shape error and raises a ValueError of its own from it."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(8, 16)
        self.dec = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.enc(x)
        try:
            return self.dec(h)
        except RuntimeError as e:
            raise ValueError("decoder failed: bad hidden size") from e


def _reraised() -> shapetrace.Trace:
    return shapetrace.trace(DecoderReraises(), torch.randn(2, 8), strict=False, lines=True)


def test_a_row_that_raised_another_exception_shows_it_in_place_of_raised():
    text = table.render_text(_reraised(), width=200)
    root = next(line for line in text.splitlines() if line.startswith("(root)"))
    assert "raised ValueError: decoder failed: bad hidden size" in root and "(raised)" not in root
    assert "✗ RuntimeError: mat1 and mat2 shapes cannot be multiplied" in text


def test_the_table_footer_names_where_it_failed_and_what_the_forward_raised_from_it():
    text = table.render_text(_reraised(), width=300)
    assert ("✗ the forward failed in dec (Linear): RuntimeError: mat1 and mat2 shapes cannot be multiplied "
            "(2x16 and 12x4); the forward raised ValueError: decoder failed: bad hidden size from it") in text


def test_trace_failed_names_the_first_error_and_the_one_the_forward_raised():
    with pytest.raises(shapetrace.TraceFailed) as e:
        shapetrace.trace(DecoderReraises(), torch.randn(2, 8))
    message = str(e.value)
    assert "error: RuntimeError: mat1 and mat2 shapes cannot be multiplied" in message
    assert "raised: ValueError: decoder failed: bad hidden size (the forward raised it" in message


def test_the_lines_footer_names_what_the_forward_raised_too():
    text = str(_reraised().lines())
    assert "the forward raised ValueError: decoder failed: bad hidden size from it" in text


def test_an_exception_that_passes_through_unchanged_still_shows_raised():
    text = table.render_text(_failed(), width=200)
    assert "(raised)" in text and "the forward raised" not in text


class Check(nn.Module):
    """Checks its input's width and says what it expected over several lines (the message holds an ANSI
    escape too: a message is data, never terminal control)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != 16:
            raise ValueError(f"Shape mismatch in Check:\n  expected: (B, 16)\n  got:      {tuple(x.shape)}\x1b[2J")
        return x


def _multiline() -> shapetrace.Trace:
    return shapetrace.trace(nn.Sequential(nn.Linear(8, 8), Check()), torch.randn(2, 8), strict=False)


def test_a_multi_line_error_shows_its_first_line_in_the_cell():
    text = table.render_text(_multiline(), width=200)
    row = next(line for line in text.splitlines() if "Check " in line)
    assert "✗ ValueError: Shape mismatch in Check: … " in row and "expected" not in row
    assert "\\n" not in text


def test_a_multi_line_error_keeps_its_line_breaks_in_the_footer_indented():
    lines = table.render_text(_multiline(), width=200).splitlines()
    at = lines.index("✗ the forward failed in 1 (Check): ValueError: Shape mismatch in Check:")
    assert lines[at + 1:at + 3] == ["    expected: (B, 16)", "    got:      (2, 8)\\x1b[2J"]


def test_a_multi_line_error_in_markdown_has_no_escaped_line_breaks():
    md = table.render_markdown(_multiline())
    assert "\\n" not in md.replace("\\x1b", "")
    assert "| ✗ ValueError: Shape mismatch in Check: … |" in md and ">     expected: (B, 16)  " in md


def test_no_control_character_of_a_multi_line_error_reaches_the_text():
    for text in (table.render_text(_multiline(), width=200), table.render_markdown(_multiline()),
                 table.render_html(_multiline())):
        assert "\x1b" not in text


def test_an_interrupted_call_caught_in_a_tracer_block_is_not_said_to_raise_another_error():
    class Stops(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise KeyboardInterrupt

    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(Stops()))
    with shapetrace.Tracer(model) as tracer:
        try:
            model(torch.randn(2, 4))
        except KeyboardInterrupt:
            pass
    assert tracer.trace.raised_instead() is None
    assert "from it" not in table.render_text(tracer.trace, width=None)


def test_a_message_written_from_its_second_line_fills_the_cell_from_there():
    class Check(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise ValueError("\nexpected (B, 16)\ngot (2, 4)")

    with pytest.raises(shapetrace.TraceFailed) as failed:
        shapetrace.trace(nn.Sequential(Check()), torch.randn(2, 4))
    row = next(line for line in table.render_text(failed.value.trace, width=None).splitlines() if "Check" in line)
    assert "✗ ValueError: expected (B, 16) …" in row


def test_the_error_blocks_later_lines_stay_indented_under_the_first():
    class Check(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise ValueError("shape mismatch\nexpected (B, 16)")

    with pytest.raises(shapetrace.TraceFailed) as failed:
        shapetrace.trace(nn.Sequential(Check()), torch.randn(2, 4))
    assert "  error: ValueError: shape mismatch\n    expected (B, 16)" in str(failed.value)


class FastPathFallback(nn.Module):
    """Tries a fast path whose Linear expects the wrong width, catches its error and takes the slow path: the
    forward succeeds, and ``fast`` raised what it caught."""

    def __init__(self, slow_width: int = 4) -> None:
        super().__init__()
        self.fast = nn.Linear(3, 2)
        self.slow = nn.Linear(slow_width, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        try:
            return self.fast(x)
        except RuntimeError:
            return self.slow(x)


CAUGHT_NOTE = ("fast (Linear) raised, and the forward caught it and went on: RuntimeError: mat1 and mat2 shapes "
               "cannot be multiplied (2x4 and 3x2)")


def _row_of(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if line.split()[:1] == [name])


def test_a_call_whose_exception_the_forward_caught_reads_caught_with_its_message_in_a_note():
    text = table.render_text(shapetrace.trace(FastPathFallback(), torch.randn(2, 4)), width=None)
    assert _row_of(text, "fast").split()[2:4] == ["(2,4)", "(caught)"]
    assert "(raised)" not in text and "✗" not in text  # the forward did not fail
    assert CAUGHT_NOTE in text.splitlines()


def test_a_caught_call_in_html_is_not_styled_as_the_failure_and_its_note_gives_the_message():
    html = table.render_html(shapetrace.trace(FastPathFallback(), torch.randn(2, 4)))
    assert html.count('<tr class="caught">') == 1 and 'class="raised"' not in html and 'class="failed"' not in html
    assert "(caught)" in html and f"<li>{CAUGHT_NOTE}</li>" in html
    assert not [line for line in CSS.splitlines() if "tr.caught" in line and "background" in line]  # no red tint


def test_the_lines_view_says_caught_without_the_failure_mark_and_notes_the_message():
    view = shapetrace.trace(FastPathFallback(), torch.randn(2, 4), lines=True).lines()
    text = view.render("text")
    (row,) = [line for line in text.splitlines() if "self.fast(x)" in line]
    assert row.rpartition("│")[2].strip() == "fast Linear (caught)" and "✗" not in row.partition("│")[0]
    assert f"note: {CAUGHT_NOTE}" in text.splitlines()
    html = view.render("html")
    assert "<div>fast Linear (caught)</div>" in html and f"Note: {CAUGHT_NOTE}</p>" in html


def test_a_fallback_that_fails_too_keeps_the_failure_marks_and_says_nothing_is_caught():
    with pytest.raises(shapetrace.TraceFailed) as failed:  # slow fails in the except clause: fast's error is
        shapetrace.trace(FastPathFallback(slow_width=5), torch.randn(2, 4), lines=True)  # the failure, slow raises
    text = table.render_text(failed.value.trace, width=None)
    assert "✗ RuntimeError: mat1 and mat2 shapes cannot be multiplied (2x4 and 3x2)" in _row_of(text, "✗")
    assert "(raised)" in _row_of(text, "slow")
    assert "caught" not in text
    lines = failed.value.trace.lines().render("text")
    assert "fast Linear ✗ raised" in lines and "caught" not in lines


class NeedsFour(nn.Module):
    """Refuses any input without 4 features, always with the same message."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != 4:
            raise ValueError("need 4 features")
        return x * 2


class RetryFailsAgain(nn.Module):
    """Calls ``p`` on 3 features and catches its error, goes on, then calls ``p`` again on 2 features outside
    the try: the second call fails the forward with the same type and message as the first, caught one."""

    def __init__(self) -> None:
        super().__init__()
        self.p = NeedsFour()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        try:
            self.p(x[..., :3])
        except ValueError:
            pass
        return self.p(self.lin(x)[..., :2])


def test_a_later_failure_with_the_caught_calls_message_is_blamed_on_the_later_call():
    with pytest.raises(shapetrace.TraceFailed) as failed:
        shapetrace.trace(RetryFailsAgain(), torch.randn(2, 4))
    t = failed.value.trace
    assert t.failed_call is not None and t.failed_call.label == "p#1"
    assert [m.shape for _, m in iter_tensors(t.failed_call.inputs)] == [(2, 2)]
    text = table.render_text(t, width=None)
    assert _row_of(text, "p").split()[3:5] == ["(2,3)", "(caught)"]
    assert "✗ ValueError: need 4 features" in _row_of(text, "✗")
    assert _row_of(text, "✗").split()[1] == "p#1"
    assert "p (NeedsFour) raised, and the forward caught it and went on: ValueError: need 4 features" in text
    assert "input: x (2, 2) float32" in str(failed.value) and "(2, 3)" not in str(failed.value)


class _FastPathThenOwnCode(nn.Module):
    """Tries a submodule on the wrong shape, catches its error, then fails in its own code with the same message."""

    def __init__(self) -> None:
        super().__init__()
        self.fast = nn.Linear(4, 8)
        self.w = nn.Parameter(torch.randn(8, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        try:
            return self.fast(x)
        except RuntimeError:
            pass
        return nn.functional.linear(x, self.w)


def test_own_code_failing_with_the_message_of_a_caught_child_is_the_failure_not_the_child():
    model = nn.Sequential(nn.Linear(8, 8), _FastPathThenOwnCode())
    with pytest.raises(shapetrace.TraceFailed) as failed:
        shapetrace.trace(model, torch.randn(2, 8))
    trace = failed.value.trace
    assert trace.calls[trace.failure.call].module == "1"


class _Reshapes(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(5, 7)


def test_a_trace_inside_a_tracer_block_blames_the_layer_that_failed_in_both():
    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.ReLU(), _Reshapes()))
    with shapetrace.Tracer(model) as outer, pytest.raises(shapetrace.TraceFailed) as inner:
        shapetrace.trace(model, torch.randn(3, 4))
    for trace in (inner.value.trace, outer.trace):
        assert trace.calls[trace.failure.call].module == "1.1"


def test_the_exception_given_back_carries_no_mark_of_the_trace():
    with pytest.raises(shapetrace.TraceFailed) as failed:
        shapetrace.trace(nn.Sequential(nn.Linear(4, 4), _Reshapes()), torch.randn(3, 4))
    assert vars(failed.value.__cause__) == {}


class _RetryFromNone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fast = nn.Linear(4, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        try:
            return self.fast(x)
        except RuntimeError:
            raise ValueError("no path fits this input") from None


def test_an_error_raised_from_none_is_a_new_failure_not_the_caught_one():
    with pytest.raises(shapetrace.TraceFailed) as failed:
        shapetrace.trace(nn.Sequential(_RetryFromNone()), torch.randn(2, 8))
    trace = failed.value.trace
    assert trace.calls[trace.failure.call].module == "0" and trace.failure.type == "ValueError"
