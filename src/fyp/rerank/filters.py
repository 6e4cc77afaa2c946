"""Filters: each returns the candidates it keeps and those it removed, with a reason.

Cheap filters come first in the pipeline. The eligibility filter runs before ranking
and again as the last gate before the response."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fyp.catalog.index import CatalogIndex
from fyp.retrieve.base import FeedContext
from fyp.types import Candidate


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
                removed.append((c, "already viewed"))
            elif c.row in served:
                removed.append((c, "served recently"))
            else:
                kept.append(c)
        return FilterResult(kept, removed)


class EligibilityFilter:
    """Drops videos that may not be shown to this user here: an excluding label, or a
    region the video is not available in."""

    name = "eligibility"

    def __init__(self, catalog: CatalogIndex) -> None:
        self.catalog = catalog

    def apply(self, ctx: FeedContext, candidates: list[Candidate]) -> FilterResult:
        if not candidates:
            return FilterResult([], [])
        label_ok, region_free = self.catalog.label_ok, self.catalog.region_free
        rows = np.fromiter((c.row for c in candidates), dtype=np.intp, count=len(candidates))
        if (label_ok[rows] & region_free[rows]).all():
            return FilterResult(list(candidates), [])  # the common case: nothing to check
        kept: list[Candidate] = []
        removed: list[tuple[Candidate, str]] = []
        for c in candidates:
            if not label_ok[c.row]:
                labels = ",".join(
                    sorted(self.catalog.excluded_labels & set(self.catalog.videos[c.row].labels))
                )
                removed.append((c, f"label {labels}"))
            elif not region_free[c.row] and not self.catalog.shown_in(c.row, ctx.region):
                removed.append((c, f"not available in region {ctx.region}"))
            else:
                kept.append(c)
        return FilterResult(kept, removed)


class NotInterestedFilter:
    """Drops videos the user marked "not interested", and for a while the creator and
    sound of such videos."""

    name = "not_interested"

    def __init__(self, catalog: CatalogIndex) -> None:
        self.catalog = catalog

    def apply(self, ctx: FeedContext, candidates: list[Candidate]) -> FilterResult:
        u = ctx.user
        if not (u.not_interested_videos or u.muted_creators_until or u.muted_sounds_until):
            return FilterResult(candidates, [])
        kept: list[Candidate] = []
        removed: list[tuple[Candidate, str]] = []
        for c in candidates:
            v = self.catalog.videos[c.row]
            if c.row in u.not_interested_videos:
                removed.append((c, "marked not interested"))
            elif u.muted_creators_until.get(v.creator_id, 0) > ctx.now:
                removed.append((c, "creator of a video marked not interested"))
            elif v.sound_id and u.muted_sounds_until.get(v.sound_id, 0) > ctx.now:
                removed.append((c, "sound of a video marked not interested"))
            else:
                kept.append(c)
        return FilterResult(kept, removed)
