"""profile() on forwards whose timed runs differ from the shape pass: a branch only the timed runs take (named
where its time went, not listed as never called), and children run at once in threads (self times from the
call tree, not from how the spans nest)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn

import shapetrace
from shapetrace.renderers.units import note_text
from shapetrace.tracer.intervals import nested_self_times, tree_self_times
from shapetrace.tracer.records import load


class Sleeps(nn.Module):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return x + 1


class SlowEverySecondForward(nn.Module):
    """Takes its ``slow`` branch on every second forward: never in the shape pass, the first."""

    def __init__(self) -> None:
        super().__init__()
        self.fast, self.slow, self.n = Sleeps(0.001), Sleeps(0.003), 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.n += 1
        return self.slow(x) if self.n % 2 == 0 else self.fast(x)


def _profiled_branch():
    return shapetrace.profile(SlowEverySecondForward(), torch.randn(2), device="cpu", warmup=0, repeat=3)


def test_a_layer_only_the_timed_runs_called_is_named_on_the_call_whose_self_time_holds_it():
    root = _profiled_branch().calls[0]
    note = next(n for n in root.notes if n.code == "untraced-calls")
    assert note.text == "slow"
    assert "call(s) of slow inside it ran in the timed runs" in note_text(note)


def test_a_layer_only_the_timed_runs_called_is_not_listed_as_never_called():
    trace = _profiled_branch()
    assert trace.uncalled == []
    assert trace.meta["called_only_in_timed_runs"] == ["slow"]
    assert "never called" not in str(trace.table())


def test_the_named_layer_survives_a_saved_profile(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(_profiled_branch().to_json())
    note = next(n for n in load(path).calls[0].notes if n.code == "untraced-calls")
    assert note.text == "slow"


class TwoBranchesInThreads(nn.Module):
    """Runs ``left`` and ``right`` at the same time in a thread pool, as pipeline code does."""

    def __init__(self) -> None:
        super().__init__()
        self.left, self.right = Sleeps(0.02), Sleeps(0.02)
        self.pool = ThreadPoolExecutor(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.pool.submit(self.left, x), self.pool.submit(self.right, x)
        return a.result() + b.result()


def test_children_run_at_once_in_threads_keep_their_own_time_as_self_time():
    trace = shapetrace.profile(TwoBranchesInThreads(), torch.randn(3), device="cpu", warmup=1, repeat=3)
    root, left, right = trace.calls
    for branch in (left, right):  # a sleep with no children: all of it is its own
        assert branch.timing["self_ms"] == branch.timing["total_ms"]
        assert branch.timing["self_ms"] >= 15
    assert 0 <= root.timing["self_ms"] < root.timing["total_ms"] / 2  # the overlapping children taken out once
    assert [n.code for n in root.notes] == ["children-overlapped"]
    assert trace.meta["calls_with_overlapping_children"] == 1


def test_self_times_from_the_call_tree_equal_nested_spans_for_children_one_after_another():
    spans = [("root", 0.0, 10.0), ("a", 1.0, 4.0), ("a.x", 1.5, 2.0), ("b", 4.0, 9.5)]
    parents = {"a": "root", "a.x": "a", "b": "root"}
    times, overlapped = tree_self_times(spans, parents)
    assert times == nested_self_times(spans)
    assert overlapped == set()


def test_a_span_inside_another_that_is_not_its_child_is_not_subtracted_from_it():
    spans = [("root", 0.0, 10.0), ("left", 1.0, 9.0), ("right", 2.0, 8.0)]
    times, overlapped = tree_self_times(spans, {"left": "root", "right": "root"})
    assert times == {"root": (10.0, 2.0), "left": (8.0, 8.0), "right": (6.0, 6.0)}
    assert overlapped == {"root"}
