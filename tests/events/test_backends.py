"""The event log is chosen by URL: the embedded SQLite file by default, another SQLite
file, or a Redis server; a URL naming anything else is refused when the settings are
read, saying what is wrong."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import pytest
from pydantic import ValidationError

from fyp.config import load_settings
from fyp.events.backends import check_event_log_url, event_log_identity, open_event_log
from fyp.events.log import SqliteEventLog
from fyp.events.redis_log import RedisEventLog
from redis_servers import SHARED_URL, delete_prefix, shared_redis, unique_prefix


def test_the_default_is_the_embedded_file_in_the_data_dir(tmp_path: Path) -> None:
    log = open_event_log(None, tmp_path)
    try:
        assert isinstance(log, SqliteEventLog)
        assert (tmp_path / "events.db").exists()
    finally:
        log.close()


def test_a_sqlite_url_names_a_file_anywhere(tmp_path: Path) -> None:
    log = open_event_log(f"sqlite://{tmp_path}/elsewhere/log.db", tmp_path / "data")
    try:
        assert isinstance(log, SqliteEventLog)
        assert (tmp_path / "elsewhere" / "log.db").exists()
    finally:
        log.close()


def test_a_redis_url_opens_the_redis_log_under_its_prefix(
    unavailable: Callable[[str], NoReturn], tmp_path: Path
) -> None:
    client = shared_redis(unavailable)
    prefix = unique_prefix()
    log = open_event_log(f"{SHARED_URL}?prefix={prefix}&durability=none", tmp_path)
    try:
        assert isinstance(log, RedisEventLog)
        assert not (tmp_path / "events.db").exists()
        assert client.exists(f"{{{prefix}}}:seq") == 0
        log.append([])
    finally:
        log.close()
        delete_prefix(client, prefix)
        client.close()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql://h/db", "scheme 'postgresql' is none of"),
        ("/var/lib/events.db", "scheme '' is none of"),
        ("sqlite://host/events.db", "sqlite:///absolute/path.db"),
        ("redis://h/0?durability=maybe", "durability 'maybe'"),
    ],
)
def test_a_url_naming_no_backend_is_refused_with_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        check_event_log_url(url)
    with pytest.raises(ValidationError, match=says):
        load_settings(overrides={"event_log": url}, environ={})


def test_the_environment_sets_the_event_log() -> None:
    url = "redis://127.0.0.1:6379/3?prefix=p"
    assert load_settings(environ={"FYP_EVENT_LOG": url}).event_log == url
    assert load_settings(environ={}).event_log is None


def test_the_identity_a_checkpoint_records_has_no_password() -> None:
    assert event_log_identity(None) is None
    assert event_log_identity("redis://h:6379/0?prefix=p") == "redis://h:6379/0?prefix=p"
    assert (
        event_log_identity("redis://app:s3cret@h:6379/0?prefix=p")
        == "redis://app@h:6379/0?prefix=p"
    )
    assert "s3cret" not in str(event_log_identity("rediss://:s3cret@h/0"))


def test_a_checkpoint_is_restored_only_over_the_log_it_was_made_from(kit: Any) -> None:
    engine = kit.open_engine(videos=kit.catalog())
    kit.run(engine, [kit.view("u1", "c0-v0"), kit.view("u1", "c0-v1")])
    engine.checkpoints.write()
    assert engine.checkpoints.offset == 2

    elsewhere = kit.settings(event_log=f"sqlite://{kit.tmp_path}/another/events.db")
    other = kit.open_engine(elsewhere)  # an empty log: its offsets count other events
    assert other.checkpoints.offset == 0
    assert other.state.applied_offset == 0
    again = kit.open_engine()
    assert again.checkpoints.offset == 2
