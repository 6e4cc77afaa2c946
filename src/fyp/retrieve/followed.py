"""Followed creators: their newest videos."""

from __future__ import annotations

from fyp.retrieve.base import FeedContext
from fyp.state.updater import LogState
from fyp.types import Candidate


class FollowedCreatorsSource:
    name = "followed"

    def __init__(self, state: LogState, limit: int, per_creator: int = 10) -> None:
        self.state = state
        self.limit = limit
        self.per_creator = per_creator

    def fetch(self, ctx: FeedContext) -> list[Candidate]:
        catalog = self.state.catalog
        out: list[Candidate] = []
        for creator in sorted(ctx.user.follows):
            taken = 0
            for row in catalog.rows_by_creator.get(creator, ()):
                if row in ctx.user.viewed or row in ctx.user.served_set:
                    continue
                out.append(
                    Candidate(
                        row,
                        catalog.videos[row].video_id,
                        self.name,
                        f"From @{creator}, whom you follow",
                        source_score=1.0,
                    )
                )
                taken += 1
                if taken >= self.per_creator or len(out) >= self.limit:
                    break
            if len(out) >= self.limit:
                break
        return out
