"""The request path, in the order it runs.

    candidate sources  →  merge  →  filters  →  (top up from the catalog if short)
        →  ranker  →  value adjustments  →  exploration slots  →  spacing and sequence
        rules  →  (repeats, only if nothing unseen is left)  →  last gate  →  page
        →  reasons  →  side effects

A user in non-personalised mode takes a shorter path: regional popularity, the same
filters (over a blank state: nothing from their history), adjustments, spacing and
sequence rules, last gate.

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
import numpy.typing as npt

from fyp.catalog.hashtag_topics import TopicsCache
from fyp.config import Settings
from fyp.events.impressions import ImpressionLog
from fyp.rank.base import FirstRankerValues, Ranker
from fyp.rank.explain import Explainer
from fyp.rerank.adjustments import ValueAdjustments
from fyp.rerank.diversity import SPARE_OTHERS, CreatorSoundSpacing
from fyp.rerank.exploration import ExplorationSlots
from fyp.rerank.filters import (
    EligibilityFilter,
    Filter,
    MutedFilter,
    NotInterestedFilter,
    SeenOrServedFilter,
)
from fyp.rerank.sequence import SequenceRules
from fyp.rerank.tastes import TasteAllocation
from fyp.retrieve.backfill import BackfillSource
from fyp.retrieve.base import CandidateSource, CitingSource, FeedContext
from fyp.retrieve.coengagement import CoEngagementSource
from fyp.retrieve.discover import DiscoverSource, discover_share
from fyp.retrieve.followed import FollowedCreatorsSource
from fyp.retrieve.fresh import FreshSource
from fyp.retrieve.non_personalised import NonPersonalisedSource
from fyp.retrieve.tastes import TasteSource
from fyp.retrieve.topics import TopicSource
from fyp.retrieve.trending import TrendingSource
from fyp.state.feedback import LABELS
from fyp.state.updater import LogState
from fyp.types import Candidate, Impression
from fyp.users.directory import UserDirectory

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class FeedItem:
    video_id: str
    position: int
    source: str
    reason: str
    score: float
    signals: tuple[tuple[str, float], ...] = ()


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
    # Calls that returned after the source's time budget: their candidates are kept
    # (the work is done; dropping it saves nothing), the lateness is counted.
    source_late: Counter[str] = field(default_factory=Counter)
    # (policy surface, filter, rule) -> candidates removed
    filtered_by_rule: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    gate_removed: Counter[str] = field(default_factory=Counter)  # caught by the last gate
    served_by_source: Counter[str] = field(default_factory=Counter)
    top_ups: int = 0  # requests topped up from the whole catalog

    @property
    def filtered(self) -> Counter[str]:
        """Candidates removed, by filter name."""
        out: Counter[str] = Counter()
        for (_, name, _), n in self.filtered_by_rule.items():
            out[name] += n
        return out


class SideEffect(Protocol):
    def __call__(
        self, ctx: FeedContext, page: Sequence[Candidate], removed: Counter[tuple[str, str]]
    ) -> None: ...


class RecordImpressions:
    """Records what was served, with its reason and signals, and what the filters removed
    (written behind: see :meth:`ImpressionLog.append`), and remembers it in the state
    the page was served from."""

    def __init__(self, log: ImpressionLog, state: LogState) -> None:
        self.log = log
        self.state = state

    def __call__(
        self, ctx: FeedContext, page: Sequence[Candidate], removed: Counter[tuple[str, str]]
    ) -> None:
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
                    c.signals,
                )
                for i, c in enumerate(page)
            ],
            removed,
            ctx.policy_surface,
            ctx.now,
        )
        rows = [c.row for c in page]
        self.state.record_served_to(ctx.user, rows)
        if ctx.person is not None:  # non-personalised: the person saw them too (the
            # videos' exposures are counted once, above)
            ctx.person.remember_served(rows, self.state.settings.feed.served_memory)


@dataclass
class FeedPipeline:
    state: LogState
    sources: list[CandidateSource]
    filters: list[Filter]
    backfill: BackfillSource
    ranker: Ranker
    exploration: ExplorationSlots
    tastes: TasteAllocation
    spacing: CreatorSoundSpacing
    adjustments: ValueAdjustments
    rules: SequenceRules
    last_gate: list[Filter]
    explainer: Explainer
    side_effects: list[SideEffect]
    source_budget_ms: float
    users: UserDirectory
    non_personalised: NonPersonalisedSource
    counters: PipelineCounters = field(default_factory=PipelineCounters)
    # Each response's id; also seeds the ``fresh`` source's draws. A simulation that
    # must replay identically sets a seeded factory.
    new_request_id: Callable[[], str] = field(default=lambda: uuid.uuid4().hex)
    # The sources that word their served candidates' reasons once the page is chosen.
    citing: list[CitingSource] = field(init=False)

    def __post_init__(self) -> None:
        self.citing = [s for s in self.sources if isinstance(s, CitingSource)]

    def context(
        self, user_id: str, count: int, surface: str, now: int, request_id: str | None = None
    ) -> FeedContext:
        """One request's context: the user's state (a blank one in non-personalised
        mode), region, policy surface, age band and controls."""
        controls = self.users.controls_of(user_id)
        person = self.state.user(user_id)
        region = self.state.region_of(person)
        user = person if controls.personalized else self.users.blank_state(user_id, region)
        return FeedContext(
            self.new_request_id() if request_id is None else request_id,
            user_id,
            user,
            count,
            surface,
            region,
            now,
            self.state.settings.policy.surface_policy(surface),
            self.users.age_of(user_id),
            controls,
            None if user is person else person,
        )

    def run(self, user_id: str, count: int, surface: str, now: int) -> Feed:
        ctx = self.context(user_id, count, surface, now)
        controls = ctx.controls
        removed: Counter[tuple[str, str]] = Counter()
        if controls.personalized:
            page = self._personalised(ctx, removed)
        else:
            page = self._non_personalised(ctx, removed)
        page = self._last_gate(ctx, page)
        for source in self.citing:
            try:
                source.cite(ctx, [c for c in page if c.source == source.name])
            except Exception as exc:  # fail open: its cards keep the source's generic reason
                self.counters.source_failures[(source.name, type(exc).__name__)] += 1
        self.explainer.explain(ctx, page, personal=controls.personalized)
        for effect in self.side_effects:
            effect(ctx, page, removed)
        self.counters.served_by_source.update(c.source for c in page)
        return Feed(
            ctx.request_id,
            surface,
            [
                FeedItem(c.video_id, i, c.source, c.reason, round(c.score, 6), c.signals)
                for i, c in enumerate(page)
            ],
        )

    def candidates(
        self, ctx: FeedContext, removed: Counter[tuple[str, str]] | None = None
    ) -> list[Candidate]:
        """The personalised pool a page is chosen from: every source's candidates,
        merged, filtered, topped up from the catalog if too few to choose from."""
        candidates = self._filter(
            ctx, self._merge(self._retrieve(ctx)), Counter() if removed is None else removed
        )
        if len(candidates) < 3 * ctx.count:
            # Too few to choose from (ranking and spacing need room): top up.
            candidates = candidates + self._top_up(ctx, candidates)
        return candidates

    def _personalised(self, ctx: FeedContext, removed: Counter[tuple[str, str]]) -> list[Candidate]:
        count = ctx.count
        candidates = self.candidates(ctx, removed)
        before = self._served_before(ctx)
        discovery = (DiscoverSource.name, discover_share(ctx.user, ctx.now))
        # Two or more tastes: the ranker's taste positions shared by their shares; while
        # discovery still searches (a newcomer), what they are finishing leads.
        ranked = self.tastes.apply(
            self._rank(ctx, candidates), ctx.user, ctx.now, before, searching=discovery[1] > 0
        )
        ranked = self.exploration.prioritise(ranked, count, ctx.request_id, discovery)
        # Spacing looks at the best few times a page: far enough down to find a
        # non-clashing item, without building keys for hundreds of candidates. Past
        # that, only if the sequence rules (caps, sensitive topics) left the page short.
        guard = self.rules.guard(ctx)
        looked_at, one_topic = self.spacing.looked_at(ranked, max(4 * count, 40), count)
        if one_topic is not None:
            # All the sources proposed is one topic: a few from elsewhere, for the cap.
            looked_at += self._rank(
                ctx, self._elsewhere(ctx, candidates, one_topic, count + SPARE_OTHERS)
            )
        page = self.spacing.arrange(looked_at, count, guard, before)
        if len(page) < count and guard is not None and len(ranked) > max(4 * count, 40):
            page = self.spacing.arrange(ranked, count, guard, before)
        if len(page) < count:
            page = page + self._repeats(ctx, page)
        return page

    def _non_personalised(
        self, ctx: FeedContext, removed: Counter[tuple[str, str]]
    ) -> list[Candidate]:
        """Regional popularity in its own order (no ranker: it reads the user), after
        the same filters, adjustments, spacing and sequence rules."""
        limit = max(5 * ctx.count, 60)
        candidates: list[Candidate] = []
        while True:
            got = self.non_personalised.fetch_limit(ctx, limit)
            candidates = self._filter(ctx, got, removed)
            if len(candidates) >= 3 * ctx.count or len(got) < limit or limit > 20_000:
                break
            limit *= 4  # filters (mutes, eligibility) took most: look further down
        if not candidates:
            return self._repeats(ctx, [])
        popularity = np.array([c.source_score for c in candidates], dtype=np.float64)
        ranked = self._order(ctx, candidates, popularity)
        # Spaced within the page only: the person's own earlier cards would make this
        # feed differ from one person to the next, which it must not.
        page = self.spacing.arrange(ranked, ctx.count, self.rules.guard(ctx))
        if len(page) < ctx.count:  # everything served in this mode: repeats, oldest first
            page = page + self._repeats(ctx, page)
        return page

    def _served_before(self, ctx: FeedContext) -> list[int]:
        """The rows served to the person just before this page that spacing reaches back
        over: the last one (no clash across pages), and enough that the creator and topic
        caps hold over a default page's length of the sequence whatever the page size."""
        served = ctx.owner.served
        n = max(1, self.state.settings.feed.default_count - 1)
        return [served[i] for i in range(max(len(served) - n, 0), len(served))]

    def _last_gate(self, ctx: FeedContext, page: list[Candidate]) -> list[Candidate]:
        """Every rule checked once more on the finished page: whatever scored or
        proposed a video, an ineligible or muted one never leaves."""
        for f in self.last_gate:
            result = f.apply(ctx, page)
            if result.removed:
                self.counters.gate_removed[f.name] += len(result.removed)
            page = result.kept
        bad = set(self.rules.violations(ctx, [c.row for c in page]))
        if bad:
            self.counters.gate_removed[self.rules.name] += len(bad)
            page = [c for i, c in enumerate(page) if i not in bad]
        return page

    def _retrieve(self, ctx: FeedContext) -> list[Candidate]:
        out: list[Candidate] = []
        for source in self.sources:
            start = time.perf_counter()
            try:
                got = source.fetch(ctx)
            except Exception as exc:  # fail open: a broken source costs its candidates only
                self.counters.source_failures[(source.name, type(exc).__name__)] += 1
                continue
            # Sources run one after another in this thread, so none is still running
            # when its budget ends: a late one is only counted. Dropping its finished
            # candidates would save no time and, on a loaded machine, cost exactly the
            # cards a slow source exists for (a newcomer's discovery, say).
            if (time.perf_counter() - start) * 1000 > self.source_budget_ms:
                self.counters.source_late[source.name] += 1
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

    def _filter(
        self,
        ctx: FeedContext,
        candidates: list[Candidate],
        removed: Counter[tuple[str, str]],
    ) -> list[Candidate]:
        for f in self.filters:
            result = f.apply(ctx, candidates)
            if result.removed:
                for _, rule in result.removed:
                    removed[(f.name, rule)] += 1
                    self.counters.filtered_by_rule[(ctx.policy_surface, f.name, rule)] += 1
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

    def _elsewhere(
        self, ctx: FeedContext, candidates: list[Candidate], topic: str, count: int
    ) -> list[Candidate]:
        """Up to ``count`` unseen, unserved videos of topics other than ``topic`` from the
        whole catalog, most viewed first, through the same filters as a top-up."""
        excluded = {c.row for c in candidates} | ctx.user.viewed | set(ctx.user.served_set)
        keep = self._keep(ctx)
        topic_of = self.spacing.topic_of
        return self.backfill.fetch_excluding(
            ctx, excluded, count, lambda c: topic_of(c.row) != topic and keep(c)
        )

    def _repeats(self, ctx: FeedContext, page: list[Candidate]) -> list[Candidate]:
        """Only when nothing unseen is left: videos served but never viewed, the longest
        ago first; after those, viewed ones, most popular first. Either way the item says
        it is a repeat."""
        keep = self._keep(ctx)
        viewed = ctx.user.viewed
        need = ctx.count - len(page)
        served = [r for r in dict.fromkeys(ctx.user.served) if r not in viewed]
        guard = self.rules.guard(ctx, [c.row for c in page])
        # The sequence rules may pass over every candidate looked at (the one video
        # left on a sensitive topic just served): look four times as far, until the
        # page is full or there is nothing more to look at.
        want = need
        while True:
            on_page = {c.row for c in page}
            out = self.backfill.fetch_in_order(
                ctx, (r for r in served if r not in on_page), want, keep
            )
            more = len(out) == want  # served ones left unlooked at
            if not more:
                on_page.update(c.row for c in out)
                limit = 2 * want - len(out)  # past the need: for the sequence rules
                popular = self.backfill.popular_rows(on_page)
                out += self.backfill.fetch_in_order(ctx, popular, limit, keep)
                more = len(out) == 2 * want
            if not out:
                return []
            repeats = self.spacing.arrange(self._rank(ctx, out), need, guard)
            if len(repeats) == need or not more:
                return repeats
            want *= 4

    def _rank(self, ctx: FeedContext, candidates: list[Candidate]) -> list[Candidate]:
        if not candidates:
            return []
        raw, features = self.ranker.values_and_features(ctx, [c.row for c in candidates])
        for i, c in enumerate(candidates):
            c.features = (features, i)  # what the explainer reads, for served items
        return self._order(ctx, candidates, raw)

    def _order(self, ctx: FeedContext, candidates: list[Candidate], raw: F64) -> list[Candidate]:
        """``candidates`` best first by ``raw`` scores after the value adjustments
        (policy demotions, topic preferences), each with its adjusted score."""
        values = self.adjustments.apply(ctx, [c.row for c in candidates], raw)
        for c, value in zip(candidates, values.tolist(), strict=True):
            c.score = value
        return [candidates[i] for i in np.argsort(-values, kind="stable").tolist()]


