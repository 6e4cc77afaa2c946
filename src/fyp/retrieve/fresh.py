"""Fresh uploads: recent videos that have not yet had their first audience.

Each video uploaded within ``window`` is promised ``exposure_budget`` impressions; the
fewer it has had, the likelier it is to be proposed (a random draw, so that new videos
share the exposure rather than the same few taking it all)."""

from __future__ import annotations

import zlib

import numpy as np
import numpy.typing as npt

from fyp.retrieve.base import FeedContext
from fyp.state.updater import FeedState
from fyp.types import Candidate


class FreshSource:
    name = "fresh"
    reason = "New video, shown to help it find its audience"

    def __init__(self, state: FeedState, limit: int, window_ms: int, exposure_budget: int) -> None:
        self.state = state
        self.limit = limit
        self.window_ms = window_ms
        self.exposure_budget = exposure_budget
        # (catalog version, computed at, rows uploaded since computed at - window)
        self._pool: tuple[int, int, npt.NDArray[np.intp]] | None = None

    def _recent(self, now: int) -> npt.NDArray[np.intp]:
        """Rows uploaded within the window, or a little before: a superset kept for up to
        a minute (and until the catalog changes), since scanning 100k upload times per
        request would cost more than everything else this source does."""
        catalog = self.state.catalog
        pool = self._pool
        if pool is None or pool[0] != catalog.version or not pool[1] <= now < pool[1] + 60_000:
            created = catalog.created_at[: len(catalog)]
            rows = np.flatnonzero(created >= now - self.window_ms).astype(np.intp)
            self._pool = pool = (catalog.version, now, rows)
        return pool[2]

    def fetch(self, ctx: FeedContext) -> list[Candidate]:
        catalog, stats = self.state.catalog, self.state.stats
        stats.ensure(len(catalog))
        rows = self._recent(ctx.now)
        exposures = stats.exposures
        rows = rows[exposures[rows] < self.exposure_budget]
        created = catalog.created_at[rows]
        rows = rows[(created >= ctx.now - self.window_ms) & (created <= ctx.now)]
        if len(rows) == 0:
            return []
        if len(rows) > self.limit:
            need = (self.exposure_budget - exposures[rows]).astype(np.float64)
            rng = np.random.default_rng(zlib.crc32(ctx.request_id.encode()))
            rows = rng.choice(rows, size=self.limit, replace=False, p=need / need.sum())
        videos = catalog.videos
        return [
            Candidate(
                int(r),
                videos[int(r)].video_id,
                self.name,
                self.reason,
                source_score=1.0 - int(exposures[int(r)]) / max(self.exposure_budget, 1),
            )
            for r in rows
        ]
