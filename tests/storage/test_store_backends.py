"""Stores chosen by URL (fyp.storage.backends): the URL checked where settings are read;
the PostgreSQL schema migrated once however many processes open it at once; and an
engine on PostgreSQL stores serving feeds, keeping its catalog, moderation and users
across a reopen, and erasing a user from them."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from fyp.config import load_settings
from fyp.users.controls import ControlsIn, ProfileIn
from postgres_servers import query as rows


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("mysql://root@127.0.0.1/test", "scheme 'mysql'"),
        ("postgresql://root@127.0.0.1:5432", "names no database"),
        ("postgresql://root@127.0.0.1/test?schema=Bad-Name", "plain lower-case name"),
        ("postgresql://root@127.0.0.1/test?schema=x;drop", "plain lower-case name"),
        ("postgresql://root@127.0.0.1/test?durability=sometimes", "always or none"),
    ],
)
def test_a_store_url_naming_nothing_we_have_is_refused_with_why(url: str, why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        load_settings(overrides={"store": url}, environ={})


def test_the_store_url_comes_from_flag_environment_or_file(tmp_path: Path) -> None:
    url = "postgresql://fyp@db.internal:5432/fyp?schema=eu1&sslmode=require"
    assert load_settings(environ={}).store is None
    assert load_settings(environ={"FYP_STORE": url}).store == url
    toml = tmp_path / "fyp.toml"
    toml.write_text(f'store = "{url}"\n')
    assert load_settings(toml, environ={}).store == url
    flag = "postgresql://x@h/db"
    assert load_settings(toml, {"store": flag}, environ={"FYP_STORE": url}).store == flag


def test_processes_opening_a_new_schema_at_once_migrate_it_once(postgres_url: str) -> None:
    from fyp.storage.postgres.database import Database, migrations

    n = 4
    start = threading.Barrier(n)
    applied: list[list[int]] = []
    errors: list[BaseException] = []

    def open_one() -> None:  # (a connection each, as separate processes would have)
        try:
            start.wait()
            db = Database(postgres_url, pool_size=1)
            applied.append(db.migrate() or [-1])  # (a second pass applies nothing)
            db.attach().release()
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=open_one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert applied == [[-1]] * n
    versions = [v for v, _, _ in migrations()]
    assert rows(postgres_url, "SELECT version FROM schema_migrations ORDER BY version") == [
        (v,) for v in versions
    ]


def test_a_schema_migrated_by_a_newer_version_is_refused(postgres_url: str) -> None:
    from fyp.storage.postgres.database import Database

    Database(postgres_url).attach().release()
    rows(postgres_url, "INSERT INTO schema_migrations (version, name) VALUES (9999, 'future')")
    with pytest.raises(RuntimeError, match="newer fyp"):
        Database(postgres_url)


def test_an_engine_on_postgresql_serves_and_keeps_its_stores_across_a_reopen(
    kit: Any, postgres_url: str
) -> None:
    settings = kit.settings(store=postgres_url)
    engine = kit.open_engine(settings, videos=kit.catalog())
    engine.moderator.moderate("c0-v0", "removed", None, "spam")
    engine.put_user("u1", ProfileIn(age_band="18+", language="en"))
    engine.set_controls("u1", ControlsIn(mute_creators=["c1"]))
    kit.run(engine, [kit.view("u1", f"c0-v{i}") for i in range(1, 6)])
    served = kit.feed_ids(engine, "u1")
    assert served and "c0-v0" not in served and not any(v.startswith("c1-") for v in served)
    engine.close()
    # Nothing of these stores in the data dir: they are in the schema.
    assert not {"catalog.db", "moderation.db", "users.db", "impressions.db"} & {
        p.name for p in kit.data_dir.iterdir()
    }

    again = kit.open_engine(settings)
    assert again.catalog_store.count() == len(kit.catalog())
    assert [a.video_id for a in again.moderation_store.history()] == ["c0-v0"]
    assert again.controls_of("u1").mute_creators == ("c1",)
    profile = again.profile_of("u1")
    assert profile is not None and profile.age_band == "18+"
    assert again.impressions.count() == len(served)
    after = kit.feed_ids(again, "u1")
    assert after and "c0-v0" not in after and not any(v.startswith("c1-") for v in after)

    pid = again.pseudonym("u1")
    erased = again.rights.erase_user("u1", "test")
    assert erased.impressions == len(served) + len(after)
    for table in ("profiles", "controls", "refreshes", "erasures", "impressions"):
        assert rows(postgres_url, f"SELECT count(*) FROM {table} WHERE user_id = %s", pid) == [
            (0,)
        ], table


def test_a_server_that_does_not_answer_is_a_storage_fault() -> None:
    """(The API answers StorageUnavailableError with 503 and a Retry-After.)"""
    pytest.importorskip("psycopg")
    from fyp.storage.errors import StorageUnavailableError
    from fyp.storage.postgres.database import Database
    from server_process import free_port

    url = f"postgresql://root@127.0.0.1:{free_port()}/test?connect_timeout=1"
    with pytest.raises(StorageUnavailableError, match="PostgreSQL server"):
        Database(url)


@pytest.mark.parametrize("postgres", [False, True], ids=["sqlite", "postgresql"])
def test_a_store_failing_to_open_is_the_error_raised_even_when_a_close_fails(
    postgres: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """A store that cannot open is the cause an operator needs: the stores opened before
    it are closed, and one of them failing to close must not replace that error."""
    from fyp.storage import backends
    from fyp.storage.postgres import catalog, users

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the user store is unreadable")

    def close_badly(self: Any) -> None:
        raise OSError("closing failed too")

    url: str | None = request.getfixturevalue("postgres_url") if postgres else None
    if postgres:
        monkeypatch.setattr(users, "PgUserStore", refuse)
        monkeypatch.setattr(catalog.PgModerationStore, "close", close_badly)
    else:
        monkeypatch.setattr(backends, "SqliteUserStore", refuse)
        monkeypatch.setattr(backends.SqliteModerationStore, "close", close_badly)
    with pytest.raises(RuntimeError, match="the user store is unreadable"):
        backends.open_stores(url, tmp_path)
