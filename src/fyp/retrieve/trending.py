"""Regional trending: videos with the most time-decayed engagement in the user's region."""

from __future__ import annotations

from fyp.retrieve.base import FeedContext
from fyp.state.updater import FeedState
from fyp.types import Candidate


class TrendingSource:
    name = "trending"

    def __init__(self, state: FeedState, limit: int) -> None:
        self.state = state
        self.limit = limit
        self._cache: dict[str, tuple[int, list[int]]] = {}  # region -> (version, rows)

    def fetch(self, ctx: FeedContext) -> list[Candidate]:
        rows = self._top(ctx.region)
        videos = self.state.catalog.videos
        return [
            Candidate(
                row,
                videos[row].video_id,
                self.name,
                "Popular in your region",
                source_score=1.0 - i / max(len(rows), 1),
            )
            for i, row in enumerate(rows)
        ]

    def _top(self, region: str) -> list[int]:
        # The top list changes only when engagement arrives; recompute then, not per request.
        # Over-fetch so that filtering out what the user has seen still leaves enough.
        version = self.state.trending.version
        cached = self._cache.get(region)
        if cached is None or cached[0] != version:
            rows = self.state.trending.top(region, self.limit * 3)
            self._cache[region] = cached = (version, rows)
        return cached[1]
