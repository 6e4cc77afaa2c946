"""Filters: each returns the candidates it keeps and those it removed, with a reason.

Cheap filters come first in the pipeline. The eligibility filter runs before ranking
and again as the last gate before the response."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from fyp.catalog.index import CatalogIndex
from fyp.retrieve.base import FeedContext
from fyp.safety.labels import ModerationState
from fyp.state.videos import VideoStats
from fyp.types import Candidate

BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class FilterResult:
    kept: list[Candidate]
    removed: list[tuple[Candidate, str]]


class Filter(Protocol):
    name: str

    def apply(self, ctx: FeedContext, candidates: list[Candidate]) -> FilterResult: ...


class SeenOrServedFilter:
    """Drops what the user has viewed or was served in their recent requests."""

    name = "seen_or_served"

    def apply(self, ctx: FeedContext, candidates: list[Candidate]) -> FilterResult:
        viewed, served = ctx.user.viewed, ctx.user.served_set
        kept: list[Candidate] = []
        removed: list[tuple[Candidate, str]] = []
        for c in candidates:
            if c.row in viewed:
                removed.append((c, "viewed"))
            elif c.row in served:
                removed.append((c, "served"))
            else:
                kept.append(c)
        return FilterResult(kept, removed)


class EligibilityFilter:
    """Drops videos that may not be shown to this user on this surface, by the policy
    (:mod:`fyp.safety.policy`): moderation state, excluding labels, the viewer's age,
    region availability, and a struck creator's capped new uploads. Each removal names
    its rule (``state:limited``, ``label:graphic``, ``age:mature``, ``region``,
    ``creator_strikes``), which ``/metrics`` and the audit report count."""

    name = "eligibility"

    def __init__(self, catalog: CatalogIndex, stats: VideoStats) -> None:
        self.catalog = catalog
        self.stats = stats

    def apply(self, ctx: FeedContext, candidates: list[Candidate]) -> FilterResult:
        if not candidates:
            return FilterResult([], [])
        cat = self.catalog
        rows = np.fromiter((c.row for c in candidates), dtype=np.intp, count=len(candidates))
        ok = cat.eligible[ctx.policy_surface][rows] & cat.region_free[rows]
        ok &= cat.min_age[rows] <= ctx.age
        capped = self._strike_capped(ctx, rows)
        if capped is not None:
            ok &= ~capped
        if ok.all():
            return FilterResult(list(candidates), [])  # the common case: nothing to check
        kept: list[Candidate] = []
        removed: list[tuple[Candidate, str]] = []
        for i, c in enumerate(candidates):
            if ok[i]:
                kept.append(c)
                continue
            why = self.rule(ctx, c.row, capped is not None and bool(capped[i]))
            if why is None:
                kept.append(c)  # only a region restriction that this region passes
            else:
                removed.append((c, why))
        return FilterResult(kept, removed)

    def _strike_capped(self, ctx: FeedContext, rows: npt.NDArray[np.intp]) -> BoolArray | None:
        strikes = self.catalog.policy.strikes
        if not self.catalog.struck_since or ctx.policy_surface not in strikes.surfaces:
            return None
        self.stats.ensure(len(self.catalog))
        flagged: BoolArray = self.catalog.strike_capped[rows]
        return flagged & (self.stats.exposures[rows] >= strikes.impression_cap)

    def rule(self, ctx: FeedContext, row: int, strike_capped: bool = False) -> str | None:
        """The first rule that keeps ``row`` from this request, or None."""
        cat = self.catalog
        policy = cat.policy.surfaces[ctx.policy_surface]
        state = cat.states[row]
        labels = cat.labels[row]
        if state is ModerationState.REMOVED or state in policy.exclude_states:
            return f"state:{state.value}"
        for label in labels:
            if label in cat.excluded_labels or label in policy.exclude_labels:
                return f"label:{label}"
        if cat.min_age[row] > ctx.age:
            ages = cat.policy.min_age
            label = next((x for x in labels if ages.get(x, 0) > ctx.age), "age")
            return f"age:{label}"
        if not cat.region_free[row] and not cat.shown_in(row, ctx.region):
            return "region"
        if strike_capped:
            return "creator_strikes"
        return None


class MutedFilter:
    """Drops what the user muted: creators, hashtags, and keywords (matched in captions
    and hashtags, whatever the case or accents)."""

    name = "muted"

    def __init__(self, catalog: CatalogIndex) -> None:
        self.catalog = catalog

    def apply(self, ctx: FeedContext, candidates: list[Candidate]) -> FilterResult:
        controls = ctx.controls
        if not controls.mutes_anything:
            return FilterResult(candidates, [])
        kept: list[Candidate] = []
        removed: list[tuple[Candidate, str]] = []
        for c in candidates:
            why = self.rule(ctx, c.row)
            if why is None:
                kept.append(c)
            else:
                removed.append((c, why))
        return FilterResult(kept, removed)

    def rule(self, ctx: FeedContext, row: int) -> str | None:
        controls = ctx.controls
        if self.catalog.videos[row].creator_id in controls.creator_set:
            return "creator"
        text = self.catalog.text[row]
        if controls.hashtag_set and not controls.hashtag_set.isdisjoint(text.tags):
            return "hashtag"
        if any(text.matches_keyword(k) for k in controls.keyword_phrases):
            return "keyword"
        return None


class NotInterestedFilter:
    """Drops videos the user marked "not interested", and for a while the creator and
    sound of such videos."""

    name = "not_interested"

    def __init__(self, catalog: CatalogIndex) -> None:
        self.catalog = catalog

    def apply(self, ctx: FeedContext, candidates: list[Candidate]) -> FilterResult:
        # What the user said holds in non-personalised mode too.
        u = ctx.owner
        if not (u.not_interested_videos or u.muted_creators_until or u.muted_sounds_until):
            return FilterResult(candidates, [])
        kept: list[Candidate] = []
        removed: list[tuple[Candidate, str]] = []
        for c in candidates:
            v = self.catalog.videos[c.row]
            if c.row in u.not_interested_videos:
                removed.append((c, "video"))
            elif u.muted_creators_until.get(v.creator_id, 0) > ctx.now:
                removed.append((c, "creator"))
            elif v.sound_id and u.muted_sounds_until.get(v.sound_id, 0) > ctx.now:
                removed.append((c, "sound"))
            else:
                kept.append(c)
        return FilterResult(kept, removed)
