"""The user store: profiles (with their attributes) kept, and read back after a restart;
a data dir made before profiles kept attributes opens with its profiles intact."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from fyp.types import UserProfile
from fyp.users.store import SqliteUserStore

PROFILE = UserProfile("p1", "18+", "en", "eu", 1, 2, (("activity", "high"), ("device_class", "tv")))


def test_profiles_round_trip_with_their_attributes(tmp_path: Path) -> None:
    store = SqliteUserStore(tmp_path / "users.db")
    store.put_profiles([PROFILE, UserProfile("p2", created_at=3, updated_at=3)])
    store.close()
    again = SqliteUserStore(tmp_path / "users.db")
    try:
        assert again.profiles() == {"p1": PROFILE, "p2": UserProfile("p2", None, None, None, 3, 3)}
        again.put_profile(UserProfile("p1", "18+", "en", "eu", 1, 5))
        assert again.profiles()["p1"].attributes == ()  # the stored set is replaced
        again.erase("p1")
        assert "p1" not in again.profiles()
    finally:
        again.close()


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
