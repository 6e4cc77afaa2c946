"""Candidate sources, each on a small hand-built state."""

from __future__ import annotations

import pytest

from fyp.catalog.index import CatalogIndex
from fyp.config import load_settings
from fyp.retrieve.backfill import BackfillSource
from fyp.retrieve.base import FeedContext
from fyp.retrieve.coengagement import CoEngagementSource
from fyp.retrieve.followed import FollowedCreatorsSource
from fyp.retrieve.fresh import FreshSource
from fyp.retrieve.trending import TrendingSource
from fyp.state.updater import LogState
from fyp.state.users import Affinity, UserState
from fyp.types import Candidate, Video

NOW = 1_750_000_000_000
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


@pytest.fixture
def state() -> LogState:
    """Creators a (4 videos, a3 newest) and b (3 videos), and three special ones."""
    catalog = CatalogIndex(excluded_labels=("removed",))
    videos = [Video(f"a{i}", "a", 10_000, created_at=NOW - (10 - i) * DAY_MS) for i in range(4)]
    videos += [Video(f"b{i}", "b", 10_000, created_at=NOW - (10 - i) * DAY_MS) for i in range(3)]
    videos += [
        Video("removed", "a", 10_000, labels=("removed",), created_at=NOW - HOUR_MS),
        Video("br-only", "b", 10_000, regions=("br",), created_at=NOW - HOUR_MS),
        Video("undated", "c", 10_000),
    ]
    catalog.upsert(videos)
    s = LogState(load_settings(environ={}), catalog)
    s.stats.ensure(len(catalog))
    return s


def ctx(state: LogState, user_id: str = "u1", request_id: str = "req-1") -> FeedContext:
    user = state.user(user_id)
    return FeedContext(request_id, user_id, user, 10, "for_you", "local", NOW)


def row(state: LogState, video_id: str) -> int:
    return state.catalog.row_of[video_id]


def ids(cands: list[Candidate]) -> list[str]:
    return [c.video_id for c in cands]


def user(state: LogState) -> UserState:
    return state.user("u1")


# -- followed ------------------------------------------------------------------------------


def test_followed_proposes_each_followed_creators_newest_unviewed_videos(
    state: LogState,
) -> None:
    user(state).follows.update({"a", "b"})
    user(state).viewed.add(row(state, "a3"))
    got = FollowedCreatorsSource(state, limit=100).fetch(ctx(state))
    # "removed" and "br-only" are newest; eligibility is the filters' job, not the source's.
    assert ids(got) == ["removed", "a2", "a1", "a0", "br-only", "b2", "b1", "b0"]
    assert {c.source for c in got} == {"followed"}
    assert got[0].reason == "From @a, whom you follow"


def test_followed_respects_the_per_creator_cap_and_the_limit(state: LogState) -> None:
    user(state).follows.update({"a", "b"})
    assert ids(FollowedCreatorsSource(state, limit=100, per_creator=2).fetch(ctx(state))) == [
        "removed",
        "a3",
        "br-only",
        "b2",
    ]
    assert len(FollowedCreatorsSource(state, limit=3).fetch(ctx(state))) == 3


def test_followed_proposes_nothing_without_follows(state: LogState) -> None:
    assert FollowedCreatorsSource(state, limit=10).fetch(ctx(state)) == []


# -- co-engagement -------------------------------------------------------------------------


def test_co_engagement_proposes_neighbours_of_the_users_recent_positives(
    state: LogState,
) -> None:
    a0, a1, b0, b1 = (row(state, v) for v in ("a0", "a1", "b0", "b1"))
    for _ in range(3):  # others enjoyed a0 with a1 three times, with b0 once
        state.coengagement.add_positive(a0, [])
        state.coengagement.add_positive(a1, [a0])
    state.coengagement.add_positive(b0, [a0])
    state.coengagement.add_positive(b1, [])  # no link to a0
    user(state).recent_positives.append(a0)
    got = CoEngagementSource(state, seeds=20, limit=10).fetch(ctx(state))
    assert ids(got) == ["a1", "b0"]
    assert got[0].source_score > got[1].source_score
    assert {c.source for c in got} == {"co_engagement"}
    # The watch that led to it, named for a person (a0 has no caption nor hashtag), not by id.
    assert (
        got[0].reason
        == "Because you enjoyed a video by @a: people who enjoyed it also enjoyed this"
    )


def test_co_engagement_uses_only_the_most_recent_seeds(state: LogState) -> None:
    a0, a1, b0, b1 = (row(state, v) for v in ("a0", "a1", "b0", "b1"))
    state.coengagement.add_positive(a0, [])
    state.coengagement.add_positive(a1, [a0])
    state.coengagement.add_positive(b0, [])
    state.coengagement.add_positive(b1, [b0])
    user(state).recent_positives.extend([a0, b0])  # a0 is the older positive
    assert ids(CoEngagementSource(state, seeds=1, limit=10).fetch(ctx(state))) == ["b1"]
    assert ids(CoEngagementSource(state, seeds=2, limit=1).fetch(ctx(state))) == ["b1"]


