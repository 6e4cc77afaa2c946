"""Learned retrieval: the videos whose item-tower vectors lie nearest the user's vector
(two-tower model, ``fyp.model.two_tower``), found in the ANN index the learning loop keeps
up to date. Joins the sources once the model is warm; contributes nothing before."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from fyp.catalog.names import video_name
from fyp.retrieve.base import FeedContext
from fyp.retrieve.index_rows import IndexRows
from fyp.types import Candidate

if TYPE_CHECKING:
    from fyp.model.ann import ItemIndex
    from fyp.state.updater import LogState


class UserTower(Protocol):
    @property
    def warm(self) -> bool: ...

    def pooled(self, history: Sequence[int]) -> list[int]: ...

    def user_vector(
        self, user_id: str, history: Sequence[int], now: int
    ) -> npt.NDArray[np.float32]: ...


class LearnedRetrieval(Protocol):
    """Two-tower retrieval as this source reads it: the learner's own models
    (``fyp.model.online.OnlineModels``) or a serving process's replica of what it
    published (``fyp.model.replica.ModelReplica``)."""

    @property
    def retrieval(self) -> UserTower: ...

    @property
    def index(self) -> ItemIndex: ...

    @property
    def state(self) -> LogState: ...


class TwoTowerSource:
    name = "two_tower"
    reason = "Similar to what you watch"  # a user without history in the index

    def __init__(self, models: LearnedRetrieval, limit: int) -> None:
        self.models = models
        self.limit = limit
        self._rows = IndexRows()

    def fetch(self, ctx: FeedContext) -> list[Candidate]:
        models = self.models
        if not models.retrieval.warm or len(models.index) == 0 or self.limit == 0:
            return []
        history = models.retrieval.pooled(ctx.user.history)
        query = models.retrieval.user_vector(ctx.user_id, history, ctx.now)
        # Ask for more than the limit: what the user saw or was served is skipped here.
        slots, scores = models.index.search_slots(query, self.limit * 2)
        catalog = models.state.catalog
        self._rows.update(models.index, catalog)
        found = slots[0]
        rows = self._rows.rows_of(found)
        videos = catalog.videos
        viewed, served = ctx.user.viewed, ctx.user.served_set
        out: list[Candidate] = []
        name, reason, limit = self.name, self.reason, self.limit
        for row, score in zip(rows.tolist(), scores[0].tolist(), strict=True):
            if row < 0 or row in viewed or row in served:
                continue
            out.append(Candidate(row, videos[row].video_id, name, reason, score))
            if len(out) == limit:
                break
        # Each one's reason (the watch it is most like) is worded by cite(), for the
        # served ones only.
        return out

    def cite(self, ctx: FeedContext, served: Sequence[Candidate]) -> None:
        """Each served candidate's reason names the video of the user's history (the one
        the user tower pooled) whose item vector is nearest its own: the watch it is most
        like, as co-engagement names the video that led to its candidates. (The history
        and the index are those fetch() read: nothing changes them within a request.)"""
        if not served:
            return
        history = self.models.retrieval.pooled(ctx.user.history)
        if not history:
            return
        found_slots = self._rows.slots_of(np.array([c.row for c in served], dtype=np.int64))
        self._cite_history(served, found_slots, history)

    def _cite_history(
        self, found: Sequence[Candidate], found_slots: npt.NDArray[np.int64], history: list[int]
    ) -> None:
        """:meth:`cite`, with the candidates' slots in the index (``found_slots``)."""
        videos = self.models.state.catalog.videos
        seen_slots = self._rows.slots_of(np.asarray(history, dtype=np.int64))
        # The watches' and the candidates' vectors in one read (each read has a fixed cost).
        vectors = self.models.index.vectors_at(np.concatenate([seen_slots, found_slots]))
        in_index = seen_slots >= 0
        if not in_index.any():
            return
        n = len(history)
        seen, cands = vectors[:n], vectors[n:]
        sims = cands @ seen.T
        sims[:, ~in_index] = -np.inf
        # The newest of equals (argmax takes the first: the history reversed).
        nearest = n - 1 - np.argmax(sims[:, ::-1], axis=1)
        # In place (fetch made them), each watch named once.
        reasons: dict[int, str] = {}
        for c, k in zip(found, nearest.tolist(), strict=True):
            reason = reasons.get(k)
            if reason is None:
                reason = reasons[k] = f"Like {video_name(videos[history[k]])}, which you watched"
            c.reason = reason
