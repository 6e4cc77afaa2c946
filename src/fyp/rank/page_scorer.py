"""The page scorer: the last word on the order of a request's candidate pool, learned for
what a page is for — will this person engage with this video next — where the rankers
learn a rate given an impression (which, on logged data, penalises exactly the videos an
app showed most).

The score is a weighted sum of a few log-scale signals (:data:`PAGE_FEATURES`): the
candidate's time-decayed engagement on the surface the feed runs on (what people here
engage with now, the strongest prior of what a person engages with next), its
engagement in the user's region, the two-tower retrieval's cosine of the user and the
video (what this person likes), and the serving ranker's value score (what they watch
once shown). :mod:`fyp.rank.scorer_training` chooses the weights on the
engine's own log: the combination of a small grid whose order puts the most of what
users went on to engage with near the top of their pools (mean NDCG@50). A handful of
weights learned from thousands of pools cannot over-fit them, which a gradient-boosted
ranker over two dozen features did (docs/evaluation.md), and a deployment whose users
follow their tastes more than the crowd gets a larger weight on the ranker's value from
the same search.

Until it is trained, or if its features do not match (a model from another version),
:class:`PageScoredRanker` gives the ranker's own values: it fails open to the ranking
underneath it. Exploration slots, spacing, eligibility and safety rules all come after it
in the pipeline, as after any ranker.
"""

from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from fyp.rank.base import Ranker
from fyp.retrieve.base import FeedContext
from fyp.state.feedback import LABEL_INDEX
from fyp.state.updater import LogState

if TYPE_CHECKING:
    from fyp.retrieve.two_tower import LearnedRetrieval

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]

_POSITIVES = ("long_view", "like", "share", "follow", "comment")
_POSITIVE_IDX = [LABEL_INDEX[p] for p in _POSITIVES]

PAGE_FEATURES: tuple[str, ...] = (
    "trending_surface",  # log(1 + decayed engagement on the request's surface)
    "trending_region",  # log(1 + decayed engagement in the user's region)
    "two_tower",  # cosine of the user's and the video's retrieval vectors (0: none)
    "value",  # the serving ranker's value score (Σ weight × P(label): may be negative)
    "video_positives",  # log(1 + positives ever): only breaks ties (fixed small weight)
)
# The weights searched, per feature (surface popularity's is 0 or 1: an order does not
# change with the scale of every weight). The value's reach up to where it orders alone.
WEIGHT_GRID: tuple[tuple[float, ...], ...] = (
    (0.0, 1.0),
    (0.0, 0.3, 1.0),
    (0.0, 1.0, 2.0, 4.0, 8.0),
    (0.0, 0.1, 0.3, 1.0, 3.0, 10.0),
)
_TIE_BREAK = 1e-3  # video_positives' weight
NDCG_AT = 50  # a page's worth of positions: what the search maximises


class PageFeatures:
    """The (n, len(PAGE_FEATURES)) features of a request's candidate rows."""

    def __init__(self, state: LogState, models: LearnedRetrieval | None = None) -> None:
        self.state = state
        self.models = models

    def matrix(self, ctx: FeedContext, rows: list[int], values: F64) -> F64:
        """``values``: the serving ranker's value scores of ``rows``."""
        state = self.state
        idx = np.asarray(rows, dtype=np.intp)
        x = np.empty((len(rows), len(PAGE_FEATURES)))
        x[:, 0] = np.log1p(state.surface_trending.at(ctx.surface, idx, ctx.now))
        x[:, 1] = np.log1p(state.trending.at(ctx.region, idx, ctx.now))
        x[:, 2] = self._two_tower(ctx, rows)
        x[:, 3] = values
        positives = state.stats.label_counts[idx][:, _POSITIVE_IDX].sum(axis=1)
        x[:, 4] = np.log1p(positives)
        return x

    def _two_tower(self, ctx: FeedContext, rows: list[int]) -> F64:
        """The user's and each video's retrieval vectors' inner product (unit vectors:
        a cosine); 0 where there is none (no learned models, not warm, a video not in
        the index), which is what a user with no taste known yet gets from every video."""
        out = np.zeros(len(rows))
        models = self.models
        if models is None or not models.retrieval.warm or len(models.index) == 0:
            return out
        videos = self.state.catalog.videos
        vectors, found = models.index.vectors_of([videos[r].video_id for r in rows])
        if not found.any():
            return out
        history = models.retrieval.pooled(ctx.user.history)
        query = models.retrieval.user_vector(ctx.user_id, history, ctx.now)
        out[found] = vectors[found] @ query
        return out


