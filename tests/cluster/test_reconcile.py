"""A serving process's reconcile with the stores (PostgreSQL's, or the embedded SQLite
files several processes on one machine share) reads what changed since its last read,
not the whole catalog and every user: a change made straight in the database (not
through fyp, so no notice was sent) is picked up by the next incremental read,
including one committed by a transaction that was still open at the read before; so is
an erasure whose notices the process missed; a whole read stays the first and the rare
fallback."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest

import fyp.engine as engine_module
from fyp.config import Settings, load_settings
from fyp.engine import Engine
from fyp.safety.labels import ModerationState
from fyp.storage.postgres.url import split_url
from fyp.types import Video
from fyp.users.controls import ControlsIn
from postgres_servers import query

N_VIDEOS = 50


def _settings(data_dir: Path, store: str | None) -> Settings:
    return load_settings(
        overrides={
            "data_dir": data_dir,
            "store": store,
            "privacy": {"secret_file": data_dir.with_name("shared.secret")},
        },
        environ={},
    )


@pytest.fixture
def pair(tmp_path: Path, postgres_url: str) -> Iterator[tuple[Engine, Engine]]:
    a = Engine.open(_settings(tmp_path / "a", postgres_url))
    b = Engine.open(_settings(tmp_path / "b", postgres_url))
    try:
        yield a, b
    finally:
        b.close()
        a.close()


@pytest.fixture(params=["postgresql", "sqlite"])
def any_pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Engine, Engine]]:
    """Two engines over shared stores: a PostgreSQL schema (a data dir each), or the
    embedded SQLite files of one data dir (what two processes on one machine share)."""
    if request.param == "postgresql":
        yield request.getfixturevalue("pair")
        return
    settings = _settings(tmp_path / "shared", None)
    a = Engine.open(settings, from_checkpoint=False)
    b = Engine.open(settings, from_checkpoint=False)
    try:
        yield a, b
    finally:
        b.close()
        a.close()


def test_an_erasure_whose_notices_were_missed_is_seen_by_the_next_incremental_read(
    any_pair: tuple[Engine, Engine],
) -> None:
    """B holds a user (profile, learned state) and reads none of the notices while A
    erases them (B was cut off, or A died before its notice): B's next incremental
    reconcile, seconds later, drops them. An erasure deletes the rows an incremental read
    follows, so before the erasures were counted B held the user until its next whole
    read (FULL_RECONCILE_EVERY_S). Another user is kept."""
    a, b = any_pair
    a.upsert_videos([Video(f"v{i}", "c0", duration_ms=10_000) for i in range(4)])
    a.register_users(["gone", "kept"])
    b.reconcile_changes()
    events = [
        {"event_id": f"{u}-{i}", "user_id": u, "video_id": f"v{i}", "type": "like"}
        for u in ("gone", "kept")
        for i in range(3)
    ]
    assert b.ingest([e | {"ts": 1_700_000_000_000} for e in events]).accepted == 6
    b.learn()
    gone, kept = b.pseudonym("gone"), b.pseudonym("kept")
    assert {gone, kept} <= b.state.users.keys() and gone in b.users.profiles
    assert b.reconcile_changes(full=False) == 0

    a.rights.erase_user("gone", actor="test")  # (B reads none of its notices)

    assert b.reconcile_changes(full=False) == 1
    assert not b.last_reconcile[0], "an incremental read"
    assert gone not in b.state.users and gone not in b.users.profiles
    assert kept in b.state.users and kept in b.users.profiles
    assert b.reconcile_changes(full=False) == 0


def test_a_change_made_straight_in_postgres_is_read_incrementally(
    pair: tuple[Engine, Engine], postgres_url: str
) -> None:
    a, b = pair
    a.upsert_videos([Video(f"v{i:03d}", f"c{i % 4}", duration_ms=10_000) for i in range(N_VIDEOS)])
    a.register_users(["u1", "u2"])
    b.reconcile_changes()
    assert b.last_reconcile[0], "the first reconcile reads the stores whole"
    assert len(b.catalog) == N_VIDEOS
    # The cursor is the oldest snapshot open anywhere on the server: a transaction a
    # neighbour (another test, another client) holds open makes a read take again the rows
    # written after it began, so give the cursor a few reads to pass such a transaction.
    deadline = time.monotonic() + 10.0
    while True:
        assert b.reconcile_changes() == 0
        whole, rows = b.last_reconcile
        if (not whole and rows < N_VIDEOS) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not whole and rows < N_VIDEOS, "an incremental read reads what changed only"

    query(postgres_url, "UPDATE videos SET caption = 'edited by hand' WHERE video_id = 'v007'")
    query(
        postgres_url,
        "INSERT INTO moderation_actions (video_id, state, labels, reason, actor, ts)"
        " VALUES ('v003', 'removed', NULL, 'by hand', 'dba', 1)",
    )
    u1 = b.pseudonym("u1")
    query(
        postgres_url,
        "INSERT INTO controls (user_id, settings, updated_at) VALUES (%s, %s, 1)",
        u1,
        '{"mute_hashtags": ["#x"]}',
    )
    assert b.reconcile_changes() == 3
    assert not b.last_reconcile[0]
    assert b.catalog.videos[b.catalog.row_of["v007"]].caption == "edited by hand"
    assert b.catalog.states[b.catalog.row_of["v003"]] is ModerationState.REMOVED
    assert b.controls_of("u1").mute_hashtags == ("#x",)
    assert b.last_reconcile[1] < N_VIDEOS


def test_a_change_made_straight_in_the_sqlite_files_is_read_incrementally(
    tmp_path: Path,
) -> None:
    """The embedded stores' change stamps are set by triggers, so a write made with the
    ``sqlite3`` shell is seen too; a video updated twice since the last read is read once."""
    settings = _settings(tmp_path / "shared", None)
    a = Engine.open(settings, from_checkpoint=False)
    b = Engine.open(settings, from_checkpoint=False)
    try:
        a.upsert_videos([Video(f"v{i:03d}", "c0", duration_ms=10_000) for i in range(N_VIDEOS)])
        a.register_users(["u1"])
        b.reconcile_changes()
        assert b.last_reconcile == (True, N_VIDEOS + 1) and len(b.catalog) == N_VIDEOS
        assert b.reconcile_changes(full=False) == 0 and b.last_reconcile == (False, 0)

        def by_hand(db: str, sql: str, *args: object) -> None:
            with sqlite3.connect(settings.data_dir / db) as conn:
                conn.execute(sql, args)

        by_hand("catalog.db", "UPDATE videos SET caption = 'by hand' WHERE video_id = 'v007'")
        by_hand(
            "catalog.db", "UPDATE videos SET caption = 'by hand, again' WHERE video_id = 'v007'"
        )
        by_hand(
            "moderation.db",
            "INSERT INTO moderation_actions (video_id, state, labels, reason, actor, ts)"
            " VALUES ('v003', 'removed', NULL, 'by hand', 'dba', 1)",
        )
        by_hand(
            "users.db",
            "INSERT INTO controls (user_id, settings, updated_at) VALUES (?, ?, 1)",
            b.pseudonym("u1"),
            '{"mute_hashtags": ["#x"]}',
        )
        assert b.reconcile_changes(full=False) == 3
        assert b.last_reconcile == (False, 3), "the rows written since, each once"
        assert b.catalog.videos[b.catalog.row_of["v007"]].caption == "by hand, again"
        assert b.catalog.states[b.catalog.row_of["v003"]] is ModerationState.REMOVED
        assert b.controls_of("u1").mute_hashtags == ("#x",)
        assert b.reconcile_changes(full=False) == 0 and b.last_reconcile == (False, 0)
    finally:
        b.close()
        a.close()


def _unstamped(db: Path, tables: tuple[str, ...]) -> None:
    """``db`` as the last release wrote it: no change stamps, triggers or counter, and no
    count of erasures."""
    with sqlite3.connect(db) as conn:
        for table in tables:
            conn.execute(f"DROP TRIGGER {table}_changed_insert")
            conn.execute(f"DROP TRIGGER {table}_changed_update")
            conn.execute(f"DROP INDEX {table}_changed")
            conn.execute(f"ALTER TABLE {table} DROP COLUMN changed_seq")
        conn.execute("DROP TABLE change_counter")
        conn.execute("DROP TABLE IF EXISTS erasures_completed")


def test_a_data_dir_of_the_last_release_is_read_whole_then_incrementally(
    tmp_path: Path,
) -> None:
    """SQLite files made before the change stamps (their rows unstamped) open: the first
    reconcile reads them whole, and what is written after, their old rows edited too, is
    read incrementally; so is an erasure whose notices were missed."""
    settings = _settings(tmp_path / "shared", None)
    made = Engine.open(settings, from_checkpoint=False)
    made.upsert_videos([Video(f"v{i:03d}", "c0", duration_ms=10_000) for i in range(N_VIDEOS)])
    made.register_users(["u1", "u2"])
    made.close()
    _unstamped(settings.data_dir / "catalog.db", ("videos",))
    _unstamped(settings.data_dir / "moderation.db", ("moderation_actions",))
    _unstamped(settings.data_dir / "users.db", ("profiles", "controls", "refreshes"))

    a = Engine.open(settings, from_checkpoint=False)
    b = Engine.open(settings, from_checkpoint=False)
    try:
        b.reconcile_changes()
        assert b.last_reconcile == (True, N_VIDEOS + 2) and len(b.catalog) == N_VIDEOS
        assert b.reconcile_changes(full=False) == 0 and b.last_reconcile == (False, 0)
        with sqlite3.connect(settings.data_dir / "catalog.db") as conn:
            conn.execute("UPDATE videos SET caption = 'edited' WHERE video_id = 'v007'")
        a.upsert_videos([Video("v-new", "c1", duration_ms=10_000)])
        a.set_controls("u2", ControlsIn(mute_hashtags=["#x"]))
        assert b.reconcile_changes(full=False) == 3 and b.last_reconcile == (False, 3)
        assert b.catalog.videos[b.catalog.row_of["v007"]].caption == "edited"
        assert "v-new" in b.catalog.row_of and b.controls_of("u2").mute_hashtags == ("#x",)
        held = b.pseudonym("u1")
        assert held in b.users.profiles
        a.rights.erase_user("u1", actor="test")  # (B reads none of its notices)
        assert b.reconcile_changes(full=False) == 1 and not b.last_reconcile[0]
        assert held not in b.users.profiles
    finally:
        b.close()
        a.close()


def test_a_write_open_at_the_last_read_is_read_at_the_next(
    pair: tuple[Engine, Engine], postgres_url: str
) -> None:
    """A transaction that took its id before the last read and committed after it (ids
    are taken in one order and committed in another): the cursor is the oldest open
    transaction's, so the next read still finds its rows."""
    a, b = pair
    a.upsert_videos([Video(f"v{i:03d}", "c0", duration_ms=10_000) for i in range(4)])
    b.reconcile_changes()
    parts = split_url(postgres_url)
    with psycopg.connect(parts.conninfo, options=f"-c search_path={parts.schema}") as slow:
        slow.execute("UPDATE videos SET caption = 'slow' WHERE video_id = 'v001'")  # (open)
        a.upsert_videos([Video("v100", "c1", duration_ms=10_000)])  # (a later id, committed)
        b.reconcile_changes(full=False)
        assert "v100" in b.catalog.row_of
        assert b.catalog.videos[b.catalog.row_of["v001"]].caption != "slow"
    # (committed on leaving the block)
    assert b.reconcile_changes(full=False) == 1
    assert b.catalog.videos[b.catalog.row_of["v001"]].caption == "slow"


