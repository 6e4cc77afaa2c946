"""The request path, in the order it runs.

    candidate sources  →  merge  →  filters  →  (top up from the catalog if short)
        →  ranker  →  exploration slots  →  spacing  →  (repeats, only if nothing unseen
        is left)  →  last eligibility gate  →  page  →  side effects

Each stage is an ordered list of small components built in :func:`build_pipeline`;
reading that function is reading the feed.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from fyp.config import Settings
from fyp.events.impressions import ImpressionLog
from fyp.rank.base import FirstRankerValues, Ranker
from fyp.rerank.diversity import CreatorSoundSpacing
from fyp.rerank.exploration import ExplorationSlots
from fyp.rerank.filters import EligibilityFilter, Filter, NotInterestedFilter, SeenOrServedFilter
from fyp.retrieve.backfill import BackfillSource
from fyp.retrieve.base import CandidateSource, FeedContext
from fyp.retrieve.coengagement import CoEngagementSource
from fyp.retrieve.followed import FollowedCreatorsSource
from fyp.retrieve.fresh import FreshSource
from fyp.retrieve.trending import TrendingSource
from fyp.state.updater import FeedState
from fyp.types import Candidate, Impression


@dataclass(frozen=True, slots=True)
class FeedItem:
    video_id: str
    position: int
    source: str
    reason: str
    score: float


@dataclass(frozen=True, slots=True)
class Feed:
    request_id: str
    surface: str
    items: list[FeedItem]


@dataclass
class PipelineCounters:
    """What the pipeline did, for ``/metrics``."""

    source_candidates: Counter[str] = field(default_factory=Counter)
    source_failures: Counter[tuple[str, str]] = field(default_factory=Counter)  # (source, why)
    filtered: Counter[str] = field(default_factory=Counter)  # by filter name
    served_by_source: Counter[str] = field(default_factory=Counter)
    top_ups: int = 0  # requests topped up from the whole catalog


class SideEffect(Protocol):
    def __call__(self, ctx: FeedContext, page: Sequence[Candidate]) -> None: ...


class RecordImpressions:
    """Records what was served (written behind: see :meth:`ImpressionLog.append`) and
    remembers it in the user's state."""

    def __init__(self, log: ImpressionLog, state: FeedState) -> None:
        self.log = log
        self.state = state

    def __call__(self, ctx: FeedContext, page: Sequence[Candidate]) -> None:
        self.log.append(
            [
                Impression(
                    ctx.request_id,
                    ctx.user_id,
                    c.video_id,
                    i,
                    c.source,
                    c.score,
                    ctx.surface,
                    ctx.now,
                    c.reason,
                )
                for i, c in enumerate(page)
            ]
        )
        self.state.record_served(ctx.user_id, [c.row for c in page])


