"""Exploration slots: new uploads get a guaranteed share of each page.

A video with no audience yet is scored at the average rates, so the ranker alone would
rarely let it past proven videos, and it would never get the audience that could prove
it. While fresh candidates are available (the fresh source hands out each new video's
exposure budget), up to ``ceil(share × count)`` of them are moved up the ranking to just
inside the page; the rest of the page is the ranker's choice."""

from __future__ import annotations

import math

from fyp.types import Candidate


class ExplorationSlots:
    name = "exploration_slots"

    def __init__(self, source: str, share: float) -> None:
        self.source = source
        self.share = share

    def prioritise(self, ranked: list[Candidate], count: int) -> list[Candidate]:
        """``ranked`` (best first), reordered so the best ``slots`` candidates of the
        exploring source sit at the end of the first ``count``."""
        slots = min(math.ceil(self.share * count), count)
        if slots == 0:
            return ranked
        chosen = [c for c in ranked if c.source == self.source][:slots]
        if not chosen:
            return ranked
        picked = {id(c) for c in chosen}
        rest = [c for c in ranked if id(c) not in picked]
        head = count - len(chosen)
        return rest[:head] + chosen + rest[head:]
