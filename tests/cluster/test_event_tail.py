"""The tail of the event log (fyp.cluster.event_tail): a wake when the stream grows,
whoever appended, one per burst, none while it does not; and from where it started."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NoReturn

import pytest

from fyp.cluster.event_tail import EventTail
from fyp.events.redis_log import RedisEventLog
from fyp.types import Event, EventType
from redis_servers import SHARED_URL, delete_prefix, shared_redis, unique_prefix


@pytest.fixture
def log_url(unavailable: Callable[[str], NoReturn]) -> Iterator[str]:
    client = shared_redis(unavailable)
    prefix = unique_prefix()
    try:
        yield f"{SHARED_URL}?prefix={prefix}&durability=none"
    finally:
        delete_prefix(client, prefix)
        client.close()


def _events(start: int, n: int) -> list[Event]:
    return [Event(f"e{i}", "u1", "v1", EventType.VIEW, 1_000 + i) for i in range(start, start + n)]


def test_the_tail_wakes_once_per_growth_of_the_stream(log_url: str) -> None:
    log = RedisEventLog.from_url(log_url)  # (another process's appends, as far as the tail knows)
    woken: list[int | None] = []
    tail = EventTail(log_url, woken.append)
    try:
        log.append(_events(0, 3))  # before the tail: its first step wakes the loop anyway
        assert tail.step(block_ms=50) is True and len(woken) == 1
        assert tail.step(block_ms=50) is False and len(woken) == 1  # (nothing new)
        log.append(_events(3, 500))
        assert tail.step(block_ms=50) is True and len(woken) == 2
        # One wake for the whole burst: the tail moved past its last entry.
        assert tail.step(block_ms=50) is False and len(woken) == 2
        assert tail.after == "0-503"
        log.append(_events(503, 1))
        assert tail.step(block_ms=50) is True and len(woken) == 3
        assert tail.error is None
        # Each wake says the log's end it saw: a loop already there has nothing to fold.
        assert woken == [3, 503, 504]
    finally:
        tail.stop()
        log.close()


def test_the_tail_in_its_thread_wakes_on_an_append(log_url: str) -> None:
    import threading

    log = RedisEventLog.from_url(log_url)
    woke = threading.Event()
    tail = EventTail(log_url, lambda end: woke.set())
    tail.start()
    try:
        assert woke.wait(5), "no first wake"
        woke.clear()
        log.append(_events(0, 1))
        assert woke.wait(5), "the append woke nothing"
    finally:
        tail.stop()
        log.close()
