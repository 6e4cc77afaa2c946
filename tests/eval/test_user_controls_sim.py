"""User controls in the simulator's world: what a user says ("not interested", refresh,
not personalised) changes their feed as promised, and every item's stated source and
reason is true.

The engine runs in process on a small seeded world (``build_world``), on a clock that
only moves forward: pages of 10, the simulated users' ``react`` (or a scripted "fan"
who watches and likes one topic only) turns each page into view / like / ... events,
ingested and learned before the next page."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fyp.config import load_settings
from fyp.engine import Engine
from fyp.eval.simulate import SimulatedUser, UserState, World, build_world, reaction_events
from fyp.pipeline import Feed, FeedItem
from fyp.retrieve.backfill import BackfillSource
from fyp.retrieve.base import CandidateSource, FeedContext
from fyp.types import Candidate
from fyp.users.controls import ControlsIn, ProfileIn

NOW = 1_750_000_000_000  # Unix ms: the world's "now" and where the engine's clock starts
DAY_MS = 86_400_000
PAGE = 10
SWIPE_MS = 800  # between two views
SKIP_MS = 1_000  # how long the scripted fan gives a video they do not care for
SEED = 3


@pytest.fixture(scope="module")
def world() -> World:
    return build_world(
        seed=SEED, n_videos=800, n_creators=50, n_topics=6, n_sounds=80, n_users=24, now_ms=NOW
    )


class Clock:
    """The engine's clock, Unix ms: moved forward by the test only."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@dataclass
class Sim:
    """An engine on ``world``'s catalog, the users' memories, and what each user did."""

    engine: Engine
    world: World
    clock: Clock
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(SEED))
    memory: dict[str, UserState] = field(default_factory=dict)
    # user -> every event sent for them, as sent
    sent: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    served: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    n_events: int = 0

    def page(self, user_id: str, count: int = PAGE, surface: str = "for_you") -> Feed:
        feed = self.engine.feed(user_id, count, surface, self.clock.now)
        self.served[user_id].extend(item.video_id for item in feed.items)
        return feed

    def send(self, events: list[dict[str, Any]]) -> None:
        """Ingest (all accepted) and learn, so the next page sees them."""
        for e in events:
            self.n_events += 1
            e["event_id"] = f"sim-{self.n_events:07d}"
            self.sent[str(e["user_id"])].append(e)
        result = self.engine.ingest(events)
        assert result.rejected == [], result.rejected
        self.engine.learn()

    def react(self, user: SimulatedUser, feed: Feed, name: str | None = None) -> None:
        """``user`` (under ``name``, if given) watches the whole page as the simulator's
        behaviour model says."""
        user_id = name or user.user_id
        memory = self.memory.setdefault(user_id, UserState())
        events: list[dict[str, Any]] = []
        for item in feed.items:
            video = self.world.video(item.video_id)
            reaction = user.react(video, self.rng, memory)
            memory.record(video, reaction)
            self.clock.now += reaction.watch_ms + SWIPE_MS
            events += reaction_events(
                reaction, user_id, video.video_id, self.clock.now, feed.request_id
            )
        if events:
            self.send(events)

    def fan(self, user_id: str, feed: Feed, topic: int) -> None:
        """A scripted user who watches ``topic``'s videos to the end and likes them, and
        skips everything else after a second."""
        events: list[dict[str, Any]] = []
        for item in feed.items:
            video = self.world.video(item.video_id)
            loved = video.topic == topic
            watch = video.duration_ms if loved else min(SKIP_MS, video.duration_ms)
            self.clock.now += watch + SWIPE_MS
            base = {"user_id": user_id, "video_id": video.video_id, "ts": self.clock.now}
            events.append({**base, "type": "view", "watch_ms": watch})
            if loved:
                events.append({**base, "type": "like"})
        if events:
            self.send(events)

    def background(self, pages: int) -> None:
        """Every simulated user of the world reads ``pages`` pages: regional popularity
        and co-engagement that no single test user dominates."""
        for _ in range(pages):
            for user in self.world.users:
                self.react(user, self.page(user.user_id))

    def topic_share(self, video_ids: Sequence[str], topic: int) -> float:
        return sum(self.world.video(v).topic == topic for v in video_ids) / max(len(video_ids), 1)


@pytest.fixture
def sim(tmp_path: Path, world: World) -> Iterator[Sim]:
    # A generous source budget: on a busy machine a slow source must not drop out.
    settings = load_settings(
        overrides={"data_dir": tmp_path / "data", "sources": {"budget_ms": 1_000.0}}, environ={}
    )
    clock = Clock(NOW)
    engine = Engine.open(settings, clock=clock)
    try:
        engine.upsert_videos([v.as_video() for v in world.videos])
        yield Sim(engine, world, clock)
    finally:
        engine.close()


def catalog_share(world: World, topic: int) -> float:
    return float(np.mean(world.video_topic == topic))


def topics_by_share(world: World) -> list[int]:
    """Topics, the closest to a 15% catalog share first: common enough to fill pages,
    rare enough that a lean towards one shows."""
    return sorted(range(world.n_topics), key=lambda t: abs(catalog_share(world, t) - 0.15))


def fold_words(text: str) -> list[str]:
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()
    return re.findall(r"\w+", plain)


# -- "not interested" ------------------------------------------------------------------------


