"""Tastes: the topics a person is finishing this session, each with its share of them,
and a source of unseen videos of each.

A person may come for two or three things. Once the feed finds one, the ranker leans to
it, and a second taste (finished less often, or found later) is ranked below it: against
the person's session finish rate, which the first taste has raised, it may not look
lifted at all, and the topics source then leaves it out. So a taste is judged against
the person's finish rate *elsewhere* (on the cards of no finished topic): a topic
finished well above that rate is a taste, and its share is its excess finish rate over
that rate, relative to the other tastes'. A rate, not a count: the count of finishes
follows what the feed showed, and a share by count would keep the first taste first.
For the same reason the rates are shrunk towards the tastes' pooled rate for the shares
(not towards the rate elsewhere, as for the test of whether it is a taste): a taste
shown few times would otherwise be pulled down the furthest, and held down for it.
:mod:`fyp.rerank.tastes` allocates a page's taste positions by these shares; this
module's source makes sure each taste has candidates to fill them with.

While the feed is still looking for a newcomer's taste (discovery has a share of their
page), one taste is enough, and one finish, however faded, can make it (as for the
standout hashtags): the source then proposes the one topic they have just finished
too, which :mod:`fyp.rerank.tastes` puts first. A single finish is otherwise below
:data:`MIN_FINISHES` a moment later (it fades), and only co-engagement, where others'
views happen to cluster, would offer more of it."""

from __future__ import annotations

import math

from fyp.catalog.hashtag_topics import HashtagTopics, TopicsCache
from fyp.retrieve.base import FeedContext
from fyp.retrieve.discover import discover_share
from fyp.safety.text import normal_tag
from fyp.state.updater import LogState
from fyp.state.users import SESSION_HALF_LIFE_MS, UserState
from fyp.types import Candidate

MIN_FINISHES = 1.0  # faded session finishes of a topic before it can be a taste
SEARCH_FINISHES = 0.5  # ... while searching for a newcomer's taste: one finish, faded
TASTE_LIFT = 1.0  # log-odds of its finish rate over the rate elsewhere, at least
MIN_EXCESS = 0.2  # ... and this much more of it finished (log-odds run away near 1)
PRIOR = 1.0  # pseudo-views at the rate elsewhere: one finish of one view is a hint
SCAN_PER_TAKEN = 4  # unseen rows read per candidate wanted, at most


def session_tastes(
    user: UserState, now: int, topics: HashtagTopics, searching: bool = False
) -> dict[str, float]:
    """:func:`standout_topics`, if two or more (one taste needs no sharing: the ranker
    follows it), else none; ``searching`` (the feed is still looking for a newcomer's
    taste): one or more, from :data:`SEARCH_FINISHES`."""
    if not user.hashtags:
        return {}  # no evidence at all: nothing stands out
    if searching:
        return standout_topics(user, now, topics, SEARCH_FINISHES)
    out = standout_topics(user, now, topics)
    return out if len(out) >= 2 else {}


def standout_topics(
    user: UserState, now: int, topics: HashtagTopics, min_finishes: float = MIN_FINISHES
) -> dict[str, float]:
    """Topic -> share (summing to 1) of the topics the person is finishing this session
    (``min_finishes`` faded finishes at least) well above their finish rate elsewhere."""
    evidence: dict[str, tuple[float, float]] = {}  # topic -> (finishes, views), faded
    for tag, a in user.hashtags.items():
        if not a.session_views:
            continue
        topic = topics.topic_of.get(normal_tag(tag))
        if topic is None:
            continue
        fade = a.session_fade(now)
        views = a.session_views * fade
        # A video carries several of a topic's hashtags: the most viewed one, not summed.
        if views > evidence.get(topic, (0.0, 0.0))[1]:
            evidence[topic] = (a.session_finishes * fade, views)
    finished = {t: fv for t, fv in evidence.items() if fv[0] >= min_finishes}
    if not finished:
        return {}
    g = 0.5 ** (max(now - user.session_ts, 0) / SESSION_HALF_LIFE_MS)
    rest_f = max(user.session_finishes * g - sum(f for f, _ in finished.values()), 0.0)
    rest_v = max(user.session_views * g - sum(v for _, v in finished.values()), 0.0)
    # Shrunk to their rate over everything: with little evidence elsewhere, a topic
    # stands out only by being finished more than the rest of what they finish.
    elsewhere = (rest_f + PRIOR * user.session_rate(now)) / (rest_v + PRIOR)
    tastes: list[str] = []
    for t, (f, v) in finished.items():
        rate = (f + PRIOR * elsewhere) / (v + PRIOR)
        if rate - elsewhere >= MIN_EXCESS and _logit(rate) - _logit(elsewhere) >= TASTE_LIFT:
            tastes.append(t)
    if not tastes:
        return {}
    # Shared by rates shrunk to the tastes' pooled rate, not to the rate elsewhere: that
    # would pull the taste shown least the furthest down, and its share would follow how
    # little the feed has shown it (the taste test above stays the cautious one).
    pooled = sum(finished[t][0] for t in tastes) / sum(finished[t][1] for t in tastes)
    excess = {
        t: max((finished[t][0] + PRIOR * pooled) / (finished[t][1] + PRIOR) - elsewhere, 1e-9)
        for t in tastes
    }
    total = sum(excess.values())
    return {t: w / total for t, w in excess.items()}


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


class TasteSource:
    """Unseen, unserved videos of each of the person's session tastes (two or more; one
    or more while discovery searches), most viewed first: the ranker orders them,
    :mod:`fyp.rerank.tastes` gives each taste its share of the page."""

    name = "tastes"

    def __init__(self, state: LogState, limit: int, topics: TopicsCache | None = None) -> None:
        self.state = state
        self.limit = limit
        self.topics = TopicsCache(state.catalog) if topics is None else topics

    def fetch(self, ctx: FeedContext) -> list[Candidate]:
        if self.limit <= 0 or not ctx.user.hashtags:
            return []
        topics = self.topics.get()
        searching = discover_share(ctx.user, ctx.now) > 0
        tastes = session_tastes(ctx.user, ctx.now, topics, searching)
        if not tastes:
            return []
        catalog, views = self.state.catalog, self.state.stats.views
        seen, served, videos = ctx.user.viewed, ctx.user.served_set, catalog.videos
        per = max(self.limit // len(tastes), 1)
        out: list[Candidate] = []
        proposed: set[int] = set()
        for topic in sorted(tastes, key=lambda t: -tastes[t]):
            want = SCAN_PER_TAKEN * per
            unseen: list[int] = []
            for tag in topics.members[topic]:
                for r in catalog.rows_by_topic.get(tag, []):
                    if r not in seen and r not in served and r not in proposed:
                        unseen.append(r)
                        proposed.add(r)
                        if len(unseen) >= want:
                            break
                if len(unseen) >= want:
                    break
            reason = f"Because you have been watching #{topic}"
            out += [
                Candidate(r, videos[r].video_id, self.name, reason, tastes[topic])
                for r in sorted(unseen, key=lambda r: -views[r])[:per]
            ]
        return out