def test_co_engagement_proposes_nothing_without_positives(state: LogState) -> None:
    assert CoEngagementSource(state, seeds=20, limit=10).fetch(ctx(state)) == []


# -- trending ------------------------------------------------------------------------------


def test_trending_proposes_the_regions_most_engaged_videos_best_first(state: LogState) -> None:
    n = len(state.catalog)
    state.trending.add("local", row(state, "b1"), 1.0, NOW, n)
    state.trending.add("local", row(state, "a2"), 3.0, NOW, n)
    state.trending.add("br", row(state, "a0"), 9.0, NOW, n)
    source = TrendingSource(state, limit=10)
    got = source.fetch(ctx(state))
    assert ids(got) == ["a2", "b1"]
    assert got[0].source_score > got[1].source_score
    assert {c.source for c in got} == {"trending"}
    # New engagement shows up on the next request, cache or not.
    state.trending.add("local", row(state, "b2"), 10.0, NOW, n)
    assert ids(source.fetch(ctx(state)))[0] == "b2"


# -- fresh ---------------------------------------------------------------------------------


def test_fresh_proposes_recent_uploads_that_have_not_had_their_exposure(
    state: LogState,
) -> None:
    source = FreshSource(state, limit=10, window_ms=2 * DAY_MS, exposure_budget=3)
    assert sorted(ids(source.fetch(ctx(state)))) == ["br-only", "removed"]
    state.stats.exposures[row(state, "br-only")] = 2
    got = {c.video_id: c for c in source.fetch(ctx(state))}
    assert got["br-only"].source_score == pytest.approx(1 / 3)
    assert got["removed"].source_score == 1.0
    state.stats.exposures[row(state, "br-only")] = 3  # budget spent
    assert ids(source.fetch(ctx(state))) == ["removed"]


def test_fresh_ignores_uploads_outside_the_window_or_dated_in_the_future(
    state: LogState,
) -> None:
    state.catalog.upsert([Video("tomorrow", "c", 10_000, created_at=NOW + DAY_MS)])
    state.stats.ensure(len(state.catalog))
    window = FreshSource(state, limit=10, window_ms=9 * DAY_MS + HOUR_MS, exposure_budget=3)
    assert sorted(ids(window.fetch(ctx(state)))) == [
        "a1",
        "a2",
        "a3",
        "b1",
        "b2",
        "br-only",
        "removed",
    ]


def test_fresh_draws_a_limited_sample_the_same_way_for_the_same_request(
    state: LogState,
) -> None:
    source = FreshSource(state, limit=3, window_ms=30 * DAY_MS, exposure_budget=5)
    first = ids(source.fetch(ctx(state, request_id="r-1")))
    assert len(first) == len(set(first)) == 3
    assert ids(source.fetch(ctx(state, request_id="r-1"))) == first
    draws = {tuple(sorted(ids(source.fetch(ctx(state, request_id=f"r-{i}"))))) for i in range(30)}
    assert len(draws) > 1  # different requests share the exposure around


def test_fresh_adds_new_uploads_of_what_the_person_is_finishing(state: LogState) -> None:
    """Forty new uploads of other hashtags and three of #dance: a draw of three rarely
    holds the newest; a person finishing #dance (and skipping #cats) is offered it every
    time, and the next newest too (one hashtag stands out: the fresh slots of their page
    go to what they finish rather than to what they skip)."""
    new = [
        Video(f"n{i}", f"n{i}", 10_000, hashtags=("#cats",), created_at=NOW - HOUR_MS)
        for i in range(40)
    ]
    new += [
        Video(f"dance-new{i}", "d", 10_000, hashtags=("#dance",), created_at=NOW - 3 * HOUR_MS)
        for i in range(2)
    ]
    new.append(Video("dance-new", "d", 10_000, hashtags=("#dance",), created_at=NOW - HOUR_MS))
    new.append(Video("dance-old", "d", 10_000, hashtags=("#dance",), created_at=NOW - 9 * DAY_MS))
    state.catalog.upsert(new)
    state.stats.ensure(len(state.catalog))
    source = FreshSource(state, limit=3, window_ms=2 * DAY_MS, exposure_budget=5)
    before = [ids(source.fetch(ctx(state, request_id=f"r-{i}"))) for i in range(20)]
    assert sum("dance-new" in got for got in before) < 10
    person = user(state)
    for i in range(3):
        state.user("u1").hashtags.setdefault("#cats", Affinity()).add(
            False, NOW - 9_000 + i, DAY_MS, False
        )
        person.add_session_view(False, NOW - 9_000 + i)
    person.hashtags.setdefault("#dance", Affinity()).add(True, NOW - 1_000, DAY_MS, True)
    person.add_session_view(True, NOW - 1_000)
    assert person.standout_hashtags(NOW) == ["#dance"]
    after = [ids(source.fetch(ctx(state, request_id=f"r-{i}"))) for i in range(20)]
    assert all({"dance-new", "dance-new0", "dance-new1"} <= set(got) for got in after)
    assert not any("dance-old" in got for got in after)  # outside the window


