"""Item-to-item co-engagement: videos that the same users engaged with positively.

Each new positive of a user is paired with that user's recent positives; neighbours are
ranked by cosine (co-count / sqrt(positives_a * positives_b)), so a video popular with
everyone does not become everyone's neighbour.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


class CoEngagement:
    def __init__(self, max_neighbours: int) -> None:
        self.max_neighbours = max_neighbours
        self._co: dict[int, dict[int, float]] = {}
        self._positives: dict[int, float] = {}
        self._top: dict[int, list[tuple[int, float]]] = {}  # cache, dropped on change

    def add_positive(self, row: int, recent_positives: Iterable[int], weight: float = 1.0) -> None:
        """Record that a user engaged positively with ``row`` after ``recent_positives``."""
        self._positives[row] = self._positives.get(row, 0.0) + weight
        # ``row`` is now more popular, so its cosine with every linked video falls:
        # their cached neighbour lists are stale.
        for other in self._co.get(row, ()):
            self._top.pop(other, None)
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
        pa = self._positives.get(row, 1.0)
        scored = [
            (other, c / math.sqrt(pa * self._positives.get(other, 1.0)))
            for other, c in links.items()
        ]
        scored.sort(key=lambda kv: -kv[1])
        top = scored[: self.max_neighbours]
        self._top[row] = top
        return top
