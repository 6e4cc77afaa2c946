"""The ImpressionLog contract, run against every implementation.

A new backend is one more entry in ``IMPLEMENTATIONS``: a callable that opens the log
kept at a location, so that calling it again on the same location reopens it.
"Most recent" means most recently recorded."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fyp.events.impressions import ImpressionLog, SqliteImpressionLog
from fyp.types import DAY_MS, FilterCount, Impression
from postgres_servers import opener, query

OpenLog = Callable[[], ImpressionLog]


def pg_impressions(url: str) -> ImpressionLog:
    from fyp.storage.postgres.database import Database  # (psycopg: a skip if absent)
    from fyp.storage.postgres.impressions import PgImpressionLog

    return PgImpressionLog(Database(url))


IMPLEMENTATIONS = [
    pytest.param(lambda where: SqliteImpressionLog(where / "impressions.db"), id="sqlite"),
    pytest.param(pg_impressions, id="postgresql"),
]

_clock = iter(range(10**6))


@pytest.fixture(params=IMPLEMENTATIONS)
def open_log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenLog]:
    yield from opener(request, tmp_path)


def imp(user: str, video: str, request_id: str = "r1", position: int = 0) -> Impression:
    return Impression(
        request_id=request_id,
        user_id=user,
        video_id=video,
        position=position,
        source="trending",
        score=0.25,
        surface="for_you",
        ts=1_000 + next(_clock),
        reason="Popular in your region",
    )


def page(user: str, videos: list[str], request_id: str) -> list[Impression]:
    return [imp(user, v, request_id, i) for i, v in enumerate(videos)]


class TestImpressionLogContract:
    def test_an_empty_log_has_nothing(self, open_log: OpenLog) -> None:
        log = open_log()
        assert log.count() == 0
        assert log.for_user("u1", 10) == []
        assert log.find("u1", "v1") is None
        assert log.recent_by_user(5) == {}
        assert log.exposure_counts() == {}

    def test_every_field_round_trips(self, open_log: OpenLog) -> None:
        log = open_log()
        original = Impression("req-7", "u1", "v1", 3, "co_engagement", -1.5, "following", 42, "why")
        log.record([original])
        assert log.find("u1", "v1") == original
        assert log.for_user("u1", 1) == [original]

    def test_recording_nothing_changes_nothing(self, open_log: OpenLog) -> None:
        log = open_log()
        log.record([])
        assert log.count() == 0

    def test_count_counts_every_impression_including_repeats(self, open_log: OpenLog) -> None:
        log = open_log()
        log.record(page("u1", ["v1", "v2"], "r1"))
        log.record(page("u1", ["v1"], "r2"))
        assert log.count() == 3

    def test_for_user_is_newest_first_limited_and_only_that_user(self, open_log: OpenLog) -> None:
        log = open_log()
        log.record(page("u1", ["v1", "v2"], "r1"))
        log.record(page("u2", ["v9"], "r2"))
        log.record(page("u1", ["v3"], "r3"))
        assert [i.video_id for i in log.for_user("u1", 10)] == ["v3", "v2", "v1"]
        assert [i.video_id for i in log.for_user("u1", 2)] == ["v3", "v2"]
        assert [i.video_id for i in log.for_user("u2", 10)] == ["v9"]
        assert log.for_user("nobody", 10) == []

    def test_find_returns_the_most_recent_impression_of_that_video_to_that_user(
        self, open_log: OpenLog
    ) -> None:
        log = open_log()
        log.record(page("u1", ["v1", "v2"], "r1"))
        log.record(page("u2", ["v1"], "r-other-user"))
        log.record(page("u1", ["v5", "v1"], "r2"))
        found = log.find("u1", "v1")
        assert found is not None
        assert (found.request_id, found.position) == ("r2", 1)
        assert log.find("u1", "v9") is None
        assert log.find("u3", "v1") is None

    def test_recent_by_user_keeps_each_users_last_n_oldest_first(self, open_log: OpenLog) -> None:
        log = open_log()
        log.record(page("u1", ["a", "b", "c"], "r1"))
        log.record(page("u2", ["x"], "r2"))
        log.record(page("u1", ["d", "e"], "r3"))
        assert log.recent_by_user(3) == {"u1": ["c", "d", "e"], "u2": ["x"]}
        assert log.recent_by_user(10) == {"u1": ["a", "b", "c", "d", "e"], "u2": ["x"]}
        assert log.recent_by_user(1) == {"u1": ["e"], "u2": ["x"]}

    def test_exposure_counts_counts_servings_per_video_over_all_users(
        self, open_log: OpenLog
    ) -> None:
        log = open_log()
        log.record(page("u1", ["v1", "v2"], "r1"))
        log.record(page("u2", ["v1"], "r2"))
        log.record(page("u1", ["v1"], "r3"))
        assert log.exposure_counts() == {"v1": 3, "v2": 1}

    def test_impressions_survive_close_and_reopen(self, open_log: OpenLog) -> None:
        log = open_log()
        log.record(page("u1", ["v1", "v2"], "r1"))
        before = log.for_user("u1", 10)
        log.close()

        reopened = open_log()
        assert reopened.for_user("u1", 10) == before
        assert reopened.count() == 2
        assert reopened.exposure_counts() == {"v1": 1, "v2": 1}
        reopened.record(page("u1", ["v3"], "r2"))
        assert [i.video_id for i in reopened.for_user("u1", 1)] == ["v3"]

    def test_appended_impressions_are_seen_by_every_read_and_survive_close(
        self, open_log: OpenLog
    ) -> None:
        log = open_log()
        log.append(page("u1", ["v1", "v2"], "r1"))
        assert log.count() == 2
        log.append(page("u1", ["v3"], "r2"))
        log.record(page("u2", ["v1"], "r3"))  # after what was appended before it
        assert [i.video_id for i in log.for_user("u1", 10)] == ["v3", "v2", "v1"]
        found = log.find("u1", "v3")
        assert found is not None and found.request_id == "r2"
        log.append(page("u1", ["v4"], "r4"))
        assert log.recent_by_user(2) == {"u1": ["v3", "v4"], "u2": ["v1"]}
        log.append(page("u1", ["v5"], "r5"))
        assert log.exposure_counts() == {"v1": 2, "v2": 1, "v3": 1, "v4": 1, "v5": 1}
        log.append(page("u3", ["v9"], "r6"))
        log.close()  # with an append pending
        reopened = open_log()
        assert reopened.count() == 7
        assert [i.video_id for i in reopened.for_user("u3", 1)] == ["v9"]

    def test_appending_nothing_changes_nothing(self, open_log: OpenLog) -> None:
        log = open_log()
        log.append([])
        assert log.count() == 0

    def test_recording_again_changes_nothing_and_says_which_were_new(
        self, open_log: OpenLog
    ) -> None:
        log = open_log()
        first = page("u1", ["v1", "v2"], "r1")
        assert log.record(first) == [True, True]
        again = [*first, imp("u1", "v3", "r1", 2)]
        assert log.record(again) == [False, False, True]
        assert log.count() == 3

    def test_signals_round_trip(self, open_log: OpenLog) -> None:
        log = open_log()
        signed = Impression("r1", "u1", "v1", 0, "trending", 0.5, "for_you", 7, "", (("a", 0.25),))
        log.append([signed])
        assert log.find("u1", "v1") == signed

    def test_between_is_half_open_in_the_order_served(self, open_log: OpenLog) -> None:
        log = open_log()
        served = page("u1", ["a", "b", "c"], "r1")
        log.record(served)
        ts = [i.ts for i in served]
        assert list(log.between(ts[0], ts[2])) == served[:2]
        assert list(log.between(ts[2] + 1, ts[2] + 2)) == []

    def test_filter_counts_add_up_by_day_surface_filter_and_rule(self, open_log: OpenLog) -> None:
        log = open_log()
        day = 20_000 * DAY_MS
        log.append(page("u1", ["a"], "r1"), {("muted", "creator"): 2}, "for_you", day + 5)
        log.append([], {("muted", "creator"): 3, ("age", "mature"): 1}, "for_you", day + 9)
        log.append([], {("muted", "creator"): 4}, "for_you", day + DAY_MS)
        assert log.filter_counts(day, day + DAY_MS) == [
            FilterCount(day, "for_you", "age", "mature", 1),
            FilterCount(day, "for_you", "muted", "creator", 5),
        ]
        assert log.filter_counts(day, day + 2 * DAY_MS)[-1].count == 4

    def test_withdraw_deletes_the_unshown_rest_of_a_users_response(self, open_log: OpenLog) -> None:
        log = open_log()
        log.append(page("u1", ["a", "b", "c", "d"], "r1"))
        assert log.withdraw("u2", "r1", 1) is None  # not served to u2
        assert log.withdraw("u1", "r9", 1) is None
        assert log.withdraw("u1", "r1", 2) == ["c", "d"]
        assert [i.video_id for i in log.for_user("u1", 10)] == ["b", "a"]

    def test_erase_user_and_delete_before_leave_the_rest(self, open_log: OpenLog) -> None:
        log = open_log()
        log.record(page("u1", ["a", "b"], "r1"))
        kept = page("u2", ["c"], "r2")
        log.record(kept)
        log.append(page("u1", ["d"], "r3"))  # pending: erased too
        assert log.erase_user("u1") == 3
        log.scrub()
        assert log.count() == 1
        assert log.for_user("u1", 10) == []
        assert log.recent_by_user(5) == {"u2": ["c"]}
        later = page("u3", ["e"], "r4")
        log.record(later)
        assert log.delete_before(later[0].ts) == 1
        assert log.for_user("u3", 1) == later
        assert log.count() == 1


def test_appended_impressions_are_written_soon_without_a_read(tmp_path: Path) -> None:
    """Write-behind: with no further request or read, the writer thread commits them
    within a moment (another connection sees them)."""
    log = SqliteImpressionLog(tmp_path / "impressions.db", write_behind_s=0.01)
    try:
        log.append(page("u1", ["v1", "v2"], "r1"))
        other = sqlite3.connect(tmp_path / "impressions.db")
        deadline = time.monotonic() + 5.0
        seen = 0
        while time.monotonic() < deadline and seen < 2:
            seen = other.execute("SELECT COUNT(*) FROM impressions").fetchone()[0]
            time.sleep(0.01)
        other.close()
        assert seen == 2
    finally:
        log.close()


def test_appends_wait_for_the_writer_and_a_read_writes_them_first(tmp_path: Path) -> None:
    log = SqliteImpressionLog(tmp_path / "impressions.db", write_behind_s=3600)
    try:
        for k in range(5):
            log.append(page("u1", ["a", "b"], f"r{k}"))
        assert sqlite3_count(tmp_path / "impressions.db") == 0  # gathering, not yet due
        assert log.count() == 10  # a read writes them first
        assert sqlite3_count(tmp_path / "impressions.db") == 10
        many = [imp("u2", f"v{i}", "big", i) for i in range(250)]  # several statements
        log.append(many)
        assert log.for_user("u2", 1000) == many[::-1]
    finally:
        log.close()


def sqlite3_count(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM impressions").fetchone()[0])
    finally:
        conn.close()


def test_appended_impressions_reach_postgresql_soon_without_a_read(postgres_url: str) -> None:
    """Write-behind on PostgreSQL too: another connection sees them within a moment."""
    log = pg_impressions_every(postgres_url, 0.01)
    try:
        log.append(page("u1", ["v1", "v2"], "r1"))
        deadline = time.monotonic() + 5.0
        seen = 0
        while time.monotonic() < deadline and seen < 2:
            seen = int(query(postgres_url, "SELECT COUNT(*) FROM impressions")[0][0])
            time.sleep(0.01)
        assert seen == 2
    finally:
        log.close()


def pg_impressions_every(url: str, write_behind_s: float) -> ImpressionLog:
    from fyp.storage.postgres.database import Database
    from fyp.storage.postgres.impressions import PgImpressionLog

    return PgImpressionLog(Database(url), write_behind_s=write_behind_s)
