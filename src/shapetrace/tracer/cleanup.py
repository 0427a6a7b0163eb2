"""``run_all``: run every step of a cleanup, even when one raises, and say what went wrong first.

A trace's teardown has several independent steps (remove the hooks, stop the probes, put back the recursion
limit, the grad mode, the buffers...). Written one after the other, an exception in one — a
``KeyboardInterrupt`` arriving in the middle of the teardown, say — skips all that follow it, and global state
(hooks on every module of the process, grad mode off) stays changed for good. ``run_all`` runs each step
whatever the ones before did, and hands back the first exception for the caller to raise once all ran
(``run_all_then_raise`` raises it).

An interrupt can still land on the first lines of a teardown, before any step ran; the callers are written so
that their steps can run again (what is done is not redone), and ``Tracer.release`` runs them all again for
the ``with`` block's own end (``docs/design-notes.md``, "Cleanup, interrupted").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

__all__ = ["run_all", "run_all_then_raise"]


def run_all(steps: Iterable[Callable[[], object]]) -> BaseException | None:
    """Call each of ``steps`` in order, each even if one before it raised; the first exception raised, if any.

    The steps are taken from a list popped inside the ``try``, and the loop starts again after an exception:
    an interrupt between two steps, or inside one, skips no later step."""
    todo = list(steps)
    todo.reverse()
    errors: list[BaseException] = []
    while todo:
        try:
            while todo:
                todo.pop()()
        except BaseException as e:  # noqa: BLE001 - the remaining steps run; the caller raises it
            errors.append(e)
    return errors[0] if errors else None


def run_all_then_raise(steps: Iterable[Callable[[], object]]) -> None:
    """``run_all``, then raise the first exception a step raised, if any: what a teardown usually wants."""
    error = run_all(steps)
    if error is not None:
        raise error
