"""Exceptions the tracer's modules raise to users, in a module of their own so any of them can raise one.

``capture`` re-exports them (``shapetrace.UnsupportedModel``); ``placement`` raises ``UnsupportedModel``
for data that is not there (weights or inputs on ``meta`` asked to run on a real device).
"""

from __future__ import annotations

__all__ = ["UnsupportedModel"]


class UnsupportedModel(TypeError):
    """What was handed to the tracer cannot be traced as it is; the message says what to pass instead."""
