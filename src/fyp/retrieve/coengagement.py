"""Item-to-item: videos co-engaged with the user's recent positives."""

from __future__ import annotations

from operator import itemgetter

from fyp.catalog.names import video_name
from fyp.retrieve.base import FeedContext
from fyp.state.updater import LogState
from fyp.types import Candidate


class CoEngagementSource:
    name = "co_engagement"

    def __init__(self, state: LogState, seeds: int, limit: int) -> None:
        self.state = state
        self.seeds = seeds
        self.limit = limit

    def fetch(self, ctx: FeedContext) -> list[Candidate]:
        seeds = list(ctx.user.recent_positives)[-self.seeds :] if self.seeds > 0 else []
        if not seeds:
            return []
        scores: dict[int, float] = {}
        via: dict[int, int] = {}  # the seed that first proposed each row
        newest_first = seeds[::-1]
        each = self.state.coengagement.neighbours_of_each(newest_first)
        # Newer seeds weigh more: interests drift within a session.
        for age, (seed, neighbours) in enumerate(zip(newest_first, each, strict=True)):
            recency = 0.9**age
            for row, sim in neighbours:
                if row in scores:
                    scores[row] += recency * sim
                else:
                    scores[row] = recency * sim
                    via[row] = seed
        # Best first; ties in the order the rows were first met (a stable sort).
        best = sorted(scores.items(), key=itemgetter(1), reverse=True)[: self.limit]
        videos = self.state.catalog.videos
        # One sentence per seed, shared by its candidates (a hundred of them, a few seeds).
        reasons: dict[int, str] = {}
        out: list[Candidate] = []
        for row, score in best:
            seed = via[row]
            reason = reasons.get(seed)
            if reason is None:
                reason = reasons[seed] = (
                    f"Because you enjoyed {video_name(videos[seed])}: people who enjoyed it "
                    "also enjoyed this"
                )
            out.append(Candidate(row, videos[row].video_id, self.name, reason, score))
        return out
