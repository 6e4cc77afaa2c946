"""Exploration slots: new uploads' share of what a person is served holds whatever the
page size (small pages are how a client lets each swipe shape the next cards)."""

from __future__ import annotations

from fyp.rerank.exploration import ExplorationSlots, slots_for
from fyp.types import Candidate


def ranked() -> list[Candidate]:
    """Ten ranked candidates, the fresh source's at the bottom."""
    return [Candidate(i, f"v{i}", "fresh" if i >= 7 else "trending", "") for i in range(10)]


def test_pages_of_one_or_two_get_the_share_not_a_slot_each() -> None:
    slots = ExplorationSlots("fresh", 0.2)
    for count in (1, 2, 3):
        pages = [slots.prioritise(ranked(), count, f"req-{i}")[:count] for i in range(2_000)]
        share = sum(c.source == "fresh" for p in pages for c in p) / (count * len(pages))
        # ceil(0.2 x count) slots would be 1/count of every page: 100%, 50%, 33%.
        assert 0.17 < share < 0.23, (count, share)


def test_a_page_of_ten_keeps_exactly_its_two_slots() -> None:
    for i in range(50):
        assert slots_for(0.2, 10, f"req-{i}") == 2
        page = ExplorationSlots("fresh", 0.2).prioritise(ranked(), 10, f"req-{i}")
        rows = [c.row for c in page]
        assert sorted(rows) == list(range(10))
        # The slots' two (the best fresh) among the rest, which keeps the ranker's order.
        assert [r for r in rows if r not in (7, 8)] == [0, 1, 2, 3, 4, 5, 6, 9]
        assert [r for r in rows if r in (7, 8)] == [7, 8]
    # At positions drawn per request: not always the same ones.
    at = {
        tuple(
            k
            for k, c in enumerate(ExplorationSlots("fresh", 0.2).prioritise(ranked(), 10, f"r{i}"))
            if c.row in (7, 8)
        )
        for i in range(50)
    }
    assert len(at) > 10


def test_a_client_that_shows_only_each_pages_first_card_gets_the_share() -> None:
    """A client asking for the rest of its page again after every card (``after=``)
    shows each page's first card only: the slots must land there too, as often as the
    share says. (At the page's end, it would show none.)"""
    slots = ExplorationSlots("fresh", 0.2)
    for count in (2, 4, 10):
        first = [slots.prioritise(ranked(), count, f"req-{i}")[0] for i in range(2_000)]
        share = sum(c.source == "fresh" for c in first) / len(first)
        assert 0.17 < share < 0.23, (count, share)


def test_the_draw_is_a_function_of_the_request_id() -> None:
    assert {slots_for(0.5, 1, "same") for _ in range(10)} in ({0}, {1})


def test_the_other_source_is_taken_in_its_own_order_not_the_rankers() -> None:
    # Ranked: the discover source's weaker draw first.
    cands = [
        Candidate(1, "v1", "ranked", ""),
        Candidate(0, "v0", "discover", "", source_score=0.1),
        Candidate(2, "v2", "discover", "", source_score=0.9),
        Candidate(3, "v3", "ranked", ""),
    ]
    page = ExplorationSlots("fresh", 0.0).prioritise(cands, 2, "r", ("discover", 0.5))
    assert sorted(c.video_id for c in page[:2]) == ["v1", "v2"]
