"""Discover: a new (or refreshed) person's first cards look for their taste on purpose.

Popularity alone shows a newcomer the few biggest topics, and a skip of them teaches the
feed only what they do not want. This source offers cards across the catalog's topics
(hashtags grouped by use: :mod:`fyp.catalog.hashtag_topics`), one card per topic and
creator (a card whose hashtags span two topics tests both, and is preferred: a page of
ten cards can then test more than ten topics), the topics drawn in turn by sampling the
topic the person is looking for: each with a probability proportional to a prior (its
number of videos: a big topic is likelier to be someone's) times the odds ratio of their
session finish rate on it against their own (finishes for, quick skips against: the
session evidence of :mod:`fyp.state.users`): probability matching, Thompson sampling
over which topic is the taste. While nothing stands out, a topic skipped more than its
share is not looked for at all (until the evidence fades), nor are videos that carry one
of its hashtags: the search sweeps the topics instead of coming back to the popular
ones. Once something stands out, the search is for another taste, which a person skips
now and then (a minor taste is not finished every time): a topic skipped once or twice
is drawn again, at its lowered weight, and only one skipped again and again stays out.
The draws are the candidates' scores, and the page takes the discover slots in that
order, not the ranker's (which would prefer the popular topics).

The share of the page it gets (:func:`discover_share`) is all of it while nothing the
person watches stands out, a tenth once something does (the rest of the page follows
it: :mod:`fyp.rerank.tastes`; a topic that stands out is not drawn here, the search goes
on elsewhere), either shrinking with the person's long views, to nothing for an
established user, whose feed it leaves as it was."""

from __future__ import annotations

import math
import zlib

import numpy as np

from fyp.catalog.hashtag_topics import HashtagTopics, TopicsCache
from fyp.retrieve.base import FeedContext
from fyp.safety.text import normal_tag
from fyp.state.feedback import LABEL_INDEX
from fyp.state.updater import LogState
from fyp.state.users import UserState, session_lift
from fyp.types import Candidate

SEARCH_SHARE = 1.0  # of a page, while nothing the person finished stands out
# Once something does: the rest of the page follows it. (The cards the topic cap keeps for
# other topics go on searching too: :mod:`fyp.rerank.tastes`. A fifth here, on top of
# those, cost a person re-ranking after every card several of their taste's cards.)
FOUND_SHARE = 0.1
FOUND_LIFT = 1.0  # session lift (log-odds over their own rate) at which something stands out
HALF_AT_LONG_VIEWS = 5.0  # long views at which the share is halved
MIN_SHARE = 0.05  # below this, none
AGAINST = -0.5  # session lift under which a topic (and its hashtags' videos) is not looked for
BURY_SKIPS = 2.5  # ... once a taste is found, only with this many faded skips (three recent)
PENDING = 10  # cards served last whose topics wait for a verdict when not viewed yet
SCAN = 16  # unseen rows of a topic looked at for its most watched one


def discover_share(user: UserState, now: int) -> float:
    """The page share for discovery: :data:`SEARCH_SHARE` while nothing the person
    watches stands out (:func:`_found`), else :data:`FOUND_SHARE`;
    halved at every :data:`HALF_AT_LONG_VIEWS` long views' worth (hyperbolically), 0
    under :data:`MIN_SHARE`."""
    shrink = 1.0 / (1.0 + user.label_counts[LABEL_INDEX["long_view"]] / HALF_AT_LONG_VIEWS)
    if SEARCH_SHARE * shrink < MIN_SHARE:
        return 0.0  # an established user: no need to read their session
    base = FOUND_SHARE if _found(user, now) else SEARCH_SHARE
    return base * shrink if base * shrink >= MIN_SHARE else 0.0


def _found(user: UserState, now: int) -> bool:
    """Whether something the person watches stands out: a hashtag finished this session
    well above their own rate, or one they watched long before (a returning person)
    that they are not skipping now."""
    if user.standout_hashtags(now, FOUND_LIFT):
        return True
    rate = user.session_rate(now)
    return any(
        a.positives >= 1.0 and a.session_lift(now, rate) > AGAINST for a in user.hashtags.values()
    )


