"""Discover: a newcomer's first cards spread across topics on purpose, narrow towards
what they finish, and an established user's feed has none of them."""

from __future__ import annotations

from typing import Any

from fyp.engine import Engine
from fyp.retrieve.base import FeedContext
from fyp.retrieve.discover import DiscoverSource, discover_share
from fyp.state.feedback import LABEL_INDEX
from fyp.state.users import new_user

TOPICS = 8


def world(kit: Any) -> Engine:
    """Eight topics of two creators x five videos; a background user made topic 0 the
    popular one."""
    videos = [
        kit.video(f"t{t}-c{c}-v{i}", f"t{t}-c{c}", hashtags=(f"#topic{t}",))
        for t in range(TOPICS)
        for c in range(2)
        for i in range(5)
    ]
    engine = kit.open_engine(kit.settings(), videos)
    kit.run(engine, [kit.view("bg", f"t0-c{c}-v{i}") for c in range(2) for i in range(5)])
    return engine


def topic(video_id: str) -> str:
    return video_id.split("-")[0]


def test_a_newcomers_first_page_looks_across_topics(kit: Any) -> None:
    engine = world(kit)
    items = engine.feed("new", count=10, now=kit.NOW).items
    discover = [i for i in items if i.source == DiscoverSource.name]
    assert len(discover) >= 4
    assert all(i.reason == DiscoverSource.reason for i in discover)
    assert len({topic(i.video_id) for i in items}) >= 5


def test_the_search_narrows_to_what_was_finished(kit: Any) -> None:
    engine = world(kit)
    # Quick skips of topics 1 and 2, a finish of topic 3.
    kit.run(
        engine,
        [
            kit.view("new", "t1-c0-v0", watch_ms=800),
            kit.view("new", "t2-c0-v0", watch_ms=800),
            kit.view("new", "t3-c0-v0"),
        ],
    )
    user = kit.state_of(engine, "new")
    source = DiscoverSource(engine.state, limit=1)
    firsts = []
    for i in range(200):
        ctx = FeedContext(f"req-{i}", "new", user, 10, "for_you", "ZZ", kit.ts + 1_000)
        firsts += [topic(c.video_id) for c in source.fetch(ctx)]
    # Unknown topics are drawn at random: the finished one far more, the skipped ones less.
    assert firsts.count("t3") > 2 * firsts.count("t4")
    assert firsts.count("t1") < firsts.count("t4")


def test_the_share_shrinks_with_long_views_to_nothing() -> None:
    user = new_user(history_size=10, n_labels=len(LABEL_INDEX))
    assert discover_share(user) == 0.5
    user.label_counts[LABEL_INDEX["long_view"]] = 5
    assert discover_share(user) == 0.25
    user.label_counts[LABEL_INDEX["long_view"]] = 200
    assert discover_share(user) == 0.0


def test_a_skipped_hashtag_is_not_looked_for_under_another(kit: Any) -> None:
    videos = [
        kit.video(f"t{t}-c{c}-v{i}", f"t{t}-c{c}", hashtags=(f"#topic{t}",))
        for t in range(TOPICS)
        for c in range(2)
        for i in range(5)
    ] + [kit.video(f"x-c{c}", f"x-c{c}", hashtags=("#other", "#topic1")) for c in range(10)]
    engine = kit.open_engine(kit.settings(), videos)
    kit.run(engine, [kit.view("new", f"t1-c{c}-v0", watch_ms=800) for c in range(2)])
    kit.run(engine, [kit.view("new", "t3-c0-v0")])
    user = kit.state_of(engine, "new")
    source = DiscoverSource(engine.state, limit=3)
    proposed = set()
    for i in range(200):
        ctx = FeedContext(f"req-{i}", "new", user, 10, "for_you", "ZZ", kit.ts + 1_000)
        proposed |= {c.video_id for c in source.fetch(ctx)}
    # #other is unknown and drawn, but each of its videos carries the skipped #topic1.
    assert not {v for v in proposed if v.startswith(("x-", "t1-"))}
    assert {topic(v) for v in proposed} >= {"t3", "t4"}
