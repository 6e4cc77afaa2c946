"""Backfill: when the other sources run dry, walk the whole catalog, most viewed first,
for eligible videos the user has not seen. It is what guarantees that a feed never
repeats a video while unseen eligible ones remain."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from fyp.retrieve.base import FeedContext
from fyp.state.updater import LogState
from fyp.types import Candidate

Keep = Callable[[Candidate], bool]


class BackfillSource:
    name = "explore"
    reason = "Something different, to explore beyond what you usually watch"
    popular_reason = "Widely watched on this app"
    repeat_name = "repeat"
    repeat_reason = "Shown again: you have seen everything else available"

    def __init__(self, state: LogState, limit: int) -> None:
        self.state = state
        self.limit = limit
        self._order: tuple[tuple[int, int], npt.NDArray[np.intp]] | None = None  # (key, rows)

    def fetch(self, ctx: FeedContext) -> list[Candidate]:
        excluded = set(ctx.user.viewed) | set(ctx.user.served_set)
        return self.fetch_excluding(ctx, excluded, self.limit)

    def fetch_excluding(
        self, ctx: FeedContext, excluded: set[int], limit: int, keep: Keep | None = None
    ) -> list[Candidate]:
        """Up to ``limit`` eligible videos not in ``excluded`` that ``keep`` accepts, most
        viewed first. Walks as far into the catalog as it takes."""
        catalog = self.state.catalog
        n = len(catalog)
        if n == 0 or limit <= 0:
            return []
        order = self._popularity_order(n)
        blocked = ~catalog.label_ok[:n]
        if excluded:
            blocked = blocked.copy()
            blocked[np.fromiter(excluded, dtype=np.intp, count=len(excluded))] = True
        views = self.state.stats.views
        return [
            c if views[c.row] == 0 else replace(c, reason=self.popular_reason)
            for c in self._walk(ctx, order[~blocked[order]].tolist(), limit, keep)
        ]

    def fetch_in_order(
        self, ctx: FeedContext, rows: Iterable[int], limit: int, keep: Keep | None = None
    ) -> list[Candidate]:
        """Up to ``limit`` of ``rows`` (in the given order) that are eligible and kept."""
        label_ok = self.state.catalog.label_ok
        eligible = (r for r in rows if label_ok[r])
        return [
            replace(c, source=self.repeat_name, reason=self.repeat_reason)
            for c in self._walk(ctx, eligible, limit, keep)
        ]

    def popular_rows(self, excluded: set[int]) -> list[int]:
        """Every row not in ``excluded``, most viewed first."""
        order = self._popularity_order(len(self.state.catalog)).tolist()
        return [r for r in order if r not in excluded]

    def _walk(
        self, ctx: FeedContext, rows: Iterable[int], limit: int, keep: Keep | None
    ) -> list[Candidate]:
        catalog = self.state.catalog
        out: list[Candidate] = []
        for row in rows:
            if not catalog.shown_in(row, ctx.region):
                continue
            c = Candidate(row, catalog.videos[row].video_id, self.name, self.reason)
            if keep is not None and not keep(c):
                continue
            out.append(c)
            if len(out) >= limit:
                break
        return out

    def _popularity_order(self, n: int) -> npt.NDArray[np.intp]:
        # Re-sorting 100k views takes milliseconds: do it when the catalog grows or a
        # thousand more views have come in, not on every request. Ties (all videos of a
        # new catalog) are broken by a fixed random order, not upload order, so a new
        # user's first page is not one creator's back catalogue.
        key = (n, int(self.state.stats.total_views // 1000))
        if self._order is None or self._order[0] != key:
            self.state.stats.ensure(n)
            jitter = np.random.default_rng(n).random(n)
            order = np.lexsort((jitter, -self.state.stats.views[:n])).astype(np.intp)
            self._order = (key, order)
        return self._order[1]
