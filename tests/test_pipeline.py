"""The request path through a real engine: sources fail open, filters hold whatever
proposed a video, the feed does not repeat itself, and what was served is recorded."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest

from fyp.engine import Engine
from fyp.retrieve.base import FeedContext
from fyp.retrieve.discover import DiscoverSource
from fyp.types import Candidate

ALL_IDS = {f"c{c}-v{i}" for c in range(4) for i in range(10)}


@dataclass
class FakeSource:
    """A candidate source that proposes fixed videos, or raises, or dawdles."""

    name: str
    engine: Engine
    video_ids: tuple[str, ...] = ()
    error: Exception | None = None
    delay_s: float = 0.0

    def fetch(self, ctx: FeedContext) -> list[Candidate]:
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.error is not None:
            raise self.error
        row_of = self.engine.catalog.row_of
        return [Candidate(row_of[v], v, self.name, f"from {self.name}") for v in self.video_ids]


# -- fail open -----------------------------------------------------------------------------


def test_a_source_that_raises_is_counted_and_the_feed_still_serves(
    kit: Any, engine: Engine
) -> None:
    engine.pipeline.sources.insert(0, FakeSource("boom", engine, error=RuntimeError("down")))
    for _ in range(2):
        feed = engine.feed("u1", count=10, now=kit.NOW)
        assert len(feed.items) == 10
    assert engine.pipeline.counters.source_failures[("boom", "RuntimeError")] == 2


@dataclass
class CitingFakeSource(FakeSource):
    """A source that words its served cards' reasons after the page is chosen, badly."""

    def cite(self, ctx: FeedContext, served: list[Candidate]) -> None:
        raise RuntimeError("cannot word it")


def test_a_source_failing_to_word_its_reasons_is_counted_and_its_cards_served(
    kit: Any, engine: Engine
) -> None:
    source = CitingFakeSource("wordy", engine, video_ids=("c3-v9",))
    engine.pipeline.sources.insert(0, source)
    engine.pipeline.citing.append(source)
    feed = engine.feed("u1", count=40, now=kit.NOW)
    assert len(feed.items) == 40
    assert {item.video_id: item.source for item in feed.items}["c3-v9"] == "wordy"
    assert engine.pipeline.counters.source_failures[("wordy", "RuntimeError")] == 1


def test_a_source_over_its_time_budget_keeps_its_candidates_and_is_counted_late(
    kit: Any, engine: Engine
) -> None:
    """Sources run one after another: a late one has finished, and its candidates are
    served (credited to it) rather than thrown away; the lateness is counted."""
    engine.pipeline.source_budget_ms = 20.0
    slow = FakeSource("slow", engine, video_ids=("c3-v9",), delay_s=0.1)
    engine.pipeline.sources.insert(0, slow)
    feed = engine.feed("u1", count=40, now=kit.NOW)
    counters = engine.pipeline.counters
    assert counters.source_late["slow"] == 1
    assert counters.source_candidates["slow"] == 1
    assert not counters.source_failures
    assert {item.video_id: item.source for item in feed.items}["c3-v9"] == "slow"
    assert len(feed.items) == 40


def test_a_source_within_its_budget_is_not_counted_late(kit: Any, engine: Engine) -> None:
    engine.pipeline.source_budget_ms = 60_000.0
    engine.pipeline.sources.insert(0, FakeSource("quick", engine, video_ids=("c3-v9",)))
    engine.feed("u1", count=10, now=kit.NOW)
    assert not engine.pipeline.counters.source_late


def test_a_video_proposed_by_two_sources_is_served_once_credited_to_the_first(
    kit: Any, engine: Engine
) -> None:
    engine.pipeline.sources[:0] = [
        FakeSource("first", engine, video_ids=("c2-v5",)),
        FakeSource("second", engine, video_ids=("c2-v5", "c2-v6")),
    ]
    feed = engine.feed("u1", count=40, now=kit.NOW)
    ids = [item.video_id for item in feed.items]
    assert len(ids) == len(set(ids)) == 40
    source = {item.video_id: item.source for item in feed.items}
    assert (source["c2-v5"], source["c2-v6"]) == ("first", "second")
    assert engine.pipeline.counters.source_candidates["second"] == 2


# -- side effects --------------------------------------------------------------------------


def test_every_served_video_is_recorded_as_an_impression(kit: Any, engine: Engine) -> None:
    feed = engine.feed("u1", count=5, now=kit.NOW)
    recorded = list(reversed(engine.impressions.for_user(engine.pseudonym("u1"), 100)))
    assert [i.video_id for i in recorded] == [item.video_id for item in feed.items]
    for imp, item in zip(recorded, feed.items, strict=True):
        assert imp.request_id == feed.request_id
        assert (imp.position, imp.source, imp.reason) == (item.position, item.source, item.reason)
        assert imp.score == pytest.approx(item.score, abs=1e-6)
        assert (imp.surface, imp.ts) == ("for_you", kit.NOW)
    assert [item.position for item in feed.items] == list(range(5))