def test_a_whole_read_is_the_fallback(pair: tuple[Engine, Engine], postgres_url: str) -> None:
    a, b = pair
    a.upsert_videos([Video(f"v{i:03d}", "c0", duration_ms=10_000) for i in range(4)])
    b.reconcile_changes()
    b.reconcile_changes(full=True)
    assert b.last_reconcile == (True, 4)
    b.reconcile_changes(full=False)
    assert b.last_reconcile[0] is False


def test_a_whole_read_that_failed_is_tried_again_at_the_next_reconcile(
    pair: tuple[Engine, Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a whole read sees a profile an erasure deleted while this process missed it:
    one due by the clock that failed midway (PostgreSQL unreachable a moment) is the next
    reconcile's to do, not put off for another FULL_RECONCILE_EVERY_S."""
    a, b = pair
    a.upsert_videos([Video(f"v{i:03d}", "c0", duration_ms=10_000) for i in range(4)])
    now = [1_000.0]
    monkeypatch.setattr(engine_module, "time", SimpleNamespace(monotonic=lambda: now[0]))
    b.reconcile_changes()  # (the first: whole, cursors taken)
    now[0] += engine_module.FULL_RECONCILE_EVERY_S + 1
    store = type(b.user_store)
    read = store.profiles

    def unreachable(self: object) -> object:
        raise OSError("PostgreSQL unreachable")

    monkeypatch.setattr(store, "profiles", unreachable)
    with pytest.raises(OSError):
        b.reconcile_changes()  # (whole: due by the clock)
    monkeypatch.setattr(store, "profiles", read)
    now[0] += 1
    b.reconcile_changes()
    assert b.last_reconcile[0], "the failed whole read was put off"


class _NoWalk(dict[str, Any]):
    """A mapping that may be looked up, not walked (every user held, in a large one)."""

    def _walked(self, *args: object) -> Any:
        raise AssertionError("walked every user held")

    __iter__ = keys = items = values = _walked


def test_an_incremental_read_finds_an_id_created_anew_and_walks_every_user_only_after_an_erasure(
    pair: tuple[Engine, Engine],
) -> None:
    """An id erased and registered again elsewhere while this process missed both: the
    incremental read finds it (its old state goes). An erasure completed since the last
    read is why it compares what it holds with the stored profiles; an incremental read
    with no erasure since looks up the profiles written since, not walking every user
    held under the engine's lock (a walk whose cost grows with the users, every 30 s in
    every serving process)."""
    a, b = pair
    a.upsert_videos([Video(f"v{i:03d}", "c0", duration_ms=10_000) for i in range(4)])
    a.register_users(["u1", "u2"])
    b.reconcile_changes()
    event = {"event_id": "e1", "user_id": "u1", "video_id": "v001", "type": "view"}
    assert b.ingest([event | {"ts": 1_700_000_000_000, "watch_ms": 5_000}]).accepted == 1
    b.learn()
    pid = b.pseudonym("u1")
    assert b.state.users[pid].views == 1
    a.rights.erase_user("u1", "test")
    a.register_users(["u1"])
    b.reconcile_changes(full=False)
    assert not b.last_reconcile[0]
    assert pid not in b.state.users or b.state.users[pid].views == 0, "the old state kept"

    a.register_users(["u3"])
    a.set_controls("u2", ControlsIn(mute_hashtags=["#x"]))
    b.state.users = _NoWalk(b.state.users)
    b.users.profiles = _NoWalk(b.users.profiles)
    assert b.reconcile_changes(full=False) == 2
    assert not b.last_reconcile[0]
