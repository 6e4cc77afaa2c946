"""Item-to-item co-engagement: videos that the same users engaged with positively.

Each new positive of a user is paired with that user's recent positives; neighbours are
ranked by cosine (co-count / sqrt(positives_a * positives_b)), so a video popular with
everyone does not become everyone's neighbour.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from itertools import chain
from operator import itemgetter

import numpy as np

# Below this many links in all, the cold neighbour lists of a request are computed one
# by one in Python; above it, in one pass of array arithmetic (same numbers).
_BATCH_MIN_LINKS = 64


class CoEngagement:
    def __init__(self, max_neighbours: int) -> None:
        self.max_neighbours = max_neighbours
        self._co: dict[int, dict[int, float]] = {}
        self._positives: dict[int, float] = {}
        self._top: dict[int, list[tuple[int, float]]] = {}  # cache, dropped on change
        # _positives as an array by row (1.0 where it holds nothing, as read by cosines)
        self._positives_by_row = np.ones(0)

    def add_positive(self, row: int, recent_positives: Iterable[int], weight: float = 1.0) -> None:
        """Record that a user engaged positively with ``row`` after ``recent_positives``."""
        positives = self._positives[row] = self._positives.get(row, 0.0) + weight
        if row >= len(self._positives_by_row):
            grown = np.ones(max(row + 1, 2 * len(self._positives_by_row), 1024))
            grown[: len(self._positives_by_row)] = self._positives_by_row
            self._positives_by_row = grown
        self._positives_by_row[row] = positives
        # ``row`` is now more popular, so its cosine with every linked video falls:
        # their cached neighbour lists are stale. Only cached ones need dropping: a
        # popular video has hundreds of links, and while the log is replayed (no
        # requests) nothing is cached.
        top = self._top
        if top and (links := self._co.get(row)):
            for other in links.keys() & top.keys():
                del top[other]
        for other in recent_positives:
            if other == row:
                continue
            for a, b in ((row, other), (other, row)):
                links = self._co.setdefault(a, {})
                links[b] = links.get(b, 0.0) + weight
                if len(links) > 4 * self.max_neighbours:
                    self._prune(a)
                self._top.pop(a, None)
        self._top.pop(row, None)

    def _prune(self, row: int) -> None:
        # Bound memory: keep the strongest 2x max_neighbours links by raw co-count.
        links = self._co[row]
        kept = sorted(links.items(), key=lambda kv: -kv[1])[: 2 * self.max_neighbours]
        self._co[row] = dict(kept)

    def neighbours(self, row: int) -> list[tuple[int, float]]:
        """Up to ``max_neighbours`` (row, cosine) pairs, strongest first."""
        cached = self._top.get(row)
        if cached is not None:
            return cached
        links = self._co.get(row)
        if not links:
            return []
        positives, sqrt = self._positives, math.sqrt
        pa = positives.get(row, 1.0)
        scored = [(other, c / sqrt(pa * positives.get(other, 1.0))) for other, c in links.items()]
        scored.sort(key=itemgetter(1), reverse=True)  # stable: ties stay in link order
        top = scored[: self.max_neighbours]
        self._top[row] = top
        return top

    def neighbours_of_each(self, rows: Sequence[int]) -> list[list[tuple[int, float]]]:
        """``[self.neighbours(r) for r in rows]``, the same lists, with the ones not
        cached computed together (a feed request asks for a dozen seeds at once, most
        of them not asked for since they last changed)."""
        top = self._top
        cold = [r for r in dict.fromkeys(rows) if r not in top and self._co.get(r)]
        if sum(len(self._co[r]) for r in cold) >= _BATCH_MIN_LINKS:
            self._compute_together(cold)
        return [self.neighbours(r) for r in rows]

    def _compute_together(self, rows: list[int]) -> None:
        """Fill the cache for ``rows`` (each with links, none cached) as
        :meth:`neighbours` would, with array arithmetic over all their links at once."""
        links = [self._co[r] for r in rows]
        sizes = np.fromiter(map(len, links), dtype=np.intp, count=len(rows))
        total = int(sizes.sum())
        others = np.fromiter(chain.from_iterable(links), dtype=np.intp, count=total)
        co = np.fromiter(
            chain.from_iterable(d.values() for d in links), dtype=np.float64, count=total
        )
        group = np.repeat(np.arange(len(rows)), sizes)
        pa = np.fromiter((self._positives.get(r, 1.0) for r in rows), np.float64, len(rows))
        by_row = self._positives_by_row
        pb = np.ones(total)
        known = others < len(by_row)
        pb[known] = by_row[others[known]]
        cosine = co / np.sqrt(pa[group] * pb)
        # Within each row, strongest first, ties in link order (lexsort is stable).
        order = np.lexsort((-cosine, group))
        starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
        rank = np.arange(total) - starts[group]  # group[order] == group: groups stay put
        order = order[rank < self.max_neighbours]
        kept_rows = others[order].tolist()
        kept_cos = cosine[order].tolist()
        ends = np.cumsum(np.minimum(sizes, self.max_neighbours)).tolist()
        start = 0
        for row, end in zip(rows, ends, strict=True):
            self._top[row] = list(zip(kept_rows[start:end], kept_cos[start:end], strict=True))
            start = end