def test_no_reason_names_a_video_by_its_id(kit: Any, engine: Engine) -> None:
    """Others who enjoyed c0-v0 enjoyed c0-v1..c0-v5 (and skipped c1's videos); u1
    enjoyed c0-v0: co-engagement proposes the rest, and its reason names the watch by
    creator and hashtag."""
    kit.run(engine, [kit.view(f"o{k}", f"c0-v{i}") for k in range(3) for i in range(6)])
    kit.run(engine, [kit.view(f"o{k}", f"c1-v{i}", 500) for k in range(3) for i in range(10)])
    kit.run(engine, [kit.view("u1", "c0-v0")])
    items = engine.feed("u1", count=10, now=kit.NOW).items
    cited = [i for i in items if i.source == "co_engagement"]
    assert cited and all("@c0's #tag-c0 video" in i.reason for i in cited)
    for item in items:
        assert not [v for v in ALL_IDS if v in item.reason], item.reason


def test_a_session_that_finishes_one_topic_keeps_two_cards_in_ten_from_elsewhere(
    kit: Any,
) -> None:
    """Sixty #dance videos (six creators) and ten of each of ten other topics; a newcomer
    finishes every #dance card and skips the rest, asking for pages of two: once the feed
    leans, no run of ten cards holds more than eight #dance ones (feed.max_per_topic)."""
    videos = [
        kit.video(f"d{c}-{i}", f"d{c}", hashtags=("#dance", "#dancetok"))
        for c in range(6)
        for i in range(10)
    ] + [
        kit.video(f"o{t}-{i}", f"o{t}-{i % 3}", hashtags=(f"#other{t}",))
        for t in range(10)
        for i in range(10)
    ]
    engine = kit.open_engine(kit.settings(), videos)
    served: list[str] = []
    ts = kit.NOW - 60_000
    for _ in range(20):
        items = engine.feed("new", count=2, now=ts).items
        for item in items:
            served.append(item.video_id)
            ts += 1_500
            on = item.video_id.startswith("d")
            kit.run(engine, [kit.view("new", item.video_id, 20_000 if on else 800, ts=ts)])
    dance = [v.startswith("d") for v in served]
    assert sum(dance[20:]) >= 12  # it leans
    assert all(sum(dance[s : s + 10]) <= 8 for s in range(len(dance) - 9)), "".join(
        "D" if d else "o" for d in dance
    )


def test_a_newcomer_who_finished_one_card_gets_most_of_the_next_page_from_its_topic(
    kit: Any,
) -> None:
    """Sixty #dance videos (six creators) and ten of each of twelve other topics, the
    others the popular ones; a newcomer skipped nine other topics' cards and finished one
    #dance card: their next page of ten is #dance but for the floor the topic cap keeps
    (feed.max_per_topic), and that floor goes on looking for a second taste (discover's
    cards), not back to the popular cards they skipped."""
    videos = [
        kit.video(f"d{c}-{i}", f"d{c}", hashtags=("#dance", "#dancetok"))
        for c in range(6)
        for i in range(10)
    ] + [
        kit.video(f"o{t}-{i}", f"o{t}-{i % 3}", hashtags=(f"#other{t}",))
        for t in range(12)
        for i in range(10)
    ]
    engine = kit.open_engine(kit.settings(), videos)
    kit.run(
        engine,
        [kit.view(f"bg{u}", f"o{t}-{i}") for u in range(3) for t in range(12) for i in range(10)],
    )
    ts = kit.NOW - 60_000
    first = [f"o{t}-0" for t in range(9)] + ["d0-0"]
    for k, video_id in enumerate(first):
        watch = 20_000 if video_id.startswith("d") else 800
        kit.run(engine, [kit.view("new", video_id, watch, ts=ts + 1_500 * k)])
    items = engine.feed("new", count=10, now=ts + 20_000).items
    dance = [i.video_id for i in items if i.video_id.startswith("d")]
    others = {i.video_id.split("-")[0] for i in items if not i.video_id.startswith("d")}
    assert len(dance) >= 7, [i.video_id for i in items]
    # The floor searches: discover's cards, of the topics not shown yet or (at a lower
    # weight: tests/retrieve/test_discover.py) of one skipped once, tried again.
    floor = [i for i in items if not i.video_id.startswith("d")]
    assert floor and all(i.source == DiscoverSource.name for i in floor), others


def test_each_request_gets_its_own_request_id(kit: Any, engine: Engine) -> None:
    ids = {engine.feed("u1", count=2, now=kit.NOW).request_id for _ in range(3)}
    assert len(ids) == 3


def test_an_empty_catalog_serves_an_empty_feed(kit: Any) -> None:
    empty = kit.open_engine()
    assert empty.feed("u1", count=10, now=kit.NOW).items == []


def test_a_page_larger_than_the_catalog_serves_the_whole_catalog_once(
    kit: Any, engine: Engine
) -> None:
    ids = kit.feed_ids(engine, "u1", count=50)
    assert sorted(ids) == sorted(ALL_IDS)


# -- no repeats ----------------------------------------------------------------------------