@dataclass
class FeedPipeline:
    state: FeedState
    sources: list[CandidateSource]
    filters: list[Filter]
    backfill: BackfillSource
    ranker: Ranker
    exploration: ExplorationSlots
    spacing: CreatorSoundSpacing
    last_gate: EligibilityFilter
    side_effects: list[SideEffect]
    source_budget_ms: float
    counters: PipelineCounters = field(default_factory=PipelineCounters)
    # Each response's id; also seeds the ``fresh`` source's draws. A simulation that
    # must replay identically sets a seeded factory.
    new_request_id: Callable[[], str] = field(default=lambda: uuid.uuid4().hex)

    def run(self, user_id: str, count: int, surface: str, now: int) -> Feed:
        user = self.state.user(user_id)
        ctx = FeedContext(
            self.new_request_id(), user_id, user, count, surface, self.state.region_of(user), now
        )
        candidates = self._filter(ctx, self._merge(self._retrieve(ctx)))
        if len(candidates) < 3 * count:
            # Too few to choose from (ranking and spacing need room): top up.
            candidates = candidates + self._top_up(ctx, candidates)
        ranked = self.exploration.prioritise(self._rank(ctx, candidates), count)
        # Spacing looks at the best few times a page: far enough down to find a
        # non-clashing item, without building keys for hundreds of candidates.
        page = self.spacing.arrange(ranked[: max(4 * count, 40)], count)
        if len(page) < count:
            page = page + self._repeats(ctx, page)
        page = self.last_gate.apply(ctx, page).kept
        for effect in self.side_effects:
            effect(ctx, page)
        self.counters.served_by_source.update(c.source for c in page)
        return Feed(
            ctx.request_id,
            surface,
            [
                FeedItem(c.video_id, i, c.source, c.reason, round(c.score, 6))
                for i, c in enumerate(page)
            ],
        )

    def _retrieve(self, ctx: FeedContext) -> list[Candidate]:
        out: list[Candidate] = []
        for source in self.sources:
            start = time.perf_counter()
            try:
                got = source.fetch(ctx)
            except Exception as exc:  # fail open: a broken source costs its candidates only
                self.counters.source_failures[(source.name, type(exc).__name__)] += 1
                continue
            if (time.perf_counter() - start) * 1000 > self.source_budget_ms:
                self.counters.source_failures[(source.name, "over_budget")] += 1
                continue
            self.counters.source_candidates[source.name] += len(got)
            out.extend(got)
        return out

    @staticmethod
    def _merge(candidates: list[Candidate]) -> list[Candidate]:
        """One candidate per video; the first source to propose it is credited."""
        by_row: dict[int, Candidate] = {}
        for c in candidates:
            by_row.setdefault(c.row, c)
        return list(by_row.values())

    def _filter(self, ctx: FeedContext, candidates: list[Candidate]) -> list[Candidate]:
        for f in self.filters:
            result = f.apply(ctx, candidates)
            if result.removed:
                self.counters.filtered[f.name] += len(result.removed)
            candidates = result.kept
        return candidates

    def _keep(self, ctx: FeedContext) -> Callable[[Candidate], bool]:
        """Whether a topped-up candidate passes every filter but seen-or-served (muted
        creators, not interested, eligibility hold for top-ups and repeats too)."""
        filters = [f for f in self.filters if f.name != SeenOrServedFilter.name]
        return lambda c: all(f.apply(ctx, [c]).kept for f in filters)

    def _top_up(self, ctx: FeedContext, candidates: list[Candidate]) -> list[Candidate]:
        """Unseen, unserved videos from the whole catalog: at least as many as the page
        lacks, and up to the backfill source's limit so the ranker has a choice."""
        self.counters.top_ups += 1
        excluded = {c.row for c in candidates} | ctx.user.viewed | set(ctx.user.served_set)
        want = max(3 * ctx.count - len(candidates), self.backfill.limit)
        return self.backfill.fetch_excluding(ctx, excluded, want, self._keep(ctx))

    def _repeats(self, ctx: FeedContext, page: list[Candidate]) -> list[Candidate]:
        """Only when nothing unseen is left: videos served but never viewed, the longest
        ago first; after those, viewed ones, most popular first. Either way the item says
        it is a repeat."""
        keep = self._keep(ctx)
        on_page = {c.row for c in page}
        viewed = ctx.user.viewed
        need = ctx.count - len(page)
        served = [r for r in dict.fromkeys(ctx.user.served) if r not in viewed]
        out = self.backfill.fetch_in_order(ctx, (r for r in served if r not in on_page), need, keep)
        on_page.update(c.row for c in out)
        if len(out) < need:
            out += self.backfill.fetch_in_order(
                ctx, self.backfill.popular_rows(on_page), need - len(out), keep
            )
        return self.spacing.arrange(self._rank(ctx, out), need) if out else []

    def _rank(self, ctx: FeedContext, candidates: list[Candidate]) -> list[Candidate]:
        if not candidates:
            return []
        values = self.ranker.values(ctx, [c.row for c in candidates])
        for c, value in zip(candidates, values.tolist(), strict=True):
            c.score = value
        return [candidates[i] for i in np.argsort(-values, kind="stable").tolist()]


def build_pipeline(
    settings: Settings,
    state: FeedState,
    impressions: ImpressionLog,
    ranker: Ranker | None = None,
    extra_sources: Sequence[CandidateSource] = (),
) -> FeedPipeline:
    """The feed, as ordered lists of components. ``ranker``: the first ranker unless
    given (the engine passes the learned one with its fallback); ``extra_sources`` join
    the built-in candidate sources (the engine's learned retrieval)."""
    src = settings.sources
    catalog = state.catalog
    return FeedPipeline(
        state=state,
        sources=[
            FollowedCreatorsSource(state, src.followed_candidates),
            CoEngagementSource(state, src.coengagement_seeds, src.coengagement_candidates),
            TrendingSource(state, src.trending_candidates),
            FreshSource(
                state,
                src.fresh_candidates,
                int(src.fresh_window_hours * 3_600_000),
                src.fresh_exposure_budget,
            ),
            *extra_sources,
        ],
        filters=[  # cheapest first
            SeenOrServedFilter(),
            NotInterestedFilter(catalog),
            EligibilityFilter(catalog),
        ],
        backfill=BackfillSource(state, src.backfill_candidates),
        ranker=ranker or FirstRankerValues(state.ranker),
        exploration=ExplorationSlots(FreshSource.name, settings.feed.fresh_share),
        spacing=CreatorSoundSpacing(catalog, settings.feed.max_per_creator),
        last_gate=EligibilityFilter(catalog),
        side_effects=[RecordImpressions(impressions, state)],
        source_budget_ms=src.budget_ms,
    )
