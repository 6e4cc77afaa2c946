"""Tests for the closed-loop simulator: the world, the behaviour model, the baselines,
and the audience loop against a fake engine served through ``httpx.MockTransport``."""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

import httpx
import numpy as np
import pytest
from rich.console import Console

from fyp.eval.simulate import (
    GENERIC_HASHTAGS,
    AudienceReport,
    EngineFeed,
    FeedPolicy,
    OracleFeed,
    RandomFeed,
    Reaction,
    RequestStats,
    SimulationError,
    UserState,
    World,
    build_world,
    event_kinds,
    reaction_events,
    run_audience,
    seed_catalog,
    summarize,
)
from fyp.types import now_ms

NOW = 1_750_000_000_000  # a fixed clock so that worlds compare equal
DAY_MS = 86_400_000
EVENT_TYPES = {"view", "like", "share", "follow", "not_interested"}


@pytest.fixture(scope="module")
def world() -> World:
    return build_world(seed=0, now_ms=NOW)


class FakeEngine:
    """Just enough of the engine's HTTP API to drive the simulator: pages come from a
    local policy (oracle or random order); POSTed videos and events are recorded."""

    def __init__(self, policy: FeedPolicy, reject_event: int | None = None) -> None:
        self.policy = policy
        self.reject_event = reject_event  # index within a batch to reject, if any
        self.pages: list[tuple[str, str, list[str]]] = []  # (request_id, user_id, ids)
        self.event_batches: list[list[dict[str, Any]]] = []
        self.video_batches: list[list[dict[str, Any]]] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "GET" and path == "/v1/feed":
            user_id = request.url.params["user_id"]
            count = int(request.url.params["count"])
            page = self.policy.next_page(user_id, count)
            request_id = f"req-{len(self.pages):05d}"
            self.pages.append((request_id, user_id, page.video_ids))
            items = [
                {"video_id": v, "position": i, "source": "fake", "reason": "", "score": 0.0}
                for i, v in enumerate(page.video_ids)
            ]
            return httpx.Response(200, json={"request_id": request_id, "items": items})
        if request.method == "POST" and path == "/v1/events":
            events: list[dict[str, Any]] = json.loads(request.content)["events"]
            self.event_batches.append(events)
            rejected = []
            if self.reject_event is not None and self.reject_event < len(events):
                e = events[self.reject_event]
                rejected = [{"index": self.reject_event, "event_id": e["event_id"], "reason": "x"}]
            accepted = len(events) - len(rejected)
            body = {"accepted": accepted, "duplicates": 0, "rejected": rejected}
            return httpx.Response(200, json=body)
        if request.method == "POST" and path == "/v1/videos":
            videos: list[dict[str, Any]] = json.loads(request.content)["videos"]
            self.video_batches.append(videos)
            return httpx.Response(200, json={"upserted": len(videos), "rejected": []})
        return httpx.Response(404, json={"detail": "not found"})

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handler), base_url="http://fake")


# --------------------------------------------------------------------------- world


def test_world_is_deterministic_per_seed() -> None:
    a = build_world(seed=7, n_videos=800, n_users=30, now_ms=NOW)
    b = build_world(seed=7, n_videos=800, n_users=30, now_ms=NOW)
    c = build_world(seed=8, n_videos=800, n_users=30, now_ms=NOW)
    assert a.videos_payload() == b.videos_payload()
    assert a.videos == b.videos
    assert all(np.array_equal(u.taste, v.taste) for u, v in zip(a.users, b.users, strict=True))
    assert a.videos_payload() != c.videos_payload()


