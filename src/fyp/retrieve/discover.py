"""Discover: a new (or refreshed) person's first cards look for their taste on purpose.

Popularity alone shows a newcomer the few biggest topics, and a skip of them teaches the
feed only what they do not want. This source offers cards across many topics (the
catalog's hashtags, as uploaders tag them) chosen by Thompson sampling on the person's
session evidence: each topic's finish rate is drawn from a Beta of its finishes and quick
skips (plus a prior at the person's own finish rate), and the topics with the highest
draws each give one of their most watched unseen videos, one per creator. Unknown topics
are drawn often, skipped ones less, finished ones more: the search narrows as evidence
comes in. The share of the page it gets
(:func:`discover_share`) shrinks with the person's long views, to nothing for an
established user, whose feed it leaves as it was."""

from __future__ import annotations

import zlib

import numpy as np

from fyp.retrieve.base import FeedContext
from fyp.safety.text import normal_tag
from fyp.state.feedback import LABEL_INDEX
from fyp.state.updater import FeedState
from fyp.state.users import UserState, session_lift
from fyp.types import Candidate

SHARE = 0.5  # of a page, for a person with no long view yet
HALF_AT_LONG_VIEWS = 5.0  # long views at which the share is halved
MIN_SHARE = 0.05  # below this, none
TOPICS = 60  # the commonest topics drawn from
PRIOR = 2.0  # pseudo-views of an unknown topic, at the person's session finish rate
AGAINST = -0.5  # session lift (log-odds) under which a hashtag's videos are not looked for
SCAN = 64  # unseen rows of a topic looked at for its most watched one


def discover_share(user: UserState) -> float:
    """The page share for discovery: :data:`SHARE`, halved at every
    :data:`HALF_AT_LONG_VIEWS` long views' worth (hyperbolically), 0 under MIN_SHARE."""
    share = SHARE / (1.0 + user.label_counts[LABEL_INDEX["long_view"]] / HALF_AT_LONG_VIEWS)
    return share if share >= MIN_SHARE else 0.0


class DiscoverSource:
    name = "discover"
    reason = "Something new, to learn what you like"

    def __init__(self, state: FeedState, limit: int) -> None:
        self.state = state
        self.limit = limit
        self._topics: tuple[int, list[str]] | None = None  # (catalog size, topics)

    def fetch(self, ctx: FeedContext) -> list[Candidate]:
        if self.limit <= 0 or discover_share(ctx.user) == 0.0:
            return []
        topics = self._topic_list()
        if not topics:
            return []
        finishes, skips = self._evidence(ctx, topics)
        # Seeded by the request: a replay with the same request ids serves the same pages.
        rng = np.random.default_rng(zlib.crc32(ctx.request_id.encode()))
        # The prior: PRIOR views at the person's own finish rate this session, so an
        # unknown topic is drawn as likely as their average card, not as a coin flip.
        rate = ctx.user.session_rate(ctx.now)
        draws = rng.beta(PRIOR * rate + finishes, PRIOR * (1.0 - rate) + skips)
        catalog, views = self.state.catalog, self.state.stats.views
        seen, served = ctx.user.viewed, ctx.user.served_set
        # A video that also carries a hashtag the person skips (as against their own
        # rate) is not looked for: a topic has several hashtags, and one of them skipped
        # says as much about its videos under the others.
        against = {
            topics[j]
            for j in np.flatnonzero(skips > 0).tolist()
            if session_lift(finishes[j], finishes[j] + skips[j], 1.0, rate) < AGAINST
        }
        text = catalog.text
        out: list[Candidate] = []
        creators: set[str] = set()
        proposed: set[int] = set()
        for i in np.argsort(-draws).tolist():
            unseen = [
                r
                for r in catalog.rows_by_topic.get(topics[i], [])[: SCAN * 4]
                if r not in seen and r not in served and r not in proposed
            ][:SCAN]
            unseen = [
                r
                for r in unseen
                if catalog.videos[r].creator_id not in creators and not (text[r].tags & against)
            ]
            if not unseen:
                continue
            row = max(unseen, key=lambda r: views[r])
            proposed.add(row)
            creators.add(catalog.videos[row].creator_id)
            out.append(Candidate(row, catalog.videos[row].video_id, self.name, self.reason))
            if len(out) >= self.limit:
                break
        return out

    def _evidence(self, ctx: FeedContext, topics: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Each topic's session finishes and quick skips (faded to now) for the person."""
        index = {t: i for i, t in enumerate(topics)}
        finishes, skips = np.zeros(len(topics)), np.zeros(len(topics))
        for tag, a in ctx.user.hashtags.items():
            i = index.get(normal_tag(tag))
            if i is None or not a.session_views:
                continue
            fade = a.session_fade(ctx.now)
            finishes[i] += a.session_finishes * fade
            skips[i] += (a.session_views - a.session_finishes) * fade
        return finishes, skips

    def _topic_list(self) -> list[str]:
        """The commonest topics of the catalog, recomputed when the catalog grows. A
        hashtag on everything (#fyp) is one too: its draws fall as it is skipped with the
        rest."""
        catalog = self.state.catalog
        n = len(catalog)
        if self._topics is None or self._topics[0] != n:
            sized = [(len(rows), t) for t, rows in catalog.rows_by_topic.items() if rows]
            topics = [t for _, t in sorted(sized, reverse=True)][:TOPICS]
            self._topics = (n, topics)
        return self._topics[1]
