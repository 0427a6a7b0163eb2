"""The sentences around a shape table: which uncalled modules a failed forward "did not reach", counts that
agree with their nouns, and an exception that says nothing written without a dangling colon."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import shapetrace
from shapetrace.renderers import table
from shapetrace.renderers.diff import diff_traces, render_trace_diff


class AttentionThenLinears(nn.Module):
    """``nn.MultiheadAttention`` never calls its ``out_proj`` module (it uses the weights functionally); with
    ``bad=True`` the layer after it expects the wrong width and fails."""

    def __init__(self, bad: bool = False) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
        self.ff = nn.Linear(16 if bad else 32, 32)
        self.out = nn.Linear(32, 2)

    def forward(self, x):
        y, _ = self.attn(x, x, x)
        return self.out(self.ff(y))


def failed_trace(model: nn.Module, *inputs: torch.Tensor):
    return shapetrace.trace(model.eval(), *inputs, strict=False)


def test_a_module_its_returned_parent_never_called_stays_never_called_after_a_later_failure():
    t = failed_trace(AttentionThenLinears(bad=True), torch.randn(2, 5, 32))
    for text in (table.render_text(t), table.render_markdown(t), table.render_html(t)):
        assert "never called in the forward: attn.out_proj" in text
        assert "not reached before the failure: out (Linear" in text
        assert "attn.out_proj" not in text.split("not reached before the failure")[1]


def test_a_forward_that_ran_through_lists_its_uncalled_modules_as_never_called():
    text = table.render_text(shapetrace.trace(AttentionThenLinears().eval(), torch.randn(2, 5, 32)))
    assert "never called in the forward: attn.out_proj" in text
    assert "not reached" not in text


class FailsAfterOneCall(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(8, 4)

    def forward(self, x):
        return self.b(self.a(x))


class FailsInItsOwnCode(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)

    def forward(self, x):
        raise ValueError()


def test_the_activations_total_says_one_call_in_the_singular():
    text = table.render_text(failed_trace(FailsAfterOneCall(), torch.randn(2, 4)))
    assert "outputs of the 1 call that returned: 1 tensor, each once" in text
    assert "1 calls" not in text


def test_the_activations_total_of_a_forward_where_no_call_returned_says_so():
    text = table.render_text(failed_trace(FailsInItsOwnCode(), torch.randn(2, 4)))
    assert "no call returned, so there are no outputs" in text
    assert "0 calls that returned" not in text


@pytest.mark.parametrize("render", [table.render_text, table.render_markdown, table.render_csv])
def test_an_exception_without_a_message_is_named_without_a_trailing_colon(render):
    t = failed_trace(FailsInItsOwnCode(), torch.randn(2, 4))
    assert t.calls[0].error == "ValueError"
    assert t.failure.text == "ValueError"
    text = render(t)
    assert "ValueError" in text
    assert "ValueError:" not in text


def test_the_failure_message_of_a_messageless_exception_has_no_trailing_colon():
    with pytest.raises(shapetrace.TraceFailed) as info:
        shapetrace.trace(FailsInItsOwnCode(), torch.randn(2, 4))
    assert "error: ValueError\n" in str(info.value) + "\n"
    assert "ValueError:" not in str(info.value)


def test_a_diff_of_one_call_traces_with_nothing_in_common_counts_one_call():
    a = shapetrace.trace(nn.Linear(4, 4), torch.randn(2, 4))
    b = shapetrace.trace(nn.ReLU(), torch.randn(2, 4))
    text = render_trace_diff(diff_traces(a, b))
    assert "A (Linear, 1 call) and B (ReLU, 1 call)" in text
