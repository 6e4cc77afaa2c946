"""Exploration slots: new uploads get a guaranteed share of each page.

A video with no audience yet is scored at the average rates, so the ranker alone would
rarely let it past proven videos, and it would never get the audience that could prove
it. While fresh candidates are available (the fresh source hands out each new video's
exposure budget), about ``share × count`` of them are moved up the ranking to just
into the page, each at a position drawn from the request id; the rest of the page is the
ranker's choice, in its order. (At the page's end, a client that shows only a page's
first card before asking for the rest again, ``after=``, would never show one.)

The slots are ``share × count`` rounded up or down at random (up with the fraction's
probability, drawn from the request id), so the share holds over a session whatever the
page size: a client that asks for small pages, to let each swipe shape the next cards,
would otherwise get one slot in every page (half of pages of two, all of pages of one)."""

from __future__ import annotations

import math
import random
import zlib

from fyp.types import Candidate


def slots_for(share: float, count: int, request_id: str) -> int:
    """``share × count`` rounded up with the probability of its fraction, the draw a
    function of ``request_id`` (a replay with the same ids serves the same pages)."""
    exact = share * count
    whole = math.floor(exact)
    draw = zlib.crc32(request_id.encode()) / 2**32  # uniform in [0, 1)
    return min(whole + (1 if draw < exact - whole else 0), count)


class ExplorationSlots:
    name = "exploration_slots"

    def __init__(self, source: str, share: float) -> None:
        self.source = source
        self.share = share

    def prioritise(
        self,
        ranked: list[Candidate],
        count: int,
        request_id: str,
        also: tuple[str, float] | None = None,
    ) -> list[Candidate]:
        """``ranked`` (best first), reordered so the best ``slots`` candidates of the
        exploring source sit among the first ``count``, at positions drawn from the
        request id (so each position holds one with the share's probability, the first
        as well: the share holds for a client that shows a page whole and for one that
        shows its first card only); ``also``: another (source, share) given its slots
        the same way, taking that source's candidates best first by their source
        scores."""
        chosen: list[Candidate] = []
        if also is not None:
            other = slots_for(also[1], count, f"{request_id}:{also[0]}")
            # In the source's own order (its draws), not the ranker's.
            own = [c for c in ranked if c.source == also[0]]
            chosen = sorted(own, key=lambda c: -c.source_score)[:other]
        slots = min(slots_for(self.share, count, request_id), count - len(chosen))
        if slots > 0:
            chosen += [c for c in ranked if c.source == self.source][:slots]
        if not chosen:
            return ranked
        picked = {id(c) for c in chosen}
        rest = [c for c in ranked if id(c) not in picked]
        rng = random.Random(zlib.crc32(f"{request_id}:at".encode()))
        at = set(rng.sample(range(count), len(chosen)))
        head, mine = iter(rest[: count - len(chosen)]), iter(chosen)
        page = [next(mine) if p in at else next(head, None) for p in range(count)]
        # (Too few ranked for the page: the slots' candidates close it up.)
        return [c for c in page if c is not None] + list(mine) + rest[count - len(chosen) :]
