"""A person's session tastes: the topics they finish well above their rate elsewhere,
each with a share by its finish rate (not its count of finishes), and a source of
unseen videos of each."""

from __future__ import annotations

from typing import Any

import pytest

from fyp.engine import Engine
from fyp.retrieve.base import FeedContext
from fyp.retrieve.tastes import TasteSource, session_tastes
from fyp.state.feedback import LABEL_INDEX

TOPICS = 8
SKIP_MS = 800


def world(kit: Any, per_creator: int = 6) -> Engine:
    """Eight topics (#topic0..7) of three creators x ``per_creator`` videos."""
    videos = [
        kit.video(f"t{t}-c{c}-v{i}", f"t{t}-c{c}", hashtags=(f"#topic{t}",))
        for t in range(TOPICS)
        for c in range(3)
        for i in range(per_creator)
    ]
    return kit.open_engine(kit.settings(), videos)


def watch(kit: Any, user: str, topic: int, finished: list[bool]) -> list[dict[str, Any]]:
    return [
        kit.view(user, f"t{topic}-c{i % 3}-v{i // 3}", watch_ms=20_000 if f else SKIP_MS)
        for i, f in enumerate(finished)
    ]


def skips(kit: Any, user: str, topics: range) -> list[dict[str, Any]]:
    return [e for t in topics for e in watch(kit, user, t, [False, False])]


def tastes_of(kit: Any, engine: Engine, user: str) -> dict[str, float]:
    return session_tastes(
        kit.state_of(engine, user), kit.ts + 1_000, engine.pipeline.tastes.topics.get()
    )


def test_two_tastes_share_by_how_much_of_each_is_finished(kit: Any) -> None:
    engine = world(kit)
    kit.run(engine, skips(kit, "p", range(3, 8)))
    kit.run(engine, watch(kit, "p", 1, [True] * 6) + watch(kit, "p", 2, [True, False] * 3))
    shares = tastes_of(kit, engine, "p")
    assert set(shares) == {"topic1", "topic2"}
    assert sum(shares.values()) == pytest.approx(1.0)
    # All of #topic1 finished, half of #topic2, next to none of the rest: about 2 to 1.
    assert 0.6 < shares["topic1"] < 0.75


def test_a_share_follows_the_rate_not_the_count_of_finishes(kit: Any) -> None:
    engine = world(kit)
    kit.run(engine, skips(kit, "p", range(3, 8)))
    # The feed showed #topic1 three times as often; both are finished every time.
    kit.run(engine, watch(kit, "p", 1, [True] * 9) + watch(kit, "p", 2, [True] * 3))
    shares = tastes_of(kit, engine, "p")
    # By count it would be a quarter; by rates shrunk to the rate elsewhere, the one
    # shown less would be pulled down further (0.45): both are finished every time.
    assert shares["topic2"] == pytest.approx(0.5, abs=0.01)


def test_one_taste_or_none_standing_out_is_no_sharing(kit: Any) -> None:
    engine = world(kit)
    kit.run(engine, skips(kit, "one", range(3, 8)) + watch(kit, "one", 1, [True] * 4))
    assert tastes_of(kit, engine, "one") == {}
    # Finishing everything: nothing is finished above the rate elsewhere.
    kit.run(engine, [e for t in range(TOPICS) for e in watch(kit, "all", t, [True] * 2)])
    assert tastes_of(kit, engine, "all") == {}
    # A single finish of a topic is not yet a taste.
    kit.run(engine, skips(kit, "hint", range(3, 8)) + watch(kit, "hint", 1, [True] * 4))
    kit.run(engine, watch(kit, "hint", 2, [False, False, True]))
    assert tastes_of(kit, engine, "hint") == {}


def test_the_source_offers_unseen_videos_of_each_taste(kit: Any) -> None:
    engine = world(kit)
    kit.run(engine, skips(kit, "p", range(3, 8)))
    kit.run(engine, watch(kit, "p", 1, [True] * 4) + watch(kit, "p", 2, [True] * 4))
    user = kit.state_of(engine, "p")
    ctx = FeedContext("req", "p", user, 10, "for_you", "ZZ", kit.ts + 1_000)
    got = TasteSource(engine.state, limit=10).fetch(ctx)
    topics = [c.video_id.split("-")[0] for c in got]
    assert topics.count("t1") == topics.count("t2") == 5
    assert not {engine.catalog.row_of[c.video_id] for c in got} & user.viewed
    assert {c.reason for c in got} == {
        "Because you have been watching #topic1",
        "Because you have been watching #topic2",
    }
    # One taste of a newcomer (discovery still searching): its videos, for the page to
    # follow it (fyp.rerank.tastes.lead).
    kit.run(engine, skips(kit, "one", range(3, 8)) + watch(kit, "one", 1, [True] * 4))
    one = kit.state_of(engine, "one")
    ctx = FeedContext("req", "one", one, 10, "for_you", "ZZ", kit.ts)
    got = TasteSource(engine.state, limit=10).fetch(ctx)
    assert got and {c.video_id.split("-")[0] for c in got} == {"t1"}
    # One taste of an established user: nothing to share, nothing proposed.
    one.label_counts[LABEL_INDEX["long_view"]] = 200
    assert TasteSource(engine.state, limit=10).fetch(ctx) == []


def test_a_page_shares_itself_between_two_tastes(kit: Any) -> None:
    engine = world(kit, per_creator=20)
    kit.run(engine, skips(kit, "p", range(3, 8)))
    # #topic1 found first, shown a lot, all finished; #topic2 found later, 3 of 5
    # finished: under the session's finish rate, which #topic1 raised.
    kit.run(
        engine, watch(kit, "p", 1, [True] * 20) + watch(kit, "p", 2, [True, False] * 2 + [True])
    )
    shares = tastes_of(kit, engine, "p")
    counts = {t: 0 for t in range(TOPICS)}
    for _ in range(3):
        for item in engine.feed("p", count=10, now=kit.ts + 1_000).items:
            counts[int(item.video_id.split("-")[0][1:])] += 1
    tastes = counts[1] + counts[2]
    assert tastes >= 24
    # Its share of the taste cards is its share of the tastes (a third), not the few the
    # topic cap would leave it (the ranker's order gives it 3 of 21).
    assert abs(counts[2] / tastes - shares["topic2"]) < 0.1