def build_pipeline(
    settings: Settings,
    state: LogState,
    impressions: ImpressionLog,
    ranker: Ranker | None = None,
    extra_sources: Sequence[CandidateSource] = (),
    users: UserDirectory | None = None,
) -> FeedPipeline:
    """The feed, as ordered lists of components. ``ranker``: the first ranker unless
    given (the engine passes the learned one with its fallback); ``extra_sources`` join
    the built-in candidate sources (the engine's learned retrieval); ``users``: profiles
    and controls (none known, unless given)."""
    src = settings.sources
    catalog = state.catalog
    backfill = BackfillSource(state, src.backfill_candidates)
    adjustments = ValueAdjustments(catalog)
    # Filters keep no state between calls: the last gate reuses them.
    not_interested = NotInterestedFilter(catalog)
    eligibility = EligibilityFilter(catalog, state.stats)
    muted = MutedFilter(catalog)
    topics = TopicsCache(catalog)  # hashtags grouped by use: discovery's arms, spacing's topics
    return FeedPipeline(
        state=state,
        sources=[
            FollowedCreatorsSource(state, src.followed_candidates),
            CoEngagementSource(state, src.coengagement_seeds, src.coengagement_candidates),
            TopicSource(state, src.topic_seeds, src.topic_candidates),
            DiscoverSource(state, src.discover_candidates, topics),
            TasteSource(state, src.taste_candidates, topics),
            TrendingSource(state, src.trending_candidates),
            FreshSource(
                state,
                src.fresh_candidates,
                int(src.fresh_window_hours * 3_600_000),
                src.fresh_exposure_budget,
            ),
            *extra_sources,
        ],
        filters=[SeenOrServedFilter(), not_interested, eligibility, muted],  # cheapest first
        backfill=backfill,
        ranker=ranker or FirstRankerValues(state.ranker),
        exploration=ExplorationSlots(FreshSource.name, settings.feed.fresh_share),
        tastes=TasteAllocation(catalog, topics, DiscoverSource.name),
        spacing=CreatorSoundSpacing(
            catalog,
            settings.feed.max_per_creator,
            topics,
            settings.feed.max_per_topic,
            settings.feed.default_count,
        ),
        adjustments=adjustments,
        rules=SequenceRules(catalog),
        last_gate=[eligibility, muted, not_interested],
        explainer=Explainer(state.ranker, catalog, adjustments),
        side_effects=[RecordImpressions(impressions, state)],
        source_budget_ms=src.budget_ms,
        users=users or UserDirectory(settings.feed.history_size, len(LABELS)),
        non_personalised=NonPersonalisedSource(state, backfill),
    )
