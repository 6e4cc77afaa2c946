"""The non-personalised feed's only source: regional popularity (the trending list of
the user's region), then the app's most watched videos. Nothing about the user but their
region and what this mode already served them."""

from __future__ import annotations

from fyp.retrieve.backfill import BackfillSource
from fyp.retrieve.base import FeedContext
from fyp.state.updater import LogState
from fyp.types import Candidate


class NonPersonalisedSource:
    name = "non_personalised"
    reason = "Popular in your region (your feed is not personalised)"
    popular_reason = "Widely watched on this app (your feed is not personalised)"

    def __init__(self, state: LogState, backfill: BackfillSource) -> None:
        self.state = state
        self.backfill = backfill

    def fetch_limit(self, ctx: FeedContext, limit: int) -> list[Candidate]:
        served = ctx.user.served_set
        videos = self.state.catalog.videos
        rows = [
            r for r in self.state.trending.top(ctx.region, limit + len(served)) if r not in served
        ]
        rows = rows[:limit]
        out = [Candidate(r, videos[r].video_id, self.name, self.reason) for r in rows]
        if len(out) < limit:  # then the most watched, as the backfill walks them
            extra = self.backfill.fetch_excluding(ctx, set(rows) | set(served), limit - len(out))
            out += [Candidate(c.row, c.video_id, self.name, self.popular_reason) for c in extra]
        # Popularity order, as a descending score in (0, 1].
        for i, c in enumerate(out):
            c.source_score = 1.0 - i / (len(out) + 1)
        return out

    def fetch(self, ctx: FeedContext) -> list[Candidate]:
        return self.fetch_limit(ctx, max(5 * ctx.count, 60))