def test_world_sizes_and_ids(world: World) -> None:
    assert len(world.videos) == 5000
    assert len(world.users) == 200
    assert len(world.creator_ids) == 300
    assert len(world.sound_ids) == 400
    assert world.n_topics == 30
    payload = world.videos_payload()
    ids = [p["video_id"] for p in payload]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"v\d{5}", str(i)) for i in ids)
    assert len({u.user_id for u in world.users}) == 200
    assert world.users[0].user_id == "u0001"
    assert set(payload[0]) == {
        "video_id",
        "creator_id",
        "duration_ms",
        "sound_id",
        "hashtags",
        "caption",
        "language",
        "created_at",
    }
    assert {p["creator_id"] for p in payload} <= set(world.creator_ids)
    assert {p["sound_id"] for p in payload} <= set(world.sound_ids)
    assert all(p["language"] == "en" and p["caption"] for p in payload)
    durations = world.video_duration_ms
    assert durations.min() >= 5_000 and durations.max() <= 180_000
    created = np.array([v.created_at for v in world.videos])
    assert created.max() <= NOW and created.min() >= NOW - 30 * DAY_MS
    recent = float(np.mean(created > NOW - DAY_MS))
    assert 0.015 < recent < 0.05
    assert all(1 <= len(v.hashtags) <= 4 for v in world.videos)
    assert world.sound_trending.any()


def test_hashtags_tie_to_topics(world: World) -> None:
    vocab = [set(tags) for tags in world.topic_hashtags]
    # Vocabularies are disjoint, so a hashtag names its topic.
    assert sum(len(v) for v in vocab) == len(set().union(*vocab))
    with_topic_tag = 0
    for v in world.videos:
        assert set(v.hashtags) <= vocab[v.topic] | set(GENERIC_HASHTAGS)
        with_topic_tag += any(t in vocab[v.topic] for t in v.hashtags)
    assert with_topic_tag / len(world.videos) > 0.8
    on_topic = np.mean(
        [v.topic in world.creator_topics[int(v.creator_id[1:]) - 1] for v in world.videos]
    )
    assert on_topic > 0.95


# --------------------------------------------------------------------------- behaviour


def test_favourite_topics_have_higher_expected_watch_ratio(world: World) -> None:
    wins = 0
    for user in world.users:
        expected = world.expected_watch_ratios(user)
        fav = np.isin(world.video_topic, user.favourite_topics)
        wins += expected[fav].mean() > expected[~fav].mean() + 0.3
    assert wins == len(world.users)
    # The scalar and vectorised forms agree.
    user = world.users[3]
    expected = world.expected_watch_ratios(user)
    for v in world.videos[:50]:
        assert user.expected_watch_ratio(v) == pytest.approx(float(expected[v.row]))


def test_reactions_match_expectations(world: World) -> None:
    rng = np.random.default_rng(1)
    for user in world.users[:5]:
        fav_rows = np.flatnonzero(np.isin(world.video_topic, user.favourite_topics))[:40]
        other_rows = np.flatnonzero(~np.isin(world.video_topic, user.favourite_topics))[:40]
        expected = world.expected_watch_ratios(user)
        samples: dict[str, list[float]] = {"fav": [], "other": []}
        for key, rows in (("fav", fav_rows), ("other", other_rows)):
            for row in rows:
                video = world.videos[int(row)]
                for _ in range(20):
                    r = user.react(video, rng)
                    samples[key].append(r.watch_ratio)
                    assert r.watch_ms > 0 and r.watch_ratio <= 2.0
                    if r.skipped:
                        assert r.watch_ms <= 3_000 and not (r.liked or r.shared or r.followed)
                    if r.not_interested:
                        assert r.skipped and user.taste[video.topic] < 0.15
            # The sampled mean tracks the closed-form expectation.
            assert np.mean(samples[key]) == pytest.approx(expected[rows].mean(), abs=0.06)
        assert np.mean(samples["fav"]) > np.mean(samples["other"]) + 0.3


def test_repeats_are_less_engaging(world: World) -> None:
    user = world.users[0]
    video = world.videos[int(np.argmax(world.expected_watch_ratios(user)))]
    state = UserState()
    rng = np.random.default_rng(2)
    first = np.mean([user.react(video, rng).watch_ratio for _ in range(300)])
    state.seen[video.video_id] = 2
    again = np.mean([user.react(video, rng, state).watch_ratio for _ in range(300)])
    assert again < first - 0.3


