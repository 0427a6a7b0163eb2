"""Exceptions the tracer's modules raise to users, in a module of their own so any of them can raise one.

``capture`` re-exports them (``shapetrace.UnsupportedModel``); ``placement`` raises ``UnsupportedModel``
for data that is not there (weights or inputs on ``meta`` asked to run on a real device).
"""

from __future__ import annotations

__all__ = ["ForwardInterrupted", "UnsupportedModel"]


class UnsupportedModel(TypeError):
    """What was handed to the tracer cannot be traced as it is; the message says what to pass instead."""


class ForwardInterrupted(KeyboardInterrupt):
    """A ``KeyboardInterrupt`` (Ctrl-C, or raised by the model's own code) that stopped one of ``profile()``'s
    forwards, saying which: ``run`` of ``of`` (1-based, warm-ups first; ``0``: the shape pass) and ``plain``
    (a forward run without hooks), ``warmup`` (how many of the ``of`` runs were warm-ups). Still a ``KeyboardInterrupt``: whoever stops on those stops on it; the
    interrupt itself is its ``__cause__``."""

    def __init__(self, run: int, of: int, plain: bool = False, warmup: int | None = None) -> None:
        super().__init__(f"interrupted in run {run} of {of}")
        self.run, self.of, self.plain, self.warmup = run, of, plain, warmup