def watch_first_two(kit: Any, engine: Engine, ids: list[str]) -> None:
    kit.run(engine, [kit.view("u", v) for v in ids[:2]])


def test_no_video_is_served_twice_until_the_catalog_is_exhausted_then_unviewed_come_first(
    kit: Any, engine: Engine
) -> None:
    served: list[str] = []
    viewed: set[str] = set()
    for _ in range(4):  # 4 pages of 10 exhaust the 40 videos
        ids = kit.feed_ids(engine, "u", count=10)
        assert len(ids) == 10
        assert not set(ids) & set(served), "repeated while unseen videos remained"
        served += ids
        watch_first_two(kit, engine, ids)
        viewed.update(ids[:2])
    assert set(served) == ALL_IDS

    # Exhausted: the feed goes on, with videos served before but never viewed, and each
    # says it is a repeat (transparency: not "something different").
    for _ in range(3):
        feed = engine.feed("u", count=10, now=kit.NOW)
        ids = [item.video_id for item in feed.items]
        assert len(ids) == 10
        assert not set(ids) & viewed
        assert {item.source for item in feed.items} == {"repeat"}
        assert all(item.reason.startswith("Shown again") for item in feed.items)
    # Everything viewed: the feed still serves rather than going blank.
    kit.run(engine, [kit.view("u", v) for v in sorted(ALL_IDS - viewed)])
    assert len(kit.feed_ids(engine, "u", count=10)) == 10


def test_no_repeat_is_served_while_an_unseen_eligible_video_remains(
    kit: Any, engine: Engine
) -> None:
    served: set[str] = set()
    for _ in range(8):  # pages of 7 do not divide 40: one page straddles exhaustion
        ids = kit.feed_ids(engine, "u", count=7)
        unseen = ALL_IDS - served
        if set(ids) & served:
            assert unseen <= set(ids), f"repeats served while {sorted(unseen - set(ids))} unseen"
        served.update(ids)
        watch_first_two(kit, engine, ids)


# -- filters hold, whichever source proposed a video ---------------------------------------


def test_ineligible_videos_are_never_served_however_attractive(kit: Any) -> None:
    settings = kit.settings()
    hot = {
        "hot-removed": kit.video("hot-removed", "c0", created_at=kit.NOW - kit.HOUR_MS),
        "hot-xx": kit.video("hot-xx", "c0", regions=("xx",), created_at=kit.NOW - kit.HOUR_MS),
        "hot-local": kit.video(
            "hot-local", "c0", regions=("local",), created_at=kit.NOW - kit.HOUR_MS
        ),
    }
    engine = kit.open_engine(settings, videos=[*kit.catalog(), *hot.values()])
    events = []
    for u in range(6):  # everyone loves them: trending and co-engaged with c0-v0
        events.append(kit.act(f"fan{u}", "c0-v0", "like"))
        for v in hot:
            events += [kit.view(f"fan{u}", v), kit.act(f"fan{u}", v, "like")]
    # the user follows their creator and enjoyed c0-v0 (a co-engagement seed)
    events += [kit.act("u", "c0-v0", "like"), kit.act("u", "c0-v0", "follow")]
    kit.run(engine, events)
    engine.upsert_videos([kit.video("hot-removed", "c0", labels=("removed",))])  # taken down

    served: set[str] = set()
    for _ in range(7):  # past exhaustion of the 41 eligible videos
        served.update(kit.feed_ids(engine, "u", count=10))
        served.update(kit.feed_ids(engine, f"newcomer-{len(served)}", count=10))
    assert "hot-removed" not in served
    assert "hot-xx" not in served
    assert "hot-local" in served
    assert engine.pipeline.counters.filtered["eligibility"] > 0


def test_not_interested_keeps_that_creator_and_sound_out_of_the_feed(kit: Any) -> None:
    shared_sound = kit.video("shared-sound", "c2", sound_id="snd-c0-1")
    engine = kit.open_engine(videos=[*kit.catalog(), shared_sound])
    kit.run(
        engine,
        [
            kit.view("u", "c0-v0"),
            kit.view("u", "c0-v1", watch_ms=500),
            kit.act("u", "c0-v1", "not_interested"),
        ],
    )
    served: list[str] = []
    for _ in range(5):  # well past the 30 unmuted videos
        served += kit.feed_ids(engine, "u", count=10)
    assert served, "the feed went blank"
    assert not [v for v in served if v.startswith("c0-")]
    assert "shared-sound" not in served
    # Other users are not affected.
    assert "shared-sound" in kit.feed_ids(engine, "someone-else", count=41)


def test_a_muted_popular_creator_does_not_starve_the_feed(kit: Any, engine: Engine) -> None:
    events = [kit.view(f"fan{u}", f"c0-v{i}") for u in range(5) for i in range(10)]
    events.append(kit.act("u", "c0-v0", "not_interested"))
    kit.run(engine, events)
    ids = kit.feed_ids(engine, "u", count=3)
    assert len(ids) == 3
    assert not [v for v in ids if v.startswith("c0-")]