# --------------------------------------------------------------------------- policies


def test_random_feed_never_repeats_until_exhausted() -> None:
    small = build_world(seed=1, n_videos=53, n_creators=10, n_users=3, now_ms=NOW)
    feed = RandomFeed(small, seed=5)
    served = [v for _ in range(5) for v in feed.next_page("u0002", 10).video_ids]
    assert len(set(served)) == 50
    sixth = feed.next_page("u0002", 10).video_ids
    assert set(served) | set(sixth[:3]) == {v.video_id for v in small.videos}
    assert len(set(sixth)) == 10  # the new round starts afresh within the page
    # Users get different orders; the same seed gives the same order.
    other = RandomFeed(small, 5).next_page("u0003", 10).video_ids
    assert feed.next_page("u0001", 10).video_ids != other
    assert RandomFeed(small, 5).next_page("u0003", 10) == RandomFeed(small, 5).next_page(
        "u0003", 10
    )


def test_oracle_feed_serves_best_first(world: World) -> None:
    page = OracleFeed(world).next_page("u0010", 10).video_ids
    expected = world.expected_watch_ratios(world.user("u0010"))
    assert [float(expected[world.video(v).row]) for v in page] == sorted(
        (float(x) for x in expected), reverse=True
    )[:10]


# --------------------------------------------------------------------------- HTTP


def test_reaction_events_follow_the_reaction() -> None:
    skip = Reaction(watch_ms=800, watch_ratio=0.08, skipped=True, not_interested=True)
    assert event_kinds(skip) == ["view", "not_interested"]
    full = Reaction(watch_ms=9_000, watch_ratio=1.0, liked=True, shared=True, followed=True)
    assert event_kinds(full) == ["view", "like", "share", "follow"]
    events = reaction_events(full, "u1", "v1", 123, "req")
    assert events[0] == {
        "user_id": "u1",
        "video_id": "v1",
        "type": "view",
        "ts": 123,
        "watch_ms": 9_000,
        "request_id": "req",
    }
    assert [e["type"] for e in events] == ["view", "like", "share", "follow"]
    assert all("watch_ms" not in e for e in events[1:])
    assert all("request_id" not in e for e in reaction_events(skip, "u1", "v1", 5, None))


def test_seed_catalog_posts_batches(world: World) -> None:
    engine = FakeEngine(RandomFeed(world, 0))
    with engine.client() as client:
        assert seed_catalog(client, world, batch=2000) == 5000
    assert [len(b) for b in engine.video_batches] == [2000, 2000, 1000]
    assert engine.video_batches[0][0] == world.videos_payload()[0]

    def rejecting(request: httpx.Request) -> httpx.Response:
        body = {"upserted": 0, "rejected": [{"index": 0, "reason": "bad"}]}
        return httpx.Response(200, json=body)

    with (
        httpx.Client(transport=httpx.MockTransport(rejecting), base_url="http://f") as client,
        pytest.raises(SimulationError, match="rejected"),
    ):
        seed_catalog(client, world)