def test_not_interested_keeps_the_creator_out_for_the_whole_suppression_period(
    sim: Sim, world: World
) -> None:
    sim.background(pages=2)
    user = world.users[0]
    for _ in range(3):
        sim.react(user, sim.page(user.user_id))
    # The creator the feed served this user most, among those with plenty left to serve.
    videos_by = Counter(v.creator_id for v in world.videos)
    served = sim.served[user.user_id]
    creator = next(
        c for c, _ in Counter(world.video(v).creator_id for v in served).most_common()
        if videos_by[c] >= 10
    )
    disliked = next(v for v in reversed(served) if world.video(v).creator_id == creator)
    base = {"user_id": user.user_id, "video_id": disliked, "ts": sim.clock.now}
    sim.send([{**base, "type": "view", "watch_ms": 800}, {**base, "type": "not_interested"}])
    unseen = [
        v.video_id
        for v in world.videos
        if v.creator_id == creator and v.video_id not in set(served)
    ]
    assert unseen, "the creator has videos left that the feed could serve"

    def next_items(n_pages: int) -> list[str]:
        out: list[str] = []
        for _ in range(n_pages):
            feed = sim.page(user.user_id)
            out += [item.video_id for item in feed.items]
            sim.react(user, feed)
        return out

    soon = next_items(5)
    assert len(soon) == 50
    assert [v for v in soon if world.video(v).creator_id == creator] == []
    days = sim.engine.settings.feed.not_interested_days
    assert days > 10
    sim.clock.now += 10 * DAY_MS  # still within the suppression period
    sim.background(pages=1)
    later = next_items(5)
    assert len(later) == 50
    assert [v for v in later if world.video(v).creator_id == creator] == []


# -- refresh ---------------------------------------------------------------------------------

# What a reason says when it cites the user's history (fyp.rank.explain, co-engagement).
HISTORY_PHRASES = ("You watched", "You often enjoy", "People who enjoyed")


def test_refresh_forgets_the_learned_taste_but_keeps_the_mutes(sim: Sim, world: World) -> None:
    topic = topics_by_share(world)[0]
    share = catalog_share(world, topic)
    fan = "fan"
    # Mutes set first: a prolific creator of the fan's topic, and another topic's name
    # (every caption names its topic).
    own_creators = Counter(v.creator_id for v in world.videos if v.topic == topic)
    muted_creator = own_creators.most_common(1)[0][0]
    other = next(t for t in topics_by_share(world) if t != topic)
    muted_word = world.topic_names[other]
    sim.engine.set_controls(
        fan, ControlsIn(mute_creators=[muted_creator], mute_keywords=[muted_word])
    )

    def muted(video_id: str) -> bool:
        v = world.video(video_id)
        words = fold_words(v.caption) + [w for t in v.hashtags for w in fold_words(t)]
        return v.creator_id == muted_creator or muted_word in words

    for _ in range(12):
        sim.fan(fan, sim.page(fan), topic)
    # Regional popularity from everyone else, a few days on: what a refreshed feed may
    # fall back on is not the fan's own likes.
    sim.clock.now += 3 * DAY_MS
    sim.background(pages=3)
    before: list[FeedItem] = []
    for _ in range(3):
        feed = sim.page(fan)
        before += feed.items
        sim.fan(fan, feed, topic)
    before_ids = [i.video_id for i in before]
    lean = sim.topic_share(before_ids, topic)
    assert lean >= max(0.5, 3 * share), (lean, share)
    assert any(p in i.reason for i in before for p in HISTORY_PHRASES)

    sim.engine.set_controls(fan, ControlsIn(refresh=True))
    sim.engine.learn()
    after: list[FeedItem] = []
    for _ in range(3):
        # The app fetches pages; the fan has not reacted to anything since the refresh.
        after += sim.page(fan).items
    after_ids = [i.video_id for i in after]
    assert len(after_ids) == 30
    fresh_lean = sim.topic_share(after_ids, topic)
    assert fresh_lean <= share + 0.15, (fresh_lean, share, lean)
    citing = [(i.video_id, i.source, i.reason) for i in after if i.source == "co_engagement"]
    citing += [
        (i.video_id, i.source, i.reason) for i in after for p in HISTORY_PHRASES if p in i.reason
    ]
    assert citing == []
    # The mutes held throughout, and still do.
    assert [v for v in before_ids + after_ids if muted(v)] == []
    assert [v for v in sim.served[fan] if muted(v)] == []


# -- not personalised ------------------------------------------------------------------------


def test_not_personalised_feeds_are_the_same_for_everyone_in_a_region(
    sim: Sim, world: World
) -> None:
    sim.background(pages=2)
    region = sim.engine.settings.region
    left_topic, right_topic = topics_by_share(world)[:2]
    fans = {"left": left_topic, "right": right_topic}
    for name in fans:
        sim.engine.put_user(name, ProfileIn(region=region))
    for _ in range(6):
        for name, topic in fans.items():
            sim.fan(name, sim.page(name), topic)
    for name in fans:
        sim.engine.set_controls(name, ControlsIn(personalized=False))
    for _ in range(4):
        left, right = sim.page("left"), sim.page("right")
        assert [i.video_id for i in left.items] == [i.video_id for i in right.items]
        assert len(left.items) == PAGE
        assert {i.source for i in left.items + right.items} == {"non_personalised"}
        # Both keep watching their own topic: popularity moves, for both alike.
        for name, feed in (("left", left), ("right", right)):
            sim.fan(name, feed, fans[name])

    for name in fans:
        sim.engine.set_controls(name, ControlsIn(personalized=True))
    left_ids = [i.video_id for i in sim.page("left").items]
    right_ids = [i.video_id for i in sim.page("right").items]
    assert left_ids != right_ids
    assert sim.topic_share(left_ids, left_topic) > sim.topic_share(right_ids, left_topic)
    assert sim.topic_share(right_ids, right_topic) > sim.topic_share(left_ids, right_topic)

