"""Loops in a run of sibling events: which events are the same step of a loop repeated back to back.

The diagram (``graph.py``) folds each loop into one node per step of its body. This module only finds them, from
a token per event (its module or op name, and its source line when the trace has lines), a signature per event
(an op's output shapes) and whether the event is a module call:

- A block repeated back to back is a loop. A body with a module call folds at two repeats; a body of ops alone
  folds from ``MIN_OP_REPEATS`` repeats on, since straight-line code repeats a run of ops for its own reasons (a
  query, a key and a value reshaped alike); a body of one or two ops must also have made the same shapes in every
  iteration and each iteration must read the one before (``x = x + 1`` in a loop; not four ``view`` lines, nor
  ``resize_boxes`` scaling four coordinates alike, nor one ``new_zeros`` per layer of a comprehension: a source
  line does not tell them apart, since library code records its caller's line). A body of
  ``MIN_VARYING_BODY`` ops or more repeated that often is a loop whatever its shapes (a detector pasting each
  detection's mask at its own size).
- Loops inside loops: inner loops fold first (short bodies first) and then count as one step of the outer body
  whatever their count, so an outer loop around them is found too (a body of 12 ops stepped 12 times, then a
  call). An inner fold never cuts across an iteration of the outer loop: the run is first tiled into the repeats
  covering the most events (left to right, any body up to ``MAX_PERIOD`` steps), and an inner loop must lie
  within one iteration of its tile (``norm, mix, norm`` stepped 4 times is ``norm ×4, mix ×4, norm ×4``, not a
  ``norm ×2`` across the iterations' seam).
- Blocks are compared by rolling hashes, and only at the periods where the first event recurs (at most
  ``MAX_CANDIDATES`` of them per position), so a long run that never repeats costs about linear time.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Sequence

MAX_PERIOD = 512  # the longest loop body (in sibling events, an inner loop counting as one) recognised
MIN_OP_REPEATS = 4  # a body of ops alone (no module call) folds from this many repeats on
MIN_VARYING_BODY = 3  # a body of ops alone this long folds even when its iterations' shapes differ
MAX_CANDIDATES = 64  # periods tried per position: the nearest recurrences of its event

_MOD = (1 << 61) - 1
_BASE = 1_000_003

# A run of sibling events while loops are found: (token, whether a module call is in it, signature, slots). A
# plain event is one slot of its own; a folded loop's slots are its body's, each holding that position's event of
# every iteration. Equal tokens have the same slots, so a loop of loops merges slot by slot.
_Element = tuple[Hashable, bool, Hashable, list[list[int]]]


def find_loops(tokens: Sequence[Hashable], signatures: Sequence[Hashable], calls: Sequence[bool],
               reads: Sequence[Collection[int]] | None = None) -> list[list[int]]:
    """Group the events (by index) into slots: events that are the same step of a loop share a slot, first
    iteration first; an event in no loop is a slot of its own. Slots come in event order of their first event.

    ``reads``: per event, the events whose outputs it read; a body of one or two ops alone folds only while each
    iteration reads the one before (``x = f(x)`` in a loop). Without it (``None``) that evidence is not asked."""
    elements: list[_Element] = [(t, c, (t, s), [[j]]) for j, (t, s, c) in enumerate(zip(tokens, signatures, calls))]
    bound = 1
    run = _Run(elements, reads)
    tiling = run.tiling()
    while bound <= MAX_PERIOD and len(elements) > 1:  # short bodies first: a long one folds once its inner loops have
        folded = run.fold(bound, tiling)
        if folded is None:
            bound *= 2
        else:
            elements = folded
            run = _Run(elements, reads)
            tiling = run.tiling()
    return [slot for element in elements for slot in element[3]]


class _Run:
    """The elements between two folds: token ids, prefix hashes, where each token recurs, and (found once, on
    demand) the repeats that start at each element. ``reads``: per event, the events it read (see ``find_loops``)."""

    def __init__(self, elements: list[_Element], reads: Sequence[Collection[int]] | None = None) -> None:
        self.elements = elements
        self.reads = reads
        ids: dict[Hashable, int] = {}
        self.toks = [ids.setdefault(e[0], len(ids) + 1) for e in elements]
        n = self.n = len(self.toks)
        self.prefix = [0] * (n + 1)
        self.power = [1] * (n + 1)
        for i, t in enumerate(self.toks):
            self.prefix[i + 1] = (self.prefix[i] * _BASE + t) % _MOD
            self.power[i + 1] = self.power[i] * _BASE % _MOD
        self.where: dict[int, list[int]] = {}
        self.rank: list[int] = [0] * n  # index of position j in where[toks[j]]
        for j, t in enumerate(self.toks):
            positions = self.where.setdefault(t, [])
            self.rank[j] = len(positions)
            positions.append(j)
        self.found: dict[int, list[tuple[int, int, bool]]] = {}

    def repeats(self, j: int) -> list[tuple[int, int, bool]]:
        """``(period, repeats, whether the body has a call)`` of each block that starts at ``j`` and repeats back
        to back, shortest first (a short body of ops alone counted only while its iterations' shapes agree)."""
        if j in self.found:
            return self.found[j]
        toks, pre, pw, n, elements = self.toks, self.prefix, self.power, self.n, self.elements
        out = []
        first = self.rank[j] + 1
        for q in self.where[toks[j]][first:first + MAX_CANDIDATES]:
            p = q - j
            if p > MAX_PERIOD or q + p > n:
                break
            if toks[q + p - 1] != toks[q - 1] or (pre[q] - pre[j] * pw[p]) % _MOD != (pre[q + p] - pre[q] * pw[p]) % _MOD:
                continue
            if out and any(p % p0 == 0 and 2 * p <= p0 * r0 for p0, r0, _ in out):
                continue  # a multiple of a shorter body's period within its run: never covers more
            body = toks[j:q]
            if body != toks[q:q + p]:
                continue
            h = (pre[q] - pre[j] * pw[p]) % _MOD
            reps = 2
            while q + reps * p <= n and (pre[j + (reps + 1) * p] - pre[j + reps * p] * pw[p]) % _MOD == h \
                    and toks[j + reps * p:j + (reps + 1) * p] == body:
                reps += 1
            calls = any(e[1] for e in elements[j:q])
            if not calls and p < MIN_VARYING_BODY:  # a short run of ops alone: every iteration made the same shapes
                sigs = [e[2] for e in elements[j:q]]
                same = 1
                while same < reps and [e[2] for e in elements[j + same * p:j + (same + 1) * p]] == sigs \
                        and self._chained(elements[j + (same - 1) * p:j + same * p], elements[j + same * p:j + (same + 1) * p]):
                    same += 1
                reps = same
            out.append((p, reps, calls))
        self.found[j] = out
        return out

    def _chained(self, before: list[_Element], after: list[_Element]) -> bool:
        """Whether an event of the iteration ``after`` read an output of the iteration ``before`` (true when no
        reads were given)."""
        if self.reads is None:
            return True
        earlier = {i for e in before for slot in e[3] for i in slot}
        return any(not earlier.isdisjoint(self.reads[i]) for e in after for slot in e[3] for i in slot)

    @staticmethod
    def _fits(p: int, reps: int, calls: bool, j: int, end: int) -> int:
        """How many of the repeats fit before ``end``; 0 when too few to be a loop."""
        reps = min(reps, (end - j) // p)
        return reps if reps >= 2 and (calls or reps >= MIN_OP_REPEATS) else 0

    def tiling(self) -> tuple[list[int], dict[int, tuple[int, int]]]:
        """Per element, the end of the loop iteration it lies in when the run is tiled, left to right, by the
        repeats covering the most elements (a body up to ``MAX_PERIOD``); elements in no loop end where the next
        tile starts. And per tile, by its first element: its period and its end."""
        n = self.n
        ends: list[int | None] = [None] * n
        tiles: dict[int, tuple[int, int]] = {}
        j = 0
        while j < n:
            best = None
            for p, reps, calls in self.repeats(j):
                fit = self._fits(p, reps, calls, j, n)
                if fit and (best is None or fit * p > best[0] * best[1]):
                    best = (fit, p)
            if best is None:
                j += 1
                continue
            reps, p = best
            tiles[j] = (p, j + reps * p)
            for r in range(reps):
                for i in range(j + r * p, j + (r + 1) * p):
                    ends[i] = j + (r + 1) * p
            j += reps * p
        out = [n] * n
        nxt = n
        for i in range(n - 1, -1, -1):  # an element in no tile: up to the next tile
            end = ends[i]
            if end is None:
                out[i] = nxt
            else:
                out[i] = end
                nxt = i
        return out, tiles

    def fold(self, bound: int, tiling: tuple[list[int], dict[int, tuple[int, int]]]) -> list[_Element] | None:
        """Fold each block repeated back to back (the shortest body first, up to ``bound`` elements) that lies
        within one tile iteration (or is the tile) into one loop element; ``None`` when nothing folds."""
        elements, n = self.elements, self.n
        ends, tiles = tiling
        out: list[_Element] = []
        changed = False
        j = 0
        while j < n:
            found = None
            for p, reps, calls in self.repeats(j):
                if p > bound:
                    break
                fit = self._fits(p, reps, calls, j, ends[j])
                if not fit and j in tiles and tiles[j][0] == p:  # the tile itself, once its inner loops folded
                    fit = self._fits(p, reps, calls, j, tiles[j][1])
                if fit:
                    found = (p, fit, calls)
                    break
            if found is None:
                out.append(elements[j])
                j += 1
                continue
            p, reps, calls = found
            slots: list[list[int]] = []
            for o in range(p):
                for s in range(len(elements[j + o][3])):
                    slots.append([i for r in range(reps) for i in elements[j + r * p + o][3][s]])
            body = tuple(elements[j + o][0] for o in range(p))
            out.append((("loop", body), calls, ("loop", tuple(e[2] for e in elements[j:j + p])), slots))
            changed = True
            j += reps * p
        return out if changed else None
