"""Why each served video is there: the strongest signals behind its score, and a
sentence a person understands.

Signals are the first ranker's per-feature contributions to the value score
(:meth:`FirstRanker.explain`), named for people, plus any factor that moved the score
(a policy demotion, a topic preference). The sentence starts from the candidate source's
own (which source proposed it is never rewritten) and adds the user's strongest personal
signal where there is evidence for it ("You watched 3 videos by @ana this week")."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from fyp.catalog.index import CatalogIndex
from fyp.rank.first_ranker import FEATURES, FirstRanker
from fyp.rerank.adjustments import ValueAdjustments
from fyp.retrieve.base import FeedContext
from fyp.types import DAY_MS, Candidate

SIGNAL_NAMES: dict[str, str] = {
    "video_rate": "video_engagement",  # how this video does with everyone
    "user_lift": "your_engagement_level",
    "creator": "creator_affinity",
    "sound": "sound_affinity",
    "hashtags": "hashtag_affinity",
    "follows": "follows_creator",
    "fresh": "freshness",
    "creator_rate": "creator_engagement",  # how the creator's videos do with everyone
    "hashtag_rate": "hashtag_engagement",
    "duration": "video_length",  # the length's two features are one signal
    "duration_sq": "video_length",
}
# The signals' names, and the (features, signals) 0/1 matrix that sums the first ranker's
# per-feature shares into them (every feature but the bias and the surface: where in the
# app the feed runs is no reason for one video over another).
_SIGNALS = list(dict.fromkeys(SIGNAL_NAMES[f] for f in FEATURES if f in SIGNAL_NAMES))
_TO_SIGNALS = np.array(
    [[float(SIGNAL_NAMES.get(f) == s) for s in _SIGNALS] for f in FEATURES], dtype=np.float64
)
TOP_SIGNALS = 3
_WEEK_MS = 7 * DAY_MS


class Explainer:
    def __init__(
        self, first: FirstRanker, catalog: CatalogIndex, adjustments: ValueAdjustments
    ) -> None:
        self.first = first
        self.catalog = catalog
        self.adjustments = adjustments

    def explain(self, ctx: FeedContext, page: Sequence[Candidate], personal: bool) -> None:
        """Set each candidate's ``signals`` and, with ``personal``, add the user's
        strongest personal signal to its ``reason``."""
        if not page:
            return
        rows = [c.row for c in page]
        factors = self.adjustments.factors(ctx, rows)
        week = functools.cache(lambda: self._week_views(ctx))  # one pass, if ever needed
        top: list[list[tuple[str, float]]] | None = None
        if personal:
            # The features the ranker scored them with (a repeat or a late top-up may
            # not have been ranked with the rest: computed now).
            scored = [c.features for c in page]
            if all(f is not None for f in scored):
                features = np.stack([f[0][f[1]] for f in scored if f is not None])
            else:
                features = self.first.features(ctx.user, rows, ctx.now, ctx.surface)
            shares = self.first.contributions(features) @ _TO_SIGNALS  # (n, S)
            strongest = np.argsort(-np.abs(shares), axis=1)[:, :TOP_SIGNALS].tolist()
            values = shares.tolist()
            top = [
                [(_SIGNALS[j], round(values[i][j], 4)) for j in order if abs(values[i][j]) >= 1e-4]
                for i, order in enumerate(strongest)
            ]
        for i, c in enumerate(page):
            signals = [] if top is None else top[i]
            if factors is not None and factors[i] != 1.0:
                signals.append(("adjustment_factor", round(float(factors[i]), 4)))
            c.signals = tuple(signals)
            if personal and signals:
                clause = self._personal_clause(ctx, c.row, signals[0][0], week)
                if clause and clause not in c.reason:
                    c.reason = f"{c.reason}. {clause}"

    def _week_views(self, ctx: FeedContext) -> Counter[str]:
        """The user's views of each creator in the last 7 days (of their recent history)."""
        since = ctx.now - _WEEK_MS
        videos = self.catalog.videos
        user = ctx.user
        return Counter(
            videos[r].creator_id
            for r, ts in zip(user.history, user.history_ts, strict=True)
            if ts >= since
        )

    def _personal_clause(
        self, ctx: FeedContext, row: int, top: str, week: Callable[[], Counter[str]]
    ) -> str | None:
        video = self.catalog.videos[row]
        user = ctx.user
        if top == "creator_affinity":
            n = week().get(video.creator_id, 0)
            if n:
                videos = "video" if n == 1 else "videos"
                return f"You watched {n} {videos} by @{video.creator_id} this week"
        if top == "hashtag_affinity" and video.hashtags:
            best = max(
                video.hashtags,
                key=lambda t: user.hashtags[t].positives if t in user.hashtags else 0.0,
            )
            if best in user.hashtags and user.hashtags[best].positives >= 1:
                tag = best if best.startswith("#") else f"#{best}"
                return f"You often enjoy {tag} videos"
        if top == "follows_creator" and video.creator_id in user.follows:
            return f"You follow @{video.creator_id}"
        return None
