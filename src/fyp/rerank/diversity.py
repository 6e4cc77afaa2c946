"""Spacing: no two consecutive videos from one creator or with one sound.

Greedy, best score first: each position takes the highest-scoring remaining candidate
that shares neither creator nor sound with the previous item; only when no remaining
candidate can avoid a clash does it take the best one anyway. So the guarantee is
local: an adjacent pair shares a creator or sound only if, at that position, every
remaining candidate shared one with the previous item.

Within that rule, a creator already on the page ``max_per_creator`` times is passed
over while another non-clashing candidate remains, so one favourite creator does not
fill the page.

Below both, a topic (hashtags grouped: :mod:`fyp.catalog.hashtag_topics`) already
``max_per_topic`` times on the page and the cards before it is passed over the same way
while another candidate fits: however fast the feed leans to a taste, a window of cards
keeps a floor of variety (two in ten from elsewhere by default), and a taste does not
become a rabbit hole.

All three rules reach back over the items served just before the page (``before``): a client
that asks for small pages, so that each swipe shapes the next cards, gets the same
spacing as one that asks for ten at a time (a page of one would otherwise never be
spaced at all)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

from fyp.catalog.hashtag_topics import HashtagTopics, TopicsCache
from fyp.catalog.index import CatalogIndex
from fyp.types import Candidate

SPARE_OTHERS = 4  # candidates of other topics looked at past the page's count (for the cap)
# (indices on the page so far, candidate index) -> may it come next (a hard rule)
Admits = Callable[[list[int], int], bool]


def clashes(a: tuple[str, str | None], b: tuple[str, str | None]) -> bool:
    """Whether two (creator, sound) pairs share a creator or a (non-empty) sound."""
    return a[0] == b[0] or (a[1] is not None and a[1] == b[1])


def space_out(
    ranked: Sequence[Candidate],
    keys: Sequence[tuple[str, str | None]],
    count: int,
    max_per_creator: int = 2,
    admits: Admits | None = None,
    before: Sequence[tuple[str, str | None]] = (),
    topics: Sequence[str | None] = (),
    max_per_topic: int = 0,
    before_topics: Sequence[str | None] = (),
    topic_window: int = 10,
) -> list[int]:
    """Indices into ``ranked`` (sorted best first) for a page of ``count`` items.
    ``admits``: a hard rule (label caps, sensitive-topic dispersal) no pick may break,
    even when that leaves the page short. ``before``: the (creator, sound) of the items
    served just before this page, oldest first: the first pick is spaced from the last
    of them, and each counts towards its creator's cap. ``topics``: each candidate's
    topic (None: none), capped at ``max_per_topic`` (0: no cap) in every run of
    ``topic_window`` cards (``before_topics``, the topics of the cards served before,
    then the page), below the creator cap."""
    remaining = list(range(len(ranked)))
    page: list[int] = []
    on_page: dict[str, int] = {}
    for creator, _ in before:
        on_page[creator] = on_page.get(creator, 0) + 1
    # The topics of the last window - 1 cards: a pick makes a run of ``topic_window``.
    recent: deque[str | None] = deque(before_topics, maxlen=max(topic_window - 1, 1))

    def under_topic_cap(i: int) -> bool:
        topic = topics[i] if max_per_topic and topics else None
        return topic is None or recent.count(topic) < max_per_topic

    while remaining and len(page) < count:
        # Only the candidates the hard rule lets come next (one barred now may fit later).
        allowed = remaining if admits is None else [i for i in remaining if admits(page, i)]
        if not allowed:
            break
        pick = 0
        if page or before or (max_per_topic and recent):
            prev = keys[page[-1]] if page else before[-1] if before else None
            first_fit = creator_fit = -1
            for j, i in enumerate(allowed):
                if prev is not None and clashes(keys[i], prev):
                    continue
                if first_fit < 0:
                    first_fit = j
                if on_page.get(keys[i][0], 0) < max_per_creator:
                    if under_topic_cap(i):
                        creator_fit = j
                        break
                    if creator_fit < 0:
                        creator_fit = j
            pick = creator_fit if creator_fit >= 0 else max(first_fit, 0)
        i = allowed[pick]
        remaining.remove(i)
        page.append(i)
        on_page[keys[i][0]] = on_page.get(keys[i][0], 0) + 1
        if topics:
            recent.append(topics[i])
    return page


_TOPIC_MEMO = 65_536  # rows whose topic is kept, at most (then it starts again)


class CreatorSoundSpacing:
    name = "creator_sound_spacing"

    def __init__(
        self,
        catalog: CatalogIndex,
        max_per_creator: int = 2,
        topics: TopicsCache | None = None,
        max_per_topic: int = 0,
        window: int = 10,
    ) -> None:
        """``window``: the run of cards the caps hold over (a default page's length)."""
        self.catalog = catalog
        self.max_per_creator = max_per_creator
        self.topics = topics
        self.max_per_topic = max_per_topic
        self.window = window
        # (topics, catalog version, row -> topic): a request asks for a hundred rows'
        # topics, most of them asked for by the requests before (the same videos
        # rank high for many people); valid while neither the topics nor the catalog
        # (a video's hashtags) change.
        self._memo: tuple[HashtagTopics, int, dict[int, str | None]] | None = None

    def topic_of(self, row: int) -> str | None:
        """The row's topic, as the topic cap counts it (None without a cap)."""
        if self.topics is None or not self.max_per_topic:
            return None
        return self._topics()(row)

    def _topics(self) -> Callable[[int], str | None]:
        """The topic of a row, from the memo as of now (checked once here, not once
        per row: a request asks for a hundred rows' topics; the topics and the catalog
        do not change within it). With a topic cap."""
        assert self.topics is not None
        topics = self.topics.get()
        memo = self._memo
        if (
            memo is None
            or memo[0] is not topics
            or memo[1] != self.catalog.version
            or len(memo[2]) >= _TOPIC_MEMO
        ):
            memo = self._memo = (topics, self.catalog.version, {})
        of_row, text, of_video = memo[2], self.catalog.text, topics.topic_of_video

        def topic_of(row: int) -> str | None:
            try:
                return of_row[row]
            except KeyError:
                topic = of_row[row] = of_video(text[row].tags)
                return topic

        return topic_of

    def looked_at(
        self, ranked: list[Candidate], look: int, count: int
    ) -> tuple[list[Candidate], str | None]:
        """The candidates spacing looks at: the best ``look``, and, with a topic cap, at
        least ``count`` (a window's length at least) + :data:`SPARE_OTHERS` of topics
        other than the commonest among those, from further down (the best few dozen are
        often all one topic once a taste is found: without these the cap would have
        nothing to pass over to; the spare ones for when some clash with the card before
        by creator or sound). Also that topic, if fewer were found (the caller may look
        for some elsewhere), else None."""
        head = ranked[:look]
        if self.topics is None or not self.max_per_topic:
            return head, None
        topic_of = self._topics()
        counts: dict[str | None, int] = {}
        for c in head:
            t = topic_of(c.row)
            counts[t] = counts.get(t, 0) + 1
        top = max(counts, key=lambda t: counts[t], default=None)
        if top is None or counts[top] < self.max_per_topic:
            return head, None
        # As many for a small page as for a window's (a client re-ranking after every
        # card asks for a few): the same few others, blocked by the creator cap or a
        # clash, let a run of one topic through in pages of four.
        want = max(count, self.window) + SPARE_OTHERS
        others = [c for c in head if topic_of(c.row) != top]
        for c in ranked[look:]:
            if len(others) >= want:
                break
            if topic_of(c.row) != top:
                others.append(c)
                head.append(c)
        return head, (top if len(others) < want else None)

    def arrange(
        self,
        ranked: list[Candidate],
        count: int,
        guard: Callable[[Sequence[int], int], bool] | None = None,
        before: Sequence[int] = (),
    ) -> list[Candidate]:
        """The page; ``guard(rows on the page so far, row)``: a hard rule over rows;
        ``before``: the rows served just before the page, oldest first: the creator cap
        counts the last ``window - count`` of them (at least one, for the spacing), so it
        holds over a window's length whatever the page size, and the topic cap the last
        ``window - 1``, so it holds over every run of ``window`` cards."""
        videos = self.catalog.videos
        keys = [(videos[c.row].creator_id, videos[c.row].sound_id) for c in ranked]
        reach = max(self.window - count, 1)
        earlier = [(videos[r].creator_id, videos[r].sound_id) for r in before[-reach:]]
        admits: Admits | None = None
        if guard is not None:
            g = guard

            def admits(page: list[int], i: int) -> bool:
                return g([ranked[j].row for j in page], ranked[i].row)

        topics: list[str | None] = []
        before_topics: list[str | None] = []
        if self.topics is not None and self.max_per_topic:
            topic_of = self._topics()
            topics = [topic_of(c.row) for c in ranked]
            before_topics = [topic_of(r) for r in before[-(self.window - 1) :]]
        picks = space_out(
            ranked,
            keys,
            count,
            self.max_per_creator,
            admits,
            earlier,
            topics,
            self.max_per_topic,
            before_topics,
            self.window,
        )
        return [ranked[i] for i in picks]
