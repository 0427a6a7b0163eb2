"""Traces of one model in several threads: they run one after the other, so each puts the model back as it
found it; traces of different models still run at once, and a trace inside a trace of the same model (one
thread) still works."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

import shapetrace


class _MeetsTheOtherThread(nn.Module):
    """In the thread named ``first``, waits (up to ``wait`` seconds) for the thread named ``second`` to be inside
    a forward too: two traces in the two threads overlap if nothing keeps them apart."""

    def __init__(self, wait: float = 0.5) -> None:
        super().__init__()
        self.wait = wait
        self.first_inside, self.second_inside = threading.Event(), threading.Event()

    def forward(self, x):
        if threading.current_thread().name == "first":
            self.first_inside.set()
            self.second_inside.wait(self.wait)
        else:
            self.second_inside.set()
        return x


def _in_thread(name: str, work) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as e:  # noqa: BLE001 - reported by the test, in its own thread
            errors.append(e)

    thread = threading.Thread(target=run, name=name)
    thread.start()
    return thread, errors


def test_two_traces_of_one_model_in_two_threads_leave_it_in_eval_with_its_statistics_untouched():
    meet = _MeetsTheOtherThread()
    model = nn.Sequential(meet, nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Dropout(0.2)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    versions = [b._version for b in model.buffers()]
    first, errors_1 = _in_thread("first", lambda: shapetrace.trace(model, torch.randn(16, 8) + 3, train=True))
    meet.first_inside.wait(5)  # the first trace is inside its forward, its model in training mode
    second, errors_2 = _in_thread("second", lambda: shapetrace.trace(model, torch.randn(16, 8) - 3, train=True))
    first.join(10)
    second.join(10)
    assert not errors_1 and not errors_2
    assert [m.training for m in model.modules()] == [False] * 5
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert [b._version for b in model.buffers()] == versions


def test_a_trace_of_the_model_in_another_thread_waits_for_the_tracer_block_to_end():
    model, x = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).eval(), torch.randn(3, 4)
    counts: list[int] = []
    with shapetrace.Tracer(model, train=True) as t:
        other, errors = _in_thread("other", lambda: counts.append(len(shapetrace.trace(model, x).calls)))
        other.join(0.3)
        assert other.is_alive() and counts == []  # waiting for this trace to put the model back
        model(x)
    other.join(10)
    assert not errors and counts == [3] and len(t.trace.calls) == 3
    assert not model.training


def test_traces_of_different_models_run_at_once_in_two_threads():
    model, other_model, x = nn.Linear(4, 4), nn.Linear(4, 4), torch.randn(3, 4)
    counts: list[int] = []
    with shapetrace.Tracer(model) as t:
        other, errors = _in_thread("other", lambda: counts.append(len(shapetrace.trace(other_model, x).calls)))
        other.join(10)
        assert not other.is_alive() and not errors and counts == [1]
        model(x)
    assert len(t.trace.calls) == 1


def test_a_trace_inside_a_trace_of_the_same_model_in_one_thread_still_runs():
    model, x = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).eval(), torch.randn(3, 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with shapetrace.Tracer(model, train=True) as outer:
        inner = shapetrace.trace(model, x, train=True)
        model(x)
    assert len(inner.calls) == 3 and len(outer.trace.calls) == 6  # the outer block saw the inner forward too
    assert not model.training
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


class _RaisesOnce(nn.Module):
    def __init__(self, error: type[BaseException]) -> None:
        super().__init__()
        self.error: type[BaseException] | None = error

    def forward(self, x):
        error, self.error = self.error, None
        if error is not None:
            raise error("stopped")
        return x


@pytest.mark.parametrize("error", [ValueError, KeyboardInterrupt])
def test_a_trace_that_raised_lets_another_threads_trace_of_the_model_run(error):
    model = nn.Sequential(nn.Linear(4, 4), _RaisesOnce(error))
    with pytest.raises(shapetrace.TraceFailed if error is ValueError else error):
        shapetrace.trace(model, torch.randn(3, 4))
    counts: list[int] = []
    other, errors = _in_thread("other", lambda: counts.append(len(shapetrace.trace(model, torch.randn(3, 4)).calls)))
    other.join(10)
    assert not other.is_alive() and not errors and counts == [3]


def test_a_trace_kept_waiting_for_another_threads_trace_of_the_model_warns_naming_that_thread():
    from shapetrace.tracer.model_lock import model_lock

    model = nn.Linear(4, 2)
    lock = model_lock(model)
    held, done = threading.Event(), threading.Event()

    def holder() -> None:
        lock.acquire()
        held.set()
        done.wait(10)
        lock.release()

    other = threading.Thread(target=holder, name="long-trace")
    other.start()
    held.wait(10)
    threading.Timer(0.5, done.set).start()  # the other trace ends half a second later
    with pytest.warns(shapetrace.ShapetraceWarning, match="in thread 'long-trace'"):
        lock.acquire(patience_s=0.1)
    lock.release()
    other.join(10)


def test_release_after_entering_lets_another_threads_trace_of_the_model_run():
    model, x = nn.Linear(2, 2), torch.zeros(1, 2)
    tracer = shapetrace.Tracer(model)
    tracer.__enter__()
    model(x)
    tracer.release()  # never left: release undoes the trace, the model's lock included
    counts: list[int] = []
    other, errors = _in_thread("other", lambda: counts.append(len(shapetrace.trace(model, x).calls)))
    other.join(10)
    assert not other.is_alive() and not errors and counts == [1]


class _EndsAfterTheOtherThread(nn.Module):
    """In the thread named ``first``, waits (up to 5 s) for the thread named ``second`` to be inside a forward;
    in ``second``, waits (up to 5 s) for ``first_done``: two traces overlapping, the second ending last. (With
    the traces taking turns, ``first`` waits its 5 s: ``second`` cannot start before it ends.)"""

    def __init__(self) -> None:
        super().__init__()
        self.first_inside, self.second_inside, self.first_done = threading.Event(), threading.Event(), threading.Event()

    def forward(self, x):
        if threading.current_thread().name == "first":
            self.first_inside.set()
            self.second_inside.wait(5)
        else:
            self.second_inside.set()
            self.first_done.wait(5)
        return x


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn, self.meet = nn.BatchNorm1d(4), _EndsAfterTheOtherThread()

    def forward(self, x):
        return self.meet(self.bn(x))


def test_a_trace_of_a_submodule_in_another_thread_waits_for_the_trace_of_the_model():
    model = nn.Sequential(nn.Identity(), _Block()).eval()
    meet, before = model[1].meet, model[1].bn.running_mean.clone()

    def trace_the_model() -> None:
        shapetrace.trace(model, torch.randn(8, 4) + 3, train=True)
        meet.first_done.set()

    first, errors_1 = _in_thread("first", trace_the_model)
    meet.first_inside.wait(5)  # the trace of the model is inside model[1], in training mode
    second, errors_2 = _in_thread("second", lambda: shapetrace.trace(model[1], torch.randn(8, 4) - 3, train=True))
    first.join(20)
    second.join(20)
    assert not errors_1 and not errors_2
    assert not any(m.training for m in model.modules())
    assert torch.equal(model[1].bn.running_mean, before)


def test_traces_of_two_submodules_sharing_none_run_at_once_in_two_threads():
    model, x = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)), torch.randn(3, 4)
    counts: list[int] = []
    with shapetrace.Tracer(model[0]) as t:
        other, errors = _in_thread("other", lambda: counts.append(len(shapetrace.trace(model[1], x).calls)))
        other.join(10)
        assert not other.is_alive() and not errors and counts == [1]
        model[0](x)
    assert len(t.trace.calls) == 1


def test_two_asyncio_tasks_tracing_one_model_across_an_await_are_refused_not_left_to_change_it():
    import asyncio

    from shapetrace.tracer.model_lock import ModelBusy

    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).train()
    x = torch.randn(3, 4)

    async def serve(entered: asyncio.Event, leave: asyncio.Event) -> None:
        with shapetrace.Tracer(model, train=False):
            entered.set()
            await leave.wait()
            model(x)

    async def both() -> BaseException | None:
        first_in, first_out, second_in = asyncio.Event(), asyncio.Event(), asyncio.Event()
        first = asyncio.create_task(serve(first_in, first_out))
        await first_in.wait()
        second = asyncio.create_task(serve(second_in, asyncio.Event()))
        refused = await asyncio.gather(second, return_exceptions=True)
        first_out.set()
        await first
        return refused[0]

    done: dict[str, object] = {}
    runner = threading.Thread(target=lambda: done.setdefault("refused", asyncio.run(both())))
    runner.start()
    runner.join(60)
    assert isinstance(done["refused"], ModelBusy)
    assert model.training and all(m.training for m in model.modules())  # as it was: train mode
