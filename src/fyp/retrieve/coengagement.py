"""Item-to-item: videos co-engaged with the user's recent positives."""

from __future__ import annotations

from fyp.retrieve.base import FeedContext
from fyp.state.updater import FeedState
from fyp.types import Candidate


class CoEngagementSource:
    name = "co_engagement"

    def __init__(self, state: FeedState, seeds: int, limit: int) -> None:
        self.state = state
        self.seeds = seeds
        self.limit = limit

    def fetch(self, ctx: FeedContext) -> list[Candidate]:
        seeds = list(ctx.user.recent_positives)[-self.seeds :] if self.seeds > 0 else []
        if not seeds:
            return []
        scores: dict[int, float] = {}
        via: dict[int, int] = {}
        # Newer seeds weigh more: interests drift within a session.
        for age, seed in enumerate(reversed(seeds)):
            recency = 0.9**age
            for row, sim in self.state.coengagement.neighbours(seed):
                s = scores.get(row, 0.0) + recency * sim
                scores[row] = s
                if row not in via:
                    via[row] = seed
        best = sorted(scores.items(), key=lambda kv: -kv[1])[: self.limit]
        videos = self.state.catalog.videos
        return [
            Candidate(
                row,
                videos[row].video_id,
                self.name,
                f"People who enjoyed a video you enjoyed ({videos[via[row]].video_id}) "
                "also enjoyed this",
                source_score=score,
            )
            for row, score in best
        ]