class DiscoverSource:
    name = "discover"
    reason = "Something new, to learn what you like"

    def __init__(self, state: LogState, limit: int, topics: TopicsCache | None = None) -> None:
        self.state = state
        self.limit = limit
        self.topics = TopicsCache(state.catalog) if topics is None else topics
        if len(state.catalog):
            self.topics.get()  # built now rather than in a request, where it may be over budget

    def fetch(self, ctx: FeedContext) -> list[Candidate]:
        if self.limit <= 0 or discover_share(ctx.user, ctx.now) == 0.0:
            return []
        topics = self.topics.get()
        if not topics.members:
            return []
        evidence = self._evidence(ctx, topics.topic_of)
        rate = ctx.user.session_rate(ctx.now)
        lifts = {t: session_lift(f, v, 1.0, rate) for t, (f, v) in evidence.items()}
        # A topic that stands out is followed by the rest of the page (the ranked list's
        # lead: :mod:`fyp.rerank.tastes`): the search goes on elsewhere, for another.
        found = {t for t, lift in lifts.items() if lift >= FOUND_LIFT}
        # Skipped more than its share: while nothing stands out, not looked for (nor are
        # videos with its hashtags), so the search sweeps the topics not tried yet. Once
        # something does, the search is for a second taste, which a person skips now and
        # then (a taste is not finished every time): one or two skips only lower its draw
        # (its lift, in the keys below), and it is tried again later in the session; a
        # topic skipped again and again stays out.
        against = {
            t
            for t, (f, v) in evidence.items()
            if lifts[t] < AGAINST and (not found or v - f >= BURY_SKIPS)
        }
        # Sampling without replacement, in proportion to the weights (Gumbel keys), seeded
        # by the request: a replay with the same request ids serves the same pages. The
        # weight, a topic's size times its session odds ratio, stands for how likely it is
        # to be the taste looked for: drawing by it is Thompson sampling over the topics.
        rng = np.random.default_rng(zlib.crc32(ctx.request_id.encode()))
        # Topics of cards served but not viewed yet (a client fetching ahead) wait for
        # their verdict: drawing them again would test one topic twice.
        pending = self._pending(ctx, topics)
        looked_for = [t for t in topics.members if t not in against and t not in found]
        names = [t for t in looked_for if t not in pending] or looked_for
        gumbel = rng.gumbel(size=len(names)).tolist()
        keys = {
            t: math.log(topics.videos[t]) + lifts.get(t, 0.0) + g
            for t, g in zip(names, gumbel, strict=True)
        }
        catalog, views = self.state.catalog, self.state.stats.views
        seen, served = ctx.user.viewed, ctx.user.served_set
        text, videos = catalog.text, catalog.videos
        against_tags = {tag for t in against for tag in topics.members[t]}
        out: list[Candidate] = []
        creators: set[str] = set()
        # Topics a card of the page already tests: a video whose hashtags span two topics
        # tests both (its view is evidence for each of its hashtags), so a page of ten
        # can try more than ten. Only the topics still looked for count.
        covered: set[str] = set()
        open_topics = set(names)
        for topic in sorted(names, key=lambda t: -keys[t]):
            if topic in covered:
                continue
            unseen: list[int] = []
            for tag in topics.members[topic]:
                for r in catalog.rows_by_topic.get(tag, [])[: SCAN * 4]:
                    if (
                        r not in seen
                        and r not in served
                        and videos[r].creator_id not in creators
                        and text[r].tags.isdisjoint(against_tags)
                    ):
                        unseen.append(r)
                        if len(unseen) >= SCAN:
                            break
                if len(unseen) >= SCAN:
                    break
            if not unseen:
                continue
            # Of the topic's unseen cards, the one that also tests the most topics not yet
            # on the page (a greedy set cover), then the most watched.
            spans = {
                r: (topics.topics_of_tags(text[r].tags) & open_topics) - covered for r in unseen
            }
            row = max(unseen, key=lambda r: (len(spans[r]), views[r]))
            covered |= spans[row] | {topic}
            creators.add(videos[row].creator_id)
            out.append(Candidate(row, videos[row].video_id, self.name, self.reason, keys[topic]))
            if len(out) >= self.limit:
                break
        return out

    def _pending(self, ctx: FeedContext, topics: HashtagTopics) -> set[str]:
        """The topics of the last :data:`PENDING` cards served that are not viewed yet."""
        served, viewed, text = ctx.user.served, ctx.user.viewed, self.state.catalog.text
        out: set[str] = set()
        for i in range(max(len(served) - PENDING, 0), len(served)):
            if served[i] not in viewed:
                out |= topics.topics_of_tags(text[served[i]].tags)
        return out

    @staticmethod
    def _evidence(ctx: FeedContext, topic_of: dict[str, str]) -> dict[str, tuple[float, float]]:
        """Each topic's session (finishes, views) for the person, faded: of the topic's
        hashtag with the most session views (a video carries several of a topic's
        hashtags: not summed)."""
        best: dict[str, tuple[float, float]] = {}
        for tag, a in ctx.user.hashtags.items():
            topic = topic_of.get(normal_tag(tag))
            if topic is None or not a.session_views:
                continue
            fade = a.session_fade(ctx.now)
            views = a.session_views * fade
            if views > best.get(topic, (0.0, 0.0))[1]:
                best[topic] = (a.session_finishes * fade, views)
        return best
