"""Adjustments to the ranker's value scores before a page is chosen: the policy's
demotions (e.g. ``unverified_claim`` × 0.5 on ``for_you``) and the user's topic
preferences ("more" / "less" of a hashtag or sensitive topic).

A factor f moves a score towards "worse" for f < 1 and "better" for f > 1 whatever its
sign (v·f when v > 0, v/f otherwise), so a demotion never promotes a negative score."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fyp.catalog.index import CatalogIndex
from fyp.retrieve.base import FeedContext

F64 = npt.NDArray[np.float64]


def scale(values: F64, factors: F64) -> F64:
    return np.where(values > 0, values * factors, values / factors)


class ValueAdjustments:
    name = "value_adjustments"

    def __init__(self, catalog: CatalogIndex) -> None:
        self.catalog = catalog

    def factors(self, ctx: FeedContext, rows: list[int]) -> F64 | None:
        """Each row's factor for this request, or None when every factor is 1."""
        cat = self.catalog
        idx = np.asarray(rows, dtype=np.intp)
        f = cat.demote[ctx.policy_surface][idx]
        demoted = bool((f != 1.0).any())
        prefs = ctx.controls.topic_weights
        if prefs:
            more, less = cat.policy.topic_more_factor, cat.policy.topic_less_factor
            f = f.copy()
            keys = cat.topic_keys
            for i, row in enumerate(rows):
                for topic in keys[row]:
                    pref = prefs.get(topic)
                    if pref is not None:
                        f[i] *= more if pref == "more" else less
        elif not demoted:
            return None
        return f

    def apply(self, ctx: FeedContext, rows: list[int], values: F64) -> F64:
        f = self.factors(ctx, rows)
        return values if f is None else scale(values, f)
