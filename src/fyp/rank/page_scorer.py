"""The page scorer: the last word on the order of a request's candidate pool, learned for
what a page is for — will this person engage with this video next — where the rankers
learn a rate given an impression (which, on logged data, penalises exactly the videos an
app showed most).

A LightGBM lambdarank model over features of each candidate (:data:`PAGE_FEATURES`):
the serving ranker's value score and the first ranker's heads and features, popularity
(views, positives, time-decayed engagement in the user's region and on the surface the
feed runs on, times served), co-engagement with the user's recent positives, the
two-tower logit when the learned models run, the video's age and the user's activity.
:mod:`fyp.rank.scorer_training` trains it from the engine's own log.

Until it is trained, or if its features do not match (a model from another version),
:class:`PageScoredRanker` gives the ranker's own values: it fails open to the ranking
underneath it. Exploration slots, spacing, eligibility and safety rules all come after it
in the pipeline, as after any ranker.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import lightgbm as lgb
import numpy as np
import numpy.typing as npt

from fyp.config import ScorerConfig
from fyp.rank.base import Ranker
from fyp.rank.first_ranker import FEATURES as FIRST_FEATURES
from fyp.retrieve.base import FeedContext
from fyp.state.feedback import LABEL_INDEX
from fyp.state.updater import FeedState
from fyp.types import DAY_MS

if TYPE_CHECKING:
    from fyp.retrieve.two_tower import LearnedRetrieval

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]

_HEADS = ("long_view", "finish", "skip", "like")  # the first ranker's heads read
# The first ranker's per-video features of its long-view head (not those that are the
# same for every candidate of a request: the user's and the surface's lifts, the bias).
_FIRST = ("video_rate", "creator", "sound", "hashtags", "follows", "fresh")
_POSITIVES = ("long_view", "like", "share", "follow", "comment")

PAGE_FEATURES: tuple[str, ...] = (
    "value",
    "first_value",
    *(f"p_{h}" for h in _HEADS),
    *(f"first_{f}" for f in _FIRST),
    "video_views",
    "video_positives",
    "trending_region",
    "trending_surface",
    "exposures",
    "coengagement",
    "two_tower",
    "age_days",
    "user_views",
    "user_positives",
)
_HEAD_IDX = [LABEL_INDEX[h] for h in _HEADS]
_FIRST_IDX = [FIRST_FEATURES.index(f) for f in _FIRST]
_POSITIVE_IDX = [LABEL_INDEX[p] for p in _POSITIVES]


class PageFeatures:
    """The (n, len(PAGE_FEATURES)) features of a request's candidate rows."""

    def __init__(self, state: FeedState, models: LearnedRetrieval | None = None) -> None:
        self.state = state
        self.models = models

    def matrix(self, ctx: FeedContext, rows: list[int], values: F64, first: F64) -> F64:
        """``values``: the serving ranker's value scores of ``rows``; ``first``: the first
        ranker's (n, L, F) features of them."""
        state = self.state
        idx = np.asarray(rows, dtype=np.intp)
        n = len(rows)
        x = np.empty((n, len(PAGE_FEATURES)))
        ranker = state.ranker
        p = 1.0 / (1.0 + np.exp(-ranker.logits(first)))
        x[:, 0] = values
        x[:, 1] = p @ ranker.value_weights
        col = 2
        x[:, col : col + len(_HEADS)] = p[:, _HEAD_IDX]
        col += len(_HEADS)
        x[:, col : col + len(_FIRST)] = first[:, LABEL_INDEX["long_view"], :][:, _FIRST_IDX]
        col += len(_FIRST)
        stats = state.stats
        x[:, col] = np.log1p(stats.views[idx])
        x[:, col + 1] = np.log1p(stats.label_counts[idx][:, _POSITIVE_IDX].sum(axis=1))
        x[:, col + 2] = np.log1p(state.trending.at(ctx.region, idx, ctx.now))
        x[:, col + 3] = np.log1p(state.surface_trending.at(ctx.surface, idx, ctx.now))
        x[:, col + 4] = np.log1p(stats.exposures[idx])
        x[:, col + 5] = self._coengagement(ctx, rows)
        x[:, col + 6] = self._two_tower(ctx, rows)
        created = state.catalog.created_at[idx]  # (a minimum for "unknown")
        known = created > 0
        age = np.maximum(ctx.now - np.where(known, created, 0), 0) / DAY_MS
        x[:, col + 7] = np.where(known, np.log1p(age), np.nan)
        x[:, col + 8] = np.log1p(ctx.user.views)
        x[:, col + 9] = np.log1p(len(ctx.user.recent_positives))
        return x

    def _coengagement(self, ctx: FeedContext, rows: list[int]) -> F64:
        """Summed similarity to the user's recent positives, newer ones weighing more
        (what the co-engagement source ranks by), for every row."""
        n = self.state.settings.sources.coengagement_seeds
        seeds = list(ctx.user.recent_positives)[-n:][::-1] if n > 0 else []
        out = np.zeros(len(rows))
        if not seeds:
            return out
        scores: dict[int, float] = {}
        each = self.state.coengagement.neighbours_of_each(seeds)
        for age, neighbours in enumerate(each):
            recency = 0.9**age
            for row, sim in neighbours:
                scores[row] = scores.get(row, 0.0) + recency * sim
        for i, row in enumerate(rows):
            out[i] = scores.get(row, 0.0)
        return out

    def _two_tower(self, ctx: FeedContext, rows: list[int]) -> F64:
        """The user's and each video's retrieval vectors' inner product; NaN where there
        is none (no learned models, not warm, a video not in the index)."""
        out = np.full(len(rows), np.nan)
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


