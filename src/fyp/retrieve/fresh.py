"""Fresh uploads: recent videos that have not yet had their first audience.

Each video uploaded within ``window`` is promised ``exposure_budget`` impressions; the
fewer it has had, the likelier it is to be proposed (a random draw, so that new videos
share the exposure rather than the same few taking it all)."""

from __future__ import annotations

import zlib

import numpy as np

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

    def fetch(self, ctx: FeedContext) -> list[Candidate]:
        catalog, stats = self.state.catalog, self.state.stats
        n = len(catalog)
        stats.ensure(n)
        created = catalog.created_at[:n]
        exposures = stats.exposures[:n]
        mask = (created >= ctx.now - self.window_ms) & (created <= ctx.now)
        mask &= exposures < self.exposure_budget
        rows = np.flatnonzero(mask)
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
