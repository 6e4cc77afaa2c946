"""Several tastes in proportion: a page's taste positions shared by the tastes' shares,
over the cards served just before, too."""

from __future__ import annotations

from typing import Any

from fyp.catalog.hashtag_topics import TopicsCache
from fyp.rerank.tastes import TasteAllocation, allocate, lead, probe
from fyp.state.feedback import LABEL_INDEX
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


def test_while_searching_another_sources_card_of_a_drawn_topic_is_a_probe_too() -> None:
    # The ranker puts new uploads (fresh) of #c first, a topic the search no longer draws
    # (skipped), then one of #b, which the search draws: the exploration slots take a
    # source's cards in this order, so a new upload's slot would test #c again (issue 20:
    # a second taste is found only by the few cards off the first).
    ranked = (
        cands("cc", "fresh")
        + cands("a")
        + cands("b", "fresh", start=3)
        + cands("x")
        + cands("b", "discover")
    )
    ranked[-1].source_score = 0.5
    page = lead(ranked, {"a"}, topic_of, then="discover")
    assert [c.video_id for c in page] == ["a0", "b0", "b3", "c0", "c1", "x0"]
    assert next(c.video_id for c in page if c.source == "fresh") == "b3"


def test_probe_moves_only_the_sources_cards_among_their_positions() -> None:
    ranked = cands("c", "fresh") + cands("x") + cands("b", "fresh") + cands("a", "fresh")
    ranked += cands("x", start=1) + cands("x", "fresh", start=2)
    page = probe(ranked, "fresh", {"a"}, {"b": 2.0, "c": -1.0}, topic_of)
    # The taste's new upload first, then the topics probed by weight, the rest last; the
    # ranker's own cards where they were.
    assert [c.video_id for c in page] == ["a0", "x0", "b0", "c0", "x1", "x2"]


def test_a_young_persons_new_upload_slots_go_to_topics_not_tried_yet(kit: Any) -> None:
    """Issue 20: after a first find, discovery's share shrinks to nothing within a few
    long views, and the new uploads' slots (a fifth of a page) went to the ranker's
    favourite new uploads, of topics the person had already skipped as often as not."""
    videos = [
        kit.video(f"t{t}-c{c}-v{i}", f"t{t}-c{c}", hashtags=(f"#topic{t}",))
        for t in range(6)
        for c in range(2)
        for i in range(5)
    ]
    engine = kit.open_engine(kit.settings(), videos)
    skips = [kit.view("new", f"t1-c{c}-v{i}", watch_ms=800) for c in range(2) for i in range(2)]
    finishes = [kit.view("new", f"t3-c0-v{i}") for i in range(5)] + [kit.view("new", "t3-c1-v0")]
    kit.run(engine, [*skips, *finishes])
    user = kit.state_of(engine, "new")
    allocation = TasteAllocation(engine.state.catalog, TopicsCache(engine.state.catalog))
    catalog = engine.state.catalog

    def card(video_id: str, source: str) -> Candidate:
        row = catalog.row_of[video_id]
        return Candidate(row, video_id, source, "")

    # The ranker's order: a new upload of skipped topic 1, the taste, then one of topic 4.
    ranked = [
        card("t1-c1-v4", "fresh"),
        card("t3-c1-v4", "ranker"),
        card("t4-c0-v4", "fresh"),
        card("t3-c1-v3", "fresh"),
    ]
    page = allocation.apply(ranked, user, kit.ts + 1_000)
    assert [c.video_id for c in page] == ["t3-c1-v3", "t3-c1-v4", "t4-c0-v4", "t1-c1-v4"]
    # An established person's page is the ranker's.
    user.label_counts[LABEL_INDEX["long_view"]] = 100
    assert allocation.apply(ranked, user, kit.ts + 1_000) == ranked
