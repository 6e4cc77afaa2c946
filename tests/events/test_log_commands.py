"""``fyp log``: status, trim and forget-reader on a Redis log (the shared server, a
prefix of the test's own); refused, saying why, for the embedded log."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NoReturn

import pytest
from typer.testing import CliRunner

from fyp.cli import app
from fyp.events.redis_groups import ConsumerGroup
from fyp.events.redis_log import RedisEventLog
from fyp.types import Event, EventType
from redis_servers import SHARED_URL, delete_prefix, shared_redis, unique_prefix

runner = CliRunner()


@pytest.fixture
def logged(unavailable: Callable[[str], NoReturn]) -> Iterator[tuple[RedisEventLog, str]]:
    client = shared_redis(unavailable)
    prefix = unique_prefix()
    log = RedisEventLog(SHARED_URL, prefix=prefix, durability="none")
    log.append(
        [Event(f"e{i}", f"u{i % 3}", "v1", EventType.VIEW, 1_000 + i, 10) for i in range(50)]
    )
    try:
        yield log, f"{SHARED_URL}?prefix={prefix}&durability=none"
    finally:
        log.close()
        delete_prefix(client, prefix)
        client.close()


def _run(*args: str) -> str:
    result = runner.invoke(app, ["log", *args], env={}, terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


def test_trim_goes_no_further_than_the_readers_and_says_so(
    logged: tuple[RedisEventLog, str],
) -> None:
    log, url = logged
    log.commit("learner@h:/data", 30)
    group = ConsumerGroup(log, "export")
    group.ack([e.offset for e in group.read("a", 20)])
    out = _run("status", "--event-log", url)
    assert "learner@h:/data" in out and "export" in out and "through offset 20" in out
    out = _run("trim", "--keep", "5", "--event-log", url)
    assert "deleted 20 events through offset 20" in out and "held back" in out
    assert log.read(0, 1)[0].offset == 21
    group.destroy()
    assert "deleted 10 events" in _run("trim", "--through", "40", "--event-log", url)
    assert "forgot reader" in _run("forget-reader", "learner@h:/data", "--event-log", url)
    assert log.readers() == {} and log.count() == 20
    bad = runner.invoke(app, ["log", "forget-reader", "nobody", "--event-log", url], env={})
    assert bad.exit_code == 1 and "no reader" in bad.output
    both = runner.invoke(app, ["log", "trim", "--event-log", url], env={})
    assert both.exit_code == 2 and "one of --through N and --keep N" in both.output


def test_the_embedded_log_is_refused_saying_why() -> None:
    result = runner.invoke(app, ["log", "trim", "--through", "3"], env={})
    assert result.exit_code == 2 and "event log on Redis" in result.output
