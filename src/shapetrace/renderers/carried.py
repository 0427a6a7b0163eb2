"""When a layer's new output shapes can follow from its new input shapes alone (``shapetrace diff``'s
"carried"), and when they show a change of the layer's own.

A diff sees only shapes, so the rule is about shapes, and it errs on the side of showing a change. An output
tensor that differs follows from the inputs when

- each of its differing axes differs like the *same* axis of an input tensor of the same rank, in the same
  direction and by the same factor (``q / p == b / a``; a strided layer's rounding allowed: the floor or the
  ceiling of ``p · b / a``) or by the same sizes added (``q − p == b − a``: a window without padding). A
  convolution or a pooling passing a taller image along is carried; one whose stride or window changed is
  not (its output shrinks while its input grows, or shrinks by another factor), nor is a layer whose output
  axis changed where its input's did not (an ``Upsample`` whose factor changed, an ``AdaptiveAvgPool2d``
  whose output size changed, however the channels changed beside it); or
- the whole tensor is rearranged (a reshape, a permute, a flatten): its element count changes by the same
  factor as a whole input tensor's, and, at the same rank, every differing axis by the sizes or the factor
  of some differing input axis.

And an output dtype may differ only where an input dtype differs. A layer with parameters whose input and
output widths both changed needs no extra rule: with the same factor its parameter count would differ, and a
different parameter count is a change of its own (a ``Linear(16, 32)`` against a ``Linear(32, 16)`` has the
same count, and fails the rule: its input grew while its output shrank). A pooling whose window changed
while its input only grew channels (``(2,16,32,32) → (2,16,16,16)`` against ``(2,24,32,32) → (2,24,8,8)``)
fails the rule on the spatial axes: those did not differ on the input side. A rule that says "carried"
wrongly would hide a change; one that says "changed" wrongly shows one layer too many, with its input beside
its output, which a reader can judge.

The other way round: a windowed layer (a convolution or a pooling that is not adaptive: ``windowed``)
taking one tensor and returning one of the same rank whose output kept an axis (longer than 1) while the
same axis of its input changed by at least one stride (``MaxPool2d(2)`` on ``(1,3,32,32)`` against
``MaxPool2d(4)`` on ``(1,3,64,64)``, both ``(1,3,16,16)``) did not pass the change along: its window or
stride changed. The stride is estimated from the shapes alone as ``ceil(min(a, b) / c)`` (input sizes ``a``
and ``b``, kept output size ``c``): a strided layer rounds, so inputs less than a stride apart give the same
output (``Conv2d(stride=2)`` on 224 and 223, both 112; ``MaxPool2d(2, ceil_mode=True)`` on 31 and 32, both
16), and such a layer is carried. Any other layer may keep its output size by design (an adaptive pool, an
``Upsample(size=...)``, a container whose calls inside decide), so it is not judged so.
"""

from __future__ import annotations

import re
from fractions import Fraction
from math import prod
from typing import Any

from ..tracer.records import TensorMeta, iter_tensors

__all__ = ["follows_from_input", "windowed"]

# A convolution or pooling class by its name (``Conv2d``, ``ConvTranspose3d``, ``MaxPool1d``, ``LPPool2d``, and
# wrappers that say so: ``Conv2dSame``, ``StdConv2d``, ``MaxPool2dSame``); an adaptive pool is not one.
_WINDOWED = re.compile(r"(Conv(Transpose)?|Pool)[123]d")


def windowed(cls: str) -> bool:
    """Whether a layer class has a window or a stride, judged by its name (an allow-list): a convolution or a
    pooling of 1, 2 or 3 dimensions that is not adaptive. Only such a layer's output size follows its input's
    size, so only it shows a change of its own by keeping its output size while its input's changed."""
    return "Adaptive" not in cls and _WINDOWED.search(cls) is not None


def _metas(value: Any) -> list[TensorMeta]:
    return [m for _, m in iter_tensors(value)]


