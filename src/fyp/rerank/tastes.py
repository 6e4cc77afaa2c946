"""Several tastes in proportion: a page's taste positions shared by the tastes' shares.

The ranker decides how many of a page's positions go to the person's tastes (and where);
this decides which taste each of them goes to. For a person with two or more session
tastes (:func:`fyp.retrieve.tastes.session_tastes`), each position the ranked list gives
to one of them goes to the taste furthest below its share of the taste cards so far —
counting the cards served just before the page, so that the shares hold over a
sequence of small pages (a client that asks again after every card shows each page's
first card only) as over one page of ten — and takes that taste's best-ranked
candidate. So the tastes are interleaved in proportion rather than the first found
taking the page. Nothing else moves: the ranker's other cards, the exploration slots,
and, after this, the spacing, the caps and the sequence rules, as for any page.

While the feed is still looking for a newcomer's taste (discovery has a share of their
page: :func:`fyp.retrieve.discover.discover_share`), the topics they are finishing well
above their rate elsewhere (:func:`fyp.retrieve.tastes.session_tastes`, one or more)
lead the ranked list in the ranker's order, the discovery source's other candidates next
(in its draws' order), the rest after them (:func:`lead`). From one finish
of little else, the ranker's values still favour the popular cards they have been
skipping (popularity outweighs a single view's evidence) and would give them several
of the next ten cards; a person who has just shown what they came for should get
it. The topic cap still keeps a floor of other topics in every window; those cards go
to the search for a second taste (rather than back to the popular cards skipped), beside
the discovery slots. An established user's feed is the ranker's, as before."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Collection, Sequence

from fyp.catalog.hashtag_topics import TopicsCache
from fyp.catalog.index import CatalogIndex
from fyp.retrieve.tastes import session_tastes
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


def lead(
    ranked: list[Candidate],
    topics: Collection[str],
    topic_of: Callable[[int], str | None],
    then: str | None = None,
) -> list[Candidate]:
    """``ranked`` (best first) with the candidates of ``topics`` ahead of the others,
    in its order; ``then``: a source whose other candidates come next, best first by
    their source scores; the rest after them, in its order."""
    first: list[Candidate] = []
    second: list[Candidate] = []
    rest: list[Candidate] = []
    for c in ranked:
        if topic_of(c.row) in topics:
            first.append(c)
        elif c.source == then:
            second.append(c)
        else:
            rest.append(c)
    if not first:
        return ranked
    return first + sorted(second, key=lambda c: -c.source_score) + rest


class TasteAllocation:
    """:func:`allocate` by the person's session tastes, topics as the catalog's hashtags
    group them."""

    name = "taste_allocation"

    def __init__(self, catalog: CatalogIndex, topics: TopicsCache, then: str | None = None) -> None:
        """``then``: the searching source whose candidates follow the tastes' while
        searching (:func:`lead`)."""
        self.catalog = catalog
        self.topics = topics
        self.then = then

    def apply(
        self,
        ranked: list[Candidate],
        user: UserState,
        now: int,
        before: Sequence[int] = (),
        searching: bool = False,
    ) -> list[Candidate]:
        """``ranked`` allocated over the person's session tastes (two or more);
        ``searching``: the feed is still looking for their taste (a newcomer): the
        tastes, one or more, lead it."""
        topics = self.topics.get()
        shares = session_tastes(user, now, topics, searching)
        if not shares:
            return ranked
        text = self.catalog.text

        def topic_of(row: int) -> str | None:
            return topics.topic_of_video(text[row].tags)

        if searching:
            ranked = lead(ranked, shares, topic_of, self.then)
        return allocate(ranked, shares, topic_of, before)
