"""The modules view of a module called from several modules (one block shared by two others): listed under
their common caller with a note saying who calls it, never nested under its first caller, whose time it is
not all part of."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

import shapetrace
from shapetrace.renderers.rows import table_rows


class Shared(nn.Module):
    def __init__(self, seconds: float = 0.0) -> None:
        super().__init__()
        self.seconds = seconds
        self.lin = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return self.lin(x)


class Block(nn.Module):
    def __init__(self, shared: Shared) -> None:
        super().__init__()
        self.shared = shared
        self.after = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.after(self.shared(x))


class TwoBlocks(nn.Module):
    def __init__(self, seconds: float = 0.0) -> None:
        super().__init__()
        shared = Shared(seconds)
        self.a, self.b = Block(shared), Block(shared)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x))


def _tree(rows) -> list[tuple[int, str]]:
    return [(r.depth, r.name) for r in rows]


def test_a_module_called_from_two_blocks_is_listed_beside_them_with_what_it_calls():
    trace = shapetrace.trace(TwoBlocks(), torch.randn(3))
    assert _tree(table_rows(trace, view="modules")) == [
        (0, "(root)"), (1, "a"), (2, "a.after"), (1, "a.shared"), (2, "a.shared.lin"), (1, "b"), (2, "b.after")]


def test_the_calls_view_still_nests_each_call_under_its_caller():
    trace = shapetrace.trace(TwoBlocks(), torch.randn(3))
    rows = [(r.depth, r.name) for r in table_rows(trace, view="calls")]
    assert (2, "a.shared") in rows and (2, "b.shared#1") in rows


def test_the_note_names_every_caller():
    text = str(shapetrace.trace(TwoBlocks(), torch.randn(3)).table(view="modules"))
    assert "a.shared is called from a, b: listed under their common caller, not nested under a" in text


def test_a_module_called_from_one_block_only_stays_nested_with_no_note():
    trace = shapetrace.trace(Block(Shared()), torch.randn(3))
    assert _tree(table_rows(trace, view="modules")) == [(0, "(root)"), (1, "shared"), (2, "shared.lin"), (1, "after")]
    assert "is called from" not in str(trace.table(view="modules"))


@pytest.mark.parametrize("model", ["TwoBlocks", "DeepThenShallow"])
def test_no_row_of_a_profile_is_nested_under_a_row_with_less_time(model):
    trace = shapetrace.profile(globals()[model](0.01), torch.randn(3), device="cpu", warmup=0, repeat=1)
    rows = table_rows(trace, view="modules")
    parents: list = []
    for r in rows:
        del parents[r.depth:]
        if parents:
            assert r.timing.total_ms <= parents[-1].timing.total_ms, (r.name, parents[-1].name)
        parents.append(r)


# ---- the module tree: shared modules inside shared modules, calls at several depths, recursion -------------
class Wrap(nn.Module):
    """Calls the module it is given, then a Tanh of its own."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.m = inner
        self.k = nn.Tanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.k(self.m(x))


class LinearThenRelu(nn.Module):
    def __init__(self, lin: nn.Module) -> None:
        super().__init__()
        self.y = lin
        self.z = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.z(self.y(x))


