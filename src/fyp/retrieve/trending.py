"""Regional trending: videos with the most time-decayed engagement in the user's region."""

from __future__ import annotations

from fyp.retrieve.base import FeedContext
from fyp.state.updater import LogState
from fyp.types import Candidate


class TrendingSource:
    name = "trending"
    reason = "Popular in your region"

    def __init__(self, state: LogState, limit: int) -> None:
        self.state = state
        self.limit = limit

    def fetch(self, ctx: FeedContext) -> list[Candidate]:
        # Skip what the user has already seen here, so that the source's share of the
        # candidates goes to videos that can be served (the filters still check).
        viewed, served = ctx.user.viewed, ctx.user.served_set
        rows: list[int] = []
        for r in self.state.trending.top(ctx.region, self.limit * 3):
            if r not in viewed and r not in served:
                rows.append(r)
                if len(rows) == self.limit:
                    break
        videos = self.state.catalog.videos
        step = 1.0 / max(len(rows), 1)
        return [
            Candidate(row, videos[row].video_id, self.name, self.reason, 1.0 - i * step)
            for i, row in enumerate(rows)
        ]