def test_fresh_skips_topical_uploads_seen_or_past_their_exposure_for_the_next_newest(
    state: LogState,
) -> None:
    """Of the #dance uploads newest first: one has had its exposure, one the person saw,
    one is older than the window, one is dated in the future: the two after them come."""
    new = [
        Video(f"dance{i}", "d", 10_000, hashtags=("#dance",), created_at=NOW - (10 - i) * HOUR_MS)
        for i in range(6)
    ]
    new.insert(
        0, Video("dance-old", "d", 10_000, hashtags=("#dance",), created_at=NOW - 9 * DAY_MS)
    )
    new.append(Video("dance-later", "d", 10_000, hashtags=("#dance",), created_at=NOW + HOUR_MS))
    state.catalog.upsert(new)
    state.stats.ensure(len(state.catalog))
    state.stats.exposures[row(state, "dance5")] = 5
    person = user(state)
    person.viewed.add(row(state, "dance4"))
    for i in range(3):  # skips elsewhere, so that the finished #dance stands out
        person.hashtags.setdefault("#cats", Affinity()).add(False, NOW - 9_000 + i, DAY_MS, False)
        person.add_session_view(False, NOW - 9_000 + i)
    person.hashtags.setdefault("#dance", Affinity()).add(True, NOW - 1_000, DAY_MS, True)
    person.add_session_view(True, NOW - 1_000)
    assert person.standout_hashtags(NOW) == ["#dance"]
    source = FreshSource(state, limit=0, window_ms=2 * DAY_MS, exposure_budget=5)
    assert source._topical(ctx(state)) == [
        row(state, v) for v in ("dance3", "dance2", "dance1", "dance0")
    ]


# -- backfill ------------------------------------------------------------------------------


def test_backfill_walks_the_catalog_most_viewed_first_skipping_the_ineligible(
    state: LogState,
) -> None:
    state.stats.views[row(state, "b0")] = 50
    state.stats.views[row(state, "a3")] = 20
    state.stats.views[row(state, "removed")] = 99
    state.stats.total_views = 169
    got = BackfillSource(state, limit=100).fetch(ctx(state))
    assert ids(got)[:2] == ["b0", "a3"]
    assert "removed" not in ids(got)
    assert "br-only" not in ids(got)
    assert len(got) == len(state.catalog) - 2
    assert {c.source for c in got} == {"explore"}


def test_backfill_skips_what_the_user_viewed_or_was_served_and_honours_the_limit(
    state: LogState,
) -> None:
    user(state).viewed.add(row(state, "a0"))
    user(state).remember_served([row(state, "a1")], capacity=10)
    got = ids(BackfillSource(state, limit=100).fetch(ctx(state)))
    assert "a0" not in got and "a1" not in got
    assert len(BackfillSource(state, limit=2).fetch(ctx(state))) == 2
    excluded = {row(state, v) for v in ("a2", "a3", "b0")}
    got = ids(BackfillSource(state, limit=100).fetch_excluding(ctx(state), excluded, 100))
    # Unviewed videos tie; ties come in a fixed random order, not catalog order.
    assert sorted(got) == ["a0", "a1", "b1", "b2", "undated"]


# -- topics --------------------------------------------------------------------------------


def test_topics_reaches_the_unviewed_videos_of_the_hashtags_a_user_enjoys() -> None:
    from fyp.retrieve.topics import TopicSource
    from fyp.state.users import Affinity
    from fyp.users.controls import ControlsIn, UserControls

    catalog = CatalogIndex()
    catalog.upsert(
        [Video(f"cook{i}", f"c{i}", 10_000, hashtags=("#Cooking",)) for i in range(6)]
        + [Video(f"skate{i}", "s", 10_000, hashtags=("#skate",)) for i in range(3)]
        + [Video(f"news{i}", "n", 10_000, hashtags=("#news",)) for i in range(3)]
    )
    s = LogState(load_settings(environ={}), catalog)
    u = s.user("u1")
    u.hashtags["#Cooking"] = Affinity(views=3.0, positives=3.0, ts=NOW)
    u.hashtags["#news"] = Affinity(views=3.0, positives=0.0, ts=NOW)  # watched, not enjoyed
    u.viewed.add(catalog.row_of["cook0"])
    source = TopicSource(s, seeds=5, limit=40)
    got = source.fetch(ctx(s))
    assert sorted(ids(got)) == [f"cook{i}" for i in range(1, 6)]  # nobody viewed them yet
    assert {c.reason for c in got} == {"You often enjoy #cooking videos"}
    # "More" of a topic brings it in; "less" keeps an enjoyed one out.
    controls = UserControls().updated(ControlsIn(topics={"skate": "more", "cooking": "less"}))
    c = FeedContext("r", "u1", u, 10, "for_you", "local", NOW, "for_you", 18, controls)
    assert sorted(ids(source.fetch(c))) == [f"skate{i}" for i in range(3)]