def test_events_are_well_formed_and_posted_per_page(world: World) -> None:
    engine = FakeEngine(RandomFeed(world, 3))
    seen_stats: list[RequestStats] = []
    with engine.client() as client:
        report = run_audience(
            world,
            EngineFeed(client),
            client=client,
            requests=600,
            seed=4,
            on_request=seen_stats.append,
        )
    assert report.policy == "engine"
    assert report.requests == 600 == len(engine.pages) == len(seen_stats)
    assert seen_stats == report.stats
    # Every page was viewed at least in part, and its events came in one POST.
    assert len(engine.event_batches) == len(engine.pages)
    now = now_ms()
    ids: set[str] = set()
    last_ts = world.now_ms
    follows: Counter[tuple[str, str]] = Counter()
    views = 0
    for (request_id, user_id, page), batch, stats in zip(
        engine.pages, engine.event_batches, report.stats, strict=True
    ):
        assert stats.user_id == user_id and stats.request_id == request_id
        viewed = [e["video_id"] for e in batch if e["type"] == "view"]
        assert viewed == page[: len(viewed)]  # in order, possibly stopped early
        assert stats.items_viewed == len(viewed) and stats.items_served == len(page)
        views += len(viewed)
        viewed_so_far: set[str] = set()
        for e in batch:
            assert e["type"] in EVENT_TYPES
            assert e["user_id"] == user_id and e["request_id"] == request_id
            assert isinstance(e["event_id"], str) and e["event_id"] not in ids
            ids.add(e["event_id"])
            assert isinstance(e["ts"], int) and last_ts <= e["ts"] <= now
            last_ts = e["ts"]
            if e["type"] == "view":
                assert isinstance(e["watch_ms"], int) and e["watch_ms"] > 0
                viewed_so_far.add(e["video_id"])
            else:
                assert "watch_ms" not in e
                assert e["video_id"] in viewed_so_far  # an action follows its view
            if e["type"] == "follow":
                follows[(user_id, world.video(e["video_id"]).creator_id)] += 1
    assert views == report.items_viewed
    assert all(n == 1 for n in follows.values())
    # Several sessions per user, and they sometimes end mid-page.
    per_user = Counter(s.user_id for s in report.stats)
    assert len(per_user) == len(world.users)
    assert report.sessions > len(world.users)
    assert sum(n >= 2 for n in per_user.values()) > 0.9 * len(world.users)
    assert any(s.items_viewed < s.items_served for s in report.stats)


def test_oracle_order_beats_random_order(world: World) -> None:
    reports: list[AudienceReport] = []
    for policy in (OracleFeed(world), RandomFeed(world, 0)):
        engine = FakeEngine(policy)
        with engine.client() as client:
            report = run_audience(
                world, EngineFeed(client, name=policy.name), client=client, requests=600
            )
        reports.append(report)
    oracle, random = reports
    assert oracle.mean_watch_ratio > 2 * random.mean_watch_ratio
    assert oracle.mean_watch_ratio > random.mean_watch_ratio + 0.4
    assert oracle.like_rate > 2 * random.like_rate
    assert oracle.last_window_watch_ratio(100) > random.last_window_watch_ratio(100)
    text = _render(summarize([random, oracle]))
    assert "oracle" in text and "random" in text and "x" in text


def test_local_policy_runs_without_client(world: World) -> None:
    report = run_audience(world, RandomFeed(world, 1), client=None, requests=50, count=5)
    assert report.requests == 50 and report.policy == "random"
    assert all(s.request_id is None and s.items_served == 5 for s in report.stats)
    assert 0 < report.mean_watch_ratio < 1
    again = run_audience(world, RandomFeed(world, 1), client=None, requests=50, count=5)
    assert again.stats == report.stats  # seeded end to end


def test_rejected_event_raises(world: World) -> None:
    engine = FakeEngine(RandomFeed(world, 0), reject_event=0)
    with engine.client() as client, pytest.raises(SimulationError, match="rejected"):
        run_audience(world, EngineFeed(client), client=client, requests=5)
    assert len(engine.event_batches) == 1  # it stopped at the first bad answer


def test_engine_errors_are_loud(world: World) -> None:
    def failing(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, text="overloaded")

    with (
        httpx.Client(transport=httpx.MockTransport(failing), base_url="http://f") as client,
        pytest.raises(SimulationError, match="503"),
    ):
        run_audience(world, EngineFeed(client), client=client, requests=1)

    def unknown(request: httpx.Request) -> httpx.Response:
        items = [{"video_id": "nope", "position": 0, "source": "x", "reason": "", "score": 0}]
        return httpx.Response(200, json={"request_id": "r", "items": items})

    with (
        httpx.Client(transport=httpx.MockTransport(unknown), base_url="http://f") as client,
        pytest.raises(SimulationError, match="unknown video"),
    ):
        run_audience(world, EngineFeed(client), client=client, requests=1)


def _render(table: object) -> str:
    console = Console(record=True, width=160)
    console.print(table)
    return console.export_text()
