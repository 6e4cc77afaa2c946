"""Several tastes in proportion: a page's taste positions shared by the tastes' shares.

The ranker decides how many of a page's positions go to the person's tastes (and where);
this decides which taste each of them goes to. For a person with two or more session
tastes (:func:`fyp.retrieve.tastes.session_tastes`), each position the ranked list gives
to one of them goes to the taste furthest below its share of the taste cards so far —
counting the cards served just before the page, so that the shares hold over a
sequence of small pages (a client that asks again after every card shows each page's
first card only) as over one page of ten — and takes that taste's best-ranked
candidate. So the tastes are interleaved in proportion rather than the first found
taking the page. The ranker's other cards stay, but for one thing: while the search for
the person's tastes goes on, the positions of other topics past the ranker's own page
(those the topic cap reaches down for) take the search's cards first
(:func:`search_elsewhere`). The exploration slots, and, after this, the spacing, the
caps and the sequence rules hold as for any page."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Sequence

from fyp.catalog.hashtag_topics import TopicsCache
from fyp.catalog.index import CatalogIndex
from fyp.retrieve.tastes import standout_topics
from fyp.state.users import UserState
from fyp.types import Candidate


def allocate(
    ranked: list[Candidate],
    shares: dict[str, float],
    topic_of: Callable[[int], str | None],
    before: Sequence[int] = (),
) -> list[Candidate]:
    """``ranked`` (best first) with the candidates of the ``shares``' topics reassigned
    over the positions they hold: each such position to the topic with the largest
    deficit (its share of the taste cards so far, ``before``'s included, plus this one,
    less its count), taking that topic's best remaining candidate; a topic with none
    left yields to the next. ``before``: the rows served just before, oldest first."""
    if len(shares) < 2:
        return ranked
    topics = [topic_of(c.row) for c in ranked]
    queues: dict[str, deque[Candidate]] = {t: deque() for t in shares}
    for c, t in zip(ranked, topics, strict=True):
        if t in queues:
            queues[t].append(c)
    counts: Counter[str] = Counter()
    for row in before:
        t = topic_of(row)
        if t in shares:
            counts[t] += 1
    out: list[Candidate] = []
    for c, t in zip(ranked, topics, strict=True):
        if t not in shares:
            out.append(c)
            continue
        n = sum(counts.values()) + 1
        best = max(
            (s for s in shares if queues[s]),
            key=lambda s: (shares[s] * n - counts[s], shares[s]),
        )
        out.append(queues[best].popleft())
        counts[best] += 1
    return out


class TasteAllocation:
    """:func:`allocate` by the person's session tastes, topics as the catalog's hashtags
    group them."""

    name = "taste_allocation"

    def __init__(self, catalog: CatalogIndex, topics: TopicsCache) -> None:
        self.catalog = catalog
        self.topics = topics

    def apply(
        self,
        ranked: list[Candidate],
        user: UserState,
        now: int,
        before: Sequence[int] = (),
        searching: str | None = None,
        count: int = 0,
    ) -> list[Candidate]:
        """``ranked`` allocated over the person's tastes (two or more); ``searching``:
        the source still looking for their tastes (:func:`fyp.retrieve.discover.searching`),
        whose candidates then come first in the positions of other topics once a taste
        is found, past the first ``count`` (see :func:`search_elsewhere`)."""
        topics = self.topics.get()
        shares = standout_topics(user, now, topics)
        if not shares:
            return ranked
        text = self.catalog.text

        def topic_of(row: int) -> str | None:
            return topics.topic_of_video(text[row].tags)

        ranked = allocate(ranked, shares, topic_of, before)
        if searching is not None:
            ranked = search_elsewhere(ranked, set(shares), topic_of, searching, count)
        return ranked


def search_elsewhere(
    ranked: list[Candidate],
    tastes: set[str],
    topic_of: Callable[[int], str | None],
    source: str,
    keep: int = 0,
) -> list[Candidate]:
    """``ranked`` with the positions past the first ``keep`` held by candidates of other
    topics than ``tastes`` (of a known topic) given first to ``source``'s candidates of
    such topics, in their own order (best source score first), then to the rest in the
    ranker's.

    Once one taste is found the ranker fills a page with it, and the few cards of other
    topics that the topic cap then reaches down for are the ranker's next best of them:
    popular cards, which teach nothing. A person may have a second taste the search had
    not reached; those positions are where to look for it, at no cost to the first. The
    first ``keep`` (a page's) stay the ranker's: other topics it ranks that high are
    its own choice, not the cap's."""
    topics = [topic_of(c.row) for c in ranked]
    elsewhere = [i >= keep and t is not None and t not in tastes for i, t in enumerate(topics)]
    looking = [c for c, e in zip(ranked, elsewhere, strict=True) if e and c.source == source]
    if not looking:
        return ranked
    looking.sort(key=lambda c: -c.source_score)
    rest = (c for c, e in zip(ranked, elsewhere, strict=True) if e and c.source != source)
    fill = iter([*looking, *rest])
    return [next(fill) if e else c for c, e in zip(ranked, elsewhere, strict=True)]
