"""Topics as uploaders tag them: the catalog's commoner hashtags grouped by how often they
are used together.

A topic usually has several hashtags (#dance, #dancetok, #dancetips...), and a search
for a person's taste that tries them one by one learns about a topic one hashtag at a
time. Grouped, one skipped #dance card says something about #dancetok too. Each hashtag
joins the commoner hashtag it is most often used with, when at least :data:`LINK` of its
videos carry that one too and that is :data:`LIFT` times more than of all videos (a
hashtag on everything, #fyp, is on a third of #cooking's videos because it is on a third
of all videos); the groups' roots are the topics. A hashtag used alongside every topic
alike (#fyp, #viral) is no topic: its videos' other hashtags spread over more groups'
worth than :data:`GENERIC_SPREAD` and a :data:`GENERIC_SHARE` of all the groups (the
exponential of their entropy), and it belongs to none.

Built from the catalog alone (no user data), rebuilt when the catalog has grown by a
tenth since the last build.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from dataclasses import dataclass, field

from fyp.catalog.index import CatalogIndex

TAGS = 300  # the commonest hashtags grouped; rarer ones belong to no topic
MIN_VIDEOS = 5  # a hashtag on fewer videos belongs to no topic
LINK = 0.2  # share of a hashtag's videos that carry the commoner one it joins
LIFT = 2.0  # ... at least this many times the share of all videos that carry it
# A generic hashtag is used alongside more groups' worth than this (and than this share
# of all the groups): the exponential of the entropy of its partners' groups.
GENERIC_SPREAD = 3.0
GENERIC_SHARE = 1 / 3
SAMPLE = 50_000  # videos read for co-use, at most
REBUILD_GROWTH = 0.1  # rebuilt when the catalog has grown by this share


@dataclass(frozen=True, slots=True)
class HashtagTopics:
    """``topic_of``: folded hashtag -> its topic's root hashtag (topic hashtags only);
    ``members``: root -> its hashtags, commonest first; ``videos``: root -> its
    hashtags' videos (a video counted once per hashtag of the topic it carries)."""

    topic_of: dict[str, str]
    members: dict[str, tuple[str, ...]]
    videos: dict[str, int]
    # topic_of_video's answers by tag set: a feed asks for those of about ninety
    # candidates (the diversity caps), the same videos from one request to the next.
    _of_tags: dict[frozenset[str], str | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def topics_of_tags(self, tags: frozenset[str]) -> set[str]:
        return {t for t in (self.topic_of.get(tag) for tag in tags) if t is not None}

    def topic_of_video(self, tags: frozenset[str]) -> str | None:
        """The topic most of a video's (folded) hashtags belong to; of equals, the one
        with more videos; None if none does."""
        try:
            return self._of_tags[tags]
        except KeyError:
            topic = self._of_tags[tags] = self._topic_of_video(tags)
            return topic

    def _topic_of_video(self, tags: frozenset[str]) -> str | None:
        counts: dict[str, int] = {}
        for tag in tags:
            t = self.topic_of.get(tag)
            if t is not None:
                counts[t] = counts.get(t, 0) + 1
        if not counts:
            return None
        return max(counts, key=lambda t: (counts[t], self.videos[t], t))


def build_topics(catalog: CatalogIndex) -> HashtagTopics:
    sized = heapq.nlargest(
        TAGS, ((len(rows), tag) for tag, rows in catalog.rows_by_topic.items() if tag)
    )
    common = [(n, tag) for n, tag in sized if n >= MIN_VIDEOS]
    rank = {tag: i for i, (_, tag) in enumerate(common)}
    together: dict[str, Counter[str]] = {tag: Counter() for tag in rank}
    carried: Counter[str] = Counter()  # videos of the sample carrying each hashtag
    # Co-use read from at most SAMPLE videos, evenly spread: enough to tell which
    # hashtags go together, in bounded time whatever the catalog's size.
    sample = catalog.text[:: max(len(catalog.text) // SAMPLE, 1)]
    for tags in sample:
        known = [t for t in tags.tags if t in rank]
        carried.update(known)
        if len(known) > 1:
            for a in known:
                together[a].update(b for b in known if b != a)
    # Twice: a topic's hashtag may join a generic one the first time (used with it on
    # a share of its videos by chance); the second grouping leaves the generic ones out.
    generic: set[str] = set()
    for _ in range(2):
        root = _group(common, rank, together, carried, len(sample), generic)
        groups = len(set(root.values()))
        generic |= {
            tag
            for tag in rank
            if root.get(tag) == tag
            and _spread(together[tag], root) > max(GENERIC_SPREAD, GENERIC_SHARE * groups)
        }
    topic_of = {tag: r for tag, r in root.items() if r not in generic}
    members: dict[str, list[str]] = {}
    videos: Counter[str] = Counter()
    for n, tag in common:
        r = topic_of.get(tag)
        if r is not None:
            members.setdefault(r, []).append(tag)
            videos[r] += n
    return HashtagTopics(topic_of, {r: tuple(m) for r, m in members.items()}, dict(videos))


def _group(
    common: list[tuple[int, str]],
    rank: dict[str, int],
    together: dict[str, Counter[str]],
    carried: Counter[str],
    sampled: int,
    generic: set[str],
) -> dict[str, str]:
    """Each hashtag (but the ``generic`` ones) -> its group's root (see the module)."""
    root: dict[str, str] = {}
    for _, tag in common:  # commonest first: a tag's partner is settled before it
        if tag in generic:
            continue
        n = carried[tag]
        partners = [
            (c, b)
            for b, c in together[tag].items()
            if rank[b] < rank[tag]
            and b not in generic
            and c >= LINK * n
            and c * sampled >= LIFT * n * carried[b]
        ]
        root[tag] = root[max(partners)[1]] if partners else tag
    return root


def _spread(partners: Counter[str], root: dict[str, str]) -> float:
    """The effective number of topics (groups) a hashtag is used alongside: the
    exponential of the entropy of its partners' groups."""
    by_group: Counter[str] = Counter()
    for tag, n in partners.items():
        by_group[root.get(tag, tag)] += n
    total = sum(by_group.values())
    if not total:
        return 0.0
    return math.exp(-sum(n / total * math.log(n / total) for n in by_group.values()))


class TopicsCache:
    """:func:`build_topics` of a catalog, rebuilt as it grows."""

    def __init__(self, catalog: CatalogIndex) -> None:
        self.catalog = catalog
        self._built: tuple[int, HashtagTopics] | None = None

    def get(self) -> HashtagTopics:
        n = len(self.catalog)
        if self._built is None or n > self._built[0] * (1 + REBUILD_GROWTH) or n < self._built[0]:
            self._built = (n, build_topics(self.catalog))
        return self._built[1]
