"""What the pipeline asks of a ranker: value scores for candidate rows, in one request's
context. The first ranker always answers; a learned ranker answers once it is warm."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from fyp.rank.first_ranker import FirstRanker
from fyp.retrieve.base import FeedContext

if TYPE_CHECKING:
    from fyp.state.users import UserState

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


class LearnedRanker(Protocol):
    """The learned multi-task ranker as serving reads it: the learner's own
    (``fyp.model.ranker.MultiTaskRanker``) or a serving process's replica of it
    (``fyp.model.replica.ReplicaRanker``)."""

    @property
    def warm(self) -> bool: ...

    def predict(
        self,
        user_id: str,
        user: UserState,
        rows: Sequence[int],
        now: int,
        surface: str,
        first_features: F64 | None = None,
    ) -> tuple[F32, F32]: ...


class Ranker(Protocol):
    def values(self, ctx: FeedContext, rows: list[int]) -> F64:
        """The value score of each row for this request (higher first)."""
        ...

    def values_and_features(self, ctx: FeedContext, rows: list[int]) -> tuple[F64, F64]:
        """:meth:`values`, and the first ranker's (n, L, F) features of the rows (what
        "why this video" explains the score by)."""
        ...

    def active(self) -> str:
        """Which model scores now (for /metrics and the item's explanation)."""
        ...


class FirstRankerValues:
    def __init__(self, first: FirstRanker) -> None:
        self.first = first

    def values(self, ctx: FeedContext, rows: list[int]) -> F64:
        return self.first.score(ctx.user, rows, ctx.now, ctx.surface).values

    def values_and_features(self, ctx: FeedContext, rows: list[int]) -> tuple[F64, F64]:
        scored = self.first.score(ctx.user, rows, ctx.now, ctx.surface)
        return scored.values, scored.features

    def active(self) -> str:
        return "first_ranker"


class WarmOrFirst:
    """A cascade: the first ranker orders every candidate; once the learned multi-task
    ranker has seen its warm-up examples, it re-orders the first ranker's best
    ``rerank_top`` (the ones a page is chosen from), which keeps the network's cost per
    request bounded whatever the number of candidates. Until it is warm (a new
    deployment, or a model that was reset), the first ranker alone."""

    def __init__(self, learned: LearnedRanker, first: FirstRanker, rerank_top: int) -> None:
        self.learned = learned
        self.first = first
        self.rerank_top = rerank_top

    def values(self, ctx: FeedContext, rows: list[int]) -> F64:
        return self.values_and_features(ctx, rows)[0]

    def values_and_features(self, ctx: FeedContext, rows: list[int]) -> tuple[F64, F64]:
        scored = self.first.score(ctx.user, rows, ctx.now, ctx.surface)
        first = scored.values
        if not self.learned.warm or not rows:
            return first, scored.features
        top = np.argsort(-first, kind="stable")[: self.rerank_top]
        _, learned = self.learned.predict(
            ctx.user_id,
            ctx.user,
            [rows[i] for i in top.tolist()],
            ctx.now,
            ctx.surface,
            scored.features[top],
        )
        # The re-ranked ones above all others, each side in its own order; the rest keep
        # their first-ranker order below (their scores shifted under the lowest learned).
        out = first.copy()
        rest = np.ones(len(rows), dtype=bool)
        rest[top] = False
        if rest.any():
            out[rest] = float(learned.min()) - 1e-6 - (first[rest].max() - first[rest])
        out[top] = learned
        return out, scored.features

    def active(self) -> str:
        return "mmoe" if self.learned.warm else "first_ranker"
