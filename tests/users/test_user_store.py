"""The UserStore contract, run against every implementation (as
tests/catalog/test_store.py: one entry in ``IMPLEMENTATIONS`` a backend): profiles (with
their attributes), controls, refreshes and tombstones kept and read back after a
restart, and an erasure leaving nothing of the user; and a users.db made before profiles
kept attributes opening with its profiles intact."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fyp.types import UserProfile
from fyp.users.store import SqliteUserStore, StoredUser, UserStore
from postgres_servers import opener

PROFILE = UserProfile("p1", "18+", "en", "eu", 1, 2, (("activity", "high"), ("device_class", "tv")))

OpenStore = Callable[[], UserStore]


def pg_users(url: str) -> UserStore:
    from fyp.storage.postgres.database import Database  # (psycopg: a skip if absent)
    from fyp.storage.postgres.users import PgUserStore

    return PgUserStore(Database(url))


IMPLEMENTATIONS = [
    pytest.param(lambda where: SqliteUserStore(where / "users.db"), id="sqlite"),
    pytest.param(pg_users, id="postgresql"),
]


@pytest.fixture(params=IMPLEMENTATIONS)
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenStore]:
    yield from opener(request, tmp_path)


def test_profiles_round_trip_with_their_attributes(open_store: OpenStore) -> None:
    store = open_store()
    store.put_profiles([PROFILE, UserProfile("p2", created_at=3, updated_at=3)])
    store.close()
    again = open_store()
    assert again.profiles() == {"p1": PROFILE, "p2": UserProfile("p2", None, None, None, 3, 3)}
    assert list(again.profiles()) == ["p1", "p2"]  # in the order first stored
    again.put_profile(UserProfile("p1", "18+", "en", "eu", 1, 5))
    assert again.profiles()["p1"].attributes == ()  # the stored set is replaced
    assert again.profiles()["p1"].created_at == 1
    again.erase("p1")
    assert "p1" not in again.profiles()


def test_controls_refreshes_and_tombstones_survive_a_reopen(open_store: OpenStore) -> None:
    store = open_store()
    store.put_controls("p1", {"muted_creators": ["c1"], "pause": False}, 10)
    store.put_controls("p1", {"muted_creators": ["c1", "c2"]}, 11)  # replaced whole
    store.put_controls("p2", {}, 12)
    store.add_refresh("p1", 40, 13)
    store.add_refresh("p2", 41, 14)
    store.add_refresh("p1", 45, 15)
    store.add_tombstone("p3", "ref-3", 16)
    store.add_tombstone("p3", "ref-other", 17)  # again: changes nothing
    store.close()
    again = open_store()
    assert again.controls() == {"p1": {"muted_creators": ["c1", "c2"]}, "p2": {}}
    assert again.refreshes() == [("p1", 40, 13), ("p2", 41, 14), ("p1", 45, 15)]
    assert again.tombstones() == {"p3": "ref-3"}


def test_erase_leaves_nothing_of_the_user_and_all_of_the_others(open_store: OpenStore) -> None:
    store = open_store()
    other = UserProfile("p2", created_at=3, updated_at=3)
    store.put_profiles([PROFILE, other])
    store.put_controls("p1", {"pause": True}, 10)
    store.put_controls("p2", {"pause": False}, 10)
    store.add_refresh("p1", 40, 13)
    store.add_refresh("p2", 41, 14)
    store.add_tombstone("p1", "ref-1", 16)
    store.erase("p1")
    store.erase("nobody")  # (nothing to erase: no error)
    assert store.profiles() == {"p2": other}
    assert store.controls() == {"p2": {"pause": False}}
    assert store.refreshes() == [("p2", 41, 14)]
    assert store.tombstones() == {}


def test_a_users_db_made_before_attributes_opens_with_its_profiles(tmp_path: Path) -> None:
    path = tmp_path / "users.db"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE profiles (user_id TEXT PRIMARY KEY, age_band TEXT, language TEXT,"
        " region TEXT, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL)"
    )
    old.execute("INSERT INTO profiles VALUES ('p1', '18+', 'en', 'eu', 1, 2)")
    old.commit()
    old.close()
    store = SqliteUserStore(path)
    try:
        assert store.profiles() == {"p1": UserProfile("p1", "18+", "en", "eu", 1, 2)}
        store.put_profile(PROFILE)
        assert store.profiles() == {"p1": PROFILE}
    finally:
        store.close()


def test_one_user_read_whole_and_their_handle_gone_with_them(open_store: OpenStore) -> None:
    """What another process re-reads on a notice (fyp.cluster.changes): one user's
    profile, controls, refresh marks and tombstone; and the handle their notices carry,
    the same every time it is asked, another user's another, deleted by the erasure."""
    store = open_store()
    assert store.user("p1") == StoredUser(None, None, (), None)
    store.put_profile(PROFILE)
    store.put_controls("p1", {"mute_creators": ["c1"]}, 10)
    store.add_refresh("p1", 40, 11)
    store.add_refresh("p1", 45, 12)
    store.add_refresh("p2", 41, 13)
    handle = store.handle("p1")
    assert store.handle("p1") == handle != store.handle("p2")
    assert len(handle) == 32 and "p1" not in handle
    store.close()
    again = open_store()
    assert again.user("p1") == StoredUser(PROFILE, {"mute_creators": ["c1"]}, (40, 45), None)
    assert again.user_of_handle(handle) == "p1"
    again.add_tombstone("p1", "ref-1", 14)
    assert again.user("p1").tombstone == "ref-1"
    again.erase("p1")
    assert again.user("p1") == StoredUser(None, None, (), None)
    assert again.user_of_handle(handle) is None
    assert again.handle("p1") != handle  # (a user created anew under the id: a new one)


def test_users_since_a_cursor_and_erasures_completed_since(open_store: OpenStore) -> None:
    """What changed since a cursor: the users written since (profile, controls or a
    refresh mark), as stored now, and whether an erasure completed since, which leaves
    no row of its user to return (and nothing naming them)."""
    from fyp.storage.changes import UserChanges

    store = open_store()
    assert isinstance(store, UserChanges)
    store.put_profile(PROFILE)
    store.put_profile(dataclasses.replace(PROFILE, user_id="p2"))
    start = store.change_cursor()
    first = store.users_since(start)
    assert first.users == {} and not first.erased
    store.put_controls("p1", {"mute_creators": ["c1"]}, 5)
    store.add_refresh("p2", 40, 6)
    changed = store.users_since(first.cursor)
    assert changed.users.keys() == {"p1", "p2"} and not changed.erased
    assert changed.users["p1"].controls == {"mute_creators": ["c1"]}
    assert changed.users["p2"].refreshes == (40,)
    assert store.users_since(changed.cursor).users == {}

    store.add_tombstone("p1", "ref1", 7)
    store.erase("p1")
    after = store.users_since(changed.cursor)
    assert after.erased and "p1" not in after.users
    assert not store.users_since(after.cursor).erased
    store.close()