def _padded(x: F32, y: F32, sizes: list[int]) -> tuple[F64, F64, npt.NDArray[np.bool_]]:
    """The pools as (groups, longest, features) and (groups, longest) arrays, and which
    of their places are padding (no gain; ranked last)."""
    n, width = len(sizes), max(sizes)
    xs = np.zeros((n, width, x.shape[1]))
    ys = np.zeros((n, width))
    pad = np.ones((n, width), dtype=bool)
    start = 0
    for g, size in enumerate(sizes):
        xs[g, :size] = x[start : start + size]
        ys[g, :size] = y[start : start + size]
        pad[g, :size] = False
        start += size
    return xs, ys, pad


def mean_ndcg(scores: F64, gains: F64, k: int = NDCG_AT) -> float:
    """Mean NDCG@k (binary gain) of (groups, n) ``scores`` against ``gains``, over the
    groups with a positive; ties keep the pools' (shuffled) order."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(gains, order, axis=1)
    discount = 1.0 / np.log2(np.arange(2, top.shape[1] + 2))
    dcg = top @ discount
    positives = np.minimum(gains.sum(axis=1), top.shape[1]).astype(np.intp)
    ideal = np.concatenate([[0.0], np.cumsum(discount)])[positives]
    has = ideal > 0
    return float(np.mean(dcg[has] / ideal[has])) if has.any() else 0.0


class PageScorer:
    """The learned weights, or none yet; swapped whole on retraining, so a request reads
    either the old weights or the new ones."""

    def __init__(self) -> None:
        self.weights: F64 | None = None
        self.trained_at: int | None = None  # event time (Unix ms) of the last fit
        self.groups = 0  # pools it was trained on
        self.examples = 0
        self.fit_ndcg = 0.0  # the chosen weights' mean NDCG@50 on those pools
        self.fit_seconds = 0.0

    @property
    def trained(self) -> bool:
        w = self.weights
        return w is not None and len(w) == len(PAGE_FEATURES)

    def fit(self, x: F32, y: F32, sizes: list[int], at_ms: int) -> None:
        """Choose the weights of :data:`WEIGHT_GRID` that order pools (``sizes``: each
        pool's consecutive rows of ``x``, ``y`` 1 for what the user engaged with) best
        by mean NDCG@50; on a tie, the earlier in the grid (the simpler: zeros first)."""
        start = time.perf_counter()
        xs, ys, pad = _padded(x, y, sizes)
        best: tuple[float, F64] | None = None
        for combo in itertools.product(*WEIGHT_GRID):
            if not any(combo):
                continue
            w = np.array([*combo, _TIE_BREAK])
            scores = xs @ w
            scores[pad] = -np.inf
            got = mean_ndcg(scores, ys)
            if best is None or got > best[0]:
                best = (got, w)
        assert best is not None
        self.fit_ndcg, self.weights = best
        self.trained_at = at_ms
        self.groups = len(sizes)
        self.examples = len(y)
        self.fit_seconds = time.perf_counter() - start

    def predict(self, x: F64) -> F64:
        w = self.weights
        assert w is not None
        out: F64 = x @ w
        return out


class PageScoredRanker:
    """A :class:`~fyp.rank.base.Ranker` whose values are the page scorer's once it is
    trained, and the ranker's underneath until then. The features "why this video"
    explains by stay the first ranker's."""

    def __init__(self, inner: Ranker, scorer: PageScorer, features: PageFeatures) -> None:
        self.inner = inner
        self.scorer = scorer
        self.features = features

    def features_of(self, ctx: FeedContext, rows: list[int]) -> F64:
        """The scorer's features of ``rows`` for this request (what training stores)."""
        values, _ = self.inner.values_and_features(ctx, rows)
        return self.features.matrix(ctx, rows, values)

    def values(self, ctx: FeedContext, rows: list[int]) -> F64:
        return self.values_and_features(ctx, rows)[0]

    def values_and_features(self, ctx: FeedContext, rows: list[int]) -> tuple[F64, F64]:
        values, first = self.inner.values_and_features(ctx, rows)
        if not rows or not self.scorer.trained:
            return values, first
        return self.scorer.predict(self.features.matrix(ctx, rows, values)), first

    def active(self) -> str:
        return "page_scorer" if self.scorer.trained else self.inner.active()