class NestedShared(nn.Module):
    """``a.m`` is shared by ``a`` and ``b``; the Linear inside it is also called by ``c``."""

    def __init__(self) -> None:
        super().__init__()
        lin = nn.Linear(3, 3)
        block = LinearThenRelu(lin)
        self.a, self.b, self.c = Wrap(block), Wrap(block), Wrap(lin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(self.b(self.a(x)))


class Deep(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = Wrap(inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


class DeepThenShallow(nn.Module):
    """One module called first three levels down (``a.inner.m``), then from ``b`` and ``c`` two levels down."""

    def __init__(self, seconds: float = 0.0) -> None:
        super().__init__()
        shared = Block(Shared(seconds))
        self.a, self.b, self.c = Deep(shared), Wrap(shared), Wrap(shared)
        self.tail = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.c(self.b(self.a(x))))


class CallsItsOwnChildsModule(nn.Module):
    """Calls ``lin`` directly and through its child ``q``, which holds the same Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.q = Block(self.lin)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.q(self.lin(x))


class ParentAndChild(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.p = CallsItsOwnChildsModule()
        self.out = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.p(x))


class Recursive(nn.Module):
    """Calls itself ``levels`` times, each level through a Linear."""

    def __init__(self, levels: int = 3) -> None:
        super().__init__()
        self.levels = levels
        self.lin = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor, level: int = 0) -> torch.Tensor:
        x = self.lin(x)
        return self(x, level + 1) if level + 1 < self.levels else x


class RecursiveShared(nn.Module):
    """A recursive module called from two blocks."""

    def __init__(self) -> None:
        super().__init__()
        rec = Recursive()
        self.a, self.b = Wrap(rec), Wrap(rec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x))


def _varied_models() -> list[nn.Module]:
    return [TwoBlocks(), NestedShared(), DeepThenShallow(), ParentAndChild(), Recursive(), RecursiveShared(),
            Block(Shared()), nn.Sequential(nn.Linear(3, 3), nn.Sequential(nn.ReLU(), nn.Linear(3, 3)))]


def test_a_module_called_at_several_depths_is_moved_with_everything_it_calls():
    trace = shapetrace.trace(DeepThenShallow(), torch.randn(3))
    assert _tree(table_rows(trace, view="modules")) == [
        (0, "(root)"), (1, "a"), (2, "a.inner"), (3, "a.inner.k"),
        (1, "a.inner.m"), (2, "a.inner.m.shared"), (3, "a.inner.m.shared.lin"), (2, "a.inner.m.after"),
        (1, "b"), (2, "b.k"), (1, "c"), (2, "c.k"), (1, "tail")]


def test_a_shared_module_inside_a_shared_module_goes_to_the_common_caller_of_its_own_calls():
    trace = shapetrace.trace(NestedShared(), torch.randn(3))
    assert _tree(table_rows(trace, view="modules")) == [
        (0, "(root)"), (1, "a"), (2, "a.k"), (1, "a.m"), (2, "a.m.z"), (1, "a.m.y"),
        (1, "b"), (2, "b.k"), (1, "c"), (2, "c.k")]
    text = str(trace.table(view="modules"))
    assert "a.m.y is called from a.m, c: listed under their common caller, not nested under a.m" in text


def test_a_module_called_by_a_module_and_by_its_child_stays_under_the_module_and_the_note_says_so():
    trace = shapetrace.trace(ParentAndChild(), torch.randn(3))
    assert _tree(table_rows(trace, view="modules")) == [
        (0, "(root)"), (1, "p"), (2, "p.lin"), (2, "p.q"), (3, "p.q.after"), (1, "out")]
    assert "p.lin is called from p, p.q: listed under p, which makes or encloses every call" in str(
        trace.table(view="modules"))


def test_a_module_that_calls_itself_is_one_row_with_what_it_calls_under_it_and_no_note():
    trace = shapetrace.trace(Recursive(), torch.randn(3))
    rows = table_rows(trace, view="modules")
    assert [(r.depth, r.name, r.calls) for r in rows] == [(0, "(root)", 3), (1, "lin", 3)]
    assert "is called from" not in str(trace.table(view="modules"))


def test_a_shared_module_folded_by_depth_is_a_row_at_that_depth_holding_what_it_calls():
    trace = shapetrace.trace(DeepThenShallow(), torch.randn(3))
    rows = table_rows(trace, view="modules", depth=1)
    assert [(r.depth, r.name, r.folded) for r in rows] == [
        (0, "(root)", 0), (1, "a", 2), (1, "a.inner.m", 9), (1, "b", 1), (1, "c", 1), (1, "tail", 0)]


def _names(row) -> set[str]:
    """The qualified names of a row's module (the root's is ``""``)."""
    return {"" if row.name == "(root)" else row.name, *row.aliases}


def _encloses(trace, outer_names: set[str], call) -> bool:
    p = call.parent
    while p is not None:
        if trace.calls[p].module in outer_names or outer_names & set(trace.calls[p].aliases):
            return True
        p = trace.calls[p].parent
    return False


def test_every_row_is_listed_under_a_module_that_encloses_all_its_calls_for_varied_models():
    for model in _varied_models():
        trace = shapetrace.trace(model, torch.randn(3))
        rows = table_rows(trace, view="modules")
        text = str(trace.table(view="modules"))
        name = type(model).__name__
        stack: list = []
        for i, r in enumerate(rows):
            assert r.depth <= len(stack) and (r.depth > 0) == (i > 0), (name, r.name)  # its parent row is above
            del stack[r.depth:]
            calls = [c for c in trace.calls if c.module in _names(r)]
            if stack:
                parent = stack[-1]
                outer = [c for c in calls if not _encloses(trace, _names(r), c)]  # its calls not nested in its own
                assert outer and all(_encloses(trace, _names(parent), c) for c in outer), (name, r.name, parent.name)
                own_parent = r.name.rsplit(".", 1)[0] if "." in r.name else "(root)"
                assert own_parent == parent.name or f"{r.name} is called from" in text, (name, r.name)
            stack.append(r)
        # every module once, every call counted once, with or without folding
        assert sorted(r.name for r in rows) == sorted({c.module or "(root)" for c in trace.calls if c.call_index == 0})
        assert sum(r.calls for r in rows) == len(trace.calls)
        for depth in (0, 1, 2):
            folded = table_rows(trace, view="modules", depth=depth)
            assert sum(r.calls + r.folded for r in folded) == len(trace.calls), (name, depth)
