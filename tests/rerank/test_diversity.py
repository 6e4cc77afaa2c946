"""Creator / sound spacing: the documented guarantees, checked with hypothesis.

Keys are (creator, sound) pairs of candidates already sorted best first, so a lower index
is a better candidate."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fyp.catalog.hashtag_topics import TopicsCache
from fyp.catalog.index import CatalogIndex
from fyp.rerank.diversity import CreatorSoundSpacing, clashes, space_out
from fyp.types import Candidate, Video

Key = tuple[str, str | None]

keys_strategy = st.lists(
    st.tuples(st.sampled_from("abcd"), st.sampled_from([None, "s1", "s2", "s3", "s4"])),
    max_size=30,
)


def candidates(n: int) -> list[Candidate]:
    return [Candidate(i, f"v{i}", "test", "") for i in range(n)]


def check_page(keys: list[Key], count: int, max_per_creator: int, page: list[int]) -> None:
    """Every documented guarantee of one page of ``space_out``."""
    n = len(keys)
    assert len(page) == min(count, n)
    assert len(set(page)) == len(page), "a candidate repeated"
    assert all(0 <= i < n for i in page), "not a candidate"
    if page:
        assert page[0] == 0, "the page must open with the best candidate"
    remaining = set(range(n)) - {page[0]} if page else set()
    on_page = Counter(keys[i][0] for i in page[:1])
    for pos in range(1, len(page)):
        prev, pick = keys[page[pos - 1]], page[pos]
        fits = {i for i in remaining if not clashes(keys[i], prev)}
        under_cap = {i for i in fits if on_page[keys[i][0]] < max_per_creator}
        if clashes(keys[pick], prev):
            # The local guarantee: a clash only when nothing left could avoid one.
            assert not fits, f"clash at {pos} although {sorted(fits)} fit"
            assert pick == min(remaining), "when everything clashes, the best is taken"
        elif under_cap:
            assert pick == min(under_cap), f"position {pos}: not the best fitting candidate"
        else:
            # Every fitting creator is at its cap: the best fitting one is taken anyway.
            assert pick == min(fits)
        remaining.discard(pick)
        on_page[keys[pick][0]] += 1


@settings(max_examples=300, deadline=None)
@given(keys=keys_strategy, count=st.integers(0, 35), max_per_creator=st.integers(1, 4))
def test_space_out_keeps_every_documented_guarantee(
    keys: list[Key], count: int, max_per_creator: int
) -> None:
    page = space_out(candidates(len(keys)), keys, count, max_per_creator)
    check_page(keys, count, max_per_creator, page)


@st.composite
def spaceable(draw: st.DrawFn) -> tuple[list[Key], int]:
    """Candidates from at least two creators, every sound distinct (or none), and a page
    small enough that the most frequent creator cannot be all that is left."""
    creators = draw(st.lists(st.sampled_from("abcde"), min_size=2, max_size=30))
    assume(len(set(creators)) >= 2)
    sounds = draw(st.lists(st.booleans(), min_size=len(creators), max_size=len(creators)))
    keys: list[Key] = [
        (c, f"sound-{i}" if has_sound else None)
        for i, (c, has_sound) in enumerate(zip(creators, sounds, strict=True))
    ]
    most = max(Counter(creators).values())
    count = draw(st.integers(1, len(keys) - most + 1))
    return keys, count


@settings(max_examples=300, deadline=None)
@given(case=spaceable(), max_per_creator=st.integers(1, 4))
def test_with_two_creators_and_distinct_sounds_no_neighbours_clash(
    case: tuple[list[Key], int], max_per_creator: int
) -> None:
    keys, count = case
    page = space_out(candidates(len(keys)), keys, count, max_per_creator)
    assert len(page) == count
    for a, b in itertools.pairwise(page):
        assert not clashes(keys[a], keys[b]), (keys[a], keys[b])


def _arrange_case(
    keys: list[Key], order: list[int]
) -> tuple[CatalogIndex, list[Candidate], list[Key]]:
    """A catalog whose row i has ``keys[i]``, candidates ranked in ``order`` (a
    permutation of the rows, so that a candidate's place and its row differ), and the
    keys in ranked order."""
    catalog = CatalogIndex()
    catalog.upsert([Video(f"v{i}", c, 1_000, s) for i, (c, s) in enumerate(keys)])
    assert [catalog.row_of[f"v{i}"] for i in range(len(keys))] == list(range(len(keys)))
    ranked = [Candidate(row, f"v{row}", "test", "") for row in order]
    return catalog, ranked, [keys[row] for row in order]


@settings(max_examples=200, deadline=None)
@given(
    case=keys_strategy.flatmap(
        lambda keys: st.tuples(st.just(keys), st.permutations(range(len(keys))))
    ),
    count=st.integers(0, 35),
    max_per_creator=st.integers(1, 4),
)
def test_arrange_keeps_every_documented_guarantee_of_the_catalogs_rows(
    case: tuple[list[Key], list[int]], count: int, max_per_creator: int
) -> None:
    """``arrange`` on candidates whose rows are not their places: each page keeps every
    guarantee of ``check_page`` for the creators and sounds the catalog holds for the
    candidates' rows, and returns the ranked objects themselves.

    Mutations it catches (the test it replaces compared ``arrange`` with ``space_out``,
    which ``arrange`` calls, so it passed both): ``arrange`` taking the keys of catalog
    row ``i`` for the candidate in place ``i``, or a ``space_out`` that no longer spaces
    (``pick = 0``)."""
    keys, order = case
    catalog, ranked, ranked_keys = _arrange_case(keys, order)
    page = CreatorSoundSpacing(catalog, max_per_creator).arrange(ranked, count)
    place = {id(c): i for i, c in enumerate(ranked)}
    assert all(id(c) in place for c in page), "not one of the ranked objects"
    check_page(ranked_keys, count, max_per_creator, [place[id(c)] for c in page])


@settings(max_examples=200, deadline=None)
@given(
    case=keys_strategy.flatmap(
        lambda keys: st.tuples(st.just(keys), st.permutations(range(len(keys))))
    ),
    count=st.integers(0, 35),
    barred=st.sets(st.integers(0, 29)),
    cap=st.integers(0, 2),
)
def test_arrange_never_breaks_its_guard_and_stops_only_when_nothing_else_fits(
    case: tuple[list[Key], list[int]], count: int, barred: set[int], cap: int
) -> None:
    """The guard (a hard rule over catalog rows: here at most ``cap`` of the ``barred``
    rows on a page) is asked with the rows on the page so far and holds on every page;
    the page is short of ``count`` only when every candidate left is refused.

    Mutation it catches: the guard asked with places in ``ranked`` instead of rows."""
    keys, order = case
    catalog, ranked, _ = _arrange_case(keys, order)

    def guard(rows: Sequence[int], row: int) -> bool:
        return row not in barred or sum(r in barred for r in rows) < cap

    page = CreatorSoundSpacing(catalog, 2).arrange(ranked, count, guard)
    rows = [c.row for c in page]
    assert len(set(rows)) == len(rows)
    assert sum(r in barred for r in rows) <= cap
    if len(page) < min(count, len(ranked)):
        left = {c.row for c in ranked} - set(rows)
        assert left and all(not guard(rows, r) for r in left)


def test_clashes_on_a_shared_creator_or_a_shared_sound_but_not_on_no_sound() -> None:
    assert clashes(("a", None), ("a", "s1"))
    assert clashes(("a", "s1"), ("b", "s1"))
    assert not clashes(("a", None), ("b", None))
    assert not clashes(("a", "s1"), ("b", "s2"))


def test_a_known_page() -> None:
    keys: list[Key] = [("a", "s1"), ("a", "s2"), ("b", "s1"), ("c", "s3"), ("a", "s4")]
    # 0; then 1 (creator a) and 2 (sound s1) clash: 3; then 1; then 2 (clashes with nothing).
    assert space_out(candidates(5), keys, 4, max_per_creator=5) == [0, 3, 1, 2]


def test_a_favourite_creator_is_capped_while_others_remain() -> None:
    keys: list[Key] = [("a", None), ("b", None), ("a", None), ("c", None), ("a", None), ("d", None)]
    assert space_out(candidates(6), keys, 6, max_per_creator=2) == [0, 1, 2, 3, 5, 4]
    assert space_out(candidates(6), keys, 6, max_per_creator=3) == [0, 1, 2, 3, 4, 5]


def test_a_single_creator_still_fills_the_page() -> None:
    keys: list[Key] = [("a", f"s{i}") for i in range(4)]
    assert space_out(candidates(4), keys, 3) == [0, 1, 2]


def test_the_first_pick_is_spaced_from_the_item_served_before_the_page() -> None:
    keys: list[Key] = [("a", None), ("b", None), ("a", "s1")]
    assert space_out(candidates(3), keys, 1, before=[("a", "s9")]) == [1]
    assert space_out(candidates(3), keys, 1, before=[("c", None)]) == [0]


def test_the_creator_cap_counts_the_items_served_before_the_page() -> None:
    keys: list[Key] = [("a", None), ("b", None), ("c", None)]
    # a served just before c, with a cap of one: b (not a, though it ranks first) comes next.
    before: list[Key] = [("a", None), ("c", None)]
    assert space_out(candidates(3), keys, 1, max_per_creator=1, before=before) == [1]


def test_pages_of_one_never_put_a_creator_on_consecutive_cards() -> None:
    # The sequence a client asking for one card at a time sees: each page spaced from
    # the cards before it, as one page of the same length would be.
    keys: list[Key] = [(c, None) for c in "aaaabbbbcccc"]
    shown: list[int] = []
    left = list(range(len(keys)))
    while left:
        ranked_keys = [keys[i] for i in left]
        pick = space_out(
            candidates(len(left)), ranked_keys, 1, before=[keys[i] for i in shown[-9:]]
        )[0]
        shown.append(left.pop(pick))
    creators = [keys[i][0] for i in shown]
    assert all(x != y for x, y in itertools.pairwise(creators)), creators


def test_a_topic_is_capped_in_every_run_of_ten_while_others_remain() -> None:
    keys: list[Key] = [(f"c{i}", None) for i in range(30)]
    topics = ["a"] * 24 + ["b"] * 6  # the best 24 of one topic
    page = space_out(candidates(30), keys, 20, topics=topics, max_per_topic=8)
    served = [topics[i] for i in page]
    assert all(served[s : s + 10].count("a") <= 8 for s in range(len(served) - 9)), served
    # Without the cap, the page would be the best 20: all of one topic.
    assert space_out(candidates(30), keys, 20) == list(range(20))


def test_the_topic_cap_counts_the_cards_served_before_and_yields_when_nothing_else_fits() -> None:
    keys: list[Key] = [("c0", None), ("c1", None), ("c2", None)]
    topics = ["a", "a", "b"]
    before = ["a"] * 8 + [None]
    # Eight of the last nine were "a": b comes first; then only "a" is left, and it fills.
    assert space_out(
        candidates(3), keys, 2, topics=topics, max_per_topic=8, before_topics=before
    ) == [2, 0]
    # The run of ten slides: an "a" ten cards back no longer counts.
    older = ["a"] * 8 + [None]
    assert space_out(
        candidates(3), keys, 1, topics=topics, max_per_topic=8, before_topics=older
    ) == [2]
    assert space_out(
        candidates(3), keys, 1, topics=topics, max_per_topic=8, before_topics=[*older[1:], None]
    ) == [0]


def test_a_rows_topic_follows_a_change_of_its_hashtags() -> None:
    """The spacing keeps each row's topic between requests: a video upserted with other
    hashtags is counted under its new topic on the next read."""
    catalog = CatalogIndex()
    tags = {"cat": ("#cat", "#kitten"), "car": ("#car", "#engine")}
    catalog.upsert(
        [
            Video(f"{t}{i}", f"c{i}", 10_000, hashtags=tags[t])
            for t in ("cat", "car")
            for i in range(20)
        ]
    )
    topics = TopicsCache(catalog)
    spacing = CreatorSoundSpacing(catalog, 2, topics, max_per_topic=8)

    def fresh(row: int) -> str | None:
        return topics.get().topic_of_video(catalog.text[row].tags)

    row = catalog.row_of["cat0"]
    before = spacing.topic_of(row)
    assert before is not None and before == fresh(row)
    assert spacing.topic_of(catalog.row_of["car0"]) not in (None, before)
    catalog.upsert([Video("cat0", "c0", 10_000, hashtags=tags["car"])])
    assert spacing.topic_of(row) == fresh(row) == spacing.topic_of(catalog.row_of["car0"])
