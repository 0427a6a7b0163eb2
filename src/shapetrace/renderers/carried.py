"""When a layer's new output shapes can follow from its new input shapes alone (``shapetrace diff``'s
"carried"), and when they show a change of the layer's own.

A diff sees only shapes, so the rule is about shapes, and it errs on the side of showing a change: an output
dimension that differs must differ *like* some input dimension. It does when

- the same axis of an input tensor of the same rank differs too (a convolution, a pooling or a dropout passing
  a wider or taller tensor along: its arithmetic may turn 32 → 64 into 15 → 31, still the same axis), or
- it changes by the same sizes (``16 → 24``) or the same factor as an input dimension or a whole input
  tensor's element count (a permute moves a changed axis; a flatten multiplies the changed sizes into one).

And an output dtype may differ only where an input dtype differs. A pooling whose window changed while its
input only grew channels (``(2,16,32,32) → (2,16,16,16)`` against ``(2,24,32,32) → (2,24,8,8)``) fails the
rule on the spatial axes: those did not differ on the input side, so the layer itself changed. A rule that
says "carried" wrongly would hide a change; one that says "changed" wrongly shows one layer too many, with
its input beside its output, which a reader can judge.
"""

from __future__ import annotations

from fractions import Fraction
from math import prod
from typing import Any

from ..tracer.records import TensorMeta, iter_tensors

__all__ = ["follows_from_input"]


def _metas(value: Any) -> list[TensorMeta]:
    return [m for _, m in iter_tensors(value)]


class _InputChanges:
    """How the input side changed: the (rank, axis) pairs that differ, the (A, B) sizes they differ by, and
    the factors (B / A) of each differing dimension and of each differing tensor's element count."""

    def __init__(self, ia: list[TensorMeta], ib: list[TensorMeta]) -> None:
        self.axes: set[tuple[int, int]] = set()
        self.sizes: set[tuple[int, int]] = set()
        self.factors: set[Fraction] = set()
        for x, y in zip(ia, ib):
            if x.shape == y.shape:
                continue
            if prod(x.shape):
                self.factors.add(Fraction(prod(y.shape), prod(x.shape)))
            if len(x.shape) == len(y.shape):
                for axis, (p, q) in enumerate(zip(x.shape, y.shape)):
                    if p != q:
                        self.axes.add((len(x.shape), axis))
                        self.sizes.add((p, q))
                        if p:
                            self.factors.add(Fraction(q, p))

    def explain(self, x: TensorMeta, y: TensorMeta) -> bool:
        """Whether output ``x`` (A) turning into ``y`` (B) differs only like the inputs did."""
        if len(x.shape) != len(y.shape):  # a reshape: only the element count can be compared
            return bool(prod(x.shape)) and Fraction(prod(y.shape), prod(x.shape)) in self.factors
        return all(p == q or (len(x.shape), axis) in self.axes or (p, q) in self.sizes
                   or (p != 0 and Fraction(q, p) in self.factors)
                   for axis, (p, q) in enumerate(zip(x.shape, y.shape)))


def follows_from_input(in_a: Any, in_b: Any, out_a: Any, out_b: Any) -> bool:
    """Whether the outputs' difference (``out_a`` against ``out_b``) can follow from the inputs' (``in_a``
    against ``in_b``), by the rule in this module's docstring."""
    ia, ib, oa, ob = _metas(in_a), _metas(in_b), _metas(out_a), _metas(out_b)
    if len(oa) != len(ob):  # a split into more pieces: only a changed input can explain it
        return len(ia) != len(ib) or any(x.shape != y.shape for x, y in zip(ia, ib))
    in_dtypes = len(ia) != len(ib) or any(x.dtype != y.dtype for x, y in zip(ia, ib))
    changes = _InputChanges(ia, ib)
    return all((x.dtype == y.dtype or in_dtypes) and (x.shape == y.shape or changes.explain(x, y))
               for x, y in zip(oa, ob))
