"""A trace silences one torch warning with one entry in Python's warning filters, and removes just that entry:
the filters and the ``showwarning`` that the code in a ``Tracer`` block sets are left as it set them."""

from __future__ import annotations

import threading
import warnings

import torch
from torch import nn

import shapetrace


def test_a_warning_filter_set_inside_a_tracer_block_is_kept_after_it():
    model = nn.Linear(2, 2)
    with warnings.catch_warnings():  # this test's own sandbox
        with shapetrace.Tracer(model):
            model(torch.randn(1, 2))
            warnings.filterwarnings("error", category=DeprecationWarning)
        assert warnings.filters[0][:3] == ("error", None, DeprecationWarning)


def test_a_showwarning_replaced_inside_a_tracer_block_is_kept_after_it():
    model = nn.Linear(2, 2)

    def show(*args, **kwargs) -> None:
        pass

    with warnings.catch_warnings():
        with shapetrace.Tracer(model):
            model(torch.randn(1, 2))
            warnings.showwarning = show  # what logging.captureWarnings(True) does
        assert warnings.showwarning is show


def test_a_trace_leaves_the_warning_filters_as_it_found_them():
    model = nn.Linear(2, 2)
    with warnings.catch_warnings():
        before = list(warnings.filters)
        shapetrace.trace(model, torch.randn(1, 2))
        assert warnings.filters == before


def test_two_traces_in_two_threads_ending_out_of_order_leave_no_filter_behind():
    a_inside, b_inside, a_done = threading.Event(), threading.Event(), threading.Event()

    class Meet(nn.Module):
        def forward(self, x):
            if threading.current_thread().name == "a":
                a_inside.set()
                b_inside.wait(5)
            else:
                b_inside.set()
                a_done.wait(5)
            return x

    def a() -> None:
        shapetrace.trace(Meet(), torch.zeros(1))
        a_done.set()

    def b() -> None:
        a_inside.wait(5)
        shapetrace.trace(Meet(), torch.zeros(1))

    with warnings.catch_warnings():
        before = list(warnings.filters)
        threads = [threading.Thread(target=a, name="a"), threading.Thread(target=b, name="b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert warnings.filters == before
