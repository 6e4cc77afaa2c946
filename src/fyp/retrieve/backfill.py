"""Backfill: when the other sources run dry, walk the whole catalog, most viewed first,
for eligible videos the user has not seen. It is what guarantees that a feed never
repeats a video while unseen eligible ones remain."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fyp.retrieve.base import FeedContext
from fyp.state.updater import FeedState
from fyp.types import Candidate


class BackfillSource:
    name = "explore"
    reason = "Something different, to explore beyond what you usually watch"

    def __init__(self, state: FeedState, limit: int) -> None:
        self.state = state
        self.limit = limit
        self._order: tuple[tuple[int, int], npt.NDArray[np.intp]] | None = None  # (key, rows)

    def fetch_excluding(self, ctx: FeedContext, excluded: set[int], limit: int) -> list[Candidate]:
        catalog = self.state.catalog
        n = len(catalog)
        if n == 0:
            return []
        order = self._popularity_order(n)
        blocked = np.zeros(n, dtype=bool)
        if excluded:
            blocked[np.fromiter(excluded, dtype=np.intp, count=len(excluded))] = True
        blocked |= ~catalog.label_ok[:n]
        rows = order[~blocked[order]]
        out: list[Candidate] = []
        for r in rows:
            row = int(r)
            if not catalog.shown_in(row, ctx.region):
                continue
            out.append(Candidate(row, catalog.videos[row].video_id, self.name, self.reason))
            if len(out) >= limit:
                break
        return out

    def fetch(self, ctx: FeedContext) -> list[Candidate]:
        excluded = set(ctx.user.viewed) | set(ctx.user.served_set)
        return self.fetch_excluding(ctx, excluded, self.limit)

    def _popularity_order(self, n: int) -> npt.NDArray[np.intp]:
        # Re-sorting 100k views takes milliseconds: do it when the catalog grows or a
        # thousand more views have come in, not on every request.
        key = (n, int(self.state.stats.total_views // 1000))
        if self._order is None or self._order[0] != key:
            self.state.stats.ensure(n)
            order = np.argsort(-self.state.stats.views[:n], kind="stable").astype(np.intp)
            self._order = (key, order)
        return self._order[1]
