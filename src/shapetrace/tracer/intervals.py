"""Interval arithmetic behind the timings: self times of nested spans, kernels attributed to call ranges,
and the robust summaries over repeats. Plain functions of numbers, tested on synthetic data."""

from __future__ import annotations

import bisect
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``values`` with linear interpolation (numpy's default)."""
    xs = sorted(values)
    if not xs:
        return math.nan
    pos = (len(xs) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _nest(intervals: Sequence[tuple[Hashable, float, float]]) -> tuple[list[int], list[int | None]]:
    """Order intervals by (start, -end) and give each its innermost enclosing interval (an index)."""
    order = sorted(range(len(intervals)), key=lambda i: (intervals[i][1], -intervals[i][2], i))
    parents: list[int | None] = [None] * len(intervals)
    stack: list[int] = []
    for i in order:
        _, s, e = intervals[i]
        while stack and not (intervals[stack[-1]][1] <= s and e <= intervals[stack[-1]][2]):
            stack.pop()
        parents[i] = stack[-1] if stack else None
        stack.append(i)
    return order, parents


def nested_self_times(intervals: Sequence[tuple[Hashable, float, float]]) -> dict[Hashable, tuple[float, float]]:
    """``{key: (inclusive, self)}`` for nested ``(key, start, end)`` intervals on one clock.

    Self time is the inclusive time minus the inclusive times of the direct children, so the self times of
    all intervals add up exactly to the inclusive time of the outermost ones.
    """
    _, parents = _nest(intervals)
    out = {key: [e - s, e - s] for key, s, e in intervals}
    for i, p in enumerate(parents):
        if p is not None:
            out[intervals[p][0]][1] -= intervals[i][2] - intervals[i][1]
    return {k: (v[0], v[1]) for k, v in out.items()}


def tree_self_times(spans: Sequence[tuple[Hashable, float, float]], parents: dict[Hashable, Hashable | None]
                    ) -> tuple[dict[Hashable, tuple[float, float]], set[Hashable]]:
    """``{key: (inclusive, self)}`` for ``(key, start, end)`` spans of calls whose tree is known (``parents``:
    each key's parent key, ``None`` or absent at the top), and the keys whose children overlapped in time.

    Self time is the inclusive time minus the time covered by the call's own children in the tree (never by
    another call whose span happens to lie inside it, as two calls run at once in two threads do). Children
    one after another, as in an ordinary forward, are subtracted one by one, in start order, as
    ``nested_self_times`` does, so the self times add up exactly to the outermost calls' time; children that
    ran at the same time (a thread pool) are subtracted once for the time they covered together, so a self time
    is never negative, and then the self times of the tree add up to more than its time: such parents are
    returned, to be said so.
    """
    children: dict[Hashable, list[tuple[float, float]]] = {}
    for key, s, e in spans:
        parent = parents.get(key)
        if parent is not None:
            children.setdefault(parent, []).append((s, e))
    out: dict[Hashable, tuple[float, float]] = {}
    overlapped: set[Hashable] = set()
    for key, s, e in spans:
        self_ = e - s
        end = None
        for cs, ce in sorted(children.get(key, ())):
            if end is not None and cs < end:  # overlaps the children before it: only the part past them
                overlapped.add(key)
                if ce > end:
                    self_ -= ce - end
                    end = ce
                continue
            self_ -= ce - cs
            end = ce
        out[key] = (e - s, self_)
    return out, overlapped


@dataclass
class Attribution:
    """Device time attributed to nested CPU ranges (see ``attribute_kernels``); all times in the input unit."""

    total: dict[Hashable, float] = field(default_factory=dict)
    self: dict[Hashable, float] = field(default_factory=dict)
    busy: float = 0.0
    kernel_sum: float = 0.0
    window: float = 0.0
    idle_fraction: float = 0.0
    unlinked: int = 0
    outside: float = 0.0


def attribute_kernels(ranges: Sequence[tuple[Hashable, float, float]],
                      kernels: Sequence[tuple[float | None, float, float]]) -> Attribution:
    """Attribute device kernels ``(launch, start, end)`` to nested CPU ranges ``(key, start, end)``.

    A kernel belongs to the innermost range containing its launch time (a kernel with ``launch=None``, whose
    launching call is unknown, to the outermost range). The union of kernel intervals is cut into segments;
    each segment's length is shared equally by the kernels running in it, so overlapping streams are not
    counted twice and idle gaps count for nobody. ``self`` is what a range's own kernels got; ``total`` adds
    its descendants'. The selves sum to ``busy`` (the union) less ``outside`` (kernels launched outside every
    range). ``idle_fraction`` is ``1 - busy / window`` over the window from the first range's start to the
    later of the last range's end and the last kernel's end.
    """
    att = Attribution()
    if not ranges:
        return att
    order, parents = _nest(ranges)
    starts = [ranges[i][1] for i in order]
    outer = ranges[order[0]][0]
    owners: list[Hashable | None] = []
    for launch, _, _ in kernels:
        if launch is None:
            att.unlinked += 1
            owners.append(outer)
            continue
        pos = bisect.bisect_right(starts, launch) - 1
        i: int | None = order[pos] if pos >= 0 else None
        while i is not None and not (ranges[i][1] <= launch <= ranges[i][2]):
            i = parents[i]
        owners.append(ranges[i][0] if i is not None else None)
    att.self = {key: 0.0 for key, _, _ in ranges}
    edges: list[tuple[float, int, int]] = []
    for k, (_, s, e) in enumerate(kernels):
        att.kernel_sum += e - s
        edges.append((s, 1, k))
        edges.append((e, -1, k))
    edges.sort(key=lambda x: (x[0], x[1]))
    active: dict[int, None] = {}
    prev = None
    for t, kind, k in edges:
        if prev is not None and active and t > prev:
            dt = t - prev
            att.busy += dt
            share = dt / len(active)
            for j in active:
                owner = owners[j]
                if owner is None:
                    att.outside += share
                else:
                    att.self[owner] += share
        prev = t
        if kind == 1:
            active[k] = None
        else:
            active.pop(k, None)
    att.total = dict(att.self)
    for i in reversed(order):
        p = parents[i]
        if p is not None:
            att.total[ranges[p][0]] += att.total[ranges[i][0]]
    begin = ranges[order[0]][1]
    end = max([r[2] for r in ranges] + [k[2] for k in kernels])
    att.window = end - begin
    att.idle_fraction = 1.0 - att.busy / att.window if att.window > 0 else 0.0
    return att


def central_repeats(root_times: Sequence[float]) -> list[int]:
    """Indices of the repeats whose root time lies in the middle half (both of 2 repeats, the middle one of 3).

    Sorted by root time, the fastest and slowest ``(n + 1) // 4`` repeats are left out: a quarter, rounded
    so that one slow repeat of 3 is dropped as a median would drop it, instead of setting the mean.
    """
    n = len(root_times)
    order = sorted(range(n), key=lambda i: root_times[i])
    cut = (n + 1) // 4
    return sorted(order[cut:n - cut])


def interquartile_mean(values: Sequence[float]) -> float:
    """The mean of the values in the middle half (``central_repeats``): the statistic of a profile's times."""
    kept = central_repeats(values)
    return sum(values[i] for i in kept) / len(kept) if kept else math.nan


def weighted(values: Sequence[float], weights: dict[int, float]) -> float:
    """``values`` averaged with the weights of ``repeat_weights`` (the same repeats the calls' times use)."""
    return sum(w * values[i] for i, w in weights.items())


def repeat_weights(repeats: Sequence[dict[Hashable, tuple[float, float, float]]], root: Hashable
                   ) -> dict[int, float]:
    """Each counted repeat's weight in the interquartile means, by index; the weights sum to 1.

    Repeats are grouped by the calls they ran (one group when the forward is the same every time). In each
    group the central repeats (``central_repeats`` of the root's time) are counted and share the group's
    weight, its share of all repeats. So a call that runs in only some forwards is trimmed among the repeats
    like it instead of being left out with the slowest quarter, and every call is averaged over the same
    repeats with the same weights, which keeps the self times adding up.
    """
    groups: dict[frozenset, list[int]] = {}
    for i, r in enumerate(repeats):
        groups.setdefault(frozenset(r), []).append(i)
    weights: dict[int, float] = {}
    for members in groups.values():
        kept = central_repeats([repeats[i].get(root, (0.0, 0.0, 0.0))[0] for i in members])
        for k in kept:
            weights[members[k]] = len(members) / len(repeats) / len(kept)
    return dict(sorted(weights.items()))


def summarise(repeats: Sequence[dict[Hashable, tuple[float, float, float]]], root: Hashable,
              weights: dict[int, float] | None = None) -> dict[Hashable, dict[str, float]]:
    """Per call: ``total``/``self``/``cpu`` as interquartile means, ``median``/``p10``/``p90`` of the inclusive
    time, and ``runs``, the number of repeats it ran in.

    The means are weighted means over the same central repeats (``repeat_weights``) for every call, a call
    absent from a repeat counting 0, so self times add up exactly to the root's total: a call that ran in
    only some repeats gets its average per forward. The quantiles are per call over all repeats where it ran.
    ``weights``: ``repeat_weights(repeats, root)`` when the caller has them already.
    """
    if weights is None:
        weights = repeat_weights(repeats, root)
    keys: dict[Hashable, None] = {}
    for r in repeats:
        keys.update(dict.fromkeys(r))
    out: dict[Hashable, dict[str, float]] = {}
    for key in keys:
        kept = [(w, repeats[i].get(key, (0.0, 0.0, 0.0))) for i, w in weights.items()]
        every = [r[key][0] for r in repeats if key in r]
        out[key] = {"total": sum(w * k[0] for w, k in kept), "self": sum(w * k[1] for w, k in kept),
                    "cpu": sum(w * k[2] for w, k in kept), "median": quantile(every, 0.5),
                    "p10": quantile(every, 0.1), "p90": quantile(every, 0.9), "runs": len(every)}
    return out
