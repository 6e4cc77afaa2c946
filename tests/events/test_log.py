"""The EventLog contract, run against every implementation: the embedded SQLite log and
the Redis one (on the shared server, under a key prefix of each test's own, deleted
after it; skipped where no Redis answers, a failure under CI).

A new backend is one more case in ``open_log``: a callable that opens the log kept at
one location, so that calling it again reopens the same log (another process's view)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from fyp.events.log import EventLog, SqliteEventLog
from fyp.events.redis_log import RedisEventLog
from fyp.types import Event, EventType
from redis_servers import SHARED_URL, delete_prefix, shared_redis, unique_prefix

OpenLog = Callable[[], EventLog]


@pytest.fixture(params=["sqlite", "redis"])
def open_log(
    request: pytest.FixtureRequest, tmp_path: Path, unavailable: Callable[[str], NoReturn]
) -> Iterator[OpenLog]:
    """Opens (or reopens) one log; every log opened is closed, and its data deleted."""
    opened: list[EventLog] = []
    factory: Callable[[], EventLog]
    cleanup: Callable[[], None] = lambda: None  # noqa: E731
    if request.param == "sqlite":
        factory = lambda: SqliteEventLog(tmp_path / "events.db")  # noqa: E731
    else:
        client = shared_redis(unavailable)
        prefix = unique_prefix()
        # durability=none: the shared server keeps nothing on disk; the durable case has
        # tests of its own (tests/events/test_redis_log.py) on servers they start.
        factory = lambda: RedisEventLog(SHARED_URL, prefix=prefix, durability="none")  # noqa: E731

        def cleanup() -> None:
            delete_prefix(client, prefix)
            client.close()

    def open_() -> EventLog:
        log = factory()
        opened.append(log)
        return log

    try:
        yield open_
    finally:
        for log in opened:
            log.close()
        cleanup()


def event(i: int, user: str = "u1", **changes: object) -> Event:
    fields: dict[str, object] = {
        "event_id": f"e{i}",
        "user_id": user,
        "video_id": f"v{i % 7}",
        "type": EventType.VIEW,
        "ts": 1_000 + i,
        "watch_ms": 100 * i,
    }
    fields.update(changes)
    return Event(**fields)  # type: ignore[arg-type]


class TestEventLogContract:
    def test_an_append_says_the_logs_end_it_left_as_another_process_sees_it(
        self, open_log: OpenLog
    ) -> None:
        log, other = open_log(), open_log()
        first = log.append([event(1), event(2), event(1)])
        assert first.end == other.follow() == 2
        other.append([event(3)])
        again = log.append([event(2)])  # (all duplicates: the end another append left)
        assert (again.accepted, again.end) == ([], 3)
        assert log.append([event(4)]).end == 4

    def test_an_empty_log_has_nothing(self, open_log: OpenLog) -> None:
        log = open_log()
        assert log.count() == 0
        assert log.last_offset() == 0
        assert log.read(0, 10) == []
        assert not log.contains("e1")

    def test_append_then_read_gives_the_events_back_in_order_with_increasing_offsets(
        self, open_log: OpenLog
    ) -> None:
        log = open_log()
        events = [event(i) for i in range(5)]
        result = log.append(events)
        assert result.accepted == [0, 1, 2, 3, 4]
        assert result.duplicates == []
        got = log.read(0, 100)
        assert [g.event for g in got] == events
        offsets = [g.offset for g in got]
        assert offsets[0] >= 1
        assert offsets == sorted(set(offsets))  # strictly increasing
        assert log.last_offset() == offsets[-1]
        assert log.count() == 5

    def test_every_field_round_trips_including_the_optional_ones(self, open_log: OpenLog) -> None:
        log = open_log()
        full = Event("full", "u9", "v9", EventType.LIKE, 123, None, "req-1", "for_you")
        bare = Event("bare", "u9", "v9", EventType.NOT_INTERESTED, 0)
        view = Event("view", "u9", "v9", EventType.VIEW, 2**40, 0)
        log.append([full, bare, view])
        assert [g.event for g in log.read(0, 10)] == [full, bare, view]

    def test_every_event_type_round_trips(self, open_log: OpenLog) -> None:
        log = open_log()
        events = [event(i, type=t) for i, t in enumerate(EventType)]
        log.append(events)
        assert [g.event.type for g in log.read(0, 100)] == list(EventType)

    def test_a_later_batch_gets_later_offsets(self, open_log: OpenLog) -> None:
        log = open_log()
        log.append([event(1), event(2)])
        first_last = log.last_offset()
        log.append([event(3)])
        (third,) = log.read(first_last, 10)
        assert third.event.event_id == "e3"
        assert third.offset > first_last

    def test_appending_nothing_changes_nothing(self, open_log: OpenLog) -> None:
        log = open_log()
        log.append([event(1)])
        result = log.append([])
        assert (result.accepted, result.duplicates) == ([], [])
        assert log.count() == 1

    def test_the_same_event_id_twice_in_one_batch_is_stored_once(self, open_log: OpenLog) -> None:
        log = open_log()
        original = event(1)
        resent = event(1, user="someone-else", ts=99_999)  # same id, other content
        result = log.append([original, event(2), resent])
        assert result.accepted == [0, 1]
        assert result.duplicates == [2]
        assert log.count() == 2
        assert [g.event for g in log.read(0, 10)] == [original, event(2)]  # the first kept

    def test_an_event_id_already_in_the_log_is_a_duplicate_and_changes_nothing(
        self, open_log: OpenLog
    ) -> None:
        log = open_log()
        log.append([event(1), event(2)])
        before = (log.read(0, 10), log.last_offset(), log.count())
        result = log.append([event(2, user="other"), event(1)])
        assert result.accepted == []
        assert result.duplicates == [0, 1]
        assert (log.read(0, 10), log.last_offset(), log.count()) == before

    def test_a_batch_mixing_new_and_known_ids_appends_only_the_new(self, open_log: OpenLog) -> None:
        log = open_log()
        log.append([event(1)])
        result = log.append([event(1), event(2), event(2), event(3)])
        assert result.accepted == [1, 3]
        assert result.duplicates == [0, 2]
        assert [g.event.event_id for g in log.read(0, 10)] == ["e1", "e2", "e3"]

    def test_a_large_batch_sent_twice_is_all_duplicates_the_second_time(
        self, open_log: OpenLog
    ) -> None:
        # More ids than one SQL statement may bind: the duplicate check must see them all.
        log = open_log()
        events = [event(i) for i in range(2_500)]
        assert len(log.append(events).accepted) == 2_500
        again = log.append(events)
        assert again.accepted == []
        assert len(again.duplicates) == 2_500
        assert log.count() == 2_500

    def test_ids_and_fields_of_any_characters_round_trip_and_are_deduplicated(
        self, open_log: OpenLog
    ) -> None:
        # The Redis log sends a batch as JSON and newline-joined JSON: no character of
        # an event may split or merge events, or change an id.
        odd = ["a\nb", 'q"uote', "back\\slash", "[1,2]", "ünï cödé 🎬", "tab\tnul\x00", "0"]
        events = [
            event(i, user=text, event_id=text, request_id=text, surface=f"{text}\n")
            for i, text in enumerate(odd)
        ]
        events.append(event(99, ts=2**53, watch_ms=2**53))
        log = open_log()
        assert log.append(events).accepted == list(range(len(events)))
        assert [g.event for g in log.read(0, 100)] == events
        assert [g.event for g in log.for_user("a\nb")] == [events[0]]
        assert all(log.contains(text) for text in odd)
        again = log.append([*events, event(100)])
        assert again.accepted == [len(events)]
        assert again.duplicates == list(range(len(events)))
        assert log.count() == len(events) + 1

    def test_contains_knows_exactly_the_appended_ids(self, open_log: OpenLog) -> None:
        log = open_log()
        log.append([event(1), event(2)])
        assert log.contains("e1")
        assert log.contains("e2")
        assert not log.contains("e3")
        assert not log.contains("E1")  # ids are case-sensitive

    def test_read_pages_through_the_log_without_gaps_or_overlaps(self, open_log: OpenLog) -> None:
        log = open_log()
        events = [event(i) for i in range(23)]
        for start in range(0, 23, 5):  # several batches
            log.append(events[start : start + 5])
        seen: list[Event] = []
        offset = 0
        while page := log.read(offset, 4):
            assert len(page) <= 4
            assert all(p.offset > offset for p in page)
            seen.extend(p.event for p in page)
            offset = page[-1].offset
        assert seen == events
        assert offset == log.last_offset()

    def test_read_after_an_offset_starts_just_past_it(self, open_log: OpenLog) -> None:
        log = open_log()
        log.append([event(i) for i in range(6)])
        everything = log.read(0, 100)
        middle = everything[2].offset
        assert log.read(middle, 100) == everything[3:]
        assert log.read(middle, 2) == everything[3:5]
        assert log.read(log.last_offset(), 100) == []
        assert log.read(0, 0) == []

    def test_events_survive_close_and_reopen(self, open_log: OpenLog) -> None:
        log = open_log()
        log.append([event(i) for i in range(4)])
        before = log.read(0, 100)
        log.close()

        reopened = open_log()
        assert reopened.read(0, 100) == before
        assert reopened.count() == 4
        assert reopened.last_offset() == before[-1].offset
        assert reopened.contains("e3")

    def test_a_reader_follows_what_another_handle_appends(self, open_log: OpenLog) -> None:
        """A learner process reads the log that a server process appends to: follow()
        brings its end up to what the other handle wrote, and read() gets the events."""
        writer, reader = open_log(), open_log()
        writer.append([event(1)])
        assert reader.follow() == writer.last_offset()
        writer.append([event(2), event(3)])
        assert reader.follow() == writer.last_offset()
        assert reader.last_offset() == writer.last_offset()
        assert [x.event.event_id for x in reader.read(0, 10)] == ["e1", "e2", "e3"]

    def test_after_reopen_ids_are_still_deduplicated_and_offsets_keep_growing(
        self, open_log: OpenLog
    ) -> None:
        log = open_log()
        log.append([event(1), event(2)])
        last = log.last_offset()
        log.close()

        reopened = open_log()
        result = reopened.append([event(2), event(3)])
        assert result.accepted == [1]
        assert result.duplicates == [0]
        (new,) = reopened.read(last, 10)
        assert new.event.event_id == "e3"
        assert new.offset > last

    # -- deletions: erasure and retention ------------------------------------------------

    def test_for_user_gives_exactly_that_users_events_in_offset_order(
        self, open_log: OpenLog
    ) -> None:
        log = open_log()
        log.append([event(1, "a"), event(2, "b"), event(3, "a")])
        log.append([event(4, "b"), event(5, "a")])
        got = log.for_user("a")
        assert [g.event.event_id for g in got] == ["e1", "e3", "e5"]
        assert [g.offset for g in got] == sorted(g.offset for g in got)
        assert got == [g for g in log.read(0, 100) if g.event.user_id == "a"]
        assert log.for_user("nobody") == []

    def test_erase_user_deletes_all_their_events_and_nothing_else(self, open_log: OpenLog) -> None:
        log = open_log()
        log.append([event(i, "a" if i % 3 == 0 else "b") for i in range(12)])
        others = [g for g in log.read(0, 100) if g.event.user_id == "b"]
        assert log.erase_user("a") == 4
        assert log.for_user("a") == []
        assert log.read(0, 100) == others
        assert log.count() == 8
        assert not log.contains("e0")
        assert log.contains("e1")
        assert log.erase_user("a") == 0  # again: nothing left
        assert log.erase_user("nobody") == 0

    def test_erasing_more_than_one_deleting_step_removes_them_all(self, open_log: OpenLog) -> None:
        log = open_log()
        log.append([event(i, "a") for i in range(2_600)] + [event(10_000, "b")])
        assert log.erase_user("a") == 2_600
        assert [g.event.event_id for g in log.read(0, 10_000)] == ["e10000"]
        assert log.count() == 1

    def test_offsets_are_never_reused_after_the_newest_events_are_deleted(
        self, open_log: OpenLog
    ) -> None:
        log = open_log()
        log.append([event(1, "a"), event(2, "b"), event(3, "b")])
        end = log.last_offset()
        log.erase_user("b")  # the two newest
        assert log.last_offset() == end  # the end does not move back
        log.close()
        reopened = open_log()
        assert reopened.last_offset() == end
        reopened.append([event(4, "c")])
        (new,) = reopened.read(end, 10)
        assert new.offset > end
        assert [g.event.event_id for g in reopened.read(0, 10)] == ["e1", "e4"]

    def test_an_erased_event_id_sent_again_is_a_new_event(self, open_log: OpenLog) -> None:
        # Nothing of an erased event is kept, its id included (stopping an erased user's
        # events from coming back is the engine's tombstone's job, not the log's).
        log = open_log()
        log.append([event(1, "a")])
        first = log.last_offset()
        log.erase_user("a")
        assert log.append([event(1, "a")]).accepted == [0]
        assert log.read(0, 10)[0].offset > first

    def test_delete_before_deletes_exactly_the_events_that_happened_earlier(
        self, open_log: OpenLog
    ) -> None:
        log = open_log()
        # event time is the client's: not in offset order
        stamps = [5_000, 1_000, 3_000, 2_999, 9_000, 3_001]
        log.append([event(i, "a" if i % 2 else "b", ts=ts) for i, ts in enumerate(stamps)])
        assert log.delete_before(3_000) == 2  # 1_000 and 2_999; 3_000 itself is kept
        assert sorted(g.event.ts for g in log.read(0, 100)) == [3_000, 3_001, 5_000, 9_000]
        assert [g.event.ts for g in log.for_user("a")] == [3_001]  # of 1_000, 2_999, 3_001
        assert not log.contains("e1")
        assert not log.contains("e3")
        assert log.count() == 4
        assert log.delete_before(3_000) == 0
        assert log.delete_before(10**13) == 4
        assert log.count() == 0
        assert log.for_user("b") == []

    def test_scrub_keeps_every_event_that_was_not_deleted(self, open_log: OpenLog) -> None:
        log = open_log()
        log.append([event(i, "a" if i % 2 else "b") for i in range(10)])
        log.erase_user("a")
        before = log.read(0, 100)
        log.scrub()
        assert log.read(0, 100) == before
        log.append([event(11, "b")])
        assert log.count() == 6


def test_sqlite_iter_all_walks_the_whole_log_in_batches(tmp_path: Path) -> None:
    log = SqliteEventLog(tmp_path / "events.db")
    try:
        events = [event(i) for i in range(25)]
        log.append(events)
        assert [g.event for g in log.iter_all(batch=7)] == events
    finally:
        log.close()