def _axis_follows(a: int, b: int, p: int, q: int) -> bool:
    """Whether an output axis going ``p → q`` follows from the same input axis going ``a → b`` through a layer
    that did not change: the same factor (``q / p == b / a``, a strided layer's rounding allowed: ``q`` is the
    floor or the ceiling of ``p · b / a``), or the same sizes added (``q − p == b − a``: a stride-1 window
    without padding). Either goes the same way as the input: a fixed layer never shrinks as its input grows."""
    if p == q:
        return True
    if a == b:
        return False
    if q - p == b - a:
        return True
    if not (a and p):
        return False
    exact = Fraction(p * b, a)
    return q in (exact.numerator // exact.denominator, -(-exact.numerator // exact.denominator))


def _count(m: TensorMeta) -> int:
    return prod(m.shape)


class _InputChanges:
    """How the input side changed: for each rank, the (A, B) sizes of every input tensor of that rank axis by
    axis; the (A, B) sizes of every input axis that differs; the factors (B / A) of each differing dimension
    and of each differing tensor's element count."""

    def __init__(self, ia: list[TensorMeta], ib: list[TensorMeta]) -> None:
        self.by_rank: dict[int, list[list[tuple[int, int]]]] = {}
        self.sizes: set[tuple[int, int]] = set()
        self.axis_factors: set[Fraction] = set()
        self.count_factors: set[Fraction] = set()
        for x, y in zip(ia, ib):
            if x.shape == y.shape:
                continue
            if _count(x):
                self.count_factors.add(Fraction(_count(y), _count(x)))
            if len(x.shape) == len(y.shape):
                self.by_rank.setdefault(len(x.shape), []).append(list(zip(x.shape, y.shape)))
                for p, q in zip(x.shape, y.shape):
                    if p != q:
                        self.sizes.add((p, q))
                        if p:
                            self.axis_factors.add(Fraction(q, p))

    def _rearranged(self, x: TensorMeta, y: TensorMeta) -> bool:
        """A reshape, permute or flatten: the same element count factor as a whole input tensor, and (at the
        same rank) every differing axis differs by the sizes or the factor of some differing input axis."""
        if not _count(x) or Fraction(_count(y), _count(x)) not in self.count_factors:
            return False
        return len(x.shape) != len(y.shape) or all(
            p == q or (p, q) in self.sizes or (p != 0 and Fraction(q, p) in self.axis_factors)
            for p, q in zip(x.shape, y.shape))

    def explain(self, x: TensorMeta, y: TensorMeta) -> bool:
        """Whether output ``x`` (A) turning into ``y`` (B) differs only like the inputs did: each differing
        axis like the same axis of an input of the same rank (``_axis_follows``), or the whole tensor
        rearranged (``_rearranged``)."""
        rank = len(x.shape)
        same_rank = self.by_rank.get(rank, [])
        if same_rank and all(p == q or any(_axis_follows(*t[axis], p, q) for t in same_rank)
                             for axis, (p, q) in enumerate(zip(x.shape, y.shape))):
            return True
        return self._rearranged(x, y)


def _kept_where_input_changed(ia: list[TensorMeta], ib: list[TensorMeta], oa: list[TensorMeta],
                              ob: list[TensorMeta]) -> bool:
    """Whether a layer taking one tensor and returning one of the same rank kept an output axis (longer than
    1) at its size ``c`` while the same axis of its input changed ``a → b`` by at least one stride (estimated
    as ``ceil(min(a, b) / c)``): a pooling whose window doubled on an image twice as tall, a convolution whose
    stride doubled. A fixed strided layer's output follows its input's size, rounded: inputs less than a
    stride apart may give the same output. A layer whose output changed on an axis where its input did not
    moves axes (a transpose), and is not judged so."""
    if not (len(ia) == len(ib) == len(oa) == len(ob) == 1):
        return False
    (x, y), (p, q) = (ia[0], ib[0]), (oa[0], ob[0])
    if not len(x.shape) == len(y.shape) == len(p.shape) == len(q.shape):
        return False
    axes = list(zip(x.shape, y.shape, p.shape, q.shape))
    if any(a == b and c != d for a, b, c, d in axes):  # an axis changed only on the output: axes moved
        return False
    return any(a != b and c == d and c > 1 and abs(a - b) >= -(-min(a, b) // c) for a, b, c, d in axes)


def follows_from_input(in_a: Any, in_b: Any, out_a: Any, out_b: Any, strided: bool = False) -> bool:
    """Whether the outputs' difference (``out_a`` against ``out_b``) can follow from the inputs' (``in_a``
    against ``in_b``), by the rule in this module's docstring. ``strided``: the layer is a convolution or a
    pooling that is not adaptive (``windowed``), whose output size follows its input's, so a one-tensor call
    that kept an output axis where its input's changed by a stride or more does not follow from it; any other
    layer (an adaptive pool, an ``Upsample(size=...)``, a container) may keep its output size by design."""
    ia, ib, oa, ob = _metas(in_a), _metas(in_b), _metas(out_a), _metas(out_b)
    if len(oa) != len(ob):  # a split into more pieces: only a changed input can explain it
        return len(ia) != len(ib) or any(x.shape != y.shape for x, y in zip(ia, ib))
    if strided and _kept_where_input_changed(ia, ib, oa, ob):
        return False
    in_dtypes = len(ia) != len(ib) or any(x.dtype != y.dtype for x, y in zip(ia, ib))
    changes = _InputChanges(ia, ib)
    return all((x.dtype == y.dtype or in_dtypes) and (x.shape == y.shape or changes.explain(x, y))
               for x, y in zip(oa, ob))