class PageScorer:
    """The learned model (a LightGBM booster), or none yet; swapped whole on retraining,
    so a request reads either the old model or the new one."""

    def __init__(self) -> None:
        self.booster: lgb.Booster | None = None
        self.trained_at: int | None = None  # event time (Unix ms) of the last fit
        self.groups = 0  # pools it was trained on
        self.examples = 0
        self.fit_seconds = 0.0

    @property
    def trained(self) -> bool:
        b = self.booster
        return b is not None and b.num_feature() == len(PAGE_FEATURES)

    def fit(self, x: F32, y: F32, sizes: list[int], cfg: ScorerConfig, at_ms: int) -> None:
        """Lambdarank on pools (``sizes``: each pool's consecutive rows of ``x``), graded
        1 for what the user engaged with, 0 otherwise."""
        start = time.perf_counter()
        params = {
            "objective": "lambdarank",
            "metric": "ndcg",
            "eval_at": [50],
            "lambdarank_truncation_level": 50,  # a page's worth of positions
            "num_leaves": cfg.leaves,
            "learning_rate": cfg.learning_rate,
            "min_data_in_leaf": cfg.min_data_in_leaf,
            "seed": cfg.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": 1,  # the other core serves
            "verbosity": -1,
        }
        data = lgb.Dataset(x, y, group=sizes, feature_name=list(PAGE_FEATURES), free_raw_data=True)
        self.booster = lgb.train(params, data, num_boost_round=cfg.trees)
        self.trained_at = at_ms
        self.groups = len(sizes)
        self.examples = len(y)
        self.fit_seconds = time.perf_counter() - start

    def predict(self, x: F64) -> F64:
        booster = self.booster
        assert booster is not None
        out = np.asarray(booster.predict(x, num_threads=1), dtype=np.float64)
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
        values, first = self.inner.values_and_features(ctx, rows)
        return self.features.matrix(ctx, rows, values, first)

    def values(self, ctx: FeedContext, rows: list[int]) -> F64:
        return self.values_and_features(ctx, rows)[0]

    def values_and_features(self, ctx: FeedContext, rows: list[int]) -> tuple[F64, F64]:
        values, first = self.inner.values_and_features(ctx, rows)
        if not rows or not self.scorer.trained:
            return values, first
        return self.scorer.predict(self.features.matrix(ctx, rows, values, first)), first

    def active(self) -> str:
        return "page_scorer" if self.scorer.trained else self.inner.active()
