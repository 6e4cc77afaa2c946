"""What the Redis event log promises beyond the shared contract (tests/events/test_log.py):
that it refuses a server that would lose what it acknowledges, that an acknowledged
append survives ``kill -9`` of the server, that an erasure leaves nothing in the
server's files once scrubbed, that appends from several processes at once stay
exactly-once, and that an unreachable server is a StorageUnavailableError, not a hang.

The durability and file tests start redis-servers of their own (the shared one keeps
nothing on disk)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from fyp.events.redis_log import RedisDurabilityError, RedisEventLog, split_url
from fyp.storage.errors import StorageUnavailableError
from fyp.types import Event, EventType
from redis_servers import SHARED_URL, RedisServer, delete_prefix, shared_redis, unique_prefix

Unavailable = Callable[[str], NoReturn]
DURABLE = {"appendonly": "yes", "appendfsync": "always"}


def event(i: int, user: str = "u1") -> Event:
    return Event(f"e{i}", user, f"v{i % 7}", EventType.VIEW, 1_000 + i, 100 * i)


@pytest.fixture
def servers(tmp_path: Path, unavailable: Unavailable) -> Iterator[Callable[..., RedisServer]]:
    """Starts redis-servers with the options given, each in a directory of its own;
    every one is killed at teardown."""
    started: list[RedisServer] = []

    def start(**options: str) -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(started)}", unavailable, **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_the_url_carries_the_prefix_and_the_durability_and_redis_py_gets_the_rest() -> None:
    assert split_url("redis://h:1/2?prefix=p1&durability=everysec&health_check_interval=3") == (
        "redis://h:1/2?health_check_interval=3",
        "p1",
        "everysec",
    )
    assert split_url("redis://h:1/0") == ("redis://h:1/0", "fyp", "always")
    with pytest.raises(ValueError, match="durability 'sometimes'"):
        split_url("redis://h/0?durability=sometimes")
    with pytest.raises(ValueError, match="prefix"):
        split_url("redis://h/0?prefix={x}")


def test_a_server_that_keeps_no_aof_is_refused_unless_the_loss_is_accepted(
    servers: Callable[..., RedisServer],
) -> None:
    server = servers(appendonly="no")
    for durability in ("always", "everysec"):
        with pytest.raises(RedisDurabilityError, match="appendonly no"):
            RedisEventLog.from_url(f"{server.url}?durability={durability}")
    RedisEventLog.from_url(f"{server.url}?durability=none").close()


def test_appendfsync_everysec_is_refused_where_always_is_asked(
    servers: Callable[..., RedisServer],
) -> None:
    server = servers(appendonly="yes", appendfsync="everysec")
    with pytest.raises(RedisDurabilityError, match="appendfsync everysec"):
        RedisEventLog.from_url(server.url)  # always: the default
    RedisEventLog.from_url(f"{server.url}?durability=everysec").close()
    RedisEventLog.from_url(servers(**DURABLE).url).close()


def test_a_server_that_may_evict_keys_is_refused(servers: Callable[..., RedisServer]) -> None:
    server = servers(**DURABLE, **{"maxmemory-policy": "allkeys-lru"})
    with pytest.raises(RedisDurabilityError, match="evict"):
        RedisEventLog.from_url(server.url)


def test_an_acknowledged_append_survives_kill_9_of_the_server(
    servers: Callable[..., RedisServer],
) -> None:
    server = servers(**DURABLE)
    log = RedisEventLog.from_url(server.url)
    events = [event(i, f"u{i % 5}") for i in range(1_200)]
    for start in range(0, len(events), 500):
        log.append(events[start : start + 500])  # acknowledged: returned
    before = log.read(0, 10_000)
    end = log.last_offset()
    log.close()

    server.kill()  # SIGKILL right after the last acknowledgement: nothing saved on exit
    server.start()  # from the AOF alone
    log = RedisEventLog.from_url(server.url)
    try:
        assert log.read(0, 10_000) == before
        assert log.last_offset() == end
        assert log.count() == 1_200
        assert log.for_user("u3") == [g for g in before if g.event.user_id == "u3"]
        again = log.append([*events[:10], event(5_000)])  # still deduplicated
        assert again.duplicates == list(range(10))
        assert log.read(end, 10)[0].offset == end + 1
    finally:
        log.close()


def _holding(server: RedisServer, secret: bytes) -> list[str]:
    return [p.name for p in server.files() if secret in p.read_bytes()]


def test_after_an_erasure_and_a_scrub_nothing_of_the_user_is_left_in_the_aof_or_rdb_files(
    servers: Callable[..., RedisServer],
) -> None:
    # rdbcompression no: the check reads the files for the user's bytes, which LZF could
    # hide; the AOF's base is an RDB file (aof-use-rdb-preamble, Redis 7's default).
    server = servers(**DURABLE, save="3600 1", rdbcompression="no")
    log = RedisEventLog.from_url(server.url)
    try:
        gone, kept = "erased-9c1f7e2ab54d", "kept-5d0e3b7a1c99"
        log.append([event(i, gone if i % 2 else kept) for i in range(300)])
        log.scrub()  # a snapshot and a rewritten AOF holding both users
        # The check can see them: both are in the RDB file and the AOF's base now.
        assert len(_holding(server, gone.encode())) >= 2
        assert log.erase_user(gone) == 150
        # Not yet scrubbed: the erasure is only appended to the AOF, the RDB file is old.
        assert _holding(server, gone.encode())
        log.scrub()
        assert _holding(server, gone.encode()) == []
        assert len(_holding(server, kept.encode())) >= 2
        assert [g.event.user_id for g in log.read(0, 1_000)] == [kept] * 150
    finally:
        log.close()
    # and what is left loads: a restart from the rewritten files has the rest
    server.kill()
    server.start()
    log = RedisEventLog.from_url(server.url)
    try:
        assert log.count() == 150
        assert log.for_user(gone) == []
    finally:
        log.close()


def test_processes_appending_the_same_events_at_once_store_each_exactly_once(
    unavailable: Unavailable,
) -> None:
    client = shared_redis(unavailable)
    prefix = unique_prefix()
    logs = [RedisEventLog(SHARED_URL, prefix=prefix, durability="none") for _ in range(4)]
    events = [event(i, f"u{i % 9}") for i in range(2_000)]
    accepted: list[set[str]] = [set() for _ in logs]

    def send(k: int) -> None:
        # each "process" sends every event, in batches of its own sizes
        size = 50 + 37 * k
        for start in range(0, len(events), size):
            batch = events[start : start + size]
            accepted[k].update(batch[i].event_id for i in logs[k].append(batch).accepted)

    threads = [threading.Thread(target=send, args=(k,)) for k in range(len(logs))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stored = logs[0].read(0, 10_000)
        assert sorted(g.event.event_id for g in stored) == sorted(e.event_id for e in events)
        assert [g.offset for g in stored] == list(range(1, 2_001))  # dense, in order
        assert sum(len(a) for a in accepted) == 2_000  # each accepted by exactly one
        assert set().union(*accepted) == {e.event_id for e in events}
    finally:
        for log in logs:
            log.close()
        delete_prefix(client, prefix)
        client.close()


def test_an_unreachable_server_is_storage_unavailable_and_the_log_recovers_by_itself(
    servers: Callable[..., RedisServer],
) -> None:
    server = servers(**DURABLE)
    log = RedisEventLog.from_url(server.url)
    try:
        log.append([event(1)])
        server.kill()
        with pytest.raises(StorageUnavailableError, match="Redis"):
            log.append([event(2)])
        with pytest.raises(StorageUnavailableError):
            log.read(0, 10)
        server.start()
        assert log.append([event(2), event(1)]).accepted == [0]
        assert [g.event.event_id for g in log.read(0, 10)] == ["e1", "e2"]
    finally:
        log.close()
