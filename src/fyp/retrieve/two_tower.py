"""Learned retrieval: the videos whose item-tower vectors lie nearest the user's vector
(two-tower model, ``fyp.model.two_tower``), found in the ANN index the learning loop keeps
up to date. Joins the sources once the model is warm; contributes nothing before."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fyp.retrieve.base import FeedContext
from fyp.types import Candidate

if TYPE_CHECKING:
    from fyp.model.online import OnlineModels


class TwoTowerSource:
    name = "two_tower"
    reason = "Similar to what you watch"

    def __init__(self, models: OnlineModels, limit: int) -> None:
        self.models = models
        self.limit = limit

    def fetch(self, ctx: FeedContext) -> list[Candidate]:
        models = self.models
        if not models.retrieval.warm or len(models.index) == 0 or self.limit == 0:
            return []
        history = list(ctx.user.history)
        query = models.retrieval.user_vector(ctx.user_id, history, ctx.now)
        # Ask for more than the limit: what the user saw or was served is skipped here.
        ids, scores = models.index.search(query, self.limit * 2)
        row_of = models.state.catalog.row_of
        viewed, served = ctx.user.viewed, ctx.user.served_set
        out: list[Candidate] = []
        for video_id, score in zip(ids[0], scores[0].tolist(), strict=True):
            row = row_of.get(video_id)
            if row is None or row in viewed or row in served:
                continue
            out.append(Candidate(row, video_id, self.name, self.reason, float(score)))
            if len(out) == self.limit:
                break
        return out
