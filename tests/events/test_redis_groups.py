"""Consumer groups on the Redis event log (each event handed to one consumer of a group;
what a dead consumer held, claimed by another), and trimming (never past what a reader's
checkpoint or a group has done). On the shared server, under a key prefix of each
test's own, deleted after it; skipped where no Redis answers (a failure under CI)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import pytest

from fyp.events.redis_groups import ConsumerGroup, groups
from fyp.events.redis_log import RedisEventLog
from fyp.types import Event, EventType
from redis_servers import SHARED_URL, delete_prefix, shared_redis, unique_prefix


def event(i: int, user: str = "u1") -> Event:
    return Event(f"e{i}", user, f"v{i % 7}", EventType.VIEW, 1_000 + i, 100 * i)


@pytest.fixture
def log(unavailable: Callable[[str], NoReturn]) -> Iterator[RedisEventLog]:
    client = shared_redis(unavailable)
    prefix = unique_prefix()
    opened = RedisEventLog(SHARED_URL, prefix=prefix, durability="none")
    try:
        yield opened
    finally:
        opened.close()
        delete_prefix(client, prefix)
        client.close()


def offsets(events: list[Any]) -> list[int]:
    return [e.offset for e in events]


def test_a_group_hands_each_event_to_one_of_its_consumers(log: RedisEventLog) -> None:
    log.append([event(i) for i in range(100)])
    group = ConsumerGroup(log, "export")
    a = group.read("a", 30)
    b = group.read("b", 1_000)
    assert offsets(a) == list(range(1, 31)) and offsets(b) == list(range(31, 101))
    assert [e.event.event_id for e in a[:2]] == ["e0", "e1"]
    assert group.read("a", 10) == []  # nothing left to hand out
    assert group.info().pending == 100
    assert group.ack(offsets(a)) == 30 and group.ack(offsets(b)) == 70
    assert group.ack(offsets(b)) == 0  # (acknowledged twice: once counted)
    assert group.info().pending == 0 and group.pending() == []
    # Another group has its own place: every event again.
    assert offsets(ConsumerGroup(log, "audit").read("x", 1_000)) == list(range(1, 101))
    # A group that exists keeps its place, whatever it is asked to start after.
    assert ConsumerGroup(log, "export", after_offset=0).read("a", 10) == []
    log.append([event(i) for i in range(100, 103)])
    assert offsets(group.read("a", 10, block_ms=100)) == [101, 102, 103]
    # A new group may start after an offset.
    assert offsets(ConsumerGroup(log, "late", after_offset=101).read("x", 10)) == [102, 103]


def test_a_read_blocks_until_an_event_comes(log: RedisEventLog) -> None:
    group = ConsumerGroup(log, "g")  # (made before the first append: the stream too)
    t0 = time.monotonic()
    assert group.read("a", 10, block_ms=200) == []
    assert time.monotonic() - t0 >= 0.15


def test_what_a_dead_consumer_held_is_claimed_by_another(log: RedisEventLog) -> None:
    log.append([event(i) for i in range(50)])
    group = ConsumerGroup(log, "learners")
    taken = group.read("dies", 50)
    group.ack(offsets(taken[:20]))  # it did 20, then died holding 30
    assert group.pending("dies") == list(range(21, 51))
    # A consumer still within its time keeps its events: nothing idle that long.
    assert group.claim("survivor", min_idle_ms=60_000) == []
    time.sleep(0.05)
    claimed = group.claim("survivor", min_idle_ms=20, limit=25)
    assert offsets(claimed) == list(range(21, 46))  # oldest first, up to the limit
    claimed += group.claim("survivor", min_idle_ms=20)
    assert offsets(claimed) == list(range(21, 51))
    assert [e.event.event_id for e in claimed[:1]] == ["e20"]
    assert group.pending("dies") == [] and len(group.pending("survivor")) == 30
    group.ack(offsets(claimed))
    assert group.info().pending == 0
    assert group.delete_consumer("dies") == 0
    assert group.info().consumers == 1


def test_erased_events_are_not_handed_out_and_leave_the_pending_list(log: RedisEventLog) -> None:
    log.append([event(i, "gone" if i % 2 else "kept") for i in range(20)])
    group = ConsumerGroup(log, "g")
    held = group.read("dies", 10)  # offsets 1..10, half of them "gone"'s
    assert log.erase_user("gone") == 10
    rest = group.read("other", 100)  # the erased are not handed out
    assert {e.event.user_id for e in rest} == {"kept"} and len(rest) == 5
    group.ack(offsets(rest))
    time.sleep(0.03)
    claimed = group.claim("other", min_idle_ms=10)
    assert offsets(claimed) == [o for o in offsets(held) if o % 2]  # the kept ones
    assert {e.event.user_id for e in claimed} == {"kept"}
    assert group.pending("dies") == []  # the erased left it


def test_trimming_goes_no_further_than_every_reader_and_group_has_done(
    log: RedisEventLog,
) -> None:
    log.append([event(i, f"u{i % 3}") for i in range(100)])
    assert log.trim_bound() == 0 and log.trim(100) == 0  # nobody said they hold anything
    log.commit("learner@a", 60)
    log.commit("serving@b", 80)
    assert log.readers() == {"learner@a": 60, "serving@b": 80}
    assert log.trim_bound() == 60
    group = ConsumerGroup(log, "export")
    assert log.trim_bound() == 0  # a new group has done nothing yet
    done = group.read("a", 40)
    group.ack(offsets(done[:30]))  # 31..40 still pending
    assert group.info().done_through == 30
    assert log.trim_bound() == 30
    assert log.trim(1_000) == 30
    assert log.read(0, 5)[0].offset == 31
    assert log.count() == 70 and log.client.xlen(log.stream) == 70
    assert not log.contains("e0") and log.contains("e30")
    assert all(e.offset > 30 for u in ("u0", "u1", "u2") for e in log.for_user(u))
    assert log.trim(20) == 0  # (already gone)
    # The pending events are still there for a consumer that claims them.
    time.sleep(0.02)
    assert offsets(group.claim("b", min_idle_ms=10)) == list(range(31, 41))
    group.ack(list(range(31, 41)))
    assert log.trim_bound() == 40
    group.destroy()
    assert groups(log) == []
    assert log.trim(1_000) == 30  # up to the slowest reader's 60
    log.forget_reader("learner@a")
    assert log.trim(1_000) == 20  # then serving@b's 80
    # Offsets are not reused; the log goes on.
    assert log.last_offset() == 100
    log.append([event(1_000)])
    assert offsets(log.read(0, 1_000)) == [*range(81, 101), 101]


def test_an_engine_on_a_redis_log_commits_its_checkpoints_offset(
    log: RedisEventLog, kit: Any
) -> None:
    url = f"{SHARED_URL}?prefix={log.stream[1:].split('}')[0]}&durability=none"
    settings = kit.settings(event_log=url)
    engine = kit.open_engine(settings, videos=kit.catalog())
    video = kit.catalog()[0].video_id
    kit.run(engine, [kit.view("u1", video) for _ in range(5)])
    engine.checkpoints.write()
    (reader,) = log.readers()
    assert reader.startswith("all@") and reader.endswith(str(settings.data_dir.resolve()))
    assert log.readers()[reader] == engine.checkpoints.offset == log.last_offset() == 5
