"""The API over an engine whose event log is on Redis (``event_log = redis://…``): events
are accepted, learned from and erased through it; while the Redis server is down, POST
/v1/events answers 503 with a Retry-After (not a 500, not a hang), and once it is back the
same batch goes through and the learning loop catches up by itself."""

from __future__ import annotations

import asyncio
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


def test_a_batch_of_500_with_bad_events_stores_the_others_once_and_a_retry_adds_nothing(
    api: Any, engine: Engine, catalog: list[dict[str, Any]]
) -> None:
    videos = [v["video_id"] for v in catalog]
    batch = [
        api.event(f"n{i}", user_id=f"u{i % 37}", video_id=videos[i % len(videos)])
        for i in range(500)
    ]
    batch[3] = {**batch[3], "watch_ms": -1}
    batch[499] = {**batch[499], "video_id": "no-such-video"}
    batch[250] = dict(batch[10])  # the same event twice in one batch
    first = api.client.post("/v1/events", json={"events": batch})
    assert first.status_code == 422, first.text
    body = first.json()
    assert (body["accepted"], body["duplicates"]) == (497, 1)
    assert [(r["index"], r["id"]) for r in body["rejected"]] == [(3, "n3"), (499, "n499")]
    retried = api.client.post("/v1/events", json={"events": batch})  # (a lost answer)
    assert retried.status_code == 422, retried.text
    assert (retried.json()["accepted"], retried.json()["duplicates"]) == (0, 498)
    assert retried.json()["rejected"] == body["rejected"]
    log = engine.event_log
    stored = [e.event.event_id for e in log.read(0, 1_000)]
    assert len(stored) == len(set(stored)) == 497
    assert {"n3", "n499", "n250"}.isdisjoint(stored)
    # Each event under its user's pseudonym, as one at a time would have stored it.
    mine = [e.event.event_id for e in log.for_user(engine.pseudonym("u5"))]
    assert mine == [f"n{i}" for i in range(5, 500, 37)]


def test_health_metrics_and_stats_read_the_logs_end_off_the_event_loop(
    api: Any, engine: Engine, catalog: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Redis round trip on the event loop holds every request in flight, for as long as
    the server's fsync of the last append: ``/healthz`` (a load balancer's probe, every
    few seconds per process) made two, a ``/metrics`` scrape one, ``/v1/stats`` one."""
    read = engine.event_log.last_offset
    on_loop: list[bool] = []

    def spied() -> int:
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:  # (a worker thread: no loop runs there)
            on_loop.append(False)
        return read()

    video = catalog[0]["video_id"]
    resp = api.client.post(
        "/v1/events", json={"events": [api.event("h0", user_id="uh", video_id=video)]}
    )
    assert resp.json()["accepted"] == 1
    api.wait_until_learned()
    monkeypatch.setattr(engine.event_log, "last_offset", spied)
    health = api.client.get("/healthz")
    assert health.status_code == 200, health.text
    assert (health.json()["events"], health.json()["learning_lag"]) == (1, 0)
    metrics = api.client.get("/metrics")
    assert "fyp_learning_lag_events 0.0" in metrics.text
    stats = api.client.get("/v1/stats")
    assert (stats.json()["events_total"], stats.json()["learning_lag"]) == (1, 0)
    assert on_loop and not any(on_loop)
