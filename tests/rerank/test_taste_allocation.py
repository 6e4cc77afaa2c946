"""Several tastes in proportion: a page's taste positions shared by the tastes' shares,
over the cards served just before, too."""

from __future__ import annotations

from fyp.rerank.tastes import allocate, lead
from fyp.types import Candidate

TOPIC = {0: "a", 1: "b", 2: "c", 3: None}  # row // 100 -> topic


def cands(spec: str, source: str = "ranker", start: int = 0) -> list[Candidate]:
    """One candidate per letter: its topic (x: no topic), rows numbered per topic from
    ``start``."""
    out = []
    seen: dict[str, int] = {}
    for ch in spec:
        n = seen[ch] = seen.get(ch, start - 1) + 1
        base = {"a": 0, "b": 100, "c": 200, "x": 300}[ch]
        out.append(Candidate(base + n, f"{ch}{n}", source, ""))
    return out


def topic_of(row: int) -> str | None:
    return TOPIC[row // 100]


def topics(page: list[Candidate]) -> str:
    return "".join(topic_of(c.row) or "x" for c in page)


def test_the_taste_positions_go_to_each_taste_by_its_share() -> None:
    ranked = cands("aaaaaaaaxx") + cands("bbbbbb")
    page = allocate(ranked, {"a": 0.6, "b": 0.4}, topic_of)
    # The ranker gave 8 of the first 10 to tastes; they are shared 5 / 3 ... and 6 / 4
    # over the first ten taste positions.
    assert topics(page[:10]) == "ababaabaxx"
    assert topics(page).count("a") == 8
    # Each taste's cards in the ranker's order.
    assert [c.video_id for c in page if topic_of(c.row) == "b"] == [f"b{i}" for i in range(6)]


def test_the_cards_served_before_count() -> None:
    ranked = cands("aaaa") + cands("bbbb")
    # Three of #a just served: the next taste positions are #b's until it catches up.
    page = allocate(ranked, {"a": 0.5, "b": 0.5}, topic_of, before=[0, 1, 2])
    assert topics(page[:4]) == "bbba"


def test_a_taste_with_nothing_left_yields_and_one_taste_changes_nothing() -> None:
    ranked = cands("aaaaa") + cands("b")
    assert topics(allocate(ranked, {"a": 0.5, "b": 0.5}, topic_of)) == "abaaaa"
    assert allocate(ranked, {"a": 1.0}, topic_of) == ranked


def test_while_searching_the_found_taste_leads_then_the_search_then_the_rest() -> None:
    # The ranker still prefers the popular cards (x) and other topics (c) after one
    # finish of #a; discovery proposed a #b card and a #c card (scored by its draws).
    ranked = cands("xxa") + cands("c", "discover") + cands("xa", start=5) + cands("b", "discover")
    ranked[3].source_score, ranked[6].source_score = 0.2, 0.9
    page = lead(ranked, {"a"}, topic_of, then="discover")
    # Each group in its order: the taste's and the rest's the ranker's, the search's its
    # draws'.
    assert [c.video_id for c in page] == ["a0", "a5", "b0", "c0", "x0", "x1", "x5"]


def test_nothing_found_nothing_moves() -> None:
    ranked = cands("xxc") + cands("b", "discover")
    assert lead(ranked, {"a"}, topic_of, then="discover") == ranked
