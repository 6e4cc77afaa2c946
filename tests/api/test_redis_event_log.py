"""The API over an engine whose event log is on Redis (``event_log = redis://…``): events
are accepted, learned from and erased through it; while the Redis server is down, POST
/v1/events answers 503 with a Retry-After (not a 500, not a hang), and once it is back the
same batch goes through and the learning loop catches up by itself."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from fyp.api.errors import BUSY_RETRY_AFTER_S
from fyp.config import Settings
from fyp.engine import Engine
from fyp.events.redis_log import RedisEventLog
from redis_servers import RedisServer


@pytest.fixture
def redis_server(tmp_path: Path, unavailable: Callable[[str], NoReturn]) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", unavailable, appendonly="yes", appendfsync="always")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def settings(settings: Settings, redis_server: RedisServer) -> Settings:
    """The API tests' settings, the event log on this test's Redis server."""
    return settings.model_copy(update={"event_log": redis_server.url})


def test_events_through_a_redis_event_log_and_503_while_redis_is_down(
    api: Any, engine: Engine, catalog: list[dict[str, Any]], redis_server: RedisServer
) -> None:
    assert isinstance(engine.event_log, RedisEventLog)
    video = catalog[1]["video_id"]
    first = [api.event(f"a{i}", user_id="ua", video_id=video) for i in range(3)]
    first.append(api.event("b0", user_id="ub", video_id=video))
    resp = api.client.post("/v1/events", json={"events": first})
    assert resp.status_code == 200, resp.text
    assert resp.json()["accepted"] == 4
    api.wait_until_learned()

    redis_server.kill()
    batch = [api.event("b1", user_id="ub", video_id=video)]
    down = api.client.post("/v1/events", json={"events": batch})
    assert down.status_code == 503, down.text
    assert down.headers["Retry-After"] == str(BUSY_RETRY_AFTER_S)
    assert "retry later" in down.json()["detail"]
    assert "127.0.0.1" not in down.json()["detail"]  # the server's address is not told

    redis_server.start()  # from its AOF: the first batch is there
    again = api.client.post("/v1/events", json={"events": [*batch, first[0]]})
    assert again.status_code == 200, again.text
    assert (again.json()["accepted"], again.json()["duplicates"]) == (1, 1)
    api.wait_until_learned()

    erased = api.client.delete("/v1/users/ua")
    assert erased.status_code == 200, erased.text
    log = engine.event_log
    assert log.for_user(engine.pseudonym("ua")) == []
    assert [e.event.event_id for e in log.read(0, 100)] == ["b0", "b1"]
